import Logging
import NIOCore
import NIOWebSocket
import Snorky
import SnorkyProtocol

/// The end of a WebSocket connection's pipeline: turns frames into calls on its `Client`,
/// enforces the frame-level rules of PROTOCOL.md section 3 (binary 1003, invalid UTF-8 1007,
/// too large 1009), answers pings, and closes slow readers (4001).
///
/// Sits after NIO's frame decoder and fragment aggregator. Outbound it writes pre-framed
/// `ByteBuffer`s (see `OutboundFrame`) through the frame encoder's context, which sends
/// them toward the socket without passing through the encoder: every message is framed
/// once, however many connections it goes to.
final class WebSocketConnectionHandler: ChannelInboundHandler, RemovableChannelHandler {
    typealias InboundIn = WebSocketFrame
    typealias OutboundOut = ByteBuffer

    private let node: Node
    private let connections: ConnectionRegistry
    private let identity: String?
    private var context: ChannelHandlerContext?
    /// Where raw frames are written: the frame encoder's context (writes from it go only
    /// through the handlers between it and the socket).
    private var rawContext: ChannelHandlerContext?
    private var client: Client?
    private var transport: ChannelTransport?
    private var isClosing = false

    init(node: Node, connections: ConnectionRegistry, identity: String?) {
        self.node = node
        self.connections = connections
        self.identity = identity
    }

    func handlerAdded(context: ChannelHandlerContext) {
        self.context = context
        self.rawContext = (try? context.pipeline.syncOperations.context(handlerType: WebSocketFrameEncoder.self)) ?? context
        let transport = ChannelTransport(handler: NIOLoopBound(self, eventLoop: context.eventLoop), eventLoop: context.eventLoop)
        let client = node.makeClient(transport: transport, identity: identity)
        self.transport = transport
        self.client = client
        connections.add(transport)
        client.didConnect()
    }

    func channelInactive(context: ChannelHandlerContext) {
        isClosing = true
        if let transport { connections.remove(transport) }
        client?.didDisconnect()
        client = nil
        context.fireChannelInactive()
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        let frame = unwrapInboundIn(data)
        guard !isClosing else { return }
        switch frame.opcode {
        case .text:
            let payload = frame.unmaskedData
            guard String(validating: payload.readableBytesView, as: UTF8.self) != nil else {
                close(code: CloseCode.invalidPayload, reason: "Invalid UTF-8")
                return
            }
            if client?.didReceive(text: payload) == false {
                close(code: CloseCode.policyViolation, reason: "Too many pending requests")
            }
        case .binary:
            close(code: CloseCode.unsupportedData, reason: "Binary frames are not supported")
        case .ping:
            rawContext?.writeAndFlush(
                wrapOutboundOut(WebSocketWire.pongFrame(payload: frame.unmaskedData, allocator: context.channel.allocator)),
                promise: nil
            )
        case .connectionClose:
            // Echo the peer's close code, then hang up.
            var data = frame.unmaskedData
            let code = data.readInteger(as: UInt16.self) ?? CloseCode.normal
            close(code: code, reason: "")
        default:
            break  // pongs; continuations are reassembled by the aggregator
        }
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        switch error {
        case NIOWebSocketError.invalidFrameLength,
            NIOWebSocketFrameAggregator.Error.accumulatedFrameSizeIsTooLarge,
            NIOWebSocketFrameAggregator.Error.tooManyFragments:
            close(code: CloseCode.messageTooBig, reason: "Message too big")
        case is NIOWebSocketError, is NIOWebSocketFrameAggregator.Error:
            close(code: CloseCode.protocolError, reason: "Protocol error")
        default:
            // I/O errors: the connection is gone or going; make sure it is closed.
            node.logger.debug("connection error", metadata: ["error": "\(error)"])
            context.close(promise: nil)
        }
    }

    func channelWritabilityChanged(context: ChannelHandlerContext) {
        // The outbound buffer passed its high-water mark: this client is not reading.
        if !context.channel.isWritable {
            close(code: CloseCode.slowConsumer, reason: "Slow consumer")
        }
        context.fireChannelWritabilityChanged()
    }

    // MARK: Called through ChannelTransport, on the event loop

    func write(_ frame: OutboundFrame) {
        guard !isClosing, let rawContext else { return }
        rawContext.write(wrapOutboundOut(frame.wire), promise: nil)
    }

    func flush() {
        rawContext?.flush()
    }

    /// Sends a close frame once and closes the connection when it is written.
    func close(code: UInt16, reason: String) {
        guard !isClosing, let rawContext else { return }
        isClosing = true
        let frame = WebSocketWire.closeFrame(code: code, reason: reason, allocator: rawContext.channel.allocator)
        let channel = rawContext.channel
        rawContext.writeAndFlush(wrapOutboundOut(frame)).whenComplete { _ in
            channel.close(promise: nil)
        }
    }
}

/// The `Transport` services see: a Sendable handle that forwards to the handler on its loop.
final class ChannelTransport: Transport {
    let eventLoop: any EventLoop
    private let handler: NIOLoopBound<WebSocketConnectionHandler>

    init(handler: NIOLoopBound<WebSocketConnectionHandler>, eventLoop: any EventLoop) {
        self.handler = handler
        self.eventLoop = eventLoop
    }

    func write(_ frame: OutboundFrame) {
        handler.value.write(frame)
    }

    func flush() {
        handler.value.flush()
    }

    func close(code: UInt16, reason: String) {
        if eventLoop.inEventLoop {
            handler.value.close(code: code, reason: reason)
        } else {
            eventLoop.execute { self.handler.value.close(code: code, reason: reason) }
        }
    }
}
