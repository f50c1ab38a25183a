import Logging
import NIOCore
import NIOPosix
import Snorky
import SnorkyProtocol
import Synchronization
import Testing

@testable import SnorkyServices

private typealias F = DataSyncFixtures

/// Widens the windows of the acquire race: acquire pauses before and after the atomic
/// step, and append pauses after it (a publisher slow between its append and its bus
/// broadcast), so publications land in every gap.
private final class SlowStore: SubscriptionStore {
    let inner = InMemorySubscriptionStore()

    private func pause() async { try? await Task.sleep(for: .milliseconds(2)) }

    func create(token: String, items: [UInt8], ttl: Duration) async throws(BusError) -> Bool {
        try await inner.create(token: token, items: items, ttl: ttl)
    }
    func pending() async throws(BusError) -> [PendingSubscription] { try await inner.pending() }
    func append(_ entries: [(token: String, entries: [[UInt8]])], maxBuffered: Int) async throws(BusError) -> AppendResult {
        let result = try await inner.append(entries, maxBuffered: maxBuffered)
        await pause()
        return result
    }
    func acquire(token: String, owner: ClientAddress) async throws(BusError) -> SubscriptionAcquisition {
        await pause()
        let result = try await inner.acquire(token: token, owner: owner)
        await pause()
        return result
    }
    func release(tokens: [String], owner: ClientAddress) async throws(BusError) -> [String] {
        try await inner.release(tokens: tokens, owner: owner)
    }
    func removeAll(ownedByNode nodeID: String) async throws(BusError) -> [String] { try await inner.removeAll(ownedByNode: nodeID) }
}

@Suite("DataSync across nodes")
struct DataSyncClusterTests {
    @Test("authorized on one node, acquired on another, deltas published on either reach it")
    func twoNodes() async throws {
        try await DataSyncTestCluster.with(nodes: 2) { cluster in
            let token = try await cluster.a.authorize([["dealer": "players_by_color", "query": "blue"]])
            try await cluster.b.publish([F.insert(F.player(1, "blue"))])  // buffered, published on B
            let onB = cluster.b.connect()
            #expect(try await onB.acquire(token) == [F.insert(F.player(1, "blue"))])
            let onA = cluster.a.connect()
            #expect(try await onA.acquire(try await cluster.b.authorize([["dealer": "all_players", "query": nil]])) == [])

            try await cluster.a.publish([F.insert(F.player(2, "blue"))])
            try await cluster.b.publish([F.delete(F.player(1, "blue")), F.insert(F.player(3, "red"))])
            #expect(try await onB.deltas(2) == [F.insert(F.player(2, "blue")), F.delete(F.player(1, "blue"))])
            #expect(try await onA.deltas(3) == [
                F.insert(F.player(2, "blue")), F.delete(F.player(1, "blue")), F.insert(F.player(3, "red")),
            ])
            try await onB.expectNothing()
            try await onA.expectNothing(for: .zero)
            #expect(cluster.a.frontend.localSubscriptionCount == 1)
            #expect(cluster.b.frontend.localSubscriptionCount == 1)
            // Tokens are cluster-wide: the one B delivers cannot be taken on A.
            expectError(try await onA.call("acquireSubscription", ["token": .string(token)]), "Subscription already acquired")
        }
    }

    @Test(
        "deltas published while an acquire is in flight arrive exactly once, in order",
        arguments: [(1, false), (2, false), (1, true), (2, true)])
    func acquireRace(nodes: Int, filtered: Bool) async throws {
        let store = SlowStore()
        try await DataSyncTestCluster.with(nodes: nodes, store: store) { cluster in
            let publisher = cluster.a
            let acquirer = cluster.nodes[nodes - 1]
            // Filtered: the publisher alternates colors and the subscription wants the even ones.
            let item: JSON = filtered ? ["dealer": "players_by_color", "query": "even"] : ["dealer": "all_players", "query": nil]
            for _ in 0..<10 {
                let token = try await publisher.authorize([item])
                let client = acquirer.connect()
                let stop = Mutex(false)
                let publishing = Task {
                    var sequence = 0
                    // Keeps publishing until the acquire answered, so publications surround it.
                    while !stop.withLock({ $0 }) {
                        let color: JSON = sequence % 2 == 0 ? "even" : "odd"
                        try await publisher.publish([F.insert(["seq": .int(Int64(sequence)), "color": color])])
                        sequence += 1
                        try await Task.sleep(for: .microseconds(300))
                    }
                    return sequence
                }
                try await Task.sleep(for: .milliseconds(1))
                client.send("acquireSubscription", ["token": .string(token)])
                var received: [Int64] = []
                var answered = false
                while !answered {
                    let message = try await client.next()
                    if message["type"] == "delta" {
                        received.append(try #require(message["delta"]?["data"]?["seq"]?.int64Value))
                    } else {
                        expectSuccess(message)
                        answered = true
                    }
                }
                stop.withLock { $0 = true }
                let published = try await publishing.value
                let expected = (0..<Int64(published)).filter { !filtered || $0 % 2 == 0 }
                while received.count < expected.count {
                    received.append(try #require(try await client.next()["delta"]?["data"]?["seq"]?.int64Value))
                }
                #expect(received == expected)
                try await client.expectNothing(for: .milliseconds(10))
                await client.disconnect()
            }
        }
    }

    /// The bus may bring a batch late: one appended before the subscription existed must
    /// not reach it, whether it arrives while the acquire is in flight or after; one
    /// appended after the acquire arrives once, however early.
    @Test("batches appended before the acquire never arrive from the bus; later ones arrive once")
    func batchesAreOrderedByTheAppendSequence() async throws {
        let node = Node(id: "N", bus: InMemoryBus(), logger: Logger(label: "x", factory: { _ in SwiftLogNoOpLogHandler() }))
        let local = DataSyncLocalSubscriptions(service: "datasync")
        let (client, transport) = RecordingTransport.connect(to: node)
        let everyPlayer = [CompiledItem(model: "Player", matcher: .everyRow)]
        func batch(_ sequence: UInt64, _ id: Int) throws -> DeltaBatch {
            DeltaBatch(sequence: sequence, deltas: [try DataSyncDelta(validating: F.insert(F.player(id, "blue")))])
        }

        let acquisition = local.beginAcquisition()
        local.receive(try batch(1, 1))  // appended before the token existed, delivered late
        local.receive(try batch(4, 4))  // appended after the acquire
        // The acquire happened when appends had reached 3; the buffer holds batch 2's delta.
        local.activate(
            acquisition, token: "t", client: client, items: everyPlayer,
            buffered: [try DataSyncDelta(validating: F.insert(F.player(2, "blue")))], acquiredAt: 3)
        local.receive(try batch(3, 3))  // before the acquire, arriving after it: not ours
        local.receive(try batch(5, 5))

        var received: [Int64] = []
        for _ in 0..<3 {
            received.append(try #require(try await transport.next()["message"]?["delta"]?["data"]?["id"]?.int64Value))
        }
        #expect(received == [2, 4, 5])
        try await transport.expectNothing(for: .milliseconds(20))
    }

    @Test("a dead node's subscriptions are dropped from the store by the survivor")
    func reaping() async throws {
        let store = InMemorySubscriptionStore()
        try await DataSyncTestCluster.with(nodes: 2, store: store) { cluster in
            let onA = cluster.a.connect()
            let onB = cluster.b.connect()
            #expect(try await onA.acquire(try await cluster.a.authorize([["dealer": "all_players", "query": nil]])) == [])
            #expect(try await onB.acquire(try await cluster.a.authorize([["dealer": "all_players", "query": nil]])) == [])
            _ = try await cluster.a.authorize([["dealer": "all_players", "query": nil]])  // pending: no owner
            #expect(store.count == 3)

            var reaped = ReapedState()
            reaped.nodes = ["B"]
            await cluster.a.frontend.stateReaped(reaped)
            #expect(store.count == 2)
            try await cluster.a.publish([F.insert(F.player(1, "blue"))])
            #expect(try await onA.deltas(1) == [F.insert(F.player(1, "blue"))])
        }
    }

    @Test("an item whose dealer the acquiring node lacks matches nothing there; the others still work")
    func unknownDealerOnAcquiringNode() async throws {
        let store = InMemorySubscriptionStore()
        try await DataSyncTestCluster.with(nodes: 2, store: store, configure: { index, options in
            guard index == 1 else { return }
            options = DataSyncOptions()
            try? options.add(BroadcastDealer(name: "all_cars", model: "Car"))
            try? options.add(BroadcastDealer(name: "all_players", model: "Player"))
            options.store = store
        }) { cluster in
            let token = try await cluster.a.authorize([
                ["dealer": "players_by_color", "query": "blue"], ["dealer": "all_cars", "query": nil],
            ])
            let client = cluster.b.connect()
            #expect(try await client.acquire(token) == [])
            try await cluster.a.publish([F.insert(F.player(1, "blue")), F.insert(["id": 9], model: "Car")])
            #expect(try await client.deltas(1) == [F.insert(["id": 9], model: "Car")])
            try await client.expectNothing()
        }
    }

    @Test("a topic listener gets the topic's publications in order, subscribes once, and stops")
    func topicListener() async throws {
        let bus = SharedMemoryBus()
        let endpoint = bus.attach()
        let node = Node(id: "L", bus: endpoint, logger: Logger(label: "listener", factory: { _ in SwiftLogNoOpLogHandler() }))
        try await node.start()
        let (stream, continuation) = AsyncStream.makeStream(of: String.self)
        let listener = TopicListener(node: node, topic: "t") { continuation.yield(String(decoding: $0, as: UTF8.self)) }
        let loop = MultiThreadedEventLoopGroup.singleton.next()
        await listener.start(on: loop)
        await listener.start(on: loop)
        #expect(endpoint.references(of: "t") == 1)
        for index in 0..<20 { try await node.publish(topic: "t", envelope: Array("m\(index)".utf8)) }
        try await node.publish(topic: "other", envelope: Array("x".utf8))
        var iterator = stream.makeAsyncIterator()
        for index in 0..<20 { #expect(await iterator.next() == "m\(index)") }
        await listener.stop()
        #expect(endpoint.references(of: "t") == 0)
        #expect(!listener.isStarted)
        await node.shutdown()
    }
}
