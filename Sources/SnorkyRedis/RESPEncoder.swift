public import NIOCore

/// Writes Redis commands as RESP arrays of bulk strings.
public enum RESPEncoding {
    /// Appends `*N\r\n` followed by one `$len\r\n<bytes>\r\n` per argument.
    public static func writeCommand(_ arguments: some Collection<RESPArgument>, into buffer: inout ByteBuffer) {
        writeArrayHeader(count: arguments.count, into: &buffer)
        for argument in arguments {
            writeBulkString(argument, into: &buffer)
        }
    }

    /// The exact number of bytes `writeCommand` appends.
    public static func encodedLength(_ arguments: some Collection<RESPArgument>) -> Int {
        var length = 3 + decimalLength(Int64(arguments.count))
        for argument in arguments {
            let count = argument.byteCount
            length += 5 + decimalLength(Int64(count)) + count
        }
        return length
    }

    public static func writeArrayHeader(count: Int, into buffer: inout ByteBuffer) {
        buffer.writeInteger(UInt8(ascii: "*"))
        writeDecimal(Int64(count), into: &buffer)
        buffer.writeStaticString("\r\n")
    }

    /// `$len\r\n`: the header of a bulk string of `length` bytes; the caller writes the bytes
    /// and the final `\r\n`.
    public static func writeBulkStringHeader(length: Int, into buffer: inout ByteBuffer) {
        buffer.writeInteger(UInt8(ascii: "$"))
        writeDecimal(Int64(length), into: &buffer)
        buffer.writeStaticString("\r\n")
    }

    public static func writeBulkString(_ argument: RESPArgument, into buffer: inout ByteBuffer) {
        switch argument.storage {
        case .string(let string):
            writeBulkStringHeader(length: string.utf8.count, into: &buffer)
            buffer.writeString(string)
        case .bytes(let bytes):
            writeBulkStringHeader(length: bytes.readableBytes, into: &buffer)
            buffer.writeImmutableBuffer(bytes)
        case .integer(let value):
            writeBulkStringHeader(length: decimalLength(value), into: &buffer)
            writeDecimal(value, into: &buffer)
        }
        buffer.writeStaticString("\r\n")
    }

    static func writeDecimal(_ value: Int64, into buffer: inout ByteBuffer) {
        // Short decimal strings are stored inline: no allocation.
        buffer.writeString(String(value))
    }

    static func decimalLength(_ value: Int64) -> Int {
        var length = value < 0 ? 2 : 1
        var rest = value.magnitude
        while rest >= 10 {
            rest /= 10
            length += 1
        }
        return length
    }
}

/// A `MessageToByteEncoder` for pipelines that send plain commands (`[RESPArgument]`).
/// The connections in this module encode inside their command handlers (the reply promise
/// must be queued with the bytes), with the same `RESPEncoding` functions.
public struct RESPEncoder: MessageToByteEncoder, Sendable {
    public typealias OutboundIn = [RESPArgument]

    public init() {}

    public func encode(data: [RESPArgument], out: inout ByteBuffer) throws {
        RESPEncoding.writeCommand(data, into: &out)
    }
}
