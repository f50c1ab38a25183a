import Snorky
import Synchronization

/// One item of a subscription, ready to match rows.
struct CompiledItem: Sendable {
    let model: String
    let matcher: RowMatcher
}

/// The deltas of one `publishDeltas` call as they travel on the bus, numbered by the
/// store's append sequence (see `SubscriptionStore`).
struct DeltaBatch: Sendable {
    let sequence: UInt64
    let deltas: [DataSyncDelta]

    var json: JSON { ["seq": .int(Int64(sequence)), "deltas": .array(deltas.map(\.json))] }

    init(sequence: UInt64, deltas: [DataSyncDelta]) {
        self.sequence = sequence
        self.deltas = deltas
    }

    init?(json: JSON) {
        guard case .int(let sequence)? = json["seq"], sequence > 0, case .array(let list)? = json["deltas"] else { return nil }
        var deltas: [DataSyncDelta] = []
        deltas.reserveCapacity(list.count)
        for element in list {
            guard let delta = try? DataSyncDelta(validating: element) else { return nil }
            deltas.append(delta)
        }
        self.init(sequence: UInt64(sequence), deltas: deltas)
    }
}

/// What a subscription with `items` receives of `delta` (the items are one subscription's,
/// so several matching items still give one delivery).
func delivery(of delta: DataSyncDelta, to items: [CompiledItem]) -> DataSyncDelta? {
    let model = delta.model
    return delta.delivery { row in
        items.contains { $0.model == model && $0.matcher.matches(row) }
    }
}

/// The acquired subscriptions of this node, by what their items match, so a delta finds
/// its subscriptions by set and hash lookups rather than by testing every item (only
/// `predicate` items are tested one by one).
struct SubscriptionIndex {
    private struct ModelIndex {
        var everyRow: Set<String> = []
        var byField: [FieldPath: [JSON: Set<String>]] = [:]
        var predicates: [String: [@Sendable (JSON) -> Bool]] = [:]

        var isEmpty: Bool { everyRow.isEmpty && byField.isEmpty && predicates.isEmpty }
    }

    private var models: [String: ModelIndex] = [:]

    var isEmpty: Bool { models.isEmpty }

    mutating func insert(_ token: String, items: [CompiledItem]) {
        for item in items {
            switch item.matcher {
            case .everyRow:
                models[item.model, default: ModelIndex()].everyRow.insert(token)
            case .fieldEquals(let path, let value):
                models[item.model, default: ModelIndex()].byField[path, default: [:]][value, default: []].insert(token)
            case .predicate(let test):
                models[item.model, default: ModelIndex()].predicates[token, default: []].append(test)
            }
        }
    }

    mutating func remove(_ token: String, items: [CompiledItem]) {
        for item in items {
            guard var index = models[item.model] else { continue }
            switch item.matcher {
            case .everyRow:
                index.everyRow.remove(token)
            case .fieldEquals(let path, let value):
                index.byField[path]?[value]?.remove(token)
                if index.byField[path]?[value]?.isEmpty == true { index.byField[path]?[value] = nil }
                if index.byField[path]?.isEmpty == true { index.byField[path] = nil }
            case .predicate:
                index.predicates[token] = nil
            }
            models[item.model] = index.isEmpty ? nil : index
        }
    }

    /// The tokens with at least one item matching `row` of `model`.
    func tokens(matching row: JSON, of model: String) -> Set<String> {
        guard let index = models[model] else { return [] }
        var tokens = index.everyRow
        for (path, buckets) in index.byField {
            if let value = path.value(in: row), let matching = buckets[value] {
                tokens.formUnion(matching)
            }
        }
        for (token, tests) in index.predicates where !tokens.contains(token) {
            if tests.contains(where: { $0(row) }) { tokens.insert(token) }
        }
        return tokens
    }

    /// Each subscription's delivery of `delta`: at most one per subscription.
    func deliveries(of delta: DataSyncDelta) -> [(token: String, delta: DataSyncDelta)] {
        switch delta {
        case .insert(let model, let data), .delete(let model, let data):
            return tokens(matching: data, of: model).map { ($0, delta) }
        case .update(let model, let newData, let oldData):
            let new = tokens(matching: newData, of: model)
            let old = tokens(matching: oldData, of: model)
            return new.union(old).compactMap { token in
                DataSyncDelta.split(
                    model: model, newData: newData, oldData: oldData,
                    newMatches: new.contains(token), oldMatches: old.contains(token)
                ).map { (token, $0) }
            }
        }
    }
}

/// This node's side of datasync delivery: the subscriptions its clients acquired and the
/// acquisitions in progress, fed by every delta batch the bus brings.
///
/// An acquisition registers here *before* the store's atomic acquire and holds every batch
/// that arrives meanwhile; once acquired, the buffer and then the held batches appended
/// after the acquire are sent, and the subscription joins the index. Batches appended
/// before the acquire are never delivered from the bus: their deltas are in the buffer, or
/// were published before the subscription existed (a late bus must not replay them). Sends
/// happen under the lock so that a batch arriving concurrently cannot overtake them; a
/// send only queues a frame on the client's loop, it never blocks.
final class DataSyncLocalSubscriptions: Sendable {
    private struct Subscription {
        let client: Client
        let items: [CompiledItem]
        /// The append sequence number at the acquire: batches up to it are not for us.
        let acquiredAt: UInt64
    }

    private struct State {
        var subscriptions: [String: Subscription] = [:]
        var tokensByClient: [ObjectIdentifier: Set<String>] = [:]
        var index = SubscriptionIndex()
        var acquisitions: [UInt64: [DeltaBatch]] = [:]
        var nextAcquisition: UInt64 = 0
    }

    private let service: String
    private let state = Mutex(State())

    init(service: String) {
        self.service = service
    }

    var count: Int { state.withLock { $0.subscriptions.count } }

    /// Starts holding batches for an acquisition; pair with `activate` or `abandon`.
    func beginAcquisition() -> UInt64 {
        state.withLock { state in
            state.nextAcquisition += 1
            state.acquisitions[state.nextAcquisition] = []
            return state.nextAcquisition
        }
    }

    func abandon(_ acquisition: UInt64) {
        _ = state.withLock { $0.acquisitions.removeValue(forKey: acquisition) }
    }

    /// Sends the buffer, then the subscription's deltas of the held batches appended after
    /// the acquire (`acquiredAt`), and starts live delivery.
    func activate(
        _ acquisition: UInt64, token: String, client: Client, items: [CompiledItem], buffered: [DataSyncDelta],
        acquiredAt: UInt64
    ) {
        state.withLock { state in
            let held = state.acquisitions.removeValue(forKey: acquisition) ?? []
            for delta in buffered {
                send(delta, to: client)
            }
            for batch in held where batch.sequence > acquiredAt {
                for delta in batch.deltas {
                    if let delivered = delivery(of: delta, to: items) { send(delivered, to: client) }
                }
            }
            state.subscriptions[token] = Subscription(client: client, items: items, acquiredAt: acquiredAt)
            state.tokensByClient[ObjectIdentifier(client), default: []].insert(token)
            state.index.insert(token, items: items)
        }
    }

    /// Delivers a batch from the bus to the acquired subscriptions it concerns, and holds it
    /// for the acquisitions in progress.
    func receive(_ batch: DeltaBatch) {
        state.withLock { state in
            for index in state.acquisitions.values.indices { state.acquisitions.values[index].append(batch) }
            guard !state.index.isEmpty else { return }
            for entry in batch.deltas {
                // One frame per distinct delivery (at most insert, update and delete of an
                // update), shared by every subscriber that receives it.
                var frames: [String: OutboundFrame] = [:]
                for (token, delta) in state.index.deliveries(of: entry) {
                    guard let subscription = state.subscriptions[token], batch.sequence > subscription.acquiredAt
                    else { continue }
                    let type = delta.typeName
                    let frame = frames[type] ?? notification(delta)
                    frames[type] = frame
                    subscription.client.send(frame)
                }
            }
        }
    }

    /// Stops delivering `token`; false if `client` does not hold it here.
    func remove(_ token: String, client: Client) -> Bool {
        state.withLock { state in
            guard let subscription = state.subscriptions[token], subscription.client === client else { return false }
            Self.remove(token, subscription, from: &state)
            return true
        }
    }

    /// Stops every subscription of `client`; returns their tokens.
    func removeAll(of client: Client) -> [String] {
        state.withLock { state in
            guard let tokens = state.tokensByClient[ObjectIdentifier(client)] else { return [] }
            for token in tokens {
                if let subscription = state.subscriptions[token] { Self.remove(token, subscription, from: &state) }
            }
            return tokens.sorted()
        }
    }

    private static func remove(_ token: String, _ subscription: Subscription, from state: inout State) {
        state.subscriptions[token] = nil
        state.index.remove(token, items: subscription.items)
        let key = ObjectIdentifier(subscription.client)
        state.tokensByClient[key]?.remove(token)
        if state.tokensByClient[key]?.isEmpty == true { state.tokensByClient[key] = nil }
    }

    private func send(_ delta: DataSyncDelta, to client: Client) {
        client.send(notification(delta))
    }

    private func notification(_ delta: DataSyncDelta) -> OutboundFrame {
        OutboundFrame(service: service, message: ["type": "delta", "delta": delta.json])
    }
}

extension DataSyncDelta {
    var typeName: String {
        switch self {
        case .insert: "insert"
        case .update: "update"
        case .delete: "delete"
        }
    }
}
