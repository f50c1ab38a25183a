#if canImport(Glibc)
import Glibc
#endif
import Logging

/// What the public `Supervisor` shows of the running state.
struct SupervisorSnapshot: Sendable {
    var workerPIDs: [Int32?]
    /// Per slot: workers started to replace one that died.
    var workerRestarts: [Int]
    /// Per slot: whether its current worker reported ready.
    var workerReady: [Bool]
    var redisURL: String?
    var redisPID: Int32?
}

/// The supervision logic: one instance per `run()`, driven by `SupervisorEvent`s that are
/// handled strictly one after another by the task running `run(events:)`. Nothing here is
/// shared with other threads (they only send events), so it needs no locks; that is also
/// why it is a non-Sendable class.
final class SupervisorCore {
    struct Worker {
        let slot: Int
        var ready = false
        /// Being replaced (reload): its exit is expected and starts no restart.
        var retiring = false
    }

    struct Slot {
        /// The slot's worker, started or ready; nil while waiting for a restart.
        var current: Int32?
        var tracker: RestartTracker<ContinuousClock.Instant>
        /// Identifies the latest scheduled restart so older timers are ignored.
        var restartToken = 0
        /// Workers started to replace one that died (for metrics).
        var restarts = 0
    }

    enum Phase {
        /// Until every slot has reported ready once.
        case starting
        case running
        case draining
    }

    struct Reload {
        enum Step: Equatable {
            case idle
            /// SIGTERM sent to the slot's old worker; waiting for its `S` or its exit.
            case stoppingOld(Int32)
            /// Replacement started; waiting for its `R`.
            case startingNew(Int32)
        }

        var slot = 0
        var step = Step.idle
        var waiters: [CheckedContinuation<Void, Never>]
        /// Another reload was asked for meanwhile: go round again (new binary, new config).
        var again = false
    }

    struct Redis {
        let plan: EmbeddedRedisPlan
        var pid: Int32?
        var ready = false
        var stopping = false
        var tracker: RestartTracker<ContinuousClock.Instant>
        var restartToken = 0
    }

    let configuration: SupervisorConfiguration
    let logger: Logger
    let sockets: ListenerSockets
    let spawner: SpawnerThread
    let input: AsyncStream<SupervisorEvent>.Continuation
    let publish: @Sendable (SupervisorSnapshot) -> Void

    var phase = Phase.starting
    var slots: [Slot]
    var workers: [Int32: Worker] = [:]
    var reload: Reload?
    var redis: Redis?
    var workersLaunched = false
    var announcedReady = false
    var finished = false
    var exitCode: Int32 = 0
    var shutdownWaiters: [CheckedContinuation<Void, Never>] = []
    /// Timers and probes to start in the task group after the current event.
    var pendingTasks: [@Sendable () async -> Void] = []

    init(
        configuration: SupervisorConfiguration,
        logger: Logger,
        sockets: ListenerSockets,
        spawner: SpawnerThread,
        redisPlan: EmbeddedRedisPlan?,
        input: AsyncStream<SupervisorEvent>.Continuation,
        publish: @escaping @Sendable (SupervisorSnapshot) -> Void
    ) {
        self.configuration = configuration
        self.logger = logger
        self.sockets = sockets
        self.spawner = spawner
        self.input = input
        self.publish = publish
        let tracker = RestartTracker<ContinuousClock.Instant>(policy: configuration.restartPolicy)
        slots = Array(repeating: Slot(current: nil, tracker: tracker), count: configuration.workerCount)
        redis = redisPlan.map { Redis(plan: $0, tracker: tracker) }
    }

    /// Supervises until everything has stopped. Returns the exit code and the callers of
    /// `shutdown()` to resume once the caller has cleaned up.
    func run(
        events: inout AsyncStream<SupervisorEvent>.Iterator
    ) async -> (exitCode: Int32, shutdownWaiters: [CheckedContinuation<Void, Never>]) {
        await withDiscardingTaskGroup { group in
            await start()
            startPendingTasks(in: &group)
            while !finished, let event = await events.next() {
                await handle(event)
                startPendingTasks(in: &group)
            }
            // Outstanding timers and probes are moot now.
            group.cancelAll()
        }
        return (exitCode, shutdownWaiters)
    }

    private func startPendingTasks(in group: inout DiscardingTaskGroup) {
        for task in pendingTasks { group.addTask(operation: task) }
        pendingTasks.removeAll()
    }

    private func start() async {
        if redis != nil {
            // Workers start once redis answers (see redisProbeFinished).
            await startRedis()
        } else {
            await launchWorkers()
        }
    }

    func launchWorkers() async {
        workersLaunched = true
        for slot in slots.indices where slots[slot].current == nil && phase != .draining {
            await spawnWorker(slot: slot)
        }
    }

    private func handle(_ event: SupervisorEvent) async {
        switch event {
        case .status(let pid, let byte):
            await workerStatus(pid: pid, byte: byte)
        case .exited(let pid):
            let status = reap(pid)
            if let redis, redis.pid == pid {
                await redisExited(status: status)
            } else {
                await workerExited(pid: pid, status: status)
            }
        case .restartDue(let slot, let token):
            guard phase != .draining, slots[slot].restartToken == token, slots[slot].current == nil else { return }
            slots[slot].restarts += 1
            await spawnWorker(slot: slot)
        case .readinessDeadline(let pid):
            await readinessDeadlinePassed(pid: pid)
        case .retireDeadline(let pid):
            guard let worker = workers[pid], worker.retiring else { return }
            logger.warning(
                "worker did not stop in time; killing it",
                metadata: ["slot": "\(worker.slot)", "pid": "\(pid)", "timeout": "\(formatDuration(configuration.shutdownTimeout))"]
            )
            kill(pid, SIGKILL)
        case .drainDeadline:
            guard !workers.isEmpty else { return }
            logger.warning(
                "workers did not stop in time; killing them",
                metadata: ["pids": "\(workers.keys.sorted())", "timeout": "\(formatDuration(configuration.shutdownTimeout))"]
            )
            for pid in workers.keys { kill(pid, SIGKILL) }
        case .redisRestartDue(let token):
            guard phase != .draining, let redis, redis.restartToken == token, redis.pid == nil else { return }
            await startRedis()
        case .redisStopDeadline:
            guard let pid = redis?.pid else { return }
            logger.warning("redis-server did not stop in time; killing it", metadata: ["pid": "\(pid)"])
            kill(pid, SIGKILL)
        case .redisProbeFinished(let pid, let answered):
            await redisProbeFinished(pid: pid, answered: answered)
        case .reloadRequested(let waiter):
            await requestReload(waiter)
        case .shutdownRequested(let waiter):
            if let waiter { shutdownWaiters.append(waiter) }
            await beginDrain(reason: "shutdown requested")
        case .stopSignal(let signal):
            guard phase == .draining else {
                await beginDrain(reason: "\(signalName(signal))")
                return
            }
            logger.warning("stop signal while draining; killing every child now", metadata: ["signal": "\(signalName(signal))"])
            for pid in workers.keys { kill(pid, SIGKILL) }
            if let pid = redis?.pid { kill(pid, SIGKILL) }
        }
    }

    // MARK: - Timers and shared state

    /// Delivers `event` after `delay` (unless the run is over by then).
    func schedule(after delay: Duration, _ event: SupervisorEvent) {
        let input = input
        pendingTasks.append {
            try? await Task.sleep(for: delay)
            if !Task.isCancelled { input.yield(event) }
        }
    }

    func publishState() {
        publish(SupervisorSnapshot(
            workerPIDs: slots.map(\.current),
            workerRestarts: slots.map(\.restarts),
            workerReady: slots.map { slot in slot.current.flatMap { workers[$0]?.ready } ?? false },
            redisURL: redis.flatMap { $0.pid != nil ? $0.plan.url : nil },
            redisPID: redis?.pid
        ))
    }

    // MARK: - Drain

    func beginDrain(reason: String) async {
        guard phase != .draining else { return }
        phase = .draining
        if let reload {
            self.reload = nil
            logger.info("reload cancelled by shutdown")
            reload.waiters.forEach { $0.resume() }
        }
        logger.info("shutting down", metadata: ["reason": "\(reason)", "workers": "\(workers.count)"])
        for pid in workers.keys { kill(pid, SIGTERM) }
        schedule(after: configuration.shutdownTimeout, .drainDeadline)
        await drainProgress()
    }

    /// Called whenever a child exits during a drain: workers first, then redis (workers
    /// may still publish while they drain), then the end of the run.
    func drainProgress() async {
        guard phase == .draining, workers.isEmpty else { return }
        if let redis, let pid = redis.pid {
            if !redis.stopping {
                self.redis?.stopping = true
                logger.info("stopping redis-server", metadata: ["pid": "\(pid)"])
                kill(pid, SIGTERM)
                schedule(after: configuration.shutdownTimeout, .redisStopDeadline)
            }
            return
        }
        redis?.plan.removeRuntimeDirectory()
        finished = true
        publishState()
        logger.info("supervisor stopped", metadata: ["exitCode": "\(exitCode)"])
    }
}
