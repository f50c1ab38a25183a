/// Cluster-wide shared state for services, changed atomically wherever the cluster runs:
/// in memory for one process, in Redis (Lua scripts) across workers and nodes.
///
/// Three shapes cover the built-in services, and each entry is tagged with the client that
/// owns it, so the state of a worker or node that dies can be reaped by the survivors:
/// - **names**: unique keys owned by a client (messaging participants);
/// - **presence**: groups of members, each member with one or more connections (chat);
/// - **records**: a group's values keyed by id, each owned by a client, plus a per-group
///   sequence for fresh ids (cursors).
///
/// `space` separates services (e.g. "messaging", "chat"), so two services never collide.
/// Every method throws `BusError.unavailable` when the state cannot be reached.
public protocol ClusterState: Sendable {
    // MARK: Names

    /// Claims `name` for `owner`. Returns nil when claimed, or the current owner.
    func claimName(_ name: String, in space: String, for owner: ClientAddress) async throws(BusError) -> ClientAddress?

    /// Releases `name` if `owner` holds it.
    func releaseName(_ name: String, in space: String, by owner: ClientAddress) async throws(BusError) -> NameRelease

    func nameOwner(_ name: String, in space: String) async throws(BusError) -> ClientAddress?

    /// Every claimed name of the space, sorted.
    func names(in space: String) async throws(BusError) -> [String]

    // MARK: Presence

    /// Adds `connection` of `member` to `group`. `isFirst` is true when the member had no
    /// connection in the group before; `members` lists the group's members afterwards,
    /// sorted. Adding a connection that is already present changes nothing (`isFirst` false).
    func join(
        group: String, member: String, connection: ClientAddress, in space: String
    ) async throws(BusError) -> (isFirst: Bool, members: [String])

    /// Removes `connection` of `member` from `group`. `wasPresent` is false when it was not
    /// there; `isLast` is true when the member has no connection left in the group.
    func leave(
        group: String, member: String, connection: ClientAddress, in space: String
    ) async throws(BusError) -> (wasPresent: Bool, isLast: Bool)

    /// The connections of `member` in `group`.
    func connections(of member: String, group: String, in space: String) async throws(BusError) -> [ClientAddress]

    /// The members of `group`, sorted.
    func members(of group: String, in space: String) async throws(BusError) -> [String]

    // MARK: Records

    /// The next value of the group's sequence, starting at 1 (never reused).
    func nextSequence(group: String, in space: String) async throws(BusError) -> Int64

    /// Stores (or replaces) a record.
    func putRecord(
        _ value: [UInt8], id: String, group: String, owner: ClientAddress, in space: String
    ) async throws(BusError)

    /// Removes a record; returns false when it was not there.
    func removeRecord(id: String, group: String, in space: String) async throws(BusError) -> Bool

    /// The group's records.
    func records(group: String, in space: String) async throws(BusError) -> [ClusterRecord]

    // MARK: Liveness

    /// Marks `nodeID` alive for `ttl`. Called periodically by each node.
    func heartbeat(nodeID: String, ttl: Duration) async throws(BusError)

    /// Removes everything owned by clients of nodes whose heartbeat expired (other than
    /// `survivor`) and returns it, once: concurrent reapers never get the same entry twice.
    func reapDeadNodes(survivor: String) async throws(BusError) -> ReapedState

    /// Removes everything one client owns in `space` (its connection closed) and returns it.
    func removeAll(ownedBy owner: ClientAddress, in space: String) async throws(BusError) -> ReapedState

    /// Releases connections and timers.
    func shutdown() async
}

extension ClusterState {
    public func shutdown() async {}
}

public enum NameRelease: Sendable, Equatable {
    case released
    case notFound
    case ownedByOther
}

public struct ClusterRecord: Sendable, Equatable {
    public var id: String
    public var value: [UInt8]
    public var owner: ClientAddress

    public init(id: String, value: [UInt8], owner: ClientAddress) {
        self.id = id
        self.value = value
        self.owner = owner
    }
}

/// What a reap removed, so the reaper can send the notifications the dead owner could not
/// (`left` presence, `cursorRemoved`, …).
public struct ReapedState: Sendable, Equatable {
    public struct Name: Sendable, Equatable {
        public var space: String
        public var name: String
        public var owner: ClientAddress

        public init(space: String, name: String, owner: ClientAddress) {
            self.space = space
            self.name = name
            self.owner = owner
        }
    }

    public struct Presence: Sendable, Equatable {
        public var space: String
        public var group: String
        public var member: String
        public var connection: ClientAddress
        /// The member has no connection left in the group.
        public var isLast: Bool

        public init(space: String, group: String, member: String, connection: ClientAddress, isLast: Bool) {
            self.space = space
            self.group = group
            self.member = member
            self.connection = connection
            self.isLast = isLast
        }
    }

    public struct Record: Sendable, Equatable {
        public var space: String
        public var group: String
        public var record: ClusterRecord

        public init(space: String, group: String, record: ClusterRecord) {
            self.space = space
            self.group = group
            self.record = record
        }
    }

    public var names: [Name] = []
    public var presence: [Presence] = []
    public var records: [Record] = []
    /// Node ids whose state was reaped.
    public var nodes: [String] = []

    public init() {}

    public var isEmpty: Bool { names.isEmpty && presence.isEmpty && records.isEmpty }
}
