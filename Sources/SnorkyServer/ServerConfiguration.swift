public import SnorkyServices

/// Where and how one worker serves. Filled by the `snorky` executable from flags,
/// environment and the config file (see SnorkyConfig); defaults are safe for production.
public struct ServerConfiguration: Sendable {
    /// Public WebSocket listener.
    public var host = "127.0.0.1"
    public var port = 5800
    /// The WebSocket endpoint path.
    public var webSocketPath = "/ws"
    /// Backend HTTP API listener: loopback unless told otherwise.
    public var backendHost = "127.0.0.1"
    public var backendPort = 5801
    /// Key the backend API requires in `X-Backend-Key`; nil refuses every request.
    public var backendKey: String?
    /// Largest WebSocket message accepted (after reassembling fragments); larger closes 1009.
    public var maxFrameSize = 64 * 1024
    /// Bytes queued for a client that is not reading before it is closed as slow (4001).
    public var maxOutboundBuffer = 1024 * 1024
    /// Largest backend request body; larger gets 413.
    public var backendMaxBodySize = 1024 * 1024
    /// A backend request not answered in this time gets 504.
    public var backendTimeout: Duration = .seconds(10)
    /// How long a graceful drain waits for clients to leave before closing the rest.
    public var drainTimeout: Duration = .seconds(10)
    /// A drain sends its 1001 closes in batches spread over this long, so a deploy does
    /// not make every client reconnect at the same instant.
    public var drainSpread: Duration = .seconds(2)

    /// A ping is sent after this long without hearing from a client...
    public var pingInterval: Duration = .seconds(25)
    /// ...and the client is closed (4002) if it sends nothing, not even the pong, within this.
    public var pongTimeout: Duration = .seconds(10)
    /// WebSocket connections this worker accepts at once; more are closed with 4003.
    /// 0 means no limit.
    public var maxConnections = 0
    /// Requests (messages and pings) one connection may send per second, sustained; a
    /// client over its allowance is closed with 4004. 0 means no limit.
    public var maxRequestsPerSecond = 100
    /// Requests a connection may send at once above the sustained rate (the token bucket's
    /// size); a fresh connection starts with a full bucket.
    public var requestBurst = 200
    /// Values of the `Origin` header allowed to open a WebSocket connection; any other
    /// origin is refused with 403. nil allows every origin (logged as a warning at start).
    /// A request without `Origin` (a non-browser client) is always allowed.
    public var allowedOrigins: [String]?

    /// Serve the demo page at `/` and demo connection tokens at `/demo/token` (any visitor
    /// gets a token for any name: for trying Snorky out only). The client is served at
    /// `/snorky.js` and `/snorky.mjs` either way.
    public var demo = false

    /// Extra fields this worker reports in `GET /stats` (e.g. its slot and pid).
    public var statsLabels: [String: String] = [:]
    /// Verifies the `token` URL parameter; nil when no token secret is configured.
    public var tokens: ConnectionTokens?
    /// How this worker reports on `GET /metrics`.
    public var metrics = MetricsConfiguration()

    public init() {}
}

extension ServerConfiguration {
    /// Whether a WebSocket upgrade with these headers passes `allowedOrigins`: no list,
    /// no `Origin` header (non-browser clients), or an exact match of every `Origin` value.
    func isOriginAllowed(_ origins: [String]) -> Bool {
        guard let allowedOrigins else { return true }
        return origins.allSatisfy { allowedOrigins.contains($0) }
    }
}
