import NIOCore
import NIOHTTP1
import SnorkyProtocol

/// HTTP/1.1 front of the backend port: `POST /backend`, `GET /health`, `/ready`, `/metrics`
/// and `/stats`.
///
/// Pipelining is handled here: requests read together are started together when their
/// services allow it (`Service.runsPipelinedBackendRequestsConcurrently`; otherwise a call
/// waits for the ones before it), replies are written strictly in request order, and the
/// replies ready in one pass of the event loop go out in one write. At most
/// `maxInFlight` requests are held per connection; past that the connection is not read
/// until replies drain. Every call is answered within the backend timeout of its start:
/// one timer per connection watches the oldest running call (calls start in request order,
/// so their deadlines are in request order too).
///
/// Bodies are capped while they arrive (413, then the connection is closed since the rest
/// of the body will not be read). A request that is not HTTP gets a 400, in its turn after
/// the replies before it, and the connection is closed.
///
/// Replies are written as finished bytes, status line and headers included: the handler
/// sits right behind NIO's request decoder with no response encoder in between (see
/// `configurePipeline`), so a reply is one buffer and one pass down the pipeline.
final class BackendHTTPHandler: ChannelDuplexHandler {
    typealias InboundIn = HTTPServerRequestPart
    typealias OutboundIn = ByteBuffer
    typealias OutboundOut = ByteBuffer

    /// The backend port's pipeline: the request decoder and this handler.
    static func configurePipeline(_ pipeline: ChannelPipeline.SynchronousOperations, api: BackendAPI, maxBodySize: Int) throws {
        try pipeline.addHandler(ByteToMessageHandler(HTTPRequestDecoder(leftOverBytesStrategy: .dropBytes)))
        try pipeline.addHandler(BackendHTTPHandler(api: api, maxBodySize: maxBodySize))
    }

    static let maxInFlight = 256

    private enum ReadState {
        case idle
        /// The body so far: nil before its first chunk. A body that arrives in one chunk
        /// (nearly all of them) is that chunk, not a copy.
        case receiving(HTTPRequestHead, ByteBuffer?)
        /// Body too large: ignore parts until `.end`.
        case discarding
    }

    /// One request, from arrival until its reply is written. A class, so the queue's entries
    /// are updated in place as their calls start and finish.
    private final class Exchange {
        enum Progress {
            /// A backend call not started yet: an earlier call must be answered first.
            case waiting(BackendAPI.Call)
            case running(BackendAPI.Call, BackendReplyTransport)
            /// A reply being produced that needs no ordering with calls (`/metrics`).
            case fetching
            case answered(BackendAPI.Reply)
        }

        let head: HTTPRequestHead
        var progress: Progress
        /// When a running call (or a reply being fetched) gets its 504.
        var deadline: NIODeadline
        var closeAfter: Bool
        var extraHeaders: [(String, String)]
        /// A request to `/backend`, counted in the backend request metrics by status.
        let isBackendRequest: Bool

        init(
            head: HTTPRequestHead, progress: Progress, deadline: NIODeadline = .distantFuture,
            closeAfter: Bool = false, extraHeaders: [(String, String)] = []
        ) {
            self.head = head
            self.progress = progress
            self.deadline = deadline
            self.closeAfter = closeAfter || !head.isKeepAlive
            self.extraHeaders = extraHeaders
            self.isBackendRequest = requestPath(head.uri) == "/backend"
        }

        var isAnswered: Bool {
            if case .answered = progress { return true }
            return false
        }

        var hasDeadline: Bool {
            switch progress {
            case .running, .fetching: true
            case .waiting, .answered: false
            }
        }
    }

    private let api: BackendAPI
    private let maxBodySize: Int
    private var readState = ReadState.idle
    /// In request order; `firstID` is the id of `exchanges.first`.
    private var exchanges = CircularBuffer<Exchange>()
    private var firstID: UInt64 = 0
    /// The offset in `exchanges` of the first call not started yet: every exchange before it
    /// is running, answered or fetching. Calls start in request order.
    private var firstUnstarted = 0
    /// Calls started and not answered yet; when one of them runs sequentially it is the only one.
    private var runningCalls = 0
    private var isSequentialCallRunning = false
    /// A reply that closes the connection was queued: later requests are ignored.
    private var isFinished = false
    private var isReadHeld = false
    private var isFlushScheduled = false
    private var timer: Scheduled<Void>?
    private var executor: EventLoopTaskExecutor?

    init(api: BackendAPI, maxBodySize: Int) {
        self.api = api
        self.maxBodySize = maxBodySize
    }

    func handlerAdded(context: ChannelHandlerContext) {
        executor = EventLoopTaskExecutor(eventLoop: context.eventLoop)
    }

    func handlerRemoved(context: ChannelHandlerContext) {
        timer?.cancel()
        timer = nil
        for exchange in exchanges {
            if case .running(_, let transport) = exchange.progress { transport.abandon() }
        }
        exchanges.removeAll()
    }

    // MARK: Reading

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        guard !isFinished else { return }
        switch (unwrapInboundIn(data), readState) {
        case (.head(let head), _):
            if let length = head.headers.first(name: "Content-Length").flatMap(Int.init), length > maxBodySize {
                readState = .discarding
                tooLarge(context: context, head: head)
                return
            }
            readState = .receiving(head, nil)
        case (.body(var chunk), .receiving(let head, let body)):
            guard (body?.readableBytes ?? 0) + chunk.readableBytes <= maxBodySize else {
                readState = .discarding
                tooLarge(context: context, head: head)
                return
            }
            if var body {
                readState = .idle  // keep `body` uniquely referenced while it grows
                body.writeBuffer(&chunk)
                readState = .receiving(head, body)
            } else {
                readState = .receiving(head, chunk)
            }
        case (.end, .receiving(let head, let body)):
            readState = .idle
            route(context: context, head: head, body: body ?? ByteBuffer())
        case (.end, .discarding):
            readState = .idle
        case (.body, _), (.end, .idle):
            break
        }
    }

    /// Bytes that do not parse as HTTP: the decoder stops there, so the connection ends with
    /// a 400 after the replies already owed.
    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        guard error is HTTPParserError else {
            context.fireErrorCaught(error)
            return
        }
        guard !isFinished else { return }
        readState = .idle
        let head = HTTPRequestHead(version: .http1_1, method: .GET, uri: "")
        answer(context: context, head: head, reply: BackendAPI.error(.badRequest, "Malformed HTTP request"), closeAfter: true)
    }

    /// Holds reads while too many requests wait for their replies.
    func read(context: ChannelHandlerContext) {
        if exchanges.count >= Self.maxInFlight {
            isReadHeld = true
        } else {
            context.read()
        }
    }

    private func tooLarge(context: ChannelHandlerContext, head: HTTPRequestHead) {
        let reply = BackendAPI.error(.payloadTooLarge, "Request body larger than \(maxBodySize) bytes")
        answer(context: context, head: head, reply: reply, closeAfter: true)
    }

    private func route(context: ChannelHandlerContext, head: HTTPRequestHead, body: ByteBuffer) {
        let path = requestPath(head.uri)
        switch (path, head.method) {
        case ("/backend", .POST):
            switch api.prepare(presentedKey: head.headers.first(name: BackendAPI.keyHeader), body: body) {
            case .answered(let reply):
                answer(context: context, head: head, reply: reply)
            case .call(let call):
                append(Exchange(head: head, progress: .waiting(call)))
                startCalls(context: context)
            }
        case ("/backend", _):
            var reply = BackendAPI.error(.methodNotAllowed, "Method not allowed: use POST")
            reply.status = .methodNotAllowed
            answer(context: context, head: head, reply: reply, extraHeaders: [("Allow", "POST")])
        case ("/metrics", .GET), ("/metrics", .HEAD):
            let id = append(Exchange(head: head, progress: .fetching, deadline: .now() + api.requestTimeout))
            armTimer(context: context)
            let api = self.api
            let handler = NIOLoopBound(self, eventLoop: context.eventLoop)
            let boundContext = NIOLoopBound(context, eventLoop: context.eventLoop)
            context.eventLoop.makeFutureWithTask { await api.metricsReply() }.whenSuccess { reply in
                handler.value.complete(id, with: reply, context: boundContext.value)
            }
        case ("/stats", .GET):
            answer(context: context, head: head, reply: api.statsReply(presentedKey: head.headers.first(name: BackendAPI.keyHeader)))
        case ("/ready", .GET), ("/ready", .HEAD):
            answer(context: context, head: head, reply: api.readyReply())
        case ("/health", .GET), ("/health", .HEAD):
            let body = JSON.object(["status": "ok"]).encodedBytes()
            answer(context: context, head: head, reply: .init(status: .ok, body: ByteBuffer(bytes: body)))
        default:
            answer(context: context, head: head, reply: BackendAPI.error(.notFound, "Not found"))
        }
    }

    // MARK: Exchanges

    @discardableResult
    private func append(_ exchange: Exchange) -> UInt64 {
        if exchange.closeAfter { isFinished = true }
        exchanges.append(exchange)
        return firstID + UInt64(exchanges.count - 1)
    }

    /// The offset of exchange `id` in `exchanges`, nil once its reply is written.
    private func offset(of id: UInt64) -> Int? {
        guard id >= firstID, id - firstID < UInt64(exchanges.count) else { return nil }
        return Int(id - firstID)
    }

    /// Queues an immediate reply behind the replies still pending.
    private func answer(
        context: ChannelHandlerContext, head: HTTPRequestHead, reply: BackendAPI.Reply,
        closeAfter: Bool = false, extraHeaders: [(String, String)] = []
    ) {
        append(Exchange(head: head, progress: .answered(reply), closeAfter: closeAfter, extraHeaders: extraHeaders))
        writeAnswered(context: context)
    }

    /// Starts waiting calls, in order: a call that runs concurrently starts while the calls
    /// before it that are still running all run concurrently too; any other call starts only
    /// once everything before it is answered, and holds back everything after it. Each
    /// exchange is looked at once on its way past `firstUnstarted`.
    private func startCalls(context: ChannelHandlerContext) {
        defer { armTimer(context: context) }
        guard let executor else { return }
        while firstUnstarted < exchanges.count {
            let exchange = exchanges[offset: firstUnstarted]
            guard case .waiting(let call) = exchange.progress else {
                firstUnstarted += 1
                continue
            }
            if isSequentialCallRunning || (!call.runsConcurrently && runningCalls > 0) { return }
            let transport = api.start(call, eventLoop: context.eventLoop, executor: executor)
            exchange.progress = .running(call, transport)
            exchange.deadline = .now() + api.requestTimeout
            runningCalls += 1
            isSequentialCallRunning = !call.runsConcurrently
            let id = firstID + UInt64(firstUnstarted)
            firstUnstarted += 1
            let handler = NIOLoopBound(self, eventLoop: context.eventLoop)
            let boundContext = NIOLoopBound(context, eventLoop: context.eventLoop)
            transport.reply.whenSuccess { payload in
                handler.value.complete(id, with: BackendAPI.reply(to: payload), context: boundContext.value)
            }
        }
    }

    private func complete(_ id: UInt64, with reply: BackendAPI.Reply, context: ChannelHandlerContext) {
        guard let offset = offset(of: id) else { return }  // timed out and written already
        let exchange = exchanges[offset: offset]
        if exchange.isAnswered { return }
        settle(exchange, with: reply)
        writeAnswered(context: context)
        startCalls(context: context)
    }

    /// Records the reply of a running call or fetch; a call no longer running lets the ones
    /// behind it start.
    private func settle(_ exchange: Exchange, with reply: BackendAPI.Reply) {
        if case .running = exchange.progress {
            runningCalls -= 1
            isSequentialCallRunning = false
        }
        exchange.progress = .answered(reply)
    }

    /// Writes the answered replies at the front of the queue; one flush per loop pass.
    private func writeAnswered(context: ChannelHandlerContext) {
        var wrote = false
        while let first = exchanges.first, case .answered(let reply) = first.progress {
            exchanges.removeFirst()
            firstID += 1
            firstUnstarted = max(firstUnstarted - 1, 0)
            let bytes = encode(first, reply, allocator: context.channel.allocator)
            wrote = true
            if first.closeAfter {
                timer?.cancel()
                timer = nil
                let channel = context.channel
                context.writeAndFlush(wrapOutboundOut(bytes)).whenComplete { _ in channel.close(promise: nil) }
                return
            }
            context.write(wrapOutboundOut(bytes), promise: nil)
        }
        guard wrote else { return }
        if !isFlushScheduled {
            isFlushScheduled = true
            let handler = NIOLoopBound(self, eventLoop: context.eventLoop)
            let boundContext = NIOLoopBound(context, eventLoop: context.eventLoop)
            context.eventLoop.execute {
                handler.value.isFlushScheduled = false
                boundContext.value.flush()
            }
        }
        if isReadHeld && exchanges.count < Self.maxInFlight {
            isReadHeld = false
            context.read()
        }
    }

    /// A reply as it goes on the wire: status line in the request's HTTP version, headers
    /// (every value here is generated by the server, never taken from a request) and the
    /// body unless the request was a HEAD.
    private func encode(_ exchange: Exchange, _ reply: BackendAPI.Reply, allocator: ByteBufferAllocator) -> ByteBuffer {
        let head = exchange.head
        if exchange.isBackendRequest { api.metrics.backendRequests.record(Int(reply.status.code)) }
        var bytes = allocator.buffer(capacity: 160 + reply.body.readableBytes)
        bytes.writeStaticString(head.version == .http1_0 ? "HTTP/1.0 " : "HTTP/1.1 ")
        bytes.writeString(String(reply.status.code))
        bytes.writeStaticString(" ")
        bytes.writeString(reply.status.reasonPhrase)
        bytes.writeStaticString("\r\n")
        Self.writeHeader("Content-Type", reply.contentType, into: &bytes)
        Self.writeHeader("Content-Length", String(reply.body.readableBytes), into: &bytes)
        for (name, value) in reply.headers { Self.writeHeader(name, value, into: &bytes) }
        for (name, value) in exchange.extraHeaders { Self.writeHeader(name, value, into: &bytes) }
        if exchange.closeAfter { bytes.writeStaticString("Connection: close\r\n") }
        bytes.writeStaticString("\r\n")
        if head.method != .HEAD {
            bytes.writeImmutableBuffer(reply.body)
        }
        return bytes
    }

    private static func writeHeader(_ name: String, _ value: String, into bytes: inout ByteBuffer) {
        bytes.writeString(name)
        bytes.writeStaticString(": ")
        bytes.writeString(value)
        bytes.writeStaticString("\r\n")
    }

    // MARK: Timeout

    /// One timer per connection, for the oldest call without a reply.
    private func armTimer(context: ChannelHandlerContext) {
        guard timer == nil, let oldest = exchanges.first(where: { $0.hasDeadline }) else { return }
        let handler = NIOLoopBound(self, eventLoop: context.eventLoop)
        let boundContext = NIOLoopBound(context, eventLoop: context.eventLoop)
        timer = context.eventLoop.scheduleTask(deadline: oldest.deadline) {
            handler.value.timerFired(context: boundContext.value)
        }
    }

    private func timerFired(context: ChannelHandlerContext) {
        timer = nil
        let now = NIODeadline.now()
        for exchange in exchanges where exchange.deadline <= now {
            switch exchange.progress {
            case .answered, .waiting: continue
            case .fetching:
                settle(exchange, with: api.timedOut(what: requestPath(exchange.head.uri)))
            case .running(let call, let transport):
                transport.abandon()
                settle(exchange, with: api.timedOut(what: call.service.name))
            }
        }
        writeAnswered(context: context)
        startCalls(context: context)
    }
}
