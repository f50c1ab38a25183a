#if canImport(Glibc)
import Glibc
#endif
import Synchronization
@testable import SnorkySupervisor

/// What a test worker answered on one connection.
struct WorkerReply: Sendable, Hashable {
    var pid: Int32
    var slot: Int
    var listenFDs: String
    var statusFD: String
    var supervisorPID: Int32
    var redis: String
    var mark: String
    var listener: Int

    init?(_ line: String) {
        let parts = line.split(separator: " ").map(String.init)
        guard parts.count == 8, let pid = Int32(parts[0]), let slot = Int(parts[1]),
              let supervisorPID = Int32(parts[4]), let listener = Int(parts[7])
        else { return nil }
        self.pid = pid
        self.slot = slot
        listenFDs = parts[2]
        statusFD = parts[3]
        self.supervisorPID = supervisorPID
        redis = parts[5]
        mark = parts[6]
        self.listener = listener
    }
}

enum ClientFailure: Error, Sendable, Hashable {
    case connect(errno: Int32)
    case read(errno: Int32)
    case malformed(String)
}

/// A blocking TCP client, run on threads of its own (never on the cooperative pool).
enum TestClient {
    /// Connects to 127.0.0.1:`port` and reads the reply until EOF.
    static func fetch(port: Int) -> Result<WorkerReply, ClientFailure> {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        guard fd >= 0 else { return .failure(.connect(errno: errno)) }
        defer { close(fd) }
        var limit = timeval(tv_sec: 10, tv_usec: 0)
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &limit, socklen_t(MemoryLayout<timeval>.size))
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_port = UInt16(port).bigEndian
        address.sin_addr.s_addr = UInt32(0x7f00_0001).bigEndian
        let connected = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size))
            }
        }
        guard connected == 0 else { return .failure(.connect(errno: errno)) }
        var data: [UInt8] = []
        var buffer = [UInt8](repeating: 0, count: 512)
        while true {
            let count = buffer.withUnsafeMutableBytes { recv(fd, $0.baseAddress, $0.count, 0) }
            if count > 0 {
                data += buffer[0..<count]
            } else if count == 0 {
                break
            } else if errno != EINTR {
                return .failure(.read(errno: errno))
            }
        }
        let line = String(decoding: data, as: UTF8.self).trimmingCharacters(in: "\n")
        guard let reply = WorkerReply(line) else { return .failure(.malformed(line)) }
        return .success(reply)
    }

    /// `count` connections one after another.
    static func fetchMany(port: Int, count: Int) async throws -> [Result<WorkerReply, ClientFailure>] {
        try await DetachedThread.run(name: "test-client") {
            (0..<count).map { _ in fetch(port: port) }
        }
    }

    /// Connects again and again until `stop` is set and at least `minimum` were made.
    static func fetchContinuously(
        port: Int,
        minimum: Int,
        until stop: Flag,
        afterFirst: @escaping @Sendable () -> Void = {}
    ) async throws -> [Result<WorkerReply, ClientFailure>] {
        try await DetachedThread.run(name: "test-client") {
            var results: [Result<WorkerReply, ClientFailure>] = []
            while results.count < minimum || !stop.isSet {
                results.append(fetch(port: port))
                if results.count == 1 { afterFirst() }
            }
            return results
        }
    }
}

final class Flag: Sendable {
    private let value = Mutex(false)
    var isSet: Bool { value.withLock { $0 } }
    func set() { value.withLock { $0 = true } }
}

extension String {
    fileprivate func trimmingCharacters(in character: Character) -> String {
        var result = Substring(self)
        while result.last == character { result = result.dropLast() }
        return String(result)
    }
}

extension Result {
    var success: Success? {
        if case .success(let value) = self { return value }
        return nil
    }

    var failure: Failure? {
        if case .failure(let error) = self { return error }
        return nil
    }
}

/// Is a process with this pid still around (running or zombie)?
func processExists(_ pid: Int32) -> Bool {
    kill(pid, 0) == 0 || errno == EPERM
}
