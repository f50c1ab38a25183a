public import NIOCore
import Synchronization

/// Hands the publications of one bus topic on this node to a service, instead of to
/// clients: for node-wide subscriptions, such as datasync's delta topic that every node
/// evaluates against its own subscribers.
///
/// Built only on public cluster primitives: the listener is a client that never connects,
/// whose transport calls `handler` with each publication's bytes (as given to
/// `Node.publish(topic:envelope:)`). The hub's per-loop writer calls it, so publications
/// arrive one at a time, in bus order, on `eventLoop`; keep the handler short.
///
/// (A hook in `Node.deliver` that routes a topic to a handler before the hub would avoid
/// framing the payload as a WebSocket frame and unframing it again.)
public final class TopicListener: Sendable {
    public let topic: String
    private let node: Node
    private let handler: @Sendable ([UInt8]) -> Void
    /// The subscribing task (awaited by every `start`) and the listening client.
    private let state = Mutex<(subscription: Task<Void, Never>, client: Client)?>(nil)

    /// - Parameter handler: called with the bytes of each publication on `topic`.
    public init(node: Node, topic: String, handler: @escaping @Sendable (_ payload: [UInt8]) -> Void) {
        self.node = node
        self.topic = topic
        self.handler = handler
    }

    /// Subscribes on the first call, with deliveries on `eventLoop`; every call returns once
    /// publications on the topic reach the handler (or at once while the bus is down, as
    /// `Bus.subscribe` does).
    public func start(on eventLoop: any EventLoop) async {
        let task = state.withLock { state -> Task<Void, Never> in
            if let state { return state.subscription }
            let client = node.makeClient(transport: ListenerTransport(eventLoop: eventLoop, handler: handler))
            let subscription = Task { [node, topic] in
                _ = await node.subscribe(client, to: topic)
            }
            state = (subscription, client)
            return subscription
        }
        await task.value
    }

    /// Whether `start` has been called (the subscription may still be in progress).
    public var isStarted: Bool {
        state.withLock { $0 != nil }
    }

    /// Stops listening; a later `start` subscribes again.
    public func stop() async {
        let taken = state.withLock { state in
            defer { state = nil }
            return state
        }
        guard let (subscription, client) = taken else { return }
        // A subscribe still in flight would otherwise land after the unsubscribe.
        await subscription.value
        node.unsubscribe(client, from: topic)
    }
}

/// The transport of a listener's client: what the hub writes is the publication.
private final class ListenerTransport: Transport {
    let eventLoop: any EventLoop
    let writeState = TransportWriteState()
    private let handler: @Sendable ([UInt8]) -> Void

    init(eventLoop: any EventLoop, handler: @escaping @Sendable ([UInt8]) -> Void) {
        self.eventLoop = eventLoop
        self.handler = handler
    }

    func write(_ frame: OutboundFrame) {
        handler(Array(frame.payload.readableBytesView))
    }

    func flush() {}

    func close(code: UInt16, reason: String) {}
}
