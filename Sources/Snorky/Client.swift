public import NIOCore
public import SnorkyProtocol
import Synchronization

/// One connected browser (or test client) as services see it.
///
/// Inbound frames are handled one at a time, in arrival order, by a task that exists only
/// while there is work: an idle connection costs no task. Connect and disconnect travel the
/// same queue, so a service never sees a frame after `clientDisconnected`, and cleanup runs
/// after any command still in flight.
public final class Client: Sendable, Hashable, CustomStringConvertible {
    /// Unique within the node (worker).
    public let id: UInt64
    public let node: Node
    public let transport: any Transport

    private struct State {
        var identity: String?
        var topics: Set<String> = []
        var isClosed = false
        var errorBudget: ProtocolErrorBudget
        var inbound: [InboundEvent] = []
        var inboundHead = 0
        var isProcessing = false
    }

    enum InboundEvent {
        case connected
        case frame(ByteBuffer)
        case disconnected
    }

    private let state: Mutex<State>

    init(id: UInt64, node: Node, transport: any Transport, identity: String?) {
        self.id = id
        self.node = node
        self.transport = transport
        self.state = Mutex(State(identity: identity, errorBudget: node.configuration.protocolErrorBudget))
    }

    public var description: String { "client#\(id)" }

    public static func == (lhs: Client, rhs: Client) -> Bool { lhs === rhs }
    public func hash(into hasher: inout Hasher) { hasher.combine(ObjectIdentifier(self)) }

    /// The authenticated identity (JWT `sub`), if any.
    public var identity: String? {
        state.withLock { $0.identity }
    }

    public func setIdentity(_ identity: String?) {
        state.withLock { $0.identity = identity }
    }

    /// True once the connection is gone; sends are then dropped.
    public var isClosed: Bool {
        state.withLock { $0.isClosed }
    }

    /// Sends `{"service": service, "message": message}` to this client.
    public func send(service: String, message: JSON) {
        send(OutboundFrame(service: service, message: message))
    }

    /// Sends a frame. It goes through the same per-loop queue as fan-out deliveries, so a
    /// connection receives frames in the order they were produced (a notification queued
    /// before a response is written before it).
    public func send(_ frame: OutboundFrame) {
        node.hub.send(frame, to: self)
    }

    /// Closes the connection after every frame already queued for it.
    public func close(code: UInt16, reason: String = "") {
        node.hub.close(self, code: code, reason: reason)
    }

    // MARK: Topics (bookkeeping for Node.subscribe / unsubscribe)

    /// Adds a topic; false if already present or the client is gone.
    func insertTopic(_ topic: String) -> Bool {
        state.withLock { state in
            guard !state.isClosed else { return false }
            return state.topics.insert(topic).inserted
        }
    }

    func removeTopic(_ topic: String) -> Bool {
        state.withLock { $0.topics.remove(topic) != nil }
    }

    /// Marks the client closed and hands back its topics for cleanup.
    func closeAndTakeTopics() -> Set<String> {
        state.withLock { state in
            state.isClosed = true
            defer { state.topics = [] }
            return state.topics
        }
    }

    public var topicCount: Int {
        state.withLock { $0.topics.count }
    }

    /// Records a protocol error; true when the client is over its budget.
    func recordProtocolError() -> Bool {
        state.withLock { $0.errorBudget.record(at: .now) }
    }

    // MARK: Inbound queue

    /// Called by the transport when the connection is established.
    public func didConnect() {
        enqueue(.connected)
    }

    /// Called by the transport for every complete text message, in order.
    /// Returns false when too many frames are already waiting (the caller should close).
    @discardableResult
    public func didReceive(text payload: ByteBuffer) -> Bool {
        node.metrics.framesReceived.increment()
        return enqueue(.frame(payload))
    }

    /// Called by the transport once, when the connection is gone.
    public func didDisconnect() {
        enqueue(.disconnected)
    }

    @discardableResult
    private func enqueue(_ event: InboundEvent) -> Bool {
        let limit = node.configuration.maxQueuedFrames
        let startTask: Bool? = state.withLock { state in
            if case .frame = event, state.inbound.count - state.inboundHead >= limit {
                return nil
            }
            if case .disconnected = event {
                // Frames still waiting will never be answered; drop them.
                state.inbound.removeSubrange(state.inboundHead...)
                state.inbound.removeSubrange(..<state.inboundHead)
                state.inboundHead = 0
            }
            state.inbound.append(event)
            if state.isProcessing { return false }
            state.isProcessing = true
            return true
        }
        guard let startTask else { return false }
        if startTask {
            Task { await self.processInbound() }
        }
        return true
    }

    private func nextInbound() -> InboundEvent? {
        state.withLock { state in
            guard state.inboundHead < state.inbound.count else {
                state.inbound.removeAll(keepingCapacity: false)
                state.inboundHead = 0
                state.isProcessing = false
                return nil
            }
            let event = state.inbound[state.inboundHead]
            state.inboundHead += 1
            if state.inboundHead > 64, state.inboundHead * 2 > state.inbound.count {
                state.inbound.removeSubrange(..<state.inboundHead)
                state.inboundHead = 0
            }
            return event
        }
    }

    private func processInbound() async {
        while let event = nextInbound() {
            switch event {
            case .connected:
                await node.clientConnected(self)
            case .frame(let payload):
                await node.receive(payload.readableBytesView, from: self)
            case .disconnected:
                await node.clientDisconnected(self)
            }
        }
    }
}
