public import NIOCore
import NIOPosix

/// Settings shared by the connections of this module.
public struct RedisConnectionConfiguration: Sendable {
    /// How long establishing the socket may take.
    public var connectTimeout: TimeAmount = .seconds(2)
    /// How long a reply may take before the connection is declared broken (every
    /// outstanding command fails with `.timeout` and the connection closes). nil: no limit.
    public var commandTimeout: TimeAmount? = .seconds(5)

    public init(connectTimeout: TimeAmount = .seconds(2), commandTimeout: TimeAmount? = .seconds(5)) {
        self.connectTimeout = connectTimeout
        self.commandTimeout = commandTimeout
    }
}

/// A Redis command connection: pipelined requests over one NIO channel, replies matched to
/// requests in FIFO order. Thread-safe; the connection state lives on the channel's event
/// loop.
///
/// ```swift
/// let redis = try await RedisConnection.connect(to: RedisURL("redis://127.0.0.1:6379"))
/// try await redis.send(["SET", "greeting", "hello"])
/// let value = try await redis.send(["GET", "greeting"])   // .bulkString("hello")
/// await redis.close()
/// ```
public final class RedisConnection: Sendable {
    public let channel: any Channel
    public let url: RedisURL

    public var eventLoop: any EventLoop { channel.eventLoop }

    /// Completes when the connection is closed.
    public var closeFuture: EventLoopFuture<Void> { channel.closeFuture }

    public var isActive: Bool { channel.isActive }

    /// Whether a flush is already queued on the loop for the commands written this tick.
    private let flushQueued: NIOLoopBoundBox<Bool>

    init(channel: any Channel, url: RedisURL) {
        self.channel = channel
        self.url = url
        self.flushQueued = .makeBoxSendingValue(false, eventLoop: channel.eventLoop)
    }

    /// Connects, authenticates (if the URL has a password) and selects the database.
    public static func connect(
        to url: RedisURL,
        configuration: RedisConnectionConfiguration = RedisConnectionConfiguration(),
        eventLoop: any EventLoop = MultiThreadedEventLoopGroup.singleton.next()
    ) async throws -> RedisConnection {
        try await makeConnection(to: url, configuration: configuration, eventLoop: eventLoop).get()
    }

    static func makeConnection(
        to url: RedisURL,
        configuration: RedisConnectionConfiguration,
        eventLoop: any EventLoop
    ) -> EventLoopFuture<RedisConnection> {
        let timeout = configuration.commandTimeout
        return RedisChannel.connect(to: url, connectTimeout: configuration.connectTimeout, eventLoop: eventLoop) {
            channel in
            try channel.pipeline.syncOperations.addHandlers(
                ByteToMessageHandler(RESPDecoder()),
                RedisCommandHandler(timeout: timeout)
            )
        }.flatMap { channel in
            let connection = RedisConnection(channel: channel, url: url)
            return RedisChannel.handshake(url: url, eventLoop: eventLoop) { connection.submit($0) }
                .map { connection }
                .flatMapError { error in
                    channel.close(promise: nil)
                    return eventLoop.makeFailedFuture(error)
                }
        }
    }

    /// Sends one command and returns its reply. An error reply throws
    /// `RedisError` with code `.errorReply`.
    @discardableResult
    public func send(_ arguments: [RESPArgument]) async throws -> RESPValue {
        try await submit(arguments).get()
    }

    /// Sends one command without waiting; the future fails with `.errorReply` on an error
    /// reply. Commands submitted from one thread are sent (and answered) in order.
    public func submit(_ arguments: [RESPArgument]) -> EventLoopFuture<RESPValue> {
        var buffer = channel.allocator.buffer(capacity: RESPEncoding.encodedLength(arguments))
        RESPEncoding.writeCommand(arguments, into: &buffer)
        return submit(encoded: buffer).flatMapThrowing { value in
            if case .error(let message) = value { throw RedisError.errorReply(message) }
            return value
        }
    }

    /// Sends several commands in one write and returns their replies in order. Error
    /// replies are returned as `.error` values (like EXEC), not thrown.
    public func pipeline(_ commands: [[RESPArgument]]) async throws -> [RESPValue] {
        guard !commands.isEmpty else { return [] }
        var buffer = channel.allocator.buffer(capacity: commands.reduce(0) { $0 + RESPEncoding.encodedLength($1) })
        var promises: [EventLoopPromise<RESPValue>] = []
        promises.reserveCapacity(commands.count)
        for command in commands {
            RESPEncoding.writeCommand(command, into: &buffer)
            promises.append(eventLoop.makePromise(of: RESPValue.self))
        }
        let request = RedisRequest(bytes: buffer, promises: .many(promises))
        write(request)
        var replies: [RESPValue] = []
        replies.reserveCapacity(promises.count)
        for promise in promises {
            replies.append(try await promise.futureResult.get())
        }
        return replies
    }

    /// Sends pre-encoded RESP bytes holding exactly one command; the reply (error replies
    /// included) completes the future.
    func submit(encoded bytes: ByteBuffer) -> EventLoopFuture<RESPValue> {
        let promise = eventLoop.makePromise(of: RESPValue.self)
        write(RedisRequest(bytes: bytes, promises: .one(promise)))
        return promise.futureResult
    }

    private func write(_ request: RedisRequest) {
        if eventLoop.inEventLoop {
            writeOnLoop(request)
        } else {
            eventLoop.execute { self.writeOnLoop(request) }
        }
    }

    /// Writes now and flushes once at the end of the loop's current tick, so commands
    /// issued together (e.g. publications from pipelined backend requests) share one
    /// syscall.
    private func writeOnLoop(_ request: RedisRequest) {
        // A closed channel loses its handlers, which would never see the request; an open
        // one's handler owns the request's promises from here, failures included.
        guard channel.isActive else {
            request.fail(RedisError.connectionClosed)
            return
        }
        channel.write(request, promise: nil)
        guard !flushQueued.value else { return }
        flushQueued.value = true
        eventLoop.execute {
            self.flushQueued.value = false
            self.channel.flush()
        }
    }

    /// Closes the connection; outstanding commands fail with `.connectionClosed`.
    public func close() async {
        channel.close(promise: nil)
        try? await channel.closeFuture.get()
    }
}

/// Socket setup shared by command and subscriber connections.
enum RedisChannel {
    static func connect(
        to url: RedisURL,
        connectTimeout: TimeAmount,
        eventLoop: any EventLoop,
        handlers: @escaping @Sendable (any Channel) throws -> Void
    ) -> EventLoopFuture<any Channel> {
        let bootstrap = ClientBootstrap(group: eventLoop)
            .connectTimeout(connectTimeout)
            .channelInitializer { channel in
                channel.eventLoop.makeCompletedFuture { try handlers(channel) }
            }
        let connected: EventLoopFuture<any Channel>
        switch url.address {
        case .tcp(let host, let port):
            connected = bootstrap.connect(host: host, port: port)
        case .unixSocket(let path):
            connected = bootstrap.connect(unixDomainSocketPath: path)
        }
        return connected.flatMapErrorThrowing { error in
            throw RedisError.connectionRefused("cannot connect to \(url): \(error)")
        }
    }

    /// AUTH and SELECT as the URL asks; without a password, a PING, so that a server that
    /// requires one (or is not Redis) fails the connection instead of its first command.
    static func handshake(
        url: RedisURL,
        eventLoop: any EventLoop,
        send: @escaping @Sendable ([RESPArgument]) -> EventLoopFuture<RESPValue>
    ) -> EventLoopFuture<Void> {
        var future = eventLoop.makeSucceededVoidFuture()
        if let password = url.password {
            let arguments: [RESPArgument] =
                url.username.map { ["AUTH", .string($0), .string(password)] } ?? ["AUTH", .string(password)]
            future = future.flatMap { send(arguments).map { _ in } }
        } else {
            future = future.flatMap { send(["PING"]).map { _ in } }
        }
        if url.database != 0 {
            let database = url.database
            future = future.flatMap { send(["SELECT", .integer(database)]).map { _ in } }
        }
        return future
    }
}
