#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif
import NIOCore

/// What a bench WebSocket connection does with its frames. Implementations live on the
/// connection's event loop and are called synchronously from the handler, so a delivery
/// costs no allocation, hop or task.
protocol WebSocketSession: AnyObject {
    /// The server accepted the upgrade; the session may write now.
    func webSocketDidOpen(_ connection: WebSocketClientHandler)
    /// A complete text (or binary) message. The bytes are valid only during the call.
    func webSocketDidReceive(_ bytes: UnsafeRawBufferPointer, on connection: WebSocketClientHandler)
    /// The connection ended; `error` is set when it ended before or because of a failure.
    func webSocketDidClose(error: (any Error)?)
}

enum WebSocketClientError: Error, CustomStringConvertible {
    case upgradeRejected(String)
    case handshakeTooLarge
    case handshakeTimedOut
    case protocolViolation(String)
    case closedBeforeOpen

    var description: String {
        switch self {
        case .upgradeRejected(let line): "upgrade rejected: \(line)"
        case .handshakeTooLarge: "upgrade response headers too large"
        case .handshakeTimedOut: "no upgrade response in time"
        case .protocolViolation(let what): "WebSocket protocol violation: \(what)"
        case .closedBeforeOpen: "connection closed before the upgrade completed"
        }
    }
}

/// A minimal WebSocket client: it writes a fixed upgrade request, checks for `101`, then
/// parses frames straight out of the read buffers.
///
/// Written by hand rather than with NIOHTTP1's upgrader because the bench controls both the
/// request and what it needs from the response (only the status), and because parsing frames
/// in place, with no `WebSocketFrame` per message and no extra handler, keeps the client
/// cheaper than the servers it measures.
final class WebSocketClientHandler: ChannelInboundHandler {
    typealias InboundIn = ByteBuffer
    typealias OutboundOut = ByteBuffer

    private enum State {
        case connecting
        case upgrading
        case open
        case closed
    }

    private static let maxHandshakeBytes = 16 * 1024
    private static let maxMessageBytes = 16 * 1024 * 1024
    private static let headerEnd: [UInt8] = Array("\r\n\r\n".utf8)

    private let session: any WebSocketSession
    private let request: ByteBuffer
    private let handshakeTimeout: TimeAmount
    private var state = State.connecting
    /// Bytes received but not yet parsed (a partial frame or partial handshake).
    private var pending: ByteBuffer?
    /// A message arriving in several frames, until its final frame.
    private var fragments: ByteBuffer?
    private var handshakeTimer: Scheduled<Void>?
    private var closeSent = false
    private var needsFlush = false
    private var failure: (any Error)?
    private var maskState: UInt64
    private(set) var context: ChannelHandlerContext?

    init(host: String, port: Int, path: String, session: any WebSocketSession, handshakeTimeout: TimeAmount) {
        self.session = session
        self.handshakeTimeout = handshakeTimeout
        var generator = SystemRandomNumberGenerator()
        self.maskState = generator.next() | 1
        var keyBytes = [UInt8](repeating: 0, count: 16)
        for index in keyBytes.indices { keyBytes[index] = generator.next() }
        let request = "GET \(path) HTTP/1.1\r\n"
            + "Host: \(host):\(port)\r\n"
            + "Upgrade: websocket\r\n"
            + "Connection: Upgrade\r\n"
            + "Sec-WebSocket-Key: \(base64(keyBytes))\r\n"
            + "Sec-WebSocket-Version: 13\r\n"
            + "\r\n"
        self.request = ByteBuffer(string: request)
    }

    var isOpen: Bool {
        if case .open = state { return true }
        return false
    }

    func handlerAdded(context: ChannelHandlerContext) {
        self.context = context
        if context.channel.isActive { startHandshake(context: context) }
    }

    func handlerRemoved(context: ChannelHandlerContext) {
        self.context = nil
    }

    func channelActive(context: ChannelHandlerContext) {
        startHandshake(context: context)
        context.fireChannelActive()
    }

    private func startHandshake(context: ChannelHandlerContext) {
        guard case .connecting = state else { return }
        state = .upgrading
        context.writeAndFlush(wrapOutboundOut(request), promise: nil)
        let loopBoundContext = NIOLoopBound(context, eventLoop: context.eventLoop)
        let loopBoundSelf = NIOLoopBound(self, eventLoop: context.eventLoop)
        handshakeTimer = context.eventLoop.scheduleTask(in: handshakeTimeout) {
            let handler = loopBoundSelf.value
            guard case .upgrading = handler.state else { return }
            handler.fail(WebSocketClientError.handshakeTimedOut, context: loopBoundContext.value)
        }
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        var incoming = unwrapInboundIn(data)
        if var buffered = pending {
            pending = nil
            buffered.writeBuffer(&incoming)
            process(&buffered, context: context)
            keepRemainder(buffered, context: context)
        } else {
            process(&incoming, context: context)
            keepRemainder(incoming, context: context)
        }
    }

    /// Keeps unparsed bytes for the next read. Once open, they are copied into a buffer of
    /// our own so NIO can reuse its read buffer.
    private func keepRemainder(_ buffer: ByteBuffer, context: ChannelHandlerContext) {
        guard buffer.readableBytes > 0 else { return }
        switch state {
        case .upgrading:
            pending = buffer
        case .open:
            var copy = context.channel.allocator.buffer(capacity: max(buffer.readableBytes, 256))
            var remainder = buffer
            copy.writeBuffer(&remainder)
            pending = copy
        case .connecting, .closed:
            break
        }
    }

    func channelReadComplete(context: ChannelHandlerContext) {
        // Pongs and close replies are written without flushing while a read batch is parsed;
        // most reads write nothing, and an empty flush still walks the pipeline.
        if needsFlush {
            needsFlush = false
            context.flush()
        }
        context.fireChannelReadComplete()
    }

    func channelInactive(context: ChannelHandlerContext) {
        handshakeTimer?.cancel()
        let wasOpen = isOpen
        state = .closed
        let error = failure ?? (wasOpen ? nil : WebSocketClientError.closedBeforeOpen)
        session.webSocketDidClose(error: error)
        context.fireChannelInactive()
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        fail(error, context: context)
    }

    private func fail(_ error: any Error, context: ChannelHandlerContext) {
        if failure == nil { failure = error }
        context.close(promise: nil)
    }

    // MARK: Parsing

    private func process(_ buffer: inout ByteBuffer, context: ChannelHandlerContext) {
        if case .upgrading = state {
            guard parseHandshake(&buffer, context: context) else { return }
        }
        while case .open = state, let consumed = parseFrame(buffer, context: context) {
            buffer.moveReaderIndex(forwardBy: consumed)
        }
    }

    /// Returns true once the upgrade completed and `buffer` is positioned at the first frame.
    private func parseHandshake(_ buffer: inout ByteBuffer, context: ChannelHandlerContext) -> Bool {
        let headerLength: Int? = buffer.withUnsafeReadableBytes { bytes in
            guard let base = bytes.baseAddress, bytes.count >= 4 else { return nil }
            for index in 0...(bytes.count - 4)
            where bytes[index] == 13 && memcmp(base + index, Self.headerEnd, 4) == 0 {
                return index + 4
            }
            return nil
        }
        guard let headerLength else {
            if buffer.readableBytes > Self.maxHandshakeBytes {
                fail(WebSocketClientError.handshakeTooLarge, context: context)
            }
            return false
        }
        let head = buffer.readString(length: headerLength) ?? ""
        let statusLine = head.split(separator: "\r\n", maxSplits: 1).first.map(String.init) ?? ""
        let parts = statusLine.split(separator: " ", maxSplits: 2)
        guard parts.count >= 2, parts[1] == "101" else {
            fail(WebSocketClientError.upgradeRejected(statusLine), context: context)
            return false
        }
        handshakeTimer?.cancel()
        handshakeTimer = nil
        state = .open
        session.webSocketDidOpen(self)
        return true
    }

    /// Parses one frame at the reader index; returns its total length, or nil if incomplete.
    private func parseFrame(_ buffer: ByteBuffer, context: ChannelHandlerContext) -> Int? {
        guard let first = buffer.getInteger(at: buffer.readerIndex, as: UInt8.self),
              let second = buffer.getInteger(at: buffer.readerIndex + 1, as: UInt8.self)
        else { return nil }
        let fin = first & 0x80 != 0
        let opcode = first & 0x0F
        guard second & 0x80 == 0 else {
            fail(WebSocketClientError.protocolViolation("masked frame from server"), context: context)
            return nil
        }
        var headerLength = 2
        var length = Int(second & 0x7F)
        if length == 126 {
            guard let extended = buffer.getInteger(at: buffer.readerIndex + 2, as: UInt16.self) else { return nil }
            length = Int(extended)
            headerLength = 4
        } else if length == 127 {
            guard let extended = buffer.getInteger(at: buffer.readerIndex + 2, as: UInt64.self) else { return nil }
            guard extended <= UInt64(Self.maxMessageBytes) else {
                fail(WebSocketClientError.protocolViolation("frame of \(extended) bytes"), context: context)
                return nil
            }
            length = Int(extended)
            headerLength = 10
        }
        guard buffer.readableBytes >= headerLength + length else { return nil }
        let payloadStart = buffer.readerIndex + headerLength
        switch opcode {
        case 0x1, 0x2:
            if fin {
                guard fragments == nil else {
                    fail(WebSocketClientError.protocolViolation("new message inside a fragmented one"), context: context)
                    return nil
                }
                buffer.withUnsafeReadableBytes { bytes in
                    session.webSocketDidReceive(
                        UnsafeRawBufferPointer(rebasing: bytes[headerLength..<(headerLength + length)]), on: self)
                }
            } else {
                var start = context.channel.allocator.buffer(capacity: length * 2)
                start.writeBytes(buffer.readableBytesView[payloadStart..<(payloadStart + length)])
                fragments = start
            }
        case 0x0:
            guard var partial = fragments else {
                fail(WebSocketClientError.protocolViolation("continuation without a message"), context: context)
                return nil
            }
            fragments = nil
            partial.writeBytes(buffer.readableBytesView[payloadStart..<(payloadStart + length)])
            guard partial.readableBytes <= Self.maxMessageBytes else {
                fail(WebSocketClientError.protocolViolation("message too large"), context: context)
                return nil
            }
            if fin {
                partial.withUnsafeReadableBytes { session.webSocketDidReceive($0, on: self) }
            } else {
                fragments = partial
            }
        case 0x8:
            // Echo the close (with its code, if any) and let the server close the TCP connection;
            // a server that does not is cut off by our own close right after.
            if !closeSent {
                closeSent = true
                let payload = buffer.getSlice(at: payloadStart, length: min(length, 2)) ?? ByteBuffer()
                writeControl(opcode: 0x8, payload: payload, context: context)
                context.flush()
            }
            context.close(promise: nil)
            state = .closed
        case 0x9:
            let payload = buffer.getSlice(at: payloadStart, length: length) ?? ByteBuffer()
            writeControl(opcode: 0xA, payload: payload, context: context)
        case 0xA:
            break
        default:
            fail(WebSocketClientError.protocolViolation("opcode \(opcode)"), context: context)
            return nil
        }
        return headerLength + length
    }

    // MARK: Writing

    /// A fresh masking key. Clients must mask; the key only needs to vary, not be secret,
    /// so a xorshift step is enough and much cheaper than the system generator per frame.
    private func nextMask() -> UInt32 {
        maskState ^= maskState << 13
        maskState ^= maskState >> 7
        maskState ^= maskState << 17
        return UInt32(truncatingIfNeeded: maskState)
    }

    /// Appends a masked frame carrying `payload` to `destination` (several frames can share
    /// one buffer and one write).
    func appendFrame(opcode: UInt8, payload: UnsafeRawBufferPointer, to destination: inout ByteBuffer) {
        destination.writeInteger(0x80 | opcode)
        let length = payload.count
        if length < 126 {
            destination.writeInteger(0x80 | UInt8(length))
        } else if length <= Int(UInt16.max) {
            destination.writeInteger(UInt8(0x80 | 126))
            destination.writeInteger(UInt16(length))
        } else {
            destination.writeInteger(UInt8(0x80 | 127))
            destination.writeInteger(UInt64(length))
        }
        let mask = nextMask()
        destination.writeInteger(mask)
        let maskBytes = (UInt8(truncatingIfNeeded: mask >> 24), UInt8(truncatingIfNeeded: mask >> 16),
                         UInt8(truncatingIfNeeded: mask >> 8), UInt8(truncatingIfNeeded: mask))
        destination.writeWithUnsafeMutableBytes(minimumWritableBytes: length) { out in
            for index in 0..<length {
                let key: UInt8
                switch index & 3 {
                case 0: key = maskBytes.0
                case 1: key = maskBytes.1
                case 2: key = maskBytes.2
                default: key = maskBytes.3
                }
                out[index] = payload[index] ^ key
            }
            return length
        }
    }

    private func writeControl(opcode: UInt8, payload: ByteBuffer, context: ChannelHandlerContext) {
        var frame = context.channel.allocator.buffer(capacity: 6 + payload.readableBytes)
        payload.withUnsafeReadableBytes { appendFrame(opcode: opcode, payload: $0, to: &frame) }
        context.write(wrapOutboundOut(frame), promise: nil)
        needsFlush = true
    }

    /// Writes already-framed bytes (from `appendFrame`); the caller flushes.
    func write(_ frames: ByteBuffer) {
        guard let context, case .open = state else { return }
        context.write(wrapOutboundOut(frames), promise: nil)
    }

    func flush() {
        context?.flush()
    }

    var allocator: ByteBufferAllocator {
        context?.channel.allocator ?? ByteBufferAllocator()
    }

    /// Starts a clean close: a close frame with 1000, then the server closes TCP.
    func close() {
        guard let context else { return }
        guard case .open = state, !closeSent else {
            context.close(promise: nil)
            return
        }
        closeSent = true
        var payload = context.channel.allocator.buffer(capacity: 2)
        payload.writeInteger(UInt16(1000))
        writeControl(opcode: 0x8, payload: payload, context: context)
        context.flush()
    }
}

/// Standard base64 of a few bytes (the handshake key); no Foundation needed for it.
func base64(_ bytes: [UInt8]) -> String {
    let alphabet = Array("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/".utf8)
    var output: [UInt8] = []
    var index = 0
    while index < bytes.count {
        let chunk = bytes[index..<min(index + 3, bytes.count)]
        let value = chunk.enumerated().reduce(UInt32(0)) { $0 | UInt32($1.element) << (16 - 8 * UInt32($1.offset)) }
        for position in 0..<4 {
            if position <= chunk.count {
                output.append(alphabet[Int((value >> (18 - 6 * UInt32(position))) & 0x3F)])
            } else {
                output.append(UInt8(ascii: "="))
            }
        }
        index += 3
    }
    return String(decoding: output, as: UTF8.self)
}
