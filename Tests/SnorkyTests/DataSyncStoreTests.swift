import Snorky
import Synchronization
import Testing

/// A clock a test moves by hand, so expiry is tested without sleeping.
final class DataSyncManualClock: Sendable {
    private let start = ContinuousClock.now
    private let offset = Mutex<Duration>(.zero)

    var now: ContinuousClock.Instant { start + offset.withLock { $0 } }

    func advance(by duration: Duration) {
        offset.withLock { $0 += duration }
    }
}

private func bytes(_ text: String) -> [UInt8] { Array(text.utf8) }

private let alice = ClientAddress(nodeID: "A", clientID: 1)
private let bob = ClientAddress(nodeID: "B", clientID: 7)

/// The semantics every `SubscriptionStore` has, on the in-memory reference implementation
/// (`RedisSubscriptionStoreTests` checks the same against a real Redis).
@Suite("DataSync in-memory subscription store")
struct DataSyncStoreTests {
    @Test("create, buffer while pending, acquire once with the buffer in order")
    func lifecycle() async throws {
        let store = InMemorySubscriptionStore()
        #expect(try await store.create(token: "t1", items: bytes("[1]"), ttl: .seconds(60)))
        #expect(try await !store.create(token: "t1", items: bytes("[2]"), ttl: .seconds(60)))
        #expect(try await store.create(token: "t2", items: bytes("[2]"), ttl: .seconds(60)))
        let pending = try await store.pending().sorted { $0.token < $1.token }
        #expect(pending == [PendingSubscription(token: "t1", items: bytes("[1]")), PendingSubscription(token: "t2", items: bytes("[2]"))])

        let first = try await store.append([("t1", [bytes("a"), bytes("b")]), ("t2", [bytes("x")]), ("nope", [bytes("y")])], maxBuffered: 10)
        #expect(first == AppendResult(buffered: ["t1", "t2"], sequence: 1))
        _ = try await store.append([("t1", [bytes("c")])], maxBuffered: 10)

        // Every append takes the next number; an acquire reports the last one taken.
        #expect(try await store.acquire(token: "t1", owner: alice) == .acquired(items: bytes("[1]"), buffered: [bytes("a"), bytes("b"), bytes("c")], sequence: 2))
        #expect(try await store.acquire(token: "t1", owner: alice) == .alreadyAcquired)
        #expect(try await store.acquire(token: "t1", owner: bob) == .alreadyAcquired)
        #expect(try await store.acquire(token: "missing", owner: bob) == .notFound)
        #expect(try await store.pending().map(\.token) == ["t2"])

        // Once acquired, a token takes no more entries: they travel on the bus instead.
        #expect(try await store.append([("t1", [bytes("d")]), ("t2", [bytes("z")])], maxBuffered: 10) == AppendResult(buffered: ["t2"], sequence: 3))
        #expect(try await store.acquire(token: "t2", owner: bob) == .acquired(items: bytes("[2]"), buffered: [bytes("x"), bytes("z")], sequence: 3))
    }

    @Test("a pending token expires after its TTL; an acquired one does not")
    func expiry() async throws {
        let clock = DataSyncManualClock()
        let store = InMemorySubscriptionStore(now: { clock.now })
        _ = try await store.create(token: "short", items: [], ttl: .seconds(2))
        _ = try await store.create(token: "long", items: [], ttl: .seconds(10))
        _ = try await store.create(token: "taken", items: [], ttl: .seconds(2))
        _ = try await store.acquire(token: "taken", owner: alice)

        clock.advance(by: .milliseconds(1999))
        #expect(Set(try await store.pending().map(\.token)) == ["short", "long"])
        clock.advance(by: .milliseconds(1))
        #expect(try await store.pending().map(\.token) == ["long"])
        #expect(try await store.append([("short", [bytes("a")])], maxBuffered: 10) == AppendResult(sequence: 1))
        #expect(try await store.acquire(token: "short", owner: alice) == .notFound)
        #expect(try await store.acquire(token: "taken", owner: bob) == .alreadyAcquired)
        // An expired token is gone: its name may be created again.
        #expect(try await store.create(token: "short", items: bytes("new"), ttl: .seconds(2)))
        #expect(store.count == 3)
    }

    @Test("a buffer that would pass the limit drops its token")
    func overflow() async throws {
        let store = InMemorySubscriptionStore()
        _ = try await store.create(token: "t", items: [], ttl: .seconds(60))
        _ = try await store.create(token: "u", items: [], ttl: .seconds(60))
        #expect(try await store.append([("t", [bytes("1"), bytes("2")])], maxBuffered: 2) == AppendResult(buffered: ["t"], sequence: 1))
        #expect(try await store.append([("t", [bytes("3")]), ("u", [bytes("1")])], maxBuffered: 2) == AppendResult(buffered: ["u"], overflowed: ["t"], sequence: 2))
        #expect(try await store.acquire(token: "t", owner: alice) == .notFound)
        #expect(try await store.pending().map(\.token) == ["u"])
    }

    @Test("release takes only the owner's acquired tokens; a dead node's tokens go together")
    func releaseAndReap() async throws {
        let store = InMemorySubscriptionStore()
        let alice2 = ClientAddress(nodeID: "A", clientID: 2)
        for token in ["a1", "a2", "b1", "p"] { _ = try await store.create(token: token, items: [], ttl: .seconds(60)) }
        _ = try await store.acquire(token: "a1", owner: alice)
        _ = try await store.acquire(token: "a2", owner: alice2)
        _ = try await store.acquire(token: "b1", owner: bob)

        #expect(try await store.release(tokens: ["a1", "b1", "p", "zz"], owner: alice) == ["a1"])
        #expect(try await store.release(tokens: ["a1"], owner: alice) == [])
        #expect(try await store.removeAll(ownedByNode: "A") == ["a2"])
        #expect(try await store.removeAll(ownedByNode: "A") == [])
        #expect(try await store.acquire(token: "b1", owner: alice) == .alreadyAcquired)
        #expect(store.count == 2)  // b1 and the pending p
    }

    @Test("concurrent acquires of one token have exactly one winner")
    func concurrentAcquires() async throws {
        let store = InMemorySubscriptionStore()
        _ = try await store.create(token: "t", items: [], ttl: .seconds(60))
        let winners = try await withThrowingTaskGroup(of: Bool.self) { group in
            for client in 0..<50 {
                group.addTask {
                    try await store.acquire(token: "t", owner: ClientAddress(nodeID: "N", clientID: UInt64(client))) != .alreadyAcquired
                }
            }
            return try await group.reduce(0) { $0 + ($1 ? 1 : 0) }
        }
        #expect(winners == 1)
    }
}
