public import NIOCore

/// One connection's request allowance: a token bucket holding up to `burst` requests,
/// refilled at `requestsPerSecond`. A client may send `burst` requests at once, then keep
/// going at the rate; a request that finds the bucket empty is over the limit (the
/// connection is closed with 4004, docs/protocol.md).
///
/// Kept as the bucket's equivalent "theoretical arrival time" (the generic cell rate
/// algorithm): one instant and two integer comparisons per request, no floating point and
/// no timer. A pure value type with the time passed in, so it is tested without a clock.
public struct RequestRateLimiter: Sendable {
    /// Time one request's token takes to refill.
    private let interval: Int64
    /// How far ahead of now the theoretical arrival time may run: `burst - 1` intervals.
    private let tolerance: Int64
    /// When the bucket would be full again if no other request came: each allowed request
    /// pushes it one interval further; it never lags behind now.
    private var theoreticalArrival: NIODeadline

    /// - Parameters:
    ///   - requestsPerSecond: the sustained rate, 1 to 1,000,000,000.
    ///   - burst: requests allowed at once on a full bucket, 1 to 1,000,000,000.
    ///   - now: the connection's start; the bucket starts full.
    public init(requestsPerSecond: Int, burst: Int, now: NIODeadline) {
        precondition((1...1_000_000_000).contains(requestsPerSecond), "requests per second out of range")
        precondition((1...1_000_000_000).contains(burst), "request burst out of range")
        interval = 1_000_000_000 / Int64(requestsPerSecond)
        // At most 1e9 * 1e9 ns: within Int64, and centuries ahead of any deadline.
        tolerance = interval * Int64(burst - 1)
        theoreticalArrival = now
    }

    /// Takes one request's token at `now`; returns false, taking nothing, when the bucket
    /// is empty.
    public mutating func allow(at now: NIODeadline) -> Bool {
        let arrival = max(theoreticalArrival, now)
        if arrival - now > .nanoseconds(tolerance) { return false }
        theoreticalArrival = arrival + .nanoseconds(interval)
        return true
    }
}
