public import NIOCore
import Synchronization

/// A bus for a single process: publications go straight to the local receiver.
/// Used by `--workers 1 --bus memory` and by every service unit test.
public final class InMemoryBus: Bus {
    private struct State {
        var receiver: (any BusReceiver)?
        var references: [String: Int] = [:]
    }

    private let state = Mutex(State())

    public init() {}

    public func start(receiver: any BusReceiver) async throws {
        state.withLock { $0.receiver = receiver }
    }

    public func subscribe(topic: String) async {
        state.withLock { $0.references[topic, default: 0] += 1 }
    }

    public func unsubscribe(topic: String) {
        state.withLock { state in
            let remaining = (state.references[topic] ?? 0) - 1
            state.references[topic] = remaining > 0 ? remaining : nil
        }
    }

    public func publish(topic: String, payload: ByteBuffer) async throws(BusError) {
        deliver(topic: topic, payload: payload)
    }

    public func publish(topic: String, payload: ByteBuffer, on loop: any EventLoop) -> EventLoopFuture<Void>? {
        deliver(topic: topic, payload: payload)
        return loop.makeSucceededVoidFuture()
    }

    private func deliver(topic: String, payload: ByteBuffer) {
        let receiver = state.withLock { $0.references[topic] == nil ? nil : $0.receiver }
        receiver?.deliver(topic: topic, payload: payload)
    }

    public func shutdown() async {
        state.withLock { $0.receiver = nil }
    }

    /// Topics with at least one local reference (for tests and stats).
    public var subscribedTopics: Set<String> {
        state.withLock { Set($0.references.keys) }
    }
}
