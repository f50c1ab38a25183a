import SnorkyProtocol
import Testing

private func decode(_ text: String) throws(EnvelopeError) -> Envelope {
    try Envelope.decode(Array(text.utf8))
}

private func decodeError(_ text: String) -> EnvelopeError? {
    do {
        _ = try decode(text)
        return nil
    } catch {
        return error
    }
}

@Suite("Envelope")
struct EnvelopeTests {
    @Test("a well-formed envelope decodes")
    func decodesEnvelope() throws {
        let envelope = try decode(#"{"service":"pubsub","message":{"command":"subscribe","params":{"channel":"news"},"callId":0}}"#)
        #expect(envelope.service == "pubsub")
        #expect(envelope.message == ["command": "subscribe", "params": ["channel": "news"], "callId": 0])
    }

    @Test("key order, whitespace and extra keys do not matter")
    func lenientShape() throws {
        let envelope = try decode(" {\n \"message\" : 1 , \"extra\": [1], \"service\" : \"chat\" } ")
        #expect(envelope == Envelope(service: "chat", message: 1))
    }

    @Test("any JSON value is a message, null included")
    func anyMessage() throws {
        #expect(try decode(#"{"service":"s","message":null}"#).message == .null)
        #expect(try decode(#"{"service":"s","message":[1,2]}"#).message == [1, 2])
        #expect(try decode(#"{"service":"s","message":"x"}"#).message == "x")
        #expect(try decode(#"{"service":"","message":0}"#).service == "")
    }

    @Test(
        "text that is not JSON is Invalid JSON",
        arguments: ["", "not json", "{", #"{"service":"pubsub","message":}"#, "{'service':'x'}", #"{"a":1} trailing"#]
    )
    func invalidJSON(text: String) {
        let error = decodeError(text)
        guard case .invalidJSON? = error else {
            Issue.record("\(text) gave \(String(describing: error))")
            return
        }
        #expect(error?.message == "Invalid JSON")
    }

    @Test("invalid UTF-8 bytes and over-deep nesting are Invalid JSON")
    func invalidBytes() {
        #expect(throws: EnvelopeError.self) { try Envelope.decode([0x7B, 0xFF, 0x7D] as [UInt8]) }
        let deep = Array((String(repeating: "[", count: 10) + String(repeating: "]", count: 10)).utf8)
        do {
            _ = try Envelope.decode(deep, maxDepth: 5)
            Issue.record("nesting beyond maxDepth accepted")
        } catch {
            #expect(error.message == "Invalid JSON")
        }
    }

    @Test(
        "JSON that is not an object, or lacks a string service or a message, is Malformed message",
        arguments: [
            "[]", "1", "\"pubsub\"", "null", "true", "{}", #"{"service":"pubsub"}"#, #"{"message":{}}"#,
            #"{"service":1,"message":{}}"#, #"{"service":null,"message":{}}"#, #"{"service":["pubsub"],"message":{}}"#,
            #"{"service":{"name":"pubsub"},"message":{}}"#, #"{"Service":"pubsub","Message":{}}"#,
            #"[{"service":"pubsub","message":{}}]"#,
        ]
    )
    func malformedMessage(text: String) {
        let error = decodeError(text)
        #expect(error == .malformedMessage, "\(text)")
        #expect(error?.message == "Malformed message")
    }

    @Test("decode(JSON) applies the same rules to a parsed value")
    func decodeParsedValue() throws {
        #expect(try Envelope.decode(["service": "a", "message": 1] as JSON) == Envelope(service: "a", message: 1))
        #expect(throws: EnvelopeError.malformedMessage) { try Envelope.decode(["service": "a"] as JSON) }
    }

    @Test("encoding is compact, service first, and decodes back")
    func encode() throws {
        let envelope = Envelope(service: "pubsub", message: ["type": "message", "channel": ["a": 1], "message": "hé\n"])
        let text = String(decoding: envelope.encodedBytes(), as: UTF8.self)
        #expect(text == #"{"service":"pubsub","message":{"type":"message","channel":{"a":1},"message":"hé\n"}}"#)
        #expect(try Envelope.decode(envelope.encodedBytes()) == envelope)
        #expect(envelope.json == ["service": "pubsub", "message": envelope.message])
        #expect(envelope.json.encodedString() == text)
        // The service name is escaped like any string.
        let odd = Envelope(service: "a\"b", message: nil)
        #expect(String(decoding: odd.encodedBytes(), as: UTF8.self) == #"{"service":"a\"b","message":null}"#)
    }

    @Test("protocol error strings are exact")
    func errorStrings() {
        #expect(ProtocolErrorMessage.service == "snorky")
        #expect(ProtocolErrorMessage.invalidJSON == "Invalid JSON")
        #expect(ProtocolErrorMessage.malformedMessage == "Malformed message")
        #expect(ProtocolErrorMessage.unknownService == "Unknown service")
        #expect(ProtocolErrorMessage.malformedRequest == "Malformed request")
        #expect(RPCErrorMessage.unknownCommand == "Unknown command")
        #expect(RPCErrorMessage.invalidParams == "Invalid params")
        #expect(RPCErrorMessage.internalError == "Internal error")
        #expect(EnvelopeError.malformedMessage.message == ProtocolErrorMessage.malformedMessage)
    }

    @Test("close codes match RFC 6455 and the protocol")
    func closeCodes() {
        #expect(CloseCode.normal == 1000)
        #expect(CloseCode.goingAway == 1001)
        #expect(CloseCode.protocolError == 1002)
        #expect(CloseCode.unsupportedData == 1003)
        #expect(CloseCode.invalidPayload == 1007)
        #expect(CloseCode.policyViolation == 1008)
        #expect(CloseCode.messageTooBig == 1009)
        #expect(CloseCode.internalError == 1011)
        let applicationCodes = [
            CloseCode.slowConsumer, CloseCode.keepaliveTimeout, CloseCode.tooManyConnections, CloseCode.rateLimited,
        ]
        #expect(applicationCodes.allSatisfy { (4000...4999).contains($0) })
        #expect(Set(applicationCodes).count == applicationCodes.count)
    }
}

@Suite("RPC frames")
struct RPCFramesTests {
    @Test("a full request decodes; callId may be any JSON value")
    func decodeCall() throws {
        for callId: JSON in [0, 7, "abc", ["nested": [1]], [1, 2], 1.5, true] {
            let message: JSON = ["command": "subscribe", "params": ["channel": "news"], "callId": callId]
            let call = try RPCCall.decode(message).get()
            #expect(call.command == "subscribe")
            #expect(call.params == ["channel": "news"])
            #expect(call.callId == callId)
        }
    }

    @Test("callId is optional; a null callId counts as absent")
    func optionalCallId() throws {
        #expect(try RPCCall.decode(["command": "c", "params": [:]]).get().callId == nil)
        #expect(try RPCCall.decode(["command": "c", "params": [:], "callId": nil]).get().callId == nil)
    }

    @Test("params that are not an object still decode (Invalid params is decided after the command)")
    func nonObjectParams() throws {
        for params: JSON in [nil, 1, "x", [1], true] {
            let call = try RPCCall.decode(["command": "c", "params": params, "callId": 1]).get()
            #expect(call.params == params)
        }
    }

    @Test("a missing or non-string command, or missing params, is Malformed request with the callId echoed")
    func malformedRequest() {
        let cases: [(JSON, JSON?)] = [
            (["params": [:], "callId": 7], 7),
            (["command": "c", "callId": "id"], "id"),
            (["command": 5, "params": [:], "callId": ["x": 1]], ["x": 1]),
            (["command": nil, "params": [:], "callId": 0], 0),
            (["command": "c"], nil),
            (["params": [:]], nil),
            (["command": "c", "callId": nil], nil),
            ([:], nil),
        ]
        for (message, callId) in cases {
            switch RPCCall.decode(message) {
            case .success(let call):
                Issue.record("\(message) decoded as \(call)")
            case .failure(let error):
                #expect(error.callId == callId, "\(message)")
            }
        }
    }

    @Test("a message that is not an object is Malformed request without a callId")
    func nonObjectMessage() {
        for message: JSON in [nil, 1, "subscribe", [["command": "c", "params": [:], "callId": 1]], true] {
            switch RPCCall.decode(message) {
            case .success(let call): Issue.record("\(message) decoded as \(call)")
            case .failure(let error): #expect(error.callId == nil, "\(message)")
            }
        }
    }

    @Test("RPCCall.json omits a nil callId and round-trips")
    func callJSON() throws {
        let call = RPCCall(command: "publish", params: ["channel": "c", "message": 1], callId: 3)
        #expect(call.json.encodedString() == #"{"command":"publish","params":{"channel":"c","message":1},"callId":3}"#)
        #expect(try RPCCall.decode(call.json).get() == call)
        let noId = RPCCall(command: "x", params: [:])
        #expect(noId.json.encodedString() == #"{"command":"x","params":{}}"#)
    }

    @Test("a response carries the callId verbatim, or omits it when there was none or it was null")
    func response() {
        #expect(RPCMessage.response(callId: 0, data: nil).encodedString() == #"{"type":"response","callId":0,"data":null}"#)
        #expect(RPCMessage.response(callId: "a", data: [1]).encodedString() == #"{"type":"response","callId":"a","data":[1]}"#)
        #expect(RPCMessage.response(callId: nil, data: nil).encodedString() == #"{"type":"response","data":null}"#)
        #expect(RPCMessage.response(callId: .null, data: 5).encodedString() == #"{"type":"response","data":5}"#)
        #expect(RPCMessage.response(callId: ["k": [1.5]], data: nil)["callId"] == ["k": [1.5]])
    }

    @Test("an error always carries callId, null when there was none")
    func error() {
        #expect(
            RPCMessage.error(callId: nil, message: "Invalid params").encodedString()
                == #"{"type":"error","callId":null,"message":"Invalid params"}"#)
        #expect(
            RPCMessage.error(callId: .null, message: "x").encodedString() == #"{"type":"error","callId":null,"message":"x"}"#)
        #expect(
            RPCMessage.error(callId: 7, message: "Unknown command").encodedString()
                == #"{"type":"error","callId":7,"message":"Unknown command"}"#)
    }

    @Test("protocol errors go on the reserved snorky service with a null callId")
    func protocolError() {
        let envelope = RPCMessage.protocolError("Invalid JSON")
        #expect(
            String(decoding: envelope.encodedBytes(), as: UTF8.self)
                == #"{"service":"snorky","message":{"type":"error","callId":null,"message":"Invalid JSON"}}"#)
        #expect(RPCMessage.protocolError("Malformed message", callId: 3).message["callId"] == 3)
    }
}
