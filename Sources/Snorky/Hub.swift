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

    public init(shardCount: Int = 16) {
        shards = (0..<max(1, shardCount)).map { _ in Shard() }
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
            } else {
                group.writer.enqueue(frame, to: group.clients)
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
            let writer = LoopWriter(loop: loop)
            writers[key] = writer
            return writer
        }
    }
}

/// Batches writes for one event loop: deliveries queued while the loop is busy are written
/// together in one task, and each connection is flushed once per batch, so a burst of
/// publications costs one syscall per connection instead of one per message. Direct sends
/// and closes travel the same queue, so a connection sees everything in production order.
final class LoopWriter: Sendable {
    let loop: any EventLoop

    enum Item {
        case frame(OutboundFrame, [Client])
        case close(Client, code: UInt16, reason: String)
    }

    private struct Pending {
        var batch: [Item] = []
        var isScheduled = false
    }

    private let pending = Mutex(Pending())

    init(loop: any EventLoop) {
        self.loop = loop
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
            // The common case: every client appears once, flush as we go.
            for client in clients {
                client.transport.write(frame)
                client.transport.flush()
            }
            return
        }
        var touched: [ObjectIdentifier: any Transport] = [:]
        for item in batch {
            switch item {
            case .frame(let frame, let clients):
                for client in clients {
                    client.transport.write(frame)
                    touched[ObjectIdentifier(client.transport)] = client.transport
                }
            case .close(let client, let code, let reason):
                // The close frame follows everything queued before it; later writes are dropped.
                client.transport.flush()
                client.transport.close(code: code, reason: reason)
            }
        }
        for transport in touched.values {
            transport.flush()
        }
    }
}
