import SnorkyProtocol

/// An error a command reports to its caller: `message` is sent verbatim in the
/// `{"type":"error"}` reply. Any other error thrown by a command becomes `Internal error`
/// and its details go to the server log only.
public struct RPCError: Error, Sendable, Equatable, CustomStringConvertible {
    public let message: String

    public init(_ message: String) {
        self.message = message
    }

    public var description: String { message }

    public static let unknownCommand = RPCError(RPCErrorMessage.unknownCommand)
    public static let invalidParams = RPCError(RPCErrorMessage.invalidParams)
    public static let internalError = RPCError(RPCErrorMessage.internalError)
    public static let serviceUnavailable = RPCError(RPCErrorMessage.serviceUnavailable)
}
