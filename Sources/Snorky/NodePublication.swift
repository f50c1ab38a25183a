import NIOCore

/// The framing the node puts around what it publishes on the bus, so a publication can
/// skip one client (e.g. a cursor's owner) and a direct message can name its recipient.
///
///     topic publication: 0x01 | 0x00                                   | envelope
///                        0x01 | 0x01 | clientID u64 | len u16 | nodeID | envelope
///     inbox message:     0x01 | clientID u64                          | envelope
///
/// Versioned by the first byte so the format can change in a rolling upgrade.
enum NodePublication {
    static let version: UInt8 = 1

    static func topic(envelope: [UInt8], excluding: ClientAddress?) -> ByteBuffer {
        var buffer = ByteBuffer()
        let nodeBytes = excluding.map { Array($0.nodeID.utf8) } ?? []
        buffer.reserveCapacity(envelope.count + 12 + nodeBytes.count)
        buffer.writeInteger(version)
        if let excluding {
            buffer.writeInteger(UInt8(1))
            buffer.writeInteger(excluding.clientID)
            buffer.writeInteger(UInt16(nodeBytes.count))
            buffer.writeBytes(nodeBytes)
        } else {
            buffer.writeInteger(UInt8(0))
        }
        buffer.writeBytes(envelope)
        return buffer
    }

    /// Splits a topic publication into the client to skip and the envelope bytes.
    static func parseTopic(_ payload: ByteBuffer) -> (excluding: ClientAddress?, envelope: ByteBuffer)? {
        var payload = payload
        guard payload.readInteger(as: UInt8.self) == version, let flags = payload.readInteger(as: UInt8.self) else {
            return nil
        }
        guard flags & 1 == 1 else { return (nil, payload) }
        guard let clientID = payload.readInteger(as: UInt64.self),
            let length = payload.readInteger(as: UInt16.self),
            let nodeID = payload.readString(length: Int(length))
        else { return nil }
        return (ClientAddress(nodeID: nodeID, clientID: clientID), payload)
    }

    static func inbox(clientID: UInt64, envelope: [UInt8]) -> ByteBuffer {
        var buffer = ByteBuffer()
        buffer.reserveCapacity(envelope.count + 9)
        buffer.writeInteger(version)
        buffer.writeInteger(clientID)
        buffer.writeBytes(envelope)
        return buffer
    }

    static func parseInbox(_ payload: ByteBuffer) -> (clientID: UInt64, envelope: ByteBuffer)? {
        var payload = payload
        guard payload.readInteger(as: UInt8.self) == version, let clientID = payload.readInteger(as: UInt64.self) else {
            return nil
        }
        return (clientID, payload)
    }
}
