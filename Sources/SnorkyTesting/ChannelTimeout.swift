import NIOCore

/// Thrown by `EventLoopFuture.get(timeout:closing:)` when the deadline passed first.
struct ChannelOperationTimedOut: Error {}

extension EventLoopFuture where Value: Sendable {
    /// Awaits the future, closing `channel` if it has not completed within `timeout`.
    ///
    /// A NIO future cannot be cancelled, and cancelling the awaiting task does not complete
    /// it; closing the channel that will complete it does. If the timer fired, the future's
    /// own error (usually "channel closed") is replaced by `ChannelOperationTimedOut`.
    func get(timeout: Duration, closing channel: any Channel) async throws -> Value {
        let timer = channel.eventLoop.scheduleTask(in: TimeAmount(timeout)) {
            channel.close(promise: nil)
            return true
        }
        do {
            let value = try await self.get()
            timer.cancel()
            return value
        } catch {
            timer.cancel()
            // Succeeds only if the timer already ran; a cancelled timer fails.
            let fired = (try? await timer.futureResult.get()) ?? false
            throw fired ? ChannelOperationTimedOut() : error
        }
    }
}
