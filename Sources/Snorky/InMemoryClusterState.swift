import Synchronization

/// `ClusterState` for a single process: dictionaries behind one `Mutex`. The reference
/// semantics the Redis implementation must match (both run the same conformance tests).
public final class InMemoryClusterState: ClusterState {
    private struct GroupKey: Hashable {
        var space: String
        var group: String
    }

    private struct State {
        var names: [String: [String: ClientAddress]] = [:]  // space → name → owner
        /// space+group → member → connections, in join order.
        var presence: [GroupKey: [String: [ClientAddress]]] = [:]
        var records: [GroupKey: [String: ClusterRecord]] = [:]
        var sequences: [GroupKey: Int64] = [:]
        var heartbeats: [String: ContinuousClock.Instant] = [:]
    }

    private let state = Mutex(State())

    public init() {}

    // MARK: Names

    public func claimName(_ name: String, in space: String, for owner: ClientAddress) async throws(BusError) -> ClientAddress? {
        state.withLock { state in
            if let current = state.names[space]?[name] { return current }
            state.names[space, default: [:]][name] = owner
            return nil
        }
    }

    public func releaseName(_ name: String, in space: String, by owner: ClientAddress) async throws(BusError) -> NameRelease {
        state.withLock { state in
            guard let current = state.names[space]?[name] else { return .notFound }
            guard current == owner else { return .ownedByOther }
            state.names[space]?[name] = nil
            return .released
        }
    }

    public func nameOwner(_ name: String, in space: String) async throws(BusError) -> ClientAddress? {
        state.withLock { $0.names[space]?[name] }
    }

    public func names(in space: String) async throws(BusError) -> [String] {
        state.withLock { ($0.names[space].map { Array($0.keys) } ?? []).sorted() }
    }

    // MARK: Presence

    public func join(
        group: String, member: String, connection: ClientAddress, in space: String
    ) async throws(BusError) -> (isFirst: Bool, members: [String]) {
        state.withLock { state in
            let key = GroupKey(space: space, group: group)
            var members = state.presence[key] ?? [:]
            var connections = members[member] ?? []
            let isFirst = connections.isEmpty
            if !connections.contains(connection) { connections.append(connection) }
            members[member] = connections
            state.presence[key] = members
            return (isFirst, members.keys.sorted())
        }
    }

    public func leave(
        group: String, member: String, connection: ClientAddress, in space: String
    ) async throws(BusError) -> (wasPresent: Bool, isLast: Bool) {
        state.withLock { state in
            Self.leave(&state, key: GroupKey(space: space, group: group), member: member, connection: connection)
        }
    }

    private static func leave(
        _ state: inout State, key: GroupKey, member: String, connection: ClientAddress
    ) -> (wasPresent: Bool, isLast: Bool) {
        guard var connections = state.presence[key]?[member], let index = connections.firstIndex(of: connection) else {
            return (false, false)
        }
        connections.remove(at: index)
        if connections.isEmpty {
            state.presence[key]?[member] = nil
            if state.presence[key]?.isEmpty == true { state.presence[key] = nil }
            return (true, true)
        }
        state.presence[key]?[member] = connections
        return (true, false)
    }

    public func connections(of member: String, group: String, in space: String) async throws(BusError) -> [ClientAddress] {
        state.withLock { $0.presence[GroupKey(space: space, group: group)]?[member] ?? [] }
    }

    public func members(of group: String, in space: String) async throws(BusError) -> [String] {
        state.withLock { ($0.presence[GroupKey(space: space, group: group)].map { Array($0.keys) } ?? []).sorted() }
    }

    // MARK: Records

    public func nextSequence(group: String, in space: String) async throws(BusError) -> Int64 {
        state.withLock { state in
            let key = GroupKey(space: space, group: group)
            let next = (state.sequences[key] ?? 0) + 1
            state.sequences[key] = next
            return next
        }
    }

    public func putRecord(
        _ value: [UInt8], id: String, group: String, owner: ClientAddress, in space: String
    ) async throws(BusError) {
        state.withLock { state in
            state.records[GroupKey(space: space, group: group), default: [:]][id] = ClusterRecord(
                id: id, value: value, owner: owner)
        }
    }

    public func removeRecord(id: String, group: String, in space: String) async throws(BusError) -> Bool {
        state.withLock { state in
            let key = GroupKey(space: space, group: group)
            guard state.records[key]?.removeValue(forKey: id) != nil else { return false }
            if state.records[key]?.isEmpty == true { state.records[key] = nil }
            return true
        }
    }

    public func records(group: String, in space: String) async throws(BusError) -> [ClusterRecord] {
        state.withLock { ($0.records[GroupKey(space: space, group: group)].map { Array($0.values) } ?? []).sorted { $0.id < $1.id } }
    }

    // MARK: Liveness

    public func heartbeat(nodeID: String, ttl: Duration) async throws(BusError) {
        state.withLock { $0.heartbeats[nodeID] = .now + ttl }
    }

    public func reapDeadNodes(survivor: String) async throws(BusError) -> ReapedState {
        state.withLock { state in
            let now = ContinuousClock.now
            let dead = Set(state.heartbeats.filter { $0.key != survivor && $0.value <= now }.map(\.key))
            for node in dead { state.heartbeats[node] = nil }
            var reaped = Self.remove(&state) { dead.contains($0.nodeID) }
            reaped.nodes = dead.sorted()
            return reaped
        }
    }

    public func removeAll(ownedBy owner: ClientAddress, in space: String) async throws(BusError) -> ReapedState {
        state.withLock { state in
            Self.remove(&state, in: space) { $0 == owner }
        }
    }

    /// Removes every entry whose owner matches, in one space or all.
    private static func remove(
        _ state: inout State, in onlySpace: String? = nil, where matches: (ClientAddress) -> Bool
    ) -> ReapedState {
        var reaped = ReapedState()
        for (space, owners) in state.names where onlySpace == nil || space == onlySpace {
            for (name, owner) in owners where matches(owner) {
                state.names[space]?[name] = nil
                reaped.names.append(.init(space: space, name: name, owner: owner))
            }
        }
        for (key, members) in state.presence where onlySpace == nil || key.space == onlySpace {
            for (member, connections) in members {
                for connection in connections where matches(connection) {
                    let result = leave(&state, key: key, member: member, connection: connection)
                    reaped.presence.append(
                        .init(space: key.space, group: key.group, member: member, connection: connection, isLast: result.isLast))
                }
            }
        }
        for (key, records) in state.records where onlySpace == nil || key.space == onlySpace {
            for record in records.values where matches(record.owner) {
                state.records[key]?[record.id] = nil
                reaped.records.append(.init(space: key.space, group: key.group, record: record))
            }
            if state.records[key]?.isEmpty == true { state.records[key] = nil }
        }
        return reaped
    }
}
