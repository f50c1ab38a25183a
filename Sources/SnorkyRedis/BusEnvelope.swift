public import NIOCore

/// The bytes PUBLISHed on a bus channel: a small versioned header, then the payload
/// unchanged (the notification exactly as clients receive it).
///
/// Version 1 (17-byte header, integers big-endian):
///
/// | offset | size | field |
/// |---|---|---|
/// | 0 | 1 | version, `0x01` |
/// | 1 | 8 | publisher id (random per bus instance, i.e. per worker) |
/// | 9 | 8 | sequence number (per publisher, from 1) |
/// | 17 | n | payload |
///
/// A receiver drops (and logs) versions it does not know, so a rolling upgrade introduces
/// a new version only after every worker can read it.
public struct BusEnvelope: Sendable, Hashable {
    public static let currentVersion: UInt8 = 1
    public static let headerLength = 17

    public var publisherID: UInt64
    public var sequence: UInt64
    public var payload: ByteBuffer

    public init(publisherID: UInt64, sequence: UInt64, payload: ByteBuffer) {
        self.publisherID = publisherID
        self.sequence = sequence
        self.payload = payload
    }

    public enum Decoded: Sendable, Hashable {
        case envelope(BusEnvelope)
        case unsupportedVersion(UInt8)
        case malformed
    }

    /// Parses `bytes`; the payload is a slice of `bytes` (no copy).
    public static func decode(_ bytes: ByteBuffer) -> Decoded {
        guard let version = bytes.getInteger(at: bytes.readerIndex, as: UInt8.self) else { return .malformed }
        guard version == currentVersion else { return .unsupportedVersion(version) }
        guard bytes.readableBytes >= headerLength,
            let publisher = bytes.getInteger(at: bytes.readerIndex + 1, endianness: .big, as: UInt64.self),
            let sequence = bytes.getInteger(at: bytes.readerIndex + 9, endianness: .big, as: UInt64.self),
            let payload = bytes.getSlice(at: bytes.readerIndex + headerLength, length: bytes.readableBytes - headerLength)
        else { return .malformed }
        return .envelope(BusEnvelope(publisherID: publisher, sequence: sequence, payload: payload))
    }

    /// Writes the version-1 header (the caller writes the payload after it).
    public static func writeHeader(publisherID: UInt64, sequence: UInt64, into buffer: inout ByteBuffer) {
        buffer.writeInteger(currentVersion)
        buffer.writeInteger(publisherID, endianness: .big)
        buffer.writeInteger(sequence, endianness: .big)
    }

    /// Header and payload.
    public func encoded() -> ByteBuffer {
        var buffer = ByteBuffer()
        buffer.reserveCapacity(Self.headerLength + payload.readableBytes)
        Self.writeHeader(publisherID: publisherID, sequence: sequence, into: &buffer)
        buffer.writeImmutableBuffer(payload)
        return buffer
    }
}
