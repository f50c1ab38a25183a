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
        let node = UnsafePointer(reply.assumingMemoryBound(to: redisReply.self))
        // Every bulk string of the reply is a slice of one buffer: a pub/sub message (kind,
        // channel, payload) costs one allocation, not three.
        // (All bytes are written before the first slice is taken: writing to a buffer that
        // a slice shares would copy it.)
        var strings = allocator.buffer(capacity: Self.bulkStringBytes(node))
        Self.writeBulkStrings(node, into: &strings)
        var offset = strings.readerIndex
        return Self.convert(node, slicing: strings, at: &offset)
    }

    private func fail() -> RedisError {
        let message = withUnsafeBytes(of: reader.pointee.errstr) { raw in
            String(decoding: raw.prefix(while: { $0 != 0 }), as: UTF8.self)
        }
        let error = RedisError.protocolError("hiredis: \(message)")
        failure = error
        return error
    }

    private static func bulkStringBytes(_ reply: UnsafePointer<redisReply>) -> Int {
        let node = reply.pointee
        switch node.type {
        case REDIS_REPLY_STRING:
            return node.len
        case REDIS_REPLY_ARRAY:
            var total = 0
            for index in 0..<node.elements {
                if let element = node.element[index] { total += bulkStringBytes(UnsafePointer(element)) }
            }
            return total
        default:
            return 0
        }
    }

    private static func writeBulkStrings(_ reply: UnsafePointer<redisReply>, into strings: inout ByteBuffer) {
        let node = reply.pointee
        switch node.type {
        case REDIS_REPLY_STRING where node.len > 0:
            strings.writeBytes(UnsafeRawBufferPointer(start: node.str, count: node.len))
        case REDIS_REPLY_ARRAY:
            for index in 0..<node.elements {
                if let element = node.element[index] { writeBulkStrings(UnsafePointer(element), into: &strings) }
            }
        default:
            break
        }
    }

    /// The reply as a `RESPValue`; its bulk strings are the slices of `strings` from `offset`
    /// on, in order.
    private static func convert(_ reply: UnsafePointer<redisReply>, slicing strings: ByteBuffer, at offset: inout Int) -> RESPValue {
        let node = reply.pointee
        switch node.type {
        case REDIS_REPLY_STRING:
            defer { offset += node.len }
            return .bulkString(strings.getSlice(at: offset, length: node.len)!)
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
                    values.append(convert(UnsafePointer(element), slicing: strings, at: &offset))
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
