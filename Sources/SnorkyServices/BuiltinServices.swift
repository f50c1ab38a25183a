public import Snorky

/// Options of the built-in services, filled from the node's configuration.
public struct BuiltinServiceOptions: Sendable {
    public var pubSubPolicy = PubSubPolicy()

    public init() {}
}

/// Registers Snorky's built-in services on a node: `pubsub` for clients and
/// `pubsub_backend` for the backend API.
public enum BuiltinServices {
    public static func register(on node: Node, options: BuiltinServiceOptions = BuiltinServiceOptions()) {
        let pubsub = PubSubService(node: node, policy: options.pubSubPolicy)
        node.register(pubsub)
        node.registerBackend(PubSubBackendService(frontend: pubsub))
    }
}
