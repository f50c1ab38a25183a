import NIOCore
import Synchronization

/// A FIFO filled by a producer (an event loop, an output reader) and drained by tests that
/// wait with a deadline.
///
/// Tests must react to events rather than sleep, so every wait is event-driven: a waiter is
/// resumed exactly once, by an element, by the end of the stream, by its deadline or by
/// cancellation of its task, whichever comes first. Because all four go through the same
/// lock, an element is never handed to a waiter that already timed out; it stays queued for
/// the next call.
///
/// `package` so that other harness parts and the harness's own tests can use it.
package final class TimedQueue<Element: Sendable>: Sendable {
    package enum Failure: Error {
        /// The deadline passed with nothing queued.
        case timedOut
        /// `finish` was called and everything queued before it has been taken. Carries the
        /// error passed to `finish`, if any.
        case finished((any Error)?)
    }

    private enum WaiterKind { case element, finish }

    private struct Waiter {
        var id: UInt64
        var kind: WaiterKind
        /// Element waiters receive `.some`; finish waiters receive `nil` on finish.
        var continuation: CheckedContinuation<Element?, any Error>
    }

    private struct State {
        var buffer = CircularBuffer<Element>()
        var isFinished = false
        var finishError: (any Error)?
        var waiters: [Waiter] = []
        var nextWaiterID: UInt64 = 0
    }

    private let state = Mutex(State())

    package init() {}

    /// Queues an element, or hands it straight to the oldest element waiter. Ignored after `finish`.
    package func append(_ element: Element) {
        let waiter: Waiter? = state.withLock { state in
            guard !state.isFinished else { return nil }
            if let index = state.waiters.firstIndex(where: { $0.kind == .element }) {
                return state.waiters.remove(at: index)
            }
            state.buffer.append(element)
            return nil
        }
        waiter?.continuation.resume(returning: element)
    }

    /// Ends the stream. Queued elements can still be taken; after them, `next` throws
    /// `.finished(error)`. Only the first call has an effect.
    package func finish(throwing error: (any Error)? = nil) {
        let waiters: [Waiter] = state.withLock { state in
            guard !state.isFinished else { return [] }
            state.isFinished = true
            state.finishError = error
            // Any element waiter implies an empty buffer, so all waiters can be released.
            defer { state.waiters = [] }
            return state.waiters
        }
        for waiter in waiters {
            switch waiter.kind {
            case .element: waiter.continuation.resume(throwing: Failure.finished(error))
            case .finish: waiter.continuation.resume(returning: nil)
            }
        }
    }

    package var isFinished: Bool { state.withLock { $0.isFinished } }

    /// Takes the oldest element, waiting for one until `deadline`.
    package func next(deadline: ContinuousClock.Instant) async throws -> Element {
        // Only element waits are registered with kind `.element`, and those never receive nil.
        try await wait(kind: .element, deadline: deadline)!
    }

    /// Waits until `finish` has been called (queued elements are left alone).
    package func waitForFinish(deadline: ContinuousClock.Instant) async throws {
        _ = try await wait(kind: .finish, deadline: deadline)
    }

    private enum Immediate {
        case value(Element?)
        case failure(any Error)
        case registered
    }

    private func wait(kind: WaiterKind, deadline: ContinuousClock.Instant) async throws -> Element? {
        let id = state.withLock { state in
            state.nextWaiterID += 1
            return state.nextWaiterID
        }
        var timer: Task<Void, Never>?
        defer { timer?.cancel() }
        return try await withTaskCancellationHandler {
            try await withCheckedThrowingContinuation { (continuation: CheckedContinuation<Element?, any Error>) in
                let immediate: Immediate = state.withLock { state in
                    switch kind {
                    case .element:
                        if let element = state.buffer.popFirst() { return .value(element) }
                        if state.isFinished { return .failure(Failure.finished(state.finishError)) }
                    case .finish:
                        if state.isFinished { return .value(nil) }
                    }
                    // Checked under the lock: a cancellation handler that already ran found no
                    // waiter to fail, so this is the only place that can still notice it.
                    if Task.isCancelled { return .failure(CancellationError()) }
                    if deadline <= .now { return .failure(Failure.timedOut) }
                    state.waiters.append(Waiter(id: id, kind: kind, continuation: continuation))
                    return .registered
                }
                switch immediate {
                case .value(let value): continuation.resume(returning: value)
                case .failure(let error): continuation.resume(throwing: error)
                case .registered:
                    timer = Task { [weak self] in
                        try? await Task.sleep(until: deadline, clock: .continuous)
                        // If the waiter was resumed meanwhile, this finds nothing to fail.
                        self?.failWaiter(id, with: Failure.timedOut)
                    }
                }
            }
        } onCancel: {
            failWaiter(id, with: CancellationError())
        }
    }

    private func failWaiter(_ id: UInt64, with error: any Error) {
        let waiter: Waiter? = state.withLock { state in
            guard let index = state.waiters.firstIndex(where: { $0.id == id }) else { return nil }
            return state.waiters.remove(at: index)
        }
        waiter?.continuation.resume(throwing: error)
    }
}

extension ContinuousClock.Instant {
    /// The deadline `duration` from now, for the `timeout:` parameters of the harness.
    package static func after(_ duration: Duration) -> Self { .now.advanced(by: duration) }
}
