/// Exact error strings of the wire protocol. Clients match on them: never reword one.
public enum ProtocolErrorMessage {
    /// The reserved service name protocol errors are reported on; clients ignore it.
    public static let service = "snorky"
    public static let invalidJSON = "Invalid JSON"
    public static let malformedMessage = "Malformed message"
    public static let unknownService = "Unknown service"
    public static let malformedRequest = "Malformed request"
}

/// Generic RPC error strings (PROTOCOL.md section 2).
public enum RPCErrorMessage {
    public static let unknownCommand = "Unknown command"
    public static let invalidParams = "Invalid params"
    public static let internalError = "Internal error"
    /// A command that needs the cluster bus while it is unreachable.
    public static let serviceUnavailable = "Service unavailable"
}
