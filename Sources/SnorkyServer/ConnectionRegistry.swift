import Snorky
import SnorkyProtocol
import Synchronization

/// The worker's open connections on the public port, for draining and stats: WebSocket
/// connections, and connections accepted but not upgraded yet (a drain must wait for those
/// too, or a worker would exit under a client in the middle of its handshake).
final class ConnectionRegistry: Sendable {
    private struct State {
        var transports: [ObjectIdentifier: ChannelTransport] = [:]
        /// Accepted TCP connections (upgraded or not) that are still open.
        var openSockets = 0
        var drainCode: (code: UInt16, reason: String)?
        var emptyWaiters: [CheckedContinuation<Void, Never>] = []

        var isEmpty: Bool { transports.isEmpty && openSockets == 0 }
    }

    private let state = Mutex(State())

    /// Open WebSocket connections.
    var count: Int {
        state.withLock { $0.transports.count }
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

    /// Registers an upgraded connection. Returns the close to send at once when the worker
    /// is already draining (the client then reconnects elsewhere).
    func add(_ transport: ChannelTransport) -> (code: UInt16, reason: String)? {
        state.withLock { state in
            state.transports[ObjectIdentifier(transport)] = transport
            return state.drainCode
        }
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

    /// Closes every connection with `code`, and every connection that finishes its
    /// upgrade from now on.
    func closeAll(code: UInt16, reason: String) {
        let transports = state.withLock { state in
            state.drainCode = (code, reason)
            return Array(state.transports.values)
        }
        for transport in transports {
            transport.close(code: code, reason: reason)
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
