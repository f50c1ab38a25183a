import NIOCore

/// The bus's upstream subscriptions: per-topic reference counts, SUBSCRIBE/UNSUBSCRIBE in
/// flight, the debounced release, and what a lost or regained connection means for each.
///
/// A pure value type: no I/O, no clock of its own (callers pass `now`), no timers. Every
/// transition returns the action the caller must carry out. `Waiter` is whatever resumes a
/// `subscribe` call (a continuation in the bus, an integer in tests).
///
/// Per topic (absent from `topics` = unsubscribed):
///
/// ```
///            subscribe (connected)                 confirmed
/// (absent) ───────────────────────► subscribing ───────────► subscribed ◄─┐
///    │ subscribe (disconnected)         │ ▲ subscribe             │ last   │ subscribe
///    ▼                                  │ │                       ▼ unsub  │
/// pending ── connection established ────┘ └──── unsubscribing ◄─ draining ─┘
///                                                   │  (timer)
///                        unsubscribe confirmed      ▼
///                                                (absent)
/// ```
struct SubscriptionStateMachine<Waiter> {
    enum TopicState {
        /// Wanted while disconnected: SUBSCRIBE goes out when the connection is established.
        case pending(references: Int)
        /// SUBSCRIBE sent; waiters are `subscribe` calls waiting for the confirmation.
        /// `references` may drop to 0 meanwhile; the release then starts at confirmation.
        case subscribing(references: Int, waiters: [Waiter])
        /// Confirmed by Redis; publications are delivered.
        case subscribed(references: Int)
        /// No local references; still subscribed upstream until `deadline` (debounce).
        case draining(deadline: NIODeadline)
        /// UNSUBSCRIBE sent, confirmation awaited.
        case unsubscribing
    }

    enum SubscribeAction {
        /// Return at once (already subscribed, or disconnected: subscribed on reconnect).
        case resume
        /// The waiter was stored: it is resumed when the SUBSCRIBE in flight is confirmed.
        case wait
        /// Send SUBSCRIBE for the topic; the waiter was stored.
        case sendSubscribeAndWait
    }

    enum UnsubscribeAction: Equatable {
        case none
        /// The last reference is gone: call `releaseTimerFired` at `deadline`.
        case scheduleRelease(at: NIODeadline)
        /// The topic had no references (a caller bug; worth a log line).
        case notSubscribed
    }

    enum ReleaseAction: Equatable {
        case none
        case sendUnsubscribe
        case scheduleRelease(at: NIODeadline)
    }

    enum ConfirmAction {
        case none
        case resume([Waiter])
        case resumeAndScheduleRelease([Waiter], at: NIODeadline)
    }

    private(set) var topics: [String: TopicState] = [:]
    private(set) var isConnected = false
    let releaseDelay: TimeAmount

    init(releaseDelay: TimeAmount) {
        self.releaseDelay = releaseDelay
    }

    // MARK: Local references

    mutating func subscribe(_ topic: String, waiter: Waiter) -> SubscribeAction {
        switch topics[topic] {
        case nil:
            guard isConnected else {
                topics[topic] = .pending(references: 1)
                return .resume
            }
            topics[topic] = .subscribing(references: 1, waiters: [waiter])
            return .sendSubscribeAndWait
        case .pending(let references):
            topics[topic] = .pending(references: references + 1)
            return .resume
        case .subscribing(let references, var waiters):
            waiters.append(waiter)
            topics[topic] = .subscribing(references: references + 1, waiters: waiters)
            return .wait
        case .subscribed(let references):
            topics[topic] = .subscribed(references: references + 1)
            return .resume
        case .draining:
            // Still subscribed upstream: cancel the release.
            topics[topic] = .subscribed(references: 1)
            return .resume
        case .unsubscribing:
            // Redis handles commands in order: the UNSUBSCRIBE in flight is followed by this
            // SUBSCRIBE, and its confirmation is ignored in `subscribing`.
            topics[topic] = .subscribing(references: 1, waiters: [waiter])
            return .sendSubscribeAndWait
        }
    }

    mutating func unsubscribe(_ topic: String, now: NIODeadline) -> UnsubscribeAction {
        switch topics[topic] {
        case nil, .draining, .unsubscribing:
            return .notSubscribed
        case .pending(let references):
            topics[topic] = references > 1 ? .pending(references: references - 1) : nil
            return .none
        case .subscribing(let references, let waiters):
            guard references > 0 else { return .notSubscribed }
            topics[topic] = .subscribing(references: references - 1, waiters: waiters)
            return .none
        case .subscribed(let references):
            if references > 1 {
                topics[topic] = .subscribed(references: references - 1)
                return .none
            }
            let deadline = now + releaseDelay
            topics[topic] = .draining(deadline: deadline)
            return .scheduleRelease(at: deadline)
        }
    }

    /// The debounce timer of `topic` fired: UNSUBSCRIBE if nobody came back meanwhile.
    mutating func releaseTimerFired(_ topic: String, now: NIODeadline) -> ReleaseAction {
        guard case .draining(let deadline) = topics[topic] else { return .none }
        guard now >= deadline else { return .scheduleRelease(at: deadline) }
        topics[topic] = .unsubscribing
        return .sendUnsubscribe
    }

    // MARK: Redis confirmations

    mutating func subscribeConfirmed(_ topic: String, now: NIODeadline) -> ConfirmAction {
        guard case .subscribing(let references, let waiters) = topics[topic] else { return .none }
        if references > 0 {
            topics[topic] = .subscribed(references: references)
            return .resume(waiters)
        }
        let deadline = now + releaseDelay
        topics[topic] = .draining(deadline: deadline)
        return .resumeAndScheduleRelease(waiters, at: deadline)
    }

    mutating func unsubscribeConfirmed(_ topic: String) {
        // In any other state a SUBSCRIBE followed the UNSUBSCRIBE: keep the topic.
        if case .unsubscribing = topics[topic] {
            topics[topic] = nil
        }
    }

    // MARK: Connection

    /// The subscriber connection is up: returns the topics to SUBSCRIBE (in one batch).
    mutating func connectionEstablished() -> [String] {
        isConnected = true
        var toSubscribe: [String] = []
        for (topic, state) in topics {
            if case .pending(let references) = state {
                topics[topic] = .subscribing(references: references, waiters: [])
                toSubscribe.append(topic)
            }
        }
        return toSubscribe
    }

    /// The connection is gone, and with it every upstream subscription: referenced topics
    /// wait for the next connection, the others are forgotten. Returns the waiters to
    /// resume (subscribe returns at once while the bus is down).
    mutating func connectionLost() -> [Waiter] {
        isConnected = false
        var resumed: [Waiter] = []
        for (topic, state) in topics {
            switch state {
            case .pending:
                break
            case .subscribing(let references, let waiters):
                resumed += waiters
                topics[topic] = references > 0 ? .pending(references: references) : nil
            case .subscribed(let references):
                topics[topic] = .pending(references: references)
            case .draining, .unsubscribing:
                topics[topic] = nil
            }
        }
        return resumed
    }

    /// Shutdown: forget everything; returns the waiters to resume.
    mutating func shutdown() -> [Waiter] {
        let resumed = connectionLost()
        topics = [:]
        return resumed
    }

    // MARK: Queries

    /// Whether publications on `topic` come back to this bus (confirmed and referenced).
    func isSubscribed(_ topic: String) -> Bool {
        if case .subscribed = topics[topic] { true } else { false }
    }

    /// Local references of `topic`.
    func references(of topic: String) -> Int {
        switch topics[topic] {
        case .pending(let references), .subscribing(let references, _), .subscribed(let references): references
        case nil, .draining, .unsubscribing: 0
        }
    }
}

/// Reconnect delays: exponential from `initial` to `maximum`, each scaled down by a random
/// factor in `1 - jitter ... 1` so that many workers do not reconnect in lockstep.
public struct ReconnectBackoff: Sendable, Equatable {
    public var initial: TimeAmount
    public var maximum: TimeAmount
    /// 0 ... 1.
    public var jitter: Double

    public init(initial: TimeAmount = .milliseconds(50), maximum: TimeAmount = .seconds(1), jitter: Double = 0.5) {
        self.initial = initial
        self.maximum = maximum
        self.jitter = min(max(jitter, 0), 1)
    }

    /// The delay before attempt number `attempt` (0 = the first retry); `random` is in 0..<1.
    public func delay(attempt: Int, random: Double) -> TimeAmount {
        let shift = min(attempt, 30)
        let base = min(initial.nanoseconds.multipliedReportingOverflow(by: 1 << shift).overflow
            ? maximum.nanoseconds : initial.nanoseconds << shift, maximum.nanoseconds)
        let factor = 1 - jitter * min(max(random, 0), 1)
        return .nanoseconds(Int64(Double(base) * factor))
    }
}
