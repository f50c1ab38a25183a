#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif
import Snorky
import SnorkyTesting
import Testing

@testable import SnorkyRedis

/// What only the Redis implementation has: several workers racing on one Redis, outages,
/// script caching, the key layout. Shared semantics are in `ClusterStateConformanceTests`.
@Suite("RedisClusterState")
struct RedisClusterStateTests {
    // MARK: Scripts

    @Test func scriptDigestsAreTheOnesRedisComputes() async throws {
        #expect(SHA1.hexDigest([]) == "da39a3ee5e6b4b0d3255bfef95601890afd80709")
        #expect(SHA1.hexDigest(Array("abc".utf8)) == "a9993e364706816aba3e25717850c26c9cd0d89d")
        #expect(
            SHA1.hexDigest(Array("abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq".utf8))
                == "84983e441c3bd26ebaae4aa1f95129e5e54670f1")
        let redis = try await RedisServerProcess()
        defer { withExtendedLifetime(redis) {} }  // keep the server until the end
        for script in ClusterStateScripts.all {
            #expect(try redis.command(["SCRIPT", "LOAD", script.source]) == script.sha1)
        }
    }

    @Test func scriptsAreSentAgainAfterAFlush() async throws {
        let redis = try await RedisServerProcess()
        defer { withExtendedLifetime(redis) {} }  // keep the server until the end
        let state = try makeRedisClusterState(redis)
        let owner = ClientAddress(nodeID: "n", clientID: 1)
        #expect(try await state.claimName("a", in: "s", for: owner) == nil)
        try redis.command(["SCRIPT", "FLUSH"])
        #expect(try await state.claimName("b", in: "s", for: owner) == nil)  // NOSCRIPT, then EVAL
        #expect(try await state.claimName("c", in: "s", for: owner) == nil)  // cached again
        #expect(try await state.names(in: "s") == ["a", "b", "c"])
        await state.shutdown()
    }

    // MARK: Key layout

    @Test func keysFollowTheDocumentedLayoutAndNothingLeaks() async throws {
        let redis = try await RedisServerProcess()
        defer { withExtendedLifetime(redis) {} }  // keep the server until the end
        let state = try makeRedisClusterState(redis, prefix: "p")
        let owner = ClientAddress(nodeID: "n:1", clientID: 42)
        #expect(try await state.claimName("name", in: "sp:ace", for: owner) == nil)
        _ = try await state.join(group: "g", member: "m", connection: owner, in: "sp:ace")
        try await state.putRecord([7], id: "id", group: "g", owner: owner, in: "sp:ace")
        _ = try await state.nextSequence(group: "g", in: "sp:ace")
        try await state.heartbeat(nodeID: "n:1", ttl: .seconds(60))

        #expect(try redis.command(["HGET", "p:names:6:sp:ace", "name"]) == "n:1/42")
        #expect(try redis.command(["SMEMBERS", "p:members:6:sp:ace1:g"]) == "m")
        #expect(try redis.command(["ZRANGE", "p:conns:6:sp:ace1:g1:m", "0", "-1"]) == "n:1/42")
        #expect(try redis.command(["HGET", "p:records:6:sp:ace1:g", "id"]) == "\u{7}")
        #expect(try redis.command(["HGET", "p:recowners:6:sp:ace1:g", "id"]) == "n:1/42")
        #expect(try redis.command(["GET", "p:seq:6:sp:ace1:g"]) == "1")
        #expect(try redis.commandLines(["SMEMBERS", "p:owned:3:n:12:426:sp:ace"]).sorted() == ["n4:name", "p1:g1:m", "r1:g2:id"])
        #expect(try redis.command(["SMEMBERS", "p:clients:3:n:1"]) == "42:sp:ace")
        #expect(try redis.command(["EXISTS", "p:alive:3:n:1"]) == "1")
        #expect(try redis.command(["SMEMBERS", "p:nodes"]) == "n:1")

        // Undoing everything one way or another leaves no entry and no index behind.
        #expect(try await state.releaseName("name", in: "sp:ace", by: owner) == .released)
        #expect(try await state.leave(group: "g", member: "m", connection: owner, in: "sp:ace").isLast)
        #expect(try await state.removeRecord(id: "id", group: "g", in: "sp:ace"))
        #expect(try redis.commandLines(["KEYS", "*"]).sorted() == ["p:alive:3:n:1", "p:nodes", "p:seq:6:sp:ace1:g"])

        let other = ClientAddress(nodeID: "n:1", clientID: 43)
        #expect(try await state.claimName("name", in: "sp:ace", for: other) == nil)
        _ = try await state.join(group: "g", member: "m", connection: other, in: "sp:ace")
        try await state.putRecord([7], id: "id", group: "g", owner: owner, in: "sp:ace")
        try await state.putRecord([8], id: "id", group: "g", owner: other, in: "sp:ace")  // moves to other's index
        #expect(try redis.command(["EXISTS", "p:owned:3:n:12:426:sp:ace"]) == "0")
        #expect(try await state.removeAll(ownedBy: other, in: "sp:ace").recordRows.count == 1)
        #expect(try redis.commandLines(["KEYS", "*"]).sorted() == ["p:alive:3:n:1", "p:nodes", "p:seq:6:sp:ace1:g"])
        await state.shutdown()
    }

    @Test func prefixesKeepClustersOnOneRedisApart() async throws {
        let redis = try await RedisServerProcess()
        defer { withExtendedLifetime(redis) {} }  // keep the server until the end
        let blue = try makeRedisClusterState(redis, prefix: "blue")
        let green = try makeRedisClusterState(redis, prefix: "green")
        let owner = ClientAddress(nodeID: "n", clientID: 1)
        #expect(try await blue.claimName("x", in: "s", for: owner) == nil)
        #expect(try await green.claimName("x", in: "s", for: ClientAddress(nodeID: "m", clientID: 2)) == nil)
        #expect(try await blue.nameOwner("x", in: "s") == owner)
        #expect(try await green.nextSequence(group: "g", in: "s") == 1)
        #expect(try await blue.nextSequence(group: "g", in: "s") == 1)
        try await blue.heartbeat(nodeID: "n", ttl: .milliseconds(1))
        try await eventually(timeout: .seconds(15), "blue's heartbeat expired") {
            try redis.command(["EXISTS", ClusterStateKeys(prefix: "blue").alive(node: "n")]) == "0"
        }
        // Green never heard of node n: it reaps nothing of blue's.
        #expect(try await green.reapDeadNodes(survivor: "m") == ReapedState())
        #expect(try await blue.reapDeadNodes(survivor: "m").nameRows.map(\.name) == ["x"])
        #expect(try await green.nameOwner("x", in: "s") == ClientAddress(nodeID: "m", clientID: 2))
        await blue.shutdown()
        await green.shutdown()
    }

    // MARK: Workers racing

    @Test func concurrentClaimsOfOneNameHaveExactlyOneWinner() async throws {
        let redis = try await RedisServerProcess()
        defer { withExtendedLifetime(redis) {} }  // keep the server until the end
        let workers = [try makeRedisClusterState(redis), try makeRedisClusterState(redis)]
        let results = try await withThrowingTaskGroup(of: (ClientAddress, ClientAddress?).self) { group in
            for index in 0..<100 {
                let worker = workers[index % 2]
                let owner = ClientAddress(nodeID: "worker\(index % 2)", clientID: UInt64(index))
                group.addTask { (owner, try await worker.claimName("the one", in: "messaging", for: owner)) }
            }
            return try await group.reduce(into: [(ClientAddress, ClientAddress?)]()) { $0.append($1) }
        }
        let winners = results.filter { $0.1 == nil }.map(\.0)
        #expect(winners.count == 1)
        let winner = try #require(winners.first)
        #expect(results.filter { $0.1 != nil }.allSatisfy { $0.1 == winner })
        #expect(try await workers[1].nameOwner("the one", in: "messaging") == winner)
        for worker in workers { await worker.shutdown() }
    }

    @Test func concurrentJoinsAndLeavesOfOneMemberHaveOneFirstAndOneLast() async throws {
        let redis = try await RedisServerProcess()
        defer { withExtendedLifetime(redis) {} }  // keep the server until the end
        let workers = [try makeRedisClusterState(redis), try makeRedisClusterState(redis)]
        let connections = (0..<100).map { ClientAddress(nodeID: "worker\($0 % 2)", clientID: UInt64($0)) }
        let joins = try await withThrowingTaskGroup(of: Bool.self) { group in
            for (index, connection) in connections.enumerated() {
                let worker = workers[index % 2]
                group.addTask { try await worker.join(group: "room", member: "ann", connection: connection, in: "chat").isFirst }
            }
            return try await group.reduce(into: [Bool]()) { $0.append($1) }
        }
        #expect(joins.filter { $0 }.count == 1)
        #expect(Set(try await workers[0].connections(of: "ann", group: "room", in: "chat")) == Set(connections))

        let leaves = try await withThrowingTaskGroup(of: (Bool, Bool).self) { group in
            for (index, connection) in connections.enumerated() {
                let worker = workers[(index + 1) % 2]
                group.addTask {
                    let result = try await worker.leave(group: "room", member: "ann", connection: connection, in: "chat")
                    return (result.wasPresent, result.isLast)
                }
            }
            return try await group.reduce(into: [(Bool, Bool)]()) { $0.append($1) }
        }
        #expect(leaves.filter { $0.0 }.count == 100)
        #expect(leaves.filter { $0.1 }.count == 1)
        #expect(try await workers[0].members(of: "room", in: "chat") == [])
        for worker in workers { await worker.shutdown() }
    }

    @Test func concurrentReapersReapEachEntryOnce() async throws {
        let redis = try await RedisServerProcess()
        defer { withExtendedLifetime(redis) {} }  // keep the server until the end
        let workers = [try makeRedisClusterState(redis), try makeRedisClusterState(redis)]
        let deadNodes = ["dead-a", "dead-b", "dead-c"]
        for node in deadNodes + ["live"] { try await workers[0].heartbeat(nodeID: node, ttl: .seconds(60)) }
        for node in deadNodes {
            for client in UInt64(0)..<20 {
                let owner = ClientAddress(nodeID: node, clientID: client)
                let worker = workers[Int(client) % 2]
                #expect(try await worker.claimName("\(node)-\(client)", in: "messaging", for: owner) == nil)
                _ = try await worker.join(group: "room", member: "m\(client % 5)", connection: owner, in: "chat")
                try await worker.putRecord([UInt8(client)], id: "\(node)-\(client)", group: "doc", owner: owner, in: "cursors")
            }
        }
        let live = ClientAddress(nodeID: "live", clientID: 1)
        _ = try await workers[0].join(group: "room", member: "survivor", connection: live, in: "chat")
        for node in deadNodes { try await workers[1].heartbeat(nodeID: node, ttl: .milliseconds(200)) }
        let keys = ClusterStateKeys(prefix: "snorky")
        try await eventually(timeout: .seconds(15), "the dead nodes' heartbeats expired") {
            try deadNodes.allSatisfy { try redis.command(["EXISTS", keys.alive(node: $0)]) == "0" }
        }

        let results = try await withThrowingTaskGroup(of: ReapedState.self) { group in
            for index in 0..<8 {
                let worker = workers[index % 2]
                group.addTask { try await worker.reapDeadNodes(survivor: "live") }
            }
            return try await group.reduce(into: [ReapedState]()) { $0.append($1) }
        }
        let nodes = results.flatMap(\.nodes)
        let names = results.flatMap(\.nameRows)
        let presence = results.flatMap(\.presenceRows)
        let records = results.flatMap(\.recordRows)
        #expect(nodes.sorted() == deadNodes)
        #expect(names.count == 60 && Set(names).count == 60)
        #expect(presence.count == 60 && Set(presence.map(\.connection)).count == 60)
        #expect(records.count == 60 && Set(records).count == 60)
        // Every member lost all its connections, across reapers: exactly one was the last.
        for member in (0..<5).map({ "m\($0)" }) {
            #expect(presence.filter { $0.member == member && $0.isLast }.count == 1, "\(member)")
        }
        #expect(try await workers[0].members(of: "room", in: "chat") == ["survivor"])
        #expect(try await workers[0].names(in: "messaging") == [])
        #expect(try await workers[0].records(group: "doc", in: "cursors") == [])
        // The dead nodes' index is gone with them; the live node's stays.
        #expect(try redis.commandLines(["KEYS", "snorky:owned:6:dead-*"]) == [])
        #expect(try redis.commandLines(["KEYS", "snorky:clients:6:dead-*"]) == [])
        #expect(try redis.commandLines(["KEYS", "snorky:owned:*"]) == ["snorky:owned:4:live1:14:chat"])
        for worker in workers { await worker.shutdown() }
    }

    // MARK: Outages

    @Test func everyMethodFailsPromptlyWhileRedisIsDownAndWorksAgainAfterARestart() async throws {
        let redis = try await RedisServerProcess()
        defer { withExtendedLifetime(redis) {} }  // keep the server until the end
        let state = try makeRedisClusterState(redis)
        let owner = ClientAddress(nodeID: "n", clientID: 1)
        #expect(try await state.claimName("before", in: "s", for: owner) == nil)
        #expect(state.isConnected)

        redis.stop()
        for (method, call) in Self.everyMethod(owner: owner) {
            await expectUnavailable(method, within: .seconds(3)) { try await call(state) }
        }

        try await redis.restart()
        try await eventually(timeout: .seconds(15), "reconnected") {
            (try? await state.names(in: "s")) != nil
        }
        #expect(state.reconnectCount >= 1)
        // The restarted Redis has no persistence: a clean slate, scripts loaded again.
        #expect(try await state.claimName("before", in: "s", for: owner) == nil)
        for (_, call) in Self.everyMethod(owner: owner) { try await call(state) }
        await state.shutdown()
    }

    @Test func failsPromptlyWhenRedisWasNeverThere() async throws {
        var configuration = try RedisClusterStateConfiguration(url: "unix:///nonexistent/snorky-redis.sock")
        configuration.reconnectBackoff = ReconnectBackoff(initial: .milliseconds(10), maximum: .milliseconds(100))
        let state = RedisClusterState(configuration: configuration, logger: TestLogging.logger)
        await state.start()
        #expect(!state.isConnected)
        let owner = ClientAddress(nodeID: "n", clientID: 1)
        for (method, call) in Self.everyMethod(owner: owner) {
            await expectUnavailable(method, within: .seconds(3)) { try await call(state) }
        }
        await state.shutdown()
    }

    @Test func aHungRedisTimesOutInsteadOfHanging() async throws {
        let redis = try await RedisServerProcess()
        defer { withExtendedLifetime(redis) {} }  // keep the server until the end
        let state = try makeRedisClusterState(redis) {
            $0.connection = RedisConnectionConfiguration(connectTimeout: .milliseconds(300), commandTimeout: .milliseconds(300))
        }
        let owner = ClientAddress(nodeID: "n", clientID: 1)
        #expect(try await state.claimName("a", in: "s", for: owner) == nil)
        let pid = try #require(redis.pid)
        kill(pid, SIGSTOP)
        defer { kill(pid, SIGCONT) }
        // The first waits for the reply timeout; later ones meet a reconnect in progress
        // (whose handshake times out as well) or the wait for the next attempt.
        for (method, call) in Self.everyMethod(owner: owner).prefix(4) {
            await expectUnavailable(method, within: .seconds(3)) { try await call(state) }
        }
        kill(pid, SIGCONT)
        try await eventually(timeout: .seconds(15), "answering again") {
            (try? await state.nameOwner("a", in: "s")) == owner
        }
        await state.shutdown()
    }

    @Test func shutdownMakesEveryCallUnavailable() async throws {
        let redis = try await RedisServerProcess()
        defer { withExtendedLifetime(redis) {} }  // keep the server until the end
        let state = try makeRedisClusterState(redis)
        await state.start()
        #expect(state.isConnected)
        await state.shutdown()
        #expect(!state.isConnected)
        await expectUnavailable("names", within: .seconds(3)) { _ = try await state.names(in: "s") }
        await state.shutdown()  // idempotent
    }

    // MARK: Helpers

    typealias Call = @Sendable (RedisClusterState) async throws -> Void

    static func everyMethod(owner: ClientAddress) -> [(String, Call)] {
        [
            ("claimName", { _ = try await $0.claimName("n", in: "s", for: owner) }),
            ("releaseName", { _ = try await $0.releaseName("n", in: "s", by: owner) }),
            ("nameOwner", { _ = try await $0.nameOwner("n", in: "s") }),
            ("names", { _ = try await $0.names(in: "s") }),
            ("join", { _ = try await $0.join(group: "g", member: "m", connection: owner, in: "s") }),
            ("leave", { _ = try await $0.leave(group: "g", member: "m", connection: owner, in: "s") }),
            ("connections", { _ = try await $0.connections(of: "m", group: "g", in: "s") }),
            ("members", { _ = try await $0.members(of: "g", in: "s") }),
            ("nextSequence", { _ = try await $0.nextSequence(group: "g", in: "s") }),
            ("putRecord", { try await $0.putRecord([1], id: "r", group: "g", owner: owner, in: "s") }),
            ("removeRecord", { _ = try await $0.removeRecord(id: "r", group: "g", in: "s") }),
            ("records", { _ = try await $0.records(group: "g", in: "s") }),
            ("heartbeat", { try await $0.heartbeat(nodeID: "n", ttl: .seconds(5)) }),
            ("reapDeadNodes", { _ = try await $0.reapDeadNodes(survivor: "n") }),
            ("removeAll", { _ = try await $0.removeAll(ownedBy: owner, in: "s") }),
        ]
    }
}

/// Expects `body` to throw `BusError.unavailable` within `limit` (and never to hang).
func expectUnavailable(
    _ what: String, within limit: Duration, sourceLocation: SourceLocation = #_sourceLocation,
    _ body: @escaping @Sendable () async throws -> Void
) async {
    let start = ContinuousClock.now
    do {
        try await withTimeLimit(limit + .seconds(5)) { try await body() }
        Issue.record("\(what) succeeded while Redis is unavailable", sourceLocation: sourceLocation)
    } catch let error as BusError {
        #expect(error.isUnavailable, "\(what): \(error)", sourceLocation: sourceLocation)
    } catch {
        Issue.record("\(what) threw \(error)", sourceLocation: sourceLocation)
    }
    let elapsed = ContinuousClock.now - start
    #expect(elapsed < limit, "\(what) took \(elapsed)", sourceLocation: sourceLocation)
}
