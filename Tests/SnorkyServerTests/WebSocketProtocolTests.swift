import NIOCore
import Snorky
import SnorkyProtocol
import SnorkyServer
import SnorkyServices
import SnorkyTesting
import Testing

/// PROTOCOL.md sections 1-3 over a real WebSocket connection to a real worker.
@Suite("Live worker: WebSocket protocol")
struct WebSocketProtocolTests {
    // MARK: The original JavaScript client's frames

    @Test("the original Snorky JavaScript client's exact frames: subscribe, notification, unsubscribe")
    func originalClientFrames() async throws {
        let live = try await LiveWorker.start()
        let subscriber = try await live.connect()
        let publisher = try await live.connect()

        try await subscriber.send(
            text: #"{"service":"pubsub","message":{"command":"subscribe","params":{"channel":"news"},"callId":0}}"#)
        let subscribed = try await subscriber.nextText()
        #expect(try JSON.parse(subscribed) == JSON.parse(#"{"service":"pubsub","message":{"type":"response","callId":0,"data":null}}"#))
        #expect(subscribed == #"{"service":"pubsub","message":{"type":"response","callId":0,"data":null}}"#)

        try await publisher.send(
            text: #"{"service":"pubsub","message":{"command":"publish","params":{"channel":"news","message":{"title":"Hello","n":1}},"callId":0}}"#
        )
        let notified = try await subscriber.nextText()
        #expect(
            try JSON.parse(notified)
                == JSON.parse(#"{"service":"pubsub","message":{"type":"message","channel":"news","message":{"title":"Hello","n":1}}}"#))
        #expect(try JSON.parse(notified).encodedString() == notified, "not compact: \(notified)")
        #expect(try JSON.parse(notified)["message"]?["callId"] == nil)
        let published = try await publisher.nextText()
        #expect(published == #"{"service":"pubsub","message":{"type":"response","callId":0,"data":null}}"#)

        try await subscriber.send(
            text: #"{"service":"pubsub","message":{"command":"unsubscribe","params":{"channel":"news"},"callId":1}}"#)
        #expect(
            try await subscriber.nextText() == #"{"service":"pubsub","message":{"type":"response","callId":1,"data":null}}"#)

        // After unsubscribing, a publication no longer arrives: the next frame the subscriber
        // gets is the answer to its own later request.
        #expect(try await publisher.request("pubsub", "publish", ["channel": "news", "message": 2], callId: 1)
            == rpcResponse("pubsub", callId: 1))
        try await subscriber.expectUsable("a notification arrived after unsubscribe")
        await live.shutdown()
    }

    @Test("a publication reaches subscribers on every event loop of the worker, the publisher's own first")
    func fanOut() async throws {
        let live = try await LiveWorker.start(threads: 3)
        var subscribers: [WebSocketTestClient] = []
        for index in 0..<9 {
            let client = try await live.connect()
            #expect(try await client.request("pubsub", "subscribe", ["channel": ["room": 1]], callId: .int(Int64(index)))
                == rpcResponse("pubsub", callId: .int(Int64(index))))
            subscribers.append(client)
        }
        let publisher = subscribers[0]
        try await publisher.call("pubsub", "publish", ["channel": ["room": 1.0], "message": "hi"], callId: "p")
        #expect(try await publisher.nextJSON() == pubsubNotification(channel: ["room": 1.0], message: "hi"))
        #expect(try await publisher.nextJSON() == rpcResponse("pubsub", callId: "p"))
        for client in subscribers.dropFirst() {
            #expect(try await client.nextJSON() == pubsubNotification(channel: ["room": 1], message: "hi"))
        }
        await live.shutdown()
    }

    // MARK: Section 3 rows

    @Test("Invalid JSON: answered on snorky, the connection stays usable")
    func invalidJSON() async throws {
        let live = try await LiveWorker.start()
        let client = try await live.connect()
        for text in ["", "hello", "{", "[1,]", "{\"service\":\"pubsub\",\"message\":{}} trailing", "\"\\ud800\"", "1e400"] {
            try await client.send(text: text)
            #expect(try await client.nextJSON() == protocolError("Invalid JSON"), "\(text)")
            try await client.expectUsable(Comment(rawValue: text))
        }
        try await client.send(text: "nope")
        #expect(try await client.nextText() == #"{"service":"snorky","message":{"type":"error","callId":null,"message":"Invalid JSON"}}"#)
        await live.shutdown()
    }

    @Test("Malformed message: not an object, or no string service, or no message")
    func malformedMessage() async throws {
        let live = try await LiveWorker.start()
        let client = try await live.connect()
        for text in [
            "[]", "1", "null", "\"pubsub\"", "{}", #"{"service":"pubsub"}"#, #"{"message":{}}"#,
            #"{"service":7,"message":{}}"#, #"{"service":null,"message":{}}"#,
        ] {
            try await client.send(text: text)
            #expect(try await client.nextJSON() == protocolError("Malformed message"), "\(text)")
            try await client.expectUsable(Comment(rawValue: text))
        }
        await live.shutdown()
    }

    @Test("Unknown service, including backend-only services")
    func unknownService() async throws {
        let live = try await LiveWorker.start()
        let client = try await live.connect()
        for service in ["chat-that-does-not-exist", "", "snorky", "pubsub_backend", "PUBSUB"] {
            try await client.call(service, "publish", ["channel": "c", "message": 1], callId: 1)
            #expect(try await client.nextJSON() == protocolError("Unknown service"), "\(service)")
            try await client.expectUsable(Comment(rawValue: service))
        }
        await live.shutdown()
    }

    @Test("Malformed request on the addressed service, callId echoed")
    func malformedRequest() async throws {
        let live = try await LiveWorker.start()
        let client = try await live.connect()
        let cases: [(JSON, JSON)] = [
            ("subscribe", nil),
            ([1], nil),
            (["params": ["channel": "x"], "callId": 7], 7),
            (["command": "subscribe", "callId": ["id": "x"]], ["id": "x"]),
            (["command": 1, "params": [:], "callId": "c"], "c"),
            (["command": "subscribe", "callId": nil], nil),
        ]
        for (message, callId) in cases {
            try await client.send(service: "pubsub", message)
            #expect(try await client.nextJSON() == rpcError("pubsub", callId: callId, "Malformed request"), "\(message)")
            try await client.expectUsable(Comment(rawValue: "\(message)"))
        }
        await live.shutdown()
    }

    @Test("Unknown command, checked before params")
    func unknownCommand() async throws {
        let live = try await LiveWorker.start()
        let client = try await live.connect()
        #expect(try await client.request("pubsub", "shout", ["channel": "x"], callId: 1) == rpcError("pubsub", callId: 1, "Unknown command"))
        #expect(try await client.request("pubsub", "shout", "not an object", callId: 2) == rpcError("pubsub", callId: 2, "Unknown command"))
        try await client.expectUsable()
        await live.shutdown()
    }

    @Test("Invalid params: missing, extra, or not an object")
    func invalidParams() async throws {
        let live = try await LiveWorker.start()
        let client = try await live.connect()
        let cases: [(String, JSON)] = [
            ("subscribe", [:]),
            ("subscribe", ["channel": "x", "extra": true]),
            ("publish", ["channel": "x"]),
            ("subscribe", "channel"),
            ("subscribe", ["x"]),
            ("subscribe", nil),
        ]
        for (index, (command, params)) in cases.enumerated() {
            let callId = JSON.int(Int64(index))
            #expect(try await client.request("pubsub", command, params, callId: callId)
                == rpcError("pubsub", callId: callId, "Invalid params"), "\(command) \(params)")
        }
        try await client.expectUsable()
        await live.shutdown()
    }

    @Test("callId: echoed verbatim, omitted from a success without one, null in an error without one")
    func callIdRules() async throws {
        let live = try await LiveWorker.start()
        let client = try await live.connect()
        for callId: JSON in [0, 42, -1, "x", ["a": [1, 2]], [nil], 2.5, false] {
            let reply = try await client.request("pubsub", "publish", ["channel": "c", "message": 1], callId: callId)
            #expect(reply == rpcResponse("pubsub", callId: callId))
            #expect(reply["message"]?["callId"]?.encodedString() == callId.encodedString())
        }
        try await client.send(service: "pubsub", ["command": "publish", "params": ["channel": "c", "message": 1]])
        #expect(try await client.nextText() == #"{"service":"pubsub","message":{"type":"response","data":null}}"#)
        try await client.send(service: "pubsub", ["command": "publish", "params": ["channel": "c", "message": 1], "callId": nil])
        #expect(try await client.nextText() == #"{"service":"pubsub","message":{"type":"response","data":null}}"#)
        try await client.send(service: "pubsub", ["command": "publish", "params": [:]])
        #expect(try await client.nextText() == #"{"service":"pubsub","message":{"type":"error","callId":null,"message":"Invalid params"}}"#)
        await live.shutdown()
    }

    @Test("Already subscribed, Not subscribed, and publishing to an empty channel")
    func pubsubErrors() async throws {
        let live = try await LiveWorker.start()
        let client = try await live.connect()
        #expect(try await client.request("pubsub", "subscribe", ["channel": ["a": 1, "b": 2]], callId: 1) == rpcResponse("pubsub", callId: 1))
        #expect(try await client.request("pubsub", "subscribe", ["channel": ["b": 2, "a": 1]], callId: 2)
            == rpcError("pubsub", callId: 2, "Already subscribed"))
        #expect(try await client.request("pubsub", "unsubscribe", ["channel": "x"], callId: 3) == rpcError("pubsub", callId: 3, "Not subscribed"))
        #expect(try await client.request("pubsub", "publish", ["channel": "empty", "message": 1], callId: 4) == rpcResponse("pubsub", callId: 4))
        await live.shutdown()
    }

    @Test("publishing disabled by configuration: Not authorized")
    func publishingDisabled() async throws {
        let live = try await LiveWorker.start(registerServices: { node in
            var options = BuiltinServiceOptions()
            options.pubSubPolicy = PubSubPolicy(clientPublish: false)
            BuiltinServices.register(on: node, options: options)
        })
        let client = try await live.connect()
        #expect(try await client.request("pubsub", "subscribe", ["channel": "c"], callId: 1) == rpcResponse("pubsub", callId: 1))
        #expect(try await client.request("pubsub", "publish", ["channel": "c", "message": 1], callId: 2)
            == rpcError("pubsub", callId: 2, "Not authorized"))
        try await client.expectUsable()
        await live.shutdown()
    }

    @Test("a binary frame closes the connection with 1003")
    func binaryFrame() async throws {
        let live = try await LiveWorker.start()
        let client = try await live.connect()
        try await client.expectUsable()
        try await client.send(binary: Array(#"{"service":"pubsub","message":{}}"#.utf8))
        #expect(try await client.expectClose() == CloseCode.unsupportedData)
        try await client.waitForDisconnect()
        try await (try await live.connect()).expectUsable("the worker serves new connections")
        await live.shutdown()
    }

    @Test("invalid UTF-8 in a text frame closes the connection with 1007")
    func invalidUTF8() async throws {
        let live = try await LiveWorker.start()
        for bytes: [UInt8] in [
            [0x7B, 0xFF, 0x7D],
            Array(#"{"service":"pubsub","message":""#.utf8) + [0xC0, 0xAF] + Array(#""}"#.utf8),
            [0xED, 0xA0, 0x80],  // an encoded surrogate
            [0xE2, 0x82],  // truncated
        ] {
            let client = try await live.connect()
            try await client.send(rawText: bytes)
            #expect(try await client.expectClose() == CloseCode.invalidPayload, "\(bytes)")
            try await client.waitForDisconnect()
        }
        try await (try await live.connect()).expectUsable()
        await live.shutdown()
    }

    @Test("a message larger than maxFrameSize closes with 1009; one exactly at the limit is served")
    func frameTooBig() async throws {
        let limit = 4096
        let live = try await LiveWorker.start { $0.maxFrameSize = limit }

        // Exactly the limit: a valid request padded with JSON whitespace.
        let request = #"{"service":"pubsub","message":{"command":"publish","params":{"channel":"c","message":1},"callId":1}}"#
        let atLimit = request + String(repeating: " ", count: limit - request.utf8.count)
        let client = try await live.connect()
        try await client.send(text: atLimit)
        #expect(try await client.nextJSON() == rpcResponse("pubsub", callId: 1))

        try await client.send(text: atLimit + " ")
        #expect(try await client.expectClose() == CloseCode.messageTooBig)
        try await client.waitForDisconnect()

        let huge = try await live.connect()
        try await huge.send(text: String(repeating: "x", count: 200_000))
        #expect(try await huge.expectClose() == CloseCode.messageTooBig)
        await live.shutdown()
    }

    @Test("the default maximum is 64 KiB")
    func defaultMaxFrameSize() async throws {
        let live = try await LiveWorker.start()
        let padding = String(repeating: "a", count: 60_000)
        let client = try await live.connect()
        #expect(try await client.request("pubsub", "publish", ["channel": "c", "message": .string(padding)], callId: 1)
            == rpcResponse("pubsub", callId: 1))
        try await client.send(text: String(repeating: " ", count: 64 * 1024 + 1))
        #expect(try await client.expectClose() == CloseCode.messageTooBig)
        await live.shutdown()
    }

    @Test("a fragmented message is reassembled, with a ping between the fragments")
    func fragments() async throws {
        let live = try await LiveWorker.start()
        let client = try await live.connect()
        let text = Array(#"{"service":"pubsub","message":{"command":"publish","params":{"channel":"é","message":"😀"},"callId":"frag"}}"#.utf8)
        // Split inside multi-byte characters too: UTF-8 is checked on the whole message.
        let cuts = [10, 61, 62, text.count - 3]
        var start = 0
        for (index, cut) in (cuts + [text.count]).enumerated() {
            try await client.send(
                frame: index == 0 ? .text : .continuation, fin: cut == text.count, payload: Array(text[start..<cut]))
            if index == 1 {
                try await client.ping(payload: [1, 2, 3])
                #expect(try await client.next() == .pong)
            }
            start = cut
        }
        #expect(try await client.nextJSON() == rpcResponse("pubsub", callId: "frag"))
        await live.shutdown()
    }

    @Test("fragments adding up to more than maxFrameSize close with 1009")
    func fragmentsTooBig() async throws {
        let live = try await LiveWorker.start { $0.maxFrameSize = 4096 }
        let client = try await live.connect()
        let chunk = [UInt8](repeating: UInt8(ascii: " "), count: 1500)
        try await client.send(frame: .text, fin: false, payload: chunk)
        try await client.send(frame: .continuation, fin: false, payload: chunk)
        try await client.send(frame: .continuation, fin: false, payload: chunk)
        #expect(try await client.expectClose() == CloseCode.messageTooBig)
        await live.shutdown()
    }

    @Test("100 protocol errors close with 1008; 99 do not")
    func errorBudget() async throws {
        let live = try await LiveWorker.start()
        let client = try await live.connect()
        for index in 0..<99 {
            try await client.send(text: index.isMultiple(of: 2) ? "not json" : "[]")
        }
        for _ in 0..<99 {
            #expect(try await client.nextJSON()["service"] == "snorky")
        }
        try await client.expectUsable("after 99 protocol errors")
        try await client.send(text: "the hundredth")
        #expect(try await client.nextJSON() == protocolError("Invalid JSON"))
        #expect(try await client.expectClose() == CloseCode.policyViolation)
        try await client.waitForDisconnect()
        await live.shutdown()
    }

    /// Opens a connection per violation, commits it, and expects close 1002; a bystander
    /// connection is unaffected.
    private func expectProtocolErrorClose(
        _ violations: [(String, @Sendable (WebSocketTestClient) async throws -> Void)]
    ) async throws {
        let live = try await LiveWorker.start()
        let bystander = try await live.connect()
        #expect(try await bystander.request("pubsub", "subscribe", ["channel": "b"], callId: 1) == rpcResponse("pubsub", callId: 1))
        for (name, violate) in violations {
            let client = try await live.connect()
            do {
                try await violate(client)
                let code = try await client.expectClose(timeout: .seconds(1), ignoringOtherEvents: true)
                #expect(code == CloseCode.protocolError, "\(name)")
                try await client.waitForDisconnect()
            } catch {
                Issue.record("\(name): \(error)")
            }
        }
        try await bystander.expectUsable()
        await live.shutdown()
    }

    @Test("RFC 6455 framing violations close with 1002 and leave other connections alone")
    func framingViolations() async throws {
        try await expectProtocolErrorClose([
            ("continuation without a start", { try await $0.send(frame: .continuation, payload: Array("{}".utf8)) }),
            ("fragmented control frame", { try await $0.send(frame: .ping, fin: false, payload: [1]) }),
            ("control frame over 125 bytes", { try await $0.send(frame: .ping, payload: [UInt8](repeating: 0, count: 126)) }),
            ("new message inside a fragmented one", {
                try await $0.send(frame: .text, fin: false, payload: Array("{".utf8))
                try await $0.send(frame: .text, payload: Array("}".utf8))
            }),
        ])
    }

    @Test("RFC 6455: an unmasked client frame, a reserved opcode or an RSV bit without an extension closes with 1002")
    func maskOpcodeAndReservedBits() async throws {
        // RFC 6455 5.1 (a server MUST close on an unmasked frame), 5.2 (non-zero RSV without a
        // negotiated extension, and unknown opcodes, MUST fail the connection).
        try await expectProtocolErrorClose([
            ("unmasked frame", { try await $0.send(frame: .text, masked: false, payload: Array("{}".utf8)) }),
            ("reserved data opcode", { try await $0.send(frame: .raw(0x3), payload: [1]) }),
            ("reserved control opcode", { try await $0.send(frame: .raw(0xB), payload: []) }),
            ("RSV1 without an extension", { try await $0.send(frame: .text, rsv1: true, payload: Array("{}".utf8)) }),
        ])
    }

    @Test("a client still sending when the server closes it can still read the close frame (no reset)")
    func closeWhileClientSends() async throws {
        // The server closes its socket as soon as its close frame is written. Input that
        // arrives after that (the client has not seen the close yet and keeps sending) is
        // answered by the kernel with a reset, and a reset discards what the client has not
        // read yet: the close frame is lost and the client sees an abnormal closure instead
        // of 1008. RFC 6455 7.1.1 has the server wait for the client's close (half-close the
        // output and keep draining input, with a timeout) before closing TCP.
        let live = try await LiveWorker.start()
        let client = try await live.connect()
        // A client whose loop is busy: it does not read for a while, and keeps sending.
        try await client.pauseReading()
        for _ in 0..<100 {
            try await client.send(text: "not json")
        }
        // The server closes after the hundredth error, long before these are all sent. A
        // server that lingers (RFC 6455 7.1.1) reads and drops them; one that has closed its
        // socket resets the connection, and the first failing send ends the loop.
        for _ in 0..<2_000 {
            guard (try? await client.send(text: "not json")) != nil else { break }
        }
        try? await client.resumeReading()
        var received: [WebSocketTestClient.Event] = []
        while true {
            let event: WebSocketTestClient.Event
            do {
                event = try await client.next()
            } catch WebSocketTestClientError.connectionClosed {
                Issue.record("the connection was reset before the close frame could be read (after \(received.count) frames)")
                break
            }
            if case .close(let code, let reason) = event {
                #expect(code == CloseCode.policyViolation)
                // The hundredth error's reply is the last frame before the close.
                #expect(received.count == 100, "\(received.count) frames before the close (\(reason))")
                break
            }
            received.append(event)
        }
        await live.shutdown()
    }

    @Test("ping is answered with pong; the connection stays usable")
    func pingPong() async throws {
        let live = try await LiveWorker.start()
        let client = try await live.connect()
        try await client.ping(payload: Array("hello".utf8))
        #expect(try await client.next() == .pong)
        try await client.ping()
        #expect(try await client.next() == .pong)
        try await client.expectUsable()
        await live.shutdown()
    }

    @Test("a client close is answered with a close and the server forgets the connection")
    func clientClose() async throws {
        let live = try await LiveWorker.start()
        let client = try await live.connect()
        #expect(try await client.request("pubsub", "subscribe", ["channel": "bye"], callId: 1) == rpcResponse("pubsub", callId: 1))
        #expect(live.worker.node.hub.topicCount == 1)
        try await client.close(code: 1000)
        #expect(try await client.expectClose() == 1000)
        try await client.waitForDisconnect()
        // Disconnect cleanup announces nothing to the outside: poll the hub.
        try await eventually(timeout: .seconds(15), "the subscription is dropped") {
            live.worker.node.hub.topicCount == 0 && live.worker.server.connectionCount == 0
        }
        await live.shutdown()
    }

    @Test("a close with a code that must not be sent is answered with 1002, not echoed")
    func invalidCloseCodes() async throws {
        // RFC 6455 7.4: 1005, 1006 and 1015 are never sent in a close frame; codes below 1000
        // are invalid. The server must not echo them back.
        let live = try await LiveWorker.start()
        for code: UInt16 in [0, 999, 1005, 1006, 1015, 5000] {
            let client = try await live.connect()
            try await client.close(code: code)
            let answer = try await client.expectClose()
            #expect(answer == CloseCode.protocolError, "close \(code) answered with \(String(describing: answer))")
        }
        for code: UInt16 in [1000, 1001, 4000, 4999] {
            let client = try await live.connect()
            try await client.close(code: code)
            #expect(try await client.expectClose() == code)
        }
        await live.shutdown()
    }

    @Test("an abrupt TCP close drops the client's subscriptions")
    func abruptDisconnect() async throws {
        let live = try await LiveWorker.start()
        let client = try await live.connect()
        for channel: JSON in ["a", "b", ["c": 1]] {
            _ = try await client.request("pubsub", "subscribe", ["channel": channel], callId: 1)
        }
        #expect(live.worker.node.hub.topicCount == 3)
        await client.abort()
        try await eventually(timeout: .seconds(15), "the subscriptions are dropped") {
            live.worker.node.hub.topicCount == 0 && live.worker.server.connectionCount == 0
        }
        await live.shutdown()
    }

    @Test("a plain HTTP request to the WebSocket port is refused politely")
    func plainHTTP() async throws {
        let live = try await LiveWorker.start()
        let upgrade = try await HTTPTestClient.get(host: "127.0.0.1", port: live.port, path: "/ws")
        #expect(upgrade.status == 426)
        let other = try await HTTPTestClient.get(host: "127.0.0.1", port: live.port, path: "/elsewhere")
        #expect(other.status == 404)
        do {
            _ = try await WebSocketTestClient.connect(host: "127.0.0.1", port: live.port, path: "/not-ws")
            Issue.record("upgrade on the wrong path accepted")
        } catch WebSocketTestClientError.upgradeRejected(let status, _) {
            #expect(status == 404)
        }
        await live.shutdown()
    }
}
