import Snorky
import SnorkyProtocol
import SnorkyServices
import Testing

/// The `cursors` service (PROTOCOL.md section 5): the cases of the original Snorky's suite
/// (in the a5 protocol: private handles chosen by the client, public handles by the server),
/// the **Fixed** items, and cursors seen across nodes and after a node died.
@Suite("cursors service")
struct CursorsServiceTests {
    /// Alice (desktop and laptop) and Bob in Sheet1, Charlie in Sheet2: the original's cast.
    private struct Cast {
        let alice: ServiceClient
        let laptop: ServiceClient
        let bob: ServiceClient
        let charlie: ServiceClient

        var everyone: [ServiceClient] { [alice, laptop, bob, charlie] }
    }

    private func joinCast(_ cluster: ServiceCluster) async throws -> Cast {
        let cast = Cast(
            alice: cluster.a.connect(identity: "Alice"), laptop: cluster.a.connect(identity: "Alice"),
            bob: cluster.a.connect(identity: "Bob"), charlie: cluster.a.connect(identity: "Charlie"))
        try await join(cast.alice, "Sheet1", cursors: [])
        try await join(cast.laptop, "Sheet1", cursors: [])
        try await join(cast.bob, "Sheet1", cursors: [])
        try await join(cast.charlie, "Sheet2", cursors: [])
        return cast
    }

    private func join(_ client: ServiceClient, _ document: JSON, cursors: [JSON]) async throws {
        #expect(try await client.reply("cursors", "join", ["document": document]) == ["cursors": .array(cursors)])
    }

    private func cursor(
        _ publicHandle: Int64, _ document: JSON = "Sheet1", position: JSON = 12, status: JSON = "focused", owner: String = "Alice"
    ) -> JSON {
        ["publicHandle": .int(publicHandle), "document": document, "position": position, "status": status, "owner": .string(owner)]
    }

    private func create(
        _ client: ServiceClient, _ privateHandle: JSON, _ document: JSON = "Sheet1", position: JSON = 12, status: JSON = "focused"
    ) async throws -> Int64 {
        let data = try await client.reply(
            "cursors", "createCursor", ["privateHandle": privateHandle, "document": document, "position": position, "status": status])
        return try #require(data.int64Value, "publicHandle must be an integer, got \(data)")
    }

    private func added(_ cursor: JSON) -> JSON { ["type": "cursorAdded", "cursor": cursor] }
    private func updated(_ cursor: JSON) -> JSON { ["type": "cursorUpdated", "cursor": cursor] }
    private func removed(_ publicHandle: Int64, _ document: JSON = "Sheet1") -> JSON {
        ["type": "cursorRemoved", "cursor": ["publicHandle": .int(publicHandle), "document": document]]
    }

    /// Alice creates a cursor in Sheet1; Bob and her laptop are told, nobody else.
    private func createAliceCursor(_ cast: Cast, privateHandle: JSON = 1, position: JSON = 12) async throws -> Int64 {
        let handle = try await create(cast.alice, privateHandle, position: position)
        #expect(try await cast.bob.notification("cursors") == added(cursor(handle, position: position)))
        #expect(try await cast.laptop.notification("cursors") == added(cursor(handle, position: position)))
        try await cast.alice.expectIdle()
        try await cast.charlie.expectIdle()
        return handle
    }

    // MARK: Joining

    @Test("joining without an identity is Not authenticated")
    func anonymous() async throws {
        try await ServiceCluster.with { cluster throws in
            let anonymous = cluster.a.connect()
            #expect(try await anonymous.failure("cursors", "join", ["document": "Sheet1"]) == "Not authenticated")
            #expect(try await anonymous.failure("cursors", "createCursor", [
                "privateHandle": 1, "document": "Sheet1", "position": 0, "status": nil,
            ]) == "Not joined")
        }
    }

    @Test("joining an empty document lists no cursors")
    func joinEmpty() async throws {
        try await ServiceCluster.with { cluster throws in
            let cast = try await joinCast(cluster)
            for client in cast.everyone { try await client.expectIdle() }
        }
    }

    @Test("joining twice is Already joined")
    func joinTwice() async throws {
        try await ServiceCluster.with { cluster throws in
            let cast = try await joinCast(cluster)
            #expect(try await cast.alice.failure("cursors", "join", ["document": "Sheet1"]) == "Already joined")
        }
    }

    @Test("joining lists the document's cursors, in creation order")
    func joinWithCursors() async throws {
        try await ServiceCluster.with { cluster throws in
            let cast = try await joinCast(cluster)
            var handles: [Int64] = []
            // More than 9, so text order of the ids would differ.
            for privateHandle in 0..<11 {
                handles.append(try await create(cast.alice, .int(Int64(privateHandle)), position: .int(Int64(privateHandle))))
            }
            let latecomer = cluster.a.connect(identity: "Dave")
            try await join(latecomer, "Sheet1", cursors: handles.enumerated().map { cursor($1, position: .int(Int64($0))) })
            try await join(latecomer, "Sheet2", cursors: [])
        }
    }

    @Test("a document is any JSON value; equal values are the same document")
    func documentsAreJSON() async throws {
        try await ServiceCluster.with { cluster throws in
            let alice = cluster.a.connect(identity: "Alice")
            let bob = cluster.a.connect(identity: "Bob")
            try await join(alice, ["id": 3, "kind": "sheet"], cursors: [])
            try await join(bob, ["kind": "sheet", "id": 3.0], cursors: [])
            let handle = try await create(alice, "mine", ["kind": "sheet", "id": 3], position: ["row": 1, "column": 2])
            #expect(try await bob.notification("cursors")
                == added(cursor(handle, ["kind": "sheet", "id": 3], position: ["row": 1, "column": 2])))
        }
    }

    // MARK: Creating

    @Test("createCursor returns a public handle and announces the cursor to the document's others")
    func createCursor() async throws {
        try await ServiceCluster.with { cluster throws in
            let cast = try await joinCast(cluster)
            let handle = try await createAliceCursor(cast)
            #expect(handle == 1)
        }
    }

    @Test("creating in a document one has not joined is Not joined")
    func createNotJoined() async throws {
        try await ServiceCluster.with { cluster throws in
            let cast = try await joinCast(cluster)
            #expect(try await cast.alice.failure("cursors", "createCursor", [
                "privateHandle": 1, "document": "Sheet2", "position": 0, "status": "focused",
            ]) == "Not joined")
            try await cast.charlie.expectIdle()
        }
    }

    @Test("a private handle in use on the connection is Reused handle")
    func reusedHandle() async throws {
        try await ServiceCluster.with { cluster throws in
            let cast = try await joinCast(cluster)
            let first = try await createAliceCursor(cast, privateHandle: 5)
            #expect(try await cast.alice.failure("cursors", "createCursor", [
                "privateHandle": 5, "document": "Sheet1", "position": 1, "status": "focused",
            ]) == "Reused handle")
            try await cast.bob.expectIdle()
            // Another connection has its own private handles.
            let laptops = try await create(cast.laptop, 5)
            #expect(laptops != first)
            #expect(try await cast.alice.notification("cursors") == added(cursor(laptops)))
            // And a removed cursor's private handle is free again.
            try await cast.alice.reply("cursors", "removeCursor", ["privateHandle": 5])
            let again = try await create(cast.alice, 5)
            #expect(again != first && again != laptops)
        }
    }

    @Test("a connection may have 16 cursors; the 17th is Too many cursors")
    func tooManyCursors() async throws {
        try await ServiceCluster.with { cluster throws in
            let cast = try await joinCast(cluster)
            for privateHandle in 0..<16 {
                _ = try await createAliceCursor(cast, privateHandle: .int(Int64(privateHandle)))
            }
            #expect(try await cast.alice.failure("cursors", "createCursor", [
                "privateHandle": 16, "document": "Sheet1", "position": 16, "status": "focused",
            ]) == "Too many cursors")
            // The limit is per connection and over every document.
            try await join(cast.alice, "Sheet2", cursors: [])
            #expect(try await cast.alice.failure("cursors", "createCursor", [
                "privateHandle": 16, "document": "Sheet2", "position": 16, "status": "focused",
            ]) == "Too many cursors")

            // Alice's laptop can still create cursors.
            let handle = try await create(cast.laptop, 0, position: 17)
            #expect(try await cast.bob.notification("cursors") == added(cursor(handle, position: 17)))
            #expect(try await cast.alice.notification("cursors") == added(cursor(handle, position: 17)))
            try await cast.laptop.expectIdle()
            try await cast.charlie.expectIdle()
        }
    }

    @Test("public handles are unique within a document across connections and nodes")
    func publicHandlesUnique() async throws {
        try await ServiceCluster.with(nodes: 2) { cluster throws in
            let clients = [cluster.a, cluster.b, cluster.a, cluster.b].map { $0.connect(identity: "writer") }
            for client in clients { try await join(client, "Sheet1", cursors: []) }
            // All 64 creations are in flight at once: each connection works through its own
            // queue while the others do, on both nodes.
            for client in clients {
                for privateHandle in 0..<16 {
                    client.send("cursors", "createCursor", [
                        "privateHandle": .int(Int64(privateHandle)), "document": "Sheet1", "position": 0, "status": nil,
                    ], callId: .int(Int64(privateHandle)))
                }
            }
            var handles: [Int64] = []
            for client in clients {
                // Replies come in call order, mixed with the others' 48 cursorAdded.
                var replies: [Int64] = []
                var announced = 0
                while replies.count < 16 || announced < 48 {
                    let message = try #require(try await client.next()["message"])
                    if message["type"] == "cursorAdded" {
                        announced += 1
                    } else {
                        #expect(message["type"] == "response" && message["callId"] == .int(Int64(replies.count)))
                        replies.append(try #require(message["data"]?.int64Value))
                    }
                }
                handles += replies
            }
            #expect(handles.count == 64)
            #expect(Set(handles).count == 64)
            #expect(Set(try await cluster.state.records(group: "\"Sheet1\"", in: "cursors").map(\.id)) == Set(handles.map(String.init)))
        }
    }

    // MARK: Updating

    @Test("updateCursor announces the moved cursor to the document's others")
    func moveCursor() async throws {
        try await ServiceCluster.with { cluster throws in
            let cast = try await joinCast(cluster)
            let handle = try await createAliceCursor(cast)
            #expect(try await cast.alice.reply("cursors", "updateCursor", [
                "privateHandle": 1, "newData": ["position": 13, "status": "writing"],
            ]) == nil)
            let moved = cursor(handle, position: 13, status: "writing")
            #expect(try await cast.bob.notification("cursors") == updated(moved))
            #expect(try await cast.laptop.notification("cursors") == updated(moved))
            try await cast.alice.expectIdle()
            try await cast.charlie.expectIdle()
            try await join(cluster.a.connect(identity: "Dave"), "Sheet1", cursors: [moved])
        }
    }

    @Test("updateCursor applies only position and status, each optional")
    func updateOnlyPositionAndStatus() async throws {
        try await ServiceCluster.with { cluster throws in
            let cast = try await joinCast(cluster)
            let handle = try await createAliceCursor(cast)
            try await cast.alice.reply("cursors", "updateCursor", [
                "privateHandle": 1,
                "newData": ["status": "idle", "owner": "Mallory", "publicHandle": 99, "document": "Sheet2", "color": "red"],
            ])
            #expect(try await cast.bob.notification("cursors") == updated(cursor(handle, status: "idle")))
            try await cast.alice.reply("cursors", "updateCursor", ["privateHandle": 1, "newData": ["position": ["line": 3]]])
            #expect(try await cast.bob.notification("cursors") == updated(cursor(handle, position: ["line": 3], status: "idle")))
            try await cast.charlie.expectIdle()
            #expect(try await cast.alice.failure("cursors", "updateCursor", ["privateHandle": 1, "newData": 5]) == "Invalid params")
        }
    }

    @Test("an update that changes nothing sends nothing (Fixed)")
    func noOpUpdate() async throws {
        try await ServiceCluster.with { cluster throws in
            let cast = try await joinCast(cluster)
            _ = try await createAliceCursor(cast)
            for newData: JSON in [[:], ["position": 12], ["position": 12.0, "status": "focused"], ["color": "red"]] {
                #expect(try await cast.alice.reply("cursors", "updateCursor", ["privateHandle": 1, "newData": newData]) == nil)
            }
            try await cast.bob.expectIdle()
            try await cast.laptop.expectIdle()
        }
    }

    @Test("updating a cursor one does not own is No such cursor")
    func updateUnknown() async throws {
        try await ServiceCluster.with { cluster throws in
            let cast = try await joinCast(cluster)
            #expect(try await cast.alice.failure("cursors", "updateCursor", ["privateHandle": 15, "newData": ["position": 2]]) == "No such cursor")
            // Bob's private handle is not Alice's.
            let bobs = try await create(cast.bob, 7)
            #expect(try await cast.alice.notification("cursors") == added(cursor(bobs, owner: "Bob")))
            #expect(try await cast.alice.failure("cursors", "updateCursor", ["privateHandle": 7, "newData": ["position": 2]]) == "No such cursor")
        }
    }

    // MARK: Removing

    @Test("removeCursor announces the public handle and document to the document's others")
    func removeCursor() async throws {
        try await ServiceCluster.with { cluster throws in
            let cast = try await joinCast(cluster)
            let handle = try await createAliceCursor(cast)
            #expect(try await cast.alice.reply("cursors", "removeCursor", ["privateHandle": 1]) == nil)
            #expect(try await cast.bob.notification("cursors") == removed(handle))
            #expect(try await cast.laptop.notification("cursors") == removed(handle))
            try await cast.alice.expectIdle()
            try await cast.charlie.expectIdle()
            #expect(try await cast.alice.failure("cursors", "removeCursor", ["privateHandle": 1]) == "No such cursor")
            try await join(cluster.a.connect(identity: "Dave"), "Sheet1", cursors: [])
        }
    }

    @Test("removing a cursor one does not own is No such cursor")
    func removeUnknown() async throws {
        try await ServiceCluster.with { cluster throws in
            let alice = cluster.a.connect(identity: "Alice")
            #expect(try await alice.failure("cursors", "removeCursor", ["privateHandle": 15]) == "No such cursor")
        }
    }

    @Test("a cursor in a second document is announced to that document only")
    func joinTwoDocuments() async throws {
        try await ServiceCluster.with { cluster throws in
            let cast = try await joinCast(cluster)
            _ = try await createAliceCursor(cast)
            try await join(cast.alice, "Sheet2", cursors: [])
            let handle = try await create(cast.alice, 2, "Sheet2", position: 1)
            #expect(try await cast.charlie.notification("cursors") == added(cursor(handle, "Sheet2", position: 1)))
            for client in [cast.alice, cast.laptop, cast.bob] { try await client.expectIdle() }
        }
    }

    // MARK: Leaving and disconnecting

    @Test("leaving a document removes the connection's cursors there, and only there")
    func leave() async throws {
        try await ServiceCluster.with { cluster throws in
            let cast = try await joinCast(cluster)
            let inSheet1 = try await createAliceCursor(cast)
            try await join(cast.alice, "Sheet2", cursors: [])
            let inSheet2 = try await create(cast.alice, 2, "Sheet2", position: 1)
            #expect(try await cast.charlie.notification("cursors") == added(cursor(inSheet2, "Sheet2", position: 1)))

            #expect(try await cast.alice.reply("cursors", "leave", ["document": "Sheet1"]) == nil)
            #expect(try await cast.bob.notification("cursors") == removed(inSheet1))
            #expect(try await cast.laptop.notification("cursors") == removed(inSheet1))
            try await cast.alice.expectIdle()
            try await cast.charlie.expectIdle()

            // Alice hears nothing more from Sheet1, and her Sheet2 cursor is still hers.
            let bobs = try await create(cast.bob, 1)
            #expect(try await cast.laptop.notification("cursors") == added(cursor(bobs, owner: "Bob")))
            try await cast.alice.expectIdle()
            #expect(try await cast.alice.failure("cursors", "removeCursor", ["privateHandle": 1]) == "No such cursor")
            try await cast.alice.reply("cursors", "updateCursor", ["privateHandle": 2, "newData": ["position": 2]])
            #expect(try await cast.charlie.notification("cursors") == updated(cursor(inSheet2, "Sheet2", position: 2)))
            // And she may join again.
            try await join(cast.alice, "Sheet1", cursors: [cursor(bobs, owner: "Bob")])
        }
    }

    @Test("leaving a document one has not joined is Not joined")
    func leaveNotJoined() async throws {
        try await ServiceCluster.with { cluster throws in
            let alice = cluster.a.connect(identity: "Alice")
            #expect(try await alice.failure("cursors", "leave", ["document": "Sheet3"]) == "Not joined")
        }
    }

    @Test("leaving a document one has not joined is Not joined, also when in other documents")
    func leaveNotJoinedWhileInOthers() async throws {
        try await ServiceCluster.with { cluster throws in
            let cast = try await joinCast(cluster)
            _ = try await createAliceCursor(cast)
            try await join(cast.alice, "Sheet2", cursors: [])
            #expect(try await cast.alice.failure("cursors", "leave", ["document": "Sheet3"]) == "Not joined")
            for client in cast.everyone { try await client.expectIdle() }
        }
    }

    @Test("a disconnect removes the connection's cursors in every document")
    func disconnect() async throws {
        try await ServiceCluster.with { cluster throws in
            let cast = try await joinCast(cluster)
            let inSheet1 = try await createAliceCursor(cast)
            try await join(cast.alice, "Sheet2", cursors: [])
            let inSheet2 = try await create(cast.alice, 2, "Sheet2", position: 1)
            #expect(try await cast.charlie.notification("cursors") == added(cursor(inSheet2, "Sheet2", position: 1)))

            await cast.alice.disconnect()
            #expect(try await cast.bob.notification("cursors") == removed(inSheet1))
            #expect(try await cast.laptop.notification("cursors") == removed(inSheet1))
            #expect(try await cast.charlie.notification("cursors") == removed(inSheet2, "Sheet2"))
            try await cast.alice.expectNothing()
            for client in [cast.laptop, cast.bob, cast.charlie] { try await client.expectIdle() }
        }
    }

    @Test("nothing is left behind once everyone has gone")
    func cleanAfterDisconnect() async throws {
        try await ServiceCluster.with { cluster throws in
            let cast = try await joinCast(cluster)
            _ = try await createAliceCursor(cast)
            _ = try await create(cast.laptop, 1)
            _ = try await create(cast.charlie, 1, "Sheet2")
            let anonymous = cluster.a.connect()
            for client in cast.everyone + [anonymous] { await client.disconnect() }
            #expect(try await cluster.state.records(group: "\"Sheet1\"", in: "cursors").isEmpty)
            #expect(try await cluster.state.records(group: "\"Sheet2\"", in: "cursors").isEmpty)
            #expect(cluster.a.node.hub.topicCount == 0)
            #expect(cluster.a.endpoint.subscribedTopics == [cluster.a.node.inboxTopic])
        }
    }

    // MARK: Cluster

    @Test("cursors are seen across nodes: listed on join, added, updated and removed")
    func acrossNodes() async throws {
        try await ServiceCluster.with(nodes: 2) { cluster throws in
            let alice = cluster.a.connect(identity: "Alice")
            let bob = cluster.b.connect(identity: "Bob")
            try await join(alice, "Sheet1", cursors: [])
            let handle = try await create(alice, "a", position: 1)
            try await join(bob, "Sheet1", cursors: [cursor(handle, position: 1)])

            let bobs = try await create(bob, "b", position: 5)
            #expect(bobs != handle)
            #expect(try await alice.notification("cursors") == added(cursor(bobs, position: 5, owner: "Bob")))
            try await alice.reply("cursors", "updateCursor", ["privateHandle": "a", "newData": ["position": 2]])
            #expect(try await bob.notification("cursors") == updated(cursor(handle, position: 2)))
            try await bob.reply("cursors", "removeCursor", ["privateHandle": "b"])
            #expect(try await alice.notification("cursors") == removed(bobs))
            await alice.disconnect()
            #expect(try await bob.notification("cursors") == removed(handle))
            try await bob.expectIdle()
        }
    }

    @Test("when a node dies, a survivor sends cursorRemoved for its cursors")
    func reapedCursors() async throws {
        try await ServiceCluster.with(nodes: 2) { cluster throws in
            let alice = cluster.a.connect(identity: "Alice")
            let bob = cluster.b.connect(identity: "Bob")
            try await join(alice, "Sheet1", cursors: [])
            try await join(bob, "Sheet1", cursors: [])
            try await join(bob, ["doc": 2], cursors: [])
            let mine = try await create(alice, 1)
            #expect(try await bob.notification("cursors") == added(cursor(mine)))
            let first = try await create(bob, 1, position: 3)
            // Nobody on A is in this document: its removal goes nowhere.
            _ = try await create(bob, 2, ["doc": 2], position: 4)
            #expect(try await alice.notification("cursors") == added(cursor(first, position: 3, owner: "Bob")))

            try await cluster.b.kill()
            cluster.a.node.startLiveness(interval: .milliseconds(10), ttl: .seconds(30))
            #expect(try await alice.notification("cursors") == removed(first))
            try await alice.expectIdle()
            let watcher = cluster.a.connect(identity: "Carol")
            try await join(watcher, "Sheet1", cursors: [cursor(mine)])
            try await join(watcher, ["doc": 2], cursors: [])
        }
    }

    @Test("an unreachable cluster state is Service unavailable, and a failed join leaves nothing behind")
    func stateUnavailable() async throws {
        try await ServiceCluster.with(state: UnavailableClusterState()) { cluster throws in
            let alice = cluster.a.connect(identity: "Alice")
            #expect(try await alice.failure("cursors", "join", ["document": "Sheet1"]) == "Service unavailable")
            #expect(try await alice.failure("cursors", "createCursor", [
                "privateHandle": 1, "document": "Sheet1", "position": 0, "status": "focused",
            ]) == "Not joined")
            #expect(cluster.a.node.hub.topicCount == 0)
            await alice.disconnect()
        }
    }
}
