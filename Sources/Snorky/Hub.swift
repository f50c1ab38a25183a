public import NIOCore
import Synchronization

/// The worker's local map from topic to subscribed clients, and the fan-out engine.
///
/// Sharded behind `Mutex`es; no lock is held across I/O. A publication is framed once, then
/// handed to one `LoopWriter` per event loop that has subscribers (one task per loop, not per
/// subscriber), which writes the shared frame to each connection and flushes each once.
public final class Hub: Sendable {
    private struct Topic {
        var clients: [ObjectIdentifier: Client] = [:]
        /// Subscribers grouped by loop; rebuilt lazily after a change so steady-state
        /// publishing allocates nothing per subscriber.
        var snapshot: [(writer: LoopWriter, clients: [Client])]?
    }

    /// `Mutex` is non-copyable, so each shard lives in its own object.
    private final class Shard: Sendable {
        let topics = Mutex<[String: Topic]>([:])
    }

    private let shards: [Shard]
    private let writers = Mutex<[ObjectIdentifier: LoopWriter]>([:])
    private let writePolicy: WritePolicy
    private let metrics: WorkerMetrics

    public init(shardCount: Int = 16, writePolicy: WritePolicy = WritePolicy(), metrics: WorkerMetrics = WorkerMetrics()) {
        shards = (0..<max(1, shardCount)).map { _ in Shard() }
        self.writePolicy = writePolicy
        self.metrics = metrics
    }

    private func shard(for topic: String) -> Shard {
        var hasher = Hasher()
        hasher.combine(topic)
        let index = Int(UInt(bitPattern: hasher.finalize()) % UInt(shards.count))
        return shards[index]
    }

    /// Adds `client` to `topic`. Returns true if it is the topic's first local subscriber.
    @discardableResult
    public func add(_ client: Client, to topic: String) -> Bool {
        shard(for: topic).topics.withLock { topics in
            let isFirst = topics[topic] == nil
            topics[topic, default: Topic()].clients[ObjectIdentifier(client)] = client
            topics[topic]!.snapshot = nil
            return isFirst
        }
    }

    /// Removes `client` from `topic`. Returns true if it was the last local subscriber.
    @discardableResult
    public func remove(_ client: Client, from topic: String) -> Bool {
        shard(for: topic).topics.withLock { topics in
            guard var entry = topics[topic] else { return false }
            entry.clients[ObjectIdentifier(client)] = nil
            if entry.clients.isEmpty {
                topics[topic] = nil
                return true
            }
            entry.snapshot = nil
            topics[topic] = entry
            return false
        }
    }

    public func subscriberCount(of topic: String) -> Int {
        shard(for: topic).topics.withLock { $0[topic]?.clients.count ?? 0 }
    }

    public var topicCount: Int {
        shards.reduce(0) { total, shard in total + shard.topics.withLock { $0.count } }
    }

    /// Fans `payload` out to the local subscribers of `topic`, except `excluding`.
    public func deliver(topic: String, payload: ByteBuffer, excluding: Client? = nil) {
        guard let groups = snapshot(of: topic) else { return }
        let frame = OutboundFrame(payload: payload)
        for group in groups {
            if let excluding, group.clients.contains(excluding) {
                let others = group.clients.filter { $0 !== excluding }
                if !others.isEmpty { group.writer.enqueue(frame, to: others) }
                metrics.deliveries.add(others.count)
            } else {
                group.writer.enqueue(frame, to: group.clients)
                metrics.deliveries.add(group.clients.count)
            }
        }
    }

    /// Queues one frame for one client, in order with the fan-out of its event loop.
    public func send(_ frame: OutboundFrame, to client: Client) {
        writer(for: client.transport.eventLoop).enqueue(frame, to: [client])
    }

    /// Queues a close after everything already queued for the client's loop.
    public func close(_ client: Client, code: UInt16, reason: String) {
        writer(for: client.transport.eventLoop).enqueue(.close(client, code: code, reason: reason))
    }

    private func snapshot(of topic: String) -> [(writer: LoopWriter, clients: [Client])]? {
        shard(for: topic).topics.withLock { topics -> [(writer: LoopWriter, clients: [Client])]? in
            guard var entry = topics[topic] else { return nil }
            if let snapshot = entry.snapshot { return snapshot }
            var byLoop: [ObjectIdentifier: (writer: LoopWriter, clients: [Client])] = [:]
            for client in entry.clients.values {
                let loop = client.transport.eventLoop
                let key = ObjectIdentifier(loop)
                if byLoop[key] == nil {
                    byLoop[key] = (writer(for: loop), [])
                }
                byLoop[key]!.clients.append(client)
            }
            let snapshot = Array(byLoop.values)
            entry.snapshot = snapshot
            topics[topic] = entry
            return snapshot
        }
    }

    private func writer(for loop: any EventLoop) -> LoopWriter {
        writers.withLock { writers in
            let key = ObjectIdentifier(loop)
            if let writer = writers[key] { return writer }
            let writer = LoopWriter(loop: loop, policy: writePolicy, metrics: metrics)
            writers[key] = writer
            return writer
        }
    }
}

/// Batches writes for one event loop: deliveries queued while the loop is busy are written
/// together in one task, and each connection is flushed once per batch. Direct sends and
/// closes travel the same queue, so a connection sees everything in production order.
///
/// On top of that, while the loop writes many frames (`coalescingRate` or more a second), a
/// connection flushed less than `maxWriteDelay` ago is not flushed again at once: its
/// frames collect on the connection and go out in one `sendmsg` when the delay has passed
/// (or sooner, past `flushThreshold` bytes). A connection that receives a frame now and
/// then is written immediately; a busy one costs one syscall per delay instead of one per
/// message, which is what makes a large fan-out cheap, for the server and for the client
/// reading it. A quiet loop has no syscalls worth saving, so it never makes a frame wait.
final class LoopWriter: Sendable {
    let loop: any EventLoop
    let policy: WritePolicy
    let metrics: WorkerMetrics

    enum Item {
        case frame(OutboundFrame, [Client])
        case close(Client, code: UInt16, reason: String)
    }

    private struct Pending {
        var batch: [Item] = []
        var isScheduled = false
    }

    private let pending = Mutex(Pending())
    /// Only touched on `loop`.
    private let flushes: FlushQueue

    init(loop: any EventLoop, policy: WritePolicy, metrics: WorkerMetrics) {
        self.loop = loop
        self.policy = policy
        self.metrics = metrics
        self.flushes = FlushQueue()
    }

    func enqueue(_ frame: OutboundFrame, to clients: [Client]) {
        enqueue(.frame(frame, clients))
    }

    func enqueue(_ item: Item) {
        let schedule = pending.withLock { pending in
            pending.batch.append(item)
            if pending.isScheduled { return false }
            pending.isScheduled = true
            return true
        }
        if schedule {
            loop.execute { self.drain() }
        }
    }

    private func drain() {
        let batch = pending.withLock { pending -> [Item] in
            pending.isScheduled = false
            defer { pending.batch = [] }
            return pending.batch
        }
        if batch.count == 1, case .frame(let frame, let clients) = batch[0] {
            writeAlone(frame, to: clients)
            return
        }
        let flushes = self.flushes
        for item in batch {
            switch item {
            case .frame(let frame, let clients):
                let size = frame.wire.readableBytes
                metrics.framesSent.add(clients.count)
                flushes.framesUncounted += clients.count
                for client in clients {
                    let transport = client.transport
                    transport.write(frame)
                    let state = transport.writeState
                    state.unflushedBytes += size
                    if !state.isDirty {
                        state.isDirty = true
                        flushes.dirty.append(transport)
                    }
                }
            case .close(let client, let code, let reason):
                // The close frame follows everything queued before it; later writes are dropped.
                flushes.flush(client.transport, at: flushes.lastNow)
                client.transport.close(code: code, reason: reason)
            }
        }
        flushDirty()
    }

    /// A batch of one frame, the usual case unless the loop is busy: no connection has
    /// anything else in this batch, so one that may be flushed now gets the frame written
    /// and flushed in one step, without passing through the list of connections written.
    private func writeAlone(_ frame: OutboundFrame, to clients: [Client]) {
        let size = frame.wire.readableBytes
        metrics.framesSent.add(clients.count)
        let now = NIODeadline.now()
        flushes.lastNow = now
        flushes.framesUncounted += clients.count
        let coalescing = isBusy(now: now)
        var earliest: NIODeadline?
        for client in clients {
            let transport = client.transport
            let state = transport.writeState
            if state.isDeferred {
                transport.write(frame)
                state.unflushedBytes += size
                if state.unflushedBytes >= policy.flushThreshold { flushes.flush(transport, at: now) }
            } else if coalescing, let due = deferral(of: state, adding: size, now: now) {
                transport.write(frame)
                state.unflushedBytes += size
                postpone(transport, state: state, until: due, earliest: &earliest)
            } else {
                transport.writeAndFlush(frame)
                state.lastFlush = now
            }
        }
        scheduleDeferredFlush(earliest)
    }

    /// Flushes each connection written in this batch, or defers it if it was flushed less
    /// than `maxWriteDelay` ago.
    private func flushDirty() {
        let flushes = self.flushes
        guard !flushes.dirty.isEmpty else { return }
        let now = NIODeadline.now()
        flushes.lastNow = now
        let coalescing = isBusy(now: now)
        var earliest: NIODeadline?
        for transport in flushes.dirty {
            let state = transport.writeState
            state.isDirty = false
            if state.unflushedBytes == 0 { continue }  // flushed by a close in this batch
            if state.isDeferred {
                if state.unflushedBytes >= policy.flushThreshold { flushes.flush(transport, at: now) }
                continue
            }
            if coalescing, let due = deferral(of: state, adding: 0, now: now) {
                postpone(transport, state: state, until: due, earliest: &earliest)
            } else {
                flushes.flush(transport, at: now)
            }
        }
        flushes.dirty.removeAll(keepingCapacity: true)
        scheduleDeferredFlush(earliest)
    }

    /// Whether the loop writes enough frames for coalescing to pay: at least
    /// `coalescingRate` a second over the current or the previous window of
    /// `WritePolicy.loadWindow`. Counts the frames written since it was last asked.
    private func isBusy(now: NIODeadline) -> Bool {
        let flushes = self.flushes
        let window = WritePolicy.loadWindow
        if now - flushes.windowStart >= window {
            // After a pause longer than a window, the last count is stale.
            flushes.framesInPreviousWindow = now - flushes.windowStart >= window * 2 ? 0 : flushes.framesInWindow
            flushes.framesInWindow = 0
            flushes.windowStart = now
        }
        flushes.framesInWindow += flushes.framesUncounted
        flushes.framesUncounted = 0
        let threshold = policy.coalescingRate * Int(window.nanoseconds) / 1_000_000_000
        return max(flushes.framesInWindow, flushes.framesInPreviousWindow) >= threshold
    }

    /// When a connection that is not waiting yet may next be flushed, if not now: it was
    /// flushed less than `maxWriteDelay` ago and its unflushed bytes (with `adding` more)
    /// stay under the threshold.
    private func deferral(of state: TransportWriteState, adding: Int, now: NIODeadline) -> NIODeadline? {
        let due = state.lastFlush + policy.maxWriteDelay
        guard due > now, state.unflushedBytes + adding < policy.flushThreshold else { return nil }
        return due
    }

    private func postpone(_ transport: any Transport, state: TransportWriteState, until due: NIODeadline, earliest: inout NIODeadline?) {
        state.isDeferred = true
        flushes.deferred.append(transport)
        earliest = min(earliest ?? due, due)
    }

    private func scheduleDeferredFlush(_ earliest: NIODeadline?) {
        guard let earliest, !flushes.isTickScheduled else { return }
        flushes.isTickScheduled = true
        loop.scheduleTask(deadline: earliest) { self.flushDeferred() }
    }

    /// The delay is up for the connections waiting: one flush each.
    private func flushDeferred() {
        let flushes = self.flushes
        flushes.isTickScheduled = false
        let now = NIODeadline.now()
        flushes.lastNow = now
        let waiting = flushes.deferred
        flushes.deferred.removeAll(keepingCapacity: true)
        for transport in waiting {
            let state = transport.writeState
            state.isDeferred = false
            if state.unflushedBytes > 0 { flushes.flush(transport, at: now) }
        }
    }
}

/// How the hub writes to connections.
public struct WritePolicy: Sendable {
    /// How long a busy connection's frames may wait to be written together; zero writes
    /// every batch at once.
    public var maxWriteDelay: TimeAmount
    /// Unflushed bytes past which a connection is flushed without waiting.
    public var flushThreshold: Int
    /// Frames a second an event loop must be writing before any frame waits: below it the
    /// syscalls saved are not worth the delay. Zero coalesces at any load.
    public var coalescingRate: Int

    /// The span over which a loop's frames are counted against `coalescingRate`.
    static let loadWindow = TimeAmount.milliseconds(100)

    public init(maxWriteDelay: TimeAmount = .milliseconds(20), flushThreshold: Int = 16 * 1024, coalescingRate: Int = 20_000) {
        self.maxWriteDelay = maxWriteDelay
        self.flushThreshold = flushThreshold
        self.coalescingRate = coalescingRate
    }

    /// Every batch flushed at once.
    public static let immediate = WritePolicy(maxWriteDelay: .zero)
}

/// The loop writer's lists of connections to flush.
// @unchecked Sendable invariant: every member is read and written only on the writer's
// event loop (in `drain`, `flushDirty` and `flushDeferred`, which run there).
private final class FlushQueue: @unchecked Sendable {
    /// Written in the current batch, not yet flushed or deferred.
    var dirty: [any Transport] = []
    /// Waiting for their write delay to pass.
    var deferred: [any Transport] = []
    var isTickScheduled = false
    /// The time of the last flush pass, for flushes that need no fresh clock reading.
    var lastNow = NIODeadline.uptimeNanoseconds(0)
    /// The load gauge (`LoopWriter.isBusy`): frames written and not yet counted, frames in
    /// the window that began at `windowStart`, and in the window before it.
    var framesUncounted = 0
    var framesInWindow = 0
    var framesInPreviousWindow = 0
    var windowStart = NIODeadline.uptimeNanoseconds(0)

    func flush(_ transport: any Transport, at now: NIODeadline) {
        let state = transport.writeState
        guard state.unflushedBytes > 0 else { return }
        transport.flush()
        state.unflushedBytes = 0
        state.lastFlush = now
    }
}
