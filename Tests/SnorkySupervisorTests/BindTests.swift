#if canImport(Glibc)
import Glibc
#endif
import Logging
import Testing
@testable import SnorkySupervisor

@Suite struct BindTests {
    func supervisor(ports: [Int], workers: Int = 3) -> Supervisor {
        let listeners = ports.enumerated().map { ListenerSpec(name: "l\($0.offset)", host: "127.0.0.1", port: $0.element) }
        return Supervisor(
            configuration: SupervisorConfiguration(workerCount: workers, listeners: listeners),
            logger: Logger(label: "bind-test") { _ in SwiftLogNoOpLogHandler() }
        )
    }

    @Test func portZeroGivesEveryListenerOneEphemeralPortForAllSlots() throws {
        let supervisor = supervisor(ports: [0, 0])
        let bound = try supervisor.bind()
        #expect(bound.count == 2)
        #expect(bound.allSatisfy { $0.port > 0 })
        #expect(bound[0].port != bound[1].port)
        #expect(try supervisor.bind() == bound)  // idempotent
        #expect(supervisor.boundListeners == bound)
    }

    @Test func aPortHeldByAnotherSupervisorIsInUse() throws {
        // Both would set SO_REUSEPORT; the second must still refuse to share the port.
        let first = supervisor(ports: [0])
        let port = try first.bind()[0].port
        let second = supervisor(ports: [port])
        let error = try #require(throws: SupervisorError.self) { try second.bind() }
        #expect(error.kind == .addressInUse)
        #expect(error.description.contains("address already in use"))
        #expect(error.description.contains("127.0.0.1:\(port)"))
    }

    @Test func aPortHeldByAPlainSocketIsInUse() throws {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        defer { close(fd) }
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_addr.s_addr = UInt32(0x7f00_0001).bigEndian
        var length = socklen_t(MemoryLayout<sockaddr_in>.size)
        let bound = withUnsafeMutablePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { pointer in
                bind(fd, pointer, length) == 0 && listen(fd, 1) == 0 && getsockname(fd, pointer, &length) == 0
            }
        }
        try #require(bound)
        let port = Int(UInt16(bigEndian: address.sin_port))
        let error = try #require(throws: SupervisorError.self) { try supervisor(ports: [port]).bind() }
        #expect(error.kind == .addressInUse)
    }

    @Test func anUnresolvableHostIsABindError() throws {
        let supervisor = Supervisor(
            configuration: SupervisorConfiguration(
                workerCount: 1,
                listeners: [ListenerSpec(name: "ws", host: "999.1.1.1", port: 0)]
            ),
            logger: Logger(label: "bind-test") { _ in SwiftLogNoOpLogHandler() }
        )
        let error = try #require(throws: SupervisorError.self) { try supervisor.bind() }
        #expect(error.kind == .bindFailed)
    }

    @Test func zeroWorkersIsInvalid() throws {
        let error = try #require(throws: SupervisorError.self) { try supervisor(ports: [0], workers: 0).bind() }
        #expect(error.kind == .invalidConfiguration)
    }

    @Test func runAfterShutdownBeforeRunReturnsZeroAtOnce() async throws {
        let supervisor = supervisor(ports: [0])
        await supervisor.shutdown()
        #expect(try await supervisor.run() == 0)
        let error = await #expect(throws: SupervisorError.self) { _ = try await supervisor.run() }
        #expect(error?.kind == .alreadyRunning)
    }
}
