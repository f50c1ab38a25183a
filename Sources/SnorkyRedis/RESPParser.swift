import CHiredis
public import NIOCore

/// hiredis's RESP reply parser (`redisReader`), the only part of hiredis in use; sockets
/// are SwiftNIO's.
///
/// Not thread-safe and not `Sendable`: one parser belongs to one decoder, on one channel's
/// event loop. Feed it bytes as they arrive, then take the complete replies with `next`.
public final class RESPParser {
    private let reader: UnsafeMutablePointer<redisReader>
    private var failure: RedisError?

    public init() {
        guard let reader = redisReaderCreate() else {
            fatalError("hiredis: redisReaderCreate failed (out of memory)")
        }
        self.reader = reader
    }

    deinit {
        redisReaderFree(reader)
    }

    /// Appends bytes to the parser's buffer (hiredis copies them).
    public func feed(_ bytes: UnsafeRawBufferPointer) throws(RedisError) {
        if let failure { throw failure }
        guard let base = bytes.baseAddress, !bytes.isEmpty else { return }
        if redisReaderFeed(reader, base.assumingMemoryBound(to: CChar.self), bytes.count) != REDIS_OK {
            throw fail()
        }
    }

    public func feed(_ buffer: ByteBuffer) throws(RedisError) {
        let result: Result<Void, RedisError> = buffer.withUnsafeReadableBytes { bytes in
            do throws(RedisError) {
                try feed(bytes)
                return .success(())
            } catch {
                return .failure(error)
            }
        }
        try result.get()
    }

    /// The next complete reply, or nil if more bytes are needed. Throws on a protocol error;
    /// the parser (and the connection) cannot be used after that.
    public func next(allocator: ByteBufferAllocator = ByteBufferAllocator()) throws(RedisError) -> RESPValue? {
        if let failure { throw failure }
        var reply: UnsafeMutableRawPointer?
        guard redisReaderGetReply(reader, &reply) == REDIS_OK else {
            throw fail()
        }
        guard let reply else { return nil }
        defer { freeReplyObject(reply) }
        return Self.convert(UnsafePointer(reply.assumingMemoryBound(to: redisReply.self)), allocator: allocator)
    }

    private func fail() -> RedisError {
        let message = withUnsafeBytes(of: reader.pointee.errstr) { raw in
            String(decoding: raw.prefix(while: { $0 != 0 }), as: UTF8.self)
        }
        let error = RedisError.protocolError("hiredis: \(message)")
        failure = error
        return error
    }

    private static func convert(_ reply: UnsafePointer<redisReply>, allocator: ByteBufferAllocator) -> RESPValue {
        let node = reply.pointee
        switch node.type {
        case REDIS_REPLY_STRING:
            var buffer = allocator.buffer(capacity: node.len)
            if node.len > 0 {
                buffer.writeBytes(UnsafeRawBufferPointer(start: node.str, count: node.len))
            }
            return .bulkString(buffer)
        case REDIS_REPLY_STATUS:
            return .simpleString(text(node))
        case REDIS_REPLY_ERROR:
            return .error(text(node))
        case REDIS_REPLY_INTEGER:
            return .integer(Int64(node.integer))
        case REDIS_REPLY_ARRAY:
            var values: [RESPValue] = []
            values.reserveCapacity(node.elements)
            for index in 0..<node.elements {
                if let element = node.element[index] {
                    values.append(convert(UnsafePointer(element), allocator: allocator))
                } else {
                    values.append(.null)
                }
            }
            return .array(values)
        default:  // REDIS_REPLY_NIL
            return .null
        }
    }

    private static func text(_ node: redisReply) -> String {
        guard node.len > 0, let str = node.str else { return "" }
        return String(decoding: UnsafeRawBufferPointer(start: str, count: node.len), as: UTF8.self)
    }
}

/// A `ByteToMessageDecoder` that feeds inbound bytes to hiredis and emits each complete
/// reply as a `RESPValue`. Lives on its channel's event loop like any handler.
public struct RESPDecoder: ByteToMessageDecoder {
    public typealias InboundOut = RESPValue

    private let parser = RESPParser()

    public init() {}

    public mutating func decode(context: ChannelHandlerContext, buffer: inout ByteBuffer) throws -> DecodingState {
        if buffer.readableBytes > 0 {
            try parser.feed(buffer)
            buffer.moveReaderIndex(to: buffer.writerIndex)
        }
        let allocator = context.channel.allocator
        while let value = try parser.next(allocator: allocator) {
            context.fireChannelRead(Self.wrapInboundOut(value))
        }
        return .needMoreData
    }

    public mutating func decodeLast(
        context: ChannelHandlerContext,
        buffer: inout ByteBuffer,
        seenEOF: Bool
    ) throws -> DecodingState {
        _ = try decode(context: context, buffer: &buffer)
        return .needMoreData
    }
}
