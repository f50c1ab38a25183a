/// Errors of the Redis client. Match on `code`; `message` is for humans.
public struct RedisError: Error, Sendable, CustomStringConvertible {
    public struct Code: Hashable, Sendable, CustomStringConvertible {
        private enum Base: Hashable, Sendable {
            case connectionRefused
            case connectionClosed
            case errorReply
            case timeout
            case protocolError
            case invalidURL
        }

        private let base: Base
        private init(_ base: Base) { self.base = base }

        /// Could not connect: refused, no such socket, unreachable, connect timeout.
        public static let connectionRefused = Code(.connectionRefused)
        /// The connection closed (or was closed) before the reply arrived.
        public static let connectionClosed = Code(.connectionClosed)
        /// Redis answered with an error reply (`-ERR ...`); `message` holds it.
        public static let errorReply = Code(.errorReply)
        /// No reply within the command timeout; the connection is closed.
        public static let timeout = Code(.timeout)
        /// The byte stream is not valid RESP, or a reply arrived that nobody asked for.
        public static let protocolError = Code(.protocolError)
        /// The Redis URL cannot be parsed.
        public static let invalidURL = Code(.invalidURL)

        public var description: String {
            switch base {
            case .connectionRefused: "connection refused"
            case .connectionClosed: "connection closed"
            case .errorReply: "error reply"
            case .timeout: "timeout"
            case .protocolError: "protocol error"
            case .invalidURL: "invalid URL"
            }
        }
    }

    public let code: Code
    public let message: String

    public init(_ code: Code, _ message: String) {
        self.code = code
        self.message = message
    }

    public static func connectionRefused(_ message: String) -> RedisError { RedisError(.connectionRefused, message) }
    public static let connectionClosed = RedisError(.connectionClosed, "connection closed")
    public static func errorReply(_ message: String) -> RedisError { RedisError(.errorReply, message) }
    public static func timeout(_ message: String) -> RedisError { RedisError(.timeout, message) }
    public static func protocolError(_ message: String) -> RedisError { RedisError(.protocolError, message) }
    public static func invalidURL(_ message: String) -> RedisError { RedisError(.invalidURL, message) }

    public var description: String {
        "redis \(code): \(message)"
    }
}
