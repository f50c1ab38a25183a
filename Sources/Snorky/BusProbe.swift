import NIOCore
import Synchronization

/// Proves the bus delivers: a probe message sent to this node's own inbox must come back.
/// Readiness (`GET /ready`) depends on it, so a Redis that accepts connections but no longer
/// delivers turns a worker not-ready instead of silently dropping publications.
final class BusProbe: Sendable {
    /// Inbox messages addressed to this client id are probes, never a real client's.
    static let probeClientID: UInt64 = 0

    private struct State {
        var nextSequence: UInt64 = 1
        var waiters: [UInt64: CheckedContinuation<Bool, Never>] = [:]
        var lastSuccess: ContinuousClock.Instant?
        var lastRoundTrip: Duration?
    }

    private let state = Mutex(State())

    /// Sends one probe through `bus` and waits up to `timeout` for it to come back.
    func run(bus: any Bus, inboxTopic: String, timeout: Duration) async -> Bool {
        let sequence = state.withLock { state in
            defer { state.nextSequence += 1 }
            return state.nextSequence
        }
        var marker = ByteBuffer()
        marker.writeInteger(sequence)
        let probe = NodePublication.inbox(clientID: Self.probeClientID, envelope: Array(marker.readableBytesView))
        let started = ContinuousClock.now
        let arrived = await withTaskGroup(of: Bool.self) { group in
            group.addTask {
                await withCheckedContinuation { continuation in
                    self.state.withLock { $0.waiters[sequence] = continuation }
                }
            }
            group.addTask {
                do {
                    try await bus.publish(topic: inboxTopic, payload: probe)
                    try await Task.sleep(for: timeout)
                } catch {}
                return false
            }
            let first = await group.next() ?? false
            // Release the waiter if the timeout (or a failed publish) won.
            self.state.withLock { $0.waiters.removeValue(forKey: sequence) }?.resume(returning: false)
            group.cancelAll()
            return first
        }
        if arrived {
            state.withLock { state in
                state.lastSuccess = .now
                state.lastRoundTrip = ContinuousClock.now - started
            }
        }
        return arrived
    }

    /// Called with an inbox message for the probe client.
    func received(_ envelope: ByteBuffer) {
        var envelope = envelope
        guard let sequence = envelope.readInteger(as: UInt64.self) else { return }
        state.withLock { $0.waiters.removeValue(forKey: sequence) }?.resume(returning: true)
    }

    /// Whether a probe came back within `freshness`.
    func isHealthy(freshness: Duration) -> Bool {
        state.withLock { state in
            guard let last = state.lastSuccess else { return false }
            return ContinuousClock.now - last <= freshness
        }
    }

    var lastRoundTrip: Duration? {
        state.withLock { $0.lastRoundTrip }
    }
}
