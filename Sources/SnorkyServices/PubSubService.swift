public import Snorky
public import SnorkyProtocol

/// Who may publish from a WebSocket connection. The backend API always may.
public struct PubSubPolicy: Sendable {
    /// When false, every client `publish` fails with `Not authorized`.
    public var clientPublish: Bool
    /// Optional per-call hook, consulted after `clientPublish`: return false to refuse.
    public var authorizePublish: (@Sendable (_ client: Client, _ channel: JSON) async -> Bool)?

    public init(
        clientPublish: Bool = true,
        authorizePublish: (@Sendable (_ client: Client, _ channel: JSON) async -> Bool)? = nil
    ) {
        self.clientPublish = clientPublish
        self.authorizePublish = authorizePublish
    }
}

/// The `pubsub` service (PROTOCOL.md section 5). It keeps no state of its own: a
/// subscription is a client's membership of a hub topic, so it spans workers and nodes
/// through the bus and is dropped with the connection.
@RPCService
public final class PubSubService: Sendable {
    public let name: String
    private let node: Node
    private let policy: PubSubPolicy

    public init(name: String = "pubsub", node: Node, policy: PubSubPolicy = PubSubPolicy()) {
        self.name = name
        self.node = node
        self.policy = policy
    }

    /// The bus topic of a channel: equal JSON values give the same topic.
    public func topic(for channel: JSON) -> String {
        "\(name):\(channel.canonicalString())"
    }

    @Command func subscribe(channel: JSON, client: Client) async throws {
        guard client.topicCount < node.configuration.maxSubscriptionsPerClient else {
            throw RPCError("Too many subscriptions")
        }
        guard await node.subscribe(client, to: topic(for: channel)) else {
            throw RPCError("Already subscribed")
        }
    }

    @Command func unsubscribe(channel: JSON, client: Client) throws {
        guard node.unsubscribe(client, from: topic(for: channel)) else {
            throw RPCError("Not subscribed")
        }
    }

    @Command func publish(channel: JSON, message: JSON, client: Client) async throws {
        guard policy.clientPublish else { throw RPCError("Not authorized") }
        if let authorize = policy.authorizePublish, await !authorize(client, channel) {
            throw RPCError("Not authorized")
        }
        try await deliver(channel: channel, message: message)
    }

    /// Publishes `{"type":"message","channel":...,"message":...}` to the channel's
    /// subscribers everywhere. Used by `publish` and by the backend service.
    public func deliver(channel: JSON, message: JSON) async throws(RPCError) {
        let notification: JSON = ["type": "message", "channel": channel, "message": message]
        do {
            try await node.broadcast(service: name, message: notification, topic: topic(for: channel))
        } catch {
            node.logger.warning("publish failed", metadata: ["error": "\(error)"])
            throw error.isUnavailable ? .serviceUnavailable : .internalError
        }
    }
}

/// `pubsub_backend`: publishing for application servers through the backend API;
/// bypasses the client publishing policy.
@RPCService
public final class PubSubBackendService: Sendable {
    public let name: String
    private let frontend: PubSubService

    public init(name: String = "pubsub_backend", frontend: PubSubService) {
        self.name = name
        self.frontend = frontend
    }

    /// `publish` does not suspend before the bus has the publication, so pipelined
    /// publications keep their order (see `Service`).
    public var runsPipelinedBackendRequestsConcurrently: Bool { true }

    @Command func publish(channel: JSON, message: JSON) async throws {
        try await frontend.deliver(channel: channel, message: message)
    }
}
