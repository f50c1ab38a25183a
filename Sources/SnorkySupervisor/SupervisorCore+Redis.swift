#if canImport(Glibc)
import Glibc
#endif
import Logging

/// The embedded redis-server: started before the workers, restarted when it dies (with
/// the same backoff and crash-loop limit as a worker slot), stopped after the workers.
extension SupervisorCore {
    func startRedis() async {
        guard let plan = redis?.plan else { return }
        let request = plan.spawnRequest
        let result = await spawner.run { request.spawn() } ?? .failure(.spawnFailed(request.path, errno: ECANCELED))
        let pid: Int32
        switch result {
        case .success(let started):
            pid = started
        case .failure(let error):
            logger.error("cannot start redis-server", metadata: ["error": "\(error)"])
            await redisCrashed()
            return
        }
        let input = input
        do {
            try watchExit(of: pid) { pid in input.yield(.exited(pid: pid)) }
        } catch {
            logger.error("cannot watch redis-server; killing it", metadata: ["pid": "\(pid)", "error": "\(error)"])
            kill(pid, SIGKILL)
            _ = reap(pid)
            await redisCrashed()
            return
        }
        redis?.pid = pid
        redis?.ready = false
        publishState()
        logger.info("redis-server started", metadata: ["pid": "\(pid)", "socket": "\(plan.socketPath)"])

        let socketPath = plan.socketPath
        let deadline = ContinuousClock.now + configuration.readinessTimeout
        pendingTasks.append {
            let answered = await RedisPing.waitUntilAnswering(socketPath: socketPath, deadline: deadline)
            input.yield(.redisProbeFinished(pid: pid, answered: answered))
        }
    }

    func redisProbeFinished(pid: Int32, answered: Bool) async {
        guard phase != .draining, let redis, redis.pid == pid else { return }
        if answered {
            self.redis?.ready = true
            publishState()
            logger.info("redis-server ready", metadata: ["url": "\(redis.plan.url)"])
            if !workersLaunched { await launchWorkers() }
            return
        }
        let timeout = formatDuration(configuration.readinessTimeout)
        if !workersLaunched {
            logger.error("redis-server did not answer PING within \(timeout); giving up", metadata: ["pid": "\(pid)"])
            exitCode = 1
            await beginDrain(reason: "startup failed")
        } else {
            // Its exit takes the restart path.
            logger.error("restarted redis-server did not answer PING within \(timeout); killing it", metadata: ["pid": "\(pid)"])
            kill(pid, SIGKILL)
        }
    }

    func redisExited(status: ExitStatus) async {
        guard let pid = redis?.pid else { return }
        redis?.pid = nil
        redis?.ready = false
        publishState()
        if phase == .draining {
            logger.info("redis-server stopped", metadata: ["pid": "\(pid)", "status": "\(status)"])
            await drainProgress()
            return
        }
        logger.warning("redis-server exited", metadata: ["pid": "\(pid)", "status": "\(status)"])
        await redisCrashed()
    }

    private func redisCrashed() async {
        guard phase != .draining, redis != nil else { return }
        switch redis!.tracker.processCrashed(at: .now) {
        case .restart(let delay):
            logger.info("restarting redis-server in \(formatDuration(delay))")
            redis!.restartToken += 1
            schedule(after: delay, .redisRestartDue(token: redis!.restartToken))
        case .giveUp(let crashes, let window):
            logger.error("redis-server crashed \(crashes) times in \(formatDuration(window)); giving up")
            exitCode = 1
            await beginDrain(reason: "redis-server crash loop")
        }
    }
}
