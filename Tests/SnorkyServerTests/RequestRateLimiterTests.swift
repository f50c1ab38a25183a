import NIOCore
import SnorkyServer
import Testing

/// The per-connection token bucket, on a clock the tests move by hand.
@Suite("Request rate limiter")
struct RequestRateLimiterTests {
    private let start = NIODeadline.uptimeNanoseconds(1_000_000_000_000)

    /// How many of `count` requests at the same instant are allowed.
    private func allowed(_ count: Int, at now: NIODeadline, _ limiter: inout RequestRateLimiter) -> Int {
        (0..<count).count { _ in limiter.allow(at: now) }
    }

    @Test("a fresh connection may send its whole burst at once, and not one more")
    func burst() {
        var limiter = RequestRateLimiter(requestsPerSecond: 10, burst: 20, now: start)
        #expect(allowed(25, at: start, &limiter) == 20)
    }

    @Test("the bucket refills at the rate: one token per interval")
    func refill() {
        var limiter = RequestRateLimiter(requestsPerSecond: 10, burst: 20, now: start)
        #expect(allowed(20, at: start, &limiter) == 20)
        #expect(allowed(1, at: start + .milliseconds(99), &limiter) == 0)
        #expect(allowed(1, at: start + .milliseconds(100), &limiter) == 1)
        #expect(allowed(1, at: start + .milliseconds(100), &limiter) == 0)
        // Half a second refills five.
        #expect(allowed(10, at: start + .milliseconds(600), &limiter) == 5)
    }

    @Test("idle time refills the bucket only up to the burst")
    func refillIsCapped() {
        var limiter = RequestRateLimiter(requestsPerSecond: 10, burst: 20, now: start)
        #expect(allowed(5, at: start, &limiter) == 5)
        #expect(allowed(100, at: start + .seconds(3600), &limiter) == 20)
    }

    @Test("a client exactly at the rate is never refused, even with a burst of 1")
    func sustainedRate() {
        var limiter = RequestRateLimiter(requestsPerSecond: 100, burst: 1, now: start)
        let refused = (0..<10_000).filter { !limiter.allow(at: start + .milliseconds(Int64($0) * 10)) }
        #expect(refused.isEmpty)
        // Twice the rate: every other request is refused.
        var fast = RequestRateLimiter(requestsPerSecond: 100, burst: 1, now: start)
        let allowedFast = (0..<1_000).count { fast.allow(at: start + .milliseconds(Int64($0) * 5)) }
        #expect(allowedFast == 500)
    }

    @Test("a refused request takes no token")
    func refusalIsFree() {
        var limiter = RequestRateLimiter(requestsPerSecond: 1, burst: 1, now: start)
        #expect(allowed(1, at: start, &limiter) == 1)
        for step in 1...9 {
            #expect(allowed(1, at: start + .milliseconds(Int64(step) * 100), &limiter) == 0)
        }
        #expect(allowed(1, at: start + .seconds(1), &limiter) == 1)
    }

    @Test("extreme settings neither trap nor overflow")
    func extremes() {
        var fastest = RequestRateLimiter(requestsPerSecond: 1_000_000_000, burst: 1_000_000_000, now: start)
        #expect(allowed(1000, at: start, &fastest) == 1000)
        var slowest = RequestRateLimiter(requestsPerSecond: 1, burst: 1_000_000_000, now: start)
        #expect(allowed(1000, at: start, &slowest) == 1000)
        var single = RequestRateLimiter(requestsPerSecond: 1, burst: 1, now: start)
        #expect(allowed(2, at: start, &single) == 1)
    }
}
