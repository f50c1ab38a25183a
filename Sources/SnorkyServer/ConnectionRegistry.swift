import Snorky
import SnorkyProtocol
import Synchronization

/// The worker's open WebSocket connections, for draining and stats.
final class ConnectionRegistry: Sendable {
    private struct State {
        var transports: [ObjectIdentifier: ChannelTransport] = [:]
        var emptyWaiters: [CheckedContinuation<Void, Never>] = []
    }

    private let state = Mutex(State())

    var count: Int {
        state.withLock { $0.transports.count }
    }

    func add(_ transport: ChannelTransport) {
        state.withLock { $0.transports[ObjectIdentifier(transport)] = transport }
    }

    func remove(_ transport: ChannelTransport) {
        let waiters = state.withLock { state -> [CheckedContinuation<Void, Never>] in
            state.transports[ObjectIdentifier(transport)] = nil
            guard state.transports.isEmpty else { return [] }
            defer { state.emptyWaiters = [] }
            return state.emptyWaiters
        }
        for waiter in waiters { waiter.resume() }
    }

    /// Closes every connection with `code`.
    func closeAll(code: UInt16, reason: String) {
        for transport in state.withLock({ Array($0.transports.values) }) {
            transport.close(code: code, reason: reason)
        }
    }

    /// Returns when no connection is left, or after `timeout`.
    func waitUntilEmpty(timeout: Duration) async {
        await withTaskGroup(of: Void.self) { group in
            group.addTask {
                await withCheckedContinuation { continuation in
                    let isEmpty = self.state.withLock { state in
                        if state.transports.isEmpty { return true }
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
