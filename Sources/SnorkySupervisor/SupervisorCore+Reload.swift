#if canImport(Glibc)
import Glibc
#endif
import Logging

/// Rolling replacement, one slot at a time: stop the old worker accepting, start its
/// replacement on the same sockets, wait until it accepts, go on. Connections arriving
/// meanwhile wait in the slot's socket backlog (the supervisor keeps the socket open), so
/// none is refused.
extension SupervisorCore {
    func requestReload(_ waiter: CheckedContinuation<Void, Never>) async {
        guard phase != .draining else {
            waiter.resume()
            return
        }
        if reload != nil {
            // The running reload may already have passed some slots with the old code.
            reload?.waiters.append(waiter)
            reload?.again = true
            return
        }
        reload = Reload(waiters: [waiter])
        logger.info("reload started", metadata: ["workers": "\(slots.count)"])
        await continueReload()
    }

    /// Retires the worker of the current slot, or finishes the reload after the last one.
    private func continueReload() async {
        while var current = reload {
            if current.slot >= slots.count {
                if current.again {
                    current.slot = 0
                    current.again = false
                    reload = current
                    logger.info("reload requested again during a reload; starting over")
                    continue
                }
                reload = nil
                logger.info("reload complete", metadata: ["workers": "\(slots.count)"])
                current.waiters.forEach { $0.resume() }
                announceIfClusterReady()
                return
            }
            guard let old = slots[current.slot].current else {
                // Waiting for a restart, which runs the new code anyway.
                reload?.slot += 1
                continue
            }
            retire(pid: old)
            reload?.step = .stoppingOld(old)
            return
        }
    }

    /// Asks a worker to drain; it stays in `workers` until it exits, but its slot is free.
    private func retire(pid: Int32) {
        guard let slot = workers[pid]?.slot else { return }
        workers[pid]?.retiring = true
        slots[slot].current = nil
        announcedReady = false
        logger.info("stopping worker for reload", metadata: ["slot": "\(slot)", "pid": "\(pid)"])
        kill(pid, SIGTERM)
        schedule(after: configuration.shutdownTimeout, .retireDeadline(pid: pid))
        publishState()
    }

    /// The old worker stopped accepting (or exited): start the slot's new worker.
    func startReplacement() async {
        guard let current = reload, case .stoppingOld = current.step else { return }
        await spawnWorker(slot: current.slot)
        // A failed spawn counted as a crash, which may have started a drain.
        guard reload != nil else { return }
        if let pid = slots[current.slot].current {
            reload?.step = .startingNew(pid)
        } else {
            abortReload("the replacement worker of slot \(current.slot) could not be started")
        }
    }

    func replacementReady() async {
        reload?.slot += 1
        reload?.step = .idle
        await continueReload()
    }

    /// Leaves the remaining slots on their old workers: a replacement that does not come
    /// up would most likely fail in every slot.
    func abortReload(_ reason: String) {
        guard let current = reload else { return }
        reload = nil
        logger.error("reload aborted", metadata: ["reason": "\(reason)"])
        current.waiters.forEach { $0.resume() }
    }
}
