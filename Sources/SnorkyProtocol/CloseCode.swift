/// WebSocket close codes Snorky sends. RFC 6455 codes, then Snorky's own in the 4000 range
/// (reserved for applications), each documented in docs/protocol.md.
public enum CloseCode {
    public static let normal: UInt16 = 1000
    /// Server shutting down or restarting: reconnect (with backoff).
    public static let goingAway: UInt16 = 1001
    public static let protocolError: UInt16 = 1002
    /// Binary frame: Snorky speaks text only.
    public static let unsupportedData: UInt16 = 1003
    /// Text frame with invalid UTF-8.
    public static let invalidPayload: UInt16 = 1007
    /// Too many protocol errors in a short time.
    public static let policyViolation: UInt16 = 1008
    /// Frame larger than the configured maximum.
    public static let messageTooBig: UInt16 = 1009
    public static let internalError: UInt16 = 1011
    /// The client did not read its messages fast enough and its outbound buffer filled up.
    public static let slowConsumer: UInt16 = 4001
    /// The client did not answer a keepalive ping in time.
    public static let keepaliveTimeout: UInt16 = 4002
    /// The worker is at its connection limit.
    public static let tooManyConnections: UInt16 = 4003
    /// The client sent requests faster than its allowed rate.
    public static let rateLimited: UInt16 = 4004
}
