import Snorky
import SnorkyTesting
import Synchronization
import Testing

@testable import SnorkyRedis

private func bytes(_ text: String) -> [UInt8] { Array(text.utf8) }

private let alice = ClientAddress(nodeID: "n:1", clientID: 1)
private let bob = ClientAddress(nodeID: "n:10", clientID: 7)

/// One store per simulated worker: each has its own connection, as separate processes would.
private func makeStore(_ redis: RedisServerProcess, prefix: String = "snorky") throws -> RedisSubscriptionStore {
    RedisSubscriptionStore(
        url: try RedisURL(redis.url), keyPrefix: prefix,
        connection: RedisConnectionConfiguration(connectTimeout: .milliseconds(500), commandTimeout: .seconds(2)),
        reconnectBackoff: ReconnectBackoff(initial: .milliseconds(10), maximum: .milliseconds(100)),
        logger: TestLogging.logger)
}

@Suite("RedisSubscriptionStore")
struct RedisSubscriptionStoreTests {
    @Test("the scripts load and have the digests Redis computes")
    func scripts() async throws {
        let redis = try await RedisServerProcess()
        defer { withExtendedLifetime(redis) {} }  // keep the server until the end
        for script in SubscriptionStoreScripts.all {
            #expect(try redis.command(["SCRIPT", "LOAD", script.source]) == script.sha1)
        }
    }

    @Test("create, buffer while pending, acquire once with the buffer in order")
    func lifecycle() async throws {
        let redis = try await RedisServerProcess()
        defer { withExtendedLifetime(redis) {} }  // keep the server until the end
        let store = try makeStore(redis)
        #expect(try await store.create(token: "t1", items: bytes("[1]"), ttl: .seconds(60)))
        #expect(try await !store.create(token: "t1", items: bytes("[2]"), ttl: .seconds(60)))
        #expect(try await store.create(token: "t2", items: [0, 255, 10], ttl: .seconds(60)))  // any bytes
        let pending = try await store.pending().sorted { $0.token < $1.token }
        #expect(pending == [PendingSubscription(token: "t1", items: bytes("[1]")), PendingSubscription(token: "t2", items: [0, 255, 10])])

        let first = try await store.append([("t1", [bytes("a"), bytes("b")]), ("t2", [bytes("x")]), ("nope", [bytes("y")])], maxBuffered: 10)
        #expect(first == AppendResult(buffered: ["t1", "t2"], sequence: 1))
        #expect(try await store.append([], maxBuffered: 10) == AppendResult(sequence: 2))  // numbered all the same
        _ = try await store.append([("t1", [bytes("c")])], maxBuffered: 10)

        #expect(try await store.acquire(token: "t1", owner: alice) == .acquired(items: bytes("[1]"), buffered: [bytes("a"), bytes("b"), bytes("c")], sequence: 3))
        #expect(try await store.acquire(token: "t1", owner: alice) == .alreadyAcquired)
        #expect(try await store.acquire(token: "t1", owner: bob) == .alreadyAcquired)
        #expect(try await store.acquire(token: "missing", owner: bob) == .notFound)
        #expect(try await store.pending().map(\.token) == ["t2"])
        #expect(try await store.append([("t1", [bytes("d")]), ("t2", [bytes("z")])], maxBuffered: 10) == AppendResult(buffered: ["t2"], sequence: 4))
        #expect(try await store.acquire(token: "t2", owner: bob) == .acquired(items: [0, 255, 10], buffered: [bytes("x"), bytes("z")], sequence: 4))
        await store.shutdown()
    }

    @Test("keys follow the documented layout, acquire persists, and nothing is left behind")
    func keyLayout() async throws {
        let redis = try await RedisServerProcess()
        defer { withExtendedLifetime(redis) {} }  // keep the server until the end
        let store = try makeStore(redis, prefix: "p")
        _ = try await store.create(token: "tok", items: bytes("[]"), ttl: .seconds(60))
        _ = try await store.append([("tok", [bytes("e")])], maxBuffered: 10)
        #expect(try redis.command(["HGET", "p:datasync:sub:tok", "state"]) == "pending")
        #expect(try redis.command(["LRANGE", "p:datasync:buf:tok", "0", "-1"]) == "e")
        #expect(try Int(redis.command(["PTTL", "p:datasync:sub:tok"]))! > 50_000)
        #expect(try Int(redis.command(["PTTL", "p:datasync:buf:tok"]))! > 50_000)
        #expect(try redis.command(["SMEMBERS", "p:datasync:pending"]) == "tok")

        _ = try await store.acquire(token: "tok", owner: alice)
        #expect(try redis.command(["HGET", "p:datasync:sub:tok", "owner"]) == "n:1/1")
        #expect(try redis.command(["PTTL", "p:datasync:sub:tok"]) == "-1")  // acquired: no expiry
        #expect(try redis.command(["SMEMBERS", "p:datasync:owned:n:1"]) == "tok")
        #expect(try redis.command(["GET", "p:datasync:seq"]) == "1")
        #expect(try redis.commandLines(["KEYS", "*"]).sorted() == ["p:datasync:owned:n:1", "p:datasync:seq", "p:datasync:sub:tok"])

        #expect(try await store.release(tokens: ["tok"], owner: alice) == ["tok"])
        #expect(try redis.commandLines(["KEYS", "*"]) == ["p:datasync:seq"])  // the one key that stays
        await store.shutdown()
    }

    @Test("a pending token expires by Redis's clock; the expired token is swept from the listing")
    func expiry() async throws {
        let redis = try await RedisServerProcess()
        defer { withExtendedLifetime(redis) {} }  // keep the server until the end
        let store = try makeStore(redis)
        _ = try await store.create(token: "short", items: [], ttl: .milliseconds(100))
        _ = try await store.create(token: "long", items: [], ttl: .seconds(60))
        _ = try await store.append([("short", [bytes("a")])], maxBuffered: 10)
        // Expiry is a deadline in Redis, not an event this process can await: poll it.
        let deadline = ContinuousClock.now + .seconds(5)
        while try await store.pending().count == 2 {
            #expect(ContinuousClock.now < deadline, "the token never expired")
            try await Task.sleep(for: .milliseconds(20))
        }
        #expect(try await store.pending().map(\.token) == ["long"])
        #expect(try await store.acquire(token: "short", owner: alice) == .notFound)
        #expect(try await store.append([("short", [bytes("b")])], maxBuffered: 10) == AppendResult(sequence: 2))
        #expect(try redis.commandLines(["SMEMBERS", "snorky:datasync:pending"]) == ["long"])
        #expect(try redis.command(["EXISTS", "snorky:datasync:buf:short"]) == "0")  // the buffer expired with it
        #expect(try await store.create(token: "short", items: bytes("again"), ttl: .seconds(60)))
        await store.shutdown()
    }

    @Test("a buffer that would pass the limit drops its token")
    func overflow() async throws {
        let redis = try await RedisServerProcess()
        defer { withExtendedLifetime(redis) {} }  // keep the server until the end
        let store = try makeStore(redis)
        _ = try await store.create(token: "t", items: [], ttl: .seconds(60))
        _ = try await store.create(token: "u", items: [], ttl: .seconds(60))
        #expect(try await store.append([("t", [bytes("1"), bytes("2")])], maxBuffered: 2) == AppendResult(buffered: ["t"], sequence: 1))
        #expect(try await store.append([("t", [bytes("3")]), ("u", [bytes("1")])], maxBuffered: 2) == AppendResult(buffered: ["u"], overflowed: ["t"], sequence: 2))
        #expect(try await store.acquire(token: "t", owner: alice) == .notFound)
        #expect(try await store.pending().map(\.token) == ["u"])
        #expect(try redis.command(["EXISTS", "snorky:datasync:buf:t"]) == "0")
        await store.shutdown()
    }

    @Test("release takes only the owner's acquired tokens; a dead node's tokens go together, and only its own")
    func releaseAndReap() async throws {
        let redis = try await RedisServerProcess()
        defer { withExtendedLifetime(redis) {} }  // keep the server until the end
        let store = try makeStore(redis)
        let alice2 = ClientAddress(nodeID: "n:1", clientID: 2)
        for token in ["a1", "a2", "b1", "p"] { _ = try await store.create(token: token, items: [], ttl: .seconds(60)) }
        _ = try await store.acquire(token: "a1", owner: alice)
        _ = try await store.acquire(token: "a2", owner: alice2)
        _ = try await store.acquire(token: "b1", owner: bob)  // node "n:10": "n:1" is a prefix of it

        #expect(try await store.release(tokens: ["a1", "b1", "p", "zz"], owner: alice) == ["a1"])
        #expect(try await store.release(tokens: ["a1"], owner: alice) == [])
        #expect(try await store.release(tokens: [], owner: alice) == [])
        #expect(try await store.removeAll(ownedByNode: "n:1") == ["a2"])
        #expect(try await store.removeAll(ownedByNode: "n:1") == [])
        #expect(try await store.acquire(token: "b1", owner: alice) == .alreadyAcquired)
        #expect(try await store.pending().map(\.token) == ["p"])
        await store.shutdown()
    }

    @Test("concurrent acquires of one token from many workers have exactly one winner")
    func concurrentAcquires() async throws {
        let redis = try await RedisServerProcess()
        defer { withExtendedLifetime(redis) {} }  // keep the server until the end
        let stores = try (0..<8).map { _ in try makeStore(redis) }
        for round in 0..<10 {
            let token = "t\(round)"
            _ = try await stores[0].create(token: token, items: bytes("[\(round)]"), ttl: .seconds(60))
            _ = try await stores[0].append([(token, [bytes("e")])], maxBuffered: 10)
            let results = try await withThrowingTaskGroup(of: SubscriptionAcquisition.self) { group in
                for (index, store) in stores.enumerated() {
                    for client in 0..<4 {
                        group.addTask {
                            try await store.acquire(token: token, owner: ClientAddress(nodeID: "w\(index)", clientID: UInt64(client)))
                        }
                    }
                }
                return try await group.reduce(into: []) { $0.append($1) }
            }
            #expect(results.filter { $0 == .acquired(items: bytes("[\(round)]"), buffered: [bytes("e")], sequence: UInt64(round + 1)) }.count == 1)
            #expect(results.filter { $0 == .alreadyAcquired }.count == results.count - 1)
        }
        for store in stores { await store.shutdown() }
    }

    @Test("append racing acquire: every entry is either in the acquired buffer or refused, never both, never lost")
    func appendAcquireRace() async throws {
        let redis = try await RedisServerProcess()
        defer { withExtendedLifetime(redis) {} }  // keep the server until the end
        let publisher = try makeStore(redis)
        let acquirer = try makeStore(redis)
        for round in 0..<10 {
            let token = "race\(round)"
            _ = try await publisher.create(token: token, items: [], ttl: .seconds(60))
            let acquired = Mutex(false)
            let appending = Task {
                var outcomes: [(entry: String, buffered: Bool, sequence: UInt64)] = []
                // Appends until some append was refused (the acquire happened), then a few more.
                var refusedSince = 0
                var index = 0
                while refusedSince < 5 {
                    let entry = "e\(index)"
                    let result = try await publisher.append([(token, [bytes(entry)])], maxBuffered: 100_000)
                    let buffered = result.buffered.contains(token)
                    outcomes.append((entry, buffered, result.sequence))
                    if !buffered || acquired.withLock({ $0 }) { refusedSince += 1 }
                    index += 1
                }
                return outcomes
            }
            try await Task.sleep(for: .microseconds(Int64(200 * round)))
            let attempt: Result<SubscriptionAcquisition, BusError>
            do {
                attempt = .success(try await acquirer.acquire(token: token, owner: alice))
            } catch {
                attempt = .failure(error)
            }
            acquired.withLock { $0 = true }  // also on failure, so the appender stops
            let outcomes = try await appending.value
            let result = try attempt.get()
            guard case .acquired(_, let buffered, let acquiredAt) = result else {
                Issue.record("acquire failed: \(result)")
                continue
            }
            let accepted = outcomes.filter(\.buffered).map { bytes($0.entry) }
            #expect(buffered == accepted)  // what was accepted is exactly what the owner got, in order
            // Once one append is refused, every later one is: the switch is atomic.
            let firstRefused = outcomes.firstIndex { !$0.buffered } ?? outcomes.count
            #expect(outcomes[firstRefused...].allSatisfy { !$0.buffered })
            // The sequence tells the two apart: accepted appends are numbered up to the
            // acquire's number, refused ones above it.
            #expect(outcomes.allSatisfy { $0.buffered == ($0.sequence <= acquiredAt) })
            #expect(try redis.command(["EXISTS", "snorky:datasync:buf:\(token)"]) == "0")
        }
        await publisher.shutdown()
        await acquirer.shutdown()
    }

    @Test("a store that cannot reach Redis throws unavailable, and recovers when Redis is back")
    func outage() async throws {
        let redis = try await RedisServerProcess()
        defer { withExtendedLifetime(redis) {} }  // keep the server until the end
        let store = try makeStore(redis)
        #expect(try await store.create(token: "before", items: [], ttl: .seconds(60)))
        redis.stop()
        await #expect(throws: BusError.unavailable("")) { try await store.pending() }
        try await redis.restart()
        // Reconnecting is in the background, with backoff: poll until a call succeeds.
        let deadline = ContinuousClock.now + .seconds(5)
        var recovered = false
        while !recovered, ContinuousClock.now < deadline {
            recovered = (try? await store.create(token: "after", items: [], ttl: .seconds(60))) == true
            if !recovered { try await Task.sleep(for: .milliseconds(20)) }
        }
        #expect(recovered)
        #expect(try await store.pending().map(\.token) == ["after"])  // no persistence: "before" is gone
        await store.shutdown()
    }

    @Test("scripts are sent again after Redis forgot them")
    func scriptFlush() async throws {
        let redis = try await RedisServerProcess()
        defer { withExtendedLifetime(redis) {} }  // keep the server until the end
        let store = try makeStore(redis)
        #expect(try await store.create(token: "a", items: [], ttl: .seconds(60)))
        try redis.command(["SCRIPT", "FLUSH"])
        #expect(try await store.create(token: "b", items: [], ttl: .seconds(60)))
        #expect(Set(try await store.pending().map(\.token)) == ["a", "b"])
        await store.shutdown()
    }
}
