#if canImport(Glibc)
import Glibc
#endif
import Foundation
import SnorkyProtocol
import SnorkyTesting
import Synchronization
import Testing

extension ClusterTests {
    /// The built-in services (messaging, chat, cursors, datasync) across workers and nodes,
    /// and what the cluster does with a killed worker's presence, cursors and names.
    @Suite struct ServicesCluster {
        static let tokenSecret = "services-cluster-secret"
        static let tokenArguments = ["--token-secret", tokenSecret]

        /// Messaging between two nodes (one worker each) sharing one Redis over TCP.
        @Test func messageToAParticipantOnAnotherNode() async throws {
            try await withRedis(tcp: true) { redis in
                let url = try #require(redis.tcpURL)
                try await withCluster(workers: 1, redis: url) { nodeA in
                    try await withCluster(workers: 1, redis: url) { nodeB in
                        let alice = ServiceClient("alice@A", try await nodeA.connect())
                        let bob = ServiceClient("bob@B", try await nodeB.connect())
                        #expect(try await alice.call("messaging", "registerParticipant", ["name": "Alice"]) == .response(.null))
                        #expect(try await bob.call("messaging", "registerParticipant", ["name": "Bob"]) == .response(.null))

                        let body: JSON = ["text": "hello from A", "n": 1]
                        #expect(
                            try await alice.call("messaging", "send", ["sender": "Alice", "dest": "Bob", "body": body])
                                == .response(.null))
                        let received = try await bob.next("messaging")
                        #expect(received["type"] == "message")
                        #expect(received["sender"] == "Alice")
                        #expect(received["dest"] == "Bob")
                        #expect(received["body"] == body)

                        // And back, B to A.
                        #expect(
                            try await bob.call("messaging", "send", ["sender": "Bob", "dest": "Alice", "body": "hi"])
                                == .response(.null))
                        let reply = try await alice.next("messaging")
                        #expect(reply["sender"] == "Bob" && reply["dest"] == "Alice" && reply["body"] == "hi", "\(reply)")

                        for (label, client) in [("A", alice), ("B", bob)] {
                            #expect(
                                try await client.call("messaging", "listParticipants", [:]) == .response(["Alice", "Bob"]),
                                "listParticipants on node \(label)")
                        }

                        let intruder = ServiceClient("intruder@A", try await nodeA.connect())
                        #expect(
                            try await intruder.call("messaging", "registerParticipant", ["name": "Bob"])
                                == .error("Name already registered"))
                        #expect(
                            try await intruder.call("messaging", "send", ["sender": "Bob", "dest": "Alice", "body": 1])
                                == .error("Invalid sender"))
                        #expect(
                            try await alice.call("messaging", "send", ["sender": "Alice", "dest": "Nobody", "body": 1])
                                == .error("Unknown destination"))

                        // Bob's disconnect on node B frees his name for node A.
                        try await bob.client.close()
                        try await eventually(timeout: .seconds(5), poll: .milliseconds(50), "Bob free after his disconnect") {
                            try await intruder.call("messaging", "registerParticipant", ["name": "Bob"]) == .response(.null)
                        }
                        #expect(try await alice.call("messaging", "listParticipants", [:]) == .response(["Alice", "Bob"]))
                        #expect(
                            try await alice.call("messaging", "send", ["sender": "Alice", "dest": "Bob", "body": "again"])
                                == .response(.null))
                        let toNewBob = try await intruder.next("messaging")
                        #expect(toNewBob["sender"] == "Alice" && toNewBob["body"] == "again", "\(toNewBob)")
                    }
                }
            }
        }

        /// Chat presence keyed by identity, with alice's two connections on different workers:
        /// `joined` only for her first connection, `left` only for her last.
        @Test func chatPresenceAcrossWorkersWithTwoConnectionsOfOneIdentity() async throws {
            try await withRedis { redis in
                try await withCluster(workers: 2, redis: redis.url, arguments: Self.tokenArguments) { cluster in
                    let aliceToken = try await connectionToken(for: "alice")
                    let bobToken = try await connectionToken(for: "bob")
                    var placer = SlotPlacer(cluster)
                    let (alice1Client, slot1) = try await placer.connect(token: aliceToken)
                    let (alice2Client, slot2) = try await placer.connect(token: aliceToken, onSlot: 1 - slot1)
                    // Bob shares the worker of alice's second connection: her first one's
                    // presence crosses workers to reach him.
                    let (bobClient, bobSlot) = try await placer.connect(token: bobToken, onSlot: slot2)
                    #expect(slot1 != slot2 && bobSlot == slot2)
                    let alice1 = ServiceClient("alice1@\(slot1)", alice1Client)
                    let alice2 = ServiceClient("alice2@\(slot2)", alice2Client)
                    let bob = ServiceClient("bob@\(bobSlot)", bobClient)
                    let channel: JSON = "#cats"

                    #expect(try await bob.call("chat", "join", ["channel": channel]) == .response(["members": ["bob"]]))

                    #expect(
                        try await alice1.call("chat", "join", ["channel": channel]) == .response(["members": ["alice", "bob"]]))
                    let joined = try await bob.next("chat")
                    #expect(joined["type"] == "presence" && joined["status"] == "joined", "\(joined)")
                    #expect(joined["from"] == "alice" && joined["channel"] == channel, "\(joined)")
                    #expect(joined["timestamp"]?.stringValue.map(isISO8601UTC) == true, "\(joined)")

                    #expect(
                        try await alice2.call("chat", "join", ["channel": channel]) == .response(["members": ["alice", "bob"]]))
                    #expect(try await alice2.call("chat", "send", ["channel": channel, "body": "second"]) == .response(.null))
                    // The next chat frame bob gets is the message: no second `joined`.
                    let message = try await bob.next("chat")
                    #expect(message["type"] == "message" && message["body"] == "second", "no presence for a second connection: \(message)")
                    #expect(message["from"] == "alice")

                    // alice's first connection hears her second one's message too (sender's identity).
                    let echoed = try await alice1.next("chat")
                    #expect(echoed["type"] == "message" && echoed["body"] == "second", "\(echoed)")

                    // One connection leaves: nothing for bob (the next chat frame is the message).
                    #expect(try await alice2.call("chat", "leave", ["channel": channel]) == .response(.null))
                    #expect(try await alice1.call("chat", "send", ["channel": channel, "body": "still here"]) == .response(.null))
                    let stillHere = try await bob.next("chat")
                    #expect(
                        stillHere["type"] == "message" && stillHere["body"] == "still here",
                        "no presence while alice has a connection in the channel: \(stillHere)")

                    // The last one leaves (on the other worker): `left`.
                    #expect(try await alice1.call("chat", "leave", ["channel": channel]) == .response(.null))
                    let left = try await bob.next("chat")
                    #expect(left["type"] == "presence" && left["status"] == "left" && left["from"] == "alice", "\(left)")
                    #expect(left["channel"] == channel)

                    // Rejoining from either connection is a first join again.
                    #expect(
                        try await alice2.call("chat", "join", ["channel": channel]) == .response(["members": ["alice", "bob"]]))
                    let rejoined = try await bob.next("chat")
                    #expect(rejoined["type"] == "presence" && rejoined["status"] == "joined" && rejoined["from"] == "alice")
                    try await bob.expectNoNotification("chat")
                }
            }
        }

        /// alice's two connections (on different workers) join and leave at the same moment,
        /// round after round: bob sees exactly one `joined` and one `left` per round.
        @Test func concurrentJoinsAndLeavesOfOneIdentityNotifyOnce() async throws {
            try await withRedis { redis in
                try await withCluster(workers: 2, redis: redis.url, arguments: Self.tokenArguments) { cluster in
                    let aliceToken = try await connectionToken(for: "alice")
                    let bobToken = try await connectionToken(for: "bob")
                    var placer = SlotPlacer(cluster)
                    let (alice1Client, slot1) = try await placer.connect(token: aliceToken)
                    let (alice2Client, slot2) = try await placer.connect(token: aliceToken, onSlot: 1 - slot1)
                    let (bobClient, _) = try await placer.connect(token: bobToken)
                    let alice1 = ServiceClient("alice1@\(slot1)", alice1Client)
                    let alice2 = ServiceClient("alice2@\(slot2)", alice2Client)
                    let bob = ServiceClient("bob", bobClient)
                    let channel: JSON = "#race"
                    #expect(try await bob.call("chat", "join", ["channel": channel]) == .response(["members": ["bob"]]))

                    var problems: [String] = []
                    for round in 0..<15 {
                        for command in ["join", "leave"] {
                            async let first = alice1.call("chat", command, ["channel": channel])
                            async let second = alice2.call("chat", command, ["channel": channel])
                            let outcomes = [try await first, try await second]
                            if outcomes.contains(where: { $0.responseData == nil }) {
                                problems.append("round \(round) \(command): \(outcomes)")
                            }
                            // bob's own message marks the end of what the two calls caused.
                            let marker: JSON = ["round": .int(Int64(round)), "after": .string(command)]
                            _ = try await bob.call("chat", "send", ["channel": channel, "body": marker])
                            var frames: [JSON] = []
                            while true {
                                let frame = try await bob.next("chat")
                                if frame["type"] == "message", frame["body"] == marker { break }
                                frames.append(frame)
                            }
                            let status = command == "join" ? "joined" : "left"
                            let presence = frames.filter { $0["type"] == "presence" }
                            if presence.count != 1 || presence.first?["status"] != .string(status) {
                                problems.append("round \(round) \(command): bob got \(frames)")
                            }
                        }
                    }
                    #expect(problems.isEmpty, "\(problems.count) of 30 steps wrong: \(problems.prefix(5))")
                }
            }
        }

        /// Cursors of a document seen by clients on the other worker: `cursorAdded` with the
        /// whole cursor, `cursorUpdated`, `cursorRemoved`; public handles unique across workers.
        @Test func cursorsSeenAcrossWorkers() async throws {
            try await withRedis { redis in
                try await withCluster(workers: 2, redis: redis.url, arguments: Self.tokenArguments) { cluster in
                    let aliceToken = try await connectionToken(for: "alice")
                    let bobToken = try await connectionToken(for: "bob")
                    var placer = SlotPlacer(cluster)
                    let (aliceClient, aliceSlot) = try await placer.connect(token: aliceToken)
                    let (bobClient, bobSlot) = try await placer.connect(token: bobToken, onSlot: 1 - aliceSlot)
                    let alice = ServiceClient("alice@\(aliceSlot)", aliceClient)
                    let bob = ServiceClient("bob@\(bobSlot)", bobClient)
                    let document: JSON = ["doc": "spec", "rev": 3]

                    #expect(try await alice.call("cursors", "join", ["document": document]) == .response(["cursors": []]))
                    #expect(try await bob.call("cursors", "join", ["document": document]) == .response(["cursors": []]))

                    let created = try await alice.call(
                        "cursors", "createCursor", ["privateHandle": 1, "document": document, "position": 5, "status": "typing"])
                    guard case .response(let handleJSON) = created, let handle = handleJSON.int64Value else {
                        Issue.record("createCursor: \(created)")
                        return
                    }
                    let added = try await bob.next("cursors")
                    #expect(added["type"] == "cursorAdded", "\(added)")
                    let expectedCursor: JSON = [
                        "publicHandle": .int(handle), "document": document, "position": 5, "status": "typing", "owner": "alice",
                    ]
                    #expect(added["cursor"] == expectedCursor)

                    // Both workers create cursors at once: every public handle is unique.
                    async let fromAlice = alice.createCursors(privateHandles: 2...6, document: document)
                    async let fromBob = bob.createCursors(privateHandles: 1...5, document: document)
                    let handles = [handle] + (try await fromAlice) + (try await fromBob)
                    #expect(Set(handles).count == handles.count, "public handles unique in the document: \(handles.sorted())")
                    // Each sees the other's five cursors added.
                    let bobSaw = try await bob.collect("cursors", count: 5)
                    let aliceSaw = try await alice.collect("cursors", count: 5)
                    #expect(bobSaw.allSatisfy { $0["type"] == "cursorAdded" && $0["cursor"]?["owner"] == "alice" }, "\(bobSaw)")
                    #expect(aliceSaw.allSatisfy { $0["type"] == "cursorAdded" && $0["cursor"]?["owner"] == "bob" }, "\(aliceSaw)")
                    #expect(Set(bobSaw.compactMap { $0["cursor"]?["publicHandle"]?.int64Value }) == Set(handles[1...5]))
                    #expect(Set(aliceSaw.compactMap { $0["cursor"]?["publicHandle"]?.int64Value }) == Set(handles[6...10]))

                    // updateCursor applies only position and status.
                    #expect(
                        try await alice.call(
                            "cursors", "updateCursor",
                            ["privateHandle": 1, "newData": ["position": 9, "status": "idle", "owner": "mallory", "publicHandle": 999]])
                            == .response(.null))
                    let updated = try await bob.next("cursors")
                    #expect(updated["type"] == "cursorUpdated", "\(updated)")
                    #expect(
                        updated["cursor"]
                            == ["publicHandle": .int(handle), "document": document, "position": 9, "status": "idle", "owner": "alice"])

                    // A no-op update sends nothing: the next frame is the removal.
                    #expect(
                        try await alice.call("cursors", "updateCursor", ["privateHandle": 1, "newData": ["position": 9, "status": "idle"]])
                            == .response(.null))
                    #expect(try await alice.call("cursors", "removeCursor", ["privateHandle": 1]) == .response(.null))
                    let removed = try await bob.next("cursors")
                    #expect(removed["type"] == "cursorRemoved", "a no-op update sends nothing: \(removed)")
                    #expect(removed["cursor"] == ["publicHandle": .int(handle), "document": document])

                    // A late joiner on alice's worker gets bob's cursors and alice's remaining ones.
                    let (lateClient, _) = try await placer.connect(token: bobToken, onSlot: aliceSlot)
                    let late = ServiceClient("late@\(aliceSlot)", lateClient)
                    let joined = try await late.call("cursors", "join", ["document": document])
                    guard case .response(let state) = joined, let cursors = state["cursors"]?.arrayValue else {
                        Issue.record("late join: \(joined)")
                        return
                    }
                    #expect(Set(cursors.compactMap { $0["publicHandle"]?.int64Value }) == Set(handles.dropFirst()))
                    #expect(cursors.allSatisfy { $0["document"] == document })
                    try await bob.expectNoNotification("cursors")
                }
            }
        }

        /// A datasync subscription authorized through node A's backend and acquired on node B:
        /// deltas published between the two arrive before the acquire response; later deltas
        /// published through either node's backend reach it.
        @Test func dataSyncTokenAuthorizedOnOneNodeIsAcquiredOnAnother() async throws {
            let directory = try TemporaryDirectory()
            let config = directory.path + "/snorky.toml"
            try """
            [[datasync.dealers]]
            name = "players_with_color"
            model = "Player"
            kind = "simple"
            key = "color"
            """.write(toFile: config, atomically: true, encoding: .utf8)
            try await withRedis(tcp: true) { redis in
                let url = try #require(redis.tcpURL)
                try await withCluster(workers: 1, redis: url, arguments: ["--config", config]) { nodeA in
                    try await withCluster(workers: 1, redis: url, arguments: ["--config", config]) { nodeB in
                        let (status, body) = try await nodeA.backend(
                            "datasync_backend", "authorizeSubscription",
                            ["items": [["dealer": "players_with_color", "query": "blue"]]])
                        #expect(status == 200, "\(body)")
                        let token = try #require(body["message"]?["data"]?.stringValue, "authorize: \(body)")
                        #expect(token.count == 32 && token.allSatisfy { $0.isASCII && ($0.isLowercase || $0.isNumber) }, "\(token)")

                        // Before the acquire: one matching delta through each node, one not matching.
                        let early1: JSON = ["type": "insert", "model": "Player", "data": ["name": "early-a", "color": "blue"]]
                        let early2: JSON = ["type": "insert", "model": "Player", "data": ["name": "early-b", "color": "blue"]]
                        let red: JSON = ["type": "insert", "model": "Player", "data": ["name": "red", "color": "red"]]
                        try await publishDeltas(nodeA, [early1, red])
                        try await publishDeltas(nodeB, [early2])

                        let client = try await nodeB.connect()
                        try await client.send("datasync", "acquireSubscription", ["token": .string(token)], callId: 1)
                        var beforeResponse: [JSON] = []
                        while true {
                            let envelope = try await client.nextEnvelope()
                            #expect(envelope.service == "datasync", "\(envelope.json)")
                            if envelope.message["type"] == "delta" {
                                beforeResponse.append(envelope.message["delta"] ?? .null)
                                continue
                            }
                            #expect(
                                envelope.message["type"] == "response" && envelope.message["callId"] == 1
                                    && (envelope.message["data"] ?? .null) == .null, "\(envelope.json)")
                            break
                        }
                        #expect(beforeResponse == [early1, early2], "buffered deltas, in order, before the acquire response")

                        // After the acquire, through either backend.
                        let fromB: JSON = ["type": "insert", "model": "Player", "data": ["name": "b", "color": "blue"]]
                        let fromA: JSON = [
                            "type": "update", "model": "Player",
                            "newData": ["name": "b", "color": "blue", "score": 2], "oldData": ["name": "b", "color": "blue"],
                        ]
                        let turnsRed: JSON = [
                            "type": "update", "model": "Player",
                            "newData": ["name": "b", "color": "red"], "oldData": ["name": "b", "color": "blue", "score": 2],
                        ]
                        try await publishDeltas(nodeB, [fromB])
                        #expect(try await nextDelta(client) == fromB)
                        try await publishDeltas(nodeA, [red, fromA])
                        #expect(try await nextDelta(client) == fromA)
                        try await publishDeltas(nodeA, [turnsRed])
                        #expect(
                            try await nextDelta(client)
                                == ["type": "delete", "model": "Player", "data": ["name": "b", "color": "blue", "score": 2]])

                        // The token is spent, on either node.
                        let second = try await nodeA.connect()
                        #expect(
                            try await second.call("datasync", "acquireSubscription", ["token": .string(token)])
                                == .error("Subscription already acquired"))
                        #expect(try await client.call("datasync", "cancelSubscription", ["token": .string(token)], callId: 2) == .response(.null))
                        try await publishDeltas(nodeA, [early1])
                        try await client.expectNothing(for: .milliseconds(300))
                    }
                }
            }
        }

        /// bob joins `channel` and `document`, then alice joins both and creates a cursor:
        /// bob sees her `joined` and her `cursorAdded`. Returns the cursor's public handle.
        private static func aliceJoinsBob(
            _ alice: ServiceClient, _ bob: ServiceClient, channel: JSON, document: JSON
        ) async throws -> Int64 {
            #expect(try await bob.call("chat", "join", ["channel": channel]) == .response(["members": ["bob"]]))
            #expect(try await bob.call("cursors", "join", ["document": document]) == .response(["cursors": []]))
            #expect(try await alice.call("chat", "join", ["channel": channel]) == .response(["members": ["alice", "bob"]]))
            let joined = try await bob.next("chat")
            #expect(joined["status"] == "joined" && joined["from"] == "alice", "\(joined)")
            #expect(try await alice.call("cursors", "join", ["document": document]) == .response(["cursors": []]))
            let created = try await alice.call(
                "cursors", "createCursor", ["privateHandle": 7, "document": document, "position": 1, "status": "here"])
            let handle = try #require(created.responseData?.int64Value, "createCursor: \(created)")
            let added = try await bob.next("cursors")
            #expect(added["type"] == "cursorAdded" && added["cursor"]?["publicHandle"] == .int(handle), "\(added)")
            return handle
        }

        /// `kill -9` of a worker: the other worker's clients see its chat presence `left` and
        /// its cursors `cursorRemoved` within 10 s, and its participant names become free.
        @Test func killedWorkersPresenceCursorsAndNamesAreReaped() async throws {
            try await withRedis { redis in
                try await withCluster(workers: 2, redis: redis.url, arguments: Self.tokenArguments) { cluster in
                    let aliceToken = try await connectionToken(for: "alice")
                    let bobToken = try await connectionToken(for: "bob")
                    var placer = SlotPlacer(cluster)
                    let (victimClient, victimSlot) = try await placer.connect(token: aliceToken)
                    let (bobClient, bobSlot) = try await placer.connect(token: bobToken, onSlot: 1 - victimSlot)
                    let alice = ServiceClient("alice@\(victimSlot)", victimClient)
                    let bob = ServiceClient("bob@\(bobSlot)", bobClient)
                    let channel: JSON = "#doomed"
                    let document: JSON = "doomed-doc"
                    let victim = try #require(cluster.workerPIDs[victimSlot])

                    let handle = try await Self.aliceJoinsBob(alice, bob, channel: channel, document: document)
                    // alice is also in "#both" through a second connection on the surviving worker:
                    // the kill must not make her leave it.
                    let (survivingClient, survivingSlot) = try await placer.connect(token: aliceToken, onSlot: bobSlot)
                    let aliceSurviving = ServiceClient("alice@\(survivingSlot)", survivingClient)
                    let both: JSON = "#both"
                    #expect(try await bob.call("chat", "join", ["channel": both]) == .response(["members": ["bob"]]))
                    #expect(
                        try await aliceSurviving.call("chat", "join", ["channel": both]) == .response(["members": ["alice", "bob"]]))
                    #expect(try await alice.call("chat", "join", ["channel": both]) == .response(["members": ["alice", "bob"]]))
                    let joinedBoth = try await bob.next("chat")
                    #expect(joinedBoth["status"] == "joined" && joinedBoth["channel"] == both, "\(joinedBoth)")
                    #expect(try await alice.call("messaging", "registerParticipant", ["name": "Carol"]) == .response(.null))
                    #expect(try await bob.call("messaging", "listParticipants", [:]) == .response(["Carol"]))

                    let killed = ContinuousClock.now
                    #expect(kill(victim, SIGKILL) == 0)
                    let left = try await bob.next("chat", timeout: .seconds(10))
                    #expect(left["type"] == "presence" && left["status"] == "left" && left["from"] == "alice", "\(left)")
                    #expect(left["channel"] == channel, "alice is still in \(both) through the other worker: \(left)")
                    let removed = try await bob.next("cursors", timeout: .seconds(10) - (ContinuousClock.now - killed))
                    #expect(removed["type"] == "cursorRemoved", "\(removed)")
                    #expect(removed["cursor"] == ["publicHandle": .int(handle), "document": document])
                    print("kill -9: presence and cursor reaped \(ContinuousClock.now - killed) after the kill")

                    var attempts: Int64 = 100
                    try await eventually(timeout: .seconds(10) - (ContinuousClock.now - killed), poll: .milliseconds(200), "Carol free again") {
                        attempts += 1
                        return try await bob.call("messaging", "registerParticipant", ["name": "Carol"], callId: attempts) == .response(.null)
                    }
                    #expect(try await bob.call("messaging", "listParticipants", [:]) == .response(["Carol"]))
                    #expect(try await bob.call("chat", "send", ["channel": channel, "body": "alone"]) == .response(.null))
                    let own = try await bob.next("chat")
                    #expect(own["type"] == "message" && own["body"] == "alone", "only bob's own message after the left: \(own)")
                    #expect(
                        try await aliceSurviving.call("chat", "join", ["channel": both]) == .error("Already joined"),
                        "the surviving connection is still a member")
                    #expect(try await bob.call("chat", "send", ["channel": both, "body": "still together"]) == .response(.null))
                    let together = try await aliceSurviving.next("chat")
                    #expect(together["type"] == "message" && together["body"] == "still together", "\(together)")
                    let ownTogether = try await bob.next("chat")
                    #expect(ownTogether["body"] == "still together", "no `left` for #both: \(ownTogether)")
                    try await bob.expectNoNotification("chat")
                    try await bob.expectNoNotification("cursors")

                }
            }
        }

        /// A client that leaves while Redis does not answer: its removal from the cluster
        /// state fails then, and is retried once Redis answers again, so its presence `left`,
        /// its `cursorRemoved` and its freed name still reach the others, late rather than
        /// never. Redis keeps its data throughout (`CLIENT PAUSE WRITE`), as it does when a
        /// network partition heals.
        @Test func aClientLeavingDuringARedisOutageIsRemovedOnceRedisAnswers() async throws {
            try await withRedis { redis in
                try await withCluster(workers: 1, redis: redis.url, arguments: Self.tokenArguments) { cluster in
                    func connect(_ identity: String) async throws -> ServiceClient {
                        let token = try await connectionToken(for: identity)
                        let client = try await WebSocketTestClient.connect(
                            host: cluster.host, port: cluster.wsPort, path: "/ws", query: "token=\(token)")
                        return ServiceClient(identity, client)
                    }
                    let alice = try await connect("alice")
                    let bob = try await connect("bob")
                    let channel: JSON = "#partitioned"
                    let document: JSON = "partitioned-doc"

                    let handle = try await Self.aliceJoinsBob(alice, bob, channel: channel, document: document)
                    #expect(try await alice.call("messaging", "registerParticipant", ["name": "Dave"]) == .response(.null))

                    // Writes (and scripts) wait while Redis is paused; the worker gives up on
                    // each after its command timeout.
                    try redis.command(["CLIENT", "PAUSE", "60000", "WRITE"])
                    try await alice.client.close()
                    for space in ["chat", "cursors", "messaging"] {
                        try await cluster.logs.first("cleanup of \(space) failed", timeout: .seconds(30)) {
                            $0.message == "state cleanup failed; retrying once the state answers" && $0.metadata["space"] == space
                        }
                    }
                    try redis.command(["CLIENT", "UNPAUSE"])

                    let left = try await bob.next("chat", timeout: .seconds(15))
                    #expect(left["type"] == "presence" && left["status"] == "left" && left["from"] == "alice", "\(left)")
                    #expect(left["channel"] == channel, "\(left)")
                    let removed = try await bob.next("cursors", timeout: .seconds(15))
                    #expect(removed["type"] == "cursorRemoved", "\(removed)")
                    #expect(removed["cursor"] == ["publicHandle": .int(handle), "document": document])
                    #expect(try await bob.call("messaging", "listParticipants", [:]) == .response([]))
                    #expect(try await bob.call("messaging", "registerParticipant", ["name": "Dave"]) == .response(.null))
                    #expect(try await bob.call("chat", "join", ["channel": channel]) == .error("Already joined"))
                    try await bob.expectNoNotification("chat")
                }
            }
        }
    }
}

// MARK: - Helpers

extension RPCOutcome {
    var responseData: JSON? {
        if case .response(let data) = self { return data }
        return nil
    }
}

/// `snorky token --token-secret S --sub <identity>`.
private func connectionToken(for identity: String) async throws -> String {
    let process = try await ProcessHandle.launch(
        try SnorkyExecutable.path,
        arguments: ["token", "--token-secret", ClusterTests.ServicesCluster.tokenSecret, "--sub", identity])
    // Await the line itself: the process can exit before its output has been read.
    let token = try await process.waitForLine(matching: { $0.split(separator: ".").count == 3 })
    let code = try await process.waitForExit()
    guard code == 0 else { throw ClusterFixtureError("snorky token exited \(code): \(process.outputLines)") }
    return token
}

private func isISO8601UTC(_ text: String) -> Bool {
    let formatter = ISO8601DateFormatter()
    formatter.formatOptions = [.withInternetDateTime, .withFractionalSeconds]
    if formatter.date(from: text) != nil { return text.hasSuffix("Z") }
    formatter.formatOptions = [.withInternetDateTime]
    return formatter.date(from: text) != nil && text.hasSuffix("Z")
}

private func publishDeltas(_ cluster: SnorkyCluster, _ deltas: [JSON]) async throws {
    let (status, body) = try await cluster.backend("datasync_backend", "publishDeltas", ["deltas": .array(deltas)])
    guard status == 200, body["message"]?["type"] == "response" else {
        throw ClusterFixtureError("publishDeltas: \(status) \(body)")
    }
}

private func nextDelta(_ client: WebSocketTestClient) async throws -> JSON {
    let envelope = try await client.nextEnvelope()
    guard envelope.service == "datasync", envelope.message["type"] == "delta", let delta = envelope.message["delta"] else {
        throw ClusterFixtureError("expected a delta, got \(envelope.json)")
    }
    return delta
}

/// Opens connections and tells on which worker each landed, from `/stats` before and after.
/// Connections that landed elsewhere than asked are kept open (closing them would change
/// the counts the next placement compares).
struct SlotPlacer {
    let cluster: SnorkyCluster
    private(set) var parked: [WebSocketTestClient] = []

    init(_ cluster: SnorkyCluster) { self.cluster = cluster }

    mutating func connect(token: String?, onSlot wanted: Int? = nil) async throws -> (WebSocketTestClient, Int) {
        for _ in 0..<40 {
            let before = try await cluster.stats()
            let client = try await WebSocketTestClient.connect(
                host: cluster.host, port: cluster.wsPort, path: "/ws", query: token.map { "token=\($0)" })
            let expected = cluster.totalConnections(before) + 1
            var after = before
            try await eventually(timeout: .seconds(15), "the new connection counted") {
                after = try await cluster.stats()
                return cluster.totalConnections(after) == expected
            }
            guard let slot = after.keys.first(where: { after[$0]!.connections == before[$0]!.connections + 1 }) else {
                throw ClusterFixtureError("no slot gained the connection: \(before) -> \(after)")
            }
            if wanted == nil || wanted == slot { return (client, slot) }
            parked.append(client)
        }
        throw ClusterFixtureError("no connection landed on slot \(wanted.map(String.init) ?? "-") in 40 attempts")
    }
}

/// A client that keeps the notifications arriving while it waits for its replies, so a
/// test can call services and await notifications in any order.
final class ServiceClient: Sendable {
    let label: String
    let client: WebSocketTestClient
    private let pending = Mutex<[Envelope]>([])
    private let callIds = Atomic<Int64>(1000)

    init(_ label: String, _ client: WebSocketTestClient) {
        self.label = label
        self.client = client
    }

    /// Sends a request and returns its outcome; notifications read meanwhile are kept.
    func call(
        _ service: String, _ command: String, _ params: JSON, callId: Int64? = nil, timeout: Duration = .seconds(10)
    ) async throws -> RPCOutcome {
        let id = callId ?? callIds.wrappingAdd(1, ordering: .relaxed).newValue
        try await client.send(service, command, params, callId: .int(id))
        let deadline = ContinuousClock.now + timeout
        while true {
            let envelope = try await client.nextEnvelope(timeout: max(deadline - .now, .milliseconds(1)))
            let message = envelope.message
            let type = message["type"]?.stringValue
            if envelope.service == service, message["callId"] == .int(id), type == "response" || type == "error" {
                if type == "response" { return .response(message["data"] ?? .null) }
                return .error(message["message"]?.stringValue ?? "\(message)")
            }
            pending.withLock { $0.append(envelope) }
        }
    }

    /// The next notification of `service`, in arrival order (kept ones first).
    func next(_ service: String, timeout: Duration = .seconds(10)) async throws -> JSON {
        if let kept = pending.withLock({ pending -> Envelope? in
            guard let index = pending.firstIndex(where: { $0.service == service }) else { return nil }
            return pending.remove(at: index)
        }) {
            return kept.message
        }
        let deadline = ContinuousClock.now + timeout
        while true {
            let remaining = deadline - .now
            guard remaining > .zero else {
                throw ClusterFixtureError("\(label): no \(service) notification within \(timeout)")
            }
            let envelope: Envelope
            do {
                envelope = try await client.nextEnvelope(timeout: remaining)
            } catch WebSocketTestClientError.timedOut {
                throw ClusterFixtureError("\(label): no \(service) notification within \(timeout)")
            }
            if envelope.service == service { return envelope.message }
            pending.withLock { $0.append(envelope) }
        }
    }

    /// The next `count` notifications of `service`.
    func collect(_ service: String, count: Int, timeout: Duration = .seconds(10)) async throws -> [JSON] {
        var collected: [JSON] = []
        for _ in 0..<count { collected.append(try await next(service, timeout: timeout)) }
        return collected
    }

    /// `createCursor` for each private handle; returns the public handles.
    func createCursors(privateHandles: ClosedRange<Int>, document: JSON) async throws -> [Int64] {
        var handles: [Int64] = []
        for privateHandle in privateHandles {
            let outcome = try await call(
                "cursors", "createCursor",
                ["privateHandle": .int(Int64(privateHandle)), "document": document, "position": .int(Int64(privateHandle)), "status": "new"])
            guard let handle = outcome.responseData?.int64Value else {
                throw ClusterFixtureError("\(label): createCursor \(privateHandle): \(outcome)")
            }
            handles.append(handle)
        }
        return handles
    }

    /// Fails if a notification of `service` was kept or arrives within `duration`.
    func expectNoNotification(_ service: String, for duration: Duration = .milliseconds(300)) async throws {
        let kept = pending.withLock { $0.filter { $0.service == service } }
        #expect(kept.isEmpty, "\(label): unexpected \(service) notifications \(kept.map(\.json))")
        do {
            let extra = try await next(service, timeout: duration)
            Issue.record("\(label): unexpected \(service) notification \(extra)")
        } catch is ClusterFixtureError {}
    }
}
