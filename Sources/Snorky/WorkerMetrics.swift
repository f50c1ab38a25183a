import Synchronization

/// One worker's counters, read by `GET /metrics`.
///
/// Every update is a relaxed atomic add: no lock, no allocation. Hot paths count per batch
/// (a fan-out adds its subscriber count once per event loop), not per client. Values
/// that already live elsewhere (open connections, topics, the bus's reconnects) are not
/// duplicated here; the exporter reads them where they are.
public final class WorkerMetrics: Sendable {
    /// Text messages received from WebSocket clients.
    public let framesReceived = MetricCounter()
    /// Frames queued to connections: publications, responses, direct messages, errors
    /// (backend API replies included: they travel the same queue).
    public let framesSent = MetricCounter()
    /// Publication frames fanned out to local subscribers (one per subscriber).
    public let deliveries = MetricCounter()
    /// Protocol errors, the ones counted against a connection's error budget.
    public let protocolErrors = MetricCounter()
    /// Messages this worker published on the bus (publications and direct messages).
    public let busPublished = MetricCounter()
    /// Publishes the bus refused (unavailable, too large).
    public let busPublishFailures = MetricCounter()
    /// Messages the bus delivered to this worker (publications and direct messages).
    public let busReceived = MetricCounter()
    /// Bus probes (sent to this worker's own inbox) that did not come back in time.
    public let busProbeFailures = MetricCounter()
    /// Client subscriptions to topics on this worker (one client on three topics is three).
    public let subscriptions = MetricGauge()
    /// Connections the server closed (not echoes of a client's close), by close code.
    public let closes = KeyedCounters(KeyedCounters.closeReasons)
    /// `POST /backend` requests by response status.
    public let backendRequests = KeyedCounters(KeyedCounters.backendStatuses)
    /// Round trips of the bus probes.
    public let busRoundTrip = DurationHistogram(bounds: DurationHistogram.busRoundTripBounds)

    public init() {}
}

/// A monotonically increasing count.
public final class MetricCounter: Sendable {
    private let count = Atomic<Int>(0)

    public init() {}

    public func increment() { add(1) }

    public func add(_ amount: Int) {
        count.wrappingAdd(amount, ordering: .relaxed)
    }

    public var value: Int { count.load(ordering: .relaxed) }
}

/// A count that goes up and down.
public final class MetricGauge: Sendable {
    private let count = Atomic<Int>(0)

    public init() {}

    public func add(_ amount: Int) {
        count.wrappingAdd(amount, ordering: .relaxed)
    }

    public var value: Int { count.load(ordering: .relaxed) }
}

/// Counts by a numeric key (a close code, an HTTP status) from a fixed list, each
/// exported under its label; keys outside the list count as `other`. Fixed, so recording
/// is one atomic add and the set of exported series never grows.
public final class KeyedCounters: Sendable {
    public let keys: [(key: Int, label: String)]
    private let counters: [MetricCounter]
    private let other = MetricCounter()

    public init(_ keys: [(key: Int, label: String)]) {
        self.keys = keys
        counters = keys.map { _ in MetricCounter() }
    }

    public func record(_ key: Int) {
        if let index = keys.firstIndex(where: { $0.key == key }) {
            counters[index].increment()
        } else {
            other.increment()
        }
    }

    /// Every label with its count, in list order, `other` last.
    public var values: [(label: String, count: Int)] {
        zip(keys, counters).map { ($0.label, $1.value) } + [("other", other.value)]
    }

    /// The close codes Snorky sends, labelled by what they mean.
    public static let closeReasons: [(key: Int, label: String)] = [
        (1000, "normal"),
        (1001, "going_away"),
        (1002, "protocol_error"),
        (1003, "unsupported_data"),
        (1007, "invalid_payload"),
        (1008, "policy_violation"),
        (1009, "message_too_big"),
        (1011, "internal_error"),
        (4001, "slow_consumer"),
        (4002, "keepalive_timeout"),
        (4003, "too_many_connections"),
        (4004, "rate_limited"),
    ]

    /// The statuses the backend API answers with.
    public static let backendStatuses: [(key: Int, label: String)] =
        [200, 400, 401, 404, 405, 413, 500, 503, 504].map { ($0, "\($0)") }
}

/// A histogram of durations with fixed bucket bounds, in seconds (Prometheus's base unit).
public final class DurationHistogram: Sendable {
    /// 0.5 ms to 1 s: a local Redis answers in well under a millisecond; a probe that takes
    /// a second has failed.
    public static let busRoundTripBounds: [Double] = [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1]

    /// Upper bounds of the buckets, ascending; a last `+Inf` bucket is implied.
    public let bounds: [Double]
    /// Observations per bucket (not cumulative); one more than `bounds` for `+Inf`.
    private let buckets: [MetricCounter]
    private let count = MetricCounter()
    private let sumNanoseconds = MetricCounter()
    private let lastNanoseconds = Atomic<Int>(-1)

    public init(bounds: [Double]) {
        self.bounds = bounds.sorted()
        buckets = (0...bounds.count).map { _ in MetricCounter() }
    }

    public func observe(_ duration: Duration) {
        let (seconds, attoseconds) = duration.components
        let nanoseconds = Int(seconds) * 1_000_000_000 + Int(attoseconds / 1_000_000_000)
        let value = Double(nanoseconds) / 1e9
        let index = bounds.firstIndex { value <= $0 } ?? bounds.count
        buckets[index].increment()
        sumNanoseconds.add(nanoseconds)
        count.increment()
        lastNanoseconds.store(nanoseconds, ordering: .relaxed)
    }

    /// Cumulative counts per bound (`le`), the last one for `+Inf`, which equals `count`.
    public var cumulativeCounts: [Int] {
        var total = 0
        return buckets.map { bucket in
            total += bucket.value
            return total
        }
    }

    public var observationCount: Int { count.value }
    public var sumSeconds: Double { Double(sumNanoseconds.value) / 1e9 }

    /// The last observation in seconds; nil before the first.
    public var lastSeconds: Double? {
        let last = lastNanoseconds.load(ordering: .relaxed)
        return last < 0 ? nil : Double(last) / 1e9
    }
}
