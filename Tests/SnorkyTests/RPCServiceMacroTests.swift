import Foundation
import Logging
import NIOCore
import Snorky
import SnorkyProtocol
import Testing

// Real services written with @RPCService / @Command, driven through a Node the way the
// server drives it: frames in through `Client.didReceive`, frames out through a
// RecordingTransport. The types are private so they cannot clash with other test files.

/// The seed's calculator.
@RPCService
private actor Calculator {
    let name = "calculator"

    @Command func sum(number1: Double, number2: Double) -> Double { number1 + number2 }

    @Command func log(number: Double, base: Double = 2.718) -> Double {
        Foundation.log(number) / Foundation.log(base)
    }
}

private struct Boom: Error {}

/// Commands exercising errors, async, deferral and injection.
@RPCService
private actor Desk {
    let name = "desk"
    private var held: [Request] = []

    @Command func forbidden() throws -> Int { throw RPCError("Not authorized") }

    @Command func explode() throws { throw Boom() }

    @Command func double(value: Int) async -> Int {
        await Task.yield()
        return value * 2
    }

    @Command func whoami(client: Client) -> JSON {
        ["identity": client.identity.map(JSON.string) ?? .null, "client": .int(Int64(client.id))]
    }

    @Command func ping() -> String { "pong" }

    /// Deferred: answered by `release`.
    @Command func hold(request: Request) { held.append(request) }

    /// Resolves every held request twice; only the first resolution may reach the caller.
    @Command func release(with value: String) -> Int {
        let count = held.count
        for request in held {
            request.reply(value)
            request.fail("resolved twice")
        }
        held = []
        return count
    }

    /// Deferred, but drops the request without resolving it.
    @Command func forget(request: Request) {}
}

/// Spellings the generated code has to get right; each command echoes what it bound.
@RPCService
private final class Spellings: Sendable {
    let name = "spellings"

    // `_` label: bound by the parameter's name, passed positionally.
    @Command func positional(_ text: String, times: Int = 1) -> String {
        String(repeating: text, count: times)
    }

    // Label and name differ: bound by the label.
    @Command func labelled(from start: Int, to end: Int) -> Int { end - start }

    // Parameter names the generated code itself uses.
    @Command func shadows(binder: String, params: Int, command: Bool) -> JSON {
        ["binder": .string(binder), "params": .int(Int64(params)), "command": .bool(command)]
    }

    // A keyword as a name, an optional that is still required, an array with a default.
    @Command func `default`(`in`: String?, tags: [String] = ["a", "b"]) -> JSON {
        ["in": `in`.map(JSON.string) ?? .null, "tags": tags.json]
    }

    // Renamed: answers to "delete" only.
    @Command("delete") func remove(key: String) -> String { key }

    // A static command, typed throws, and a second name.
    @Command @Command("alias") static func checked(value: Int) throws(RPCError) -> Int {
        guard value >= 0 else { throw RPCError("Negative") }
        return value
    }

    // Void spelled out, and a command only compiled in one configuration.
    #if DEBUG
    @Command func configuration() -> String { "debug" }
    #else
    @Command func configuration() -> String { "release" }
    #endif

    @Command func nothing() -> Void {}
}

/// A node with the test services and one connected client.
private struct Harness {
    let node: Node
    let client: Client
    let transport: RecordingTransport

    init(identity: String? = nil) {
        let node = Node(id: "test", bus: InMemoryBus(), logger: Logger(label: "test", factory: { _ in SwiftLogNoOpLogHandler() }))
        node.register(Calculator())
        node.register(Desk())
        node.register(Spellings())
        self.init(node: node, identity: identity)
    }

    /// Another client of the same node.
    init(node: Node, identity: String? = nil) {
        self.node = node
        (client, transport) = RecordingTransport.connect(to: node, identity: identity)
    }

    /// Sends `{"service": service, "message": {"command", "params", "callId"}}`.
    func send(_ service: String, _ command: String, params: JSON = [:], callId: JSON? = 1) {
        var message: JSONObject = ["command": .string(command), "params": params]
        if let callId { message["callId"] = callId }
        let envelope: JSON = ["service": .string(service), "message": .object(message)]
        client.didReceive(text: ByteBuffer(string: envelope.encodedString()))
    }

    /// Sends a call and returns the next frame's `message`, checking it is on `service`.
    func call(_ service: String, _ command: String, params: JSON = [:], callId: JSON? = 1) async throws -> JSON {
        send(service, command, params: params, callId: callId)
        return try await message(on: service)
    }

    func message(on service: String) async throws -> JSON {
        let frame = try await transport.next()
        #expect(frame["service"] == .string(service))
        return try #require(frame["message"])
    }
}

private func response(_ callId: JSON, _ data: JSON) -> JSON {
    ["type": "response", "callId": callId, "data": data]
}

private func error(_ callId: JSON, _ message: String) -> JSON {
    ["type": "error", "callId": callId, "message": .string(message)]
}

@Suite struct RPCServiceMacroTests {
    @Test func sumRepliesWithTheWholeEnvelope() async throws {
        let harness = Harness()
        harness.send("calculator", "sum", params: ["number1": 1, "number2": 2])
        let frame = try await harness.transport.next()
        // JSON equality ignores key order.
        #expect(frame == ["service": "calculator", "message": ["type": "response", "callId": 1, "data": 3.0]])
    }

    @Test func logUsesTheDefaultBaseUnlessGiven() async throws {
        let harness = Harness()
        let natural = try await harness.call("calculator", "log", params: ["number": 100])
        let expected = Foundation.log(100.0) / Foundation.log(2.718)
        #expect(natural == response(1, .double(expected)))

        let decimal = try await harness.call("calculator", "log", params: ["number": 100, "base": 10], callId: 2)
        let value = try #require(decimal["data"]?.doubleValue)
        #expect(abs(value - 2) < 1e-12)
        #expect(decimal["callId"] == 2)
    }

    @Test(arguments: [
        ["number1": 1] as JSON,  // missing
        ["number1": 1, "number2": 2, "number3": 3],  // extra
        ["number1": 1, "number2": "two"],  // wrong type
        [1, 2],  // not an object
        "number1=1&number2=2",
        .null,
    ])
    func badParamsAreInvalidParams(params: JSON) async throws {
        let harness = Harness()
        let reply = try await harness.call("calculator", "sum", params: params, callId: 9)
        #expect(reply == error(9, "Invalid params"))
    }

    @Test func unknownCommandIsCheckedBeforeParams() async throws {
        let harness = Harness()
        let reply = try await harness.call("calculator", "divide", params: [1, 2], callId: 3)
        #expect(reply == error(3, "Unknown command"))
        // Without a callId the error still carries one, as null.
        let anonymous = try await harness.call("calculator", "divide", params: "nonsense", callId: nil)
        #expect(anonymous == error(.null, "Unknown command"))
    }

    @Test func onlyDeclaredNamesAreCommands() async throws {
        let harness = Harness()
        #expect(try await harness.call("spellings", "delete", params: ["key": "k"]) == response(1, "k"))
        // A renamed command does not answer to its Swift name, nor is `performCommand` a command.
        #expect(try await harness.call("spellings", "remove", params: ["key": "k"]) == error(1, "Unknown command"))
        #expect(try await harness.call("calculator", "performCommand") == error(1, "Unknown command"))
    }

    @Test func rpcErrorMessageReachesTheCaller() async throws {
        let harness = Harness()
        #expect(try await harness.call("desk", "forbidden") == error(1, "Not authorized"))
    }

    @Test func otherErrorsBecomeInternalError() async throws {
        let harness = Harness()
        #expect(try await harness.call("desk", "explode") == error(1, "Internal error"))
    }

    @Test func asyncCommandIsAwaited() async throws {
        let harness = Harness()
        #expect(try await harness.call("desk", "double", params: ["value": 21]) == response(1, 42))
    }

    @Test func clientIsInjectedAndNotAParam() async throws {
        let harness = Harness(identity: "alice")
        let reply = try await harness.call("desk", "whoami")
        #expect(reply == response(1, ["identity": "alice", "client": .int(Int64(harness.client.id))]))
        // The injected parameter is not a key callers may send.
        let smuggled = try await harness.call("desk", "whoami", params: ["client": 1], callId: 2)
        #expect(smuggled == error(2, "Invalid params"))
    }

    @Test func deferredCommandIsResolvedLaterExactlyOnce() async throws {
        let harness = Harness()
        let other = Harness(node: harness.node)
        harness.send("desk", "hold", callId: "held")
        // Frames are handled in order, so the ping's answer coming first shows `hold` did
        // not answer by itself.
        #expect(try await harness.call("desk", "ping", callId: 2) == response(2, "pong"))

        // Another client's event resolves it; the second resolution is dropped.
        other.send("desk", "release", params: ["with": "done"], callId: 7)
        #expect(try await harness.message(on: "desk") == response("held", "done"))
        #expect(try await other.message(on: "desk") == response(7, 1))

        // Nothing else reached the first client: its next frame answers its next call.
        #expect(try await harness.call("desk", "ping", callId: 3) == response(3, "pong"))
    }

    @Test func droppedDeferredRequestAnswersInternalError() async throws {
        let harness = Harness()
        #expect(try await harness.call("desk", "forget", callId: 5) == error(5, "Internal error"))
    }

    @Test func labelsNamesAndDefaultsBindAsDeclared() async throws {
        let harness = Harness()
        #expect(try await harness.call("spellings", "positional", params: ["text": "ab", "times": 3]) == response(1, "ababab"))
        #expect(try await harness.call("spellings", "positional", params: ["text": "ab"]) == response(1, "ab"))
        #expect(try await harness.call("spellings", "labelled", params: ["from": 2, "to": 5]) == response(1, 3))
        #expect(try await harness.call("spellings", "labelled", params: ["start": 2, "end": 5]) == error(1, "Invalid params"))
        #expect(
            try await harness.call("spellings", "shadows", params: ["binder": "b", "params": 2, "command": true])
                == response(1, ["binder": "b", "params": 2, "command": true])
        )
    }

    @Test func keywordNamesOptionalsAndArrays() async throws {
        let harness = Harness()
        #expect(try await harness.call("spellings", "default", params: ["in": nil]) == response(1, ["in": nil, "tags": ["a", "b"]]))
        #expect(
            try await harness.call("spellings", "default", params: ["in": "x", "tags": ["c"]])
                == response(1, ["in": "x", "tags": ["c"]])
        )
        // An optional without a default is still required.
        #expect(try await harness.call("spellings", "default", params: [:]) == error(1, "Invalid params"))
    }

    @Test func staticCommandsTypedThrowsAndAliases() async throws {
        let harness = Harness()
        #expect(try await harness.call("spellings", "checked", params: ["value": 4]) == response(1, 4))
        #expect(try await harness.call("spellings", "alias", params: ["value": 5]) == response(1, 5))
        #expect(try await harness.call("spellings", "checked", params: ["value": -1]) == error(1, "Negative"))
    }

    @Test func conditionalCommandsAndVoid() async throws {
        let harness = Harness()
        #if DEBUG
        let configuration = "debug"
        #else
        let configuration = "release"
        #endif
        #expect(try await harness.call("spellings", "configuration") == response(1, .string(configuration)))
        #expect(try await harness.call("spellings", "nothing") == response(1, nil))
        // Without a callId, a success omits it.
        #expect(try await harness.call("spellings", "nothing", callId: nil) == ["type": "response", "data": nil])
    }
}

/// The recording transport's own contract, which other suites rely on. Nested so the
/// `RPCServiceMacroTests` filter runs it too.
extension RPCServiceMacroTests {
    @Suite struct RecordingTransportTests {
        @Test func framesComeOutInOrderWhetherWrittenBeforeOrAfterWaiting() async throws {
            let transport = RecordingTransport()
            transport.eventLoop.execute { transport.write(OutboundFrame(service: "a", message: 1)) }
            transport.eventLoop.execute { transport.write(OutboundFrame(service: "a", message: 2)) }
            #expect(try await transport.next() == ["service": "a", "message": 1])
            #expect(try await transport.next() == ["service": "a", "message": 2])
            // Not yet written: `next` waits for it.
            async let third = transport.next()
            transport.eventLoop.execute { transport.write(OutboundFrame(service: "a", message: 3)) }
            #expect(try await third == ["service": "a", "message": 3])
            #expect(transport.payloads.count == 3)
        }

        @Test func nextTimesOutAndExpectNothingFailsOnAFrame() async throws {
            let transport = RecordingTransport()
            await #expect(throws: RecordingTransport.Timeout.self) { try await transport.next(timeout: .milliseconds(20)) }
            try await transport.expectNothing(for: .milliseconds(20))
            transport.eventLoop.execute { transport.write(OutboundFrame(service: "a", message: "late")) }
            await #expect(throws: RecordingTransport.UnexpectedFrame.self) {
                try await transport.expectNothing(for: .seconds(5))
            }
        }

        @Test func recordsTheFirstCloseCode() async throws {
            let (client, transport) = RecordingTransport.connect(to: Node(id: "t", bus: InMemoryBus(), logger: Logger(label: "t")))
            #expect(transport.closeCode == nil)
            client.close(code: 1008, reason: "policy")
            client.close(code: 1000)
            // Closes travel the loop's queue in order with frames: once a frame sent after
            // them arrives, both closes have been handed to the transport.
            client.send(service: "a", message: "after")
            _ = try await transport.next()
            #expect(transport.closeCode == 1008)
            #expect(transport.closeReason == "policy")
        }
    }
}
