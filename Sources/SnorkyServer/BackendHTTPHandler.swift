import NIOCore
import NIOHTTP1
import SnorkyProtocol

/// HTTP/1.1 front of the backend port: `POST /backend`, `GET /health`, `/ready`, `/metrics`
/// and `/stats`.
/// Bodies are capped while they arrive (413, then the connection is closed since the rest
/// of the body will not be read); the pipelining handler in front of it keeps one request
/// in flight per connection.
final class BackendHTTPHandler: ChannelInboundHandler {
    typealias InboundIn = HTTPServerRequestPart
    typealias OutboundOut = HTTPServerResponsePart

    private enum State {
        case idle
        case receiving(HTTPRequestHead, ByteBuffer)
        /// Body too large or request refused early: ignore parts until `.end`.
        case discarding
    }

    private let api: BackendAPI
    private let maxBodySize: Int
    private var state = State.idle

    init(api: BackendAPI, maxBodySize: Int) {
        self.api = api
        self.maxBodySize = maxBodySize
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        switch (unwrapInboundIn(data), state) {
        case (.head(let head), _):
            if let length = head.headers.first(name: "Content-Length").flatMap(Int.init), length > maxBodySize {
                state = .discarding
                tooLarge(context: context, head: head)
                return
            }
            state = .receiving(head, context.channel.allocator.buffer(capacity: 0))
        case (.body(var chunk), .receiving(let head, var body)):
            guard body.readableBytes + chunk.readableBytes <= maxBodySize else {
                state = .discarding
                tooLarge(context: context, head: head)
                return
            }
            body.writeBuffer(&chunk)
            state = .receiving(head, body)
        case (.end, .receiving(let head, let body)):
            state = .idle
            route(context: context, head: head, body: body)
        case (.end, .discarding):
            state = .idle
        case (.body, _), (.end, .idle):
            break
        }
    }

    private func tooLarge(context: ChannelHandlerContext, head: HTTPRequestHead) {
        let reply = BackendAPI.error(.payloadTooLarge, "Request body larger than \(maxBodySize) bytes")
        respond(context: context, head: head, reply: reply, close: true)
    }

    private func route(context: ChannelHandlerContext, head: HTTPRequestHead, body: ByteBuffer) {
        let path = head.uri.split(separator: "?", maxSplits: 1).first.map(String.init) ?? head.uri
        switch (path, head.method) {
        case ("/backend", .POST):
            let key = head.headers.first(name: BackendAPI.keyHeader)
            let eventLoop = context.eventLoop
            let api = self.api
            let context = NIOLoopBound(context, eventLoop: eventLoop)
            let handler = NIOLoopBound(self, eventLoop: eventLoop)
            eventLoop.makeFutureWithTask {
                await api.handle(presentedKey: key, body: body, eventLoop: eventLoop)
            }.whenSuccess { reply in
                handler.value.respond(context: context.value, head: head, reply: reply, close: false)
            }
        case ("/backend", _):
            var reply = BackendAPI.error(.methodNotAllowed, "Method not allowed: use POST")
            reply.status = .methodNotAllowed
            respond(context: context, head: head, reply: reply, close: false, extraHeaders: [("Allow", "POST")])
        case ("/metrics", .GET), ("/metrics", .HEAD):
            let eventLoop = context.eventLoop
            let api = self.api
            let context = NIOLoopBound(context, eventLoop: eventLoop)
            let handler = NIOLoopBound(self, eventLoop: eventLoop)
            eventLoop.makeFutureWithTask {
                await api.metricsReply()
            }.whenSuccess { reply in
                handler.value.respond(context: context.value, head: head, reply: reply, close: false)
            }
        case ("/stats", .GET):
            let reply = api.statsReply(presentedKey: head.headers.first(name: BackendAPI.keyHeader))
            respond(context: context, head: head, reply: reply, close: false)
        case ("/ready", .GET), ("/ready", .HEAD):
            respond(context: context, head: head, reply: api.readyReply(), close: false)
        case ("/health", .GET), ("/health", .HEAD):
            let body = JSON.object(["status": "ok"]).encodedBytes()
            respond(context: context, head: head, reply: .init(status: .ok, body: ByteBuffer(bytes: body)), close: false)
        default:
            respond(context: context, head: head, reply: BackendAPI.error(.notFound, "Not found"), close: false)
        }
    }

    private func respond(
        context: ChannelHandlerContext,
        head: HTTPRequestHead,
        reply: BackendAPI.Reply,
        close: Bool,
        extraHeaders: [(String, String)] = []
    ) {
        let keepAlive = head.isKeepAlive && !close
        if requestPath(head.uri) == "/backend" { api.metrics.backendRequests.record(Int(reply.status.code)) }
        var headers = HTTPHeaders()
        headers.add(name: "Content-Type", value: reply.contentType)
        headers.add(name: "Content-Length", value: String(reply.body.readableBytes))
        for (name, value) in reply.headers + extraHeaders { headers.add(name: name, value: value) }
        if !keepAlive { headers.add(name: "Connection", value: "close") }
        context.write(wrapOutboundOut(.head(HTTPResponseHead(version: head.version, status: reply.status, headers: headers))), promise: nil)
        if head.method != .HEAD {
            context.write(wrapOutboundOut(.body(.byteBuffer(reply.body))), promise: nil)
        }
        let channel = context.channel
        context.writeAndFlush(wrapOutboundOut(.end(nil))).whenComplete { _ in
            if !keepAlive { channel.close(promise: nil) }
        }
    }
}
