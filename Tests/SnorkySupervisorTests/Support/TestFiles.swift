#if canImport(Glibc)
import Glibc
#endif
@testable import SnorkySupervisor

/// A fresh private directory under /tmp.
func makeTemporaryDirectory() -> String {
    var template = Array("/tmp/snorky-test-XXXXXX".utf8CString)
    let created = template.withUnsafeMutableBufferPointer { mkdtemp($0.baseAddress!) }
    precondition(created != nil, "mkdtemp failed")
    return String(cString: created!)
}

func readFile(_ path: String) -> String? {
    let fd = open(path, O_RDONLY | O_CLOEXEC)
    guard fd >= 0 else { return nil }
    defer { close(fd) }
    var data: [UInt8] = []
    var buffer = [UInt8](repeating: 0, count: 4096)
    while case let count = read(fd, &buffer, buffer.count), count > 0 { data += buffer[0..<count] }
    return String(decoding: data, as: UTF8.self)
}

func fileExists(_ path: String) -> Bool {
    access(path, F_OK) == 0
}

/// Sends one command to Redis over its Unix socket in hand-written RESP and returns the
/// raw first reply line (e.g. "+PONG\r\n").
func redisCommand(socketPath: String, _ arguments: [String]) async throws -> String {
    try await DetachedThread.run(name: "test-redis") {
        let fd = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        guard fd >= 0 else { return "socket failed" }
        defer { close(fd) }
        var limit = timeval(tv_sec: 5, tv_usec: 0)
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &limit, socklen_t(MemoryLayout<timeval>.size))
        var address = sockaddr_un()
        address.sun_family = sa_family_t(AF_UNIX)
        withUnsafeMutableBytes(of: &address.sun_path) { raw in
            let bytes = Array(socketPath.utf8)
            raw.copyBytes(from: bytes)
            raw[bytes.count] = 0
        }
        let connected = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                connect(fd, $0, socklen_t(MemoryLayout<sockaddr_un>.size))
            }
        }
        guard connected == 0 else { return "connect failed: errno \(errno)" }
        var request = "*\(arguments.count)\r\n"
        for argument in arguments { request += "$\(argument.utf8.count)\r\n\(argument)\r\n" }
        let bytes = Array(request.utf8)
        guard write(fd, bytes, bytes.count) == bytes.count else { return "write failed" }
        var reply: [UInt8] = []
        var byte: UInt8 = 0
        while !reply.suffix(2).elementsEqual([13, 10]) {
            guard read(fd, &byte, 1) == 1 else { break }
            reply.append(byte)
        }
        return String(decoding: reply, as: UTF8.self)
    }
}

func writeFile(_ path: String, _ text: String) throws {
    struct WriteFailed: Error {}
    let fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0o600)
    guard fd >= 0 else { throw WriteFailed() }
    defer { close(fd) }
    let bytes = Array(text.utf8)
    guard write(fd, bytes, bytes.count) == bytes.count else { throw WriteFailed() }
}
