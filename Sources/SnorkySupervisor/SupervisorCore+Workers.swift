#if canImport(Glibc)
import Glibc
#endif
import Logging

/// Starting workers, and reacting to what they report and to their exits.
extension SupervisorCore {
    func spawnWorker(slot: Int) async {
        let pipe: StatusPipe
        do {
            pipe = try StatusPipe()
        } catch {
            logger.error("cannot start worker", metadata: ["slot": "\(slot)", "error": "\(error)"])
            await workerCrashed(slot: slot)
            return
        }
        let request = workerSpawnRequest(slot: slot, statusFD: pipe.writeEnd)
        let result = await spawner.run { request.spawn() } ?? .failure(.spawnFailed(request.path, errno: ECANCELED))
        // The worker has its own copy now; ours would keep the pipe from reporting EOF.
        close(pipe.writeEnd)

        let pid: Int32
        switch result {
        case .success(let started):
            pid = started
        case .failure(let error):
            close(pipe.readEnd)
            logger.error("cannot start worker", metadata: ["slot": "\(slot)", "error": "\(error)"])
            await workerCrashed(slot: slot)
            return
        }

        let input = input
        do {
            try watchExit(of: pid) { pid in input.yield(.exited(pid: pid)) }
        } catch {
            // Without a watcher we would never notice its exit: stop it and count a crash.
            close(pipe.readEnd)
            logger.error("cannot watch worker; killing it", metadata: ["slot": "\(slot)", "pid": "\(pid)", "error": "\(error)"])
            kill(pid, SIGKILL)
            _ = reap(pid)
            await workerCrashed(slot: slot)
            return
        }
        workers[pid] = Worker(slot: slot)
        slots[slot].current = pid
        logger.info("worker started", metadata: ["slot": "\(slot)", "pid": "\(pid)"])
        do {
            try pipe.startReading { byte in input.yield(.status(pid: pid, byte: byte)) }
        } catch {
            // It could never be seen ready; its exit goes through the normal restart path.
            close(pipe.readEnd)
            logger.error("cannot read worker status; killing it", metadata: ["slot": "\(slot)", "pid": "\(pid)", "error": "\(error)"])
            kill(pid, SIGKILL)
        }
        schedule(after: configuration.readinessTimeout, .readinessDeadline(pid: pid))
        publishState()
    }

    /// The contract with workers (see `WorkerEnvironment`).
    private func workerSpawnRequest(slot: Int, statusFD: Int32) -> SpawnRequest {
        let listenFDs = sockets.descriptors(forSlot: slot)
        var environment = currentProcessEnvironment()
        // A supervisor started by another supervisor must not pass its own contract on.
        for name in WorkerEnvironment.Variable.all { environment[name] = nil }
        environment.merge(configuration.workerEnvironment) { _, new in new }
        environment[WorkerEnvironment.Variable.slot] = "\(slot)"
        environment[WorkerEnvironment.Variable.listenFDs] = listenFDs.indices.map { "\(3 + $0)" }.joined(separator: ",")
        environment[WorkerEnvironment.Variable.statusFD] = "\(3 + listenFDs.count)"
        environment[WorkerEnvironment.Variable.supervisorPID] = "\(getpid())"
        if let redis { environment[WorkerEnvironment.Variable.redis] = redis.plan.url }

        let path = configuration.executablePath
        let argv0 = path == "/proc/self/exe" ? (CommandLine.arguments.first ?? path) : path
        return SpawnRequest(
            path: path,
            arguments: [argv0] + configuration.workerArguments,
            environment: environment,
            inheritedDescriptors: listenFDs + [statusFD]
        )
    }

    func workerStatus(pid: Int32, byte: UInt8) async {
        guard let worker = workers[pid] else { return }  // already exited
        let metadata: Logger.Metadata = ["slot": "\(worker.slot)", "pid": "\(pid)"]
        switch byte {
        case StatusPipe.ready:
            guard !worker.ready else { return }
            workers[pid]?.ready = true
            publishState()
            logger.info("worker ready", metadata: metadata)
            if reload?.step == .startingNew(pid) {
                await replacementReady()
            }
            announceIfClusterReady()
        case StatusPipe.draining:
            logger.info("worker draining", metadata: metadata)
            if reload?.step == .stoppingOld(pid) {
                await startReplacement()
            }
        default:
            logger.debug("unknown worker status byte", metadata: metadata.merging(["byte": "\(byte)"]) { $1 })
        }
    }

    func workerExited(pid: Int32, status: ExitStatus) async {
        guard let worker = workers.removeValue(forKey: pid) else { return }
        let expected = phase == .draining || worker.retiring
        logger.log(
            level: expected ? .info : .warning,
            "worker exited",
            metadata: ["slot": "\(worker.slot)", "pid": "\(pid)", "status": "\(status)"]
        )
        if slots[worker.slot].current == pid {
            slots[worker.slot].current = nil
            announcedReady = false
        }
        publishState()

        if phase == .draining {
            await drainProgress()
        } else if worker.retiring {
            if reload?.step == .stoppingOld(pid) {
                await startReplacement()
            }
        } else {
            if reload?.step == .startingNew(pid) {
                abortReload("the replacement worker of slot \(worker.slot) exited before it was ready")
            }
            await workerCrashed(slot: worker.slot)
        }
    }

    /// A slot lost its worker unexpectedly (or could not start one): restart it later,
    /// or give up on a crash loop.
    func workerCrashed(slot: Int) async {
        guard phase != .draining else { return }
        switch slots[slot].tracker.processCrashed(at: .now) {
        case .restart(let delay):
            logger.info("restarting worker in \(formatDuration(delay))", metadata: ["slot": "\(slot)"])
            slots[slot].restartToken += 1
            schedule(after: delay, .restartDue(slot: slot, token: slots[slot].restartToken))
        case .giveUp(let crashes, let window):
            logger.error(
                "worker slot \(slot) crashed \(crashes) times in \(formatDuration(window)); giving up",
                metadata: ["slot": "\(slot)"]
            )
            exitCode = 1
            await beginDrain(reason: "crash loop")
        }
    }

    func readinessDeadlinePassed(pid: Int32) async {
        guard phase != .draining, let worker = workers[pid], !worker.ready, !worker.retiring else { return }
        let timeout = formatDuration(configuration.readinessTimeout)
        let metadata: Logger.Metadata = ["slot": "\(worker.slot)", "pid": "\(pid)", "timeout": "\(timeout)"]
        if phase == .starting {
            // The cluster never came up: nothing will get better by waiting longer.
            logger.error("worker slot \(worker.slot) not ready after \(timeout); giving up", metadata: metadata)
            exitCode = 1
            await beginDrain(reason: "startup failed")
        } else {
            // Its exit goes through the crash path (backoff, crash-loop limit) and aborts a
            // reload waiting for it.
            logger.error("worker not ready in time; killing it", metadata: metadata)
            kill(pid, SIGKILL)
        }
    }

    /// Logs `cluster ready` each time every slot has a ready worker again (outside a
    /// reload, which logs its own completion).
    func announceIfClusterReady() {
        guard phase != .draining, reload == nil, !announcedReady else { return }
        let allReady = slots.allSatisfy { slot in slot.current.flatMap { workers[$0]?.ready } ?? false }
        guard allReady else { return }
        announcedReady = true
        phase = .running
        logger.info("cluster ready", metadata: ["workers": "\(slots.count)"])
    }
}
