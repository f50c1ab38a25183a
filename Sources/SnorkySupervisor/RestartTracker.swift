/// Decides what to do when a supervised process dies: restart it after a delay, or give
/// up because it is crash-looping.
///
/// A pure value: it never reads a clock or sleeps. The caller passes the current instant
/// (the injected clock), which makes every decision testable without processes or time.
///
/// The delay doubles with every crash still inside `crashLoopWindow`
/// (`initialBackoff`, 2×, 4×, … capped at `maxBackoff`), so a process that has been
/// quiet for a whole window is restarted promptly again. When the crashes inside the
/// window reach `crashLoopLimit`, the answer is `.giveUp`.
struct RestartTracker<Instant: InstantProtocol>: Sendable where Instant.Duration == Duration {
    enum Action: Equatable, Sendable {
        case restart(after: Duration)
        /// `crashes` happened within `window`: stop restarting.
        case giveUp(crashes: Int, window: Duration)
    }

    let policy: RestartPolicy
    /// Crash instants inside the window, oldest first.
    private(set) var recentCrashes: [Instant] = []

    init(policy: RestartPolicy) {
        self.policy = policy
    }

    /// Records a crash at `now` and says what to do about it.
    mutating func processCrashed(at now: Instant) -> Action {
        recentCrashes.removeAll { $0.duration(to: now) >= policy.crashLoopWindow }
        recentCrashes.append(now)
        let count = recentCrashes.count
        if count >= max(policy.crashLoopLimit, 1) {
            return .giveUp(crashes: count, window: policy.crashLoopWindow)
        }
        return .restart(after: backoff(forCrashNumber: count))
    }

    /// `initialBackoff * 2^(n-1)`, capped, without overflowing for large n.
    private func backoff(forCrashNumber n: Int) -> Duration {
        var delay = policy.initialBackoff
        var doublings = n - 1
        while doublings > 0 && delay < policy.maxBackoff {
            delay *= 2
            doublings -= 1
        }
        return min(delay, policy.maxBackoff)
    }
}
