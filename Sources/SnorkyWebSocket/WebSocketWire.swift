package import NIOCore

/// Server-side framing of the control frames Snorky sends itself. Data frames are framed
/// once per message by `OutboundFrame`, so the pipeline has no per-write frame encoder.
package enum WebSocketWire {
    /// Codes a peer may send and a server may echo (RFC 6455 section 7.4): 1004-1006 and
    /// 1015 are reserved, and anything below 1000 or above 4999 is invalid.
    package static func isValidPeerCloseCode(_ code: UInt16) -> Bool {
        switch code {
        case 1000...1003, 1007...1011, 3000...4999: true
        default: false
        }
    }

    package static func closeFrame(code: UInt16, reason: String, allocator: ByteBufferAllocator) -> ByteBuffer {
        // Control frame payloads are limited to 125 bytes: 2 for the code, the rest reason.
        var reasonBytes = Array(reason.utf8.prefix(123))
        while String(validating: reasonBytes, as: UTF8.self) == nil { reasonBytes.removeLast() }
        var payload = allocator.buffer(capacity: 2 + reasonBytes.count)
        payload.writeInteger(code)
        payload.writeBytes(reasonBytes)
        return controlFrame(opcode: 0x8, payload: payload, allocator: allocator)
    }

    package static func pongFrame(payload: ByteBuffer, allocator: ByteBufferAllocator) -> ByteBuffer {
        controlFrame(opcode: 0xA, payload: payload, allocator: allocator)
    }

    package static func pingFrame(payload: ByteBuffer, allocator: ByteBufferAllocator) -> ByteBuffer {
        controlFrame(opcode: 0x9, payload: payload, allocator: allocator)
    }

    private static func controlFrame(opcode: UInt8, payload: ByteBuffer, allocator: ByteBufferAllocator) -> ByteBuffer {
        precondition(payload.readableBytes <= 125)
        var frame = allocator.buffer(capacity: 2 + payload.readableBytes)
        frame.writeInteger(0x80 | opcode)
        frame.writeInteger(UInt8(payload.readableBytes))
        frame.writeImmutableBuffer(payload)
        return frame
    }
}
