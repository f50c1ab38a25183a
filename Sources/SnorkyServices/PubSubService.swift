public import NIOCore
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
        do {
            try await node.publish(topic: topic(for: channel), envelope: notification(channel: channel, message: message))
        } catch {
            throw failure(error)
        }
    }

    /// `deliver(channel:message:)` for a caller on `loop` that starts no task: the
    /// publication is handed to the bus before this returns, and the future fails with
    /// the `RPCError` `deliver` would throw. nil when the bus cannot take it that way.
    func deliver(channel: JSON, message: JSON, on loop: any EventLoop) -> EventLoopFuture<Void>? {
        node.publish(topic: topic(for: channel), envelope: notification(channel: channel, message: message), on: loop)?
            .flatMapErrorThrowing { error in throw self.failure(error) }
    }

    /// The envelope subscribers receive, encoded once for all of them.
    private func notification(channel: JSON, message: JSON) -> [UInt8] {
        Envelope.encodedBytes(service: name, message: ["type": "message", "channel": channel, "message": message])
    }

    private func failure(_ error: any Error) -> RPCError {
        node.logger.warning("publish failed", metadata: ["error": "\(error)"])
        return (error as? BusError)?.isUnavailable == true ? .serviceUnavailable : .internalError
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

    private static let publishParameters: Set<String> = ["channel", "message"]

    /// A well-formed `publish` starts here, without a task, and replies as `publish` does;
    /// anything else (another command, wrong params, a bus that must suspend) goes
    /// through `handle`.
    public func startBackendRequest(_ message: JSON, on loop: any EventLoop) -> EventLoopFuture<JSON>? {
        guard case .success(let call) = RPCCall.decode(message), call.command == "publish",
            let params = try? ParamsBinder(call.params, accepting: Self.publishParameters),
            let channel = try? params.required("channel", as: JSON.self),
            let payload = try? params.required("message", as: JSON.self),
            let delivered = frontend.deliver(channel: channel, message: payload, on: loop)
        else { return nil }
        let callId = call.callId
        let reply = loop.makePromise(of: JSON.self)
        delivered.whenComplete { result in
            switch result {
            case .success: reply.succeed(RPCMessage.response(callId: callId, data: .null))
            case .failure(let error):
                reply.succeed(RPCMessage.error(callId: callId, message: (error as? RPCError ?? .internalError).message))
            }
        }
        return reply.futureResult
    }
}
