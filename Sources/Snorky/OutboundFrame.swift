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
        var header: [UInt8] = [0x81]  // FIN + text opcode
        if length < 126 {
            header.append(UInt8(length))
        } else if length <= Int(UInt16.max) {
            header.append(126)
            header.append(UInt8(length >> 8))
            header.append(UInt8(length & 0xFF))
        } else {
            header.append(127)
            for shift in stride(from: 56, through: 0, by: -8) {
                header.append(UInt8((UInt64(length) >> UInt64(shift)) & 0xFF))
            }
        }
        var wire = ByteBuffer()
        wire.reserveCapacity(header.count + length)
        wire.writeBytes(header)
        wire.writeBytes(payload)
        self.wire = wire
        self.headerLength = header.count
    }

    public init(payload: ByteBuffer) {
        self.init(payload: payload.readableBytesView)
    }

    /// An envelope frame `{"service": service, "message": message}`.
    public init(service: String, message: JSON) {
        var bytes: [UInt8] = []
        Envelope.encode(service: service, message: message, into: &bytes)
        self.init(payload: bytes)
    }

    /// The text message carried by the frame.
    public var payload: ByteBuffer {
        wire.getSlice(at: wire.readerIndex + headerLength, length: wire.readableBytes - headerLength)!
    }

    public var payloadString: String {
        String(buffer: payload)
    }
}
