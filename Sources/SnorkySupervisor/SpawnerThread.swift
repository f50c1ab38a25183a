#if canImport(Glibc)
import Glibc
#endif
import CSnorkyShims
import Synchronization

/// One long-lived thread that starts every child process.
///
/// PR_SET_PDEATHSIG fires when the *thread* that created a child exits, not the process;
/// Swift's cooperative pool and libdispatch retire idle threads, which would kill healthy
/// workers (and embedded redis) seconds after they start. Every spawn therefore runs here,
/// and this thread lives until the supervisor has reaped all its children.
final class SpawnerThread: Sendable {
    private struct Queue {
        var jobs: [@Sendable () -> Void] = []
        var stopped = false
    }

    private let queue = Mutex(Queue())
    /// The thread sleeps in read() on this pipe; a byte means "look at the queue".
    private let wakeRead: Int32
    private let wakeWrite: Int32

    init() throws(SupervisorError) {
        var fds: [Int32] = [-1, -1]
        guard snorky_pipe_cloexec(&fds) == 0 else { throw .spawnFailed("spawner pipe", errno: errno) }
        wakeRead = fds[0]
        wakeWrite = fds[1]
        do throws(SupervisorError) {
            // The thread keeps this object alive until stop().
            try DetachedThread.start(name: "snorky-spawner") { [self] in
                loop()
                close(wakeRead)
                close(wakeWrite)
            }
        } catch {
            close(fds[0])
            close(fds[1])
            throw error
        }
    }

    private func loop() {
        var byte: UInt8 = 0
        while true {
            let (jobs, stopped) = queue.withLock { state in
                defer { state.jobs.removeAll() }
                return (state.jobs, state.stopped)
            }
            for job in jobs { job() }
            if stopped { return }
            if jobs.isEmpty {
                // EINTR or a wake byte: either way, look at the queue again.
                _ = read(wakeRead, &byte, 1)
            }
        }
    }

    /// Runs `body` on the spawner thread and returns its result; nil once stopped.
    func run<T: Sendable>(_ body: @escaping @Sendable () -> T) async -> T? {
        await withCheckedContinuation { (continuation: CheckedContinuation<T?, Never>) in
            let accepted = queue.withLock { state in
                guard !state.stopped else { return false }
                state.jobs.append { continuation.resume(returning: body()) }
                wake()
                return true
            }
            if !accepted { continuation.resume(returning: nil) }
        }
    }

    /// Lets the thread finish its queued jobs and exit. Call only when no child it started
    /// is alive any more: their parent-death signal fires when it exits.
    func stop() {
        queue.withLock { state in
            guard !state.stopped else { return }
            state.stopped = true
            wake()
        }
    }

    /// Called with the queue locked: the thread closes the pipe only after it has seen
    /// `stopped` under the same lock, so this never writes to a closed (or reused) fd.
    private func wake() {
        var byte: UInt8 = 1
        _ = write(wakeWrite, &byte, 1)
    }
}
