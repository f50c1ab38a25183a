import Logging
import Snorky
import SnorkyProtocol
@testable import SnorkyServices
import Testing

/// The `chat` service (PROTOCOL.md section 5): the cases of the original Snorky's suite,
/// presence with several connections per identity on one or several nodes, and the `left`
/// of a node that died.
@Suite("chat service")
struct ChatServiceTests {
    private func join(_ client: ServiceClient, _ channel: JSON = "#cats", members: [String]) async throws {
        let reply = try await client.reply("chat", "join", ["channel": channel])
        #expect(reply == ["members": .array(members.map { .string($0) })])
    }

    private func presence(_ from: String, _ status: String, channel: JSON = "#cats") -> JSON {
        ["type": "presence", "from": .string(from), "channel": channel, "status": .string(status), "timestamp": .string(ServiceCluster.timestamp)]
    }

    private func message(_ from: String, _ body: JSON, channel: JSON = "#cats") -> JSON {
        ["type": "message", "from": .string(from), "channel": channel, "body": body, "timestamp": .string(ServiceCluster.timestamp)]
    }

    /// Sends a message as `client`, which gets its own copy before the reply.
    private func speak(_ client: ServiceClient, _ from: String, _ body: JSON, channel: JSON = "#cats") async throws {
        client.send("chat", "send", ["channel": channel, "body": body], callId: "say")
        #expect(try await client.notification("chat") == message(from, body, channel: channel))
        #expect(try await client.next() == ["service": "chat", "message": ["type": "response", "callId": "say", "data": nil]])
    }

    private func read(channel: JSON = "#cats") -> JSON {
        ["type": "read", "channel": channel, "timestamp": .string(ServiceCluster.timestamp)]
    }

    // MARK: Timestamps

    @Test("timestamps are ISO-8601 UTC with milliseconds")
    func timestampFormat() {
        #expect(UTCTimestamp.format(millisecondsSince1970: 0) == "1970-01-01T00:00:00.000Z")
        #expect(UTCTimestamp.format(millisecondsSince1970: 1_795_557_000_123) == "2026-11-24T21:50:00.123Z")
        #expect(UTCTimestamp.format(millisecondsSince1970: 951_782_400_007) == "2000-02-29T00:00:00.007Z")
        #expect(UTCTimestamp.format(millisecondsSince1970: 253_402_300_799_999) == "9999-12-31T23:59:59.999Z")
        #expect(UTCTimestamp.format(millisecondsSince1970: -1) == "1969-12-31T23:59:59.999Z")
        #expect(UTCTimestamp.format(millisecondsSince1970: -2_203_891_200_000) == "1900-03-01T00:00:00.000Z")
    }

    @Test("the real clock stamps notifications with the current time")
    func realClock() async throws {
        let node = Node(id: "clock", bus: InMemoryBus(), logger: Logger(label: "test", factory: { _ in SwiftLogNoOpLogHandler() }))
        node.register(ChatService(node: node))
        try await node.start()
        let (client, transport) = RecordingTransport.connect(to: node, identity: "Alice")
        let before = UTCTimestamp.now()
        for (command, params) in [("join", ["channel": "#cats"] as JSON), ("send", ["channel": "#cats", "body": "hi"])] {
            let text = Envelope(service: "chat", message: ["command": .string(command), "params": params, "callId": 1]).json.encodedString()
            client.didReceive(text: .init(string: text))
        }
        #expect(try await transport.next()["message"]?["type"] == "response")
        let stamp = try #require(try await transport.next()["message"]?["timestamp"]?.stringValue)
        let after = UTCTimestamp.now()
        #expect(stamp.wholeMatch(of: /\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z/) != nil)
        // Same fixed-width form, so text order is time order.
        #expect(before <= stamp && stamp <= after)
        await node.shutdown()
    }

    // MARK: Joining

    @Test("the first to join a channel is its only member")
    func joinEmpty() async throws {
        try await ServiceCluster.with { cluster throws in
            let alice = cluster.a.connect(identity: "Alice")
            try await join(alice, members: ["Alice"])
            try await alice.expectIdle()
        }
    }

    @Test("a second identity joining is announced to the others, not to itself")
    func joinTwo() async throws {
        try await ServiceCluster.with { cluster throws in
            let alice = cluster.a.connect(identity: "Alice")
            let bob = cluster.a.connect(identity: "Bob")
            try await join(alice, members: ["Alice"])
            try await join(bob, members: ["Alice", "Bob"])
            #expect(try await alice.notification("chat") == presence("Bob", "joined"))
            try await alice.expectIdle()
            try await bob.expectIdle()
        }
    }

    @Test("members are sorted")
    func membersSorted() async throws {
        try await ServiceCluster.with { cluster throws in
            try await join(cluster.a.connect(identity: "carol"), members: ["carol"])
            try await join(cluster.a.connect(identity: "Bob"), members: ["Bob", "carol"])
            try await join(cluster.a.connect(identity: "alice"), members: ["Bob", "alice", "carol"])
        }
    }

    @Test("joining twice from one connection is Already joined")
    func joinTwice() async throws {
        try await ServiceCluster.with { cluster throws in
            let alice = cluster.a.connect(identity: "Alice")
            try await join(alice, members: ["Alice"])
            #expect(try await alice.failure("chat", "join", ["channel": "#cats"]) == "Already joined")
        }
    }

    @Test("joining without an identity is Not authenticated")
    func joinAnonymous() async throws {
        try await ServiceCluster.with { cluster throws in
            let anonymous = cluster.a.connect()
            #expect(try await anonymous.failure("chat", "join", ["channel": "#cats"]) == "Not authenticated")
            #expect(try await anonymous.failure("chat", "send", ["channel": "#cats", "body": "hi"]) == "Not joined")
        }
    }

    @Test("a channel is any JSON value; equal values are the same channel")
    func channelsAreJSON() async throws {
        try await ServiceCluster.with { cluster throws in
            let alice = cluster.a.connect(identity: "Alice")
            let bob = cluster.a.connect(identity: "Bob")
            try await join(alice, ["room": 7, "team": "cats"], members: ["Alice"])
            try await join(bob, ["team": "cats", "room": 7.0], members: ["Alice", "Bob"])
            #expect(try await alice.notification("chat") == presence("Bob", "joined", channel: ["room": 7, "team": "cats"]))
            try await join(alice, 7, members: ["Alice"])
            try await join(alice, "7", members: ["Alice"])
            try await speak(bob, "Bob", "hi", channel: ["team": "cats", "room": 7])
            #expect(try await alice.notification("chat") == message("Bob", "hi", channel: ["room": 7, "team": "cats"]))
            try await alice.expectIdle()
        }
    }

    // MARK: Messages

    @Test("a message reaches every member, the sender before its reply")
    func sendMessage() async throws {
        try await ServiceCluster.with { cluster throws in
            let alice = cluster.a.connect(identity: "Alice")
            let bob = cluster.a.connect(identity: "Bob")
            try await join(alice, members: ["Alice"])
            try await join(bob, members: ["Alice", "Bob"])
            #expect(try await alice.notification("chat") == presence("Bob", "joined"))

            alice.send("chat", "send", ["channel": "#cats", "body": "Hello"], callId: 9)
            #expect(try await alice.notification("chat") == message("Alice", "Hello"))
            #expect(try await alice.next() == ["service": "chat", "message": ["type": "response", "callId": 9, "data": nil]])
            #expect(try await bob.notification("chat") == message("Alice", "Hello"))
            try await bob.expectIdle()
        }
    }

    @Test("sending to a channel one has not joined is Not joined")
    func sendToChannelNotJoined() async throws {
        try await ServiceCluster.with { cluster throws in
            let alice = cluster.a.connect(identity: "Alice")
            let bob = cluster.a.connect(identity: "Bob")
            try await join(alice, members: ["Alice"])
            try await join(bob, "#operators", members: ["Bob"])
            #expect(try await alice.failure("chat", "send", ["channel": "#operators", "body": "spam"]) == "Not joined")
            try await bob.expectIdle()
        }
    }

    // MARK: Leaving

    @Test("leaving announces left to the rest and stops the leaver's messages")
    func leave() async throws {
        try await ServiceCluster.with { cluster throws in
            let alice = cluster.a.connect(identity: "Alice")
            let bob = cluster.a.connect(identity: "Bob")
            try await join(alice, members: ["Alice"])
            try await join(bob, members: ["Alice", "Bob"])
            #expect(try await alice.notification("chat") == presence("Bob", "joined"))

            #expect(try await alice.reply("chat", "leave", ["channel": "#cats"]) == nil)
            #expect(try await bob.notification("chat") == presence("Alice", "left"))
            try await speak(bob, "Bob", "Hello")
            try await alice.expectIdle()
            #expect(try await alice.failure("chat", "send", ["channel": "#cats", "body": "x"]) == "Not joined")
            #expect(try await alice.failure("chat", "leave", ["channel": "#cats"]) == "Not joined")

            // Joining again is news again.
            try await join(alice, members: ["Alice", "Bob"])
            #expect(try await bob.notification("chat") == presence("Alice", "joined"))
        }
    }

    @Test("leaving a channel one has not joined is Not joined")
    func leaveNotJoined() async throws {
        try await ServiceCluster.with { cluster throws in
            let alice = cluster.a.connect(identity: "Alice")
            #expect(try await alice.failure("chat", "leave", ["channel": "#cats"]) == "Not joined")
            try await join(alice, "#dogs", members: ["Alice"])
            #expect(try await alice.failure("chat", "leave", ["channel": "#cats"]) == "Not joined")
        }
    }

    @Test("a disconnect is a leave: the others get left")
    func disconnect() async throws {
        try await ServiceCluster.with { cluster throws in
            let alice = cluster.a.connect(identity: "Alice")
            let bob = cluster.a.connect(identity: "Bob")
            try await join(alice, members: ["Alice"])
            try await join(bob, members: ["Alice", "Bob"])
            #expect(try await alice.notification("chat") == presence("Bob", "joined"))

            await alice.disconnect()
            #expect(try await bob.notification("chat") == presence("Alice", "left"))
            try await speak(bob, "Bob", "Hello")
            try await alice.expectNothing()
            #expect(try await cluster.state.members(of: "\"#cats\"", in: "chat") == ["Bob"])
        }
    }

    // MARK: Several connections per identity

    @Test("an identity's second connection is not announced, and every connection gets every message")
    func twoUsersThreeConnections() async throws {
        try await ServiceCluster.with { cluster throws in
            let alice = cluster.a.connect(identity: "Alice")
            let laptop = cluster.a.connect(identity: "Alice")
            let bob = cluster.a.connect(identity: "Bob")
            try await join(alice, members: ["Alice"])
            try await join(bob, members: ["Alice", "Bob"])
            #expect(try await alice.notification("chat") == presence("Bob", "joined"))

            try await join(laptop, members: ["Alice", "Bob"])
            try await alice.expectIdle()
            try await bob.expectIdle()

            for (sender, identity, body) in [(bob, "Bob", "Hi"), (alice, "Alice", "What's up?"), (laptop, "Alice", "testing")] {
                try await speak(sender, identity, .string(body))
                for receiver in [alice, laptop, bob] where receiver !== sender {
                    #expect(try await receiver.notification("chat") == message(identity, .string(body)))
                }
            }
        }
    }

    @Test("left is sent only when an identity's last connection goes")
    func leavingFromTwoComputers() async throws {
        try await ServiceCluster.with { cluster throws in
            let alice = cluster.a.connect(identity: "Alice")
            let laptop = cluster.a.connect(identity: "Alice")
            let bob = cluster.a.connect(identity: "Bob")
            try await join(alice, members: ["Alice"])
            try await join(laptop, members: ["Alice"])
            try await join(bob, members: ["Alice", "Bob"])
            #expect(try await alice.notification("chat") == presence("Bob", "joined"))
            #expect(try await laptop.notification("chat") == presence("Bob", "joined"))

            await alice.disconnect()
            try await laptop.expectIdle()
            try await bob.expectIdle()
            try await speak(bob, "Bob", "Hi")
            #expect(try await laptop.notification("chat") == message("Bob", "Hi"))

            #expect(try await laptop.reply("chat", "leave", ["channel": "#cats"]) == nil)
            #expect(try await bob.notification("chat") == presence("Alice", "left"))
            try await laptop.expectIdle()
        }
    }

    @Test("presence is per channel")
    func presenceAcrossChannels() async throws {
        try await ServiceCluster.with { cluster throws in
            let alice = cluster.a.connect(identity: "Alice")
            let laptop = cluster.a.connect(identity: "Alice")
            let bob = cluster.a.connect(identity: "Bob")
            try await join(alice, members: ["Alice"])
            try await join(laptop, members: ["Alice"])
            try await join(bob, members: ["Alice", "Bob"])
            #expect(try await alice.notification("chat") == presence("Bob", "joined"))
            #expect(try await laptop.notification("chat") == presence("Bob", "joined"))

            try await join(alice, "#dogs", members: ["Alice"])
            try await join(bob, "#dogs", members: ["Alice", "Bob"])
            #expect(try await alice.notification("chat") == presence("Bob", "joined", channel: "#dogs"))

            // Alice's desktop was her only connection in #dogs, not in #cats.
            await alice.disconnect()
            #expect(try await bob.notification("chat") == presence("Alice", "left", channel: "#dogs"))
            try await bob.expectIdle()

            await laptop.disconnect()
            #expect(try await bob.notification("chat") == presence("Alice", "left"))
            try await bob.expectIdle()
        }
    }

    @Test("read reaches the identity's other connections in the channel only")
    func read() async throws {
        try await ServiceCluster.with { cluster throws in
            let alice = cluster.a.connect(identity: "Alice")
            let laptop = cluster.a.connect(identity: "Alice")
            let phone = cluster.a.connect(identity: "Alice")
            let bob = cluster.a.connect(identity: "Bob")
            try await join(alice, members: ["Alice"])
            try await join(laptop, members: ["Alice"])
            try await join(bob, members: ["Alice", "Bob"])
            try await join(phone, "#dogs", members: ["Alice"])
            #expect(try await alice.notification("chat") == presence("Bob", "joined"))
            #expect(try await laptop.notification("chat") == presence("Bob", "joined"))

            #expect(try await alice.reply("chat", "read", ["channel": "#cats"]) == nil)
            #expect(try await laptop.notification("chat") == read())
            try await alice.expectIdle()
            try await bob.expectIdle()
            try await phone.expectIdle()
            #expect(try await phone.failure("chat", "read", ["channel": "#cats"]) == "Not joined")
        }
    }

    @Test("an identity set after joining does not change who speaks or leaves")
    func identityIsFixedAtJoin() async throws {
        try await ServiceCluster.with { cluster throws in
            let alice = cluster.a.connect(identity: "Alice")
            let bob = cluster.a.connect(identity: "Bob")
            try await join(alice, members: ["Alice"])
            try await join(bob, members: ["Alice", "Bob"])
            #expect(try await alice.notification("chat") == presence("Bob", "joined"))
            alice.client.setIdentity("Mallory")
            try await speak(alice, "Alice", "hi")
            #expect(try await bob.notification("chat") == message("Alice", "hi"))
            try await alice.reply("chat", "leave", ["channel": "#cats"])
            #expect(try await bob.notification("chat") == presence("Alice", "left"))
        }
    }

    // MARK: Cluster

    @Test("one identity on two nodes: one joined, messages and reads across nodes, one left")
    func identityOnTwoNodes() async throws {
        try await ServiceCluster.with(nodes: 2) { cluster throws in
            let bob = cluster.a.connect(identity: "Bob")
            let aliceOnA = cluster.a.connect(identity: "Alice")
            let aliceOnB = cluster.b.connect(identity: "Alice")
            let carolOnB = cluster.b.connect(identity: "Carol")
            try await join(bob, members: ["Bob"])
            try await join(aliceOnB, members: ["Alice", "Bob"])
            #expect(try await bob.notification("chat") == presence("Alice", "joined"))
            try await join(aliceOnA, members: ["Alice", "Bob"])
            try await bob.expectIdle()
            try await aliceOnB.expectIdle()
            try await join(carolOnB, members: ["Alice", "Bob", "Carol"])
            for client in [bob, aliceOnA, aliceOnB] {
                #expect(try await client.notification("chat") == presence("Carol", "joined"))
            }

            try await speak(carolOnB, "Carol", "from B")
            for client in [bob, aliceOnA, aliceOnB] {
                #expect(try await client.notification("chat") == message("Carol", "from B"))
            }
            try await aliceOnA.reply("chat", "read", ["channel": "#cats"])
            #expect(try await aliceOnB.notification("chat") == read())
            try await aliceOnB.reply("chat", "read", ["channel": "#cats"])
            #expect(try await aliceOnA.notification("chat") == read())

            await aliceOnB.disconnect()
            try await bob.expectIdle()
            try await carolOnB.expectIdle()
            try await aliceOnA.reply("chat", "leave", ["channel": "#cats"])
            #expect(try await bob.notification("chat") == presence("Alice", "left"))
            #expect(try await carolOnB.notification("chat") == presence("Alice", "left"))
        }
    }

    @Test("when a node dies, a survivor sends left for identities that had no other connection")
    func reapedPresence() async throws {
        try await ServiceCluster.with(nodes: 2) { cluster throws in
            let alice = cluster.a.connect(identity: "Alice")
            let carolOnA = cluster.a.connect(identity: "Carol")
            let bobOnB = cluster.b.connect(identity: "Bob")
            let carolOnB = cluster.b.connect(identity: "Carol")
            try await join(alice, members: ["Alice"])
            try await join(bobOnB, members: ["Alice", "Bob"])
            #expect(try await alice.notification("chat") == presence("Bob", "joined"))
            try await join(carolOnA, members: ["Alice", "Bob", "Carol"])
            try await join(carolOnB, members: ["Alice", "Bob", "Carol"])
            #expect(try await alice.notification("chat") == presence("Carol", "joined"))
            #expect(try await bobOnB.notification("chat") == presence("Carol", "joined"))

            try await cluster.b.kill()
            cluster.a.node.startLiveness(interval: .milliseconds(10), ttl: .seconds(30))
            // Bob was only on B; Carol still has a connection on A.
            #expect(try await alice.notification("chat") == presence("Bob", "left"))
            #expect(try await carolOnA.notification("chat") == presence("Bob", "left"))
            try await alice.expectIdle()
            #expect(try await cluster.state.members(of: "\"#cats\"", in: "chat") == ["Alice", "Carol"])
            try await carolOnA.reply("chat", "read", ["channel": "#cats"])
            try await carolOnA.expectIdle()
        }
    }

    @Test("an unreachable cluster state is Service unavailable, and a failed join leaves nothing behind")
    func stateUnavailable() async throws {
        try await ServiceCluster.with(state: UnavailableClusterState()) { cluster throws in
            let alice = cluster.a.connect(identity: "Alice")
            #expect(try await alice.failure("chat", "join", ["channel": "#cats"]) == "Service unavailable")
            #expect(try await alice.failure("chat", "send", ["channel": "#cats", "body": "x"]) == "Not joined")
            #expect(cluster.a.node.hub.topicCount == 0)
            #expect(alice.client.topicCount == 0)
            await alice.disconnect()
        }
    }
}
