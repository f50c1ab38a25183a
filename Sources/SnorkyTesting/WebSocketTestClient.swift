import NIOCore
import NIOPosix
import NIOWebSocket

/// A WebSocket client for tests: it connects to a real server, sends what the test says
/// (including frames no well-behaved client would send) and buffers what the server sends,
/// in order, for the test to await.
///
/// Pings are answered and the closing handshake completed automatically, as a browser
/// would; fragmented server messages arrive reassembled. Server protocol violations fail
/// the next read. Every wait has a timeout so a broken server fails a test instead of
/// hanging it. Dropping the client closes its connection.
public final class WebSocketTestClient: Sendable {
    /// Something the server sent.
    public enum Event: Sendable, Equatable, CustomStringConvertible {
        case text(String)
        case binary([UInt8])
        /// A close frame. `code` is nil when the frame had no payload (RFC 6455's 1005).
        case close(code: UInt16?, reason: String)
        case pong

        public var description: String {
            switch self {
            case .text(let text):
                text.count > 300 ? "text frame \"\(text.prefix(300))…\" (\(text.utf8.count) bytes)" : "text frame \"\(text)\""
            case .binary(let bytes): "binary frame of \(bytes.count) bytes"
            case .close(let code, let reason):
                "close frame (code \(code.map(String.init) ?? "none")\(reason.isEmpty ? "" : ", reason \"\(reason)\""))"
            case .pong: "pong"
            }
        }
    }

    /// Frame opcodes for `send(frame:)`, including reserved ones to test that servers reject them.
    public enum Opcode: Sendable, Equatable {
        case continuation, text, binary, close, ping, pong
        /// Any 4-bit opcode, e.g. 0x3 (reserved data) or 0xB (reserved control).
        case raw(UInt8)

        var webSocketOpcode: WebSocketOpcode {
            switch self {
            case .continuation: .continuation
            case .text: .text
            case .binary: .binary
            case .close: .connectionClose
            case .ping: .ping
            case .pong: .pong
            case .raw(let value):
                // Valid for 0...15; anything larger is a bug in the test itself.
                WebSocketOpcode(encodedWebSocketOpcode: value) ?? { preconditionFailure("opcode \(value) is not 4 bits") }()
            }
        }
    }

    private let channel: any Channel
    private let events: TimedQueue<Event>

    private init(channel: any Channel, events: TimedQueue<Event>) {
        self.channel = channel
        self.events = events
    }

    deinit {
        channel.close(promise: nil)
    }

    /// Connects to `ws://host:port/path?query` and completes the upgrade.
    ///
    /// - Parameters:
    ///   - query: the raw query string without `?`, e.g. `"token=abc"`.
    ///   - headers: extra request headers (a `Host` header is added unless given here).
    ///   - timeout: limit for connecting and for the upgrade response each.
    ///   - maxFrameSize: the largest frame accepted from the server.
    ///   - answersPings: set to false to test a server's keepalive against a silent client.
    ///   - receiveBufferSize: the socket's `SO_RCVBUF`, set before connecting (so the TCP
    ///     window is negotiated with it): a small one keeps this side's kernel from
    ///     absorbing megabytes for a client that stops reading.
    ///   - maximumSegmentSize: the MSS this side announces (`TCP_MAXSEG`, set before
    ///     connecting). The server's kernel sizes its send buffer from the peer's MSS: on
    ///     loopback (64 KB segments) it grows to `tcp_wmem`'s maximum (4 MB) for a client
    ///     that stops reading, with 536 to about 150 KB. With a small receive buffer, this
    ///     makes a non-reading client fill the server's own outbound buffer quickly.
    ///   - rawInbound: receives every byte the server sends after the upgrade, as read, on
    ///     the connection's event loop (the bytes are valid only during the call), instead of
    ///     the frame decoder: the client then reports
    ///     no frames (not even a close) and answers no pings, only the end of the connection.
    ///     For tests that compare a long, exactly known byte stream as it arrives, at the
    ///     speed of a memory comparison, instead of decoding and queueing every frame.
    /// - Throws: `WebSocketTestClientError.connectionFailed`, `.upgradeRejected(status:body:)`
    ///   when the server answers with another HTTP status, `.upgradeFailed` or `.timedOut`.
    public static func connect(
        host: String,
        port: Int,
        path: String = "/ws",
        query: String? = nil,
        headers: [(String, String)] = [],
        timeout: Duration = .seconds(10),
        maxFrameSize: Int = 1 << 24,
        answersPings: Bool = true,
        receiveBufferSize: Int? = nil,
        maximumSegmentSize: Int? = nil,
        rawInbound: (@Sendable (UnsafeRawBufferPointer) -> Void)? = nil,
        on group: any EventLoopGroup = MultiThreadedEventLoopGroup.singleton
    ) async throws -> WebSocketTestClient {
        let request = WebSocketUpgrade.Request(
            host: host,
            port: port,
            uri: query.map { "\(path)?\($0)" } ?? path,
            headers: headers,
            maxFrameSize: maxFrameSize,
            answersPings: answersPings,
            receiveBufferSize: receiveBufferSize,
            maximumSegmentSize: maximumSegmentSize,
            rawInbound: rawInbound,
            timeout: timeout
        )
        let events = TimedQueue<Event>()
        let channel = try await WebSocketUpgrade.connect(request, events: events, group: group)
        return WebSocketTestClient(channel: channel, events: events)
    }

    // MARK: Sending

    public func send(text: String) async throws {
        try await send(frame: .text, payload: Array(text.utf8))
    }

    /// Sends a text frame whose payload is `bytes` as given, e.g. invalid UTF-8.
    public func send(rawText bytes: [UInt8]) async throws {
        try await send(frame: .text, payload: bytes)
    }

    public func send(binary: [UInt8]) async throws {
        try await send(frame: .binary, payload: binary)
    }

    /// Sends one frame exactly as described, for fragmentation and protocol-violation tests.
    /// `masked: false` sends an unmasked frame, which a server must reject.
    public func send(
        frame opcode: Opcode,
        fin: Bool = true,
        rsv1: Bool = false,
        masked: Bool = true,
        payload: [UInt8]
    ) async throws {
        let frame = WebSocketFrame(
            fin: fin,
            rsv1: rsv1,
            opcode: opcode.webSocketOpcode,
            maskKey: masked ? .random() : nil,
            data: channel.allocator.buffer(bytes: payload)
        )
        do {
            try await channel.writeAndFlush(frame)
        } catch {
            throw WebSocketTestClientError.connectionClosed
        }
    }

    /// Sends a ping; the server's pong arrives as `Event.pong`.
    public func ping(payload: [UInt8] = []) async throws {
        try await send(frame: .ping, payload: payload)
    }

    /// Sends a close frame and returns; await the server's answer with `expectClose()`.
    public func close(code: UInt16 = 1000, reason: String = "") async throws {
        try await send(frame: .close, payload: [UInt8(code >> 8), UInt8(code & 0xFF)] + Array(reason.utf8))
    }

    /// Closes the TCP connection without a closing handshake, like a client that vanished.
    public func abort() async {
        try? await channel.close()
    }

    // MARK: Receiving

    /// The next thing the server sent, waiting up to `timeout` for it.
    /// - Throws: `.timedOut`, `.connectionClosed` once the connection is gone and every
    ///   earlier frame was read, or `.protocolViolation`.
    public func next(timeout: Duration = .seconds(15)) async throws -> Event {
        do {
            return try await events.next(deadline: .after(timeout))
        } catch let failure as TimedQueue<Event>.Failure {
            throw Self.error(for: failure, waitingFor: "a frame from the server", timeout: timeout)
        }
    }

    /// The next event, which must be a text frame.
    public func nextText(timeout: Duration = .seconds(15)) async throws -> String {
        let event = try await next(timeout: timeout)
        guard case .text(let text) = event else {
            throw WebSocketTestClientError.unexpectedEvent(expected: "a text frame", got: event)
        }
        return text
    }

    /// Waits for the server's close frame and returns its code (nil if it carried none).
    /// - Parameter ignoringOtherEvents: skip frames that arrive first instead of failing on them.
    @discardableResult
    public func expectClose(timeout: Duration = .seconds(15), ignoringOtherEvents: Bool = false) async throws -> UInt16? {
        let deadline = ContinuousClock.Instant.after(timeout)
        while true {
            let event: Event
            do {
                event = try await events.next(deadline: deadline)
            } catch let failure as TimedQueue<Event>.Failure {
                throw Self.error(for: failure, waitingFor: "a close frame", timeout: timeout)
            }
            if case .close(let code, _) = event { return code }
            if !ignoringOtherEvents {
                throw WebSocketTestClientError.unexpectedEvent(expected: "a close frame", got: event)
            }
        }
    }

    /// Asserts that nothing arrives for `duration`.
    ///
    /// Only for negative checks ("a client that is not subscribed gets nothing"): it always
    /// takes the full duration, so keep it short, and prefer awaiting a positive event
    /// wherever one exists.
    public func expectNothing(for duration: Duration = .milliseconds(200)) async throws {
        let event: Event
        do {
            event = try await events.next(deadline: .after(duration))
        } catch TimedQueue<Event>.Failure.timedOut {
            return
        } catch let failure as TimedQueue<Event>.Failure {
            throw Self.error(for: failure, waitingFor: "silence", timeout: duration)
        }
        throw WebSocketTestClientError.unexpectedEvent(expected: "nothing for \(duration)", got: event)
    }

    /// Waits until the TCP connection is closed (by either side). Frames still buffered stay
    /// readable with `next`.
    public func waitForDisconnect(timeout: Duration = .seconds(15)) async throws {
        do {
            try await events.waitForFinish(deadline: .after(timeout))
        } catch TimedQueue<Event>.Failure.timedOut {
            throw WebSocketTestClientError.timedOut(waitingFor: "the connection to close", after: timeout)
        }
    }

    /// Whether the TCP connection is still open.
    public var isConnected: Bool { channel.isActive }

    /// The socket's `SO_RCVBUF` as the kernel reports it (Linux doubles the value it was given).
    public func receiveBufferSize() async throws -> Int {
        Int(try await channel.getOption(.socketOption(.so_rcvbuf)).get())
    }

    /// The connection's maximum segment size (`TCP_MAXSEG`) as the kernel reports it.
    public func maximumSegmentSize() async throws -> Int {
        Int(try await channel.getOption(WebSocketUpgrade.maximumSegmentSizeOption).get())
    }

    // MARK: Flow control

    /// Stops reading from the socket, so the server's writes back up as with a slow consumer.
    public func pauseReading() async throws {
        try await channel.setOption(ChannelOptions.autoRead, value: false).get()
    }

    /// Resumes reading after `pauseReading()`.
    public func resumeReading() async throws {
        try await channel.setOption(ChannelOptions.autoRead, value: true).get()
    }

    private static func error(
        for failure: TimedQueue<Event>.Failure,
        waitingFor what: String,
        timeout: Duration
    ) -> WebSocketTestClientError {
        switch failure {
        case .timedOut: .timedOut(waitingFor: what, after: timeout)
        case .finished(let error as WebSocketTestClientError): error
        case .finished: .connectionClosed
        }
    }
}
