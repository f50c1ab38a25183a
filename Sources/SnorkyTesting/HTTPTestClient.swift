import NIOCore
import NIOHTTP1
import NIOPosix

/// A minimal HTTP/1.1 client for tests of the backend API, health and metrics endpoints:
/// one connection per request (`Connection: close`), a whole-request timeout, and the body
/// returned as text.
public enum HTTPTestClient {
    public typealias Response = (status: Int, headers: [(String, String)], body: String)

    /// Sends one request and returns the complete response.
    ///
    /// A `Host` header is added unless given, and `Content-Length` always (it is computed
    /// from `body`). The timeout covers connecting, sending and reading the response.
    public static func request(
        method: String = "POST",
        host: String,
        port: Int,
        path: String,
        headers: [(String, String)] = [],
        body: [UInt8] = [],
        timeout: Duration = .seconds(10),
        on group: any EventLoopGroup = MultiThreadedEventLoopGroup.singleton
    ) async throws -> Response {
        var head = requestHead(method: method, path: path, headers: headers, bodyLength: body.count, host: host, port: port)
        head.headers.replaceOrAdd(name: "Connection", value: "close")

        let responses = try await exchange(
            host: host, port: port, requests: [(head, body)], timeout: timeout, on: group)
        return responses[0]
    }

    /// One request of a pipelined batch.
    public struct PipelinedRequest: Sendable {
        public var method: String
        public var path: String
        public var headers: [(String, String)]
        public var body: [UInt8]

        public init(method: String = "POST", path: String, headers: [(String, String)] = [], body: String = "") {
            self.method = method
            self.path = path
            self.headers = headers
            self.body = Array(body.utf8)
        }
    }

    /// Sends every request on one keep-alive connection in a single write (HTTP/1.1
    /// pipelining) and returns the responses in the order they arrived.
    public static func pipelined(
        host: String,
        port: Int,
        requests: [PipelinedRequest],
        timeout: Duration = .seconds(10),
        on group: any EventLoopGroup = MultiThreadedEventLoopGroup.singleton
    ) async throws -> [Response] {
        let batch = requests.map { request in
            let head = requestHead(
                method: request.method, path: request.path, headers: request.headers, bodyLength: request.body.count,
                host: host, port: port)
            return (head, request.body)
        }
        return try await exchange(host: host, port: port, requests: batch, timeout: timeout, on: group)
    }

    /// An HTTP/1.1 request head with `headers`, a `Host` header unless given, and
    /// `Content-Length` always (computed from the body, replacing any given).
    private static func requestHead(
        method: String, path: String, headers: [(String, String)], bodyLength: Int, host: String, port: Int
    ) -> HTTPRequestHead {
        var httpHeaders = HTTPHeaders()
        if !headers.contains(where: { $0.0.lowercased() == "host" }) {
            httpHeaders.add(name: "Host", value: "\(host):\(port)")
        }
        for (name, value) in headers where name.lowercased() != "content-length" {
            httpHeaders.add(name: name, value: value)
        }
        httpHeaders.replaceOrAdd(name: "Content-Length", value: String(bodyLength))
        return HTTPRequestHead(version: .http1_1, method: HTTPMethod(rawValue: method), uri: path, headers: httpHeaders)
    }

    private static func exchange(
        host: String,
        port: Int,
        requests: [(HTTPRequestHead, [UInt8])],
        timeout: Duration,
        on group: any EventLoopGroup
    ) async throws -> [Response] {
        let (channel, response): (any Channel, EventLoopFuture<[HTTPResponseRecorder.Result]>)
        let method = requests.first?.0.method.rawValue ?? "?"
        let path = requests.first?.0.uri ?? "?"
        do {
            (channel, response) = try await ClientBootstrap(group: group)
                .connectTimeout(TimeAmount(timeout))
                .connect(host: host, port: port) { channel in
                    channel.eventLoop.makeCompletedFuture {
                        try channel.pipeline.syncOperations.addHTTPClientHandlers()
                        let recorder = HTTPResponseRecorder(expected: requests.count, promise: channel.eventLoop.makePromise())
                        try channel.pipeline.syncOperations.addHandler(recorder)
                        return (channel, recorder.promise.futureResult)
                    }
                }
        } catch {
            throw HTTPTestClientError.connectionFailed(host: host, port: port, reason: "\(error)")
        }
        defer { channel.close(promise: nil) }

        for (head, body) in requests {
            channel.write(HTTPClientRequestPart.head(head), promise: nil)
            if !body.isEmpty {
                channel.write(HTTPClientRequestPart.body(.byteBuffer(channel.allocator.buffer(bytes: body))), promise: nil)
            }
            channel.write(HTTPClientRequestPart.end(nil), promise: nil)
        }
        channel.flush()

        do {
            let results = try await response.get(timeout: timeout, closing: channel)
            return results.map { ($0.status, $0.headers, $0.body) }
        } catch is ChannelOperationTimedOut {
            throw HTTPTestClientError.timedOut(method: method, path: path, after: timeout)
        } catch {
            throw HTTPTestClientError.incompleteResponse(method: method, path: path, reason: "\(error)")
        }
    }

    /// Sends `bytes` as they are and returns everything the server sends back until it
    /// closes the connection: for requests no HTTP client would write.
    public static func raw(
        host: String,
        port: Int,
        bytes: String,
        timeout: Duration = .seconds(10),
        on group: any EventLoopGroup = MultiThreadedEventLoopGroup.singleton
    ) async throws -> String {
        let (channel, received): (any Channel, EventLoopFuture<ByteBuffer>)
        do {
            (channel, received) = try await ClientBootstrap(group: group)
                .connectTimeout(TimeAmount(timeout))
                .connect(host: host, port: port) { channel in
                    channel.eventLoop.makeCompletedFuture {
                        let collector = ByteCollector(promise: channel.eventLoop.makePromise())
                        try channel.pipeline.syncOperations.addHandler(collector)
                        return (channel, collector.promise.futureResult)
                    }
                }
        } catch {
            throw HTTPTestClientError.connectionFailed(host: host, port: port, reason: "\(error)")
        }
        defer { channel.close(promise: nil) }
        try await channel.writeAndFlush(ByteBuffer(string: bytes))
        do {
            return String(buffer: try await received.get(timeout: timeout, closing: channel))
        } catch is ChannelOperationTimedOut {
            throw HTTPTestClientError.timedOut(method: "raw", path: "-", after: timeout)
        }
    }

    /// `request` with a text body (sent as UTF-8).
    public static func request(
        method: String = "POST",
        host: String,
        port: Int,
        path: String,
        headers: [(String, String)] = [],
        body: String,
        timeout: Duration = .seconds(10),
        on group: any EventLoopGroup = MultiThreadedEventLoopGroup.singleton
    ) async throws -> Response {
        try await request(
            method: method, host: host, port: port, path: path, headers: headers, body: Array(body.utf8),
            timeout: timeout, on: group)
    }

    public static func get(
        host: String,
        port: Int,
        path: String,
        headers: [(String, String)] = [],
        timeout: Duration = .seconds(10),
        on group: any EventLoopGroup = MultiThreadedEventLoopGroup.singleton
    ) async throws -> Response {
        try await request(method: "GET", host: host, port: port, path: path, headers: headers, timeout: timeout, on: group)
    }
}

public enum HTTPTestClientError: Error, Sendable, Equatable, CustomStringConvertible {
    case connectionFailed(host: String, port: Int, reason: String)
    case timedOut(method: String, path: String, after: Duration)
    /// The connection ended or failed before the response was complete.
    case incompleteResponse(method: String, path: String, reason: String)

    public var description: String {
        switch self {
        case .connectionFailed(let host, let port, let reason): "could not connect to \(host):\(port): \(reason)"
        case .timedOut(let method, let path, let duration): "\(method) \(path): no complete response within \(duration)"
        case .incompleteResponse(let method, let path, let reason): "\(method) \(path): incomplete response (\(reason))"
        }
    }
}

/// Accumulates `expected` responses and completes the promise at the end of the last one.
private final class HTTPResponseRecorder: ChannelInboundHandler {
    typealias InboundIn = HTTPClientResponsePart

    struct Result: Sendable {
        var status: Int
        var headers: [(String, String)]
        var body: String
    }

    let promise: EventLoopPromise<[Result]>
    private let expected: Int
    private var results: [Result] = []
    private var head: HTTPResponseHead?
    private var body: [UInt8] = []
    private var completed = false

    init(expected: Int, promise: EventLoopPromise<[Result]>) {
        self.expected = expected
        self.promise = promise
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        switch unwrapInboundIn(data) {
        case .head(let head):
            // A 1xx interim response is followed by the real one.
            if head.status.code >= 200 || head.status.code == 101 { self.head = head }
        case .body(let buffer):
            body += buffer.readableBytesView
        case .end:
            guard let head else { return }
            results.append(Result(
                status: Int(head.status.code),
                headers: head.headers.map { ($0.name, $0.value) },
                body: String(decoding: body, as: UTF8.self)))
            self.head = nil
            body = []
            if results.count == expected { complete(.success(results)) }
        }
    }

    func channelInactive(context: ChannelHandlerContext) {
        complete(.failure(ChannelError.eof))
        context.fireChannelInactive()
    }

    /// Also reached when the connection never became active (refused), which skips channelInactive.
    func handlerRemoved(context: ChannelHandlerContext) {
        complete(.failure(ChannelError.eof))
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        complete(.failure(error))
        context.close(promise: nil)
    }

    private func complete(_ result: Swift.Result<[Result], any Error>) {
        guard !completed else { return }
        completed = true
        promise.completeWith(result)
    }
}

/// Everything a connection receives, delivered when the peer closes it.
private final class ByteCollector: ChannelInboundHandler {
    typealias InboundIn = ByteBuffer

    let promise: EventLoopPromise<ByteBuffer>
    private var received = ByteBuffer()

    init(promise: EventLoopPromise<ByteBuffer>) {
        self.promise = promise
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        var chunk = unwrapInboundIn(data)
        received.writeBuffer(&chunk)
    }

    func channelInactive(context: ChannelHandlerContext) {
        promise.succeed(received)
        context.fireChannelInactive()
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        context.close(promise: nil)
    }
}
