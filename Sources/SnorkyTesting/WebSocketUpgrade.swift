import NIOCore
import NIOHTTP1
import NIOPosix
import NIOWebSocket

/// The HTTP/1.1 upgrade that opens a `WebSocketTestClient` connection.
enum WebSocketUpgrade {
    enum Outcome: Sendable {
        case upgraded
        /// The server answered with another status; the future completes with the full response.
        case rejected(EventLoopFuture<RejectedResponse>)
    }

    struct RejectedResponse: Sendable {
        var status: Int
        var body: String
    }

    struct Request: Sendable {
        var host: String
        var port: Int
        var uri: String
        var headers: [(String, String)]
        var maxFrameSize: Int
        var answersPings: Bool
        var receiveBufferSize: Int?
        var maximumSegmentSize: Int?
        var rawInbound: (@Sendable (UnsafeRawBufferPointer) -> Void)?
        var timeout: Duration
    }

    /// `TCP_MAXSEG`, which NIO has no name for.
    static let maximumSegmentSizeOption = ChannelOptions.Types.SocketOption(
        level: .tcp, name: NIOBSDSocket.Option(rawValue: TCP_MAXSEG))

    /// Connects, upgrades and returns the channel, whose last handler feeds `events`.
    static func connect(
        _ request: Request,
        events: TimedQueue<WebSocketTestClient.Event>,
        group: any EventLoopGroup
    ) async throws -> any Channel {
        let (channel, outcome): (any Channel, EventLoopFuture<Outcome>)
        do {
            var bootstrap = ClientBootstrap(group: group)
                .connectTimeout(TimeAmount(request.timeout))
                .channelOption(.socketOption(.tcp_nodelay), value: 1)
            // Channel options are applied before connect(2), when the window scale and the
            // MSS are chosen.
            if let size = request.receiveBufferSize {
                bootstrap = bootstrap.channelOption(.socketOption(.so_rcvbuf), value: SocketOptionValue(size))
            }
            if let size = request.maximumSegmentSize {
                bootstrap = bootstrap.channelOption(maximumSegmentSizeOption, value: SocketOptionValue(size))
            }
            (channel, outcome) = try await bootstrap
                .connect(host: request.host, port: request.port) { channel in
                    channel.eventLoop.makeCompletedFuture {
                        (channel, try configurePipeline(channel, request: request, events: events))
                    }
                }
        } catch {
            throw WebSocketTestClientError.connectionFailed(host: request.host, port: request.port, reason: "\(error)")
        }

        do {
            switch try await outcome.get(timeout: request.timeout, closing: channel) {
            case .upgraded:
                return channel
            case .rejected(let response):
                let response = try await response.get(timeout: request.timeout, closing: channel)
                channel.close(promise: nil)
                throw WebSocketTestClientError.upgradeRejected(status: response.status, body: response.body)
            }
        } catch is ChannelOperationTimedOut {
            throw WebSocketTestClientError.timedOut(waitingFor: "the WebSocket upgrade response", after: request.timeout)
        } catch let error as WebSocketTestClientError {
            throw error
        } catch {
            channel.close(promise: nil)
            throw WebSocketTestClientError.upgradeFailed(reason: "\(error)")
        }
    }

    private static func configurePipeline(
        _ channel: any Channel,
        request: Request,
        events: TimedQueue<WebSocketTestClient.Event>
    ) throws -> EventLoopFuture<Outcome> {
        var headers = HTTPHeaders()
        if !request.headers.contains(where: { $0.0.lowercased() == "host" }) {
            headers.add(name: "Host", value: "\(request.host):\(request.port)")
        }
        for (name, value) in request.headers { headers.add(name: name, value: value) }
        let head = HTTPRequestHead(version: .http1_1, method: .GET, uri: request.uri, headers: headers)

        let answersPings = request.answersPings
        let rawInbound = request.rawInbound
        let upgrader = NIOTypedWebSocketClientUpgrader<Outcome>(
            maxFrameSize: request.maxFrameSize,
            // Protocol errors must reach the test as errors, not be answered on its behalf.
            enableAutomaticErrorHandling: false,
            upgradePipelineHandler: { channel, _ in
                channel.eventLoop.makeCompletedFuture {
                    let pipeline = channel.pipeline.syncOperations
                    try pipeline.addHandler(WebSocketTestClientHandler(events: events, answersPings: answersPings))
                    if let rawInbound {
                        // In front of the frame decoder the upgrader added, so no frame is decoded.
                        let decoder = try pipeline.handler(type: ByteToMessageHandler<WebSocketFrameDecoder>.self)
                        try pipeline.addHandler(RawInboundTap(consume: rawInbound), position: .before(decoder))
                    }
                    return Outcome.upgraded
                }
            }
        )
        let upgrade = NIOTypedHTTPClientUpgradeConfiguration<Outcome>(
            upgradeRequestHead: head,
            upgraders: [upgrader],
            notUpgradingCompletionHandler: { channel in
                // NIO passes the buffered non-101 response down the pipeline once this returns.
                channel.eventLoop.makeCompletedFuture {
                    let recorder = RejectedResponseRecorder(promise: channel.eventLoop.makePromise())
                    try channel.pipeline.syncOperations.addHandler(recorder)
                    return Outcome.rejected(recorder.promise.futureResult)
                }
            }
        )
        var configuration = NIOUpgradableHTTPClientPipelineConfiguration(upgradeConfiguration: upgrade)
        // Frames the server sends right behind its 101 may share a read with it; keep them.
        configuration.leftOverBytesStrategy = .forwardBytes
        let hold = EndOfStreamHold()
        try channel.pipeline.syncOperations.addHandler(hold, position: .first)
        let outcome = try channel.pipeline.syncOperations.configureUpgradableHTTPClientPipeline(configuration: configuration)
        // Called from the channel initializer, on the channel's event loop.
        outcome.assumeIsolated().whenComplete { _ in hold.release() }
        return outcome
    }
}

/// Hands the bytes of an upgraded connection to a test instead of the frame decoder.
private final class RawInboundTap: ChannelInboundHandler {
    typealias InboundIn = ByteBuffer

    private let consume: @Sendable (UnsafeRawBufferPointer) -> Void

    init(consume: @escaping @Sendable (UnsafeRawBufferPointer) -> Void) {
        self.consume = consume
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        unwrapInboundIn(data).withUnsafeReadableBytes(consume)
    }
}

/// Holds back the end of the stream until the upgrade is over, at the front of the pipeline.
///
/// NIO's HTTP decoder forwards the bytes that follow a 101 response only when it is removed
/// before it sees the end of the stream; at EOF it drops them. A server that refuses a
/// connection right after upgrading it (at its connection limit, 4003) sends the 101, its
/// close frame and FIN together, and the close frame would be lost: the test would see a
/// connection closed without a close code. Held here, the end of the stream reaches the
/// pipeline only after the decoder has handed the close frame on to the WebSocket handlers.
private final class EndOfStreamHold: ChannelInboundHandler, RemovableChannelHandler {
    typealias InboundIn = NIOAny

    private var context: ChannelHandlerContext?
    private var upgradeOver = false
    private var heldInactive = false

    func handlerAdded(context: ChannelHandlerContext) {
        self.context = context
    }

    func handlerRemoved(context: ChannelHandlerContext) {
        self.context = nil
    }

    func channelInactive(context: ChannelHandlerContext) {
        if upgradeOver {
            context.fireChannelInactive()
        } else {
            heldInactive = true
        }
    }

    /// The upgrade succeeded or failed: let a held end of stream through. Called on the
    /// event loop as the upgrade's outcome completes, which is before the upgrade handler
    /// replays the bytes it buffered, so the release waits one event loop tick for them.
    func release() {
        guard let context else { return }
        context.eventLoop.assumeIsolated().execute {
            self.upgradeOver = true
            guard self.heldInactive, let context = self.context else { return }
            self.heldInactive = false
            context.fireChannelInactive()
        }
    }
}

/// Collects a refused upgrade's response so the error can show its status and body.
private final class RejectedResponseRecorder: ChannelInboundHandler, RemovableChannelHandler {
    typealias InboundIn = HTTPClientResponsePart

    let promise: EventLoopPromise<WebSocketUpgrade.RejectedResponse>
    private var status: Int?
    private var body: [UInt8] = []
    private var completed = false

    init(promise: EventLoopPromise<WebSocketUpgrade.RejectedResponse>) {
        self.promise = promise
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        switch unwrapInboundIn(data) {
        case .head(let head): status = Int(head.status.code)
        case .body(let buffer): body += buffer.readableBytesView
        case .end: complete()
        }
    }

    func channelInactive(context: ChannelHandlerContext) {
        complete()
        context.fireChannelInactive()
    }

    func handlerRemoved(context: ChannelHandlerContext) {
        complete()
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        complete()
        context.close(promise: nil)
    }

    private func complete() {
        guard !completed else { return }
        completed = true
        if let status {
            promise.succeed(.init(status: status, body: String(decoding: body, as: UTF8.self)))
        } else {
            promise.fail(ChannelError.eof)
        }
    }
}
