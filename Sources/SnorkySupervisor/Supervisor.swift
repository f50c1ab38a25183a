#if canImport(Glibc)
import Glibc
#endif
import Logging
import Synchronization

/// Runs a machine's worker processes: binds the listening sockets, starts
/// `workerCount` workers that inherit them, restarts workers that die, replaces them one
/// by one on `reload()` (SIGHUP) and drains them on `shutdown()` (SIGTERM/SIGINT).
/// Optionally runs a private redis-server for them.
///
/// It knows nothing about what workers do; the contract with them is `WorkerEnvironment`.
///
/// ```swift
/// let supervisor = Supervisor(configuration: config, logger: logger)
/// let listeners = try supervisor.bind()      // fails early on a busy port
/// supervisor.installSignalHandlers()
/// exit(try await supervisor.run())
/// ```
public final class Supervisor: Sendable {
    public let configuration: SupervisorConfiguration
    let logger: Logger

    private enum Lifecycle {
        case idle
        case running
        case finished
    }

    private struct State {
        var lifecycle = Lifecycle.idle
        var sockets: ListenerSockets?
        var snapshot: SupervisorSnapshot
        var stopRequestedBeforeRun = false
        var signalsInstalled = false
    }

    private let state: Mutex<State>
    /// Written to by every source of events, read by `run()` alone.
    private let events: AsyncStream<SupervisorEvent>
    private let input: AsyncStream<SupervisorEvent>.Continuation

    public init(configuration: SupervisorConfiguration, logger: Logger) {
        self.configuration = configuration
        self.logger = logger
        let slots = max(configuration.workerCount, 0)
        let snapshot = SupervisorSnapshot(
            workerPIDs: Array(repeating: nil, count: slots),
            workerRestarts: Array(repeating: 0, count: slots),
            workerReady: Array(repeating: false, count: slots))
        state = Mutex(State(snapshot: snapshot))
        (events, input) = AsyncStream.makeStream(of: SupervisorEvent.self)
    }

    /// The bound listeners (empty before `bind()`).
    public var boundListeners: [BoundListener] {
        state.withLock { $0.sockets?.listeners ?? [] }
    }

    /// The pid of each slot's current worker (nil while the slot has none, e.g. waiting
    /// for a restart). During a reload, a retiring worker is no longer listed.
    public var workerPIDs: [Int32?] {
        state.withLock { $0.snapshot.workerPIDs }
    }

    /// Per slot: how many times a worker was started to replace one that died
    /// (unexpected exits; a reload's replacements are not counted).
    public var workerRestarts: [Int] {
        state.withLock { $0.snapshot.workerRestarts }
    }

    /// Per slot: whether its current worker has reported ready.
    public var workerReady: [Bool] {
        state.withLock { $0.snapshot.workerReady }
    }

    /// `unix:///…/redis.sock` while the embedded redis-server runs; nil otherwise.
    public var redisURL: String? {
        state.withLock { $0.snapshot.redisURL }
    }

    /// The embedded redis-server's pid while it runs.
    public var redisPID: Int32? {
        state.withLock { $0.snapshot.redisPID }
    }

    /// Binds every listener: `workerCount` SO_REUSEPORT sockets each, on the same port
    /// (an ephemeral one for port 0), listening with a 4096 backlog. Idempotent; `run()`
    /// calls it if you did not. Throws `SupervisorError` (kind `.addressInUse`,
    /// `.bindFailed`, `.invalidConfiguration`).
    @discardableResult
    public func bind() throws(SupervisorError) -> [BoundListener] {
        try validate(configuration)
        let (listeners, newlyBound) = try state.withLock { state throws(SupervisorError) in
            if let sockets = state.sockets { return (sockets.listeners, false) }
            let sockets = try ListenerSockets.bind(configuration.listeners, slots: configuration.workerCount)
            state.sockets = sockets
            return (sockets.listeners, true)
        }
        if newlyBound {
            for listener in listeners {
                logger.info("listening", metadata: [listener.name: "\(listener.host):\(listener.port)"])
            }
        }
        return listeners
    }

    /// Starts the workers (after the embedded redis-server, if configured) and supervises
    /// them until `shutdown()`, a crash loop, or a startup failure. Returns the process
    /// exit code: 0 after a requested drain, 1 otherwise. Throws (before starting
    /// anything) for a bad configuration, a busy port, a missing worker executable or a
    /// missing redis-server. Cancelling the calling task drains like `shutdown()`.
    /// Call it once.
    public func run() async throws(SupervisorError) -> Int32 {
        let stopRequested = try state.withLock { state throws(SupervisorError) in
            guard state.lifecycle == .idle else { throw SupervisorError.alreadyRunning }
            state.lifecycle = .running
            return state.stopRequestedBeforeRun
        }
        var iterator = events.makeAsyncIterator()
        guard !stopRequested else {
            await finishRun(iterator: &iterator)
            return 0
        }
        let core: SupervisorCore
        do throws(SupervisorError) {
            core = try prepare()
        } catch {
            await finishRun(iterator: &iterator)
            throw error
        }
        let (exitCode, waiters) = await withTaskCancellationHandler {
            await core.run(events: &iterator)
        } onCancel: {
            input.yield(.shutdownRequested(nil))
        }
        core.spawner.stop()
        await finishRun(iterator: &iterator)
        waiters.forEach { $0.resume() }
        return exitCode
    }

    /// Everything that can fail before a process is started.
    private func prepare() throws(SupervisorError) -> SupervisorCore {
        try bind()
        guard let sockets = state.withLock({ $0.sockets }) else {
            throw SupervisorError.invalidConfiguration("listeners were not bound")
        }
        guard isExecutableFile(configuration.executablePath) else {
            throw SupervisorError.executableNotFound(configuration.executablePath)
        }
        let redisPlan = try configuration.embeddedRedis.map { configuration throws(SupervisorError) in
            try EmbeddedRedisPlan.prepare(configuration)
        }
        let spawner: SpawnerThread
        do throws(SupervisorError) {
            spawner = try SpawnerThread()
        } catch {
            redisPlan?.removeRuntimeDirectory()
            throw error
        }
        return SupervisorCore(
            configuration: configuration,
            logger: logger,
            sockets: sockets,
            spawner: spawner,
            redisPlan: redisPlan,
            input: input,
            publish: { [weak self] snapshot in self?.state.withLock { $0.snapshot = snapshot } }
        )
    }

    /// Ends the run: no more requests are accepted, the sockets close, and requests that
    /// arrived too late are answered (they would otherwise wait forever).
    private func finishRun(iterator: inout AsyncStream<SupervisorEvent>.Iterator) async {
        let sockets = state.withLock { state in
            state.lifecycle = .finished
            state.snapshot.workerPIDs = state.snapshot.workerPIDs.map { _ in nil }
            state.snapshot.workerReady = state.snapshot.workerReady.map { _ in false }
            state.snapshot.redisPID = nil
            state.snapshot.redisURL = nil
            // Under the lock, so no request slips in between the check in `send` and here.
            input.finish()
            return state.sockets
        }
        sockets?.close()
        while let event = await iterator.next() {
            switch event {
            case .reloadRequested(let waiter): waiter.resume()
            case .shutdownRequested(let waiter): waiter?.resume()
            default: break
            }
        }
    }

    /// Replaces every worker, one slot at a time (what SIGHUP does): SIGTERM the old
    /// worker, wait for its `S` (or exit), start the new one on the same sockets, wait for
    /// its `R`, next slot. Returns when done, aborted (a replacement failed; the remaining
    /// slots keep their workers) or cancelled by a shutdown. A reload asked for during a
    /// reload makes it go round once more. Returns at once when not running.
    public func reload() async {
        await withCheckedContinuation { (waiter: CheckedContinuation<Void, Never>) in
            if !send(.reloadRequested(waiter)) { waiter.resume() }
        }
    }

    /// Drains (what SIGTERM/SIGINT does): SIGTERM to every worker, SIGKILL to those still
    /// running after `shutdownTimeout`, then stops the embedded redis-server and removes
    /// its directory. Returns once `run()` has finished. Idempotent; before `run()`, makes
    /// `run()` return 0 at once.
    public func shutdown() async {
        await withCheckedContinuation { (waiter: CheckedContinuation<Void, Never>) in
            let sent = state.withLock { state in
                switch state.lifecycle {
                case .idle:
                    state.stopRequestedBeforeRun = true
                    return false
                case .running:
                    input.yield(.shutdownRequested(waiter))
                    return true
                case .finished:
                    return false
                }
            }
            if !sent { waiter.resume() }
        }
    }

    /// Delivers `event` if a run is in progress (or about to start consuming events).
    @discardableResult
    func send(_ event: SupervisorEvent) -> Bool {
        state.withLock { state in
            guard state.lifecycle == .running else { return false }
            input.yield(event)
            return true
        }
    }

    /// True the first time only.
    func claimSignalInstallation() -> Bool {
        state.withLock { state in
            defer { state.signalsInstalled = true }
            return !state.signalsInstalled
        }
    }

    private func validate(_ configuration: SupervisorConfiguration) throws(SupervisorError) {
        guard configuration.workerCount >= 1 else {
            throw .invalidConfiguration("workerCount must be at least 1 (got \(configuration.workerCount))")
        }
        guard !configuration.listeners.isEmpty else {
            throw .invalidConfiguration("at least one listener is needed")
        }
        guard Set(configuration.listeners.map(\.name)).count == configuration.listeners.count else {
            throw .invalidConfiguration("listener names must be unique")
        }
    }
}
