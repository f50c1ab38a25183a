public import Logging
public import NIOCore
import NIOPosix
public import Snorky
import Synchronization

/// Snorky's bus over Redis pub/sub: one subscriber connection and one command connection
/// per worker (per `RedisBus`).
///
/// - Topic `t` is the Redis channel `"<prefix>:<t>"`; publications carry a versioned
///   `BusEnvelope` (publisher id, sequence number, payload unchanged).
/// - Topics are reference-counted: SUBSCRIBE on the first local reference, UNSUBSCRIBE a
///   debounce delay after the last one left, if nobody came back (`SubscriptionStateMachine`).
/// - `publish` goes out on the command connection; when this worker subscribes to the
///   topic it returns only after its own publication came back and was handed to the
///   receiver (or after `localDeliveryTimeout`), so a caller's notification precedes its
///   response. While Redis is unreachable it throws `BusError.unavailable` at once.
/// - On connection loss both connections are dropped and re-established with backoff;
///   every referenced topic is re-subscribed in batches.
///
/// Concurrency: all state is confined to one event loop (`eventLoop`), which both
/// connections use. Publications read by the subscriber connection are handed to the
/// receiver right there, with no task or actor hop; `subscribe`, `unsubscribe` and
/// `publish` hop to the loop once (a write to the connection needs that hop anyway), which
/// also keeps SUBSCRIBE and UNSUBSCRIBE in the order the state machine decided them.
/// No lock is involved; connection status and counters for metrics are atomics.
///
/// Call `shutdown()` when done: until then the connections and timers keep the bus alive.
public final class RedisBus: Bus {
    public let configuration: RedisBusConfiguration
    /// Identifies this bus's publications when they come back (random, per instance).
    public let publisherID: UInt64
    /// The loop that owns the bus state and both connections.
    public let eventLoop: any EventLoop

    private let logger: Logger
    private let channelPrefix: [UInt8]
    private let state: NIOLoopBoundBox<State>
    private let connected = Atomic<Bool>(false)
    private let reconnects = Atomic<Int>(0)
    private let dropped = Atomic<Int>(0)
    private let sequence = Atomic<UInt64>(0)

    private struct Connections {
        let subscriber: any Channel
        let command: RedisConnection
    }

    private enum Phase {
        /// Not started.
        case idle
        /// A connection attempt is running; the promise completes when it is fully settled.
        case connecting(EventLoopPromise<Void>)
        case connected(Connections)
        /// Waiting for the next reconnect attempt.
        case waiting(Scheduled<Void>)
        case shutdown
    }

    /// An own publication on a topic this worker subscribes to: its `publish` returns once
    /// Redis accepted it and its copy came back (or the wait for the copy timed out).
    private struct LocalDelivery {
        let promise: EventLoopPromise<Void>
        var accepted = false
        var echoed = false
    }

    private enum LocalDeliveryEvent {
        /// Redis answered the PUBLISH.
        case accepted
        /// The copy came back, or will not (nobody received it, or the wait timed out).
        case echoed
    }

    /// Confined to `eventLoop` (reached only through `state.value`, which checks it).
    private final class State {
        var phase = Phase.idle
        var receiver: (any BusReceiver)?
        var subscriptions: SubscriptionStateMachine<CheckedContinuation<Void, Never>>
        /// Identifies the current connection attempt; events of older connections are ignored.
        var generation = 0
        var hasConnected = false
        var failedAttempts = 0
        var releaseTimers: [String: Scheduled<Void>] = [:]
        /// Publications of ours awaiting Redis's reply and their echo, by sequence number.
        var localDeliveries: [UInt64: LocalDelivery] = [:]
        /// When each of them stops waiting, in the order they were sent (so in deadline
        /// order). Entries of echoes already back are dropped from the front as they
        /// complete, or when the timer passes them.
        var localDeliveryDeadlines = CircularBuffer<(sequence: UInt64, deadline: NIODeadline)>()
        /// One timer for the oldest waiting publication, rather than one per publication.
        var localDeliveryTimer: Scheduled<Void>?
        var started: EventLoopPromise<Void>?
        var reportedVersions: Set<UInt8> = []

        init(releaseDelay: TimeAmount) {
            subscriptions = SubscriptionStateMachine(releaseDelay: releaseDelay)
        }
    }

    public init(
        configuration: RedisBusConfiguration,
        eventLoopGroup: any EventLoopGroup = MultiThreadedEventLoopGroup.singleton,
        logger: Logger = Logger(label: "snorky.redis-bus")
    ) {
        self.configuration = configuration
        self.eventLoop = eventLoopGroup.next()
        self.publisherID = UInt64.random(in: 1...UInt64.max)
        self.channelPrefix = Array((configuration.channelPrefix + ":").utf8)
        var logger = logger
        logger[metadataKey: "redis"] = "\(configuration.url)"
        self.logger = logger
        self.state = .makeBoxSendingValue(State(releaseDelay: configuration.unsubscribeDelay), eventLoop: eventLoop)
    }

    // MARK: Metrics

    /// Whether both connections are up.
    public var isConnected: Bool { connected.load(ordering: .relaxed) }

    /// How many times the bus reconnected after losing Redis.
    public var reconnectCount: Int { reconnects.load(ordering: .relaxed) }

    /// Publications dropped because their envelope version is unknown or they are malformed.
    public var droppedPublicationCount: Int { dropped.load(ordering: .relaxed) }

    /// The Redis channel that carries `topic`.
    public func channelName(for topic: String) -> String {
        configuration.channelPrefix + ":" + topic
    }

    /// Local references of `topic` (for tests and stats).
    public func references(of topic: String) async -> Int {
        (try? await eventLoop.submit { self.state.value.subscriptions.references(of: topic) }.get()) ?? 0
    }

    // MARK: Bus

    /// Connects, and returns after the first attempt: connected, or not (Redis down, wrong
    /// address), in which case the bus keeps retrying in the background and `publish`
    /// throws `unavailable` meanwhile. Calling it again has no effect.
    public func start(receiver: any BusReceiver) async throws {
        let started: EventLoopFuture<Void> = eventLoop.flatSubmit {
            let state = self.state.value
            guard case .idle = state.phase else { return self.eventLoop.makeSucceededVoidFuture() }
            state.receiver = receiver
            let promise = self.eventLoop.makePromise(of: Void.self)
            state.started = promise
            self.connect()
            return promise.futureResult
        }
        try await started.get()
    }

    public func subscribe(topic: String) async {
        await withCheckedContinuation { (continuation: CheckedContinuation<Void, Never>) in
            eventLoop.execute { self.subscribeOnLoop(topic, continuation) }
        }
    }

    public func unsubscribe(topic: String) {
        eventLoop.execute { self.unsubscribeOnLoop(topic) }
    }

    public func publish(topic: String, payload: ByteBuffer) async throws(BusError) {
        do {
            try await submit(topic: topic, payload: payload, on: eventLoop).get()
        } catch let error as BusError {
            throw error
        } catch {
            throw .unavailable("\(error)")
        }
    }

    public func publish(topic: String, payload: ByteBuffer, on loop: any EventLoop) -> EventLoopFuture<Void>? {
        submit(topic: topic, payload: payload, on: loop)
    }

    /// Encodes the publication and, on the bus's loop (where a worker's backend requests
    /// run), writes it before returning; from elsewhere it is queued to that loop in call
    /// order. The future is completed on `loop`.
    private func submit(topic: String, payload: ByteBuffer, on loop: any EventLoop) -> EventLoopFuture<Void> {
        guard payload.readableBytes <= configuration.maxPayloadBytes else {
            return loop.makeFailedFuture(
                BusError.payloadTooLarge("\(payload.readableBytes) bytes, limit \(configuration.maxPayloadBytes)"))
        }
        guard connected.load(ordering: .relaxed) else {
            return loop.makeFailedFuture(BusError.unavailable("not connected to Redis"))
        }
        let sequence = sequence.wrappingAdd(1, ordering: .relaxed).newValue
        let request = encodePublish(topic: topic, sequence: sequence, payload: payload)
        // Backend calls already run on the bus's loop (a worker has one): no hop then.
        let done =
            eventLoop.inEventLoop
            ? publishOnLoop(topic: topic, sequence: sequence, request: request)
            : eventLoop.flatSubmit { self.publishOnLoop(topic: topic, sequence: sequence, request: request) }
        return done.hop(to: loop)
    }

    public func shutdown() async {
        let done = eventLoop.flatSubmit { self.shutdownOnLoop() }
        try? await done.get()
    }

    // MARK: Subscriptions (on the loop)

    private func subscribeOnLoop(_ topic: String, _ continuation: CheckedContinuation<Void, Never>) {
        let state = self.state.value
        if case .shutdown = state.phase {
            continuation.resume()
            return
        }
        switch state.subscriptions.subscribe(topic, waiter: continuation) {
        case .resume:
            state.releaseTimers.removeValue(forKey: topic)?.cancel()
            continuation.resume()
        case .wait:
            break
        case .sendSubscribeAndWait:
            send(.subscribe([channelName(for: topic)]), state: state)
        }
    }

    private func unsubscribeOnLoop(_ topic: String) {
        let state = self.state.value
        if case .shutdown = state.phase { return }
        switch state.subscriptions.unsubscribe(topic, now: .now()) {
        case .none:
            break
        case .scheduleRelease(let deadline):
            scheduleRelease(of: topic, at: deadline, state: state)
        case .notSubscribed:
            logger.debug("unsubscribe from a topic without local references", metadata: ["topic": "\(topic)"])
        }
    }

    private func scheduleRelease(of topic: String, at deadline: NIODeadline, state: State) {
        state.releaseTimers[topic]?.cancel()
        state.releaseTimers[topic] = eventLoop.scheduleTask(deadline: deadline) {
            self.releaseTimerFired(topic)
        }
    }

    private func releaseTimerFired(_ topic: String) {
        let state = self.state.value
        state.releaseTimers[topic] = nil
        switch state.subscriptions.releaseTimerFired(topic, now: .now()) {
        case .none:
            break
        case .sendUnsubscribe:
            send(.unsubscribe([channelName(for: topic)]), state: state)
        case .scheduleRelease(let deadline):
            scheduleRelease(of: topic, at: deadline, state: state)
        }
    }

    private func send(_ command: SubscriberCommand, state: State) {
        guard case .connected(let connections) = state.phase else { return }
        // A failed write closes the channel, and the close is handled as a connection loss.
        connections.subscriber.writeAndFlush(command, promise: nil)
    }

    // MARK: Publishing (on the loop)

    private func encodePublish(topic: String, sequence: UInt64, payload: ByteBuffer) -> ByteBuffer {
        let channelLength = channelPrefix.count + topic.utf8.count
        let bodyLength = BusEnvelope.headerLength + payload.readableBytes
        var buffer = ByteBufferAllocator().buffer(capacity: 48 + channelLength + bodyLength)
        buffer.writeStaticString("*3\r\n$7\r\nPUBLISH\r\n")
        RESPEncoding.writeBulkStringHeader(length: channelLength, into: &buffer)
        buffer.writeBytes(channelPrefix)
        buffer.writeString(topic)
        buffer.writeStaticString("\r\n")
        RESPEncoding.writeBulkStringHeader(length: bodyLength, into: &buffer)
        BusEnvelope.writeHeader(publisherID: publisherID, sequence: sequence, into: &buffer)
        buffer.writeImmutableBuffer(payload)
        buffer.writeStaticString("\r\n")
        return buffer
    }

    /// The future completes when Redis has the publication and, if this worker subscribes
    /// to the topic, its own copy has come back and been handed to the receiver.
    private func publishOnLoop(topic: String, sequence: UInt64, request: ByteBuffer) -> EventLoopFuture<Void> {
        let state = self.state.value
        guard case .connected(let connections) = state.phase else {
            return eventLoop.makeFailedFuture(BusError.unavailable("not connected to Redis"))
        }
        let done = eventLoop.makePromise(of: Void.self)
        let waitsForEcho = state.subscriptions.isSubscribed(topic)
        if waitsForEcho {
            // Owned by `localDeliveries` from here: whoever removes it completes it.
            state.localDeliveries[sequence] = LocalDelivery(promise: done)
            state.localDeliveryDeadlines.append((sequence, .now() + configuration.localDeliveryTimeout))
            armLocalDeliveryTimer(state: state)
        }
        connections.command.submit(encoded: request).whenComplete { result in
            let failure: BusError
            switch result {
            case .success(.integer(let receivers)):
                if !waitsForEcho {
                    done.succeed()
                } else {
                    self.localDelivery(sequence, .accepted)
                    // Nobody received it, so neither did we (our subscription is gone): don't wait.
                    if receivers == 0 { self.localDelivery(sequence, .echoed) }
                }
                return
            case .success(.error(let message)): failure = .unavailable("Redis refused PUBLISH: \(message)")
            case .success(let reply): failure = .unavailable("unexpected PUBLISH reply \(reply)")
            case .failure(let error): failure = (error as? BusError) ?? .unavailable("\(error)")
            }
            if !waitsForEcho {
                done.fail(failure)
            } else if let waiting = self.state.value.localDeliveries.removeValue(forKey: sequence) {
                waiting.promise.fail(failure)
            }
        }
        return done.futureResult
    }

    private func localDelivery(_ sequence: UInt64, _ event: LocalDeliveryEvent) {
        let state = self.state.value
        guard var delivery = state.localDeliveries[sequence] else { return }
        switch event {
        case .accepted: delivery.accepted = true
        case .echoed: delivery.echoed = true
        }
        guard delivery.accepted && delivery.echoed else {
            state.localDeliveries[sequence] = delivery
            return
        }
        state.localDeliveries[sequence] = nil
        while let oldest = state.localDeliveryDeadlines.first, state.localDeliveries[oldest.sequence] == nil {
            state.localDeliveryDeadlines.removeFirst()
        }
        delivery.promise.succeed()
    }

    private func armLocalDeliveryTimer(state: State) {
        guard state.localDeliveryTimer == nil, let oldest = state.localDeliveryDeadlines.first else { return }
        state.localDeliveryTimer = eventLoop.scheduleTask(deadline: oldest.deadline) {
            self.localDeliveryTimerFired()
        }
    }

    /// Publications whose echo is overdue return anyway (the subscriber connection may be
    /// slow or reconnecting); the timer moves on to the next one still waiting.
    private func localDeliveryTimerFired() {
        let state = self.state.value
        state.localDeliveryTimer = nil
        let now = NIODeadline.now()
        while let oldest = state.localDeliveryDeadlines.first {
            if state.localDeliveries[oldest.sequence] != nil {
                guard oldest.deadline <= now else { break }
                logger.debug("own publication not back within the timeout; returning anyway", metadata: ["sequence": "\(oldest.sequence)"])
                state.localDeliveryDeadlines.removeFirst()
                localDelivery(oldest.sequence, .echoed)
            } else {
                state.localDeliveryDeadlines.removeFirst()  // completed already
            }
        }
        armLocalDeliveryTimer(state: state)
    }

    private func failLocalDeliveries(_ error: BusError, state: State) {
        let deliveries = state.localDeliveries
        state.localDeliveries = [:]
        state.localDeliveryDeadlines.removeAll()
        state.localDeliveryTimer?.cancel()
        state.localDeliveryTimer = nil
        for delivery in deliveries.values {
            delivery.promise.fail(error)
        }
    }

    // MARK: Connection management (on the loop)

    private func connect() {
        let state = self.state.value
        switch state.phase {
        case .idle, .waiting: break
        case .connecting, .connected, .shutdown: return
        }
        state.generation += 1
        let generation = state.generation
        let attempt = eventLoop.makePromise(of: Void.self)
        state.phase = .connecting(attempt)
        let subscriber = RedisSubscriberConnection.connect(
            to: configuration.url,
            configuration: configuration.connection,
            pingInterval: configuration.pingInterval,
            eventLoop: eventLoop,
            delegate: self,
            connectionID: generation
        )
        let command = RedisConnection.makeConnection(
            to: configuration.url,
            configuration: configuration.connection,
            eventLoop: eventLoop
        )
        subscriber.whenComplete { subscriberResult in
            command.whenComplete { commandResult in
                attempt.completeWith(self.attemptFinished(generation, subscriberResult, commandResult))
            }
        }
    }

    /// Returns a future that completes when everything the attempt opened is settled.
    private func attemptFinished(
        _ generation: Int,
        _ subscriber: Result<any Channel, any Error>,
        _ command: Result<RedisConnection, any Error>
    ) -> EventLoopFuture<Void> {
        let state = self.state.value
        var isCurrent = false
        if case .connecting = state.phase, state.generation == generation { isCurrent = true }
        if isCurrent, case .success(let subscriberChannel) = subscriber, case .success(let commandConnection) = command {
            install(Connections(subscriber: subscriberChannel, command: commandConnection), generation: generation, state: state)
            return eventLoop.makeSucceededVoidFuture()
        }
        var closing: [EventLoopFuture<Void>] = []
        if case .success(let channel) = subscriber {
            channel.close(promise: nil)
            closing.append(channel.closeFuture)
        }
        if case .success(let connection) = command {
            connection.channel.close(promise: nil)
            closing.append(connection.closeFuture)
        }
        if isCurrent {
            var error: any Error = RedisError.connectionClosed
            if case .failure(let failure) = subscriber {
                error = failure
            } else if case .failure(let failure) = command {
                error = failure
            }
            attemptFailed(error, state: state)
        }
        return EventLoopFuture.andAllComplete(closing, on: eventLoop)
    }

    private func install(_ connections: Connections, generation: Int, state: State) {
        state.phase = .connected(connections)
        connected.store(true, ordering: .relaxed)
        let isReconnect = state.hasConnected
        let failedAttempts = state.failedAttempts
        state.hasConnected = true
        state.failedAttempts = 0
        let topics = state.subscriptions.connectionEstablished()
        if isReconnect {
            reconnects.add(1, ordering: .relaxed)
            logger.notice(
                "reconnected to Redis",
                metadata: ["failedAttempts": "\(failedAttempts)", "resubscribing": "\(topics.count)"]
            )
        } else {
            logger.info("connected to Redis", metadata: ["subscribing": "\(topics.count)"])
        }
        let batchSize = max(1, configuration.resubscribeBatchSize)
        var start = 0
        while start < topics.count {
            let end = min(start + batchSize, topics.count)
            let channels = topics[start..<end].map { channelName(for: $0) }
            connections.subscriber.write(SubscriberCommand.subscribe(channels), promise: nil)
            start = end
        }
        connections.subscriber.flush()
        state.started?.succeed()
        state.started = nil
        // Registered last: if a channel is already closed, the loss is handled right away.
        connections.subscriber.closeFuture.whenComplete { _ in
            self.connectionLost(generation: generation, what: "subscriber connection closed")
        }
        connections.command.closeFuture.whenComplete { _ in
            self.connectionLost(generation: generation, what: "command connection closed")
        }
    }

    private func connectionLost(generation: Int, what: String) {
        let state = self.state.value
        guard state.generation == generation, case .connected(let connections) = state.phase else { return }
        connected.store(false, ordering: .relaxed)
        connections.subscriber.close(promise: nil)
        connections.command.channel.close(promise: nil)
        let waiters = state.subscriptions.connectionLost()
        for timer in state.releaseTimers.values { timer.cancel() }
        state.releaseTimers = [:]
        failLocalDeliveries(.unavailable("connection to Redis lost"), state: state)
        let delay = scheduleReconnect(state: state)
        logger.warning("lost connection to Redis; reconnecting", metadata: ["cause": "\(what)", "retryIn": "\(delay.milliseconds) ms"])
        for waiter in waiters { waiter.resume() }
    }

    private func attemptFailed(_ error: any Error, state: State) {
        state.failedAttempts += 1
        let delay = scheduleReconnect(state: state)
        if state.failedAttempts == 1 {
            logger.warning("cannot connect to Redis; retrying", metadata: ["error": "\(error)", "retryIn": "\(delay.milliseconds) ms"])
        } else {
            logger.debug(
                "cannot connect to Redis; retrying",
                metadata: ["error": "\(error)", "attempt": "\(state.failedAttempts)", "retryIn": "\(delay.milliseconds) ms"]
            )
        }
        // start() returns after the first attempt either way.
        state.started?.succeed()
        state.started = nil
    }

    private func scheduleReconnect(state: State) -> TimeAmount {
        let delay = configuration.reconnectBackoff.delay(
            attempt: state.failedAttempts,
            random: Double.random(in: 0..<1)
        )
        state.phase = .waiting(eventLoop.scheduleTask(in: delay) { self.connect() })
        return delay
    }

    private func shutdownOnLoop() -> EventLoopFuture<Void> {
        let state = self.state.value
        let previous = state.phase
        if case .shutdown = previous { return eventLoop.makeSucceededVoidFuture() }
        state.phase = .shutdown
        connected.store(false, ordering: .relaxed)
        for timer in state.releaseTimers.values { timer.cancel() }
        state.releaseTimers = [:]
        failLocalDeliveries(.unavailable("bus shut down"), state: state)
        let waiters = state.subscriptions.shutdown()
        state.started?.succeed()
        state.started = nil
        state.receiver = nil
        for waiter in waiters { waiter.resume() }
        switch previous {
        case .idle, .shutdown:
            return eventLoop.makeSucceededVoidFuture()
        case .waiting(let scheduled):
            scheduled.cancel()
            return eventLoop.makeSucceededVoidFuture()
        case .connecting(let attempt):
            return attempt.futureResult
        case .connected(let connections):
            connections.subscriber.close(promise: nil)
            connections.command.channel.close(promise: nil)
            logger.info("disconnected from Redis (shutdown)")
            return EventLoopFuture.andAllComplete(
                [connections.subscriber.closeFuture, connections.command.closeFuture],
                on: eventLoop
            )
        }
    }
}

extension TimeAmount {
    fileprivate var milliseconds: Int64 { nanoseconds / 1_000_000 }
}

// MARK: - Deliveries (the hot path, on the subscriber connection's loop)

extension RedisBus: RedisSubscriberDelegate {
    func subscriberReceived(message: ByteBuffer, channel: ByteBuffer) {
        guard let topic = topic(ofChannel: channel) else { return }
        switch BusEnvelope.decode(message) {
        case .envelope(let envelope):
            let state = self.state.value
            state.receiver?.deliver(topic: topic, payload: envelope.payload)
            if envelope.publisherID == publisherID, !state.localDeliveries.isEmpty {
                localDelivery(envelope.sequence, .echoed)
            }
        case .unsupportedVersion(let version):
            dropped.add(1, ordering: .relaxed)
            if state.value.reportedVersions.insert(version).inserted {
                logger.warning(
                    "dropping publications with an unknown bus envelope version (logged once per version)",
                    metadata: ["version": "\(version)", "topic": "\(topic)"]
                )
            }
        case .malformed:
            dropped.add(1, ordering: .relaxed)
            logger.warning("dropping a malformed publication", metadata: ["topic": "\(topic)", "bytes": "\(message.readableBytes)"])
        }
    }

    func subscriberConfirmed(channel: ByteBuffer, subscribed: Bool, connectionID: Int) {
        let state = self.state.value
        guard connectionID == state.generation, let topic = topic(ofChannel: channel) else { return }
        guard subscribed else {
            state.subscriptions.unsubscribeConfirmed(topic)
            return
        }
        switch state.subscriptions.subscribeConfirmed(topic, now: .now()) {
        case .none:
            break
        case .resume(let waiters):
            for waiter in waiters { waiter.resume() }
        case .resumeAndScheduleRelease(let waiters, let deadline):
            scheduleRelease(of: topic, at: deadline, state: state)
            for waiter in waiters { waiter.resume() }
        }
    }

    private func topic(ofChannel channel: ByteBuffer) -> String? {
        let bytes = channel.readableBytesView
        guard bytes.count >= channelPrefix.count, bytes.starts(with: channelPrefix) else { return nil }
        return String(decoding: bytes.dropFirst(channelPrefix.count), as: UTF8.self)
    }
}
