import NIOCore
import Testing

@testable import SnorkyRedis

/// The subscription state machine without Redis, with an injected clock.
@Suite("Subscription state machine")
struct SubscriptionStateMachineTests {
    typealias Machine = SubscriptionStateMachine<Int>

    let t0 = NIODeadline.uptimeNanoseconds(1_000_000_000)
    let delay = TimeAmount.milliseconds(100)

    func connected() -> Machine {
        var machine = Machine(releaseDelay: delay)
        #expect(machine.connectionEstablished().isEmpty)
        return machine
    }

    func waiters(_ action: Machine.ConfirmAction) -> [Int] {
        switch action {
        case .none: []
        case .resume(let waiters), .resumeAndScheduleRelease(let waiters, _): waiters
        }
    }

    @Test func firstSubscriberSubscribesAndLaterOnesWaitForTheSameConfirmation() {
        var machine = connected()
        guard case .sendSubscribeAndWait = machine.subscribe("a", waiter: 1) else {
            Issue.record("expected SUBSCRIBE")
            return
        }
        guard case .wait = machine.subscribe("a", waiter: 2) else {
            Issue.record("expected to wait for the SUBSCRIBE in flight")
            return
        }
        #expect(!machine.isSubscribed("a"))
        #expect(waiters(machine.subscribeConfirmed("a", now: t0)) == [1, 2])
        #expect(machine.isSubscribed("a"))
        #expect(machine.references(of: "a") == 2)
        guard case .resume = machine.subscribe("a", waiter: 3) else {
            Issue.record("an active subscription returns at once")
            return
        }
        #expect(machine.references(of: "a") == 3)
    }

    @Test func lastUnsubscribeReleasesAfterTheDebounce() {
        var machine = connected()
        _ = machine.subscribe("a", waiter: 1)
        _ = machine.subscribe("a", waiter: 2)
        _ = machine.subscribeConfirmed("a", now: t0)
        #expect(machine.unsubscribe("a", now: t0) == .none)
        #expect(machine.unsubscribe("a", now: t0) == .scheduleRelease(at: t0 + delay))
        #expect(!machine.isSubscribed("a"))
        // A timer firing early (clock skew) re-arms instead of unsubscribing.
        #expect(machine.releaseTimerFired("a", now: t0 + .milliseconds(50)) == .scheduleRelease(at: t0 + delay))
        #expect(machine.releaseTimerFired("a", now: t0 + delay) == .sendUnsubscribe)
        #expect(machine.releaseTimerFired("a", now: t0 + delay) == .none)
        machine.unsubscribeConfirmed("a")
        #expect(machine.topics.isEmpty)
    }

    @Test func subscribingDuringTheDebounceCancelsTheRelease() {
        var machine = connected()
        _ = machine.subscribe("a", waiter: 1)
        _ = machine.subscribeConfirmed("a", now: t0)
        #expect(machine.unsubscribe("a", now: t0) == .scheduleRelease(at: t0 + delay))
        guard case .resume = machine.subscribe("a", waiter: 2) else {
            Issue.record("still subscribed upstream: return at once")
            return
        }
        #expect(machine.isSubscribed("a"))
        #expect(machine.releaseTimerFired("a", now: t0 + delay) == .none)
        #expect(machine.isSubscribed("a"))
        // Leaving again starts a fresh debounce from the new time.
        let t1 = t0 + .milliseconds(70)
        #expect(machine.unsubscribe("a", now: t1) == .scheduleRelease(at: t1 + delay))
        #expect(machine.releaseTimerFired("a", now: t0 + delay) == .scheduleRelease(at: t1 + delay))
        #expect(machine.releaseTimerFired("a", now: t1 + delay) == .sendUnsubscribe)
    }

    @Test func subscribingWhileUnsubscribeIsInFlightSubscribesAgain() {
        var machine = connected()
        _ = machine.subscribe("a", waiter: 1)
        _ = machine.subscribeConfirmed("a", now: t0)
        _ = machine.unsubscribe("a", now: t0)
        #expect(machine.releaseTimerFired("a", now: t0 + delay) == .sendUnsubscribe)
        guard case .sendSubscribeAndWait = machine.subscribe("a", waiter: 2) else {
            Issue.record("expected a new SUBSCRIBE after the UNSUBSCRIBE in flight")
            return
        }
        // Redis answers in order: first the old UNSUBSCRIBE, then the new SUBSCRIBE.
        machine.unsubscribeConfirmed("a")
        #expect(machine.references(of: "a") == 1)
        #expect(waiters(machine.subscribeConfirmed("a", now: t0 + delay)) == [2])
        #expect(machine.isSubscribed("a"))
    }

    @Test func lastReferenceLeavingBeforeConfirmationReleasesAfterIt() {
        var machine = connected()
        _ = machine.subscribe("a", waiter: 1)
        #expect(machine.unsubscribe("a", now: t0) == .none)
        #expect(machine.unsubscribe("a", now: t0) == .notSubscribed)
        let t1 = t0 + .milliseconds(5)
        guard case .resumeAndScheduleRelease(let resumed, let deadline) = machine.subscribeConfirmed("a", now: t1) else {
            Issue.record("expected the release to be scheduled at confirmation")
            return
        }
        #expect(resumed == [1])
        #expect(deadline == t1 + delay)
        #expect(machine.releaseTimerFired("a", now: deadline) == .sendUnsubscribe)
    }

    @Test func whileDisconnectedSubscribeReturnsAtOnceAndIsSentOnConnect() {
        var machine = Machine(releaseDelay: delay)
        guard case .resume = machine.subscribe("a", waiter: 1) else {
            Issue.record("disconnected: return at once")
            return
        }
        _ = machine.subscribe("a", waiter: 2)
        _ = machine.subscribe("b", waiter: 3)
        _ = machine.subscribe("c", waiter: 4)
        #expect(machine.unsubscribe("c", now: t0) == .none)
        #expect(machine.references(of: "a") == 2)
        #expect(Set(machine.connectionEstablished()) == ["a", "b"])
        // Subscribers arriving while the batch is in flight wait for it.
        guard case .wait = machine.subscribe("b", waiter: 5) else {
            Issue.record("expected to wait for the re-subscription")
            return
        }
        #expect(waiters(machine.subscribeConfirmed("b", now: t0)) == [5])
        #expect(machine.references(of: "b") == 2)
    }

    @Test func connectionLossKeepsReferencedTopicsAndForgetsReleasedOnes() {
        var machine = connected()
        _ = machine.subscribe("subscribed", waiter: 1)
        _ = machine.subscribeConfirmed("subscribed", now: t0)
        _ = machine.subscribe("inFlight", waiter: 2)
        _ = machine.subscribe("draining", waiter: 3)
        _ = machine.subscribeConfirmed("draining", now: t0)
        _ = machine.unsubscribe("draining", now: t0)
        _ = machine.subscribe("unsubscribing", waiter: 4)
        _ = machine.subscribeConfirmed("unsubscribing", now: t0)
        _ = machine.unsubscribe("unsubscribing", now: t0)
        _ = machine.releaseTimerFired("unsubscribing", now: t0 + delay)

        #expect(machine.connectionLost() == [2])
        #expect(!machine.isConnected)
        #expect(Set(machine.topics.keys) == ["subscribed", "inFlight"])
        #expect(machine.releaseTimerFired("draining", now: t0 + delay) == .none)
        // Stale confirmations of the old connection change nothing.
        #expect(waiters(machine.subscribeConfirmed("inFlight", now: t0)).isEmpty)
        #expect(!machine.isSubscribed("inFlight"))

        #expect(Set(machine.connectionEstablished()) == ["subscribed", "inFlight"])
        _ = machine.subscribeConfirmed("subscribed", now: t0)
        _ = machine.subscribeConfirmed("inFlight", now: t0)
        #expect(machine.isSubscribed("subscribed"))
        #expect(machine.isSubscribed("inFlight"))
    }

    @Test func unsubscribeWhileDisconnectedDropsTheTopic() {
        var machine = connected()
        _ = machine.subscribe("a", waiter: 1)
        _ = machine.subscribeConfirmed("a", now: t0)
        _ = machine.connectionLost()
        #expect(machine.unsubscribe("a", now: t0) == .none)
        #expect(machine.connectionEstablished().isEmpty)
    }

    @Test func shutdownResumesEveryWaiter() {
        var machine = connected()
        _ = machine.subscribe("a", waiter: 1)
        _ = machine.subscribe("a", waiter: 2)
        _ = machine.subscribe("b", waiter: 3)
        #expect(Set(machine.shutdown()) == [1, 2, 3])
        #expect(machine.topics.isEmpty)
    }

    @Test func unbalancedUnsubscribeIsReported() {
        var machine = connected()
        #expect(machine.unsubscribe("never", now: t0) == .notSubscribed)
    }
}

@Suite("Reconnect backoff")
struct ReconnectBackoffTests {
    @Test func doublesFromInitialToMaximum() {
        let backoff = ReconnectBackoff(initial: .milliseconds(50), maximum: .seconds(1), jitter: 0.5)
        let delays = (0..<8).map { backoff.delay(attempt: $0, random: 0) }
        #expect(
            delays == [50, 100, 200, 400, 800, 1000, 1000, 1000].map { TimeAmount.milliseconds($0) }
        )
        #expect(backoff.delay(attempt: 1000, random: 0) == .seconds(1))
    }

    @Test func jitterOnlyShortensWithinTheConfiguredFraction() {
        let backoff = ReconnectBackoff(initial: .milliseconds(100), maximum: .seconds(1), jitter: 0.5)
        #expect(backoff.delay(attempt: 0, random: 0.999_999) > .milliseconds(50))
        #expect(backoff.delay(attempt: 0, random: 0.5) == .milliseconds(75))
        #expect(backoff.delay(attempt: 10, random: 0.5) == .milliseconds(750))
        let none = ReconnectBackoff(initial: .milliseconds(100), maximum: .seconds(1), jitter: 0)
        #expect(none.delay(attempt: 0, random: 0.7) == .milliseconds(100))
    }
}
