import NIOCore
import Snorky
import SnorkyProtocol
import SnorkyServer
import SnorkyTesting
import Testing

/// One hostile input, and what the server must do with it.
private enum FuzzFrame {
    /// A text frame whose bytes are valid UTF-8 and at most the maximum: the server must
    /// answer (or ignore) it without closing, unless the error budget runs out.
    case text([UInt8])
    /// A fragmented text message, valid UTF-8 overall.
    case fragmented([[UInt8]])
    case ping([UInt8])
    /// Frames that must close the connection with `code`.
    case closing(opcode: WebSocketTestClient.Opcode, payload: [UInt8], code: UInt16)
}

private struct FrameGenerator {
    var rng: SeededGenerator
    let maxFrameSize: Int

    mutating func int(_ range: Range<Int>) -> Int { Int.random(in: range, using: &rng) }
    mutating func chance(_ percent: Int) -> Bool { int(0..<100) < percent }

    mutating func json(depth: Int = 0) -> JSON {
        switch int(0..<(depth > 3 ? 5 : 7)) {
        case 0: return .null
        case 1: return .bool(chance(50))
        case 2: return .int(Int64(bitPattern: rng.next()) >> UInt64(int(0..<64)))
        case 3: return .double(Double(int(-1_000_000..<1_000_000)) / 7)
        case 4: return .string(string(maxLength: 20))
        case 5: return .array((0..<int(0..<5)).map { _ in json(depth: depth + 1) })
        default:
            return .object(JSONObject((0..<int(0..<5)).map { _ in (string(maxLength: 8), json(depth: depth + 1)) }))
        }
    }

    mutating func string(maxLength: Int) -> String {
        var scalars = String.UnicodeScalarView()
        for _ in 0..<int(0..<(maxLength + 1)) {
            switch int(0..<10) {
            case 0: scalars.append(Unicode.Scalar(UInt8(int(0..<0x20))))
            case 1: scalars.append(["\"", "\\", "é", "😀", "\u{2028}", "\u{FFFF}"].randomElement(using: &rng)!)
            default: scalars.append(Unicode.Scalar(UInt8(int(0x20..<0x7F))))
            }
        }
        return String(scalars)
    }

    /// A well-formed envelope addressed somewhere, with a plausible or wrong RPC message.
    mutating func envelope() -> JSON {
        let service: JSON = ["pubsub", "pubsub", "pubsub", "nope", "snorky", "pubsub_backend", "", 1, nil].randomElement(using: &rng)!
        var message = JSONObject()
        if chance(90) { message["command"] = chance(90) ? ["subscribe", "unsubscribe", "publish", "nope", ""].randomElement(using: &rng)! : json() }
        if chance(90) {
            if chance(80) {
                var params = JSONObject()
                if chance(85) { params["channel"] = chance(50) ? .string("fuzz-\(int(0..<20))") : json() }
                if chance(50) { params["message"] = json() }
                if chance(10) { params[string(maxLength: 6)] = json() }
                message["params"] = .object(params)
            } else {
                message["params"] = json()
            }
        }
        if chance(70) { message["callId"] = json(depth: 3) }
        var envelope: JSONObject = ["service": service, "message": chance(95) ? .object(message) : json()]
        if chance(5) { envelope["service"] = nil }
        if chance(5) { envelope["message"] = nil }
        return .object(envelope)
    }

    mutating func validUTF8Text(length: Int) -> [UInt8] {
        Array(string(maxLength: length).utf8)
    }

    mutating func randomBytes(count: Int) -> [UInt8] {
        (0..<count).map { _ in UInt8.random(in: 0...255, using: &rng) }
    }

    /// Wraps bytes as a text frame, or as a closing one when they are not UTF-8 or too big.
    func classify(_ bytes: [UInt8]) -> FuzzFrame {
        if bytes.count > maxFrameSize {
            return .closing(opcode: .text, payload: bytes, code: CloseCode.messageTooBig)
        }
        if String(validating: bytes, as: UTF8.self) == nil {
            return .closing(opcode: .text, payload: bytes, code: CloseCode.invalidPayload)
        }
        return .text(bytes)
    }

    mutating func next() -> FuzzFrame {
        let roll = int(0..<100)
        switch roll {
        case 0..<20:
            // Truncated or mutated JSON.
            var bytes = envelope().encodedBytes()
            switch int(0..<4) {
            case 0: bytes = Array(bytes.prefix(int(0..<bytes.count)))
            case 1: for _ in 0..<int(1..<4) { bytes[int(0..<bytes.count)] = UInt8(int(0x20..<0x7F)) }
            case 2: bytes.remove(at: int(0..<bytes.count))
            default: bytes[int(0..<bytes.count)] = UInt8.random(in: 0...255, using: &rng)
            }
            return classify(bytes)
        case 20..<42:
            return .text(envelope().encodedBytes())
        case 42..<46:
            // 10,000 levels of nesting, bare or inside an envelope.
            let depth = 10_000
            switch int(0..<3) {
            case 0: return .text(Array((String(repeating: "[", count: depth) + String(repeating: "]", count: depth)).utf8))
            case 1: return .text(Array(String(repeating: #"{"a":"#, count: depth).utf8))
            default:
                return .text(Array((#"{"service":"pubsub","message":"# + String(repeating: "[", count: depth)
                    + String(repeating: "]", count: depth) + "}").utf8))
            }
        case 46..<50:
            let number = [
                "1e999999", "-1e400", String(repeating: "9", count: 5_000), "-" + String(repeating: "1", count: 400),
                "1" + String(repeating: "0", count: 309), "0." + String(repeating: "0", count: 5_000) + "1", "1e-99999",
                "123456789012345678901234567890",
            ].randomElement(using: &rng)!
            let text = chance(50)
                ? #"{"service":"pubsub","message":{"command":"publish","params":{"channel":\#(number),"message":\#(number)},"callId":\#(number)}}"#
                : number
            return .text(Array(text.utf8))
        case 50..<54:
            // Long strings, just under and over the maximum.
            let length = chance(80) ? int(1_000..<(maxFrameSize - 200)) : int(maxFrameSize..<(maxFrameSize * 2))
            let body = String(repeating: chance(50) ? "a" : "\\n", count: length / 2)
            return classify(Array(#"{"service":"pubsub","message":{"command":"publish","params":{"channel":"fuzz","message":"\#(body)"}}}"#.utf8))
        case 54..<62:
            return .text(validUTF8Text(length: int(0..<200)))
        case 62..<67:
            return classify(randomBytes(count: int(0..<300)))
        case 67..<70:
            return .closing(opcode: .binary, payload: chance(50) ? envelope().encodedBytes() : randomBytes(count: int(0..<100)), code: CloseCode.unsupportedData)
        case 70..<72:
            return .closing(opcode: .text, payload: [UInt8](repeating: UInt8(ascii: " "), count: maxFrameSize + 1 + int(0..<1000)), code: CloseCode.messageTooBig)
        case 72..<76:
            return .ping(randomBytes(count: int(0..<126)))
        case 76..<80:
            let bytes = envelope().encodedBytes()
            var cuts = (0..<int(1..<5)).map { _ in int(0..<(bytes.count + 1)) }.sorted()
            cuts.append(bytes.count)
            var start = 0
            var pieces: [[UInt8]] = []
            for cut in cuts {
                pieces.append(Array(bytes[start..<cut]))
                start = cut
            }
            return .fragmented(pieces)
        default:
            // Plain valid requests, so the fuzzed connections also subscribe and publish.
            let command = ["subscribe", "unsubscribe", "publish"].randomElement(using: &rng)!
            var params: JSONObject = ["channel": .string("fuzz-\(int(0..<20))")]
            if command == "publish" { params["message"] = json() }
            let envelope: JSON = ["service": "pubsub", "message": ["command": .string(command), "params": .object(params), "callId": .int(Int64(roll))]]
            return .text(envelope.encodedBytes())
        }
    }
}

@Suite("Live worker: fuzz")
struct FuzzTests {
    @Test("10,000 random and malformed frames: the worker stays up and keeps serving a well-behaved client",
          .timeLimit(.minutes(2)))
    func fuzz() async throws {
        let maxFrameSize = 64 * 1024
        // The spray connection sends as fast as it can; the request rate limit (4004) would
        // replace it long before the protocol error budget this test exercises.
        let live = try await LiveWorker.start(threads: 2, configure: { $0.maxRequestsPerSecond = 0 })
        var generator = FrameGenerator(rng: SeededGenerator(seed: 0xF0_22_5EED), maxFrameSize: maxFrameSize)

        // The well-behaved client, on its own connection the whole time.
        let healthChannel: JSON = ["health": "a9c3e0f1d2b4"]
        let health = try await live.connect()
        #expect(try await health.request("pubsub", "subscribe", ["channel": healthChannel], callId: 0) == rpcResponse("pubsub", callId: 0))
        var healthChecks = 0
        func checkHealth() async throws {
            healthChecks += 1
            let callId = JSON.int(Int64(healthChecks))
            try await health.call("pubsub", "publish", ["channel": healthChannel, "message": callId], callId: callId)
            #expect(try await health.nextJSON(timeout: .seconds(10)) == pubsubNotification(channel: healthChannel, message: callId))
            #expect(try await health.nextJSON(timeout: .seconds(10)) == rpcResponse("pubsub", callId: callId))
        }

        var spray = try await live.connect()
        var sprayConnections = 1
        var closingConnections = 0
        var unexpectedCloses: [String] = []
        /// What the spray connection was sent last, to explain an unexpected close.
        var recentFrames: [String] = []
        func note(_ frame: String) {
            recentFrames.append(frame.count > 120 ? "\(frame.prefix(120))… (\(frame.utf8.count) bytes)" : frame)
            if recentFrames.count > 4 { recentFrames.removeFirst() }
        }

        /// Replaces the spray connection after the server closed it, checking why it did.
        func reconnectSpray() async throws {
            // The only reason to close a connection fed valid UTF-8 under the size limit is
            // the protocol error budget (or too many queued frames), both 1008.
            do {
                let code = try await spray.expectClose(timeout: .seconds(10), ignoringOtherEvents: true)
                if code != CloseCode.policyViolation {
                    unexpectedCloses.append("spray connection closed with \(String(describing: code))")
                }
            } catch WebSocketTestClientError.connectionClosed {
                unexpectedCloses.append("spray connection dropped without a close frame; last frames sent: \(recentFrames)")
            }
            spray = try await live.connect()
            sprayConnections += 1
            recentFrames = []
        }

        let total = 10_000
        for index in 0..<total {
            let frame = generator.next()
            switch frame {
            case .closing(let opcode, let payload, let code):
                // On a fresh connection, so the expected close code is not masked by another.
                let victim = try await live.connect()
                closingConnections += 1
                try await victim.send(frame: opcode, payload: payload)
                let received = try await victim.expectClose(timeout: .seconds(10), ignoringOtherEvents: true)
                if received != code {
                    unexpectedCloses.append("frame \(index): expected close \(code), got \(String(describing: received))")
                }
            case .text(let bytes):
                if !spray.isConnected { try await reconnectSpray() }
                note("text " + String(decoding: bytes, as: UTF8.self))
                do {
                    try await spray.send(rawText: bytes)
                } catch WebSocketTestClientError.connectionClosed {
                    try await reconnectSpray()
                }
            case .ping(let bytes):
                if !spray.isConnected { try await reconnectSpray() }
                note("ping \(bytes.count) bytes")
                do {
                    try await spray.ping(payload: bytes)
                } catch WebSocketTestClientError.connectionClosed {
                    try await reconnectSpray()
                }
            case .fragmented(let pieces):
                if !spray.isConnected { try await reconnectSpray() }
                note("fragments " + pieces.map { String(decoding: $0, as: UTF8.self) }.joined(separator: " | "))
                do {
                    for (position, piece) in pieces.enumerated() {
                        try await spray.send(
                            frame: position == 0 ? .text : .continuation, fin: position == pieces.count - 1, payload: piece)
                    }
                } catch WebSocketTestClientError.connectionClosed {
                    try await reconnectSpray()
                }
            }
            if index % 250 == 249 {
                try await checkHealth()
            }
        }
        try await checkHealth()
        #expect(unexpectedCloses.isEmpty, "\(unexpectedCloses.prefix(20))")
        // The run exercised what it meant to.
        #expect(closingConnections > 500)
        #expect(sprayConnections > 5)

        // Every fuzzed connection goes away, with its subscriptions: only the health client's remain.
        await spray.abort()
        try await eventually(timeout: .seconds(10), "fuzzed connections and subscriptions are cleaned up") {
            live.worker.server.connectionCount == 1 && live.worker.node.hub.topicCount == 1
        }
        try await checkHealth()
        await live.shutdown()
    }
}
