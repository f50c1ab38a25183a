import NIOCore
import Snorky
import SnorkyProtocol
import Synchronization

/// The worker's open connections on the public port, for draining and stats: WebSocket
/// connections, and connections accepted but not upgraded yet (a drain must wait for those
/// too, or a worker would exit under a client in the middle of its handshake).
final class ConnectionRegistry: Sendable {
    /// How a drain closes connections, including those that arrive while it runs.
    private typealias DrainCode = (code: UInt16, reason: String, lateGrace: Duration)

    private struct State {
        var transports: [ObjectIdentifier: ChannelTransport] = [:]
        /// Accepted TCP connections (upgraded or not) that are still open.
        var openSockets = 0
        /// WebSocket connections opened since the start, refused ones included (for metrics).
        var registered = 0
        var drainCode: DrainCode?
        var emptyWaiters: [CheckedContinuation<Void, Never>] = []

        var isEmpty: Bool { transports.isEmpty && openSockets == 0 }
    }

    private let state = Mutex(State())

    /// Open WebSocket connections.
    var count: Int {
        state.withLock { $0.transports.count }
    }

    /// WebSocket connections opened since the worker started, refused ones included.
    var openedCount: Int {
        state.withLock { $0.registered }
    }

    /// True once a drain started.
    var isDraining: Bool {
        state.withLock { $0.drainCode != nil }
    }

    /// A TCP connection was accepted; `closed` is called when it closes.
    func socketOpened() {
        state.withLock { $0.openSockets += 1 }
    }

    func socketClosed() {
        let waiters = state.withLock { state -> [CheckedContinuation<Void, Never>] in
            state.openSockets -= 1
            return Self.takeWaitersIfEmpty(&state)
        }
        for waiter in waiters { waiter.resume() }
    }

    /// Registers an upgraded connection, unless `limit` (when above 0) connections are
    /// registered already: then returns false and the caller refuses it (4003). Checked
    /// and counted under one lock, so connections arriving on several event loops at once
    /// cannot overshoot the limit.
    ///
    /// When the worker is already draining, its close is scheduled after `lateGrace`, so a
    /// client that reached a draining worker is still served briefly (its first request
    /// answered) before being sent elsewhere.
    func add(_ transport: ChannelTransport, limit: Int = 0) -> Bool {
        let (admitted, drain) = state.withLock { state -> (Bool, DrainCode?) in
            state.registered += 1
            if limit > 0, state.transports.count >= limit { return (false, nil) }
            state.transports[ObjectIdentifier(transport)] = transport
            return (true, state.drainCode)
        }
        guard admitted else { return false }
        if let drain {
            transport.eventLoop.scheduleTask(in: TimeAmount(drain.lateGrace)) {
                transport.close(code: drain.code, reason: drain.reason)
            }
        }
        return true
    }

    func remove(_ transport: ChannelTransport) {
        let waiters = state.withLock { state -> [CheckedContinuation<Void, Never>] in
            state.transports[ObjectIdentifier(transport)] = nil
            return Self.takeWaitersIfEmpty(&state)
        }
        for waiter in waiters { waiter.resume() }
    }

    private static func takeWaitersIfEmpty(_ state: inout State) -> [CheckedContinuation<Void, Never>] {
        guard state.isEmpty else { return [] }
        defer { state.emptyWaiters = [] }
        return state.emptyWaiters
    }

    /// Closes every connection with `code`, spread over `spread` in shuffled batches (with
    /// jitter), so the clients of a draining worker do not all reconnect at the same
    /// instant; connections that finish their upgrade later are closed `lateGrace` after.
    func closeAll(code: UInt16, reason: String, spread: Duration, lateGrace: Duration) {
        let transports = state.withLock { state in
            state.drainCode = (code, reason, lateGrace)
            return Array(state.transports.values)
        }.shuffled()
        let batches = max(1, min(10, transports.count))
        let spreadNanos = spread.components.seconds * 1_000_000_000 + spread.components.attoseconds / 1_000_000_000
        for (index, transport) in transports.enumerated() {
            let batch = Int64(index % batches)
            let jitter = spreadNanos > 0 ? Int64.random(in: 0...(spreadNanos / Int64(batches * 4) + 1)) : 0
            let delay = spreadNanos * batch / Int64(batches) + jitter
            if delay == 0 {
                transport.close(code: code, reason: reason)
            } else {
                transport.eventLoop.scheduleTask(in: .nanoseconds(delay)) {
                    transport.close(code: code, reason: reason)
                }
            }
        }
    }

    /// Returns when no connection is left, or after `timeout`.
    func waitUntilEmpty(timeout: Duration) async {
        await withTaskGroup(of: Void.self) { group in
            group.addTask {
                await withCheckedContinuation { continuation in
                    let isEmpty = self.state.withLock { state in
                        if state.isEmpty { return true }
                        state.emptyWaiters.append(continuation)
                        return false
                    }
                    if isEmpty { continuation.resume() }
                }
            }
            group.addTask { try? await Task.sleep(for: timeout) }
            await group.next()
            group.cancelAll()
            // Release a waiter left behind by the timeout.
            let leftover = self.state.withLock { state -> [CheckedContinuation<Void, Never>] in
                defer { state.emptyWaiters = [] }
                return state.emptyWaiters
            }
            for waiter in leftover { waiter.resume() }
        }
    }
}
