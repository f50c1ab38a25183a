import NIOCore

/// What a subscriber connection reports. Called on the connection's event loop.
protocol RedisSubscriberDelegate: AnyObject, Sendable {
    /// A `message` push: a publication on `channel`.
    func subscriberReceived(message: ByteBuffer, channel: ByteBuffer)
    /// A `subscribe` (`subscribed == true`) or `unsubscribe` confirmation from the
    /// connection identified by `connectionID`.
    func subscriberConfirmed(channel: ByteBuffer, subscribed: Bool, connectionID: Int)
}

/// Writes to a subscriber connection.
enum SubscriberCommand: Sendable {
    case subscribe([String])
    case unsubscribe([String])
    /// A plain command (AUTH, SELECT, PING) whose reply completes the promise; an error
    /// reply fails it with `.errorReply`.
    case command([RESPArgument], EventLoopPromise<RESPValue>?)
}

/// The subscriber side of Redis pub/sub (RESP2): `message` pushes go straight to the
/// delegate on this event loop, no task or actor hop. SUBSCRIBE and UNSUBSCRIBE are
/// answered by one confirmation per channel, which are counted in a FIFO with the other
/// replies; when the oldest expected reply is later than the timeout the connection is
/// closed (the bus then reconnects). An idle connection is PINGed every `pingInterval` so
/// a silently dead peer is noticed.
final class RedisSubscriberHandler: ChannelDuplexHandler {
    typealias InboundIn = RESPValue
    typealias OutboundIn = SubscriberCommand
    typealias OutboundOut = ByteBuffer

    private enum Expectation {
        case reply(EventLoopPromise<RESPValue>?)
        case confirmations(Int)
    }

    private var expected = CircularBuffer<(expectation: Expectation, deadline: NIODeadline)>(initialCapacity: 8)
    private var timer: Scheduled<Void>?
    private var pingTimer: Scheduled<Void>?
    private var isOpen = true
    private var heardSinceLastPing = false
    private let delegate: any RedisSubscriberDelegate
    private let connectionID: Int
    private let timeout: TimeAmount
    private let pingInterval: TimeAmount?

    init(delegate: any RedisSubscriberDelegate, connectionID: Int, timeout: TimeAmount, pingInterval: TimeAmount?) {
        self.delegate = delegate
        self.connectionID = connectionID
        self.timeout = timeout
        self.pingInterval = pingInterval
    }

    func handlerAdded(context: ChannelHandlerContext) {
        if context.channel.isActive { schedulePing(context: context) }
    }

    func channelActive(context: ChannelHandlerContext) {
        schedulePing(context: context)
        context.fireChannelActive()
    }

    func write(context: ChannelHandlerContext, data: NIOAny, promise: EventLoopPromise<Void>?) {
        let command = unwrapOutboundIn(data)
        let arguments: [RESPArgument]
        let expectation: Expectation
        switch command {
        case .subscribe(let channels):
            guard !channels.isEmpty else { promise?.succeed(); return }
            arguments = ["SUBSCRIBE"] + channels.map { RESPArgument($0) }
            expectation = .confirmations(channels.count)
        case .unsubscribe(let channels):
            guard !channels.isEmpty else { promise?.succeed(); return }
            arguments = ["UNSUBSCRIBE"] + channels.map { RESPArgument($0) }
            expectation = .confirmations(channels.count)
        case .command(let command, let reply):
            arguments = command
            expectation = .reply(reply)
        }
        guard isOpen else {
            if case .reply(let reply) = expectation { reply?.fail(RedisError.connectionClosed) }
            promise?.fail(RedisError.connectionClosed)
            return
        }
        var buffer = context.channel.allocator.buffer(capacity: RESPEncoding.encodedLength(arguments))
        RESPEncoding.writeCommand(arguments, into: &buffer)
        expected.append((expectation, .now() + timeout))
        context.write(wrapOutboundOut(buffer), promise: promise)
        armTimer(context: context)
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        heardSinceLastPing = true
        let value = unwrapInboundIn(data)
        if case .array(let items) = value, items.count == 3, case .bulkString(let kind) = items[0],
            case .bulkString(let channel) = items[1]
        {
            if kind.readableBytesView.elementsEqual("message".utf8) {
                if case .bulkString(let message) = items[2] {
                    delegate.subscriberReceived(message: message, channel: channel)
                }
                return
            }
            let isSubscribe = kind.readableBytesView.elementsEqual("subscribe".utf8)
            if isSubscribe || kind.readableBytesView.elementsEqual("unsubscribe".utf8) {
                confirmation(context: context)
                delegate.subscriberConfirmed(channel: channel, subscribed: isSubscribe, connectionID: connectionID)
                return
            }
        }
        // Any other reply answers the oldest plain command (a pong, +OK, an error...).
        guard let head = expected.popFirst() else {
            closeWithError(RedisError.protocolError("unexpected reply \(value)"), context: context)
            return
        }
        switch head.expectation {
        case .reply(let promise):
            if case .error(let message) = value {
                promise?.fail(RedisError.errorReply(message))
            } else {
                promise?.succeed(value)
            }
        case .confirmations:
            // SUBSCRIBE or UNSUBSCRIBE refused (e.g. ACL): the subscription state cannot be
            // trusted any more; start over on a new connection.
            closeWithError(RedisError.errorReply("(UN)SUBSCRIBE refused: \(value)"), context: context)
        }
    }

    private func confirmation(context: ChannelHandlerContext) {
        guard let head = expected.first, case .confirmations(let remaining) = head.expectation else {
            closeWithError(RedisError.protocolError("unexpected (un)subscribe confirmation"), context: context)
            return
        }
        if remaining > 1 {
            expected[expected.startIndex] = (.confirmations(remaining - 1), head.deadline)
        } else {
            expected.removeFirst()
        }
    }

    func channelInactive(context: ChannelHandlerContext) {
        failAll(RedisError.connectionClosed)
        context.fireChannelInactive()
    }

    func handlerRemoved(context: ChannelHandlerContext) {
        failAll(RedisError.connectionClosed)
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        closeWithError((error as? RedisError) ?? RedisError(.connectionClosed, "\(error)"), context: context)
    }

    private func closeWithError(_ error: RedisError, context: ChannelHandlerContext) {
        failAll(error)
        context.close(promise: nil)
    }

    private func failAll(_ error: RedisError) {
        isOpen = false
        timer?.cancel()
        timer = nil
        pingTimer?.cancel()
        pingTimer = nil
        while let next = expected.popFirst() {
            if case .reply(let promise) = next.expectation { promise?.fail(error) }
        }
    }

    private func armTimer(context: ChannelHandlerContext) {
        guard timer == nil, isOpen, let head = expected.first else { return }
        timer = context.eventLoop.assumeIsolated().scheduleTask(deadline: head.deadline) { [self] in
            timer = nil
            guard let head = expected.first else { return }
            if head.deadline <= .now() {
                closeWithError(RedisError.timeout("no reply from Redis within \(timeout)"), context: context)
            } else {
                armTimer(context: context)
            }
        }
    }

    private func schedulePing(context: ChannelHandlerContext) {
        guard let pingInterval, pingTimer == nil, isOpen else { return }
        pingTimer = context.eventLoop.assumeIsolated().scheduleTask(in: pingInterval) { [self] in
            pingTimer = nil
            guard isOpen else { return }
            // Only an idle connection needs a probe; outstanding replies have their own timer.
            if !heardSinceLastPing && expected.isEmpty {
                context.writeAndFlush(wrapOutboundOut(encodedPing(context: context)), promise: nil)
                expected.append((.reply(nil), .now() + timeout))
                armTimer(context: context)
            }
            heardSinceLastPing = false
            schedulePing(context: context)
        }
    }

    private func encodedPing(context: ChannelHandlerContext) -> ByteBuffer {
        var buffer = context.channel.allocator.buffer(capacity: 14)
        RESPEncoding.writeCommand(["PING"] as [RESPArgument], into: &buffer)
        return buffer
    }
}

/// Opens subscriber connections.
enum RedisSubscriberConnection {
    static func connect(
        to url: RedisURL,
        configuration: RedisConnectionConfiguration,
        pingInterval: TimeAmount?,
        eventLoop: any EventLoop,
        delegate: any RedisSubscriberDelegate,
        connectionID: Int
    ) -> EventLoopFuture<any Channel> {
        let timeout = configuration.commandTimeout ?? .seconds(30)
        return RedisChannel.connect(to: url, connectTimeout: configuration.connectTimeout, eventLoop: eventLoop) {
            channel in
            try channel.pipeline.syncOperations.addHandlers(
                ByteToMessageHandler(RESPDecoder()),
                RedisSubscriberHandler(
                    delegate: delegate,
                    connectionID: connectionID,
                    timeout: timeout,
                    pingInterval: pingInterval
                )
            )
        }.flatMap { channel in
            RedisChannel.handshake(url: url, eventLoop: eventLoop) { arguments in
                let reply = eventLoop.makePromise(of: RESPValue.self)
                channel.writeAndFlush(SubscriberCommand.command(arguments, reply)).whenFailure { reply.fail($0) }
                return reply.futureResult
            }
            .map { channel }
            .flatMapError { error in
                channel.close(promise: nil)
                return eventLoop.makeFailedFuture(error)
            }
        }
    }
}
