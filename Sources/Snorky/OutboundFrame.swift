public import NIOCore
public import SnorkyProtocol

/// A complete, unmasked WebSocket text frame (header and payload), built once and written
/// as-is to every recipient: a publication to 10,000 subscribers is encoded and framed one
/// time, and each write shares the same buffer storage.
public struct OutboundFrame: Sendable {
    /// The bytes to put on the socket.
    public let wire: ByteBuffer
    private let headerLength: Int

    public init(payload: some Collection<UInt8>) {
        let length = payload.count
        let headerLength = length < 126 ? 2 : length <= Int(UInt16.max) ? 4 : 10
        var wire = ByteBuffer()
        wire.reserveCapacity(headerLength + length)
        wire.writeInteger(UInt8(0x81))  // FIN + text opcode
        switch headerLength {
        case 2:
            wire.writeInteger(UInt8(length))
        case 4:
            wire.writeInteger(UInt8(126))
            wire.writeInteger(UInt16(length))  // network byte order
        default:
            wire.writeInteger(UInt8(127))
            wire.writeInteger(UInt64(length))
        }
        wire.writeBytes(payload)
        self.wire = wire
        self.headerLength = headerLength
    }

    public init(payload: ByteBuffer) {
        self.init(payload: payload.readableBytesView)
    }

    /// An envelope frame `{"service": service, "message": message}`.
    public init(service: String, message: JSON) {
        self.init(payload: Envelope.encodedBytes(service: service, message: message))
    }

    /// The text message carried by the frame.
    public var payload: ByteBuffer {
        wire.getSlice(at: wire.readerIndex + headerLength, length: wire.readableBytes - headerLength)!
    }

    public var payloadString: String {
        String(buffer: payload)
    }
}
