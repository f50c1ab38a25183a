import Logging
import NIOCore
import Snorky
import SnorkyExamples
import Testing

/// The seed's two examples, as shipped in `Sources/SnorkyExamples`, driven through a node.
@Suite("Examples: calculator and minimal pubsub")
struct ExamplesTests {
    func node() -> Node {
        let node = Node(id: "examples", bus: InMemoryBus(), logger: Logger(label: "examples"))
        node.register(SnorkyExamples.Calculator())
        node.register(SnorkyExamples.MinimalPubSub(node: node))
        return node
    }

    func call(_ client: Client, _ service: String, _ command: String, _ params: JSON, callId: Int) {
        let message: JSON = ["service": .string(service), "message": ["command": .string(command), "params": params, "callId": .int(Int64(callId))]]
        client.didReceive(text: ByteBuffer(string: message.encodedString()))
    }

    @Test("calculator: sum, log with a base, log with the default base 2.718, errors")
    func calculator() async throws {
        let node = node()
        let (client, transport) = RecordingTransport.connect(to: node)
        call(client, "calculator", "sum", ["number1": 1, "number2": 2], callId: 1)
        #expect(try await transport.next() == ["service": "calculator", "message": ["type": "response", "callId": 1, "data": 3.0]])

        call(client, "calculator", "log", ["number": 8, "base": 2], callId: 2)
        let withBase = try await transport.next()
        #expect(abs((withBase["message"]?["data"]?.doubleValue ?? 0) - 3) < 1e-9)

        call(client, "calculator", "log", ["number": 2.718], callId: 3)
        let withDefault = try await transport.next()
        #expect(abs((withDefault["message"]?["data"]?.doubleValue ?? 0) - 1) < 1e-9)

        call(client, "calculator", "log", ["number": -1], callId: 4)
        #expect(try await transport.next() == ["service": "calculator", "message": ["type": "error", "callId": 4, "message": "Math domain error"]])

        call(client, "calculator", "sum", ["number1": 1], callId: 5)
        #expect(try await transport.next() == ["service": "calculator", "message": ["type": "error", "callId": 5, "message": "Invalid params"]])
    }

    @Test("minimal pubsub: subscribers get publications; a second subscribe is refused")
    func minimalPubSub() async throws {
        let node = node()
        try await node.start()  // connects the bus to the node
        let (alice, aliceTransport) = RecordingTransport.connect(to: node)
        let (bob, bobTransport) = RecordingTransport.connect(to: node)
        call(alice, "minipubsub", "subscribe", ["channel": "news"], callId: 1)
        #expect(try await aliceTransport.next() == ["service": "minipubsub", "message": ["type": "response", "callId": 1, "data": nil]])
        call(alice, "minipubsub", "subscribe", ["channel": "news"], callId: 2)
        #expect(try await aliceTransport.next()["message"]?["message"] == "Already subscribed")

        call(bob, "minipubsub", "publish", ["channel": "news", "message": ["hello": "world"]], callId: 3)
        #expect(try await bobTransport.next() == ["service": "minipubsub", "message": ["type": "response", "callId": 3, "data": nil]])
        #expect(
            try await aliceTransport.next()
                == ["service": "minipubsub", "message": ["type": "message", "channel": "news", "message": ["hello": "world"]]])
    }
}
