import Synchronization

/// `SubscriptionStore` for a single process: one dictionary behind one `Mutex`, so every
/// method is atomic. The reference semantics the Redis store must match.
///
/// Expiry is checked against `now`, injectable so tests can move time instead of sleeping.
public final class InMemorySubscriptionStore: SubscriptionStore {
    private enum Phase {
        case pending(expires: ContinuousClock.Instant, buffer: [[UInt8]])
        case acquired(owner: ClientAddress)
    }

    private struct Subscription {
        var items: [UInt8]
        var phase: Phase
    }

    private struct State {
        var subscriptions: [String: Subscription] = [:]
        /// The pending tokens, so walking them does not touch the (many more) acquired ones.
        var pending: Set<String> = []
        /// The last number taken by an append.
        var sequence: UInt64 = 0

        func isLive(_ token: String, now: ContinuousClock.Instant) -> Bool {
            guard let subscription = subscriptions[token] else { return false }
            if case .pending(let expires, _) = subscription.phase { return expires > now }
            return true
        }

        mutating func remove(_ token: String) {
            subscriptions[token] = nil
            pending.remove(token)
        }
    }

    private let state = Mutex(State())
    private let now: @Sendable () -> ContinuousClock.Instant

    public init(now: @escaping @Sendable () -> ContinuousClock.Instant = { .now }) {
        self.now = now
    }

    public func create(token: String, items: [UInt8], ttl: Duration) async throws(BusError) -> Bool {
        let now = now()
        return state.withLock { state in
            // An expired token is gone, even if nothing has swept it yet.
            guard !state.isLive(token, now: now) else { return false }
            state.subscriptions[token] = Subscription(items: items, phase: .pending(expires: now + ttl, buffer: []))
            state.pending.insert(token)
            return true
        }
    }

    public func pending() async throws(BusError) -> [PendingSubscription] {
        let now = now()
        return state.withLock { state in
            Self.purgeExpired(&state, now: now)
            return state.pending.compactMap { token in
                state.subscriptions[token].map { PendingSubscription(token: token, items: $0.items) }
            }
        }
    }

    public func append(
        _ entries: [(token: String, entries: [[UInt8]])], maxBuffered: Int
    ) async throws(BusError) -> AppendResult {
        let now = now()
        return state.withLock { state in
            state.sequence += 1
            var result = AppendResult(sequence: state.sequence)
            for (token, new) in entries {
                guard let subscription = state.subscriptions[token],
                    case .pending(let expires, var buffer) = subscription.phase, expires > now
                else { continue }
                buffer += new
                if buffer.count > maxBuffered {
                    state.remove(token)
                    result.overflowed.insert(token)
                } else {
                    state.subscriptions[token]?.phase = .pending(expires: expires, buffer: buffer)
                    result.buffered.insert(token)
                }
            }
            return result
        }
    }

    public func acquire(token: String, owner: ClientAddress) async throws(BusError) -> SubscriptionAcquisition {
        let now = now()
        return state.withLock { state in
            guard let subscription = state.subscriptions[token] else { return .notFound }
            switch subscription.phase {
            case .acquired:
                return .alreadyAcquired
            case .pending(let expires, _) where expires <= now:
                state.remove(token)
                return .notFound
            case .pending(_, let buffer):
                state.subscriptions[token]?.phase = .acquired(owner: owner)
                state.pending.remove(token)
                return .acquired(items: subscription.items, buffered: buffer, sequence: state.sequence)
            }
        }
    }

    public func release(tokens: [String], owner: ClientAddress) async throws(BusError) -> [String] {
        state.withLock { state in
            tokens.filter { token in
                guard case .acquired(owner)? = state.subscriptions[token]?.phase else { return false }
                state.remove(token)
                return true
            }
        }
    }

    public func removeAll(ownedByNode nodeID: String) async throws(BusError) -> [String] {
        state.withLock { state in
            let doomed = state.subscriptions.compactMap { token, subscription -> String? in
                guard case .acquired(let owner) = subscription.phase, owner.nodeID == nodeID else { return nil }
                return token
            }
            for token in doomed { state.remove(token) }
            return doomed.sorted()
        }
    }

    /// How many subscriptions exist, pending (unexpired) or acquired. For tests and stats.
    public var count: Int {
        let now = now()
        return state.withLock { state in
            Self.purgeExpired(&state, now: now)
            return state.subscriptions.count
        }
    }

    /// Pending subscriptions past their deadline are dropped lazily, by the calls that walk
    /// the pending tokens anyway, so no timer is needed.
    private static func purgeExpired(_ state: inout State, now: ContinuousClock.Instant) {
        for token in state.pending where !state.isLive(token, now: now) {
            state.remove(token)
        }
    }
}
