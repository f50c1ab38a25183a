import NIOCore
import NIOWebSocket

/// The last handler of a test client's pipeline after the upgrade.
///
/// It turns server frames into `WebSocketTestClient.Event`s and does what a browser does
/// without being asked, so tests see only what matters: it reassembles fragmented messages,
/// answers pings and echoes the server's close frame. It also checks what a client must
/// check (server frames unmasked, no reserved bits, valid UTF-8 text, sane fragmentation),
/// so a server bug fails the test instead of passing silently.
final class WebSocketTestClientHandler: ChannelDuplexHandler {
    typealias InboundIn = WebSocketFrame
    typealias OutboundIn = WebSocketFrame
    typealias OutboundOut = WebSocketFrame

    private let events: TimedQueue<WebSocketTestClient.Event>
    private let answersPings: Bool
    /// A fragmented message being reassembled: its opcode (text or binary) and payload so far.
    private var partial: (opcode: WebSocketOpcode, payload: ByteBuffer)?
    private var sentClose = false
    private var receivedClose = false

    init(events: TimedQueue<WebSocketTestClient.Event>, answersPings: Bool) {
        self.events = events
        self.answersPings = answersPings
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        let frame = unwrapInboundIn(data)
        guard frame.maskKey == nil else {
            return violation("the server sent a masked frame", context: context)
        }
        guard !frame.rsv1, !frame.rsv2, !frame.rsv3 else {
            return violation("reserved bits set, but no extension was negotiated", context: context)
        }
        guard !receivedClose else {
            return violation("a frame arrived after the close frame", context: context)
        }
        switch frame.opcode {
        case .text, .binary:
            guard partial == nil else {
                return violation("a new message started before the fragmented one ended", context: context)
            }
            if frame.fin {
                deliver(frame.opcode, frame.data, context: context)
            } else {
                partial = (frame.opcode, frame.data)
            }
        case .continuation:
            guard var message = partial else {
                return violation("a continuation frame arrived with no message to continue", context: context)
            }
            var data = frame.data
            message.payload.writeBuffer(&data)
            if frame.fin {
                partial = nil
                deliver(message.opcode, message.payload, context: context)
            } else {
                partial = message
            }
        case .ping:
            if answersPings, !sentClose {
                let pong = WebSocketFrame(fin: true, opcode: .pong, maskKey: .random(), data: frame.data)
                context.writeAndFlush(wrapOutboundOut(pong), promise: nil)
            }
        case .pong:
            events.append(.pong)
        case .connectionClose:
            receiveClose(frame, context: context)
        default:
            violation("unknown opcode \(frame.opcode)", context: context)
        }
    }

    /// Watches outgoing frames so that a close sent by the test (through any `send` method)
    /// is not answered with a second close when the server echoes it.
    func write(context: ChannelHandlerContext, data: NIOAny, promise: EventLoopPromise<Void>?) {
        if unwrapOutboundIn(data).opcode == .connectionClose { sentClose = true }
        context.write(data, promise: promise)
    }

    func channelInactive(context: ChannelHandlerContext) {
        events.finish()
        context.fireChannelInactive()
    }

    func handlerRemoved(context: ChannelHandlerContext) {
        // Waiters must never outlive the pipeline, however the channel went away.
        events.finish()
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        if error is NIOWebSocketError {
            violation("undecodable frame: \(error)", context: context)
        } else {
            // A reset or other I/O error: the connection is gone, which `next` reports as closed.
            events.finish()
            context.close(promise: nil)
        }
    }

    private func deliver(_ opcode: WebSocketOpcode, _ payload: ByteBuffer, context: ChannelHandlerContext) {
        if opcode == .text {
            guard let text = String(validating: payload.readableBytesView, as: UTF8.self) else {
                return violation("a text message is not valid UTF-8", context: context)
            }
            events.append(.text(text))
        } else {
            events.append(.binary(Array(payload.readableBytesView)))
        }
    }

    private func receiveClose(_ frame: WebSocketFrame, context: ChannelHandlerContext) {
        var payload = frame.data
        guard payload.readableBytes != 1 else {
            return violation("a close frame with a one-byte payload", context: context)
        }
        let code = payload.readInteger(as: UInt16.self)
        guard let reason = String(validating: payload.readableBytesView, as: UTF8.self) else {
            return violation("a close reason is not valid UTF-8", context: context)
        }
        receivedClose = true
        events.append(.close(code: code, reason: reason))
        if !sentClose {
            // Complete the closing handshake by echoing the code, as RFC 6455 §5.5.1 asks. The
            // TCP connection is left for the server to close, so a test can check that it does.
            var echo = context.channel.allocator.buffer(capacity: 2)
            if let code { echo.writeInteger(code) }
            sentClose = true
            let frame = WebSocketFrame(fin: true, opcode: .connectionClose, maskKey: .random(), data: echo)
            context.writeAndFlush(wrapOutboundOut(frame), promise: nil)
        }
    }

    private func violation(_ detail: String, context: ChannelHandlerContext) {
        events.finish(throwing: WebSocketTestClientError.protocolViolation(detail))
        context.close(promise: nil)
    }
}
