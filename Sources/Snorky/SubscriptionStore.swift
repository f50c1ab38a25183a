/// Cluster-wide state of datasync subscriptions, shared by every worker and node: in
/// memory for one process, in Redis (one Lua script per mutation) across processes.
///
/// A subscription is created *pending* by the backend (`authorizeSubscription`) under a
/// random token, with its items (opaque bytes to the store) and a time to live. While it
/// is pending, deltas published for it are appended to its buffer. A browser then
/// *acquires* it: atomically, the subscription becomes owned by that connection and its
/// buffer is handed over. From then on the owner's node delivers deltas itself (from the
/// bus) and the store only remembers who owns the token, so it can refuse a second
/// acquire and clean up after a connection or a node that is gone.
///
/// The atomic acquire is what lets a node close the race with concurrent publishers: an
/// append either lands before the acquire (and is in the returned buffer) or is refused
/// because the token is already acquired (and the publisher's bus broadcast, which comes
/// after its append, reaches the new owner).
///
/// Appends and acquires are also ordered by one counter: every append (even one with no
/// entries) takes the next number, and an acquire reports the number reached. A batch
/// whose number is at most that was appended before the acquire, so it is either in the
/// buffer or was published before the subscription could see it, and the new owner must
/// not deliver it from the bus, however late the bus brings it; a higher number was
/// appended after, and only the bus brings it.
///
/// Every method throws `BusError.unavailable` when the store cannot be reached.
public protocol SubscriptionStore: Sendable {
    /// Creates a pending subscription that expires after `ttl` unless acquired. Returns
    /// false, changing nothing, when `token` already exists.
    func create(token: String, items: [UInt8], ttl: Duration) async throws(BusError) -> Bool

    /// The pending (unacquired, unexpired) subscriptions with their items, in no order.
    func pending() async throws(BusError) -> [PendingSubscription]

    /// Appends each token's entries, in order, to its buffer, but only while the token is
    /// still pending: one atomic step per call, so an acquire sees all of a call's entries
    /// for its token or none. A token whose buffer would pass `maxBuffered` entries is
    /// deleted instead (its acquire then finds no subscription): a subscriber that missed
    /// deltas must not start from an incomplete state. Every call, even with no entries,
    /// takes the next number of the append sequence, returned in the result.
    func append(_ entries: [(token: String, entries: [[UInt8]])], maxBuffered: Int) async throws(BusError) -> AppendResult

    /// Atomically turns a pending subscription into one owned by `owner` and hands back
    /// its items, its buffer (emptied) and the number the append sequence had reached.
    func acquire(token: String, owner: ClientAddress) async throws(BusError) -> SubscriptionAcquisition

    /// Deletes the acquired subscriptions among `tokens` that `owner` holds; returns the
    /// tokens deleted.
    func release(tokens: [String], owner: ClientAddress) async throws(BusError) -> [String]

    /// Deletes every subscription acquired by a client of `nodeID` (a node that died);
    /// returns the tokens deleted.
    func removeAll(ownedByNode nodeID: String) async throws(BusError) -> [String]

    /// Releases connections and timers.
    func shutdown() async
}

extension SubscriptionStore {
    public func shutdown() async {}
}

public struct PendingSubscription: Sendable, Equatable {
    public var token: String
    public var items: [UInt8]

    public init(token: String, items: [UInt8]) {
        self.token = token
        self.items = items
    }
}

public struct AppendResult: Sendable, Equatable {
    /// Tokens that were pending and took their entries.
    public var buffered: Set<String>
    /// Tokens deleted because their buffer would have passed the limit.
    public var overflowed: Set<String>
    /// This append's number in the store's append sequence (see `SubscriptionStore`).
    public var sequence: UInt64

    public init(buffered: Set<String> = [], overflowed: Set<String> = [], sequence: UInt64) {
        self.buffered = buffered
        self.overflowed = overflowed
        self.sequence = sequence
    }
}

public enum SubscriptionAcquisition: Sendable, Equatable {
    /// The caller now owns the subscription.
    /// `sequence`: the last append number taken before the acquire.
    case acquired(items: [UInt8], buffered: [[UInt8]], sequence: UInt64)
    /// No such token, or it expired.
    case notFound
    /// Someone (possibly the caller) acquired it already.
    case alreadyAcquired
}
