import Logging
import NIOCore
import Snorky
import SnorkyRedis
import SnorkyTesting
import Synchronization

/// A `BusReceiver` that records deliveries and lets a test await them (no polling).
final class RecordingReceiver: BusReceiver {
    struct Delivery: Sendable, Equatable, CustomStringConvertible {
        let topic: String
        let payload: [UInt8]
        var text: String { String(decoding: payload, as: UTF8.self) }
        var description: String { "\(topic): \(text)" }
    }

    private struct Waiter {
        let predicate: @Sendable ([Delivery]) -> Bool
        let continuation: CheckedContinuation<Bool, Never>
    }

    private struct State {
        var deliveries: [Delivery] = []
        var waiters: [Int: Waiter] = [:]
        var abandoned: Set<Int> = []
        var nextID = 0
    }

    private let state = Mutex(State())

    func deliver(topic: String, payload: ByteBuffer) {
        let delivery = Delivery(topic: topic, payload: Array(payload.readableBytesView))
        let ready = state.withLock { state -> [CheckedContinuation<Bool, Never>] in
            state.deliveries.append(delivery)
            var ready: [CheckedContinuation<Bool, Never>] = []
            for (id, waiter) in state.waiters where waiter.predicate(state.deliveries) {
                ready.append(waiter.continuation)
                state.waiters[id] = nil
            }
            return ready
        }
        for continuation in ready { continuation.resume(returning: true) }
    }

    var deliveries: [Delivery] { state.withLock { $0.deliveries } }
    var texts: [String] { deliveries.map(\.text) }

    func texts(on topic: String) -> [String] {
        deliveries.filter { $0.topic == topic }.map(\.text)
    }

    /// Waits until `predicate` holds for the deliveries so far; false after `timeout`.
    func wait(
        timeout: Duration = .seconds(15),
        until predicate: @escaping @Sendable ([Delivery]) -> Bool
    ) async -> Bool {
        let id = state.withLock { state -> Int in
            state.nextID += 1
            return state.nextID
        }
        return await withTaskGroup(of: Bool.self) { group in
            group.addTask {
                await withCheckedContinuation { continuation in
                    let resumeNow: Bool? = self.state.withLock { state in
                        if state.abandoned.remove(id) != nil { return false }
                        if predicate(state.deliveries) { return true }
                        state.waiters[id] = Waiter(predicate: predicate, continuation: continuation)
                        return nil
                    }
                    if let resumeNow { continuation.resume(returning: resumeNow) }
                }
            }
            group.addTask {
                try? await Task.sleep(for: timeout)
                return false
            }
            let result = await group.next() ?? false
            self.abandon(id)
            group.cancelAll()
            return result
        }
    }

    func waitForCount(_ count: Int, timeout: Duration = .seconds(15)) async -> Bool {
        await wait(timeout: timeout) { $0.count >= count }
    }

    func waitFor(_ text: String, on topic: String? = nil, timeout: Duration = .seconds(15)) async -> Bool {
        let bytes = Array(text.utf8)
        return await wait(timeout: timeout) { deliveries in
            deliveries.contains { $0.payload == bytes && (topic == nil || $0.topic == topic) }
        }
    }

    private func abandon(_ id: Int) {
        let waiter = state.withLock { state -> Waiter? in
            if let waiter = state.waiters.removeValue(forKey: id) { return waiter }
            state.abandoned.insert(id)
            return nil
        }
        waiter?.continuation.resume(returning: false)
        // A waiter that already finished leaves its id behind; harmless.
    }
}

extension ByteBuffer {
    init(text: String) {
        self.init(string: text)
    }
}

enum TestLogging {
    static let logger: Logger = {
        var logger = Logger(label: "snorky.redis-tests")
        logger.logLevel = .notice
        return logger
    }()
}

/// A Redis bus on `redis` with test-sized delays.
func makeRedisBus(
    _ redis: RedisServerProcess,
    prefix: String = "snorky",
    unsubscribeDelay: TimeAmount = .milliseconds(100),
    configure: (inout RedisBusConfiguration) -> Void = { _ in }
) throws -> RedisBus {
    var configuration = try RedisBusConfiguration(url: redis.url)
    configuration.channelPrefix = prefix
    configuration.unsubscribeDelay = unsubscribeDelay
    configuration.localDeliveryTimeout = .seconds(2)
    configure(&configuration)
    return RedisBus(configuration: configuration, logger: TestLogging.logger)
}

/// A started bus and its receiver.
struct StartedBus: Sendable {
    let bus: RedisBus
    let receiver: RecordingReceiver
}

func startRedisBus(
    _ redis: RedisServerProcess,
    prefix: String = "snorky",
    unsubscribeDelay: TimeAmount = .milliseconds(100),
    configure: (inout RedisBusConfiguration) -> Void = { _ in }
) async throws -> StartedBus {
    let bus = try makeRedisBus(redis, prefix: prefix, unsubscribeDelay: unsubscribeDelay, configure: configure)
    let receiver = RecordingReceiver()
    try await bus.start(receiver: receiver)
    return StartedBus(bus: bus, receiver: receiver)
}

/// Runs `body`, throwing `TimeLimitExceeded` if it takes longer than `limit`: a hang fails
/// the test instead of stalling the suite (the hung body is cancelled and abandoned).
func withTimeLimit<T: Sendable>(
    _ limit: Duration,
    _ body: @escaping @Sendable () async throws -> T
) async throws -> T {
    let race = TimeLimitRace()
    return try await withCheckedThrowingContinuation { (continuation: CheckedContinuation<T, any Error>) in
        let work = Task {
            let result: Result<T, any Error>
            do { result = .success(try await body()) } catch { result = .failure(error) }
            if race.claim() {
                race.timer.withLock { $0?.cancel() }
                continuation.resume(with: result)
            }
        }
        race.work.withLock { $0 = work }
        let timer = Task {
            try? await Task.sleep(for: limit)
            if !Task.isCancelled, race.claim() {
                race.work.withLock { $0?.cancel() }
                continuation.resume(throwing: TimeLimitExceeded(limit: limit))
            }
        }
        race.timer.withLock { $0 = timer }
        // The work may have finished before the timer existed.
        if race.claimed.withLock({ $0 }) { timer.cancel() }
    }
}

private final class TimeLimitRace: Sendable {
    let claimed = Mutex(false)
    let work = Mutex<Task<Void, Never>?>(nil)
    let timer = Mutex<Task<Void, Never>?>(nil)

    /// True for the first caller only.
    func claim() -> Bool {
        claimed.withLock { done in
            defer { done = true }
            return !done
        }
    }
}

struct TimeLimitExceeded: Error, CustomStringConvertible {
    let limit: Duration
    var description: String { "did not finish within \(limit)" }
}

/// Polls `condition` (for state only visible by asking Redis) every 10 ms up to `timeout`.
func pollUntil(timeout: Duration = .seconds(2), _ condition: () throws -> Bool) async throws -> Bool {
    let deadline = ContinuousClock.now + timeout
    while true {
        if try condition() { return true }
        if ContinuousClock.now >= deadline { return false }
        try await Task.sleep(for: .milliseconds(10))
    }
}
