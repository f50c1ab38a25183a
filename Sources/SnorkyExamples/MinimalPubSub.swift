public import Snorky
import SnorkyProtocol

/// The seed's second example: a publish/subscribe service in a few lines. Because it uses
/// the node's cluster primitives (`subscribe`, `broadcast`) instead of a local dictionary
/// of clients, it works unchanged across workers and nodes, and subscriptions vanish with
/// their connection.
@RPCService
public final class MinimalPubSub: Sendable {
    public let name: String
    private let node: Node

    public init(name: String = "minipubsub", node: Node) {
        self.name = name
        self.node = node
    }

    @Command func subscribe(channel: String, client: Client) async throws {
        guard await node.subscribe(client, to: "\(name):\(channel)") else {
            throw RPCError("Already subscribed")
        }
    }

    @Command func publish(channel: String, message: JSON) async throws {
        try await node.broadcast(
            service: name,
            message: ["type": "message", "channel": .string(channel), "message": message],
            topic: "\(name):\(channel)"
        )
    }
}
