import Testing
@testable import SnorkySupervisor

/// The restart decision with a hand-driven clock: no processes, no waiting.
@Suite struct RestartTrackerTests {
    /// A clock the test moves by hand.
    struct ManualInstant: InstantProtocol {
        var offset: Duration
        func advanced(by duration: Duration) -> ManualInstant { ManualInstant(offset: offset + duration) }
        func duration(to other: ManualInstant) -> Duration { other.offset - offset }
        static func < (lhs: ManualInstant, rhs: ManualInstant) -> Bool { lhs.offset < rhs.offset }
    }

    let start = ManualInstant(offset: .zero)
    let policy = RestartPolicy(
        initialBackoff: .milliseconds(100),
        maxBackoff: .seconds(5),
        crashLoopLimit: 5,
        crashLoopWindow: .seconds(30)
    )

    @Test func backoffDoublesWithEachCrashInTheWindow() {
        var tracker = RestartTracker<ManualInstant>(policy: policy)
        var now = start
        var delays: [RestartTracker<ManualInstant>.Action] = []
        for _ in 0..<4 {
            delays.append(tracker.processCrashed(at: now))
            now = now.advanced(by: .seconds(1))
        }
        #expect(delays == [
            .restart(after: .milliseconds(100)),
            .restart(after: .milliseconds(200)),
            .restart(after: .milliseconds(400)),
            .restart(after: .milliseconds(800)),
        ])
    }

    @Test func givesUpAtTheLimitWithinTheWindow() {
        var tracker = RestartTracker<ManualInstant>(policy: policy)
        var now = start
        for _ in 0..<4 {
            if case .giveUp = tracker.processCrashed(at: now) { Issue.record("gave up too early") }
            now = now.advanced(by: .seconds(7))  // crash 5 comes at 28 s: still inside 30 s
        }
        #expect(tracker.processCrashed(at: now) == .giveUp(crashes: 5, window: .seconds(30)))
    }

    @Test func crashesOutsideTheWindowAreForgotten() {
        var tracker = RestartTracker<ManualInstant>(policy: policy)
        var now = start
        // A crash every 8 s: never more than 4 inside any 30 s window.
        for crash in 0..<20 {
            let action = tracker.processCrashed(at: now)
            if case .giveUp = action { Issue.record("gave up at crash \(crash)") }
            now = now.advanced(by: .seconds(8))
        }
        // Quiet for a whole window: back to the first delay.
        now = now.advanced(by: .seconds(60))
        #expect(tracker.processCrashed(at: now) == .restart(after: .milliseconds(100)))
    }

    @Test func backoffIsCappedAtTheMaximum() {
        let generous = RestartPolicy(
            initialBackoff: .milliseconds(100),
            maxBackoff: .seconds(1),
            crashLoopLimit: 100,
            crashLoopWindow: .seconds(30)
        )
        var tracker = RestartTracker<ManualInstant>(policy: generous)
        var last = RestartTracker<ManualInstant>.Action.restart(after: .zero)
        for _ in 0..<70 {  // 2^69 would overflow if the doubling were not bounded
            last = tracker.processCrashed(at: start)
        }
        #expect(last == .restart(after: .seconds(1)))
    }

    @Test func aLimitOfOneGivesUpAtTheFirstCrash() {
        var tracker = RestartTracker<ManualInstant>(policy: RestartPolicy(crashLoopLimit: 1))
        #expect(tracker.processCrashed(at: start) == .giveUp(crashes: 1, window: .seconds(30)))
    }

    @Test func formatsDurationsForLogs() {
        #expect(formatDuration(.milliseconds(100)) == "100ms")
        #expect(formatDuration(.milliseconds(1600)) == "1.6s")
        #expect(formatDuration(.seconds(30)) == "30s")
    }

    @Test func decodesWaitStatuses() {
        #expect(ExitStatus(waitStatus: 3 << 8) == .exited(code: 3))
        #expect(ExitStatus(waitStatus: 9) == .signaled(signal: 9))
        #expect(ExitStatus(waitStatus: 9).description == "signal 9 (SIGKILL)")
    }
}
