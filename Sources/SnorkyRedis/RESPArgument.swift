public import NIOCore

/// One argument of a Redis command: sent as a RESP bulk string.
public struct RESPArgument: Sendable, Hashable {
    enum Storage: Sendable, Hashable {
        case string(String)
        case bytes(ByteBuffer)
        case integer(Int64)
    }

    let storage: Storage

    public init(_ string: String) { storage = .string(string) }
    public init(_ bytes: ByteBuffer) { storage = .bytes(bytes) }
    public init(_ bytes: some Sequence<UInt8>) { storage = .bytes(ByteBuffer(bytes: bytes)) }
    public init(_ integer: some BinaryInteger) { storage = .integer(Int64(integer)) }

    public static func string(_ string: String) -> RESPArgument { RESPArgument(string) }
    public static func bytes(_ bytes: ByteBuffer) -> RESPArgument { RESPArgument(bytes) }
    public static func integer(_ integer: Int) -> RESPArgument { RESPArgument(integer) }

    /// The number of bytes of the bulk string's content.
    var byteCount: Int {
        switch storage {
        case .string(let string): string.utf8.count
        case .bytes(let buffer): buffer.readableBytes
        case .integer(let value): RESPEncoding.decimalLength(value)
        }
    }
}

extension RESPArgument: ExpressibleByStringLiteral, ExpressibleByStringInterpolation {
    public init(stringLiteral value: String) { storage = .string(value) }
}

extension RESPArgument: ExpressibleByIntegerLiteral {
    public init(integerLiteral value: Int) { storage = .integer(Int64(value)) }
}
