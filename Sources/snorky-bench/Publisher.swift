import NIOCore
import NIOHTTP1
import Synchronization

/// Total deliveries expected and made so far, readable from any thread: the progress line
/// and the "as fast as delivery keeps up" publishers use it.
final class DeliveryGauge: Sendable {
    let loops: [LoopStats]
    /// Deliveries made by subscribers in helper processes, as last reported.
    let remoteDelivered = Atomic<Int>(0)
    /// Deliveries the measured publications sent so far should cause.
    let expected = Atomic<Int>(0)

    init(loops: [LoopStats]) {
        self.loops = loops
    }

    var delivered: Int {
        loops.reduce(remoteDelivered.load(ordering: .relaxed)) { $0 + $1.delivered.load(ordering: .relaxed) }
    }

    var outstanding: Int {
        expected.load(ordering: .relaxed) - delivered
    }
}

/// What the publishers need to know once every subscriber is ready.
struct MeasurePlan: Sendable {
    /// Ready subscriptions per channel.
    var subscribers: [Int]
    var startNanos: UInt64
    var endNanos: UInt64
    /// This publisher's share of `--messages`, or nil for no limit.
    var quota: Int?
    /// This publisher's publications per second, or 0 for "as fast as delivery keeps up".
    var rate: Double
    /// In "as fast as possible" mode: deliveries allowed to be outstanding across all publishers.
    var outstandingLimit: Int
    /// Most messages written in one go (one flush).
    var burst: Int
    /// After `endNanos`, how long to wait for outstanding replies before giving up on them.
    var replyTimeoutNanos: UInt64
}

/// How a publisher writes: WebSocket `pubsub.publish` or an HTTP POST.
protocol PublishTransport: AnyObject {
    var isWritable: Bool { get }
    /// Queues one publication (no flush).
    func send(_ fields: BenchPayload.Fields)
    func flush()
    func close()
}

/// One publisher's schedule: which channels it owns (so each channel has a single source
/// and its sequence numbers arrive in order), the sending rate, the in-flight window and the
/// warmup queue. Lives on one event loop; driven by a timer and by replies.
final class PublisherCore {
    let counters: PublisherCounters
    private let gauge: DeliveryGauge
    private let ownedChannels: [Int]
    private var sequences: [UInt64]
    private var cursor = 0
    private let maxInFlight: Int
    private(set) var inFlight = 0
    private var warmupQueue: [Int] = []
    private var warmupIndex = 0
    var transport: (any PublishTransport)?

    private enum Phase {
        case idle
        case measuring(MeasurePlan)
        case draining
        case done
    }

    private var phase = Phase.idle
    private var sentMeasured = 0
    /// While draining: past this, replies still outstanding are given up on.
    private var replyDeadline = UInt64.max
    private var timer: RepeatedTask?
    private var finished: EventLoopPromise<Void>?
    private var subscribers: [Int] = []

    init(ownedChannels: [Int], maxInFlight: Int, counters: PublisherCounters, gauge: DeliveryGauge) {
        self.ownedChannels = ownedChannels
        self.sequences = [UInt64](repeating: 0, count: ownedChannels.count)
        self.maxInFlight = maxInFlight
        self.counters = counters
        self.gauge = gauge
    }

    /// One warmup message to every owned channel, sent as the window allows.
    func queueWarmups() {
        if warmupIndex >= warmupQueue.count {
            warmupQueue.removeAll(keepingCapacity: true)
            warmupIndex = 0
        }
        warmupQueue.append(contentsOf: ownedChannels)
        pump()
    }

    func startMeasuring(_ plan: MeasurePlan, eventLoop: any EventLoop) -> EventLoopFuture<Void> {
        let promise = eventLoop.makePromise(of: Void.self)
        finished = promise
        subscribers = plan.subscribers
        if ownedChannels.isEmpty || plan.quota == 0 {
            phase = .done
            promise.succeed()
            return promise.futureResult
        }
        phase = .measuring(plan)
        let start = plan.startNanos
        let now = monotonicNanos()
        let delay = start > now ? TimeAmount.nanoseconds(Int64(start - now)) : .zero
        // A millisecond tick: fine-grained enough that a fixed rate goes out smoothly (a few
        // messages per flush at most at moderate rates), coarse enough to cost nothing.
        let core = NIOLoopBound(self, eventLoop: eventLoop)
        timer = eventLoop.scheduleRepeatedTask(initialDelay: delay, delay: .milliseconds(1)) { _ in
            core.value.pump()
        }
        return promise.futureResult
    }

    /// Writes whatever is due and allowed, then flushes once.
    func pump() {
        guard let transport, transport.isWritable else {
            if case .draining = phase { finish() }
            return
        }
        var wrote = false
        while warmupIndex < warmupQueue.count, inFlight < maxInFlight {
            let channel = warmupQueue[warmupIndex]
            warmupIndex += 1
            transport.send(.init(kind: .warmup, channel: UInt32(channel), sequence: 0, sentNanos: monotonicNanos()))
            inFlight += 1
            counters.warmupsSent.wrappingAdd(1, ordering: .relaxed)
            wrote = true
        }
        if case .measuring(let plan) = phase {
            let now = monotonicNanos()
            if now >= plan.endNanos || sentMeasured >= (plan.quota ?? .max) {
                phase = .draining
                replyDeadline = now + plan.replyTimeoutNanos
            } else if now >= plan.startNanos {
                var due: Int
                if plan.rate > 0 {
                    // Catch up to the schedule: message k is due at start + k/rate.
                    let elapsed = Double(now - plan.startNanos) / 1e9
                    due = Int(elapsed * plan.rate) + 1 - sentMeasured
                } else {
                    due = gauge.outstanding < plan.outstandingLimit ? plan.burst : 0
                }
                due = min(due, plan.burst, (plan.quota ?? .max) - sentMeasured)
                // A full window is how "as fast as possible" is paced; at a fixed rate it means
                // the server answers too slowly for the schedule.
                if plan.rate > 0, due > 0, inFlight >= maxInFlight {
                    counters.stalls.wrappingAdd(1, ordering: .relaxed)
                }
                while due > 0, inFlight < maxInFlight {
                    let slot = cursor
                    cursor = cursor + 1 == ownedChannels.count ? 0 : cursor + 1
                    sequences[slot] += 1
                    let channel = ownedChannels[slot]
                    transport.send(.init(
                        kind: .measured, channel: UInt32(channel), sequence: sequences[slot], sentNanos: monotonicNanos()))
                    inFlight += 1
                    sentMeasured += 1
                    due -= 1
                    wrote = true
                    counters.sent.wrappingAdd(1, ordering: .relaxed)
                    gauge.expected.wrappingAdd(subscribers[channel], ordering: .relaxed)
                }
            }
        }
        if wrote { transport.flush() }
        if case .draining = phase, inFlight == 0 || monotonicNanos() > replyDeadline { finish() }
    }

    /// A reply arrived. `failedChannel` names the channel of a measured publication the
    /// server refused; its deliveries are no longer expected.
    func didReply(failedChannel: Int?, error: String?) {
        inFlight = max(0, inFlight - 1)
        counters.replies.wrappingAdd(1, ordering: .relaxed)
        if let error { counters.noteError(error) }
        if let failedChannel, failedChannel < subscribers.count {
            counters.failed.wrappingAdd(1, ordering: .relaxed)
            gauge.expected.wrappingSubtract(subscribers[failedChannel], ordering: .relaxed)
        }
        pump()
    }

    /// The connection is gone: nothing in flight will be answered.
    func connectionClosed(error: (any Error)?) {
        if let error { counters.noteError("publisher connection closed: \(error)") }
        inFlight = 0
        if case .measuring = phase { phase = .draining }
        if case .draining = phase { finish() }
    }

    private func finish() {
        timer?.cancel()
        timer = nil
        phase = .done
        finished?.succeed()
        finished = nil
    }
}

/// A Sendable handle the orchestrating task uses to drive a publisher on its loop.
final class PublisherHandle: Sendable {
    let eventLoop: any EventLoop
    let counters: PublisherCounters
    private let core: NIOLoopBoundBox<PublisherCore?>

    init(eventLoop: any EventLoop, counters: PublisherCounters, core: NIOLoopBoundBox<PublisherCore?>) {
        self.eventLoop = eventLoop
        self.counters = counters
        self.core = core
    }

    func queueWarmups() {
        let core = self.core
        eventLoop.execute { core.value?.queueWarmups() }
    }

    func startMeasuring(_ plan: MeasurePlan) -> EventLoopFuture<Void> {
        let core = self.core
        let eventLoop = self.eventLoop
        return eventLoop.flatSubmit {
            guard let publisher = core.value else { return eventLoop.makeSucceededVoidFuture() }
            return publisher.startMeasuring(plan, eventLoop: eventLoop)
        }
    }

    func close() {
        let core = self.core
        eventLoop.execute { core.value?.transport?.close() }
    }
}

// MARK: - WebSocket publisher (Snorky `pubsub.publish`)

/// Publishes over a WebSocket with `pubsub.publish`. The `callId` of each request is the
/// channel index (`"w"` for warmups), so an error reply says which publication failed.
final class WebSocketPublisherSession: WebSocketSession, PublishTransport {
    private static let responseMarker: [UInt8] = Array(#""type":"response""#.utf8)
    private static let errorMarker: [UInt8] = Array(#""type":"error""#.utf8)
    private static let callIDMarker: [UInt8] = Array(#""callId":"#.utf8)

    private let workload: Workload
    private let core: PublisherCore
    private let opened: EventLoopPromise<Void>
    private var connection: WebSocketClientHandler?
    private var batch: ByteBuffer
    private var scratch: ByteBuffer
    private var isSettled = false

    init(workload: Workload, core: PublisherCore, opened: EventLoopPromise<Void>) {
        self.workload = workload
        self.core = core
        self.opened = opened
        self.batch = ByteBufferAllocator().buffer(capacity: 64 * 1024)
        self.scratch = ByteBufferAllocator().buffer(capacity: 4096)
    }

    var isWritable: Bool { connection?.isOpen ?? false }

    func send(_ fields: BenchPayload.Fields) {
        guard let connection else { return }
        scratch.clear()
        if fields.kind == .warmup {
            // Same request, but a callId that no measured publication uses.
            workload.writeClientPublish(fields, into: &scratch)
            let idStart = scratch.writerIndex - "\(fields.channel)}}".utf8.count
            scratch.moveWriterIndex(to: idStart)
            scratch.writeString(#""w"}}"#)
        } else {
            workload.writeClientPublish(fields, into: &scratch)
        }
        scratch.withUnsafeReadableBytes { connection.appendFrame(opcode: 0x1, payload: $0, to: &batch) }
    }

    func flush() {
        guard let connection, batch.readableBytes > 0 else { return }
        connection.write(batch)
        connection.flush()
        // The written buffer is now owned by the channel; start a fresh one.
        batch = connection.allocator.buffer(capacity: 64 * 1024)
    }

    func close() {
        connection?.close()
    }

    func webSocketDidOpen(_ connection: WebSocketClientHandler) {
        self.connection = connection
        core.transport = self
        isSettled = true
        opened.succeed()
    }

    func webSocketDidReceive(_ bytes: UnsafeRawBufferPointer, on connection: WebSocketClientHandler) {
        if bytes.containsBytes(Self.responseMarker) {
            core.didReply(failedChannel: nil, error: nil)
        } else if bytes.containsBytes(Self.errorMarker) {
            let text = String(decoding: bytes.prefix(300), as: UTF8.self)
            core.didReply(failedChannel: Self.callID(in: text), error: text)
        }
    }

    /// The numeric callId of an error reply (nil for a warmup's `"w"`).
    private static func callID(in text: String) -> Int? {
        guard let range = text.range(of: #""callId":"#) else { return nil }
        let digits = text[range.upperBound...].prefix { $0.isNumber }
        return Int(digits)
    }

    func webSocketDidClose(error: (any Error)?) {
        connection = nil
        if !isSettled {
            isSettled = true
            opened.fail(error ?? WebSocketClientError.closedBeforeOpen)
        }
        core.connectionClosed(error: error)
    }
}

// MARK: - HTTP publisher (Snorky backend API, Nchan publisher location)

/// Publishes with HTTP/1.1 POSTs on one keep-alive connection, pipelining up to the core's
/// window. Replies come back in request order, so a FIFO says which publication each
/// answers.
final class HTTPPublisherHandler: ChannelInboundHandler, PublishTransport {
    typealias InboundIn = HTTPClientResponsePart
    typealias OutboundOut = HTTPClientRequestPart

    private static let errorMarker: [UInt8] = Array(#""type":"error""#.utf8)

    private let workload: Workload
    private let core: PublisherCore
    private let opened: EventLoopPromise<Void>
    private var context: ChannelHandlerContext?
    /// Channel of each request awaiting its reply; -1 for warmups.
    private var awaiting = CircularBuffer<Int32>(initialCapacity: 64)
    private var status: HTTPResponseStatus = .ok
    private var body: ByteBuffer?
    private var isSettled = false
    private let hostHeader: String

    init(workload: Workload, core: PublisherCore, opened: EventLoopPromise<Void>) {
        self.workload = workload
        self.core = core
        self.opened = opened
        self.hostHeader = "\(workload.settings.host):\(workload.settings.publishPort)"
    }

    var isWritable: Bool { context?.channel.isActive ?? false }

    func handlerAdded(context: ChannelHandlerContext) {
        self.context = context
        if context.channel.isActive { becomeOpen() }
    }

    func channelActive(context: ChannelHandlerContext) {
        becomeOpen()
        context.fireChannelActive()
    }

    private func becomeOpen() {
        guard !isSettled else { return }
        isSettled = true
        core.transport = self
        opened.succeed()
    }

    func send(_ fields: BenchPayload.Fields) {
        guard let context else { return }
        let request = workload.httpPublishRequest(fields, allocator: context.channel.allocator)
        var headers = HTTPHeaders()
        headers.add(name: "Host", value: hostHeader)
        headers.add(name: "Content-Length", value: String(request.body.readableBytes))
        switch workload.settings.target {
        case .snorky:
            headers.add(name: "Content-Type", value: "application/json")
            headers.add(name: "X-Backend-Key", value: workload.settings.backendKey)
        case .nchan:
            headers.add(name: "Content-Type", value: "text/plain")
        }
        let head = HTTPRequestHead(version: .http1_1, method: .POST, uri: request.uri, headers: headers)
        context.write(wrapOutboundOut(.head(head)), promise: nil)
        context.write(wrapOutboundOut(.body(.byteBuffer(request.body))), promise: nil)
        context.write(wrapOutboundOut(.end(nil)), promise: nil)
        awaiting.append(fields.kind == .warmup ? -1 : Int32(fields.channel))
    }

    func flush() {
        context?.flush()
    }

    func close() {
        context?.close(promise: nil)
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        switch unwrapInboundIn(data) {
        case .head(let head):
            status = head.status
            body = nil
        case .body(var chunk):
            // Only the start of a reply is kept: enough to spot an RPC error and quote it.
            if body == nil { body = context.channel.allocator.buffer(capacity: 512) }
            if body!.readableBytes < 512 {
                body!.writeBuffer(&chunk)
            }
        case .end:
            let channel = awaiting.popFirst() ?? -1
            let text = body.map { String(buffer: $0) } ?? ""
            let failed: Bool
            if !(200..<300).contains(status.code) {
                failed = true
            } else if workload.settings.target == .snorky {
                // The backend API answers 200 with the service's envelope, error or not.
                failed = body?.withUnsafeReadableBytes { $0.containsBytes(Self.errorMarker) } ?? false
            } else {
                failed = false
            }
            if failed {
                core.didReply(
                    failedChannel: channel >= 0 ? Int(channel) : nil,
                    error: "HTTP \(status.code) \(text)")
            } else {
                core.didReply(failedChannel: nil, error: nil)
            }
        }
    }

    func channelInactive(context: ChannelHandlerContext) {
        self.context = nil
        if !isSettled {
            isSettled = true
            opened.fail(WebSocketClientError.closedBeforeOpen)
        }
        core.connectionClosed(error: awaiting.isEmpty ? nil : HTTPPublisherError.closedWithRepliesOutstanding(awaiting.count))
        context.fireChannelInactive()
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        core.counters.noteError("publisher: \(error)")
        context.close(promise: nil)
    }
}

enum HTTPPublisherError: Error, CustomStringConvertible {
    case closedWithRepliesOutstanding(Int)

    var description: String {
        switch self {
        case .closedWithRepliesOutstanding(let count): "server closed the connection with \(count) replies outstanding"
        }
    }
}
