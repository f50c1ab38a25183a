import Logging
import NIOCore
import Snorky
import SnorkyProtocol
import Synchronization
import Testing

@testable import SnorkyServices

// MARK: - Fixtures (shared by the DataSync*Tests files)

/// A store that is down: every call fails as Redis would.
final class DataSyncUnavailableStore: SubscriptionStore {
    private var down: BusError { .unavailable("test: store is down") }
    func create(token: String, items: [UInt8], ttl: Duration) async throws(BusError) -> Bool { throw down }
    func pending() async throws(BusError) -> [PendingSubscription] { throw down }
    func append(_ entries: [(token: String, entries: [[UInt8]])], maxBuffered: Int) async throws(BusError) -> AppendResult { throw down }
    func acquire(token: String, owner: ClientAddress) async throws(BusError) -> SubscriptionAcquisition { throw down }
    func release(tokens: [String], owner: ClientAddress) async throws(BusError) -> [String] { throw down }
    func removeAll(ownedByNode nodeID: String) async throws(BusError) -> [String] { throw down }
}

enum DataSyncFixtures {
    /// The dealers every test node has.
    static func dealers() -> [any Dealer] {
        [
            BroadcastDealer(name: "all_players", model: "Player"),
            SimpleDealer(name: "players_by_color", model: "Player", key: "color"),
            SimpleDealer(name: "players_by_team", model: "Player", key: "team.name"),
            FilterDealer(name: "player_filter", model: "Player"),
            BroadcastDealer(name: "all_cars", model: "Car"),
        ]
    }

    static func player(_ id: Int, _ color: String, score: Int = 0) -> JSON {
        ["id": .int(Int64(id)), "color": .string(color), "score": .int(Int64(score))]
    }

    static func insert(_ row: JSON, model: String = "Player") -> JSON { ["type": "insert", "model": .string(model), "data": row] }
    static func delete(_ row: JSON, model: String = "Player") -> JSON { ["type": "delete", "model": .string(model), "data": row] }
    static func update(_ new: JSON, from old: JSON) -> JSON {
        ["type": "update", "model": "Player", "newData": new, "oldData": old]
    }
}

/// A connection to a test node, driven through a `RecordingTransport`.
struct DataSyncTestClient: Sendable {
    let client: Client
    let transport: RecordingTransport
    let disconnects: DisconnectWaiter

    func send(_ command: String, _ params: JSON, callId: Int = 1) {
        let message: JSON = ["command": .string(command), "params": params, "callId": .int(Int64(callId))]
        client.didReceive(text: ByteBuffer(string: Envelope(service: "datasync", message: message).json.encodedString()))
    }

    /// The `message` of the next frame, which must come from `datasync`.
    func next(timeout: Duration = .seconds(15)) async throws -> JSON {
        let frame = try await transport.next(timeout: timeout)
        #expect(frame["service"] == "datasync")
        return try #require(frame["message"])
    }

    /// Sends a command and returns its reply, failing on any frame before it.
    func call(_ command: String, _ params: JSON) async throws -> JSON {
        send(command, params)
        let reply = try await next()
        #expect(reply["type"] == "response" || reply["type"] == "error", "expected a reply, got \(reply)")
        return reply
    }

    /// Acquires `token`, expecting success; returns the deltas that came before the response.
    func acquire(_ token: String) async throws -> [JSON] {
        send("acquireSubscription", ["token": .string(token)])
        var deltas: [JSON] = []
        while true {
            let message = try await next()
            switch message["type"] {
            case "delta": deltas.append(try #require(message["delta"]))
            case "response": return deltas
            default:
                Issue.record("acquire failed: \(message)")
                return deltas
            }
        }
    }

    /// The next `n` deltas.
    func deltas(_ count: Int) async throws -> [JSON] {
        var deltas: [JSON] = []
        for _ in 0..<count {
            let message = try await next()
            #expect(message["type"] == "delta", "expected a delta, got \(message)")
            deltas.append(message["delta"] ?? nil)
        }
        return deltas
    }

    func expectNothing(for duration: Duration = .milliseconds(50)) async throws {
        try await transport.expectNothing(for: duration)
    }

    /// Closes the connection and waits until every service has cleaned up after it.
    func disconnect() async {
        client.didDisconnect()
        await disconnects.wait(for: client)
    }
}

func expectError(_ reply: JSON, _ message: String, sourceLocation: SourceLocation = #_sourceLocation) {
    #expect(reply["type"] == "error", "expected \(message), got \(reply)", sourceLocation: sourceLocation)
    #expect(reply["message"] == .string(message), sourceLocation: sourceLocation)
}

func expectSuccess(_ reply: JSON, sourceLocation: SourceLocation = #_sourceLocation) {
    #expect(reply["type"] == "response", "expected success, got \(reply)", sourceLocation: sourceLocation)
}

/// One worker with `datasync` and `datasync_backend`.
struct DataSyncTestNode: Sendable {
    let node: Node
    let frontend: DataSyncService
    let backend: DataSyncBackendService
    let disconnects: DisconnectWaiter

    func connect() -> DataSyncTestClient {
        let (client, transport) = RecordingTransport.connect(to: node)
        return DataSyncTestClient(client: client, transport: transport, disconnects: disconnects)
    }

    /// Calls the backend service as the backend API does (a fresh, never connected client
    /// per request) and returns the reply's `message`.
    func backendCall(_ command: String, _ params: JSON) async throws -> JSON {
        let transport = RecordingTransport()
        let client = node.makeClient(transport: transport)
        await backend.handle(message: ["command": .string(command), "params": params, "callId": 1], from: client)
        let frame = try await transport.next()
        #expect(frame["service"] == "datasync_backend")
        return try #require(frame["message"])
    }

    func authorize(_ items: JSON) async throws -> String {
        let reply = try await backendCall("authorizeSubscription", ["items": items])
        guard case .string(let token)? = reply["data"] else {
            Issue.record("authorize failed: \(reply)")
            throw RecordingTransport.UnexpectedFrame(payload: "\(reply)")
        }
        return token
    }

    func publish(_ deltas: JSON) async throws {
        expectSuccess(try await backendCall("publishDeltas", ["deltas": deltas]))
    }
}

/// Nodes sharing one bus and one subscription store, as workers share Redis.
struct DataSyncTestCluster: Sendable {
    let nodes: [DataSyncTestNode]
    let store: any SubscriptionStore

    var a: DataSyncTestNode { nodes[0] }
    var b: DataSyncTestNode { nodes[1] }

    static func with(
        nodes count: Int = 1,
        store: any SubscriptionStore = InMemorySubscriptionStore(),
        configure: (_ index: Int, inout DataSyncOptions) -> Void = { _, _ in },
        _ body: (DataSyncTestCluster) async throws -> Void
    ) async throws {
        let bus = SharedMemoryBus()
        var nodes: [DataSyncTestNode] = []
        for index in 0..<count {
            let id = String(UnicodeScalar(UInt8(ascii: "A") + UInt8(index)))
            let node = Node(
                id: id, bus: bus.attach(),
                logger: Logger(label: "DataSyncTests.\(id)", factory: { _ in SwiftLogNoOpLogHandler() }))
            var options = DataSyncOptions()
            for dealer in DataSyncFixtures.dealers() { try options.add(dealer) }
            options.store = store
            configure(index, &options)
            let frontend = DataSyncService(node: node, options: options)
            let backend = DataSyncBackendService(frontend: frontend)
            node.register(frontend)
            node.registerBackend(backend)
            let disconnects = DisconnectWaiter()
            node.register(disconnects)
            try await node.start()
            nodes.append(DataSyncTestNode(node: node, frontend: frontend, backend: backend, disconnects: disconnects))
        }
        let cluster = DataSyncTestCluster(nodes: nodes, store: store)
        do {
            try await body(cluster)
        } catch {
            for node in nodes { await node.node.shutdown() }
            throw error
        }
        for node in nodes { await node.node.shutdown() }
    }
}

// MARK: - Tests

private typealias F = DataSyncFixtures

@Suite("DataSync service")
struct DataSyncServiceTests {
    @Test("authorize answers a fresh 32-character [a-z0-9] token")
    func tokenFormat() async throws {
        try await DataSyncTestCluster.with { cluster in
            var tokens: Set<String> = []
            for _ in 0..<50 {
                let token = try await cluster.a.authorize([["dealer": "all_players", "query": nil]])
                #expect(token.utf8.count == 32)
                #expect(token.utf8.allSatisfy { (UInt8(ascii: "a")...UInt8(ascii: "z")).contains($0) || (UInt8(ascii: "0")...UInt8(ascii: "9")).contains($0) })
                tokens.insert(token)
            }
            #expect(tokens.count == 50)
            #expect(try await cluster.a.authorize([]).utf8.count == 32)  // no items: a valid, quiet subscription
        }
    }

    @Test(
        "a refused item fails authorize and creates no token",
        arguments: [
            ([["query": 1]] as JSON, "Missing field 'dealer'"),
            ([["dealer": "all_players"]], "Missing field 'query'"),
            ([[:]], "Missing field 'dealer'"),
            ([["dealer": 5, "query": 1]], "dealer should be a dealer name"),
            ([["dealer": nil, "query": 1]], "dealer should be a dealer name"),
            ([["dealer": "nobody", "query": 1]], "No such dealer"),
            ([["dealer": "player_filter", "query": ["~=", "color", "blue"]]], "Invalid query"),
            ([["dealer": "player_filter", "query": "color == blue"]], "Invalid query"),
            ([["dealer": "all_players", "query": nil], ["dealer": "player_filter", "query": ["not"]]], "Invalid query"),
            ([["dealer": "all_players", "query": nil], ["dealer": "nobody", "query": nil]], "No such dealer"),
            ([["dealer": "all_players", "query": nil], 42], "Invalid params"),
        ] as [(JSON, String)])
    func authorizeErrors(items: JSON, message: String) async throws {
        let store = InMemorySubscriptionStore()
        try await DataSyncTestCluster.with(store: store) { cluster in
            expectError(try await cluster.a.backendCall("authorizeSubscription", ["items": items]), message)
            #expect(store.count == 0)
        }
    }

    @Test("authorize and publish bind their params by name")
    func backendParams() async throws {
        try await DataSyncTestCluster.with { cluster in
            expectError(try await cluster.a.backendCall("authorizeSubscription", ["items": ["dealer": "all_players"]]), "Invalid params")
            expectError(try await cluster.a.backendCall("authorizeSubscription", [:]), "Invalid params")
            expectError(try await cluster.a.backendCall("publishDeltas", ["deltas": F.insert(F.player(1, "blue"))]), "Invalid params")
            expectError(try await cluster.a.backendCall("publishDeltas", ["deltas": [], "extra": 1]), "Invalid params")
            expectError(try await cluster.a.backendCall("acquireSubscription", ["token": "x"]), "Unknown command")
            // An empty batch, and a batch nobody listens to, succeed.
            try await cluster.a.publish([])
            try await cluster.a.publish([F.insert(F.player(1, "blue"))])
        }
    }

    @Test("acquire refuses a token that is not a string, unknown, or already acquired")
    func acquireErrors() async throws {
        try await DataSyncTestCluster.with { cluster in
            let alice = cluster.a.connect()
            let bob = cluster.a.connect()
            expectError(try await alice.call("acquireSubscription", ["token": 42]), "token must be string")
            expectError(try await alice.call("acquireSubscription", ["token": nil]), "token must be string")
            expectError(try await alice.call("acquireSubscription", ["token": .string(String(repeating: "a", count: 32))]), "No such subscription")
            expectError(try await alice.call("acquireSubscription", ["token": "NOT-A-TOKEN"]), "No such subscription")
            expectError(try await alice.call("acquireSubscription", [:]), "Invalid params")

            let token = try await cluster.a.authorize([["dealer": "all_players", "query": nil]])
            #expect(try await alice.acquire(token) == [])
            expectError(try await alice.call("acquireSubscription", ["token": .string(token)]), "Subscription already acquired")
            expectError(try await bob.call("acquireSubscription", ["token": .string(token)]), "Subscription already acquired")
            #expect(cluster.a.frontend.localSubscriptionCount == 1)
        }
    }

    @Test("deltas published before the acquire are buffered and delivered, in order, before its response")
    func bufferedBeforeResponse() async throws {
        try await DataSyncTestCluster.with { cluster in
            let token = try await cluster.a.authorize([["dealer": "players_by_color", "query": "blue"]])
            let blue = F.player(1, "blue")
            let green = F.player(1, "green")
            try await cluster.a.publish([F.insert(blue), F.insert(F.player(2, "red"))])
            try await cluster.a.publish([F.update(green, from: blue)])  // leaves the subscription: a delete
            try await cluster.a.publish([F.update(blue, from: green), F.insert(F.player(3, "blue"), model: "Car")])

            let client = cluster.a.connect()
            let deltas = try await client.acquire(token)
            #expect(deltas == [
                F.insert(blue),
                ["type": "delete", "model": "Player", "data": blue],
                ["type": "insert", "model": "Player", "data": blue],
            ])
            // Then live deltas, and the buffer is not delivered twice.
            try await cluster.a.publish([F.delete(blue)])
            #expect(try await client.deltas(1) == [F.delete(blue)])
            try await client.expectNothing()
        }
    }

    @Test("an update reaches each subscription as insert, update or delete, by what it matches")
    func updateSplitting() async throws {
        try await DataSyncTestCluster.with { cluster in
            let blueFan = cluster.a.connect()
            let greenFan = cluster.a.connect()
            let everyone = cluster.a.connect()
            let highScores = cluster.a.connect()
            #expect(try await blueFan.acquire(try await cluster.a.authorize([["dealer": "players_by_color", "query": "blue"]])) == [])
            #expect(try await greenFan.acquire(try await cluster.a.authorize([["dealer": "players_by_color", "query": "green"]])) == [])
            #expect(try await everyone.acquire(try await cluster.a.authorize([["dealer": "all_players", "query": nil]])) == [])
            #expect(try await highScores.acquire(try await cluster.a.authorize([["dealer": "player_filter", "query": [">=", "score", 100]]])) == [])

            let old = F.player(1, "blue", score: 10)
            let new = F.player(1, "green", score: 20)
            try await cluster.a.publish([F.update(new, from: old)])
            #expect(try await blueFan.deltas(1) == [["type": "delete", "model": "Player", "data": old]])
            #expect(try await greenFan.deltas(1) == [["type": "insert", "model": "Player", "data": new]])
            #expect(try await everyone.deltas(1) == [F.update(new, from: old)])
            try await highScores.expectNothing()
            for client in [blueFan, greenFan, everyone] { try await client.expectNothing(for: .zero) }
        }
    }

    @Test("a subscription receives a delta once even when several of its items match")
    func atMostOncePerSubscription() async throws {
        try await DataSyncTestCluster.with { cluster in
            let token = try await cluster.a.authorize([
                ["dealer": "all_players", "query": nil],
                ["dealer": "players_by_color", "query": "blue"],
                ["dealer": "player_filter", "query": ["==", "color", "blue"]],
                ["dealer": "players_by_team", "query": "red"],
            ])
            let blue: JSON = ["id": 1, "color": "blue", "team": ["name": "red"]]
            try await cluster.a.publish([F.insert(blue)])  // buffered once
            let client = cluster.a.connect()
            #expect(try await client.acquire(token) == [F.insert(blue)])
            try await cluster.a.publish([F.update(blue, from: F.player(1, "green")), F.delete(blue)])
            #expect(try await client.deltas(2) == [F.update(blue, from: F.player(1, "green")), F.delete(blue)])
            try await client.expectNothing()
        }
    }

    @Test("queries match by JSON value: 1 equals 1.0 and object key order does not matter")
    func jsonEquality() async throws {
        try await DataSyncTestCluster.with { cluster in
            let client = cluster.a.connect()
            let token = try await cluster.a.authorize([
                ["dealer": "players_by_color", "query": ["r": 1, "g": 0.5]], ["dealer": "players_by_team", "query": 2.0],
            ])
            #expect(try await client.acquire(token) == [])
            let byColor: JSON = ["id": 1, "color": ["g": 0.5, "r": 1.0]]
            let byTeam: JSON = ["id": 2, "team": ["name": 2]]
            try await cluster.a.publish([F.insert(byColor), F.insert(byTeam), F.insert(["id": 3, "color": ["r": 1]])])
            #expect(try await client.deltas(2) == [F.insert(byColor), F.insert(byTeam)])
            try await client.expectNothing()
        }
    }

    @Test("in-process publishing with the Swift API: deltas of a model without a dealer reach nobody")
    func swiftAPI() async throws {
        try await DataSyncTestCluster.with { cluster in
            let client = cluster.a.connect()
            #expect(try await client.acquire(try await cluster.a.authorize([["dealer": "all_cars", "query": nil]])) == [])
            try await cluster.a.frontend.publish([
                .insert(model: "Boat", data: [:]), .update(model: "Car", newData: ["id": 1], oldData: ["id": 0]),
            ])
            #expect(try await client.deltas(1) == [["type": "update", "model": "Car", "newData": ["id": 1], "oldData": ["id": 0]]])
        }
    }

    @Test("the built-in registration adds datasync and datasync_backend with the given options")
    func builtinRegistration() async throws {
        let node = Node(id: "N", bus: InMemoryBus(), logger: Logger(label: "x", factory: { _ in SwiftLogNoOpLogHandler() }))
        var options = BuiltinServiceOptions()
        try options.dataSync.add(BroadcastDealer(name: "everything", model: "Thing"))
        options.dataSync.subscriptionTTL = .seconds(3)
        BuiltinServices.register(on: node, options: options)
        let frontend = try #require(node.service(named: "datasync") as? DataSyncService)
        #expect(node.backendService(named: "datasync_backend") is DataSyncBackendService)
        #expect(node.service(named: "datasync_backend") == nil)  // never reachable from browsers
        #expect(frontend.dealers["everything"]?.model == "Thing")
        #expect(frontend.topic == "datasync:deltas")
    }

    @Test(
        "a batch with one bad delta delivers nothing",
        arguments: [
            (["type": "insert", "model": 7, "data": [:]] as JSON, "model must be string"),
            (["type": "replace", "model": "Player", "data": [:]], "Invalid delta type"),
            (["type": "update", "model": "Player", "newData": [:]], "Missing field"),
            (["type": "insert", "data": [:]], "Missing field"),
            (["type": "insert", "model": "Boat", "data": [:]], "No dealer for model"),
            ([1, 2], "Invalid params"),
        ] as [(JSON, String)])
    func batchValidation(bad: JSON, message: String) async throws {
        try await DataSyncTestCluster.with { cluster in
            let pendingToken = try await cluster.a.authorize([["dealer": "all_players", "query": nil]])
            let live = cluster.a.connect()
            #expect(try await live.acquire(try await cluster.a.authorize([["dealer": "all_players", "query": nil]])) == [])

            let reply = try await cluster.a.backendCall("publishDeltas", ["deltas": [F.insert(F.player(1, "blue")), bad]])
            expectError(reply, message)
            try await live.expectNothing()
            #expect(try await cluster.a.connect().acquire(pendingToken) == [])  // nothing was buffered either
        }
    }

    @Test("cancel stops the deltas; only the owner may cancel, once")
    func cancel() async throws {
        try await DataSyncTestCluster.with { cluster in
            let alice = cluster.a.connect()
            let bob = cluster.a.connect()
            let token = try await cluster.a.authorize([["dealer": "all_players", "query": nil]])
            let pending = try await cluster.a.authorize([["dealer": "all_players", "query": nil]])
            #expect(try await alice.acquire(token) == [])

            expectError(try await alice.call("cancelSubscription", ["token": 1]), "token must be string")
            expectError(try await bob.call("cancelSubscription", ["token": .string(token)]), "No such subscription")
            expectError(try await alice.call("cancelSubscription", ["token": .string(pending)]), "No such subscription")
            expectSuccess(try await alice.call("cancelSubscription", ["token": .string(token)]))
            expectError(try await alice.call("cancelSubscription", ["token": .string(token)]), "No such subscription")

            try await cluster.a.publish([F.insert(F.player(1, "blue"))])
            try await alice.expectNothing()
            #expect(cluster.a.frontend.localSubscriptionCount == 0)
            // A cancelled token is gone for good.
            expectError(try await bob.call("acquireSubscription", ["token": .string(token)]), "No such subscription")
        }
    }

    @Test("disconnect cancels every subscription of the connection")
    func disconnectCancels() async throws {
        let store = InMemorySubscriptionStore()
        try await DataSyncTestCluster.with(store: store) { cluster in
            let alice = cluster.a.connect()
            let bob = cluster.a.connect()
            let first = try await cluster.a.authorize([["dealer": "all_players", "query": nil]])
            let second = try await cluster.a.authorize([["dealer": "all_cars", "query": nil]])
            let bobs = try await cluster.a.authorize([["dealer": "all_cars", "query": nil]])
            #expect(try await alice.acquire(first) == [])
            #expect(try await alice.acquire(second) == [])
            #expect(try await bob.acquire(bobs) == [])
            #expect(store.count == 3)

            await alice.disconnect()
            #expect(store.count == 1)
            #expect(cluster.a.frontend.localSubscriptionCount == 1)
            expectError(try await bob.call("acquireSubscription", ["token": .string(first)]), "No such subscription")
            try await cluster.a.publish([F.insert(["id": 1], model: "Car")])
            #expect(try await bob.deltas(1) == [F.insert(["id": 1], model: "Car")])
        }
    }

    @Test("an unacquired token expires after 120 s by default, or the configured TTL")
    func expiry() async throws {
        let clock = DataSyncManualClock()
        let store = InMemorySubscriptionStore(now: { clock.now })
        try await DataSyncTestCluster.with(nodes: 2, store: store, configure: { index, options in
            if index == 1 { options.subscriptionTTL = .seconds(5) }
        }) { cluster in
            let client = cluster.a.connect()
            let item: JSON = [["dealer": "all_players", "query": nil]]
            let keptDefault = try await cluster.a.authorize(item)
            let lostDefault = try await cluster.a.authorize(item)
            let keptShort = try await cluster.b.authorize(item)
            let lostShort = try await cluster.b.authorize(item)

            clock.advance(by: .milliseconds(4999))
            #expect(try await client.acquire(keptShort) == [])
            clock.advance(by: .milliseconds(1))
            expectError(try await client.call("acquireSubscription", ["token": .string(lostShort)]), "No such subscription")

            clock.advance(by: .seconds(115) - .milliseconds(1))
            #expect(try await client.acquire(keptDefault) == [])
            clock.advance(by: .milliseconds(1))
            try await cluster.a.publish([F.insert(F.player(1, "blue"))])  // an expired token buffers nothing
            #expect(try await client.deltas(2).count == 2)
            expectError(try await client.call("acquireSubscription", ["token": .string(lostDefault)]), "No such subscription")
        }
    }

    @Test("a pending token whose buffer overflows is dropped")
    func bufferOverflow() async throws {
        try await DataSyncTestCluster.with(configure: { _, options in options.maxBufferedDeltas = 2 }) { cluster in
            let full = try await cluster.a.authorize([["dealer": "all_players", "query": nil]])
            let quiet = try await cluster.a.authorize([["dealer": "all_cars", "query": nil]])
            try await cluster.a.publish([F.insert(F.player(1, "a")), F.insert(F.player(2, "b"))])
            try await cluster.a.publish([F.insert(F.player(3, "c"))])
            let client = cluster.a.connect()
            expectError(try await client.call("acquireSubscription", ["token": .string(full)]), "No such subscription")
            #expect(try await client.acquire(quiet) == [])
        }
    }

    @Test("a store that cannot be reached answers Service unavailable")
    func storeDown() async throws {
        try await DataSyncTestCluster.with(store: DataSyncUnavailableStore()) { cluster in
            expectError(
                try await cluster.a.backendCall("authorizeSubscription", ["items": [["dealer": "all_players", "query": nil]]]),
                "Service unavailable")
            expectError(try await cluster.a.backendCall("publishDeltas", ["deltas": [F.insert(F.player(1, "b"))]]), "Service unavailable")
            let client = cluster.a.connect()
            expectError(
                try await client.call("acquireSubscription", ["token": .string(String(repeating: "0", count: 32))]),
                "Service unavailable")
            // Validation still comes first.
            expectError(try await cluster.a.backendCall("publishDeltas", ["deltas": [F.insert(F.player(1, "b"), model: "Boat")]]), "No dealer for model")
        }
    }
}
