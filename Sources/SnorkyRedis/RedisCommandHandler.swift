import NIOCore

/// An encoded request and the promises of its replies, in order (several for a pipeline).
struct RedisRequest: Sendable {
    enum Promises: Sendable {
        case one(EventLoopPromise<RESPValue>)
        case many([EventLoopPromise<RESPValue>])
    }

    var bytes: ByteBuffer
    var promises: Promises

    func fail(_ error: any Error) {
        switch promises {
        case .one(let promise): promise.fail(error)
        case .many(let promises): for promise in promises { promise.fail(error) }
        }
    }
}

/// Request/response over one connection: writes requests and completes their promises in
/// FIFO order as replies arrive (Redis answers in order, so pipelining is free).
///
/// All state is confined to the channel's event loop. One timer watches the oldest
/// outstanding reply; when it is late the connection is in an unknown state, so every
/// outstanding request fails with `.timeout` and the channel is closed.
final class RedisCommandHandler: ChannelDuplexHandler {
    typealias InboundIn = RESPValue
    typealias OutboundIn = RedisRequest
    typealias OutboundOut = ByteBuffer

    private struct Outstanding {
        let promise: EventLoopPromise<RESPValue>
        let deadline: NIODeadline
    }

    private var outstanding = CircularBuffer<Outstanding>(initialCapacity: 16)
    private var isOpen = true
    private var timer: Scheduled<Void>?
    private let timeout: TimeAmount?

    init(timeout: TimeAmount?) {
        self.timeout = timeout
    }

    func write(context: ChannelHandlerContext, data: NIOAny, promise: EventLoopPromise<Void>?) {
        let request = unwrapOutboundIn(data)
        guard isOpen else {
            request.fail(RedisError.connectionClosed)
            promise?.fail(RedisError.connectionClosed)
            return
        }
        let deadline = timeout.map { NIODeadline.now() + $0 } ?? .distantFuture
        switch request.promises {
        case .one(let reply):
            outstanding.append(Outstanding(promise: reply, deadline: deadline))
        case .many(let replies):
            for reply in replies { outstanding.append(Outstanding(promise: reply, deadline: deadline)) }
        }
        context.write(wrapOutboundOut(request.bytes), promise: promise)
        armTimer(context: context)
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        let value = unwrapInboundIn(data)
        guard let head = outstanding.popFirst() else {
            failAll(RedisError.protocolError("unexpected reply \(value)"), context: context)
            context.close(promise: nil)
            return
        }
        head.promise.succeed(value)
    }

    func channelInactive(context: ChannelHandlerContext) {
        failAll(RedisError.connectionClosed, context: context)
        context.fireChannelInactive()
    }

    func handlerRemoved(context: ChannelHandlerContext) {
        failAll(RedisError.connectionClosed, context: context)
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        let redisError = (error as? RedisError) ?? RedisError(.connectionClosed, "\(error)")
        failAll(redisError, context: context)
        context.close(promise: nil)
    }

    private func failAll(_ error: RedisError, context: ChannelHandlerContext) {
        isOpen = false
        timer?.cancel()
        timer = nil
        while let next = outstanding.popFirst() {
            next.promise.fail(error)
        }
    }

    private func armTimer(context: ChannelHandlerContext) {
        guard timer == nil, let head = outstanding.first, head.deadline != .distantFuture else { return }
        timer = context.eventLoop.assumeIsolated().scheduleTask(deadline: head.deadline) { [self] in
            timer = nil
            guard let head = outstanding.first else { return }
            if head.deadline <= .now() {
                failAll(RedisError.timeout("no reply within \(timeout.map { "\($0)" } ?? "-")"), context: context)
                context.close(promise: nil)
            } else {
                armTimer(context: context)
            }
        }
    }
}
