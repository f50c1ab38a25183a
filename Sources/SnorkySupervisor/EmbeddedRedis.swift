#if canImport(Glibc)
import Glibc
#endif

/// Where and how the embedded redis-server runs: a private directory holding its Unix
/// socket, no TCP port, no persistence.
struct EmbeddedRedisPlan: Sendable {
    let executable: String
    let runtimeDirectory: String
    var socketPath: String { runtimeDirectory + "/redis.sock" }
    var url: String { "unix://" + socketPath }

    /// Resolves the executable and creates the runtime directory (mode 0700).
    static func prepare(_ configuration: EmbeddedRedisConfiguration) throws(SupervisorError) -> EmbeddedRedisPlan {
        guard let executable = resolveExecutable(configuration.executable) else { throw .redisNotFound }
        let parent = configuration.runtimeDirectory
            ?? getenv("XDG_RUNTIME_DIR").map { String(cString: $0) }.flatMap { $0.isEmpty ? nil : $0 }
            ?? "/tmp"
        // mkdtemp: unique even with several supervisors in one process (tests), and
        // created 0700 atomically, so nobody else can reach the socket.
        var template = Array("\(parent)/snorky-\(getpid())-XXXXXX".utf8CString)
        guard let created = template.withUnsafeMutableBufferPointer({ mkdtemp($0.baseAddress!) }) else {
            throw .runtimeDirectory(parent, errnoDescription(errno))
        }
        let plan = EmbeddedRedisPlan(executable: executable, runtimeDirectory: String(cString: created))
        // sun_path holds 108 bytes including the terminating NUL.
        guard plan.socketPath.utf8.count < 108 else {
            plan.removeRuntimeDirectory()
            throw .runtimeDirectory(plan.runtimeDirectory, "socket path \(plan.socketPath) is longer than a Unix socket allows")
        }
        return plan
    }

    var spawnRequest: SpawnRequest {
        SpawnRequest(
            path: executable,
            arguments: [
                executable,
                "--port", "0",
                "--unixsocket", socketPath,
                "--unixsocketperm", "700",
                "--save", "",
                "--appendonly", "no",
                "--dir", runtimeDirectory,
                "--loglevel", "warning",
            ],
            environment: currentProcessEnvironment(),
            // Stopped gracefully on shutdown; the death signal only covers a supervisor
            // that was itself killed.
            deathSignal: SIGTERM
        )
    }

    /// Removes the directory and whatever redis left in it (the socket; nothing else is
    /// expected since persistence is off). The directory is ours alone: mkdtemp made it.
    func removeRuntimeDirectory() {
        if let directory = opendir(runtimeDirectory) {
            while let entry = readdir(directory) {
                let name = withUnsafeBytes(of: entry.pointee.d_name) { raw in
                    String(decoding: raw.prefix { $0 != 0 }, as: UTF8.self)
                }
                if name != "." && name != ".." { unlink(runtimeDirectory + "/" + name) }
            }
            closedir(directory)
        }
        rmdir(runtimeDirectory)
    }
}

/// A RESP PING over a Unix socket: the readiness check for the embedded redis-server.
enum RedisPing {
    /// One blocking attempt, bounded by `timeout` for each of send and receive.
    static func attempt(socketPath: String, timeout: Duration) -> Bool {
        let fd = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        guard fd >= 0 else { return false }
        defer { close(fd) }
        let (seconds, attoseconds) = timeout.components
        var limit = timeval(tv_sec: Int(seconds), tv_usec: Int(attoseconds / 1_000_000_000_000))
        _ = setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &limit, socklen_t(MemoryLayout<timeval>.size))
        _ = setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &limit, socklen_t(MemoryLayout<timeval>.size))

        var address = sockaddr_un()
        address.sun_family = sa_family_t(AF_UNIX)
        let pathBytes = Array(socketPath.utf8)
        guard pathBytes.count < MemoryLayout.size(ofValue: address.sun_path) else { return false }
        withUnsafeMutableBytes(of: &address.sun_path) { raw in
            raw.copyBytes(from: pathBytes)
            raw[pathBytes.count] = 0
        }
        let connected = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                connect(fd, $0, socklen_t(MemoryLayout<sockaddr_un>.size))
            }
        }
        guard connected == 0 else { return false }

        let ping = Array("*1\r\n$4\r\nPING\r\n".utf8)
        guard send(fd, ping, ping.count, Int32(MSG_NOSIGNAL)) == ping.count else { return false }
        let expected = Array("+PONG\r\n".utf8)
        var received: [UInt8] = []
        var buffer = [UInt8](repeating: 0, count: 64)
        while received.count < expected.count {
            let count = buffer.withUnsafeMutableBytes { recv(fd, $0.baseAddress, $0.count, 0) }
            guard count > 0 else { return false }
            received += buffer[0..<count]
        }
        return received.starts(with: expected)
    }

    /// Retries `attempt` with a short, growing pause until it succeeds, `deadline`
    /// passes, or the task is cancelled. Attempts run on a helper thread (they block).
    static func waitUntilAnswering(socketPath: String, deadline: ContinuousClock.Instant) async -> Bool {
        var pause = Duration.milliseconds(5)
        while !Task.isCancelled && ContinuousClock.now < deadline {
            let answered = (try? await DetachedThread.run(name: "snorky-redis-ping") {
                attempt(socketPath: socketPath, timeout: .milliseconds(500))
            }) ?? false
            if answered { return true }
            try? await Task.sleep(for: pause)
            pause = min(pause * 2, .milliseconds(200))
        }
        return false
    }
}
