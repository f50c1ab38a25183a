#if canImport(Glibc)
import Glibc
#endif
import Logging
import NIOCore
import NIOWebSocket
import Snorky
import SnorkyProtocol
import SnorkyWebSocket

/// The end of a WebSocket connection's pipeline: turns frames into calls on its `Client`,
/// enforces the frame-level rules of PROTOCOL.md section 3 (binary 1003, invalid UTF-8 1007,
/// too large 1009), answers pings, and enforces the per-connection limits: slow readers
/// (4001), keepalive (4002), the worker's connection limit (4003) and the request rate (4004).
///
/// Sits after NIO's frame decoder and fragment aggregator. Outbound it sends pre-framed
/// `ByteBuffer`s (see `OutboundFrame`), so every message is framed once however many
/// connections it goes to: straight to the socket while the channel has nothing queued,
/// otherwise through the frame encoder's context, which passes them toward the socket
/// without encoding them again (see `send`).
final class WebSocketConnectionHandler: ChannelInboundHandler, RemovableChannelHandler {
    typealias InboundIn = WebSocketFrame
    typealias OutboundOut = ByteBuffer

    private let node: Node
    private let connections: ConnectionRegistry
    private let identity: String?
    private let policy: Policy
    private var keepaliveTimer: Scheduled<Void>?
    /// Something arrived since the last keepalive tick.
    private var heardFromPeer = true
    private var pingOutstanding = false
    private var context: ChannelHandlerContext?
    /// Where raw frames are written: the frame encoder's context (writes from it go only
    /// through the handlers between it and the socket).
    private var rawContext: ChannelHandlerContext?
    /// The channel's allocator, kept here: reaching it through the context on every
    /// delivery costs a retain and release of the channel.
    private var allocator = ByteBufferAllocator()
    private var client: Client?
    private var transport: ChannelTransport?
    private var isClosing = false
    /// nil when the request rate is not limited.
    private var rateLimiter: RequestRateLimiter?
    /// Frames written since the last flush, sent as one buffer.
    private var unflushed = UnflushedFrames()
    /// The channel's socket access, through which bytes are sent straight to the socket.
    /// Looked up once: the lookup is a dynamic cast that costs more than the send.
    private var socket: (any NIOTransportAccessibleChannelCore<NIOBSDSocket.Handle>)?
    /// Writes handed to the channel and not yet completed. While there are any, every
    /// write goes through the channel too, behind them.
    private var writesInChannel = 0

    /// Per-connection limits, from `ServerConfiguration`.
    struct Policy {
        var pingInterval: TimeAmount
        var pongTimeout: TimeAmount
        var maxConnections: Int
        /// Requests (messages and pings) per second and burst; nil: no limit.
        var requestRate: (perSecond: Int, burst: Int)?
    }

    init(node: Node, connections: ConnectionRegistry, identity: String?, policy: Policy) {
        self.node = node
        self.connections = connections
        self.identity = identity
        self.policy = policy
        self.rateLimiter = policy.requestRate.map {
            RequestRateLimiter(requestsPerSecond: $0.perSecond, burst: $0.burst, now: .now())
        }
    }

    func handlerAdded(context: ChannelHandlerContext) {
        self.context = context
        self.rawContext = (try? context.pipeline.syncOperations.context(handlerType: WebSocketFrameEncoder.self)) ?? context
        self.allocator = context.channel.allocator
        self.socket = context.channel._channelCore as? any NIOTransportAccessibleChannelCore<NIOBSDSocket.Handle>
        let transport = ChannelTransport(handler: NIOLoopBound(self, eventLoop: context.eventLoop), eventLoop: context.eventLoop)
        self.transport = transport
        // A refused connection is not registered, so it takes no place while it closes, and
        // never reaches the services (no client, so no connect and no disconnect).
        guard connections.add(transport, limit: policy.maxConnections) else {
            close(code: CloseCode.tooManyConnections, reason: "Too many connections")
            return
        }
        let client = node.makeClient(transport: transport, identity: identity)
        self.client = client
        client.didConnect()
        scheduleKeepalive(context: context, after: policy.pingInterval)
    }

    // MARK: Keepalive

    /// Every interval: if the peer was silent, ping it; if a ping is already out and the
    /// peer stayed silent for the timeout, it is gone (4002). Any inbound frame counts as
    /// a sign of life, so busy connections are never pinged.
    private func scheduleKeepalive(context: ChannelHandlerContext, after delay: TimeAmount) {
        let handler = NIOLoopBound(self, eventLoop: context.eventLoop)
        keepaliveTimer = context.eventLoop.scheduleTask(in: delay) {
            handler.value.keepaliveTick()
        }
    }

    private func keepaliveTick() {
        guard !isClosing, let context, rawContext != nil else { return }
        if heardFromPeer {
            heardFromPeer = false
            pingOutstanding = false
            scheduleKeepalive(context: context, after: policy.pingInterval)
        } else if !pingOutstanding {
            pingOutstanding = true
            send(WebSocketWire.pingFrame(payload: ByteBuffer(), allocator: allocator))
            scheduleKeepalive(context: context, after: policy.pongTimeout)
        } else {
            close(code: CloseCode.keepaliveTimeout, reason: "Keepalive timeout")
        }
    }

    func channelInactive(context: ChannelHandlerContext) {
        isClosing = true
        keepaliveTimer?.cancel()
        keepaliveTimer = nil
        if let transport { connections.remove(transport) }
        client?.didDisconnect()
        client = nil
        context.fireChannelInactive()
    }

    /// Breaks the reference cycles of a finished connection: the transport holds this
    /// handler and this handler holds the transport and the contexts (which hold the
    /// pipeline and the channel). Without this every connection, channel and all, stays in
    /// memory for the life of the worker. A transport that a service still holds now
    /// writes nowhere (`write`, `flush` and `close` need `rawContext`).
    func handlerRemoved(context: ChannelHandlerContext) {
        isClosing = true
        keepaliveTimer?.cancel()
        keepaliveTimer = nil
        transport = nil
        client = nil
        self.context = nil
        rawContext = nil
        socket = nil
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        let frame = unwrapInboundIn(data)
        heardFromPeer = true
        guard !isClosing else {
            // Closing: the peer's close completes the handshake; anything else is dropped.
            if frame.opcode == .connectionClose { context.close(promise: nil) }
            return
        }
        // Every message and every ping asks the worker for work; pongs and closes do not.
        switch frame.opcode {
        case .text, .binary, .ping:
            guard rateLimiter?.allow(at: .now()) ?? true else {
                close(code: CloseCode.rateLimited, reason: "Rate limit exceeded")
                return
            }
        default:
            break
        }
        switch frame.opcode {
        case .text:
            let payload = frame.unmaskedData
            guard payload.withUnsafeReadableBytes({ UTF8Validation.isValid($0) }) else {
                close(code: CloseCode.invalidPayload, reason: "Invalid UTF-8")
                return
            }
            if client?.didReceive(text: payload) == false {
                close(code: CloseCode.policyViolation, reason: "Too many pending requests")
            }
        case .binary:
            close(code: CloseCode.unsupportedData, reason: "Binary frames are not supported")
        case .ping:
            flush()
            send(WebSocketWire.pongFrame(payload: frame.unmaskedData, allocator: allocator))
        case .connectionClose:
            // Echo a valid close code (RFC 6455 section 7.4); answer an invalid one with 1002.
            var data = frame.unmaskedData
            let code = data.readInteger(as: UInt16.self) ?? CloseCode.normal
            startClose(
                code: WebSocketWire.isValidPeerCloseCode(code) ? code : CloseCode.protocolError, reason: "", initiatedHere: false)
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
        case is NIOWebSocketError, is NIOWebSocketFrameAggregator.Error, is WebSocketFrameValidator.Violation:
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
        guard !isClosing, rawContext != nil else { return }
        unflushed.append(frame.wire)
    }

    func flush() {
        guard rawContext != nil, let frames = unflushed.take() else { return }
        switch frames {
        case .one(let bytes): send(bytes)
        case .many(let list): send(list)
        }
    }

    func writeAndFlush(_ frame: OutboundFrame) {
        guard !isClosing, rawContext != nil else { return }
        guard unflushed.isEmpty else {
            write(frame)
            flush()
            return
        }
        // Alone: the frame's own buffer goes out, shared with every other recipient.
        send(frame.wire)
    }

    /// Sends `bytes` now: straight to the socket when the channel has nothing queued (the
    /// usual case), so a delivery costs one `send` and none of the pipeline's per-write
    /// bookkeeping; whatever the socket does not take at once goes to the channel, which
    /// writes it when the socket drains, and everything after it follows it there.
    private func send(_ bytes: ByteBuffer) {
        var bytes = bytes
        if writesInChannel == 0, let socket {
            // The socket's handle is only lent while it is open: a closed channel throws here.
            let sent = try? socket.withUnsafeTransport { handle in
                bytes.withUnsafeReadableBytes { Glibc.send(handle, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) }
            }
            if let sent, sent > 0 {
                if sent == bytes.readableBytes { return }
                bytes.moveReaderIndex(forwardBy: sent)
            }
        }
        guard let rawContext else { return }
        sendThroughChannel(bytes, via: rawContext)
    }

    /// Sends coalesced frames the same way, in one `sendmsg`. What the socket does not take
    /// is copied into one buffer for the channel (the frames themselves are shared).
    private func send(_ frames: [ByteBuffer]) {
        var sent = 0
        if writesInChannel == 0, let socket {
            sent = (try? socket.withUnsafeTransport { Self.send(frames, to: $0) }) ?? 0
        }
        let total = frames.reduce(0) { $0 + $1.readableBytes }
        guard sent < total, let rawContext else { return }
        var rest = allocator.buffer(capacity: total - sent)
        var skip = sent
        for var frame in frames {
            if skip >= frame.readableBytes {
                skip -= frame.readableBytes
                continue
            }
            frame.moveReaderIndex(forwardBy: skip)
            skip = 0
            rest.writeBuffer(&frame)
        }
        sendThroughChannel(rest, via: rawContext)
    }

    /// The most buffers one `sendmsg` takes (Linux's `UIO_MAXIOV`); more is rare, since a
    /// connection is flushed past 16 KiB, and what is left goes through the channel.
    private static let maxVectors = 1024

    /// One `sendmsg` of up to `maxVectors` frames; the bytes sent, or 0.
    private static func send(_ frames: [ByteBuffer], to socket: NIOBSDSocket.Handle) -> Int {
        let count = min(frames.count, maxVectors)
        return withUnsafeTemporaryAllocation(of: iovec.self, capacity: count) { vectors in
            // The pointers stay valid while `frames` holds the buffers, through the call.
            for index in 0..<count {
                frames[index].withUnsafeReadableBytes {
                    vectors[index] = iovec(iov_base: UnsafeMutableRawPointer(mutating: $0.baseAddress), iov_len: $0.count)
                }
            }
            var message = msghdr()
            message.msg_iov = vectors.baseAddress
            message.msg_iovlen = count
            return max(sendmsg(socket, &message, Int32(MSG_NOSIGNAL)), 0)
        }
    }

    /// Writes through the channel, counted so that later sends queue behind it.
    @discardableResult
    private func sendThroughChannel(_ bytes: ByteBuffer, via rawContext: ChannelHandlerContext) -> EventLoopFuture<Void> {
        writesInChannel += 1
        let handler = NIOLoopBound(self, eventLoop: rawContext.eventLoop)
        let written = rawContext.writeAndFlush(wrapOutboundOut(bytes))
        written.whenComplete { _ in handler.value.writesInChannel -= 1 }
        return written
    }

    /// Closes the connection with `code`, counted in the worker's metrics as a close the
    /// server decided on.
    func close(code: UInt16, reason: String) {
        startClose(code: code, reason: reason, initiatedHere: true)
    }

    /// Starts the closing handshake once: sends the close frame, shuts the output side
    /// (FIN), and keeps reading until the peer's close frame or EOF before closing. Closing
    /// at once would make the kernel reset a connection whose client is still sending, and
    /// the client would never read the close code.
    ///
    /// The whole handshake is bounded by `closeGracePeriod` from its start: a client that
    /// does not read (a slow consumer, whose close frame waits behind a full buffer) or
    /// never answers is cut then, so a closing connection cannot hold its buffers forever.
    private func startClose(code: UInt16, reason: String, initiatedHere: Bool) {
        guard !isClosing, let rawContext else { return }
        flush()  // frames already handed to this connection go out before the close
        isClosing = true
        if initiatedHere { node.metrics.closes.record(Int(code)) }
        let frame = WebSocketWire.closeFrame(code: code, reason: reason, allocator: allocator)
        let channel = rawContext.channel
        sendThroughChannel(frame, via: rawContext).whenComplete { result in
            guard case .success = result else {
                channel.close(promise: nil)
                return
            }
            channel.close(mode: .output).whenFailure { _ in channel.close(promise: nil) }
        }
        channel.eventLoop.scheduleTask(in: Self.closeGracePeriod) {
            channel.close(promise: nil)
        }
    }

    /// How long a closing connection has to take its close frame and answer it.
    static let closeGracePeriod = TimeAmount.seconds(2)
}

/// The frames written to one connection since its last flush, as the publications' own
/// shared, pre-framed buffers: coalescing copies nothing, and a flush hands the socket all
/// of them in one `sendmsg` (no per-frame trip through the channel's pending-writes queue).
package struct UnflushedFrames {
    package enum Frames: Equatable {
        case one(ByteBuffer)
        case many([ByteBuffer])
    }

    private var frames: Frames?

    package init() {}

    package mutating func append(_ wire: ByteBuffer) {
        switch frames {
        case nil:
            frames = .one(wire)
        case .one(let first):
            var list: [ByteBuffer] = []
            list.reserveCapacity(8)
            list.append(first)
            list.append(wire)
            frames = .many(list)
        case .many(var list):
            frames = nil  // keep `list` uniquely referenced while it grows
            list.append(wire)
            frames = .many(list)
        }
    }

    package var isEmpty: Bool { frames == nil }

    /// Everything written so far, leaving nothing behind.
    package mutating func take() -> Frames? {
        defer { frames = nil }
        return frames
    }
}

/// The `Transport` services see: a Sendable handle that forwards to the handler on its loop.
final class ChannelTransport: Transport {
    let eventLoop: any EventLoop
    let writeState = TransportWriteState()
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

    func writeAndFlush(_ frame: OutboundFrame) {
        handler.value.writeAndFlush(frame)
    }

    func close(code: UInt16, reason: String) {
        if eventLoop.inEventLoop {
            handler.value.close(code: code, reason: reason)
        } else {
            eventLoop.execute { self.handler.value.close(code: code, reason: reason) }
        }
    }
}
