#if canImport(Glibc)
import Glibc
#endif
import Foundation
import SnorkyConfig
import SnorkyProtocol
import SnorkyTesting
import Testing

// The files in deploy/, exercised for real: the systemd unit's command line and signals run
// against the built `snorky`, and deploy/two-nodes.sh starts Redis, two nodes and nginx
// running deploy/nginx/snorky-lb.conf, through which clients receive publications made on
// either node.

// MARK: - The systemd unit

@Suite("deploy/snorky.service")
struct SystemdUnitTests {
    @Test(
        "systemd-analyze verify accepts the unit",
        .enabled(if: DeployFiles.which("systemd-analyze") != nil, "systemd-analyze is not installed (Debian package systemd)"))
    func verifies() async throws {
        let unit = try DeployFiles.text("deploy/snorky.service")
        let directory = try TemporaryDirectory()
        // verify checks that the executable and the environment file exist: point them at
        // the built binary and the example secrets file.
        let rewritten = unit
            .replacingOccurrences(of: "ExecStart=/usr/local/bin/snorky ", with: "ExecStart=\(try SnorkyExecutable.path) ")
            .replacingOccurrences(of: "EnvironmentFile=/etc/snorky/snorky.env", with: "EnvironmentFile=\(DeployFiles.path("deploy/snorky.env"))")
        #expect(rewritten != unit)
        let path = directory.path + "/snorky.service"
        try rewritten.write(toFile: path, atomically: true, encoding: .utf8)

        let verify = try await ProcessHandle.launch(
            DeployFiles.which("systemd-analyze")!, arguments: ["verify", "--man=no", path], workingDirectory: directory.path)
        let status = try await verify.waitForExit(timeout: .seconds(60))
        let output = verify.outputLines.map(\.text)
        #expect(status == 0, "systemd-analyze verify: \(output)")
        #expect(output.isEmpty, "systemd-analyze verify printed warnings: \(output)")
    }

    @Test("states the documented command line, secrets file and signals")
    func settings() throws {
        let unit = try SystemdUnit(text: try DeployFiles.text("deploy/snorky.service"))
        #expect(unit.value("Service", "ExecStart") == "/usr/local/bin/snorky serve --config /etc/snorky/snorky.toml")
        #expect(unit.value("Service", "EnvironmentFile") == "/etc/snorky/snorky.env")
        #expect(unit.value("Service", "ExecReload") == "/bin/kill -HUP $MAINPID")
        #expect(unit.value("Service", "KillSignal") == "SIGTERM")
        // SIGTERM to the supervisor alone: it drains its workers itself.
        #expect(unit.value("Service", "KillMode") == "mixed")
        #expect(unit.value("Service", "DynamicUser") == "yes")
        #expect(unit.value("Service", "ProtectSystem") == "strict")
        #expect(unit.value("Service", "NoNewPrivileges") == "yes")
        let files = try #require(unit.value("Service", "LimitNOFILE").flatMap { Int($0) })
        #expect(files >= 65536)

        // systemd's SIGKILL must come after the supervisor's own deadline (drain + 5 s).
        let example = try ConfigurationLoader.load(fileText: try DeployFiles.text("deploy/snorky.toml"))
        let stopTimeout = try #require(unit.value("Service", "TimeoutStopSec").flatMap { Double($0) })
        #expect(stopTimeout > example.drainTimeout + 5)
    }

    @Test("its ExecStart runs a node with the example config and secrets file; ExecReload reloads; KillSignal drains")
    func commandLineAndSignals() async throws {
        let unit = try SystemdUnit(text: try DeployFiles.text("deploy/snorky.service"))
        let execStart = try #require(unit.value("Service", "ExecStart")).split(separator: " ").map(String.init)
        #expect(execStart.first == "/usr/local/bin/snorky")
        // The unit's arguments exactly, with the installed config path mapped to the example.
        let arguments = execStart.dropFirst().map { $0 == "/etc/snorky/snorky.toml" ? DeployFiles.path("deploy/snorky.toml") : $0 }
        #expect(Array(arguments) != Array(execStart.dropFirst()), "ExecStart does not name /etc/snorky/snorky.toml")

        // What systemd would put in the environment: the example secrets file, plus (for
        // this test only) free ports and two workers, which SNORKY_* variables may set.
        let secrets = try EnvironmentFile.parse(try DeployFiles.text("deploy/snorky.env"))
        let backendKey = try #require(secrets["SNORKY_BACKEND_KEY"])
        #expect(secrets["SNORKY_TOKEN_SECRET"] != nil)
        var environment = ProcessInfo.processInfo.environment.filter { !$0.key.hasPrefix("SNORKY_") }
        environment.merge(secrets) { _, new in new }
        environment.merge(["SNORKY_PORT": "0", "SNORKY_BACKEND_PORT": "0", "SNORKY_WORKERS": "2"]) { _, new in new }

        let process = try await ProcessHandle.launch(try SnorkyExecutable.path, arguments: Array(arguments), environment: environment)
        let logs = LogWatch.start(process.lines)
        do {
            let backend = try await logs.first("listening backend=") {
                $0.isSupervisor && $0.message == "listening" && $0.metadata["backend"] != nil
            }
            try await logs.first("cluster ready", timeout: .seconds(60))
            let backendPort = try #require(backend.metadata["backend"]?.split(separator: ":").last.flatMap { Int($0) })

            // The key from the secrets file is the one in force.
            let publish = #"{"service":"pubsub_backend","message":{"command":"publish","params":{"channel":"c","message":1}}}"#
            let accepted = try await HTTPTestClient.request(
                host: "127.0.0.1", port: backendPort, path: "/backend",
                headers: [("Content-Type", "application/json"), ("X-Backend-Key", backendKey)], body: publish)
            #expect(accepted.status == 200, "\(accepted.body)")

            // ExecReload: `kill -HUP $MAINPID` is a rolling reload.
            let reloadSignal = try #require(unit.value("Service", "ExecReload")?.split(separator: " ").first { $0.hasPrefix("-") })
            #expect(reloadSignal == "-HUP")
            let beforeReload = logs.count
            try process.signal(SIGHUP)
            try await logs.first("reload requested by signal", ["signal": "SIGHUP"], after: beforeReload)
            try await logs.first("reload complete", after: beforeReload, timeout: .seconds(60))

            // KillSignal: a graceful stop, well within TimeoutStopSec.
            let stopTimeout = try #require(unit.value("Service", "TimeoutStopSec").flatMap { Double($0) })
            try process.signal(SIGTERM)
            try await logs.first("stop requested by signal", ["signal": "SIGTERM"])
            let status = try await process.waitForExit(timeout: .seconds(stopTimeout))
            #expect(status == 0, "\(logs.recent())")
        } catch {
            await process.terminate(grace: .seconds(2))
            throw error
        }
    }
}

/// A systemd unit file: `[Section]` headers and `Key=Value` lines; a key given twice keeps
/// every value.
struct SystemdUnit {
    private var values: [String: [String]] = [:]

    init(text: String) throws {
        var section: String?
        for raw in text.split(separator: "\n", omittingEmptySubsequences: false) {
            let line = raw.trimmingCharacters(in: .whitespaces)
            if line.isEmpty || line.hasPrefix("#") || line.hasPrefix(";") { continue }
            if line.hasPrefix("[") && line.hasSuffix("]") {
                section = String(line.dropFirst().dropLast())
                continue
            }
            guard let section, let equals = line.firstIndex(of: "=") else {
                throw ClusterFixtureError("unexpected unit file line: \(line)")
            }
            values["\(section).\(line[..<equals])", default: []].append(String(line[line.index(after: equals)...]))
        }
    }

    /// The last value of `key` in `section`.
    func value(_ section: String, _ key: String) -> String? {
        values["\(section).\(key)"]?.last
    }
}

/// `KEY=value` lines of an EnvironmentFile (comments and blank lines skipped).
enum EnvironmentFile {
    static func parse(_ text: String) throws -> [String: String] {
        var result: [String: String] = [:]
        for raw in text.split(separator: "\n") {
            let line = raw.trimmingCharacters(in: .whitespaces)
            if line.isEmpty || line.hasPrefix("#") { continue }
            guard let equals = line.firstIndex(of: "=") else { throw ClusterFixtureError("not KEY=value: \(line)") }
            result[String(line[..<equals])] = String(line[line.index(after: equals)...])
        }
        return result
    }
}

// MARK: - Two nodes behind nginx

@Suite(
    "deploy/two-nodes.sh: two nodes, one Redis, nginx",
    .enabled(if: DeployFiles.which("nginx") != nil, "nginx is not installed (Debian package nginx; scripts/test.sh installs it)"),
    .enabled(if: DeployFiles.which("redis-server") != nil, "redis-server is not installed"))
struct TwoNodesTests {
    static let backendKey = "two-nodes-test-key"
    static let channel: JSON = "deploy-news"

    @Test("clients through nginx get publications made on either node's backend; stop tears everything down")
    func publicationsFromEitherNode() async throws {
        let ports = try FreePorts(count: 7)
        let state = try TemporaryDirectory()
        let lbPort = ports[0]
        let nodes = [
            (name: "A", wsPort: ports[1], backendPort: ports[2]),
            (name: "B", wsPort: ports[3], backendPort: ports[4]),
        ]
        let workersPerNode = 2
        let environment = [
            "SNORKY": try SnorkyExecutable.path,
            "STATE_DIR": state.path,
            "LB_PORT": "\(lbPort)",
            "NODE_A_PORT": "\(ports[1])", "NODE_A_BACKEND_PORT": "\(ports[2])",
            "NODE_B_PORT": "\(ports[3])", "NODE_B_BACKEND_PORT": "\(ports[4])",
            "REDIS_PORT": "\(ports[5])",
            "WORKERS": "\(workersPerNode)",
            "BACKEND_KEY": Self.backendKey,
        ]
        ports.release()
        let script = DeployFiles.path("deploy/two-nodes.sh")
        let cluster = try await ProcessHandle.launch("/bin/bash", arguments: [script], addingEnvironment: environment)
        var children: [Int32] = []
        do {
            try await cluster.waitForLine(containing: "two-node Snorky cluster ready", timeout: .seconds(150))
            children = try Self.childPIDs(in: state.path)
            #expect(children.count == 4, "expected redis, two nodes and nginx")

            // Enough clients through the load balancer that both nodes have subscribers.
            var clients: [WebSocketTestClient] = []
            for _ in 0..<8 {
                let client = try await WebSocketTestClient.connect(host: "127.0.0.1", port: lbPort, path: "/ws")
                try await client.subscribe(Self.channel)
                clients.append(client)
            }
            var perNode: [String: Int] = [:]
            for node in nodes {
                let stats = try await Self.workerStats(backendPort: node.backendPort, workers: workersPerNode)
                perNode[node.name] = stats.values.map(\.connections).reduce(0, +)
            }
            #expect(perNode.values.reduce(0, +) == clients.count, "connections per node: \(perNode)")
            #expect(perNode.values.allSatisfy { $0 > 0 }, "nginx did not spread the clients over both nodes: \(perNode)")

            // A publication on each node's backend API reaches every client.
            for (index, node) in nodes.enumerated() {
                let sent = publication(node.name, index)
                let reply = try await Self.backendPublish(port: node.backendPort, message: sent)
                #expect(reply.status == 200, "node \(node.name): \(reply.body)")
                for client in clients {
                    let received = try await client.nextPublication(on: Self.channel, timeout: .seconds(15))
                    #expect(received == sent)
                }
            }

            // nginx forwards /snorky.js to the nodes as they answer it, and exposes no backend API.
            let direct = try await HTTPTestClient.get(host: "127.0.0.1", port: nodes[0].wsPort, path: "/snorky.js")
            let proxied = try await HTTPTestClient.get(host: "127.0.0.1", port: lbPort, path: "/snorky.js")
            #expect(proxied.status == direct.status)
            #expect(proxied.body == direct.body)
            let backendThroughLB = try await Self.backendPublish(port: lbPort, message: "must not arrive")
            #expect(backendThroughLB.status == 404)
            for client in clients { try await client.expectNothing(for: .milliseconds(300)) }

            for client in clients { await client.abort() }

            // `two-nodes.sh stop` from another shell stops the script and every child.
            let stop = try await ProcessHandle.launch("/bin/bash", arguments: [script, "stop"], addingEnvironment: ["STATE_DIR": state.path])
            let stopStatus = try await stop.waitForExit(timeout: .seconds(90))
            #expect(stopStatus == 0, "\(stop.outputLines.map(\.text))")
            _ = try await cluster.waitForExit(timeout: .seconds(30))
            let survivors = children.filter(processIsAlive)
            #expect(survivors.isEmpty, "still running after stop: \(survivors.map(processSummary))")
        } catch {
            Self.killLeftovers(cluster: cluster, children: children, state: state.path)
            throw error
        }
        Self.killLeftovers(cluster: cluster, children: children, state: state.path)
    }

    /// The pids the script recorded for its children (redis, node-a, node-b, nginx).
    static func childPIDs(in state: String) throws -> [Int32] {
        try ["redis", "node-a", "node-b", "nginx"].map { name in
            let text = try String(contentsOfFile: "\(state)/\(name).pid", encoding: .utf8)
            guard let pid = Int32(text.trimmingCharacters(in: .whitespacesAndNewlines)) else {
                throw ClusterFixtureError("\(name).pid holds \(text)")
            }
            return pid
        }
    }

    /// The script runs its children in their own sessions, so killing the script's group
    /// does not reach them: after a failure, kill each recorded child by its pid.
    static func killLeftovers(cluster: ProcessHandle, children: [Int32], state: String) {
        if cluster.isRunning { try? cluster.signal(SIGTERM) }
        let recorded = (try? childPIDs(in: state)) ?? []
        for pid in Set(children + recorded) where processIsAlive(pid) {
            kill(-pid, SIGKILL)
            kill(pid, SIGKILL)
        }
    }

    static func backendPublish(port: Int, message: JSON) async throws -> HTTPTestClient.Response {
        let body = Envelope(
            service: "pubsub_backend",
            message: ["command": "publish", "params": ["channel": channel, "message": message]]
        ).encodedBytes()
        return try await HTTPTestClient.request(
            host: "127.0.0.1", port: port, path: "/backend",
            headers: [("Content-Type", "application/json"), ("X-Backend-Key", backendKey)], body: body)
    }

    /// Every worker's `/stats` on one node's backend port.
    static func workerStats(backendPort: Int, workers: Int) async throws -> [Int: WorkerStats] {
        try await SnorkyCluster.stats(host: "127.0.0.1", port: backendPort, backendKey: backendKey, workers: workers)
    }
}

// MARK: - Support

enum DeployFiles {
    /// The repository's root, from this source file's path.
    static let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
        .deletingLastPathComponent().path

    static func path(_ relative: String) -> String { root + "/" + relative }

    static func text(_ relative: String) throws -> String {
        try String(contentsOfFile: path(relative), encoding: .utf8)
    }

    /// An executable on PATH or in the sbin directories (nginx lives in /usr/sbin).
    static func which(_ name: String) -> String? {
        let path = ProcessInfo.processInfo.environment["PATH"] ?? ""
        let directories = path.split(separator: ":").map(String.init) + ["/usr/local/sbin", "/usr/sbin", "/sbin"]
        return directories.map { $0 + "/" + name }.first { access($0, X_OK) == 0 }
    }
}

/// Distinct free TCP ports on 127.0.0.1, for servers that need their port before starting
/// (nginx must know the nodes'). Each is held bound until `release()`, so the set has no
/// duplicates. They are drawn from below the kernel's ephemeral range: the kernel hands
/// ports of that range to every outgoing connection and every bind to port 0, which the
/// tests running alongside make all the time, and one could take a port between
/// `release()` and the server binding it. Below the range only an explicit bind can.
final class FreePorts {
    private var sockets: [Int32] = []
    private let ports: [Int]

    init(count: Int) throws {
        let ephemeralStart = Self.ephemeralRangeStart()
        let candidates = Array(10_000..<max(10_000 + count, ephemeralStart)).shuffled()
        var found: [Int] = []
        var held: [Int32] = []
        for port in candidates where found.count < count {
            let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
            guard fd >= 0 else { throw ClusterFixtureError("socket: \(String(cString: strerror(errno)))") }
            var address = sockaddr_in()
            address.sin_family = sa_family_t(AF_INET)
            address.sin_addr.s_addr = inet_addr("127.0.0.1")
            address.sin_port = UInt16(port).bigEndian
            let bound = withUnsafePointer(to: &address) { pointer in
                pointer.withMemoryRebound(to: sockaddr.self, capacity: 1) { generic in
                    bind(fd, generic, socklen_t(MemoryLayout<sockaddr_in>.size)) == 0
                }
            }
            if bound {
                held.append(fd)
                found.append(port)
            } else {
                close(fd)  // in use: try the next candidate
            }
        }
        guard found.count == count else {
            for fd in held { close(fd) }
            throw ClusterFixtureError("only \(found.count) of \(count) free ports below \(ephemeralStart)")
        }
        sockets = held
        ports = found
    }

    /// The first port of `net.ipv4.ip_local_port_range` (Linux's default is 32768).
    private static func ephemeralRangeStart() -> Int {
        let text = try? String(contentsOfFile: "/proc/sys/net/ipv4/ip_local_port_range", encoding: .utf8)
        return text?.split(whereSeparator: \.isWhitespace).first.flatMap { Int($0) } ?? 32_768
    }

    subscript(index: Int) -> Int { ports[index] }

    func release() {
        for fd in sockets { close(fd) }
        sockets = []
    }

    deinit { release() }
}
