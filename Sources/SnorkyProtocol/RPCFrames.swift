/// An RPC request as carried in an envelope's `message`:
/// `{"command": "...", "params": {...}, "callId": any}`.
public struct RPCCall: Sendable, Equatable {
    public var command: String
    /// Kept as raw JSON: a non-object is an `Invalid params` error, reported only after the
    /// command is known (PROTOCOL.md: `Unknown command` is checked before params).
    public var params: JSON
    /// nil when the request had no `callId` or a `null` one.
    public var callId: JSON?

    public init(command: String, params: JSON, callId: JSON? = nil) {
        self.command = command
        self.params = params
        self.callId = callId
    }

    /// Decodes a request. On failure returns the `callId` found (if any) so the
    /// `Malformed request` error can echo it.
    public static func decode(_ message: JSON) -> Result<RPCCall, MalformedRequest> {
        guard case .object(let object) = message else { return .failure(MalformedRequest(callId: nil)) }
        // `Optional.none`, not `nil`: a bare `nil` here is JSON's nil literal, i.e. `.null`.
        let callId = object["callId"].flatMap { $0.isNull ? Optional.none : $0 }
        guard case .string(let command)? = object["command"], let params = object["params"] else {
            return .failure(MalformedRequest(callId: callId))
        }
        return .success(RPCCall(command: command, params: params, callId: callId))
    }

    public var json: JSON {
        var object: JSONObject = ["command": .string(command), "params": params]
        if let callId { object["callId"] = callId }
        return .object(object)
    }
}

public struct MalformedRequest: Error, Sendable, Equatable {
    public var callId: JSON?
}

/// Builders for the three kinds of RPC message a service sends.
public enum RPCMessage {
    /// `{"type":"response","callId":X,"data":D}`; `callId` omitted when the request had none.
    public static func response(callId: JSON?, data: JSON) -> JSON {
        var object: JSONObject = ["type": "response"]
        if let callId, !callId.isNull { object["callId"] = callId }
        object["data"] = data
        return .object(object)
    }

    /// `{"type":"error","callId":X,"message":"..."}`; `callId` is always present (null when none).
    public static func error(callId: JSON?, message: String) -> JSON {
        .object(["type": "error", "callId": callId ?? .null, "message": .string(message)])
    }

    /// A protocol error frame on the reserved `snorky` service.
    public static func protocolError(_ message: String, callId: JSON? = nil) -> Envelope {
        Envelope(service: ProtocolErrorMessage.service, message: error(callId: callId, message: message))
    }
}
