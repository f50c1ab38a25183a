public import Logging
public import NIOCore
public import SnorkyProtocol
import Synchronization

/// Limits and policies of the framework layer, independent of the transport.
public struct NodeConfiguration: Sendable {
    /// JSON nesting deeper than this is `Invalid JSON`.
    public var maxJSONDepth: Int = JSON.defaultMaxDepth
    /// Protocol errors allowed per connection in a window before close 1008.
    public var protocolErrorBudget = ProtocolErrorBudget()
    /// Frames a connection may have waiting for processing; past it the connection is
    /// closed (1008) rather than buffering without bound.
    public var maxQueuedFrames = 1024
    /// Topics one connection may be subscribed to at once; services refuse more
    /// (pubsub answers `Too many subscriptions`).
    public var maxSubscriptionsPerClient = 1000
    /// How fan-out coalesces writes to busy connections.
    public var writePolicy = WritePolicy()

    public init() {}
}

/// One worker's view of Snorky: its services, its clients, its hub and its bus.
/// The transport-independent half of a worker; the server feeds it frames.
public final class Node: BusReceiver, Sendable {
    /// Unique across the cluster (used to tag state and route direct messages).
    public let id: String
    public let bus: any Bus
    /// Cluster-wide shared state (participant names, presence, cursors, …).
    public let state: any ClusterState
    public let hub: Hub
    public let logger: Logger
    public let configuration: NodeConfiguration
    /// This worker's counters, exported on `GET /metrics`.
    public let metrics: WorkerMetrics

    private let registry = Mutex<[String: any Service]>([:])
    private let registrationOrder = Mutex<[any Service]>([])
    private let backendRegistry = Mutex<[String: any Service]>([:])
    private let nextClientID = Atomic<UInt64>(1)
    private let clients = Mutex<[UInt64: Client]>([:])
    private let livenessTask = Mutex<Task<Void, Never>?>(nil)
    /// Cleanups of departed clients that could not reach the cluster state, in the order
    /// they failed; retried every liveness round (`removeState(ownedBy:in:)`).
    private let pendingRemovals = Mutex<[(owner: ClientAddress, space: String)]>([])
    private let probe = BusProbe()

    public init(
        id: String,
        bus: any Bus,
        state: any ClusterState = InMemoryClusterState(),
        configuration: NodeConfiguration = NodeConfiguration(),
        logger: Logger
    ) {
        self.id = id
        self.bus = bus
        self.state = state
        let metrics = WorkerMetrics()
        self.metrics = metrics
        self.hub = Hub(writePolicy: configuration.writePolicy, metrics: metrics)
        self.configuration = configuration
        self.logger = logger
    }

    /// The bus topic of this node's inbox, where direct messages to its clients arrive.
    public var inboxTopic: String { "node:\(id)" }

    /// Starts the bus feeding this node and subscribes its inbox.
    public func start() async throws {
        try await bus.start(receiver: self)
        await bus.subscribe(topic: inboxTopic)
    }

    public func shutdown() async {
        livenessTask.withLock { task in
            task?.cancel()
            task = nil
        }
        await bus.shutdown()
        await state.shutdown()
    }

    /// Keeps this node's heartbeat alive in the cluster state and reaps nodes whose
    /// heartbeat expired, handing what was removed to every service so it can notify the
    /// survivors. The owners of a dead worker's state are gone within `ttl + interval`.
    public func startLiveness(interval: Duration = .seconds(1), ttl: Duration = .seconds(5)) {
        let task = Task { [weak self] in
            while !Task.isCancelled {
                guard let self else { return }
                await self.livenessRound(ttl: ttl)
                try? await Task.sleep(for: interval)
            }
        }
        livenessTask.withLock { $0 = task }
    }

    /// Whether a probe sent through the bus to this node came back recently (within three
    /// liveness rounds). False before the first round.
    public var isBusDelivering: Bool {
        probe.isHealthy(freshness: .seconds(3))
    }

    /// The round-trip time of the last successful bus probe.
    public var busRoundTrip: Duration? {
        probe.lastRoundTrip
    }

    private func livenessRound(ttl: Duration) async {
        if await probe.run(bus: bus, inboxTopic: inboxTopic, timeout: .seconds(1)), let roundTrip = probe.lastRoundTrip {
            metrics.busRoundTrip.observe(roundTrip)
        } else {
            metrics.busProbeFailures.increment()
        }
        do {
            try await state.heartbeat(nodeID: id, ttl: ttl)
            try await retryPendingRemovals()
            let reaped = try await state.reapDeadNodes(survivor: id)
            guard !reaped.nodes.isEmpty else { return }
            logger.notice(
                "reaped the state of dead nodes",
                metadata: ["nodes": "\(reaped.nodes)", "names": "\(reaped.names.count)",
                    "presence": "\(reaped.presence.count)", "records": "\(reaped.records.count)"])
            await handOut(reaped)
        } catch {
            logger.warning("liveness round failed", metadata: ["error": "\(error)"])
        }
    }

    /// Gives every service state removed on behalf of clients that can no longer send
    /// their own notifications.
    private func handOut(_ reaped: ReapedState) async {
        for service in registrationOrder.withLock({ $0 }) {
            await service.stateReaped(reaped)
        }
    }

    // MARK: Departed clients' state

    /// Removes everything `owner` holds in `space` of the cluster state (names, presence,
    /// records) once its client has left, and returns what was removed.
    ///
    /// When the state cannot be reached (Redis is down or not answering), the removal is
    /// not dropped: this returns nothing removed, and the liveness loop retries it every
    /// round until it succeeds. What it removes then goes to every service's
    /// `stateReaped`, as a dead node's state does, so the `left` or `cursorRemoved` the
    /// departure owes still goes out, late rather than never.
    public func removeState(ownedBy owner: ClientAddress, in space: String) async -> ReapedState {
        do {
            return try await state.removeAll(ownedBy: owner, in: space)
        } catch {
            logger.warning("state cleanup failed; retrying once the state answers", metadata: ["space": "\(space)", "error": "\(error)"])
            pendingRemovals.withLock { $0.append((owner, space)) }
            return ReapedState()
        }
    }

    /// Retries the failed removals in order; the first that fails again stops the round and
    /// keeps its place with those after it. What was removed is handed out either way.
    private func retryPendingRemovals() async throws(BusError) {
        let pending = pendingRemovals.withLock { pending in
            defer { pending = [] }
            return pending
        }
        guard !pending.isEmpty else { return }
        var removed = ReapedState()
        var failure: BusError?
        var retried = 0
        for (index, removal) in pending.enumerated() {
            do {
                let reaped = try await state.removeAll(ownedBy: removal.owner, in: removal.space)
                removed.names += reaped.names
                removed.presence += reaped.presence
                removed.records += reaped.records
                retried += 1
            } catch {
                pendingRemovals.withLock { $0.insert(contentsOf: pending[index...], at: 0) }
                failure = error
                break
            }
        }
        if retried > 0 {
            logger.notice("retried state cleanup", metadata: ["clients": "\(retried)", "presence": "\(removed.presence.count)", "records": "\(removed.records.count)"])
        }
        if !removed.isEmpty { await handOut(removed) }
        if let failure { throw failure }
    }

    // MARK: Services

    /// Registers a service under its `name`. Call before serving; a second service with the
    /// same name replaces the first.
    public func register(_ service: any Service) {
        precondition(service.name != ProtocolErrorMessage.service, "'snorky' is reserved for protocol errors")
        registry.withLock { $0[service.name] = service }
        registrationOrder.withLock { order in
            order.removeAll { $0.name == service.name }
            order.append(service)
        }
    }

    public func service(named name: String) -> (any Service)? {
        registry.withLock { $0[name] }
    }

    /// Registers a service reachable only through the backend HTTP API (e.g.
    /// `pubsub_backend`), never from WebSocket clients.
    public func registerBackend(_ service: any Service) {
        backendRegistry.withLock { $0[service.name] = service }
    }

    public func backendService(named name: String) -> (any Service)? {
        backendRegistry.withLock { $0[name] }
    }

    public var serviceNames: [String] {
        registrationOrder.withLock { $0.map(\.name) }
    }

    // MARK: Clients

    public func makeClient(transport: any Transport, identity: String? = nil) -> Client {
        let id = nextClientID.wrappingAdd(1, ordering: .relaxed).oldValue
        return Client(id: id, node: self, transport: transport, identity: identity)
    }

    public var clientCount: Int {
        clients.withLock { $0.count }
    }

    /// The client's cluster-wide address.
    public func address(of client: Client) -> ClientAddress {
        ClientAddress(nodeID: id, clientID: client.id)
    }

    /// A connected client of this node by id.
    public func localClient(id clientID: UInt64) -> Client? {
        clients.withLock { $0[clientID] }
    }

    func clientConnected(_ client: Client) async {
        clients.withLock { $0[client.id] = client }
        for service in registrationOrder.withLock({ $0 }) {
            await service.clientConnected(client)
        }
    }

    func clientDisconnected(_ client: Client) async {
        clients.withLock { $0[client.id] = nil }
        let topics = client.closeAndTakeTopics()
        metrics.subscriptions.add(-topics.count)
        for topic in topics {
            hub.remove(client, from: topic)
            bus.unsubscribe(topic: topic)
        }
        for service in registrationOrder.withLock({ $0 }) {
            await service.clientDisconnected(client)
        }
    }

    /// Handles one inbound text message: decodes the envelope and routes it, answering
    /// protocol errors on the reserved `snorky` service.
    public func receive(_ bytes: some Collection<UInt8>, from client: Client) async {
        let envelope: Envelope
        do {
            envelope = try Envelope.decode(bytes, maxDepth: configuration.maxJSONDepth)
        } catch {
            sendProtocolError(error.message, to: client)
            return
        }
        guard let service = service(named: envelope.service) else {
            sendProtocolError(ProtocolErrorMessage.unknownService, to: client)
            return
        }
        await service.handle(message: envelope.message, from: client)
    }

    private func sendProtocolError(_ message: String, to client: Client) {
        let envelope = RPCMessage.protocolError(message)
        client.send(service: envelope.service, message: envelope.message)
        reportProtocolError(from: client)
    }

    /// Counts a protocol error against the client's budget and closes it (1008) when over.
    public func reportProtocolError(from client: Client) {
        metrics.protocolErrors.increment()
        if client.recordProtocolError() {
            logger.notice("closing client: too many protocol errors", metadata: ["client": "\(client.id)"])
            client.close(code: CloseCode.policyViolation, reason: "Too many protocol errors")
        }
    }

    // MARK: Cluster primitives

    /// Subscribes `client` to `topic` on this worker (and the bus, on the first local
    /// subscriber). Returns false if it was already subscribed or is gone. Returns once
    /// publications on the topic will reach the client.
    @discardableResult
    public func subscribe(_ client: Client, to topic: String) async -> Bool {
        guard client.insertTopic(topic) else { return false }
        metrics.subscriptions.add(1)
        hub.add(client, to: topic)
        await bus.subscribe(topic: topic)
        return true
    }

    /// Removes `client` from `topic`. Returns false if it was not subscribed.
    @discardableResult
    public func unsubscribe(_ client: Client, from topic: String) -> Bool {
        guard client.removeTopic(topic) else { return false }
        metrics.subscriptions.add(-1)
        hub.remove(client, from: topic)
        bus.unsubscribe(topic: topic)
        return true
    }

    /// Publishes an encoded notification envelope to every subscriber of `topic`
    /// everywhere, except `excluding`. Throws `BusError` when the bus cannot take it.
    public func publish(topic: String, envelope: [UInt8], excluding: ClientAddress? = nil) async throws(BusError) {
        try await publishOnBus(topic: topic, payload: NodePublication.topic(envelope: envelope, excluding: excluding))
    }

    /// `publish(topic:envelope:excluding:)` without suspending, for a caller on `loop` that
    /// starts no task; nil when the bus cannot (see `Bus.publish(topic:payload:on:)`).
    public func publish(
        topic: String, envelope: [UInt8], excluding: ClientAddress? = nil, on loop: any EventLoop
    ) -> EventLoopFuture<Void>? {
        let payload = NodePublication.topic(envelope: envelope, excluding: excluding)
        guard let published = bus.publish(topic: topic, payload: payload, on: loop) else { return nil }
        let metrics = self.metrics
        published.whenComplete { result in
            switch result {
            case .success: metrics.busPublished.increment()
            case .failure: metrics.busPublishFailures.increment()
            }
        }
        return published
    }

    /// Every publish of the node's own messages goes through here, to be counted.
    private func publishOnBus(topic: String, payload: ByteBuffer) async throws(BusError) {
        do throws(BusError) {
            try await bus.publish(topic: topic, payload: payload)
            metrics.busPublished.increment()
        } catch {
            metrics.busPublishFailures.increment()
            throw error
        }
    }

    /// Builds `{"service": service, "message": message}` once and publishes it on `topic`
    /// to every subscriber everywhere, except `excluding` (e.g. the client that caused it).
    public func broadcast(
        service: String,
        message: JSON,
        topic: String,
        excluding: Client? = nil
    ) async throws(BusError) {
        let bytes = Envelope.encodedBytes(service: service, message: message)
        try await publish(topic: topic, envelope: bytes, excluding: excluding.map(address(of:)))
    }

    /// Sends `{"service": service, "message": message}` to one client, wherever it is.
    /// A client that is gone is silently skipped, as a closed connection would be.
    public func send(service: String, message: JSON, to address: ClientAddress) async throws(BusError) {
        if address.nodeID == id {
            localClient(id: address.clientID)?.send(service: service, message: message)
            return
        }
        let bytes = Envelope.encodedBytes(service: service, message: message)
        try await publishOnBus(topic: "node:\(address.nodeID)", payload: NodePublication.inbox(clientID: address.clientID, envelope: bytes))
    }

    // MARK: BusReceiver

    public func deliver(topic: String, payload: ByteBuffer) {
        if topic == inboxTopic {
            guard let message = NodePublication.parseInbox(payload) else {
                logger.warning("dropping a malformed direct message")
                return
            }
            if message.clientID == BusProbe.probeClientID {
                probe.received(message.envelope)
            } else {
                metrics.busReceived.increment()
                localClient(id: message.clientID)?.send(OutboundFrame(payload: message.envelope))
            }
            return
        }
        guard let publication = NodePublication.parseTopic(payload) else {
            logger.warning("dropping a malformed publication", metadata: ["topic": "\(topic)"])
            return
        }
        metrics.busReceived.increment()
        var skipped: Client?
        if let excluded = publication.excluding, excluded.nodeID == id {
            skipped = localClient(id: excluded.clientID)
        }
        hub.deliver(topic: topic, payload: publication.envelope, excluding: skipped)
    }
}
