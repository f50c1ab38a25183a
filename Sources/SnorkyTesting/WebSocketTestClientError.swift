/// Why a `WebSocketTestClient` operation failed. Every case prints as a sentence a test
/// failure can show as is.
public enum WebSocketTestClientError: Error, Sendable, Equatable, CustomStringConvertible {
    /// The TCP connection could not be made (refused, unreachable, timed out).
    case connectionFailed(host: String, port: Int, reason: String)
    /// The server answered the upgrade request with something other than 101.
    case upgradeRejected(status: Int, body: String)
    /// The server said 101 but the handshake was invalid (for example a wrong `Sec-WebSocket-Accept`).
    case upgradeFailed(reason: String)
    /// Nothing arrived in time.
    case timedOut(waitingFor: String, after: Duration)
    /// The connection is closed and every frame received before that has been read.
    case connectionClosed
    /// An event arrived, but not the kind the test expected.
    case unexpectedEvent(expected: String, got: WebSocketTestClient.Event)
    /// The server broke RFC 6455 (a masked frame, a stray continuation, invalid UTF-8 in text, ...).
    case protocolViolation(String)

    public var description: String {
        switch self {
        case .connectionFailed(let host, let port, let reason):
            "could not connect to \(host):\(port): \(reason)"
        case .upgradeRejected(let status, let body):
            "WebSocket upgrade rejected with HTTP status \(status)" + (body.isEmpty ? "" : ": \(body)")
        case .upgradeFailed(let reason):
            "WebSocket upgrade failed: \(reason)"
        case .timedOut(let what, let duration):
            "timed out after \(duration) waiting for \(what)"
        case .connectionClosed:
            "the WebSocket connection is closed and no frames are left to read"
        case .unexpectedEvent(let expected, let event):
            "expected \(expected), got \(event)"
        case .protocolViolation(let detail):
            "server violated the WebSocket protocol: \(detail)"
        }
    }
}
