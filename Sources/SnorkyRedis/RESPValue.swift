public import NIOCore

/// A RESP2 reply.
///
/// hiredis 0.14 does not distinguish a null bulk string (`$-1`) from a null array (`*-1`):
/// both are `.null`.
public enum RESPValue: Sendable, Hashable {
    /// `+OK`
    case simpleString(String)
    /// `-ERR message`
    case error(String)
    /// `:42`
    case integer(Int64)
    /// `$3\r\nfoo`: bytes, not necessarily UTF-8.
    case bulkString(ByteBuffer)
    /// `*2\r\n...`
    case array([RESPValue])
    /// `$-1` or `*-1`
    case null

    /// A bulk string made of `string`'s UTF-8 bytes.
    public static func bulkString(_ string: String) -> RESPValue {
        .bulkString(ByteBuffer(string: string))
    }

    /// The text of a simple string or (UTF-8 decoded) bulk string.
    public var string: String? {
        switch self {
        case .simpleString(let string): string
        case .bulkString(let buffer): String(buffer: buffer)
        default: nil
        }
    }

    /// The value of an integer reply.
    public var integer: Int64? {
        if case .integer(let value) = self { value } else { nil }
    }

    /// The elements of an array reply.
    public var array: [RESPValue]? {
        if case .array(let values) = self { values } else { nil }
    }

    /// The bytes of a bulk string.
    public var bytes: ByteBuffer? {
        if case .bulkString(let buffer) = self { buffer } else { nil }
    }

    public var isNull: Bool {
        if case .null = self { true } else { false }
    }

    /// The message of an error reply.
    public var errorMessage: String? {
        if case .error(let message) = self { message } else { nil }
    }
}

extension RESPValue: CustomStringConvertible {
    public var description: String {
        switch self {
        case .simpleString(let string): "+\(string)"
        case .error(let message): "-\(message)"
        case .integer(let value): ":\(value)"
        case .bulkString(let buffer): "$\(String(decoding: buffer.readableBytesView, as: UTF8.self).debugDescription)"
        case .array(let values): "[\(values.map(\.description).joined(separator: ", "))]"
        case .null: "(nil)"
        }
    }
}
