/// The outer frame of every message in both directions: `{"service": ..., "message": ...}`.
public struct Envelope: Sendable, Equatable {
    public var service: String
    public var message: JSON

    public init(service: String, message: JSON) {
        self.service = service
        self.message = message
    }

    /// Decodes a text frame or backend request body into an envelope.
    public static func decode(
        _ bytes: some Collection<UInt8>,
        maxDepth: Int = JSON.defaultMaxDepth
    ) throws(EnvelopeError) -> Envelope {
        let value: JSON
        do {
            value = try JSON.parse(bytes, maxDepth: maxDepth)
        } catch {
            throw .invalidJSON(error)
        }
        return try decode(value)
    }

    public static func decode(_ value: JSON) throws(EnvelopeError) -> Envelope {
        guard case .object(let object) = value,
            case .string(let service)? = object["service"],
            let message = object["message"]
        else { throw .malformedMessage }
        return Envelope(service: service, message: message)
    }

    public var json: JSON {
        .object(["service": .string(service), "message": message])
    }

    public func encodedBytes() -> [UInt8] {
        Envelope.encodedBytes(service: service, message: message)
    }

    /// `{"service": service, "message": message}` in a fresh array with room for a typical
    /// message, so encoding one does not regrow the array several times.
    public static func encodedBytes(service: String, message: JSON) -> [UInt8] {
        var output: [UInt8] = []
        output.reserveCapacity(256)
        encode(service: service, message: message, into: &output)
        return output
    }

    /// Writes an envelope without building the wrapping object first (hot path).
    public static func encode(service: String, message: JSON, into output: inout [UInt8]) {
        output.append(contentsOf: #"{"service":"#.utf8)
        JSON.writeString(service, into: &output)
        output.append(contentsOf: #","message":"#.utf8)
        message.encode(into: &output)
        output.append(UInt8(ascii: "}"))
    }
}

/// Why a frame is not an envelope. `message` is the exact text PROTOCOL.md section 3 sends.
public enum EnvelopeError: Error, Sendable, Equatable {
    case invalidJSON(JSONParseError)
    case malformedMessage

    public var message: String {
        switch self {
        case .invalidJSON: ProtocolErrorMessage.invalidJSON
        case .malformedMessage: ProtocolErrorMessage.malformedMessage
        }
    }
}
