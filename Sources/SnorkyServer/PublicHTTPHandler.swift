import NIOCore
import NIOHTTP1
import NIOWebSocket

/// Answers plain HTTP requests on the public port (anything that is not a WebSocket
/// upgrade to the endpoint path) with a short text response.
final class PublicHTTPHandler: ChannelInboundHandler, RemovableChannelHandler {
    typealias InboundIn = HTTPServerRequestPart
    typealias OutboundOut = HTTPServerResponsePart

    private let webSocketPath: String
    private let identities: ConnectionIdentity
    private let isOriginAllowed: @Sendable ([String]) -> Bool
    private var requestHead: HTTPRequestHead?

    init(webSocketPath: String, identities: ConnectionIdentity, isOriginAllowed: @escaping @Sendable ([String]) -> Bool) {
        self.webSocketPath = webSocketPath
        self.identities = identities
        self.isOriginAllowed = isOriginAllowed
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        switch unwrapInboundIn(data) {
        case .head(let head):
            requestHead = head
        case .body:
            break
        case .end:
            guard let head = requestHead else { return }
            requestHead = nil
            let path = head.uri.split(separator: "?", maxSplits: 1).first.map(String.init) ?? head.uri
            if path == webSocketPath, !isOriginAllowed(head.headers["Origin"]) {
                respond(context: context, head: head, status: .forbidden, body: "Origin not allowed\n")
            } else if path == webSocketPath, case .refused(let reason) = identities.resolve(uri: head.uri) {
                respond(context: context, head: head, status: .unauthorized, body: reason + "\n")
            } else if path == webSocketPath {
                respond(context: context, head: head, status: .upgradeRequired, body: "Use a WebSocket connection.\n")
            } else {
                respond(context: context, head: head, status: .notFound, body: "Not found.\n")
            }
        }
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        // A refused upgrade is reported here before the request is handed to us as a
        // plain request; the response is sent from channelRead. Anything else: hang up.
        if error is NIOWebSocketUpgradeError || error is HTTPServerUpgradeErrors { return }
        context.close(promise: nil)
    }

    private func respond(context: ChannelHandlerContext, head: HTTPRequestHead, status: HTTPResponseStatus, body: String) {
        var headers = HTTPHeaders()
        headers.add(name: "Content-Type", value: "text/plain; charset=utf-8")
        headers.add(name: "Content-Length", value: String(body.utf8.count))
        let keepAlive = head.isKeepAlive
        if !keepAlive { headers.add(name: "Connection", value: "close") }
        context.write(wrapOutboundOut(.head(HTTPResponseHead(version: head.version, status: status, headers: headers))), promise: nil)
        context.write(wrapOutboundOut(.body(.byteBuffer(context.channel.allocator.buffer(string: body)))), promise: nil)
        let channel = context.channel
        context.writeAndFlush(wrapOutboundOut(.end(nil))).whenComplete { _ in
            if !keepAlive { channel.close(promise: nil) }
        }
    }
}
