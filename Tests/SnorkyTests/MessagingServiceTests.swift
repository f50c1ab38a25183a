import Logging
import Snorky
import SnorkyProtocol
import SnorkyServices
import Testing

/// The `messaging` service (PROTOCOL.md section 5): the cases of the original Snorky's
/// suite, the built-in naming rule, disconnects, and several nodes sharing the state.
@Suite("messaging service")
struct MessagingServiceTests {
    private func register(_ client: ServiceClient, _ name: JSON) async throws {
        #expect(try await client.reply("messaging", "registerParticipant", ["name": name]) == nil)
    }

    private func participants(_ client: ServiceClient) async throws -> JSON {
        try await client.reply("messaging", "listParticipants")
    }

    private func message(from sender: String, to dest: String, _ body: JSON) -> JSON {
        ["type": "message", "sender": .string(sender), "dest": .string(dest), "body": body]
    }

    // MARK: Registering

    @Test("registering a name replies null")
    func register() async throws {
        try await ServiceCluster.with { cluster throws in
            let alice = cluster.a.connect()
            try await register(alice, "Alice")
            #expect(try await participants(alice) == ["Alice"])
        }
    }

    @Test("two connections register two names")
    func registerTwo() async throws {
        try await ServiceCluster.with { cluster throws in
            let alice = cluster.a.connect()
            let bob = cluster.a.connect()
            try await register(alice, "Alice")
            try await register(bob, "Bob")
            #expect(try await participants(bob) == ["Alice", "Bob"])
        }
    }

    @Test("a name is registered once, by whichever connection asks first")
    func registerSameName() async throws {
        try await ServiceCluster.with { cluster throws in
            let alice = cluster.a.connect()
            let bob = cluster.a.connect()
            try await register(alice, "Alice")
            #expect(try await alice.failure("messaging", "registerParticipant", ["name": "Alice"]) == "Name already registered")
            #expect(try await bob.failure("messaging", "registerParticipant", ["name": "Alice"]) == "Name already registered")
            // Names compare as JSON strings do, code point by code point.
            try await register(bob, "alice")
            #expect(try await participants(bob) == ["Alice", "alice"])
        }
    }

    @Test("a policy hook refuses names with Name not allowed")
    func policyRefusesName() async throws {
        let policy = MessagingPolicy { _, name in !name.lowercased().contains("duck") }
        try await ServiceCluster.with(messagingPolicy: policy) { cluster throws in
            let alice = cluster.a.connect(identity: "alice")
            #expect(try await alice.failure("messaging", "registerParticipant", ["name": "DrDuck"]) == "Name not allowed")
            try await register(alice, "Alice")
            #expect(try await participants(alice) == ["Alice"])
        }
    }

    @Test("the built-in rule refuses empty, overlong, control-character and non-string names")
    func builtInNameRule() async throws {
        try await ServiceCluster.with { cluster throws in
            let alice = cluster.a.connect()
            let refused: [JSON] = [
                "", .string(String(repeating: "a", count: MessagingService.maxNameLength + 1)), "Al\u{0}ice", "Bob\n",
                "\u{7F}", "x\u{85}y", 42, nil, ["Alice"], ["name": "Alice"],
            ]
            for name in refused {
                #expect(try await alice.failure("messaging", "registerParticipant", ["name": name]) == "Name not allowed")
            }
            #expect(try await participants(alice) == [])
            // The limit is in UTF-8 bytes: 128 two-byte characters fit exactly.
            try await register(alice, .string(String(repeating: "é", count: MessagingService.maxNameLength / 2)))
            try await register(alice, "Zoë 🦆 the third")
            try await register(alice, " ")
            #expect(MessagingService.isAcceptableName("Ada Lovelace"))
            #expect(!MessagingService.isAcceptableName("tab\there"))
        }
    }

    @Test("a missing or extra parameter is Invalid params")
    func invalidParams() async throws {
        try await ServiceCluster.with { cluster throws in
            let alice = cluster.a.connect()
            #expect(try await alice.failure("messaging", "registerParticipant", [:]) == "Invalid params")
            #expect(try await alice.failure("messaging", "send", ["sender": "a", "dest": "b"]) == "Invalid params")
            #expect(try await alice.failure("messaging", "listParticipants", ["x": 1]) == "Invalid params")
        }
    }

    // MARK: Sending

    @Test("send delivers sender, dest and body to the destination only")
    func send() async throws {
        try await ServiceCluster.with { cluster throws in
            let alice = cluster.a.connect()
            let bob = cluster.a.connect()
            let carol = cluster.a.connect()
            try await register(alice, "Alice")
            try await register(bob, "Bob")
            try await register(carol, "Carol")
            #expect(try await alice.reply("messaging", "send", ["sender": "Alice", "dest": "Bob", "body": "Hi, Bob."]) == nil)
            #expect(try await bob.notification("messaging") == message(from: "Alice", to: "Bob", "Hi, Bob."))
            try await alice.expectIdle()
            try await bob.expectIdle()
            try await carol.expectIdle()
        }
    }

    @Test("a body is any JSON value, passed through unchanged")
    func bodyIsAnyJSON() async throws {
        try await ServiceCluster.with { cluster throws in
            let alice = cluster.a.connect()
            let bob = cluster.a.connect()
            try await register(alice, "Alice")
            try await register(bob, "Bob")
            let bodies: [JSON] = [["text": "hi", "tags": ["a", 1, nil, true], "n": 1.5], nil, 7, "ünïcödé"]
            for body in bodies {
                try await alice.reply("messaging", "send", ["sender": "Alice", "dest": "Bob", "body": body])
                #expect(try await bob.notification("messaging") == message(from: "Alice", to: "Bob", body))
            }
        }
    }

    @Test("sending as a name another connection holds is Invalid sender")
    func sendForgery() async throws {
        try await ServiceCluster.with { cluster throws in
            let alice = cluster.a.connect()
            let bob = cluster.a.connect()
            let carol = cluster.a.connect()
            try await register(alice, "Alice")
            try await register(bob, "Bob")
            try await register(carol, "Carol")
            #expect(try await alice.failure("messaging", "send", ["sender": "Carol", "dest": "Bob", "body": "Hi"]) == "Invalid sender")
            try await bob.expectIdle()
            try await carol.expectIdle()
        }
    }

    @Test("sending as an unregistered name is Invalid sender")
    func sendFromUnknownSender() async throws {
        try await ServiceCluster.with { cluster throws in
            let alice = cluster.a.connect()
            let bob = cluster.a.connect()
            try await register(alice, "Alice")
            try await register(bob, "Bob")
            #expect(try await alice.failure("messaging", "send", ["sender": "Charlie", "dest": "Bob", "body": "Hi"]) == "Invalid sender")
            #expect(try await alice.failure("messaging", "send", ["sender": 1, "dest": "Bob", "body": "Hi"]) == "Invalid sender")
            // The sender is checked before the destination.
            #expect(try await alice.failure("messaging", "send", ["sender": "Charlie", "dest": "Nobody", "body": "Hi"]) == "Invalid sender")
            try await bob.expectIdle()
        }
    }

    @Test("sending to an unregistered name is Unknown destination")
    func sendToUnknownDestination() async throws {
        try await ServiceCluster.with { cluster throws in
            let alice = cluster.a.connect()
            try await register(alice, "Alice")
            #expect(try await alice.failure("messaging", "send", ["sender": "Alice", "dest": "Charlie", "body": "Hi"]) == "Unknown destination")
            #expect(try await alice.failure("messaging", "send", ["sender": "Alice", "dest": ["Bob"], "body": "Hi"]) == "Unknown destination")
        }
    }

    @Test("a connection may send to a name it holds itself, notification before reply")
    func sendToSelf() async throws {
        try await ServiceCluster.with { cluster throws in
            let alice = cluster.a.connect()
            try await register(alice, "Alice")
            try await register(alice, "Alice's echo")
            alice.send("messaging", "send", ["sender": "Alice", "dest": "Alice's echo", "body": "note to self"], callId: "c")
            #expect(try await alice.notification("messaging") == message(from: "Alice", to: "Alice's echo", "note to self"))
            #expect(try await alice.next() == ["service": "messaging", "message": ["type": "response", "callId": "c", "data": nil]])
        }
    }

    @Test("one connection holds several names, sends as any and receives for all")
    func severalNamesPerConnection() async throws {
        try await ServiceCluster.with { cluster throws in
            let alice = cluster.a.connect()
            let bob = cluster.a.connect()
            try await register(alice, "Alice")
            try await register(alice, "Support")
            try await register(bob, "Bob")
            try await alice.reply("messaging", "send", ["sender": "Support", "dest": "Bob", "body": 1])
            #expect(try await bob.notification("messaging") == message(from: "Support", to: "Bob", 1))
            try await bob.reply("messaging", "send", ["sender": "Bob", "dest": "Support", "body": 2])
            try await bob.reply("messaging", "send", ["sender": "Bob", "dest": "Alice", "body": 3])
            #expect(try await alice.notification("messaging") == message(from: "Bob", to: "Support", 2))
            #expect(try await alice.notification("messaging") == message(from: "Bob", to: "Alice", 3))
        }
    }

    // MARK: Listing and unregistering

    @Test("listParticipants is sorted")
    func listParticipants() async throws {
        try await ServiceCluster.with { cluster throws in
            let clients = (0..<3).map { _ in cluster.a.connect() }
            try await register(clients[0], "Carol")
            try await register(clients[1], "Alice")
            try await register(clients[2], "Bob")
            #expect(try await participants(clients[0]) == ["Alice", "Bob", "Carol"])
        }
    }

    @Test("an unregistered name can no longer be reached and is not listed")
    func unregister() async throws {
        try await ServiceCluster.with { cluster throws in
            let alice = cluster.a.connect()
            let bob = cluster.a.connect()
            try await register(alice, "Alice")
            try await register(bob, "Bob")
            #expect(try await bob.reply("messaging", "unregisterParticipant", ["name": "Bob"]) == nil)
            #expect(try await alice.failure("messaging", "send", ["sender": "Alice", "dest": "Bob", "body": "gone?"]) == "Unknown destination")
            #expect(try await participants(alice) == ["Alice"])
            // And Bob may no longer send as Bob.
            #expect(try await bob.failure("messaging", "send", ["sender": "Bob", "dest": "Alice", "body": "x"]) == "Invalid sender")
            // The name is free for anyone.
            try await register(alice, "Bob")
        }
    }

    @Test("unregistering a name nobody holds is Unknown participant")
    func unregisterUnknown() async throws {
        try await ServiceCluster.with { cluster throws in
            let bob = cluster.a.connect()
            try await register(bob, "Bob")
            #expect(try await bob.failure("messaging", "unregisterParticipant", ["name": "Charlie"]) == "Unknown participant")
            #expect(try await bob.failure("messaging", "unregisterParticipant", ["name": 3]) == "Unknown participant")
        }
    }

    @Test("unregistering another connection's name is Invalid participant and changes nothing")
    func unregisterOthersName() async throws {
        try await ServiceCluster.with { cluster throws in
            let alice = cluster.a.connect()
            let bob = cluster.a.connect()
            try await register(alice, "Alice")
            try await register(bob, "Bob")
            #expect(try await bob.failure("messaging", "unregisterParticipant", ["name": "Alice"]) == "Invalid participant")
            #expect(try await participants(alice) == ["Alice", "Bob"])
            try await bob.reply("messaging", "send", ["sender": "Bob", "dest": "Alice", "body": "still there"])
            #expect(try await alice.notification("messaging") == message(from: "Bob", to: "Alice", "still there"))
        }
    }

    @Test("a disconnect frees every name of the connection, and only those")
    func disconnectFreesNames() async throws {
        try await ServiceCluster.with { cluster throws in
            let alice = cluster.a.connect()
            let bob = cluster.a.connect()
            try await register(alice, "Alice")
            try await register(alice, "Support")
            try await register(bob, "Bob")
            await alice.disconnect()
            #expect(try await participants(bob) == ["Bob"])
            #expect(try await bob.failure("messaging", "send", ["sender": "Bob", "dest": "Alice", "body": "x"]) == "Unknown destination")
            try await register(bob, "Support")
            #expect(try await participants(bob) == ["Bob", "Support"])
            #expect(try await cluster.state.names(in: "messaging") == ["Bob", "Support"])
        }
    }

    // MARK: Cluster

    @Test("names are unique and listed cluster-wide, and messages reach a participant on another node")
    func acrossNodes() async throws {
        try await ServiceCluster.with(nodes: 2) { cluster throws in
            let alice = cluster.a.connect()
            let bob = cluster.b.connect()
            try await register(alice, "Alice")
            #expect(try await bob.failure("messaging", "registerParticipant", ["name": "Alice"]) == "Name already registered")
            try await register(bob, "Bob")
            #expect(try await participants(alice) == ["Alice", "Bob"])
            #expect(try await participants(bob) == ["Alice", "Bob"])

            try await alice.reply("messaging", "send", ["sender": "Alice", "dest": "Bob", "body": "from A"])
            #expect(try await bob.notification("messaging") == message(from: "Alice", to: "Bob", "from A"))
            try await bob.reply("messaging", "send", ["sender": "Bob", "dest": "Alice", "body": "from B"])
            #expect(try await alice.notification("messaging") == message(from: "Bob", to: "Alice", "from B"))
            // A node cannot vouch for another node's connection.
            #expect(try await bob.failure("messaging", "send", ["sender": "Alice", "dest": "Bob", "body": "x"]) == "Invalid sender")
            #expect(try await bob.failure("messaging", "unregisterParticipant", ["name": "Alice"]) == "Invalid participant")

            await bob.disconnect()
            #expect(try await participants(alice) == ["Alice"])
            try await alice.expectIdle()
        }
    }

    @Test("the names of a node that died are reaped and free again")
    func reapedNamesAreFree() async throws {
        try await ServiceCluster.with(nodes: 2) { cluster throws in
            let alice = cluster.a.connect()
            let bob = cluster.b.connect()
            try await register(alice, "Alice")
            try await register(bob, "Bob")
            try await cluster.b.kill()
            let reaped = try await cluster.state.reapDeadNodes(survivor: "A")
            #expect(reaped.names.map(\.name) == ["Bob"])
            for name in cluster.a.node.serviceNames {
                await cluster.a.node.service(named: name)?.stateReaped(reaped)
            }
            #expect(try await participants(alice) == ["Alice"])
            let bobAgain = cluster.a.connect()
            try await register(bobAgain, "Bob")
            try await alice.reply("messaging", "send", ["sender": "Alice", "dest": "Bob", "body": "welcome back"])
            #expect(try await bobAgain.notification("messaging") == message(from: "Alice", to: "Bob", "welcome back"))
        }
    }

    @Test("an unreachable cluster state is Service unavailable")
    func stateUnavailable() async throws {
        try await ServiceCluster.with(state: UnavailableClusterState()) { cluster throws in
            let alice = cluster.a.connect()
            #expect(try await alice.failure("messaging", "registerParticipant", ["name": "Alice"]) == "Service unavailable")
            #expect(try await alice.failure("messaging", "listParticipants") == "Service unavailable")
            #expect(try await alice.failure("messaging", "send", ["sender": "Alice", "dest": "Bob", "body": 1]) == "Service unavailable")
            #expect(try await alice.failure("messaging", "unregisterParticipant", ["name": "Alice"]) == "Service unavailable")
            // Still refused by the rule before the state is asked.
            #expect(try await alice.failure("messaging", "registerParticipant", ["name": ""]) == "Name not allowed")
            await alice.disconnect()
        }
    }

    @Test("BuiltinServices registers messaging, chat and cursors")
    func builtinRegistration() async throws {
        let node = Node(id: "builtin", bus: InMemoryBus(), logger: .init(label: "test", factory: { _ in SwiftLogNoOpLogHandler() }))
        BuiltinServices.register(on: node)
        #expect(node.service(named: "messaging") is MessagingService)
        #expect(node.service(named: "chat") is ChatService)
        #expect(node.service(named: "cursors") is CursorsService)
    }
}
