import Histogram
import NIOCore
import Synchronization

/// Publish-to-delivery latencies in microseconds, up to a minute (slower deliveries are
/// recorded as a minute: by then the run has failed anyway).
enum LatencyHistogram {
    static let highestMicros: UInt64 = 60_000_000

    static func make() -> Histogram<UInt64> {
        Histogram(lowestDiscernibleValue: 1, highestTrackableValue: highestMicros, numberOfSignificantValueDigits: .three)
    }
}

/// Per-event-loop state that only code on that loop touches: sessions hold it directly, so
/// recording a latency is a plain array increment.
final class LoopRecorder {
    var latency = LatencyHistogram.make()

    @inline(__always)
    func recordLatency(nanos: UInt64) {
        let micros = min(max(nanos / 1000, 1), LatencyHistogram.highestMicros)
        latency.record(micros)
    }
}

/// The counters of one event loop. Counters are atomics so the progress line and the
/// "as fast as delivery keeps up" publisher can read them from other threads; each is only
/// written by its own loop, so the adds are uncontended.
final class LoopStats: Sendable {
    let eventLoop: any EventLoop
    /// Measured messages received (duplicates included).
    let delivered = Atomic<Int>(0)
    /// Sequence numbers skipped on a subscription: messages lost so far (or late, if they
    /// turn up out of order).
    let gaps = Atomic<Int>(0)
    /// Messages whose sequence number was not above the last one seen on that subscription.
    let outOfOrder = Atomic<Int>(0)
    /// Subscriptions (connection, channel) that have seen their first warmup message.
    let primed = Atomic<Int>(0)
    /// Frames after subscribing that carried no bench payload.
    let unrecognized = Atomic<Int>(0)
    /// Subscribers whose connection ended after they were ready.
    let disconnects = Atomic<Int>(0)
    let lastDeliveryNanos = Atomic<UInt64>(0)
    let recorder: NIOLoopBoundBox<LoopRecorder>

    init(eventLoop: any EventLoop) {
        self.eventLoop = eventLoop
        self.recorder = NIOLoopBoundBox.makeBoxSendingValue(LoopRecorder(), eventLoop: eventLoop)
    }

    var counts: DeliveryCounts {
        DeliveryCounts(
            delivered: delivered.load(ordering: .relaxed),
            gaps: gaps.load(ordering: .relaxed),
            outOfOrder: outOfOrder.load(ordering: .relaxed),
            primed: primed.load(ordering: .relaxed),
            unrecognized: unrecognized.load(ordering: .relaxed),
            disconnects: disconnects.load(ordering: .relaxed),
            lastDeliveryNanos: lastDeliveryNanos.load(ordering: .relaxed)
        )
    }

    /// A copy of the loop's histogram, taken on the loop.
    func latencySnapshot() -> EventLoopFuture<Histogram<UInt64>> {
        let recorder = self.recorder
        return eventLoop.submit { recorder.value.latency }
    }
}

/// Delivery counters summed over loops (and over helper processes).
struct DeliveryCounts: Codable, Sendable, Equatable {
    var delivered = 0
    var gaps = 0
    var outOfOrder = 0
    var primed = 0
    var unrecognized = 0
    var disconnects = 0
    var lastDeliveryNanos: UInt64 = 0

    static func + (lhs: DeliveryCounts, rhs: DeliveryCounts) -> DeliveryCounts {
        DeliveryCounts(
            delivered: lhs.delivered + rhs.delivered,
            gaps: lhs.gaps + rhs.gaps,
            outOfOrder: lhs.outOfOrder + rhs.outOfOrder,
            primed: lhs.primed + rhs.primed,
            unrecognized: lhs.unrecognized + rhs.unrecognized,
            disconnects: lhs.disconnects + rhs.disconnects,
            lastDeliveryNanos: max(lhs.lastDeliveryNanos, rhs.lastDeliveryNanos)
        )
    }
}

/// Counters of one publisher, readable from any thread.
final class PublisherCounters: Sendable {
    /// Measured publications written.
    let sent = Atomic<Int>(0)
    /// Replies received (success or failure), measured and warmup alike.
    let replies = Atomic<Int>(0)
    /// Measured publications the server refused or answered with an error.
    let failed = Atomic<Int>(0)
    let warmupsSent = Atomic<Int>(0)
    /// Times the publisher had messages due but its in-flight window was full.
    let stalls = Atomic<Int>(0)
    /// The first error reply, for the report.
    let firstError = Mutex<String?>(nil)

    func noteError(_ text: String) {
        firstError.withLock { if $0 == nil { $0 = String(text.prefix(300)) } }
    }
}
