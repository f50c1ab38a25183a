import Logging
import NIOCore
import NIOEmbedded
import Snorky
import SnorkyTesting
@testable import SnorkyServer
import Testing

/// A finished connection must leave nothing behind: a reference cycle between the
/// connection handler and its transport once kept every closed connection's handler, and
/// through its contexts the whole channel, alive for the life of the worker (about 0.5 KiB
/// per connection, found by bench/soak.sh).
@Suite("Connection lifetime")
struct ConnectionLifetimeTests {
    @Test("closing a connection releases its handler, transport and channel")
    func closedConnectionIsReleased() async throws {
        let node = Node(id: "lifetime-test", bus: InMemoryBus(), logger: Logger(label: "test", factory: { _ in SwiftLogNoOpLogHandler() }))
        let connections = ConnectionRegistry()
        let released = try Self.openAndClose(node: node, connections: connections)
        #expect(connections.count == 0)
        // Deallocation announces nothing: poll until the client's last task let go.
        try await eventually(timeout: .seconds(15), "the closed connection's handler and channel were released") {
            released.handler == nil && released.channel == nil
        }
    }

    struct WeakReferences {
        weak var handler: WebSocketConnectionHandler?
        weak var channel: EmbeddedChannel?
    }

    /// Runs one connection through its whole life on an `EmbeddedChannel`, on this thread,
    /// and returns weak references to what should be freed.
    static func openAndClose(node: Node, connections: ConnectionRegistry) throws -> WeakReferences {
        let policy = WebSocketConnectionHandler.Policy(pingInterval: .seconds(25), pongTimeout: .seconds(10), maxConnections: 0)
        let handler = WebSocketConnectionHandler(node: node, connections: connections, identity: nil, policy: policy)
        let channel = EmbeddedChannel()
        try channel.connect(to: SocketAddress(ipAddress: "127.0.0.1", port: 1)).wait()
        try channel.pipeline.syncOperations.addHandler(handler)
        #expect(connections.count == 1)
        try channel.close().wait()
        // The pipeline removes its handlers in a task on the loop, as a real channel does.
        channel.embeddedEventLoop.run()
        return WeakReferences(handler: handler, channel: channel)
    }
}
