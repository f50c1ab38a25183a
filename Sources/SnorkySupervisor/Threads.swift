#if canImport(Glibc)
import Glibc
#endif
import CSnorkyShims

/// Plain POSIX threads for work that must not run on Swift's cooperative pool: blocking
/// syscalls (waitpid, read on a pipe) would starve it, and some work needs a thread whose
/// lifetime we control (see `SpawnerThread`).
enum DetachedThread {
    /// Boxes the closure so it can cross pthread_create's `void *` argument.
    private final class Body: Sendable {
        let name: String
        let run: @Sendable () -> Void
        init(name: String, run: @escaping @Sendable () -> Void) {
            self.name = name
            self.run = run
        }
    }

    /// Starts a detached thread running `body`. `name` shows in `ps -L`/`top -H`
    /// (truncated to 15 bytes by the kernel).
    static func start(name: String, _ body: @escaping @Sendable () -> Void) throws(SupervisorError) {
        let box = Unmanaged.passRetained(Body(name: name, run: body)).toOpaque()
        var attributes = pthread_attr_t()
        pthread_attr_init(&attributes)
        defer { pthread_attr_destroy(&attributes) }
        pthread_attr_setdetachstate(&attributes, Int32(PTHREAD_CREATE_DETACHED))
        var thread = pthread_t()
        let rc = pthread_create(&thread, &attributes, { argument in
            let body = Unmanaged<Body>.fromOpaque(argument!).takeRetainedValue()
            snorky_set_thread_name(body.name)
            body.run()
            return nil
        }, box)
        if rc != 0 {
            Unmanaged<Body>.fromOpaque(box).release()
            throw .spawnFailed("thread \(name)", errno: rc)
        }
    }

    /// Runs blocking `body` on a new thread and suspends (without blocking a cooperative
    /// thread) until it returns.
    static func run<T: Sendable>(
        name: String,
        _ body: @escaping @Sendable () -> T
    ) async throws(SupervisorError) -> T {
        let result: Result<T, SupervisorError> = await withCheckedContinuation { continuation in
            do throws(SupervisorError) {
                try start(name: name) { continuation.resume(returning: .success(body())) }
            } catch {
                continuation.resume(returning: .failure(error))
            }
        }
        return try result.get()
    }
}
