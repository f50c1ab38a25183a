/// Counts a connection's protocol errors in a sliding window; a client that keeps sending
/// bad frames is closed (PROTOCOL.md section 3: default 100 errors in 10 s, close 1008).
/// A pure value type with the time passed in, so it is tested without a clock.
public struct ProtocolErrorBudget: Sendable {
    public var limit: Int
    public var window: Duration
    private var timestamps: [ContinuousClock.Instant] = []

    public init(limit: Int = 100, window: Duration = .seconds(10)) {
        self.limit = limit
        self.window = window
    }

    /// Records one error at `now`; returns true when the client is over its budget.
    public mutating func record(at now: ContinuousClock.Instant) -> Bool {
        let horizon = now - window
        if let firstRecent = timestamps.firstIndex(where: { $0 > horizon }) {
            timestamps.removeFirst(firstRecent)
        } else {
            timestamps.removeAll(keepingCapacity: true)
        }
        timestamps.append(now)
        return timestamps.count >= limit
    }
}
