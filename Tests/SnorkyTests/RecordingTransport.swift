import NIOCore
import NIOPosix
import Snorky
import SnorkyProtocol
import Synchronization

/// A `Transport` that records what the framework sends, so tests can drive a `Node`
/// without a socket: `next()` hands out the written frames in order, waiting (without
/// polling) for the next one to be written.
final class RecordingTransport: Transport {
    struct Timeout: Error, CustomStringConvertible {
        let waited: Duration
        var description: String { "no frame written within \(waited)" }
    }

    struct UnexpectedFrame: Error, CustomStringConvertible {
        let payload: String
        var description: String { "unexpected frame: \(payload)" }
    }

    private struct Waiter {
        let id: UInt64
        let continuation: CheckedContinuation<String?, Never>
        var deadline: Scheduled<Void>?
    }

    private struct State {
        /// Every payload written, in write order.
        var payloads: [String] = []
        /// How many of `payloads` `next` has handed out.
        var consumed = 0
        var waiter: Waiter?
        var nextWaiterID: UInt64 = 0
        var closeCode: UInt16?
        var closeReason: String?
    }

    let eventLoop: any EventLoop
    let writeState = TransportWriteState()
    private let state = Mutex(State())

    init(eventLoop: any EventLoop = MultiThreadedEventLoopGroup.singleton.next()) {
        self.eventLoop = eventLoop
    }

    /// A transport and a client of `node` on it, already connected (`didConnect` queued).
    static func connect(to node: Node, identity: String? = nil) -> (Client, RecordingTransport) {
        let transport = RecordingTransport()
        let client = node.makeClient(transport: transport, identity: identity)
        client.didConnect()
        return (client, transport)
    }

    // MARK: Transport

    func write(_ frame: OutboundFrame) {
        let payload = frame.payloadString
        let resumed: Waiter? = state.withLock { state in
            state.payloads.append(payload)
            guard let waiter = state.waiter else { return nil }
            state.waiter = nil
            state.consumed += 1
            return waiter
        }
        if let resumed {
            resumed.deadline?.cancel()
            resumed.continuation.resume(returning: payload)
        }
    }

    func flush() {}

    func close(code: UInt16, reason: String) {
        state.withLock { state in
            // The first close wins, as on a real connection.
            if state.closeCode == nil {
                state.closeCode = code
                state.closeReason = reason
            }
        }
    }

    // MARK: Inspection

    /// The code of the first `close`, if any.
    var closeCode: UInt16? { state.withLock { $0.closeCode } }
    var closeReason: String? { state.withLock { $0.closeReason } }

    /// Every payload written so far, including ones `next` has already returned.
    var payloads: [String] { state.withLock { $0.payloads } }

    /// The next frame written (or already written and not yet returned), parsed.
    /// Throws `Timeout` when none arrives in time.
    func next(timeout: Duration = .seconds(15)) async throws -> JSON {
        guard let payload = await nextPayload(timeout: timeout) else { throw Timeout(waited: timeout) }
        return try JSON.parse(payload)
    }

    /// Succeeds when no new frame is written for `duration`; throws `UnexpectedFrame` as soon
    /// as one is. A negative check can only be bounded in time, so keep `duration` short.
    func expectNothing(for duration: Duration) async throws {
        if let payload = await nextPayload(timeout: duration) {
            throw UnexpectedFrame(payload: payload)
        }
    }

    /// The next unconsumed payload, or nil after `timeout`. One waiter at a time: frames are
    /// ordered, so concurrent `next` calls would race for them.
    private func nextPayload(timeout: Duration) async -> String? {
        await withCheckedContinuation { (continuation: CheckedContinuation<String?, Never>) in
            enum Outcome {
                case ready(String)
                case waiting(id: UInt64)
            }
            let outcome: Outcome = state.withLock { state in
                if state.consumed < state.payloads.count {
                    state.consumed += 1
                    return .ready(state.payloads[state.consumed - 1])
                }
                precondition(state.waiter == nil, "RecordingTransport: concurrent next() calls")
                state.nextWaiterID += 1
                state.waiter = Waiter(id: state.nextWaiterID, continuation: continuation)
                return .waiting(id: state.nextWaiterID)
            }
            guard case .waiting(let id) = outcome else {
                if case .ready(let payload) = outcome { continuation.resume(returning: payload) }
                return
            }
            // The deadline runs on the loop; if a frame wins the race, `write` cancels it, and
            // if it fires late, the id check leaves a newer waiter alone.
            let deadline = eventLoop.scheduleTask(in: Self.timeAmount(timeout)) {
                self.expire(waiterID: id)
            }
            let stored = state.withLock { state in
                guard state.waiter?.id == id else { return false }
                state.waiter?.deadline = deadline
                return true
            }
            if !stored { deadline.cancel() }  // a frame already answered this waiter
        }
    }

    private static func timeAmount(_ duration: Duration) -> TimeAmount {
        let (seconds, attoseconds) = duration.components
        return .nanoseconds(seconds * 1_000_000_000 + attoseconds / 1_000_000_000)
    }

    private func expire(waiterID: UInt64) {
        let expired: Waiter? = state.withLock { state in
            guard let waiter = state.waiter, waiter.id == waiterID else { return nil }
            state.waiter = nil
            return waiter
        }
        expired?.continuation.resume(returning: nil)
    }
}

