import Dispatch
import Logging
import NIOCore
import NIOPosix
import Snorky
import SnorkyProtocol
import SnorkyServices
import Synchronization
import Testing

// MARK: - Fixtures

/// A node on an in-memory bus with the built-in services, plus a probe service and a
/// disconnect observer, driven through `RecordingTransport`s.
private struct TestNode {
    let node: Node
    let bus: InMemoryBus
    let disconnects: DisconnectWaiter
    /// Topics the node itself holds on the bus (its inbox), before any client subscribes.
    let baselineTopics: Set<String>

    /// The bus topics held for clients' subscriptions.
    var clientTopics: Set<String> {
        bus.subscribedTopics.subtracting(baselineTopics)
    }

    static func start(
        policy: PubSubPolicy = PubSubPolicy(),
        budget: ProtocolErrorBudget = ProtocolErrorBudget(),
        maxQueuedFrames: Int? = nil
    ) async throws -> TestNode {
        let bus = InMemoryBus()
        var configuration = NodeConfiguration()
        configuration.protocolErrorBudget = budget
        if let maxQueuedFrames { configuration.maxQueuedFrames = maxQueuedFrames }
        let node = Node(id: "test-node", bus: bus, configuration: configuration, logger: Logger(label: "NodeProtocolTests"))
        var options = BuiltinServiceOptions()
        options.pubSubPolicy = policy
        BuiltinServices.register(on: node, options: options)
        node.register(ProbeService())
        let disconnects = DisconnectWaiter()
        // Registered last: it hears of a disconnect after the node dropped the topics.
        node.register(disconnects)
        try await node.start()
        return TestNode(node: node, bus: bus, disconnects: disconnects, baselineTopics: bus.subscribedTopics)
    }

    var probe: ProbeService {
        node.service(named: "probe") as! ProbeService
    }

    func connect(identity: String? = nil) -> Connection {
        let (client, transport) = RecordingTransport.connect(to: node, identity: identity)
        return Connection(client: client, transport: transport)
    }

    /// The hub/bus topic of a pubsub channel.
    func topic(_ channel: JSON) -> String {
        (node.service(named: "pubsub") as! PubSubService).topic(for: channel)
    }

    func shutdown() async {
        await node.shutdown()
    }
}

private struct Connection {
    let client: Client
    let transport: RecordingTransport

    func send(_ text: String) {
        client.didReceive(text: ByteBuffer(string: text))
    }

    func send(bytes: [UInt8]) {
        client.didReceive(text: ByteBuffer(bytes: bytes))
    }

    func send(service: String, _ message: JSON) {
        send(Envelope(service: service, message: message).json.encodedString())
    }

    func call(_ service: String, _ command: String, _ params: JSON, callId: JSON? = nil) {
        var message: JSONObject = ["command": .string(command), "params": params]
        if let callId { message["callId"] = callId }
        send(service: service, .object(message))
    }

    func next() async throws -> JSON {
        try await transport.next(timeout: .seconds(5))
    }

    /// Sends a request and returns the whole envelope of the next frame.
    func request(_ service: String, _ command: String, _ params: JSON, callId: JSON? = nil) async throws -> JSON {
        call(service, command, params, callId: callId)
        return try await next()
    }

    /// Subscribes and checks the exact success frame.
    func subscribe(_ channel: JSON, callId: JSON = 1) async throws {
        let reply = try await request("pubsub", "subscribe", ["channel": channel], callId: callId)
        #expect(reply == response("pubsub", callId: callId))
    }

    func disconnect() {
        client.didDisconnect()
    }

    /// Proves nothing else is pending for this connection: a request's reply must be the
    /// very next frame. (Publications are queued for the subscriber's loop before the
    /// publisher's response, so anything that was going to arrive would arrive first.)
    func expectIdle(sourceLocation: SourceLocation = #_sourceLocation) async throws {
        let reply = try await request("probe", "echo", ["value": "idle"], callId: "idle")
        #expect(reply == response("probe", callId: "idle", data: "idle"), "unexpected frame", sourceLocation: sourceLocation)
    }
}

/// A lock-protected value a `@Sendable` closure can capture (a `Mutex` cannot be captured).
private final class Locked<Value: Sendable>: Sendable {
    private let mutex: Mutex<Value>

    init(_ value: Value) {
        mutex = Mutex(value)
    }

    func withLock<Result: Sendable>(_ body: (inout Value) -> Result) -> Result {
        mutex.withLock { body(&$0) }
    }
}

private func response(_ service: String, callId: JSON?, data: JSON = nil) -> JSON {
    Envelope(service: service, message: RPCMessage.response(callId: callId, data: data)).json
}

private func error(_ service: String, callId: JSON?, _ message: String) -> JSON {
    Envelope(service: service, message: RPCMessage.error(callId: callId, message: message)).json
}

private func protocolError(_ message: String) -> JSON {
    RPCMessage.protocolError(message).json
}

private func notification(channel: JSON, message: JSON) -> JSON {
    ["service": "pubsub", "message": ["type": "message", "channel": channel, "message": message]]
}

/// A service exercising the RPC rules of PROTOCOL.md section 2 that pubsub does not:
/// defaults, `Internal error`, custom errors, deferred and double replies.
@RPCService
private final class ProbeService: Sendable {
    let name = "probe"

    struct Failure: Error {}

    @Command func echo(value: JSON) -> JSON { value }
    @Command func add(a: Int, b: Int = 10) -> Int { a + b }
    @Command func boom() throws { throw Failure() }
    @Command func refuse() throws { throw RPCError("Custom failure") }
    @Command func later(request: Request) {
        Task {
            await Task.yield()
            request.reply("late")
        }
    }
    @Command func twice(request: Request) {
        request.reply(1)
        request.reply(2)
        request.fail("no")
    }
    @Command func drop(request: Request) {}
    @Command func whoami(client: Client) -> String? { client.identity }
    @Command func notify(client: Client) {
        // A notification sent before the reply reaches the caller first.
        client.send(service: name, message: ["type": "note"])
    }
    @Command func callIdSeen(request: Request) {
        request.reply(request.callId.map { ["present": $0] as JSON } ?? "absent")
    }

    let gate = Gate()
    /// Holds the connection's inbound queue until the test opens the gate.
    @Command func block() async { await gate.pass() }
}

/// A one-shot gate: `pass` waits until `open`; `waitUntilWaiting` returns once someone waits.
private final class Gate: Sendable {
    private struct State {
        var isOpen = false
        var passers: [CheckedContinuation<Void, Never>] = []
        var watchers: [CheckedContinuation<Void, Never>] = []
    }

    private let state = Mutex(State())

    func pass() async {
        await withCheckedContinuation { continuation in
            let (enter, watchers) = state.withLock { state -> (Bool, [CheckedContinuation<Void, Never>]) in
                defer { state.watchers = [] }
                if state.isOpen { return (true, state.watchers) }
                state.passers.append(continuation)
                return (false, state.watchers)
            }
            for watcher in watchers { watcher.resume() }
            if enter { continuation.resume() }
        }
    }

    func waitUntilWaiting() async {
        await withCheckedContinuation { continuation in
            let ready = state.withLock { state in
                if !state.passers.isEmpty { return true }
                state.watchers.append(continuation)
                return false
            }
            if ready { continuation.resume() }
        }
    }

    func open() {
        let passers = state.withLock { state in
            state.isOpen = true
            defer { state.passers = [] }
            return state.passers
        }
        for passer in passers { passer.resume() }
    }
}

/// A transport that behaves like a WebSocket channel: `close` takes effect on its event loop
/// (from another thread it is queued there, as `ChannelTransport` does), and nothing is
/// written after it. Records writes and the close in the order the loop saw them.
private final class LoopClosingTransport: Transport {
    let eventLoop: any EventLoop
    let writeState = TransportWriteState()
    private let state = Mutex<(log: [String], closed: Bool)>(([], false))

    init(eventLoop: any EventLoop) {
        self.eventLoop = eventLoop
    }

    func write(_ frame: OutboundFrame) {
        state.withLock { state in
            if !state.closed { state.log.append(frame.payloadString) }
        }
    }

    func flush() {}

    func close(code: UInt16, reason: String) {
        let apply: @Sendable () -> Void = {
            self.state.withLock { state in
                if !state.closed {
                    state.closed = true
                    state.log.append("close \(code)")
                }
            }
        }
        if eventLoop.inEventLoop { apply() } else { eventLoop.execute(apply) }
    }

    var log: [String] { state.withLock { $0.log } }
}

/// The framework layer's side of PROTOCOL.md sections 2-3 and pubsub, on an in-memory bus.
@Suite("Node protocol")
struct NodeProtocolTests {}

// MARK: - Section 3: protocol errors

extension NodeProtocolTests {
    @Suite("Node: protocol errors (PROTOCOL.md section 3)")
    struct ProtocolErrors {
        /// After a protocol error the same connection still serves a request.
        private func expectStillUsable(_ connection: Connection, _ context: String) async throws {
            let reply = try await connection.request("probe", "echo", ["value": "alive"], callId: "usable")
            #expect(reply == response("probe", callId: "usable", data: "alive"), "\(context)")
            #expect(connection.transport.closeCode == nil, "\(context)")
        }

        @Test(
            "text that is not JSON: Invalid JSON on the snorky service, connection stays usable",
            arguments: [
                "", "hello", "{", "{\"service\":\"pubsub\"", "[1,]", "{'service':'pubsub','message':{}}", "nul",
                "{\"service\":\"pubsub\",\"message\":{}} x", "\"\\ud800\"", "1e400",
                String(repeating: "[", count: 200) + String(repeating: "]", count: 200),
            ]
        )
        func invalidJSON(text: String) async throws {
            let node = try await TestNode.start()
            let connection = node.connect()
            connection.send(text)
            #expect(try await connection.next() == protocolError("Invalid JSON"))
            try await expectStillUsable(connection, text)
            await node.shutdown()
        }

        @Test("a text frame whose bytes are not UTF-8 is Invalid JSON at the node layer")
        func invalidUTF8() async throws {
            let node = try await TestNode.start()
            let connection = node.connect()
            connection.send(bytes: [0x7B, 0x22, 0xFF, 0x22, 0x3A, 0x31, 0x7D])
            #expect(try await connection.next() == protocolError("Invalid JSON"))
            try await expectStillUsable(connection, "invalid UTF-8")
            await node.shutdown()
        }

        @Test(
            "JSON that is not an object or lacks service/message: Malformed message",
            arguments: [
                "[]", "1", "null", "\"pubsub\"", "{}", #"{"service":"pubsub"}"#, #"{"message":{}}"#,
                #"{"service":1,"message":{}}"#, #"{"service":null,"message":{}}"#, #"{"service":["pubsub"],"message":{}}"#,
            ]
        )
        func malformedMessage(text: String) async throws {
            let node = try await TestNode.start()
            let connection = node.connect()
            connection.send(text)
            #expect(try await connection.next() == protocolError("Malformed message"))
            try await expectStillUsable(connection, text)
            await node.shutdown()
        }

        @Test(
            "an unknown service name: Unknown service (backend-only and reserved names included)",
            arguments: ["nope", "", "PubSub", "pubsub_backend", "snorky", "pubsub "]
        )
        func unknownService(service: String) async throws {
            let node = try await TestNode.start()
            let connection = node.connect()
            connection.call(service, "subscribe", ["channel": "x"], callId: 1)
            #expect(try await connection.next() == protocolError("Unknown service"))
            try await expectStillUsable(connection, service)
            await node.shutdown()
        }

        @Test("an RPC message that is not an object or lacks command/params: Malformed request on the service, callId echoed")
        func malformedRequest() async throws {
            let node = try await TestNode.start()
            let connection = node.connect()
            let cases: [(message: JSON, callId: JSON)] = [
                ("subscribe", nil),
                (nil, nil),
                ([1, 2], nil),
                (["params": ["channel": "x"], "callId": 7], 7),
                (["command": "subscribe", "callId": "abc"], "abc"),
                (["command": 5, "params": [:], "callId": ["n": 1]], ["n": 1]),
                (["command": "subscribe", "callId": nil], nil),
                (["params": [:]], nil),
            ]
            for (message, callId) in cases {
                connection.send(service: "pubsub", message)
                #expect(try await connection.next() == error("pubsub", callId: callId, "Malformed request"), "\(message)")
                try await expectStillUsable(connection, "\(message)")
            }
            await node.shutdown()
        }

        @Test("protocol error frames are compact JSON")
        func compactErrorFrame() async throws {
            let node = try await TestNode.start()
            let connection = node.connect()
            connection.send("nope")
            _ = try await connection.next()
            #expect(
                connection.transport.payloads
                    == [#"{"service":"snorky","message":{"type":"error","callId":null,"message":"Invalid JSON"}}"#])
            await node.shutdown()
        }

        @Test("100 protocol errors close the connection with 1008; 99 do not")
        func errorBudgetCloses() async throws {
            let node = try await TestNode.start()
            let connection = node.connect()
            for index in 0..<99 {
                // Every kind of protocol error counts.
                switch index % 4 {
                case 0: connection.send("not json")
                case 1: connection.send("[]")
                case 2: connection.send(service: "missing", [:])
                default: connection.send(service: "pubsub", "not an object")
                }
            }
            // A request queued behind them is answered after all 99 were handled.
            connection.call("probe", "echo", ["value": 1], callId: "after99")
            for _ in 0..<99 {
                let frame = try await connection.next()
                #expect(frame["message"]?["type"] == "error")
            }
            #expect(try await connection.next() == response("probe", callId: "after99", data: 1))
            #expect(connection.transport.closeCode == nil)

            connection.send("the hundredth")
            connection.call("probe", "echo", ["value": 2], callId: "after100")
            #expect(try await connection.next() == protocolError("Invalid JSON"))
            _ = try await connection.next()
            #expect(connection.transport.closeCode == CloseCode.policyViolation)
            await node.shutdown()
        }

        @Test("RPC errors (Unknown command, Invalid params, a command's own error) are not protocol errors")
        func rpcErrorsDoNotCount() async throws {
            let node = try await TestNode.start(budget: ProtocolErrorBudget(limit: 5))
            let connection = node.connect()
            for index in 0..<20 {
                connection.call("pubsub", "nope", [:], callId: .int(Int64(index)))
                connection.call("pubsub", "subscribe", ["wrong": 1], callId: .int(Int64(index)))
                connection.call("pubsub", "unsubscribe", ["channel": "never"], callId: .int(Int64(index)))
            }
            for _ in 0..<60 {
                #expect(try await connection.next()["message"]?["type"] == "error")
            }
            try await expectStillUsable(connection, "after 60 RPC errors")
            await node.shutdown()
        }

        @Test("a configured budget: limit 3 closes on the third error")
        func configuredBudget() async throws {
            let node = try await TestNode.start(budget: ProtocolErrorBudget(limit: 3, window: .seconds(60)))
            let connection = node.connect()
            connection.send("x")
            connection.send("x")
            connection.call("probe", "echo", ["value": nil], callId: 1)
            _ = try await connection.next()
            _ = try await connection.next()
            _ = try await connection.next()
            #expect(connection.transport.closeCode == nil)
            connection.send("x")
            connection.call("probe", "echo", ["value": nil], callId: 2)
            _ = try await connection.next()
            _ = try await connection.next()
            #expect(connection.transport.closeCode == CloseCode.policyViolation)
            await node.shutdown()
        }

        @Test("the close for too many errors is the last frame: replies produced after it are not written before it")
        func closeIsLastFrame() async throws {
            let node = try await TestNode.start()
            let group = MultiThreadedEventLoopGroup(numberOfThreads: 1)
            let loop = group.next()
            let transport = LoopClosingTransport(eventLoop: loop)
            let client = node.node.makeClient(transport: transport)
            client.didConnect()

            // The connection's loop is busy (as under load) while the node handles 150 bad
            // frames; the 100th closes the connection.
            let release = DispatchSemaphore(value: 0)
            let blocked = DispatchSemaphore(value: 0)
            loop.execute {
                blocked.signal()
                release.wait()
            }
            blocked.wait()
            for _ in 0..<150 {
                client.didReceive(text: ByteBuffer(string: "not json"))
            }
            // A request behind them: once the probe is running, all 150 were handled.
            client.didReceive(text: ByteBuffer(string: #"{"service":"probe","message":{"command":"block","params":{}}}"#))
            await node.probe.gate.waitUntilWaiting()
            release.signal()
            try await loop.submit {}.get()

            let log = transport.log
            #expect(log.count == 101)
            #expect(log.last == "close \(CloseCode.policyViolation)")
            #expect(log.firstIndex(of: "close \(CloseCode.policyViolation)") == 100, "\(log.count) entries")
            node.probe.gate.open()
            await node.shutdown()
            try await group.shutdownGracefully()
        }

        @Test("each connection has its own budget")
        func budgetPerConnection() async throws {
            let node = try await TestNode.start(budget: ProtocolErrorBudget(limit: 2, window: .seconds(60)))
            let first = node.connect()
            let second = node.connect()
            first.send("x")
            second.send("x")
            first.call("probe", "echo", ["value": 1], callId: 1)
            second.call("probe", "echo", ["value": 1], callId: 1)
            for connection in [first, second] {
                _ = try await connection.next()
                _ = try await connection.next()
                #expect(connection.transport.closeCode == nil)
            }
            await node.shutdown()
        }
    }
}

// MARK: - Error budget as a value

/// `record` as a free function, so `#expect` can call it (it cannot call mutating methods).
private func record(_ budget: inout ProtocolErrorBudget, at instant: ContinuousClock.Instant) -> Bool {
    budget.record(at: instant)
}

extension NodeProtocolTests {
    @Suite("ProtocolErrorBudget")
    struct ErrorBudget {
        let start = ContinuousClock.now

        @Test("defaults: 100 errors in 10 s")
        func defaults() {
            let budget = ProtocolErrorBudget()
            #expect(budget.limit == 100)
            #expect(budget.window == .seconds(10))
        }

        @Test("the 100th error inside the window is over budget, the 99th is not")
        func hundredth() {
            var budget = ProtocolErrorBudget()
            for index in 0..<99 {
                #expect(!record(&budget, at: start + .milliseconds(index * 10)), "error \(index + 1)")
            }
            #expect(record(&budget, at: start + .milliseconds(990)))
            // Still over while errors keep coming.
            #expect(record(&budget, at: start + .milliseconds(995)))
        }

        @Test("100 errors all at the same instant are over budget")
        func sameInstant() {
            var budget = ProtocolErrorBudget()
            var results: [Bool] = []
            for _ in 0..<100 { results.append(budget.record(at: start)) }
            #expect(results.filter { $0 }.count == 1)
            #expect(results.last == true)
        }

        @Test("errors older than the window no longer count")
        func windowSlides() {
            var budget = ProtocolErrorBudget()
            for _ in 0..<99 {
                #expect(!record(&budget, at: start))
            }
            // Just past the window: the 99 expired.
            #expect(!record(&budget, at: start + .seconds(10) + .milliseconds(1)))
            for index in 0..<98 {
                #expect(!record(&budget, at: start + .seconds(11) + .milliseconds(index)))
            }
            // 1 + 98 + this one = 100 within 10 s.
            #expect(record(&budget, at: start + .seconds(12)))
        }

        @Test("a steady trickle under the rate is never closed")
        func trickle() {
            var budget = ProtocolErrorBudget()
            // One error every 110 ms: at most 91 in any 10 s window.
            for index in 0..<10_000 {
                #expect(!record(&budget, at: start + .milliseconds(index * 110)), "error \(index)")
            }
        }

        @Test("a burst just over the rate is closed")
        func burstJustOver() {
            var budget = ProtocolErrorBudget()
            // One error every 99 ms: 100 errors span 9.9 s.
            var closedAt: Int?
            for index in 0..<200 where closedAt == nil {
                if record(&budget, at: start + .milliseconds(index * 99)) { closedAt = index }
            }
            #expect(closedAt == 99)
        }

        @Test("custom limit and window")
        func custom() {
            var budget = ProtocolErrorBudget(limit: 3, window: .seconds(1))
            #expect(!record(&budget, at: start))
            #expect(!record(&budget, at: start + .milliseconds(500)))
            #expect(!record(&budget, at: start + .milliseconds(1001)))  // the first expired
            #expect(record(&budget, at: start + .milliseconds(1200)))
            var strict = ProtocolErrorBudget(limit: 1, window: .seconds(1))
            #expect(record(&strict, at: start))
        }
    }
}

// MARK: - Section 2: RPC

extension NodeProtocolTests {
    @Suite("Node: RPC rules (PROTOCOL.md section 2)")
    struct RPC {
        @Test("a success echoes callId verbatim, any JSON value")
        func callIdEchoed() async throws {
            let node = try await TestNode.start()
            let connection = node.connect()
            for callId: JSON in [0, 7, "abc", ["nested": [1, 2]], [1, "a"], 1.5, true, -1] {
                let reply = try await connection.request("probe", "echo", ["value": "v"], callId: callId)
                #expect(reply == response("probe", callId: callId, data: "v"))
                // Integers stay integers on the wire.
                #expect(reply["message"]?["callId"]?.encodedString() == callId.encodedString())
            }
            await node.shutdown()
        }

        @Test("without a callId, or with a null one, the success omits callId and an error carries null")
        func callIdAbsent() async throws {
            let node = try await TestNode.start()
            let connection = node.connect()
            connection.send(service: "probe", ["command": "echo", "params": ["value": 1]])
            connection.send(service: "probe", ["command": "echo", "params": ["value": 2], "callId": nil])
            connection.send(service: "probe", ["command": "nope", "params": [:]])
            connection.send(service: "probe", ["command": "nope", "params": [:], "callId": nil])
            _ = try await connection.next()
            _ = try await connection.next()
            _ = try await connection.next()
            _ = try await connection.next()
            #expect(
                connection.transport.payloads == [
                    #"{"service":"probe","message":{"type":"response","data":1}}"#,
                    #"{"service":"probe","message":{"type":"response","data":2}}"#,
                    #"{"service":"probe","message":{"type":"error","callId":null,"message":"Unknown command"}}"#,
                    #"{"service":"probe","message":{"type":"error","callId":null,"message":"Unknown command"}}"#,
                ])
            await node.shutdown()
        }

        @Test("a command sees a null callId as no callId")
        func requestCallId() async throws {
            let node = try await TestNode.start()
            let connection = node.connect()
            connection.send(service: "probe", ["command": "callIdSeen", "params": [:], "callId": nil])
            #expect(try await connection.next() == response("probe", callId: nil, data: "absent"))
            connection.send(service: "probe", ["command": "callIdSeen", "params": [:]])
            #expect(try await connection.next() == response("probe", callId: nil, data: "absent"))
            #expect(try await connection.request("probe", "callIdSeen", [:], callId: 0) == response("probe", callId: 0, data: ["present": 0]))
            await node.shutdown()
        }

        @Test("frames waiting beyond maxQueuedFrames are refused (the transport then closes), the rest are served in order")
        func inboundQueueLimit() async throws {
            let node = try await TestNode.start(maxQueuedFrames: 5)
            let connection = node.connect()
            connection.call("probe", "block", [:], callId: "blocker")
            await node.probe.gate.waitUntilWaiting()
            var accepted: [Bool] = []
            for index in 0..<6 {
                let message: JSON = ["service": "probe", "message": ["command": "echo", "params": ["value": .int(Int64(index))], "callId": .int(Int64(index))]]
                accepted.append(connection.client.didReceive(text: ByteBuffer(string: message.encodedString())))
            }
            #expect(accepted == [true, true, true, true, true, false])
            node.probe.gate.open()
            #expect(try await connection.next() == response("probe", callId: "blocker"))
            for index in 0..<5 {
                #expect(try await connection.next() == response("probe", callId: .int(Int64(index)), data: .int(Int64(index))))
            }
            try await connection.expectIdle()
            await node.shutdown()
        }

        @Test("Unknown command is checked before params")
        func unknownCommand() async throws {
            let node = try await TestNode.start()
            let connection = node.connect()
            for params: JSON in [[:], ["channel": "x"], "not an object", nil, [1]] {
                let reply = try await connection.request("pubsub", "nope", params, callId: 3)
                #expect(reply == error("pubsub", callId: 3, "Unknown command"), "\(params)")
            }
            // Command names are case-sensitive.
            #expect(try await connection.request("pubsub", "Subscribe", ["channel": "x"], callId: 4)
                == error("pubsub", callId: 4, "Unknown command"))
            await node.shutdown()
        }

        @Test("Invalid params: missing, extra, wrong type, or params not an object")
        func invalidParams() async throws {
            let node = try await TestNode.start()
            let connection = node.connect()
            let cases: [(String, String, JSON)] = [
                ("pubsub", "subscribe", [:]),
                ("pubsub", "subscribe", ["channel": "x", "extra": 1]),
                ("pubsub", "subscribe", ["chanel": "x"]),
                ("pubsub", "publish", ["channel": "x"]),
                ("pubsub", "publish", ["message": 1]),
                ("pubsub", "subscribe", "x"),
                ("pubsub", "subscribe", ["x"]),
                ("pubsub", "subscribe", nil),
                ("pubsub", "subscribe", 5),
                ("probe", "add", ["a": "one"]),
                ("probe", "add", ["a": 1.5]),
                ("probe", "add", ["b": 1]),
            ]
            for (index, (service, command, params)) in cases.enumerated() {
                let callId = JSON.int(Int64(index))
                let reply = try await connection.request(service, command, params, callId: callId)
                #expect(reply == error(service, callId: callId, "Invalid params"), "\(command) \(params)")
            }
            // None of them subscribed anything.
            #expect(node.node.hub.topicCount == 0)
            await node.shutdown()
        }

        @Test("parameters may have defaults")
        func defaults() async throws {
            let node = try await TestNode.start()
            let connection = node.connect()
            #expect(try await connection.request("probe", "add", ["a": 1], callId: 1) == response("probe", callId: 1, data: 11))
            #expect(
                try await connection.request("probe", "add", ["a": 1, "b": 2], callId: 2) == response("probe", callId: 2, data: 3))
            // JavaScript has one number type: 2.0 binds to an Int.
            #expect(
                try await connection.request("probe", "add", ["a": 2.0, "b": 2], callId: 3) == response("probe", callId: 3, data: 4))
            await node.shutdown()
        }

        @Test("an unexpected failure is Internal error, without details")
        func internalError() async throws {
            let node = try await TestNode.start()
            let connection = node.connect()
            #expect(try await connection.request("probe", "boom", [:], callId: 1) == error("probe", callId: 1, "Internal error"))
            #expect(try await connection.request("probe", "refuse", [:], callId: 2) == error("probe", callId: 2, "Custom failure"))
            await node.shutdown()
        }

        @Test("a request is resolved exactly once: later replies are ignored, a dropped one answers Internal error")
        func resolvedOnce() async throws {
            let node = try await TestNode.start()
            let connection = node.connect()
            #expect(try await connection.request("probe", "twice", [:], callId: 1) == response("probe", callId: 1, data: 1))
            #expect(try await connection.request("probe", "later", [:], callId: 2) == response("probe", callId: 2, data: "late"))
            #expect(try await connection.request("probe", "drop", [:], callId: 3) == error("probe", callId: 3, "Internal error"))
            // Nothing else was sent for any of them.
            #expect(try await connection.request("probe", "echo", ["value": "end"], callId: 4)
                == response("probe", callId: 4, data: "end"))
            #expect(connection.transport.payloads.count == 4)
            await node.shutdown()
        }

        @Test("a command sees the caller's identity")
        func identity() async throws {
            let node = try await TestNode.start()
            let alice = node.connect(identity: "alice")
            let anonymous = node.connect()
            #expect(try await alice.request("probe", "whoami", [:], callId: 1) == response("probe", callId: 1, data: "alice"))
            #expect(try await anonymous.request("probe", "whoami", [:], callId: 1) == response("probe", callId: 1, data: nil))
            await node.shutdown()
        }

        @Test("a notification sent by a command precedes its response")
        func notificationBeforeResponse() async throws {
            let node = try await TestNode.start()
            let connection = node.connect()
            connection.call("probe", "notify", [:], callId: 1)
            #expect(try await connection.next() == ["service": "probe", "message": ["type": "note"]])
            #expect(try await connection.next() == response("probe", callId: 1))
            await node.shutdown()
        }

        @Test("messages on one connection are processed and answered in order")
        func ordering() async throws {
            let node = try await TestNode.start(budget: ProtocolErrorBudget(limit: 10_000))
            let connection = node.connect()
            var expected: [JSON] = []
            for index in 0..<600 {
                let callId = JSON.int(Int64(index))
                switch index % 5 {
                case 0:
                    connection.call("pubsub", "subscribe", ["channel": .int(Int64(index))], callId: callId)
                    expected.append(response("pubsub", callId: callId))
                case 1:
                    connection.send("garbage \(index)")
                    expected.append(protocolError("Invalid JSON"))
                case 2:
                    connection.send(service: "pubsub", ["command": "subscribe", "callId": callId])
                    expected.append(error("pubsub", callId: callId, "Malformed request"))
                case 3:
                    connection.call("pubsub", "unsubscribe", ["channel": .int(Int64(index - 3))], callId: callId)
                    expected.append(response("pubsub", callId: callId))
                default:
                    connection.call("probe", "echo", ["value": callId], callId: callId)
                    expected.append(response("probe", callId: callId, data: callId))
                }
            }
            for (index, frame) in expected.enumerated() {
                let received = try await connection.next()
                #expect(received == frame, "frame \(index)")
                if received != frame { break }
            }
            await node.shutdown()
        }
    }
}

// MARK: - pubsub over the in-memory bus

extension NodeProtocolTests {
    @Suite("Node: pubsub over the in-memory bus")
    struct PubSub {
        @Test("subscribe, publish, unsubscribe")
        func subscribePublishUnsubscribe() async throws {
            let node = try await TestNode.start()
            let subscriber = node.connect()
            let publisher = node.connect()
            let bystander = node.connect()
            try await subscriber.subscribe("news")
            #expect(node.node.hub.subscriberCount(of: node.topic("news")) == 1)
            #expect(node.clientTopics == [node.topic("news")])

            #expect(try await publisher.request("pubsub", "publish", ["channel": "news", "message": ["x": 1]], callId: 5)
                == response("pubsub", callId: 5))
            #expect(try await subscriber.next() == notification(channel: "news", message: ["x": 1]))
            // The notification is compact and carries no callId.
            #expect(subscriber.transport.payloads.last
                == #"{"service":"pubsub","message":{"type":"message","channel":"news","message":{"x":1}}}"#)

            #expect(try await subscriber.request("pubsub", "unsubscribe", ["channel": "news"], callId: 6)
                == response("pubsub", callId: 6))
            #expect(node.node.hub.topicCount == 0)
            #expect(node.clientTopics.isEmpty)
            #expect(try await publisher.request("pubsub", "publish", ["channel": "news", "message": 2], callId: 7)
                == response("pubsub", callId: 7))
            try await subscriber.expectIdle()
            try await bystander.expectIdle()
            await node.shutdown()
        }

        @Test("every subscriber of a channel gets each publication, in publication order")
        func manySubscribers() async throws {
            let node = try await TestNode.start()
            let subscribers = (0..<20).map { _ in node.connect() }
            for subscriber in subscribers { try await subscriber.subscribe("c") }
            let publisher = node.connect()
            for index in 0..<50 {
                publisher.call("pubsub", "publish", ["channel": "c", "message": .int(Int64(index))])
            }
            for _ in 0..<50 {
                #expect(try await publisher.next() == response("pubsub", callId: nil))
            }
            for subscriber in subscribers {
                for index in 0..<50 {
                    #expect(try await subscriber.next() == notification(channel: "c", message: .int(Int64(index))))
                }
            }
            await node.shutdown()
        }

        @Test("Already subscribed, Not subscribed")
        func subscriptionErrors() async throws {
            let node = try await TestNode.start()
            let connection = node.connect()
            try await connection.subscribe("news")
            #expect(try await connection.request("pubsub", "subscribe", ["channel": "news"], callId: 2)
                == error("pubsub", callId: 2, "Already subscribed"))
            #expect(try await connection.request("pubsub", "unsubscribe", ["channel": "other"], callId: 3)
                == error("pubsub", callId: 3, "Not subscribed"))
            #expect(try await connection.request("pubsub", "unsubscribe", ["channel": "news"], callId: 4)
                == response("pubsub", callId: 4))
            #expect(try await connection.request("pubsub", "unsubscribe", ["channel": "news"], callId: 5)
                == error("pubsub", callId: 5, "Not subscribed"))
            // Subscribing again after unsubscribing works; the hub holds the client once.
            try await connection.subscribe("news", callId: 6)
            #expect(node.node.hub.subscriberCount(of: node.topic("news")) == 1)
            await node.shutdown()
        }

        @Test("channels are JSON values compared by JSON equality")
        func jsonChannels() async throws {
            let node = try await TestNode.start()
            let subscriber = node.connect()
            let publisher = node.connect()
            try await subscriber.subscribe(["a": 1, "b": 2])
            // The same channel written differently.
            subscriber.send(#"{"service":"pubsub","message":{"command":"subscribe","params":{"channel":{"b":2.0,"a":1}},"callId":2}}"#)
            #expect(try await subscriber.next() == error("pubsub", callId: 2, "Already subscribed"))
            publisher.send(#"{"service":"pubsub","message":{"command":"publish","params":{"channel":{"b":2,"a":1},"message":"hi"},"callId":1}}"#)
            let delivered = try await subscriber.next()
            #expect(delivered == notification(channel: ["a": 1, "b": 2], message: "hi"))
            #expect(try await publisher.next() == response("pubsub", callId: 1))
            #expect(node.node.hub.topicCount == 1)

            // Different JSON values are different channels, even when they print alike.
            for other: JSON in ["1", 1.5, ["a": 1], [1, 2], nil, ["a": 1, "b": "2"]] {
                #expect(try await publisher.request("pubsub", "publish", ["channel": other, "message": 0], callId: 9)
                    == response("pubsub", callId: 9))
            }
            try await subscriber.expectIdle()

            // Numbers: 1 and 1.0 are one channel.
            try await subscriber.subscribe(1, callId: 3)
            #expect(try await publisher.request("pubsub", "publish", ["channel": 1.0, "message": "one"], callId: 10)
                == response("pubsub", callId: 10))
            #expect(try await subscriber.next()["message"]?["message"] == "one")
            await node.shutdown()
        }

        @Test("channels differing only in Unicode normalization are different channels, as in a cluster and in JavaScript")
        func unicodeChannels() async throws {
            // With Redis the topic is compared as bytes, so "é" (U+00E9) and "e" + U+0301 are two
            // channels; in one process they must not collapse into one.
            let node = try await TestNode.start()
            let subscriber = node.connect()
            let publisher = node.connect()
            try await subscriber.subscribe("\u{E9}")
            #expect(try await publisher.request("pubsub", "publish", ["channel": "e\u{301}", "message": 1], callId: 1)
                == response("pubsub", callId: 1))
            #expect(try await subscriber.request("pubsub", "subscribe", ["channel": "e\u{301}"], callId: 2)
                == response("pubsub", callId: 2), "the subscriber received a publication on another channel, or the channels collapsed")
            await node.shutdown()
        }

        @Test("a subscribed publisher gets each notification before its publish response, all in production order")
        func publisherOrdering() async throws {
            let node = try await TestNode.start()
            let connection = node.connect()
            try await connection.subscribe("self")
            for index in 0..<100 {
                connection.call("pubsub", "publish", ["channel": "self", "message": .int(Int64(index))], callId: .int(Int64(index)))
            }
            var expected: [JSON] = []
            var received: [JSON] = []
            for index in 0..<100 {
                expected.append(notification(channel: "self", message: .int(Int64(index))))
                expected.append(response("pubsub", callId: .int(Int64(index))))
                received.append(try await connection.next())
                received.append(try await connection.next())
            }
            if let first = expected.indices.first(where: { expected[$0] != received[$0] }) {
                Issue.record("frame \(first) out of order; received from there: \(received[first...].prefix(6).map { $0["message"]! })")
            }
            await node.shutdown()
        }

        @Test("publishing to a channel nobody listens to succeeds")
        func publishToEmptyChannel() async throws {
            let node = try await TestNode.start()
            let connection = node.connect()
            #expect(try await connection.request("pubsub", "publish", ["channel": "void", "message": nil], callId: 1)
                == response("pubsub", callId: 1))
            #expect(node.node.hub.topicCount == 0)
            await node.shutdown()
        }

        @Test("disconnect drops all the client's subscriptions from the hub and the bus")
        func disconnectDropsSubscriptions() async throws {
            let node = try await TestNode.start()
            let leaving = node.connect()
            let staying = node.connect()
            for (index, channel) in (["a", "b", ["c": 1], 4] as [JSON]).enumerated() {
                try await leaving.subscribe(channel, callId: .int(Int64(index)))
            }
            try await staying.subscribe("a")
            #expect(node.node.hub.topicCount == 4)
            #expect(node.clientTopics.count == 4)

            leaving.disconnect()
            await node.disconnects.wait(for: leaving.client)
            #expect(node.node.hub.topicCount == 1)
            #expect(node.node.hub.subscriberCount(of: node.topic("a")) == 1)
            #expect(node.clientTopics == [node.topic("a")])
            #expect(leaving.client.isClosed)
            #expect(leaving.client.topicCount == 0)

            staying.disconnect()
            await node.disconnects.wait(for: staying.client)
            #expect(node.node.hub.topicCount == 0)
            #expect(node.clientTopics.isEmpty)
            await node.shutdown()
        }

        @Test("frames queued before a disconnect never subscribe a gone client")
        func noSubscriptionAfterDisconnect() async throws {
            let node = try await TestNode.start()
            let connection = node.connect()
            for index in 0..<50 {
                connection.call("pubsub", "subscribe", ["channel": .int(Int64(index))])
            }
            connection.disconnect()
            await node.disconnects.wait(for: connection.client)
            #expect(node.node.hub.topicCount == 0)
            #expect(node.clientTopics.isEmpty)
            await node.shutdown()
        }

        @Test("clientPublish false: publish is Not authorized and nothing is delivered")
        func publishingDisabled() async throws {
            let node = try await TestNode.start(policy: PubSubPolicy(clientPublish: false))
            let connection = node.connect()
            try await connection.subscribe("news")
            #expect(try await connection.request("pubsub", "publish", ["channel": "news", "message": 1], callId: 2)
                == error("pubsub", callId: 2, "Not authorized"))
            try await connection.expectIdle()

            // The backend service bypasses the client policy.
            let backend = try #require(node.node.backendService(named: "pubsub_backend"))
            let (backendClient, backendTransport) = RecordingTransport.connect(to: node.node)
            await backend.handle(
                message: ["command": "publish", "params": ["channel": "news", "message": "from backend"], "callId": 1],
                from: backendClient)
            #expect(try await backendTransport.next() == response("pubsub_backend", callId: 1))
            #expect(try await connection.next() == notification(channel: "news", message: "from backend"))
            await node.shutdown()
        }

        @Test("pubsub_backend starts a well-formed publish without a task, answering as handle does; anything else is left to handle")
        func backendPublishStartsWithoutATask() async throws {
            let node = try await TestNode.start()
            let connection = node.connect()
            try await connection.subscribe("news")
            let backend = try #require(node.node.backendService(named: "pubsub_backend"))
            let loop = MultiThreadedEventLoopGroup.singleton.next()
            let publish: JSON = ["command": "publish", "params": ["channel": "news", "message": "fast"], "callId": 4]

            let started = try #require(backend.startBackendRequest(publish, on: loop))
            #expect(try await started.get() == RPCMessage.response(callId: 4, data: .null))
            #expect(try await connection.next() == notification(channel: "news", message: "fast"))
            // The same request through `handle` gets the same reply and publication.
            let (backendClient, backendTransport) = RecordingTransport.connect(to: node.node)
            await backend.handle(message: publish, from: backendClient)
            #expect(try await backendTransport.next() == response("pubsub_backend", callId: 4))
            #expect(try await connection.next() == notification(channel: "news", message: "fast"))

            // Requests whose answer is an error keep `handle`'s exact message.
            let others: [JSON] = [
                ["command": "publish", "params": ["channel": "news"], "callId": 5],
                ["command": "publish", "params": ["channel": "news", "message": 1, "extra": 2], "callId": 5],
                ["command": "publish", "params": ["news", 1], "callId": 5],
                ["command": "nope", "params": ["channel": "news", "message": 1], "callId": 5],
                ["params": ["channel": "news", "message": 1]],
            ]
            for other in others {
                #expect(backend.startBackendRequest(other, on: loop) == nil, "\(other)")
            }
            try await connection.expectIdle()
            await node.shutdown()
        }

        @Test("an authorizePublish hook refuses per client and channel")
        func authorizeHook() async throws {
            let seen = Locked<[(String?, JSON)]>([])
            let policy = PubSubPolicy(authorizePublish: { client, channel in
                seen.withLock { $0.append((client.identity, channel)) }
                return client.identity == "admin" || channel != "locked"
            })
            let node = try await TestNode.start(policy: policy)
            let admin = node.connect(identity: "admin")
            let user = node.connect(identity: "user")
            try await admin.subscribe("locked")
            #expect(try await user.request("pubsub", "publish", ["channel": "locked", "message": 1], callId: 1)
                == error("pubsub", callId: 1, "Not authorized"))
            #expect(try await user.request("pubsub", "publish", ["channel": "open", "message": 1], callId: 2)
                == response("pubsub", callId: 2))
            #expect(try await admin.request("pubsub", "publish", ["channel": "locked", "message": 3], callId: 3)
                == notification(channel: "locked", message: 3))
            #expect(try await admin.next() == response("pubsub", callId: 3))
            let calls = seen.withLock { $0 }
            #expect(calls.map(\.0) == ["user", "user", "admin"])
            #expect(calls.map(\.1) == ["locked", "open", "locked"])
            // The hook is not consulted for subscribe.
            try await user.subscribe("locked", callId: 4)
            await node.shutdown()
        }

        @Test("the hook is not consulted when clientPublish is false")
        func hookAfterClientPublish() async throws {
            let consulted = Locked(0)
            let node = try await TestNode.start(
                policy: PubSubPolicy(clientPublish: false, authorizePublish: { _, _ in
                    consulted.withLock { $0 += 1 }
                    return true
                }))
            let connection = node.connect()
            #expect(try await connection.request("pubsub", "publish", ["channel": "c", "message": 1], callId: 1)
                == error("pubsub", callId: 1, "Not authorized"))
            #expect(consulted.withLock { $0 } == 0)
            await node.shutdown()
        }
    }
}
