public import Snorky

/// Options of the built-in services, filled from the node's configuration.
public struct BuiltinServiceOptions: Sendable {
    public var pubSubPolicy = PubSubPolicy()
    /// Verifies connection tokens (`auth` service, `token` URL parameter); nil when no
    /// token secret is configured.
    public var tokens: ConnectionTokens?
    /// Extra rules for `messaging` participant names (the built-in rule always applies).
    public var messagingPolicy = MessagingPolicy()
    /// Dealers, shared store and limits of `datasync` / `datasync_backend`.
    public var dataSync = DataSyncOptions()

    public init() {}
}

/// Registers Snorky's built-in services on a node: `pubsub`, `auth`, `messaging`, `chat`
/// and `cursors` for clients and `pubsub_backend` for the backend API.
public enum BuiltinServices {
    public static func register(on node: Node, options: BuiltinServiceOptions = BuiltinServiceOptions()) {
        let pubsub = PubSubService(node: node, policy: options.pubSubPolicy)
        node.register(pubsub)
        node.registerBackend(PubSubBackendService(frontend: pubsub))
        node.register(AuthService(tokens: options.tokens))
        node.register(MessagingService(node: node, policy: options.messagingPolicy))
        node.register(ChatService(node: node))
        node.register(CursorsService(node: node))
        let dataSync = DataSyncService(node: node, options: options.dataSync)
        node.register(dataSync)
        node.registerBackend(DataSyncBackendService(frontend: dataSync))
    }
}
