import NIOCore
import Testing

@testable import SnorkyRedis

@Suite("RESP parsing (hiredis) and encoding")
struct RESPTests {
    /// A stream of replies covering every RESP2 type, and what it decodes to.
    static let stream: [(bytes: String, value: RESPValue)] = [
        ("+OK\r\n", .simpleString("OK")),
        ("-ERR unknown command 'FOO'\r\n", .error("ERR unknown command 'FOO'")),
        (":0\r\n", .integer(0)),
        (":-42\r\n", .integer(-42)),
        (":9223372036854775807\r\n", .integer(.max)),
        ("$5\r\nhello\r\n", .bulkString("hello")),
        ("$0\r\n\r\n", .bulkString("")),
        ("$6\r\na\r\nb\0c\r\n", .bulkString(ByteBuffer(bytes: Array("a\r\nb".utf8) + [0] + Array("c".utf8)))),
        ("$-1\r\n", .null),
        ("*-1\r\n", .null),
        ("*0\r\n", .array([])),
        (
            "*3\r\n$7\r\nmessage\r\n$11\r\nsnorky:news\r\n$3\r\nhi!\r\n",
            .array([.bulkString("message"), .bulkString("snorky:news"), .bulkString("hi!")])
        ),
        (
            "*4\r\n:1\r\n*2\r\n$1\r\na\r\n*2\r\n+deep\r\n-ERR inner\r\n$-1\r\n*1\r\n*1\r\n*1\r\n:7\r\n",
            .array([
                .integer(1),
                .array([.bulkString("a"), .array([.simpleString("deep"), .error("ERR inner")])]),
                .null,
                .array([.array([.array([.integer(7)])])]),
            ])
        ),
    ]

    static var allBytes: [UInt8] { stream.flatMap { Array($0.bytes.utf8) } }
    static var allValues: [RESPValue] { stream.map(\.value) }

    private func drain(_ parser: RESPParser) throws -> [RESPValue] {
        var values: [RESPValue] = []
        while let value = try parser.next() { values.append(value) }
        return values
    }

    @Test func decodesEveryTypeInOneFeed() throws {
        let parser = RESPParser()
        try Self.allBytes.withUnsafeBytes { try parser.feed($0) }
        #expect(try drain(parser) == Self.allValues)
    }

    @Test func decodesTheStreamSplitAtEveryPosition() throws {
        let bytes = Self.allBytes
        for split in 0...bytes.count {
            let parser = RESPParser()
            var values: [RESPValue] = []
            try bytes[..<split].withUnsafeBytes { try parser.feed($0) }
            values += try drain(parser)
            try bytes[split...].withUnsafeBytes { try parser.feed($0) }
            values += try drain(parser)
            #expect(values == Self.allValues, "split at \(split)")
        }
    }

    @Test func decodesTheStreamFedOneByteAtATime() throws {
        let parser = RESPParser()
        var values: [RESPValue] = []
        for byte in Self.allBytes {
            try [byte].withUnsafeBytes { try parser.feed($0) }
            values += try drain(parser)
        }
        #expect(values == Self.allValues)
    }

    @Test func decodesBigBulkStrings() throws {
        let payload = (0..<(3 << 20)).map { UInt8(truncatingIfNeeded: $0 &* 31) }
        var bytes = Array("$\(payload.count)\r\n".utf8) + payload + Array("\r\n".utf8)
        bytes += Array("+after\r\n".utf8)
        for chunkSize in [1 << 20, 65_536, 1_000] {
            let parser = RESPParser()
            var values: [RESPValue] = []
            var offset = 0
            while offset < bytes.count {
                let end = min(offset + chunkSize, bytes.count)
                try bytes[offset..<end].withUnsafeBytes { try parser.feed($0) }
                values += try drain(parser)
                offset = end
            }
            #expect(values.count == 2)
            #expect(values.first?.bytes.map { Array($0.readableBytesView) } == payload)
            #expect(values.last == .simpleString("after"))
        }
    }

    @Test func rejectsInvalidBytesAndStaysFailed() throws {
        let parser = RESPParser()
        try Array("!oops\r\n".utf8).withUnsafeBytes { try parser.feed($0) }
        #expect(throws: RedisError.self) { try parser.next() }
        do {
            _ = try parser.next()
            Issue.record("a failed parser must keep failing")
        } catch {
            #expect(error.code == .protocolError)
        }
    }

    @Test func encodesCommandsAsArraysOfBulkStrings() throws {
        let arguments: [RESPArgument] = ["SET", "key", .bytes(ByteBuffer(bytes: [0, 13, 10, 255])), 42, -7, ""]
        var buffer = ByteBuffer()
        RESPEncoding.writeCommand(arguments, into: &buffer)
        let expected = Array("*6\r\n$3\r\nSET\r\n$3\r\nkey\r\n$4\r\n".utf8) + [0, 13, 10, 255]
            + Array("\r\n$2\r\n42\r\n$2\r\n-7\r\n$0\r\n\r\n".utf8)
        #expect(Array(buffer.readableBytesView) == expected)
        #expect(RESPEncoding.encodedLength(arguments) == expected.count)

        var viaEncoder = ByteBuffer()
        try RESPEncoder().encode(data: arguments, out: &viaEncoder)
        #expect(viaEncoder == buffer)
    }

    @Test func encodedCommandsParseBack() throws {
        let arguments: [RESPArgument] = ["PUBLISH", "snorky:ünïcödé", .bytes(ByteBuffer(repeating: 0xAB, count: 10_000))]
        var buffer = ByteBuffer()
        RESPEncoding.writeCommand(arguments, into: &buffer)
        let parser = RESPParser()
        try parser.feed(buffer)
        #expect(
            try parser.next()
                == .array([
                    .bulkString("PUBLISH"), .bulkString("snorky:ünïcödé"),
                    .bulkString(ByteBuffer(repeating: 0xAB, count: 10_000)),
                ])
        )
    }

    @Test func valueAccessors() {
        #expect(RESPValue.bulkString("x").string == "x")
        #expect(RESPValue.simpleString("OK").string == "OK")
        #expect(RESPValue.integer(3).integer == 3)
        #expect(RESPValue.error("ERR x").errorMessage == "ERR x")
        #expect(RESPValue.null.isNull)
        #expect(RESPValue.array([.null]).array == [.null])
    }
}

@Suite("Redis URLs")
struct RedisURLTests {
    @Test func tcpURLs() throws {
        #expect(try RedisURL("redis://localhost").address == .tcp(host: "localhost", port: 6379))
        let full = try RedisURL("redis://user:p%40ss@10.0.0.1:6380/3")
        #expect(full.address == .tcp(host: "10.0.0.1", port: 6380))
        #expect(full.database == 3)
        #expect(full.username == "user")
        #expect(full.password == "p@ss")
        #expect(full.description == "redis://user:***@10.0.0.1:6380/3")
        let passwordOnly = try RedisURL("redis://:secret@host:1")
        #expect(passwordOnly.username == nil)
        #expect(passwordOnly.password == "secret")
        #expect(try RedisURL("redis://[::1]:7000").address == .tcp(host: "::1", port: 7000))
        #expect(try RedisURL("redis://h/").database == 0)
    }

    @Test func unixURLs() throws {
        #expect(try RedisURL("unix:///tmp/redis.sock").address == .unixSocket(path: "/tmp/redis.sock"))
        let withDatabase = try RedisURL("unix:///tmp/r.sock?db=2&password=x")
        #expect(withDatabase.database == 2)
        #expect(withDatabase.password == "x")
        #expect(try RedisURL("/var/run/redis.sock").address == .unixSocket(path: "/var/run/redis.sock"))
    }

    @Test(arguments: [
        "http://host", "rediss://host", "redis://", "redis://host:0", "redis://host:99999", "redis://host:x",
        "redis://host/-1", "unix://relative", "unix:///x?bogus=1", "redis://[::1", "redis://:%zz@host",
    ])
    func invalidURLs(_ text: String) {
        #expect(throws: RedisError.self) { try RedisURL(text) }
    }

    /// The error quotes the URL, and errors reach logs: the password is masked wherever the
    /// parse fails, even when the password itself is what is malformed.
    @Test(arguments: [
        "redis://:hunter2@host:99999", "redis://user:hunter2@host:x", "redis://hunter2@", "redis://:hunter2@host/-1",
        "redis://:hun%zzter2@host", "rediss://:hunter2@host", "redis://:hunter2@[::1", "redis://:hunter2@host?bogus=1",
        "unix:///s.sock?password=hunter2&bogus=1", "unix://relative?password=hunter2", "redis://:a@b@hunter2@host:x",
    ])
    func invalidURLErrorsNeverQuoteThePassword(_ text: String) throws {
        let error = try #require(throws: RedisError.self) { try RedisURL(text) }
        #expect(!error.description.contains("hunter2"), "\(error)")
        #expect(!error.description.contains("zz"), "\(error)")
        #expect(error.description.contains("***"), "\(error)")
    }

    @Test func redactedKeepsEverythingButTheCredentials() {
        #expect(RedisURL.redacted("redis://user:pw@host:6380/2") == "redis://***@host:6380/2")
        #expect(RedisURL.redacted("redis://host:6380") == "redis://host:6380")
        #expect(RedisURL.redacted("unix:///r.sock?db=1&password=pw&x=y") == "unix:///r.sock?db=1&password=***&x=y")
        #expect(RedisURL.redacted("redis://pw@host?password=pw2") == "redis://***@host?password=***")
    }
}

@Suite("Bus envelope")
struct BusEnvelopeTests {
    @Test func roundTripsAndSlicesThePayload() {
        let envelope = BusEnvelope(publisherID: 0x0102_0304_0506_0708, sequence: 9, payload: ByteBuffer(string: "{\"x\":1}"))
        let bytes = envelope.encoded()
        #expect(bytes.readableBytes == BusEnvelope.headerLength + 7)
        #expect(Array(bytes.readableBytesView.prefix(BusEnvelope.headerLength)) == [1, 1, 2, 3, 4, 5, 6, 7, 8, 0, 0, 0, 0, 0, 0, 0, 9])
        #expect(BusEnvelope.decode(bytes) == .envelope(envelope))
    }

    @Test func emptyPayload() {
        let envelope = BusEnvelope(publisherID: 1, sequence: 1, payload: ByteBuffer())
        #expect(BusEnvelope.decode(envelope.encoded()) == .envelope(envelope))
    }

    @Test func unknownVersionsAndShortInputs() {
        #expect(BusEnvelope.decode(ByteBuffer(bytes: [2, 0, 0])) == .unsupportedVersion(2))
        #expect(BusEnvelope.decode(ByteBuffer(bytes: [0])) == .unsupportedVersion(0))
        #expect(BusEnvelope.decode(ByteBuffer(bytes: [1, 0, 0])) == .malformed)
        #expect(BusEnvelope.decode(ByteBuffer()) == .malformed)
    }
}

#if canImport(NIOEmbedded)
import NIOEmbedded

@Suite("RESP decoder in a channel pipeline")
struct RESPDecoderChannelTests {
    @Test func decodesTheStreamSplitAtEveryPosition() throws {
        let bytes = RESPTests.allBytes
        for split in 0...bytes.count {
            let channel = EmbeddedChannel(handler: ByteToMessageHandler(RESPDecoder()))
            try channel.writeInbound(ByteBuffer(bytes: bytes[..<split]))
            try channel.writeInbound(ByteBuffer(bytes: bytes[split...]))
            var values: [RESPValue] = []
            while let value = try channel.readInbound(as: RESPValue.self) { values.append(value) }
            #expect(values == RESPTests.allValues, "split at \(split)")
            #expect(try channel.finish().isClean)
        }
    }

    @Test func protocolErrorsReachThePipeline() throws {
        let channel = EmbeddedChannel(handler: ByteToMessageHandler(RESPDecoder()))
        #expect(throws: RedisError.self) { try channel.writeInbound(ByteBuffer(string: "?bad\r\n")) }
        _ = try? channel.finish()
    }

    @Test func encoderWritesCommands() throws {
        let channel = EmbeddedChannel(handler: MessageToByteHandler(RESPEncoder()))
        try channel.writeOutbound(["GET", "k"] as [RESPArgument])
        #expect(try channel.readOutbound(as: ByteBuffer.self) == ByteBuffer(string: "*2\r\n$3\r\nGET\r\n$1\r\nk\r\n"))
        #expect(try channel.finish().isClean)
    }
}
#endif
