/// Everything the supervisor reacts to. Threads watching processes and pipes, timers,
/// signal handlers and the public methods all feed one stream; a single task consumes it,
/// so all decisions happen one at a time, in order, without locks.
enum SupervisorEvent: Sendable {
    /// A worker wrote a status byte (`R`, `S`).
    case status(pid: Int32, byte: UInt8)
    /// A child (worker or redis-server) exited; it is reaped when this is handled.
    case exited(pid: Int32)

    // Timers. Each names what it was armed for; a timer that is no longer relevant (the
    // worker became ready, the restart was superseded) is recognised and ignored.
    case restartDue(slot: Int, token: Int)
    case readinessDeadline(pid: Int32)
    case retireDeadline(pid: Int32)
    case drainDeadline
    case redisRestartDue(token: Int)
    case redisStopDeadline

    /// The embedded redis-server `pid` answered PING (or did not before the deadline).
    case redisProbeFinished(pid: Int32, answered: Bool)

    // Requests. The continuations resume when the request is complete.
    case reloadRequested(CheckedContinuation<Void, Never>)
    case shutdownRequested(CheckedContinuation<Void, Never>?)
    /// SIGTERM/SIGINT: drain, or kill everything now when already draining.
    case stopSignal(Int32)
}
