import Foundation
import Glibc
import Logging
import Snorky
import SnorkyServer
import Testing

/// The accept-queue length the kernel allows the listening socket on 127.0.0.1:`port`, as
/// `ss` reports it (Send-Q of a socket in state LISTEN).
private func listenBacklog(port: Int) throws -> Int? {
    let ss = Process()
    ss.executableURL = URL(fileURLWithPath: "/usr/bin/ss")
    ss.arguments = ["-Hltn", "sport = :\(port)"]
    let pipe = Pipe()
    ss.standardOutput = pipe
    try ss.run()
    let output = String(decoding: pipe.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
    ss.waitUntilExit()
    // "LISTEN 0 4096 127.0.0.1:PORT 0.0.0.0:*"
    let fields = output.split(whereSeparator: \.isWhitespace)
    return fields.count > 2 ? Int(fields[2]) : nil
}

/// A socket bound to 127.0.0.1 on a free port and listening with `backlog`, as the
/// supervisor hands workers.
private func listeningSocket(backlog: Int32) throws -> (fd: Int32, port: Int) {
    let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
    #expect(fd >= 0)
    var address = sockaddr_in()
    address.sin_family = sa_family_t(AF_INET)
    address.sin_addr.s_addr = inet_addr("127.0.0.1")
    address.sin_port = 0
    let bound = withUnsafePointer(to: &address) {
        $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
    }
    #expect(bound == 0)
    #expect(listen(fd, backlog) == 0)
    var length = socklen_t(MemoryLayout<sockaddr_in>.size)
    _ = withUnsafeMutablePointer(to: &address) {
        $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(fd, $0, &length) }
    }
    return (fd, Int(UInt16(bigEndian: address.sin_port)))
}

@Suite("Worker: inherited listening sockets")
struct ListenBacklogTests {
    @Test("a worker adopting the supervisor's sockets keeps a long accept queue (not NIO's 128)")
    func inheritedSocketsKeepALongBacklog() async throws {
        let public_ = try listeningSocket(backlog: 4096)
        let backend = try listeningSocket(backlog: 4096)
        var configuration = ServerConfiguration()
        configuration.backendKey = "k"
        let worker = Worker(
            id: "backlog-test", server: configuration, bus: InMemoryBus(),
            logger: Logger(label: "ListenBacklogTests", factory: { _ in SwiftLogNoOpLogHandler() }))
        _ = try await worker.start(
            publicListener: .inherited(descriptor: public_.fd), backendListener: .inherited(descriptor: backend.fd))
        #expect(try listenBacklog(port: public_.port) == 4096)
        #expect(try listenBacklog(port: backend.port) == 1024)
        await worker.shutdown()
    }
}
