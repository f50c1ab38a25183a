import Snorky
import SnorkyTesting
import Testing

@testable import SnorkyRedis

/// Behaviours every `ClusterState` must have, run against the in-memory reference and the
/// Redis implementation alike. What needs two workers racing, an outage or the key layout
/// is Redis-specific and lives in `RedisClusterStateTests`.
enum ClusterStateKind: String, CaseIterable, CustomTestStringConvertible, Sendable {
    case memory
    case redis
    var testDescription: String { rawValue }
}

enum ClusterStateBehaviour: String, CaseIterable, CustomTestStringConvertible, Sendable {
    case claimAndRelease
    case namesAreSortedAndPerSpace
    case presenceFirstAndLast
    case duplicateJoinAndUnknownLeave
    case sequencesArePerGroupAndNeverReused
    case recordsPutReplaceRemoveList
    case removeAllTouchesOneClientInOneSpace
    case reapReturnsADeadNodesStateOnce
    case hostileText
    var testDescription: String { rawValue }
}

/// A state for the conformance suite, plus a second handle on the same state (another
/// worker: a second `RedisClusterState` on the same Redis; the same instance in memory).
struct ClusterStateFixture: Sendable {
    let state: any ClusterState
    let peer: any ClusterState
    let redis: RedisServerProcess?
    private let close: @Sendable () async -> Void

    func shutdown() async { await close() }

    static func make(_ kind: ClusterStateKind) async throws -> ClusterStateFixture {
        switch kind {
        case .memory:
            let state = InMemoryClusterState()
            return ClusterStateFixture(state: state, peer: state, redis: nil, close: {})
        case .redis:
            let redis = try await RedisServerProcess()
            let state = try makeRedisClusterState(redis)
            let peer = try makeRedisClusterState(redis)
            return ClusterStateFixture(state: state, peer: peer, redis: redis) {
                await state.shutdown()
                await peer.shutdown()
            }
        }
    }
}

/// A `RedisClusterState` on `redis` with test-sized timeouts and backoff.
func makeRedisClusterState(
    _ redis: RedisServerProcess,
    prefix: String = "snorky",
    configure: (inout RedisClusterStateConfiguration) -> Void = { _ in }
) throws -> RedisClusterState {
    var configuration = try RedisClusterStateConfiguration(url: redis.url)
    configuration.keyPrefix = prefix
    configuration.connection = RedisConnectionConfiguration(connectTimeout: .milliseconds(500), commandTimeout: .seconds(2))
    configuration.reconnectBackoff = ReconnectBackoff(initial: .milliseconds(10), maximum: .milliseconds(100))
    configure(&configuration)
    return RedisClusterState(configuration: configuration, logger: TestLogging.logger)
}

// MARK: Comparable views of results (the entry types have no public initializer)

struct NameRow: Hashable, Comparable, CustomStringConvertible {
    var space: String
    var name: String
    var owner: String
    var description: String { "\(space.debugDescription)/\(name.debugDescription) by \(owner)" }
    static func < (a: NameRow, b: NameRow) -> Bool { a.description < b.description }
}

struct PresenceRow: Hashable, Comparable, CustomStringConvertible {
    var space: String
    var group: String
    var member: String
    var connection: String
    var isLast: Bool
    var description: String {
        "\(space.debugDescription)/\(group.debugDescription)/\(member.debugDescription) \(connection)\(isLast ? " last" : "")"
    }
    static func < (a: PresenceRow, b: PresenceRow) -> Bool { a.description < b.description }
}

struct RecordRow: Hashable, Comparable, CustomStringConvertible {
    var space: String
    var group: String
    var id: String
    var value: [UInt8]
    var owner: String
    var description: String { "\(space.debugDescription)/\(group.debugDescription)/\(id.debugDescription)=\(value) by \(owner)" }
    static func < (a: RecordRow, b: RecordRow) -> Bool { a.description < b.description }
}

extension ReapedState {
    var nameRows: [NameRow] { names.map { NameRow(space: $0.space, name: $0.name, owner: "\($0.owner)") }.sorted() }
    var presenceRows: [PresenceRow] {
        presence.map {
            PresenceRow(space: $0.space, group: $0.group, member: $0.member, connection: "\($0.connection)", isLast: $0.isLast)
        }.sorted()
    }
    var recordRows: [RecordRow] {
        records.map {
            RecordRow(space: $0.space, group: $0.group, id: $0.record.id, value: $0.record.value, owner: "\($0.record.owner)")
        }.sorted()
    }
}

private func address(_ node: String, _ client: UInt64) -> ClientAddress {
    ClientAddress(nodeID: node, clientID: client)
}

// MARK: The suite

/// Runs one conformance behaviour against the state `makeState` returns.
func clusterStateConformance(
    _ behaviour: ClusterStateBehaviour, makeState: () async throws -> ClusterStateFixture
) async throws {
    let fixture = try await makeState()
    defer { withExtendedLifetime(fixture.redis) {} }  // keep the server until the end
    let state = fixture.state
    let peer = fixture.peer

    switch behaviour {
    case .claimAndRelease:
        let alice = address("n1", 1)
        let bob = address("n2", 1)
        #expect(try await state.nameOwner("x", in: "messaging") == nil)
        #expect(try await state.claimName("x", in: "messaging", for: alice) == nil)
        // Claiming again reports the current owner, even to the owner itself.
        #expect(try await state.claimName("x", in: "messaging", for: alice) == alice)
        #expect(try await peer.claimName("x", in: "messaging", for: bob) == alice)
        #expect(try await peer.nameOwner("x", in: "messaging") == alice)
        #expect(try await peer.releaseName("x", in: "messaging", by: bob) == .ownedByOther)
        #expect(try await state.nameOwner("x", in: "messaging") == alice)
        #expect(try await state.releaseName("x", in: "messaging", by: alice) == .released)
        #expect(try await state.releaseName("x", in: "messaging", by: alice) == .notFound)
        #expect(try await state.releaseName("never", in: "messaging", by: alice) == .notFound)
        #expect(try await state.nameOwner("x", in: "messaging") == nil)
        #expect(try await peer.claimName("x", in: "messaging", for: bob) == nil)
        #expect(try await state.nameOwner("x", in: "messaging") == bob)
        // The same client id on another node is another owner.
        #expect(try await state.releaseName("x", in: "messaging", by: address("n1", 1)) == .ownedByOther)

    case .namesAreSortedAndPerSpace:
        let owner = address("n1", 7)
        for name in ["delta", "alpha", "Charlie", "bravo", "10", "9"] {
            #expect(try await state.claimName(name, in: "a", for: owner) == nil)
        }
        #expect(try await state.claimName("alpha", in: "b", for: address("n2", 1)) == nil)
        #expect(try await state.names(in: "a") == ["10", "9", "Charlie", "alpha", "bravo", "delta"])
        #expect(try await peer.names(in: "b") == ["alpha"])
        #expect(try await state.names(in: "nothing here") == [])
        #expect(try await state.nameOwner("alpha", in: "b") == address("n2", 1))
        #expect(try await state.nameOwner("alpha", in: "a") == owner)

    case .presenceFirstAndLast:
        // n/9 then n/10: join order differs from the addresses' text order.
        let first = address("n", 9)
        let second = address("n", 10)
        var result = try await state.join(group: "room", member: "ann", connection: first, in: "chat")
        #expect(result.isFirst && result.members == ["ann"])
        result = try await peer.join(group: "room", member: "ann", connection: second, in: "chat")
        #expect(!result.isFirst && result.members == ["ann"])
        result = try await state.join(group: "room", member: "Zed", connection: address("m", 1), in: "chat")
        #expect(result.isFirst && result.members == ["Zed", "ann"])
        #expect(try await state.connections(of: "ann", group: "room", in: "chat") == [first, second])
        #expect(try await peer.members(of: "room", in: "chat") == ["Zed", "ann"])
        // Another group and another space are separate.
        #expect(try await state.members(of: "room", in: "other") == [])
        #expect(try await state.members(of: "hall", in: "chat") == [])

        var left = try await state.leave(group: "room", member: "ann", connection: first, in: "chat")
        #expect(left.wasPresent && !left.isLast)
        #expect(try await state.connections(of: "ann", group: "room", in: "chat") == [second])
        // Rejoining goes to the end of the join order.
        result = try await state.join(group: "room", member: "ann", connection: first, in: "chat")
        #expect(!result.isFirst)
        #expect(try await state.connections(of: "ann", group: "room", in: "chat") == [second, first])
        left = try await peer.leave(group: "room", member: "ann", connection: second, in: "chat")
        #expect(left.wasPresent && !left.isLast)
        left = try await state.leave(group: "room", member: "ann", connection: first, in: "chat")
        #expect(left.wasPresent && left.isLast)
        #expect(try await state.members(of: "room", in: "chat") == ["Zed"])
        #expect(try await state.connections(of: "ann", group: "room", in: "chat") == [])
        left = try await state.leave(group: "room", member: "Zed", connection: address("m", 1), in: "chat")
        #expect(left.wasPresent && left.isLast)
        #expect(try await state.members(of: "room", in: "chat") == [])
        // A member who left entirely is first again.
        result = try await state.join(group: "room", member: "ann", connection: second, in: "chat")
        #expect(result.isFirst && result.members == ["ann"])

    case .duplicateJoinAndUnknownLeave:
        let connection = address("n", 1)
        var result = try await state.join(group: "g", member: "m", connection: connection, in: "s")
        #expect(result.isFirst)
        result = try await peer.join(group: "g", member: "m", connection: connection, in: "s")
        #expect(!result.isFirst && result.members == ["m"])
        #expect(try await state.connections(of: "m", group: "g", in: "s") == [connection])
        // The same connection as two members of one group counts for each.
        result = try await state.join(group: "g", member: "m2", connection: connection, in: "s")
        #expect(result.isFirst && result.members == ["m", "m2"])

        for (group, member, other) in [("g", "m", address("n", 2)), ("g", "nobody", connection), ("nowhere", "m", connection)] {
            let left = try await state.leave(group: group, member: member, connection: other, in: "s")
            #expect(!left.wasPresent && !left.isLast)
        }
        let elsewhere = try await state.leave(group: "g", member: "m", connection: connection, in: "another space")
        #expect(!elsewhere.wasPresent)
        var left = try await state.leave(group: "g", member: "m", connection: connection, in: "s")
        #expect(left.wasPresent && left.isLast)
        left = try await state.leave(group: "g", member: "m", connection: connection, in: "s")
        #expect(!left.wasPresent && !left.isLast)
        #expect(try await state.members(of: "g", in: "s") == ["m2"])

    case .sequencesArePerGroupAndNeverReused:
        #expect(try await state.nextSequence(group: "g1", in: "cursors") == 1)
        #expect(try await peer.nextSequence(group: "g1", in: "cursors") == 2)
        #expect(try await state.nextSequence(group: "g1", in: "cursors") == 3)
        #expect(try await state.nextSequence(group: "g2", in: "cursors") == 1)
        #expect(try await state.nextSequence(group: "g1", in: "other") == 1)
        // Removing the group's records does not reset it.
        try await state.putRecord([1], id: "3", group: "g1", owner: address("n", 1), in: "cursors")
        #expect(try await state.removeRecord(id: "3", group: "g1", in: "cursors"))
        #expect(try await state.nextSequence(group: "g1", in: "cursors") == 4)
        // Concurrent callers each get their own value.
        let values = try await withThrowingTaskGroup(of: Int64.self) { group in
            for index in 0..<50 {
                let target = index.isMultiple(of: 2) ? state : peer
                group.addTask { try await target.nextSequence(group: "busy", in: "cursors") }
            }
            return try await group.reduce(into: [Int64]()) { $0.append($1) }
        }
        #expect(values.sorted() == Array(1...50))

    case .recordsPutReplaceRemoveList:
        let ann = address("n1", 1)
        let bob = address("n2", 2)
        #expect(try await state.records(group: "doc", in: "cursors") == [])
        try await state.putRecord([0, 255, 13, 10], id: "b", group: "doc", owner: ann, in: "cursors")
        try await peer.putRecord([], id: "a", group: "doc", owner: bob, in: "cursors")
        try await state.putRecord(Array("elsewhere".utf8), id: "a", group: "doc2", owner: ann, in: "cursors")
        #expect(
            try await peer.records(group: "doc", in: "cursors") == [
                ClusterRecord(id: "a", value: [], owner: bob), ClusterRecord(id: "b", value: [0, 255, 13, 10], owner: ann),
            ])
        // Replacing changes the value and the owner.
        try await peer.putRecord([42], id: "b", group: "doc", owner: bob, in: "cursors")
        #expect(
            try await state.records(group: "doc", in: "cursors") == [
                ClusterRecord(id: "a", value: [], owner: bob), ClusterRecord(id: "b", value: [42], owner: bob),
            ])
        // So ann no longer owns it: her disconnect leaves it alone.
        #expect(
            try await state.removeAll(ownedBy: ann, in: "cursors").recordRows == [
                RecordRow(space: "cursors", group: "doc2", id: "a", value: Array("elsewhere".utf8), owner: "n1/1")
            ])
        #expect(try await state.records(group: "doc", in: "cursors").count == 2)
        #expect(try await state.records(group: "doc2", in: "cursors") == [])

        #expect(try await state.removeRecord(id: "a", group: "doc", in: "cursors"))
        #expect(try await state.removeRecord(id: "a", group: "doc", in: "cursors") == false)
        #expect(try await state.removeRecord(id: "b", group: "nowhere", in: "cursors") == false)
        #expect(try await state.records(group: "doc", in: "cursors") == [ClusterRecord(id: "b", value: [42], owner: bob)])
        let removed = try await peer.removeAll(ownedBy: bob, in: "cursors")
        #expect(removed.recordRows == [RecordRow(space: "cursors", group: "doc", id: "b", value: [42], owner: "n2/2")])
        #expect(removed.names.isEmpty && removed.presence.isEmpty && removed.nodes.isEmpty)
        #expect(try await state.records(group: "doc", in: "cursors") == [])

    case .removeAllTouchesOneClientInOneSpace:
        let me = address("n1", 1)
        let neighbour = address("n1", 2)
        let twin = address("n2", 1)  // same client id, other node
        for (owner, name) in [(me, "me"), (neighbour, "neighbour"), (twin, "twin")] {
            #expect(try await state.claimName(name, in: "A", for: owner) == nil)
        }
        #expect(try await state.claimName("me-in-B", in: "B", for: me) == nil)
        _ = try await state.join(group: "room", member: "shared", connection: me, in: "A")
        _ = try await state.join(group: "room", member: "shared", connection: neighbour, in: "A")
        _ = try await state.join(group: "room", member: "solo", connection: me, in: "A")
        _ = try await state.join(group: "room", member: "solo", connection: me, in: "B")
        try await state.putRecord([1], id: "mine", group: "doc", owner: me, in: "A")
        try await state.putRecord([2], id: "theirs", group: "doc", owner: twin, in: "A")
        try await state.putRecord([3], id: "mine", group: "doc", owner: me, in: "B")

        let removed = try await peer.removeAll(ownedBy: me, in: "A")
        #expect(removed.nodes == [])
        #expect(removed.nameRows == [NameRow(space: "A", name: "me", owner: "n1/1")])
        #expect(
            removed.presenceRows == [
                PresenceRow(space: "A", group: "room", member: "shared", connection: "n1/1", isLast: false),
                PresenceRow(space: "A", group: "room", member: "solo", connection: "n1/1", isLast: true),
            ])
        #expect(removed.recordRows == [RecordRow(space: "A", group: "doc", id: "mine", value: [1], owner: "n1/1")])

        #expect(try await state.names(in: "A") == ["neighbour", "twin"])
        #expect(try await state.names(in: "B") == ["me-in-B"])
        #expect(try await state.members(of: "room", in: "A") == ["shared"])
        #expect(try await state.connections(of: "shared", group: "room", in: "A") == [neighbour])
        #expect(try await state.members(of: "room", in: "B") == ["solo"])
        #expect(try await state.records(group: "doc", in: "A") == [ClusterRecord(id: "theirs", value: [2], owner: twin)])
        #expect(try await state.records(group: "doc", in: "B") == [ClusterRecord(id: "mine", value: [3], owner: me)])
        #expect(try await state.removeAll(ownedBy: me, in: "A").isEmpty)
        #expect(try await state.removeAll(ownedBy: address("nobody", 1), in: "A").isEmpty)

        let inB = try await state.removeAll(ownedBy: me, in: "B")
        #expect(inB.nameRows.map(\.name) == ["me-in-B"])
        #expect(inB.presenceRows.map(\.isLast) == [true])
        #expect(inB.recordRows.map(\.value) == [[3]])

    case .reapReturnsADeadNodesStateOnce:
        // Long heartbeats while setting up (however slow the machine), short ones after.
        try await state.heartbeat(nodeID: "survivor", ttl: .seconds(60))
        try await peer.heartbeat(nodeID: "live", ttl: .seconds(60))
        try await peer.heartbeat(nodeID: "dead", ttl: .seconds(60))
        let dead1 = address("dead", 1)
        let dead2 = address("dead", 2)
        let dead3 = address("dead", 3)
        let live = address("live", 1)
        let survivor = address("survivor", 1)

        #expect(try await peer.claimName("alice", in: "A", for: dead1) == nil)
        #expect(try await peer.claimName("bob", in: "B", for: dead2) == nil)
        #expect(try await state.claimName("carol", in: "A", for: live) == nil)
        #expect(try await state.claimName("sam", in: "A", for: survivor) == nil)
        _ = try await peer.join(group: "room", member: "both-dead", connection: dead1, in: "A")
        _ = try await peer.join(group: "room", member: "both-dead", connection: dead2, in: "A")
        _ = try await peer.join(group: "room", member: "half-dead", connection: dead1, in: "A")
        _ = try await state.join(group: "room", member: "half-dead", connection: live, in: "A")
        _ = try await peer.join(group: "room", member: "dead", connection: dead3, in: "A")
        _ = try await state.join(group: "room", member: "safe", connection: survivor, in: "A")
        try await peer.putRecord([1], id: "r1", group: "cursors", owner: dead1, in: "A")
        try await state.putRecord([2], id: "r2", group: "cursors", owner: live, in: "A")
        try await state.putRecord([3], id: "r3", group: "cursors", owner: survivor, in: "A")
        try await peer.putRecord([4], id: "x", group: "g", owner: dead2, in: "B")

        // Nothing to reap while every heartbeat is fresh.
        #expect(try await state.reapDeadNodes(survivor: "survivor") == ReapedState())
        try await state.heartbeat(nodeID: "survivor", ttl: .milliseconds(200))
        try await peer.heartbeat(nodeID: "dead", ttl: .milliseconds(200))

        var reaped = ReapedState()
        try await eventually(timeout: .seconds(15), "the dead node's heartbeat expired") {
            reaped = try await state.reapDeadNodes(survivor: "survivor")
            return !reaped.nodes.isEmpty
        }
        // The survivor's own heartbeat expired too, but it is the survivor.
        #expect(reaped.nodes == ["dead"])
        #expect(
            reaped.nameRows == [
                NameRow(space: "A", name: "alice", owner: "dead/1"), NameRow(space: "B", name: "bob", owner: "dead/2"),
            ])
        let presence = reaped.presenceRows
        #expect(presence.count == 4)
        // Two dead connections of one member: whichever went second was the last.
        #expect(presence.filter { $0.member == "both-dead" }.map { $0.isLast ? 1 : 0 }.sorted() == [0, 1])
        #expect(
            presence.filter { $0.member == "half-dead" } == [
                .init(space: "A", group: "room", member: "half-dead", connection: "dead/1", isLast: false)
            ])
        #expect(
            presence.filter { $0.member == "dead" } == [
                .init(space: "A", group: "room", member: "dead", connection: "dead/3", isLast: true)
            ])
        #expect(
            reaped.recordRows == [
                RecordRow(space: "A", group: "cursors", id: "r1", value: [1], owner: "dead/1"),
                RecordRow(space: "B", group: "g", id: "x", value: [4], owner: "dead/2"),
            ])

        // Exactly once: nothing the second time, from either worker.
        #expect(try await state.reapDeadNodes(survivor: "survivor") == ReapedState())
        #expect(try await peer.reapDeadNodes(survivor: "survivor") == ReapedState())
        // The survivor's and the live node's state is intact.
        #expect(try await state.names(in: "A") == ["carol", "sam"])
        #expect(try await state.names(in: "B") == [])
        #expect(try await state.members(of: "room", in: "A") == ["half-dead", "safe"])
        #expect(try await state.connections(of: "half-dead", group: "room", in: "A") == [live])
        #expect(try await state.records(group: "cursors", in: "A").map(\.id) == ["r2", "r3"])
        #expect(try await state.records(group: "g", in: "B") == [])

        // Seen from the live node, the survivor (whose heartbeat lapsed) is dead now.
        let fromLive = try await peer.reapDeadNodes(survivor: "live")
        #expect(fromLive.nodes == ["survivor"])
        #expect(fromLive.nameRows.map(\.name) == ["sam"])
        #expect(
            fromLive.presenceRows == [.init(space: "A", group: "room", member: "safe", connection: "survivor/1", isLast: true)])
        #expect(fromLive.recordRows.map(\.id) == ["r3"])

        // A reaped node that heartbeats again is alive and reaped again only after expiry.
        try await state.heartbeat(nodeID: "dead", ttl: .seconds(60))
        #expect(try await state.claimName("again", in: "A", for: dead1) == nil)
        #expect(try await peer.reapDeadNodes(survivor: "live").nodes == [])
        #expect(try await state.nameOwner("again", in: "A") == dead1)

    case .hostileText:
        // Separators of naive key schemes, NUL, the owner separator, unicode, empty.
        let texts = ["", ":", "a:b", "a", "b", "\0", "a\0b", "/", "1:a", "0:", "ünïcödé 🐍", "名前", "a b\r\n"]
        let owners = [address("", 0), address(":", 1), address("n:1", 2), address("n\0x", 3), address("ñ🐍", UInt64.max)]
        for (index, text) in texts.enumerated() {
            let owner = owners[index % owners.count]
            #expect(try await state.claimName(text, in: text, for: owner) == nil)
            #expect(try await state.claimName(text, in: "names", for: owner) == nil)
            let joined = try await state.join(group: text, member: text, connection: owner, in: text)
            #expect(joined.isFirst && joined.members == [text])
            _ = try await state.join(group: "group", member: text, connection: owner, in: "presence")
            try await state.putRecord(Array(text.utf8), id: text, group: text, owner: owner, in: text)
            try await state.putRecord(Array(text.utf8), id: text, group: "group", owner: owner, in: "records")
        }
        #expect(try await peer.names(in: "names") == texts.sorted())
        #expect(try await peer.members(of: "group", in: "presence") == texts.sorted())
        #expect(try await peer.records(group: "group", in: "records").map(\.id) == texts.sorted())
        for (index, text) in texts.enumerated() {
            let owner = owners[index % owners.count]
            #expect(try await peer.names(in: text) == [text], "space \(text.debugDescription)")
            #expect(try await peer.nameOwner(text, in: text) == owner)
            #expect(try await peer.members(of: text, in: text) == [text])
            #expect(try await peer.connections(of: text, group: text, in: text) == [owner])
            #expect(
                try await peer.records(group: text, in: text) == [ClusterRecord(id: text, value: Array(text.utf8), owner: owner)])
        }
        // Pairs that collide under naive key schemes (joined with or without a separator)
        // are different groups.
        let pairs = [("a", "b:c"), ("a:b", "c"), ("ab", "c"), ("a", "bc"), ("", "a"), ("a", "")]
        for (space, group) in pairs {
            _ = try await state.join(group: group, member: "\(space)|\(group)", connection: owners[0], in: "pairs-" + space)
        }
        for (space, group) in pairs {
            #expect(try await peer.members(of: group, in: "pairs-" + space) == ["\(space)|\(group)"])
        }
        // Removing one hostile owner's state in one hostile space takes exactly its entries
        // there (each owner has entries in other spaces too).
        for (index, text) in texts.enumerated() {
            let owner = owners[index % owners.count]
            let removed = try await peer.removeAll(ownedBy: owner, in: text)
            #expect(removed.nameRows == [NameRow(space: text, name: text, owner: "\(owner)")], "\(text.debugDescription)")
            #expect(
                removed.presenceRows == [.init(space: text, group: text, member: text, connection: "\(owner)", isLast: true)],
                "\(text.debugDescription)")
            #expect(
                removed.recordRows == [RecordRow(space: text, group: text, id: text, value: Array(text.utf8), owner: "\(owner)")],
                "\(text.debugDescription)")
            #expect(try await state.names(in: text) == [])
        }
        #expect(try await state.names(in: "names") == texts.sorted())
        var names: [String] = []
        for owner in owners {
            names += try await state.removeAll(ownedBy: owner, in: "names").nameRows.map(\.name)
        }
        #expect(names.sorted() == texts.sorted())
        #expect(try await state.members(of: "group", in: "presence") == texts.sorted())
        #expect(try await state.records(group: "group", in: "records").count == texts.count)
    }

    await fixture.shutdown()
}

@Suite("ClusterState conformance")
struct ClusterStateConformanceTests {
    @Test(arguments: ClusterStateKind.allCases, ClusterStateBehaviour.allCases)
    func conformance(_ kind: ClusterStateKind, _ behaviour: ClusterStateBehaviour) async throws {
        try await clusterStateConformance(behaviour) { try await ClusterStateFixture.make(kind) }
    }
}
