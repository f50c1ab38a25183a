import NIOCore

enum SubscribeError: Error, CustomStringConvertible {
    case refused(String)
    case timedOut

    var description: String {
        switch self {
        case .refused(let reply): "subscribe refused: \(reply)"
        case .timedOut: "no reply to subscribe in 30 s"
        }
    }
}

/// One subscribing connection: subscribes to its channels, then checks and times every
/// bench message it receives.
final class SubscriberSession: WebSocketSession {
    private static let responseMarker: [UInt8] = Array(#""type":"response""#.utf8)
    private static let errorMarker: [UInt8] = Array(#""type":"error""#.utf8)

    private let channels: [UInt32]
    private let subscribeRequests: [[UInt8]]
    private let stats: LoopStats
    private let recorder: LoopRecorder
    private let ready: EventLoopPromise<Void>
    /// Highest sequence number seen per subscribed channel (same order as `channels`).
    private var lastSequence: [UInt64]
    private var primed: [Bool]
    private var awaitedResponses: Int
    private var isReady = false
    /// Set once `ready` is completed either way (a promise must be completed only once).
    private var isSettled = false
    private var subscribeTimer: Scheduled<Void>?

    init(channels: [Int], subscribeRequests: [[UInt8]], stats: LoopStats, recorder: LoopRecorder, ready: EventLoopPromise<Void>) {
        self.channels = channels.map { UInt32($0) }
        self.subscribeRequests = subscribeRequests
        self.stats = stats
        self.recorder = recorder
        self.ready = ready
        self.lastSequence = [UInt64](repeating: 0, count: channels.count)
        self.primed = [Bool](repeating: false, count: channels.count)
        self.awaitedResponses = subscribeRequests.count
    }

    func webSocketDidOpen(_ connection: WebSocketClientHandler) {
        guard !subscribeRequests.isEmpty else {
            // Nchan subscribes by the upgrade itself.
            becomeReady()
            return
        }
        var frames = connection.allocator.buffer(capacity: subscribeRequests.reduce(0) { $0 + $1.count + 8 })
        for request in subscribeRequests {
            request.withUnsafeBytes { connection.appendFrame(opcode: 0x1, payload: $0, to: &frames) }
        }
        connection.write(frames)
        connection.flush()
        // A subscribe the server never answers must not hang the run.
        if let context = connection.context {
            let session = NIOLoopBound(self, eventLoop: context.eventLoop)
            let closer = NIOLoopBound(connection, eventLoop: context.eventLoop)
            subscribeTimer = context.eventLoop.scheduleTask(in: .seconds(30)) {
                guard !session.value.isSettled else { return }
                session.value.failReady(SubscribeError.timedOut)
                closer.value.close()
            }
        }
    }

    private func becomeReady() {
        guard !isSettled else { return }
        isSettled = true
        isReady = true
        subscribeTimer?.cancel()
        subscribeTimer = nil
        ready.succeed()
    }

    private func failReady(_ error: any Error) {
        guard !isSettled else { return }
        isSettled = true
        ready.fail(error)
    }

    func webSocketDidReceive(_ bytes: UnsafeRawBufferPointer, on connection: WebSocketClientHandler) {
        guard isReady else {
            if bytes.containsBytes(Self.responseMarker) {
                awaitedResponses -= 1
                if awaitedResponses == 0 { becomeReady() }
            } else if bytes.containsBytes(Self.errorMarker) {
                failReady(SubscribeError.refused(String(decoding: bytes.prefix(200), as: UTF8.self)))
                connection.close()
            }
            return
        }
        guard let fields = BenchPayload.find(in: bytes),
              let slot = channels.firstIndex(of: fields.channel)
        else {
            stats.unrecognized.wrappingAdd(1, ordering: .relaxed)
            return
        }
        switch fields.kind {
        case .warmup:
            if !primed[slot] {
                primed[slot] = true
                stats.primed.wrappingAdd(1, ordering: .relaxed)
            }
        case .measured:
            let now = monotonicNanos()
            recorder.recordLatency(nanos: now &- fields.sentNanos)
            stats.delivered.wrappingAdd(1, ordering: .relaxed)
            stats.lastDeliveryNanos.store(now, ordering: .relaxed)
            let last = lastSequence[slot]
            if fields.sequence > last {
                if fields.sequence > last + 1 {
                    stats.gaps.wrappingAdd(Int(fields.sequence - last - 1), ordering: .relaxed)
                }
                lastSequence[slot] = fields.sequence
            } else {
                stats.outOfOrder.wrappingAdd(1, ordering: .relaxed)
            }
        }
    }

    func webSocketDidClose(error: (any Error)?) {
        if isReady {
            stats.disconnects.wrappingAdd(1, ordering: .relaxed)
        } else {
            failReady(error ?? WebSocketClientError.closedBeforeOpen)
        }
    }
}
