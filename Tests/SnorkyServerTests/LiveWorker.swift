import Logging
import NIOCore
import Snorky
import SnorkyProtocol
import SnorkyServer
import SnorkyServices
import SnorkyTesting
import Testing

/// A real `Worker` on ephemeral ports with an in-memory bus, for tests over real sockets.
struct LiveWorker {
    static let backendKey = "test-key"

    let worker: Worker
    let port: Int
    let backendPort: Int

    /// Starts a worker. `configure` adjusts the server configuration (ports are forced to 0,
    /// the backend key defaults to "test-key").
    static func start(
        bus: any Bus = InMemoryBus(),
        node nodeConfiguration: NodeConfiguration = NodeConfiguration(),
        threads: Int = 2,
        configure: (inout ServerConfiguration) -> Void = { _ in },
        registerServices: @escaping (Node) -> Void = { BuiltinServices.register(on: $0) }
    ) async throws -> LiveWorker {
        var configuration = ServerConfiguration()
        configuration.port = 0
        configuration.backendPort = 0
        configuration.backendKey = backendKey
        configure(&configuration)
        let worker = Worker(
            id: "test-worker",
            server: configuration,
            node: nodeConfiguration,
            bus: bus,
            threads: threads,
            logger: Logger(label: "SnorkyServerTests", factory: { _ in SwiftLogNoOpLogHandler() }),
            registerServices: registerServices
        )
        let addresses = try await worker.start()
        return LiveWorker(
            worker: worker,
            port: try #require(addresses.public.port),
            backendPort: try #require(addresses.backend.port)
        )
    }

    func connect() async throws -> WebSocketTestClient {
        try await WebSocketTestClient.connect(host: "127.0.0.1", port: port)
    }

    /// `POST /backend` with `body`; `key` nil sends no key header.
    func backend(
        _ body: String,
        key: String? = LiveWorker.backendKey,
        headers: [(String, String)] = [("Content-Type", "application/json")],
        timeout: Duration = .seconds(10)
    ) async throws -> HTTPTestClient.Response {
        var allHeaders = headers
        if let key { allHeaders.append(("X-Backend-Key", key)) }
        return try await HTTPTestClient.request(
            host: "127.0.0.1", port: backendPort, path: "/backend", headers: allHeaders, body: body, timeout: timeout)
    }

    /// How many connections the worker closed for `reason` (`snorky_connection_closes_total`
    /// of `GET /metrics`, e.g. `rate_limited`).
    func closes(_ reason: String) async throws -> Double? {
        let response = try await HTTPTestClient.get(host: "127.0.0.1", port: backendPort, path: "/metrics")
        try #require(response.status == 200, "GET /metrics: \(response.status) \(response.body)")
        return try PrometheusExposition(parsing: response.body)
            .value("snorky_connection_closes_total", ["worker": "0", "reason": reason])
    }

    func shutdown() async {
        await worker.shutdown()
    }
}

extension WebSocketTestClient {
    func send(json: JSON) async throws {
        try await send(text: json.encodedString())
    }

    func send(service: String, _ message: JSON) async throws {
        try await send(json: ["service": .string(service), "message": message])
    }

    func call(_ service: String, _ command: String, _ params: JSON, callId: JSON? = nil) async throws {
        var message: JSONObject = ["command": .string(command), "params": params]
        if let callId { message["callId"] = callId }
        try await send(service: service, .object(message))
    }

    /// The next frame, which must be a text frame holding compact JSON.
    func nextJSON(timeout: Duration = .seconds(15)) async throws -> JSON {
        let text = try await nextText(timeout: timeout)
        let value = try JSON.parse(text)
        #expect(value.encodedString() == text, "the server's text is not compact JSON: \(text)")
        return value
    }

    func request(_ service: String, _ command: String, _ params: JSON, callId: JSON? = nil) async throws -> JSON {
        try await call(service, command, params, callId: callId)
        return try await nextJSON()
    }

    /// Proves the connection still serves requests: a pubsub round trip whose reply must be
    /// the very next frame.
    func expectUsable(_ context: Comment? = nil, sourceLocation: SourceLocation = #_sourceLocation) async throws {
        let reply = try await request("pubsub", "unsubscribe", ["channel": "never-subscribed"], callId: "usable")
        #expect(reply == rpcError("pubsub", callId: "usable", "Not subscribed"), context, sourceLocation: sourceLocation)
    }
}

func rpcResponse(_ service: String, callId: JSON?, data: JSON = nil) -> JSON {
    Envelope(service: service, message: RPCMessage.response(callId: callId, data: data)).json
}

func rpcError(_ service: String, callId: JSON?, _ message: String) -> JSON {
    Envelope(service: service, message: RPCMessage.error(callId: callId, message: message)).json
}

func protocolError(_ message: String) -> JSON {
    RPCMessage.protocolError(message).json
}

func pubsubNotification(channel: JSON, message: JSON) -> JSON {
    ["service": "pubsub", "message": ["type": "message", "channel": channel, "message": message]]
}
