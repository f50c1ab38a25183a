import NIOCore
import Snorky
import SnorkyProtocol
import SnorkyServer
import SnorkyServices
import SnorkyTesting
import Synchronization
import Testing

/// A backend service that never answers, for the 504.
private final class SilentService: Service {
    let name = "silent_backend"

    func handle(message: JSON, from client: Client) async {}
}

/// `gate_backend`: `wait` is answered only once `open` has arrived (or at once if it
/// already has); `open` is answered at once. Pipelined `[wait, open]` can only both
/// succeed if the second request starts while the first is still running.
private final class GateService: Service {
    let name: String
    let runsPipelinedBackendRequestsConcurrently: Bool
    private let state = Mutex<(isOpen: Bool, waiting: [Client])>((false, []))

    init(name: String, concurrent: Bool) {
        self.name = name
        self.runsPipelinedBackendRequestsConcurrently = concurrent
    }

    func handle(message: JSON, from client: Client) async {
        let answer = { (client: Client, data: JSON) in client.send(service: self.name, message: ["type": "response", "data": data]) }
        switch message["command"]?.stringValue {
        case "wait":
            let isOpen = state.withLock { state in
                if !state.isOpen { state.waiting.append(client) }
                return state.isOpen
            }
            if isOpen { answer(client, "wait") }
        default:
            let waiting = state.withLock { state in
                state.isOpen = true
                defer { state.waiting = [] }
                return state.waiting
            }
            for waiter in waiting { answer(waiter, "wait") }
            answer(client, "open")
        }
    }
}

private func header(_ name: String, in response: HTTPTestClient.Response) -> String? {
    response.headers.first { $0.0.lowercased() == name.lowercased() }?.1
}

private func gateRequest(_ command: String) -> HTTPTestClient.PipelinedRequest {
    HTTPTestClient.PipelinedRequest(
        path: "/backend", headers: [("X-Backend-Key", LiveWorker.backendKey)],
        body: #"{"service":"gate_backend","message":{"command":"\#(command)","params":{}}}"#)
}

private func errorBody(_ response: HTTPTestClient.Response) throws -> String? {
    try JSON.parse(response.body)["error"]?.stringValue
}

private let publishBody =
    #"{"service":"pubsub_backend","message":{"command":"publish","params":{"channel":"news","message":{"headline":"hi"}},"callId":1}}"#

/// PROTOCOL.md section 6 over real HTTP.
@Suite("Live worker: backend HTTP API")
struct BackendAPITests {
    @Test("200 with the service's envelope; a WebSocket subscriber receives the publication")
    func publish() async throws {
        let live = try await LiveWorker.start()
        let subscriber = try await live.connect()
        #expect(try await subscriber.request("pubsub", "subscribe", ["channel": "news"], callId: 1) == rpcResponse("pubsub", callId: 1))

        let response = try await live.backend(publishBody)
        #expect(response.status == 200)
        #expect(response.body == #"{"service":"pubsub_backend","message":{"type":"response","callId":1,"data":null}}"#)
        #expect(header("Content-Type", in: response)?.hasPrefix("application/json") == true)
        #expect(try await subscriber.nextJSON() == pubsubNotification(channel: "news", message: ["headline": "hi"]))

        // Without a callId the success omits it, as on WebSockets.
        let noCallId = try await live.backend(
            #"{"service":"pubsub_backend","message":{"command":"publish","params":{"channel":"news","message":2}}}"#)
        #expect(noCallId.status == 200)
        #expect(noCallId.body == #"{"service":"pubsub_backend","message":{"type":"response","data":null}}"#)
        #expect(try await subscriber.nextJSON() == pubsubNotification(channel: "news", message: 2))
        await live.shutdown()
    }

    @Test("the backend publishes even when client publishing is disabled")
    func bypassesClientPolicy() async throws {
        let live = try await LiveWorker.start(registerServices: { node in
            var options = BuiltinServiceOptions()
            options.pubSubPolicy = PubSubPolicy(clientPublish: false)
            BuiltinServices.register(on: node, options: options)
        })
        let subscriber = try await live.connect()
        _ = try await subscriber.request("pubsub", "subscribe", ["channel": "news"], callId: 1)
        #expect(try await live.backend(publishBody).status == 200)
        #expect(try await subscriber.nextJSON() == pubsubNotification(channel: "news", message: ["headline": "hi"]))
        await live.shutdown()
    }

    @Test("401 without a key, with a wrong key, and with near-miss keys")
    func unauthorized() async throws {
        let live = try await LiveWorker.start()
        let subscriber = try await live.connect()
        _ = try await subscriber.request("pubsub", "subscribe", ["channel": "news"], callId: 1)
        for key in [nil, "wrong", "", "test-ke", "test-key2", "TEST-KEY", "test_key"] as [String?] {
            let response = try await live.backend(publishBody, key: key)
            #expect(response.status == 401, "key \(String(describing: key))")
            #expect(response.body == #"{"error":"Unauthorized"}"#, "key \(String(describing: key))")
        }
        // The key is checked before the body is looked at.
        #expect(try await live.backend("not json", key: "wrong").status == 401)
        // None of the refused requests published anything.
        try await subscriber.expectUsable("a refused backend request published")
        await live.shutdown()
    }

    @Test("401 explaining how to configure a key when the worker has none")
    func noKeyConfigured() async throws {
        let live = try await LiveWorker.start { $0.backendKey = nil }
        for key in [nil, "test-key", ""] as [String?] {
            let response = try await live.backend(publishBody, key: key)
            #expect(response.status == 401)
            let message = try #require(try errorBody(response))
            #expect(message.localizedLowercase.contains("no backend key"), "\(message)")
            #expect(message.contains("--backend-key") || message.contains("SNORKY_BACKEND_KEY"), "\(message)")
        }
        await live.shutdown()
    }

    @Test("400 for invalid JSON and for malformed envelopes")
    func badRequest() async throws {
        let live = try await LiveWorker.start()
        for body in ["", "not json", "{", #"{"service":"pubsub_backend","message":}"#] {
            let response = try await live.backend(body)
            #expect(response.status == 400, "\(body)")
            #expect(try errorBody(response) == "Invalid JSON", "\(body)")
        }
        for body in ["[]", "1", "null", "{}", #"{"service":"pubsub_backend"}"#, #"{"message":{}}"#, #"{"service":1,"message":{}}"#] {
            let response = try await live.backend(body)
            #expect(response.status == 400, "\(body)")
            #expect(try errorBody(response) == "Malformed message", "\(body)")
        }
        let invalidUTF8 = try await HTTPTestClient.request(
            host: "127.0.0.1", port: live.backendPort, path: "/backend",
            headers: [("X-Backend-Key", LiveWorker.backendKey)], body: [0x7B, 0xFF, 0x7D])
        #expect(invalidUTF8.status == 400)
        await live.shutdown()
    }

    @Test("404 for an unknown service, and for frontend-only services")
    func unknownService() async throws {
        let live = try await LiveWorker.start()
        for service in ["nope", "pubsub", "snorky", ""] {
            let response = try await live.backend(
                #"{"service":"\#(service)","message":{"command":"publish","params":{"channel":"c","message":1},"callId":1}}"#)
            #expect(response.status == 404, "\(service)")
            #expect(response.body == #"{"error":"Unknown service"}"#, "\(service)")
        }
        await live.shutdown()
    }

    @Test("RPC errors come back in a 200 envelope")
    func rpcErrors() async throws {
        let live = try await LiveWorker.start()
        let cases: [(String, String)] = [
            (#"{"command":"publish","params":{"channel":"c"},"callId":2}"#, #"{"type":"error","callId":2,"message":"Invalid params"}"#),
            (#"{"command":"publish","params":{"channel":"c","message":1,"x":0},"callId":3}"#, #"{"type":"error","callId":3,"message":"Invalid params"}"#),
            (#"{"command":"publish","params":[],"callId":4}"#, #"{"type":"error","callId":4,"message":"Invalid params"}"#),
            (#"{"command":"subscribe","params":{"channel":"c"},"callId":5}"#, #"{"type":"error","callId":5,"message":"Unknown command"}"#),
            (#"{"params":{},"callId":6}"#, #"{"type":"error","callId":6,"message":"Malformed request"}"#),
            (#"[1]"#, #"{"type":"error","callId":null,"message":"Malformed request"}"#),
        ]
        for (message, expected) in cases {
            let response = try await live.backend(#"{"service":"pubsub_backend","message":\#(message)}"#)
            #expect(response.status == 200, "\(message)")
            #expect(response.body == #"{"service":"pubsub_backend","message":\#(expected)}"#, "\(message)")
        }
        await live.shutdown()
    }

    @Test("413 for a body over the limit; a body at the limit is served")
    func payloadTooLarge() async throws {
        let limit = 1024
        let live = try await LiveWorker.start { $0.backendMaxBodySize = limit }
        let atLimit = publishBody + String(repeating: " ", count: limit - publishBody.utf8.count)
        #expect(try await live.backend(atLimit).status == 200)
        let over = try await live.backend(atLimit + " ")
        #expect(over.status == 413)
        #expect(try errorBody(over) != nil)
        let wayOver = try await live.backend(publishBody + String(repeating: " ", count: 100_000))
        #expect(wayOver.status == 413)
        // The worker still serves the next request.
        #expect(try await live.backend(publishBody).status == 200)
        await live.shutdown()
    }

    @Test("405 for GET /backend, with Allow: POST")
    func methodNotAllowed() async throws {
        let live = try await LiveWorker.start()
        let response = try await HTTPTestClient.get(
            host: "127.0.0.1", port: live.backendPort, path: "/backend", headers: [("X-Backend-Key", LiveWorker.backendKey)])
        #expect(response.status == 405)
        #expect(header("Allow", in: response) == "POST")
        for method in ["PUT", "DELETE"] {
            let other = try await HTTPTestClient.request(
                method: method, host: "127.0.0.1", port: live.backendPort, path: "/backend",
                headers: [("X-Backend-Key", LiveWorker.backendKey)], body: publishBody)
            #expect(other.status == 405, "\(method)")
        }
        await live.shutdown()
    }

    @Test("GET /health is 200; other paths are 404")
    func health() async throws {
        let live = try await LiveWorker.start()
        let response = try await HTTPTestClient.get(host: "127.0.0.1", port: live.backendPort, path: "/health")
        #expect(response.status == 200)
        #expect(try JSON.parse(response.body) == ["status": "ok"])
        // Health needs no key, even when none is configured.
        let keyless = try await LiveWorker.start { $0.backendKey = nil }
        #expect(try await HTTPTestClient.get(host: "127.0.0.1", port: keyless.backendPort, path: "/health").status == 200)
        #expect(try await HTTPTestClient.get(host: "127.0.0.1", port: live.backendPort, path: "/nope").status == 404)
        await keyless.shutdown()
        await live.shutdown()
    }

    @Test("a service that never answers gets a 504 after backendTimeout; the worker keeps serving")
    func gatewayTimeout() async throws {
        let live = try await LiveWorker.start(
            // Long enough that the publish after the 504 is answered in time on a loaded machine.
            configure: { $0.backendTimeout = .seconds(1) },
            registerServices: { node in
                BuiltinServices.register(on: node)
                node.registerBackend(SilentService())
            })
        let started = ContinuousClock.now
        let response = try await live.backend(#"{"service":"silent_backend","message":{"command":"x","params":{},"callId":1}}"#)
        let elapsed = ContinuousClock.now - started
        #expect(response.status == 504)
        #expect(try errorBody(response) != nil)
        #expect(elapsed >= .seconds(1))
        #expect(elapsed < .seconds(10))
        #expect(try await live.backend(publishBody).status == 200)
        await live.shutdown()
    }

    @Test("concurrent backend requests are each answered")
    func concurrentRequests() async throws {
        let live = try await LiveWorker.start()
        let subscriber = try await live.connect()
        _ = try await subscriber.request("pubsub", "subscribe", ["channel": "c"], callId: 1)
        let statuses = try await withThrowingTaskGroup(of: Int.self) { group in
            for index in 0..<20 {
                group.addTask {
                    try await live.backend(
                        #"{"service":"pubsub_backend","message":{"command":"publish","params":{"channel":"c","message":\#(index)},"callId":\#(index)}}"#
                    ).status
                }
            }
            return try await group.reduce(into: []) { $0.append($1) }
        }
        #expect(statuses == Array(repeating: 200, count: 20))
        var received: Set<Int64> = []
        for _ in 0..<20 {
            if let value = try await subscriber.nextJSON()["message"]?["message"]?.int64Value { received.insert(value) }
        }
        #expect(received == Set(0..<20))
        await live.shutdown()
    }
}

@Suite("Live worker: pipelined backend requests")
struct BackendPipeliningTests {
    @Test("publications pipelined on one connection reach subscribers in request order")
    func pipelinedPublicationsStayOrdered() async throws {
        let live = try await LiveWorker.start()
        let subscriber = try await live.connect()
        _ = try await subscriber.request("pubsub", "subscribe", ["channel": "c"], callId: 1)
        let count = 50
        let requests = (0..<count).map { index in
            HTTPTestClient.PipelinedRequest(
                path: "/backend",
                headers: [("Content-Type", "application/json"), ("X-Backend-Key", LiveWorker.backendKey)],
                body: #"{"service":"pubsub_backend","message":{"command":"publish","params":{"channel":"c","message":\#(index)},"callId":\#(index)}}"#)
        }
        let responses = try await HTTPTestClient.pipelined(host: "127.0.0.1", port: live.backendPort, requests: requests)
        #expect(responses.map(\.status) == Array(repeating: 200, count: count))
        var received: [Int64] = []
        for _ in 0..<count {
            received.append(try #require(try await subscriber.nextJSON()["message"]?["message"]?.int64Value))
        }
        #expect(received == (0..<Int64(count)).map { $0 })
        await live.shutdown()
    }

    /// A worker with the built-in services and `gate_backend`.
    private func startWithGate(concurrent: Bool, backendTimeout: Duration) async throws -> LiveWorker {
        try await LiveWorker.start(
            configure: { $0.backendTimeout = backendTimeout },
            registerServices: { node in
                BuiltinServices.register(on: node)
                node.registerBackend(GateService(name: "gate_backend", concurrent: concurrent))
            })
    }

    @Test("a service that allows it handles pipelined requests concurrently; replies stay in request order")
    func concurrentPipelining() async throws {
        let live = try await startWithGate(concurrent: true, backendTimeout: .seconds(10))
        let responses = try await HTTPTestClient.pipelined(
            host: "127.0.0.1", port: live.backendPort, requests: [gateRequest("wait"), gateRequest("open"), gateRequest("wait")])
        #expect(responses.map(\.status) == [200, 200, 200])
        #expect(try responses.map { try JSON.parse($0.body)["message"]?["data"] } == ["wait", "open", "wait"])
        await live.shutdown()
    }

    @Test("any other service gets its pipelined requests one at a time: the second starts after the first is answered")
    func sequentialPipelining() async throws {
        let live = try await startWithGate(concurrent: false, backendTimeout: .seconds(1))
        let responses = try await HTTPTestClient.pipelined(
            host: "127.0.0.1", port: live.backendPort, requests: [gateRequest("wait"), gateRequest("open"), gateRequest("wait")])
        // `wait` could only be answered by an `open` running at the same time: it times out,
        // and only then does `open` run.
        #expect(responses.map(\.status) == [504, 200, 200])
        #expect(try responses.dropFirst().map { try JSON.parse($0.body)["message"]?["data"] } == ["open", "wait"])
        await live.shutdown()
    }

    @Test("more pipelined requests than a connection holds at once are all answered, in order")
    func manyPipelinedRequests() async throws {
        let live = try await LiveWorker.start()
        let count = 1000
        let requests = (0..<count).map { index in
            HTTPTestClient.PipelinedRequest(
                path: "/backend", headers: [("X-Backend-Key", LiveWorker.backendKey)],
                body: #"{"service":"pubsub_backend","message":{"command":"publish","params":{"channel":"c","message":1},"callId":\#(index)}}"#)
        }
        let responses = try await HTTPTestClient.pipelined(host: "127.0.0.1", port: live.backendPort, requests: requests)
        #expect(responses.map(\.status) == Array(repeating: 200, count: count))
        #expect(try responses.map { try JSON.parse($0.body)["message"]?["callId"]?.int64Value } == (0..<Int64(count)).map { $0 })
        await live.shutdown()
    }

    @Test("bytes that are not HTTP get a 400 after the replies owed, then the connection closes")
    func malformedRequest() async throws {
        let live = try await LiveWorker.start()
        let good =
            "POST /backend HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Backend-Key: \(LiveWorker.backendKey)\r\n"
            + "Content-Length: \(publishBody.utf8.count)\r\n\r\n\(publishBody)"
        let text = try await HTTPTestClient.raw(host: "127.0.0.1", port: live.backendPort, bytes: good + "NOT HTTP\r\n\r\n")
        // A body has no line end of its own: the next reply's status line follows it directly.
        let statuses = text.components(separatedBy: "HTTP/1.1 ").dropFirst().map { $0.components(separatedBy: "\r\n")[0] }
        #expect(statuses == ["200 OK", "400 Bad Request"], "\(text)")
        #expect(text.contains("Connection: close"))
        #expect(text.hasSuffix(#"{"error":"Malformed HTTP request"}"#))
        await live.shutdown()
    }

    @Test("a pipelined batch mixing endpoints and errors is answered in order")
    func mixedBatch() async throws {
        let live = try await LiveWorker.start()
        let key = [("X-Backend-Key", LiveWorker.backendKey)]
        let requests: [HTTPTestClient.PipelinedRequest] = [
            .init(path: "/backend", headers: key, body: publishBody),
            .init(method: "GET", path: "/health"),
            .init(path: "/backend", headers: key, body: "not json"),
            .init(method: "GET", path: "/nowhere"),
            .init(path: "/backend", headers: [], body: publishBody),
            .init(path: "/backend", headers: key, body: publishBody),
        ]
        let responses = try await HTTPTestClient.pipelined(host: "127.0.0.1", port: live.backendPort, requests: requests)
        #expect(responses.map(\.status) == [200, 200, 400, 404, 401, 200])
        await live.shutdown()
    }
}
