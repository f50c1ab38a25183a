#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#elseif canImport(Darwin)
import Darwin
#endif
import Synchronization

/// A real `redis-server` for tests: private temporary directory, Unix socket and/or a TCP
/// port on 127.0.0.1, no persistence.
///
/// ```swift
/// let redis = try await RedisServerProcess()            // Unix socket only
/// let redis = try await RedisServerProcess(tcp: true)   // also (or only, with unixSocket: false) TCP
/// redis.url                                             // "unix:///tmp/snorky-redis-XXXXXX/redis.sock"
/// try redis.command(["PUBSUB", "CHANNELS", "*"])
/// redis.stop(); try await redis.restart()               // same address, for outage tests
/// ```
///
/// The server is started through a tiny `/bin/sh` guard whose stdin is a pipe held by this
/// process: when the test process exits for any reason (even a crash) the pipe closes and
/// the guard terminates `redis-server`, so no server outlives the tests. `stop()` runs on
/// `deinit` as well, and the temporary directory is removed.
public final class RedisServerProcess: Sendable {
    public struct Failure: Error, CustomStringConvertible, Sendable {
        public let description: String
        init(_ description: String) { self.description = description }
    }

    /// `unix:///path` when the Unix socket is enabled, otherwise `redis://127.0.0.1:PORT`.
    public let url: String
    /// `redis://127.0.0.1:PORT`, when TCP is enabled.
    public let tcpURL: String?
    /// `unix:///path`, when the Unix socket is enabled.
    public let unixURL: String?
    public let socketPath: String?
    public let port: Int?
    /// The private temporary directory (socket, log).
    public let directory: String

    private let executable: String
    private let cliExecutable: String
    private let arguments: [String]

    private struct Running: Sendable {
        var guardPID: pid_t
        var serverPID: pid_t
        /// Write end of the guard's stdin; closing it makes the guard SIGTERM the server.
        var lifeline: Int32
    }

    private struct State: Sendable {
        var running: Running?
        var removed = false
    }

    private let state = Mutex(State())

    /// Starts a server and waits until it answers PING.
    ///
    /// - Parameters:
    ///   - unixSocket: listen on `<tmpdir>/redis.sock`.
    ///   - tcp: listen on a free port of 127.0.0.1 (found by binding port 0 first).
    ///   - extraArguments: more `redis-server` options, e.g. `["--maxclients", "100"]`.
    public init(
        unixSocket: Bool = true,
        tcp: Bool = false,
        extraArguments: [String] = [],
        executable: String = "/usr/bin/redis-server",
        cliExecutable: String = "/usr/bin/redis-cli",
        startupTimeout: Duration = .seconds(10)
    ) async throws {
        precondition(unixSocket || tcp, "RedisServerProcess needs a Unix socket or TCP")
        var template = Array("/tmp/snorky-redis-XXXXXX".utf8CString)
        let directory: String = try template.withUnsafeMutableBufferPointer { buffer in
            guard mkdtemp(buffer.baseAddress!) != nil else {
                throw Failure("mkdtemp failed: errno \(errno)")
            }
            return String(cString: buffer.baseAddress!)
        }
        self.directory = directory
        self.executable = executable
        self.cliExecutable = cliExecutable

        var arguments = [
            "--save", "", "--appendonly", "no", "--daemonize", "no",
            "--dir", directory, "--logfile", directory + "/redis.log",
        ]
        if unixSocket {
            let path = directory + "/redis.sock"
            socketPath = path
            unixURL = "unix://" + path
            arguments += ["--unixsocket", path, "--unixsocketperm", "700"]
        } else {
            socketPath = nil
            unixURL = nil
        }
        if tcp {
            let port: Int
            do {
                port = try Self.freeTCPPort()
            } catch {
                Self.removeDirectory(directory)
                throw error
            }
            self.port = port
            tcpURL = "redis://127.0.0.1:\(port)"
            arguments += ["--port", String(port), "--bind", "127.0.0.1"]
        } else {
            port = nil
            tcpURL = nil
            arguments += ["--port", "0"]
        }
        self.arguments = arguments + extraArguments
        url = unixURL ?? tcpURL!

        do {
            try await launch(timeout: startupTimeout)
        } catch {
            stop()
            throw error
        }
    }

    deinit {
        remove()
    }

    /// Whether the server process is running (started and not stopped or killed).
    public var isRunning: Bool {
        state.withLock { state in
            guard let running = state.running else { return false }
            return Self.isAlive(running.serverPID)
        }
    }

    /// The server's process id while it runs.
    public var pid: Int32? {
        state.withLock { $0.running?.serverPID }
    }

    /// Stops the server with SIGTERM and waits for it to exit (SIGKILL after 5 s). Idempotent.
    public func stop() {
        let running = state.withLock { state -> Running? in
            defer { state.running = nil }
            return state.running
        }
        guard let running else { return }
        // The guard sends SIGTERM and waits for the server when its stdin reaches EOF.
        Self.sayKeep(running.lifeline)
        shutdown(running.lifeline, Int32(SHUT_WR))
        close(running.lifeline)
        if !Self.waitForExit(running.guardPID, timeout: .seconds(5)) {
            sendSignal(running.serverPID, SIGKILL)
            sendSignal(running.guardPID, SIGKILL)
            _ = Self.waitForExit(running.guardPID, timeout: .seconds(5))
        }
        Self.waitUntilGone(running.serverPID, timeout: .seconds(5))
    }

    /// Kills the server with SIGKILL (a crash, not a shutdown) and reaps it. Idempotent.
    public func kill() {
        let running = state.withLock { state -> Running? in
            defer { state.running = nil }
            return state.running
        }
        guard let running else { return }
        sendSignal(running.serverPID, SIGKILL)
        Self.sayKeep(running.lifeline)
        shutdown(running.lifeline, Int32(SHUT_WR))
        close(running.lifeline)
        if !Self.waitForExit(running.guardPID, timeout: .seconds(5)) {
            sendSignal(running.guardPID, SIGKILL)
            _ = Self.waitForExit(running.guardPID, timeout: .seconds(5))
        }
        Self.waitUntilGone(running.serverPID, timeout: .seconds(5))
    }

    /// Stops the server if it runs, then starts it again on the same socket path and port
    /// (the data is gone: there is no persistence) and waits until it answers PING.
    public func restart(timeout: Duration = .seconds(10)) async throws {
        stop()
        try await launch(timeout: timeout)
    }

    /// Runs one command through `redis-cli` and returns its output (raw format: one line per
    /// array element), without the trailing newline. Throws if `redis-cli` fails.
    @discardableResult
    public func command(_ arguments: [String]) throws -> String {
        var cliArguments = [cliExecutable]
        if let socketPath {
            cliArguments += ["-s", socketPath]
        } else if let port {
            cliArguments += ["-h", "127.0.0.1", "-p", String(port)]
        }
        if let index = self.arguments.firstIndex(of: "--requirepass"), index + 1 < self.arguments.count {
            cliArguments += ["--no-auth-warning", "-a", self.arguments[index + 1]]
        }
        cliArguments += arguments
        let (status, output) = try Self.runCapturingOutput(cliArguments)
        guard status == 0 else {
            throw Failure("redis-cli \(arguments.joined(separator: " ")) exited with \(status): \(output)")
        }
        var result = output
        while result.hasSuffix("\n") { result.removeLast() }
        return result
    }

    /// `command` split into lines, empty lines dropped (e.g. for `PUBSUB CHANNELS *`).
    public func commandLines(_ arguments: [String]) throws -> [String] {
        try command(arguments).split(separator: "\n", omittingEmptySubsequences: true).map(String.init)
    }

    /// The server's log file contents (for diagnosing a failed start).
    public var log: String {
        (try? Self.readFile(directory + "/redis.log")) ?? ""
    }

    // MARK: Launching

    private func launch(timeout: Duration) async throws {
        let running = try spawnServer()
        state.withLock { $0.running = running }
        let deadline = ContinuousClock.now + timeout
        var delay = Duration.milliseconds(5)
        while true {
            if pingSucceeds() { return }
            if !Self.isAlive(running.serverPID) {
                stop()
                throw Failure("redis-server exited during startup; log:\n\(log)")
            }
            if ContinuousClock.now >= deadline {
                throw Failure("redis-server did not answer PING within \(timeout); log:\n\(log)")
            }
            try await Task.sleep(for: delay)
            delay = min(delay * 2, .milliseconds(100))
        }
    }

    private func spawnServer() throws -> Running {
        // The guard: starts the server in the background, reports its pid, and terminates it
        // once stdin (our lifeline) reaches EOF, which also happens if we crash. Unless told
        // "keep" first (stop/kill before a restart), it then removes the directory too.
        let script = """
            "$@" </dev/null >/dev/null 2>&1 &
            pid=$!
            echo "$pid"
            exec >/dev/null 2>&1
            line=""
            read -r line || true
            kill -TERM "$pid" 2>/dev/null
            wait "$pid"
            if [ "$line" != keep ]; then rm -rf "$SNORKY_REDIS_DIR"; fi
            """
        let lifeline = try Self.makePipe()
        let report = try Self.makePipe()
        let pid: pid_t
        do {
            pid = try Self.spawn(
                ["/bin/sh", "-c", "SNORKY_REDIS_DIR=\"$1\"; shift; " + script, "snorky-redis-guard", directory, executable]
                    + arguments,
                stdin: lifeline.read,
                stdout: report.write
            )
        } catch {
            for fd in [lifeline.read, lifeline.write, report.read, report.write] { close(fd) }
            throw error
        }
        close(lifeline.read)
        close(report.write)
        let line = Self.readLine(report.read)
        close(report.read)
        guard let serverPID = pid_t(line.trimmingNewlines()) else {
            close(lifeline.write)
            _ = Self.waitForExit(pid, timeout: .seconds(5))
            throw Failure("could not start \(executable): guard reported \(line.debugDescription)")
        }
        return Running(guardPID: pid, serverPID: serverPID, lifeline: lifeline.write)
    }

    private func pingSucceeds() -> Bool {
        let fd: Int32
        if let socketPath {
            fd = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
            guard fd >= 0 else { return false }
            var address = sockaddr_un()
            address.sun_family = sa_family_t(AF_UNIX)
            let bytes = Array(socketPath.utf8)
            guard bytes.count < MemoryLayout.size(ofValue: address.sun_path) else {
                close(fd)
                return false
            }
            withUnsafeMutableBytes(of: &address.sun_path) { raw in
                raw.copyBytes(from: bytes)
                raw[bytes.count] = 0
            }
            let result = withUnsafePointer(to: &address) {
                $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                    connect(fd, $0, socklen_t(MemoryLayout<sockaddr_un>.size))
                }
            }
            guard result == 0 else {
                close(fd)
                return false
            }
        } else if let port {
            fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
            guard fd >= 0 else { return false }
            var address = sockaddr_in()
            address.sin_family = sa_family_t(AF_INET)
            address.sin_port = in_port_t(UInt16(port).bigEndian)
            address.sin_addr.s_addr = in_addr_t(UInt32(0x7F00_0001).bigEndian)
            let result = withUnsafePointer(to: &address) {
                $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                    connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size))
                }
            }
            guard result == 0 else {
                close(fd)
                return false
            }
        } else {
            return false
        }
        defer { close(fd) }
        var timeout = timeval(tv_sec: 0, tv_usec: 500_000)
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
        let ping = Array("PING\r\n".utf8)
        guard write(fd, ping, ping.count) == ping.count else { return false }
        var reply = [UInt8](repeating: 0, count: 64)
        let count = read(fd, &reply, reply.count)
        guard count > 0 else { return false }
        // A password-protected server answers -NOAUTH: up as well.
        return reply[..<count].starts(with: Array("+PONG".utf8)) || reply[..<count].starts(with: Array("-NOAUTH".utf8))
    }

    // MARK: POSIX helpers

    private static func freeTCPPort() throws -> Int {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        guard fd >= 0 else { throw Failure("socket failed: errno \(errno)") }
        defer { close(fd) }
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_port = 0
        address.sin_addr.s_addr = in_addr_t(UInt32(0x7F00_0001).bigEndian)
        let bound = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                bind(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size))
            }
        }
        guard bound == 0 else { throw Failure("bind failed: errno \(errno)") }
        var length = socklen_t(MemoryLayout<sockaddr_in>.size)
        let named = withUnsafeMutablePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(fd, $0, &length) }
        }
        guard named == 0 else { throw Failure("getsockname failed: errno \(errno)") }
        return Int(UInt16(bigEndian: address.sin_port))
    }

    /// A close-on-exec channel (a socket pair, which, unlike `pipe`, can be created
    /// close-on-exec atomically here, so a process spawned concurrently by another test
    /// cannot inherit it).
    /// Tells the guard to leave the directory in place (we may restart, and `remove()`
    /// deletes it).
    private static func sayKeep(_ lifeline: Int32) {
        let keep = Array("keep\n".utf8)
        _ = keep.withUnsafeBytes { send(lifeline, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) }
    }

    private static func makePipe() throws -> (read: Int32, write: Int32) {
        var fds: [Int32] = [-1, -1]
        guard socketpair(AF_UNIX, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0, &fds) == 0 else {
            throw Failure("socketpair failed: errno \(errno)")
        }
        return (fds[0], fds[1])
    }

    /// posix_spawn with a clean signal mask and default dispositions (a child spawned from
    /// a Swift concurrency thread would otherwise inherit blocked SIGTERM and ignored SIGPIPE).
    private static func spawn(_ argv: [String], stdin: Int32?, stdout: Int32?) throws -> pid_t {
        var actions = posix_spawn_file_actions_t()
        posix_spawn_file_actions_init(&actions)
        defer { posix_spawn_file_actions_destroy(&actions) }
        if let stdin {
            posix_spawn_file_actions_adddup2(&actions, stdin, 0)
        } else {
            posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0)
        }
        if let stdout {
            posix_spawn_file_actions_adddup2(&actions, stdout, 1)
            posix_spawn_file_actions_adddup2(&actions, stdout, 2)
        } else {
            posix_spawn_file_actions_addopen(&actions, 1, "/dev/null", O_WRONLY, 0)
            posix_spawn_file_actions_addopen(&actions, 2, "/dev/null", O_WRONLY, 0)
        }
        // Nothing else: a redis-server that inherited another test's Redis connection would
        // keep that connection open after its owner closed it.
        _ = GlibcExtensions.addCloseFrom?(&actions, 3)

        var attributes = posix_spawnattr_t()
        posix_spawnattr_init(&attributes)
        defer { posix_spawnattr_destroy(&attributes) }
        var emptyMask = sigset_t()
        sigemptyset(&emptyMask)
        posix_spawnattr_setsigmask(&attributes, &emptyMask)
        var defaults = sigset_t()
        sigemptyset(&defaults)
        for signal in [SIGTERM, SIGINT, SIGHUP, SIGQUIT, SIGPIPE, SIGCHLD] {
            sigaddset(&defaults, signal)
        }
        posix_spawnattr_setsigdefault(&attributes, &defaults)
        posix_spawnattr_setflags(&attributes, Int16(POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF))

        var cArguments: [UnsafeMutablePointer<CChar>?] = argv.map { strdup($0) }
        cArguments.append(nil)
        defer { for argument in cArguments { free(argument) } }
        var pid: pid_t = 0
        let result = posix_spawn(&pid, argv[0], &actions, &attributes, cArguments, environ)
        guard result == 0 else { throw Failure("posix_spawn \(argv[0]) failed: \(result)") }
        return pid
    }

    private static func runCapturingOutput(_ argv: [String]) throws -> (Int32, String) {
        let output = try makePipe()
        let pid: pid_t
        do {
            pid = try spawn(argv, stdin: nil, stdout: output.write)
        } catch {
            close(output.read)
            close(output.write)
            throw error
        }
        close(output.write)
        let text = readAll(output.read)
        close(output.read)
        var status: Int32 = 0
        while waitpid(pid, &status, 0) < 0 && errno == EINTR {}
        let exitCode = (status & 0x7f) == 0 ? (status >> 8) & 0xff : 128 + (status & 0x7f)
        return (exitCode, text)
    }

    private static func readAll(_ fd: Int32) -> String {
        var bytes: [UInt8] = []
        var chunk = [UInt8](repeating: 0, count: 4096)
        while true {
            let count = read(fd, &chunk, chunk.count)
            if count > 0 {
                bytes += chunk[..<count]
            } else if count < 0 && errno == EINTR {
                continue
            } else {
                break
            }
        }
        return String(decoding: bytes, as: UTF8.self)
    }

    private static func readLine(_ fd: Int32) -> String {
        var bytes: [UInt8] = []
        var byte: UInt8 = 0
        while true {
            let count = read(fd, &byte, 1)
            if count == 1 {
                if byte == UInt8(ascii: "\n") { break }
                bytes.append(byte)
            } else if count < 0 && errno == EINTR {
                continue
            } else {
                break
            }
        }
        return String(decoding: bytes, as: UTF8.self)
    }

    private static func readFile(_ path: String) throws -> String {
        let fd = open(path, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { throw Failure("cannot open \(path)") }
        defer { close(fd) }
        return readAll(fd)
    }

    /// Reaps `pid` (our child), polling up to `timeout`. Returns false if it is still running.
    private static func waitForExit(_ pid: pid_t, timeout: Duration) -> Bool {
        let deadline = ContinuousClock.now + timeout
        var status: Int32 = 0
        while true {
            let result = waitpid(pid, &status, WNOHANG)
            if result == pid || (result < 0 && errno == ECHILD) { return true }
            if ContinuousClock.now >= deadline { return false }
            usleep(2_000)
        }
    }

    /// Whether `pid` runs (a zombie, which the guard reaps only when told to stop, does not).
    private static func isAlive(_ pid: pid_t) -> Bool {
        guard sendSignal(pid, 0) == 0 else { return false }
        #if os(Linux)
        // /proc/<pid>/stat: "pid (comm) S ...": the state follows the last ')'.
        guard let stat = try? readFile("/proc/\(pid)/stat"), let close = stat.lastIndex(of: ")") else { return true }
        let state = stat[stat.index(after: close)...].drop(while: { $0 == " " }).first
        return state != "Z" && state != "X"
        #else
        return true
        #endif
    }

    /// Waits until a process that is not our child (the server, child of the guard) is gone.
    private static func waitUntilGone(_ pid: pid_t, timeout: Duration) {
        let deadline = ContinuousClock.now + timeout
        while sendSignal(pid, 0) == 0 && ContinuousClock.now < deadline {
            usleep(2_000)
        }
    }

    private static func removeDirectory(_ path: String) {
        if let directory = opendir(path) {
            while let entry = readdir(directory) {
                let name = withUnsafeBytes(of: entry.pointee.d_name) { raw in
                    String(decoding: raw.prefix(while: { $0 != 0 }), as: UTF8.self)
                }
                if name == "." || name == ".." { continue }
                unlink(path + "/" + name)
            }
            closedir(directory)
        }
        rmdir(path)
    }

    /// Removes the temporary directory after stopping the server. Called by `deinit`; call it
    /// yourself to clean up early. The instance cannot be restarted afterwards.
    public func remove() {
        stop()
        let shouldRemove = state.withLock { state -> Bool in
            defer { state.removed = true }
            return !state.removed
        }
        if shouldRemove { Self.removeDirectory(directory) }
    }
}

@discardableResult
private func sendSignal(_ pid: pid_t, _ signal: Int32) -> Int32 {
    #if canImport(Glibc)
    Glibc.kill(pid, signal)
    #elseif canImport(Musl)
    Musl.kill(pid, signal)
    #else
    Darwin.kill(pid, signal)
    #endif
}

extension String {
    fileprivate func trimmingNewlines() -> Substring {
        var text = Substring(self)
        while let last = text.last, last == "\n" || last == "\r" || last == " " { text.removeLast() }
        return text
    }
}
