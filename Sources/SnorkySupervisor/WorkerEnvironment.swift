#if canImport(Glibc)
import Glibc
#endif
import CSnorkyShims

/// The worker side of the supervisor contract: what a worker process received, and the
/// status bytes it sends back.
///
/// The supervisor starts worker slot `i` as `executablePath workerArguments…` with its own
/// environment plus `workerEnvironment` plus:
/// - `SNORKY_WORKER_SLOT=i`
/// - `SNORKY_LISTEN_FDS=3,4,…`: listener k's socket for this slot is fd 3+k, in the
///   configured listener order (already bound and listening; blocking mode)
/// - `SNORKY_STATUS_FD=<fd>`: write end of a pipe to the supervisor (fd 3+listenerCount)
/// - `SNORKY_SUPERVISOR_PID=<pid>`
/// - `SNORKY_REDIS=unix:///…/redis.sock` when the supervisor runs an embedded Redis
///
/// A worker calls `dieWithSupervisor()` first, `reportReady()` once it accepts on every
/// socket, and on SIGTERM `reportDraining()` as soon as it has stopped accepting, then
/// finishes its connections and exits 0.
public struct WorkerEnvironment: Sendable, Hashable {
    /// Names of the variables above.
    public enum Variable {
        public static let slot = "SNORKY_WORKER_SLOT"
        public static let listenFDs = "SNORKY_LISTEN_FDS"
        public static let statusFD = "SNORKY_STATUS_FD"
        public static let supervisorPID = "SNORKY_SUPERVISOR_PID"
        public static let redis = "SNORKY_REDIS"

        static let all = [slot, listenFDs, statusFD, supervisorPID, redis]
    }

    public var slot: Int
    /// Listening sockets in listener order.
    public var listenFDs: [Int32]
    public var statusFD: Int32
    public var supervisorPID: Int32
    /// `unix:///…/redis.sock` of the embedded Redis, if the supervisor runs one.
    public var redisURL: String?

    public init(slot: Int, listenFDs: [Int32], statusFD: Int32, supervisorPID: Int32, redisURL: String? = nil) {
        self.slot = slot
        self.listenFDs = listenFDs
        self.statusFD = statusFD
        self.supervisorPID = supervisorPID
        self.redisURL = redisURL
    }

    /// This process's worker environment: nil when it was not started by a supervisor
    /// (no `SNORKY_WORKER_SLOT`); throws when the variables are present but malformed.
    public static var current: WorkerEnvironment? {
        get throws(SupervisorError) {
            var environment: [String: String] = [:]
            for name in Variable.all {
                if let value = getenv(name) { environment[name] = String(cString: value) }
            }
            return try WorkerEnvironment(environment: environment)
        }
    }

    /// Parses the variables from `environment`; nil when `SNORKY_WORKER_SLOT` is absent.
    public init?(environment: [String: String]) throws(SupervisorError) {
        guard let slotText = environment[Variable.slot] else { return nil }
        func number<T: FixedWidthInteger>(_ name: String, _ text: String?) throws(SupervisorError) -> T {
            guard let text, let value = T(text), value >= 0 else {
                throw .malformedWorkerEnvironment(name, text ?? "(missing)")
            }
            return value
        }
        slot = try number(Variable.slot, slotText)
        let fdsText = environment[Variable.listenFDs] ?? ""
        var fds: [Int32] = []
        for part in fdsText.split(separator: ",", omittingEmptySubsequences: false) {
            fds.append(try number(Variable.listenFDs, String(part)))
        }
        guard !fds.isEmpty else { throw .malformedWorkerEnvironment(Variable.listenFDs, fdsText) }
        listenFDs = fds
        statusFD = try number(Variable.statusFD, environment[Variable.statusFD])
        supervisorPID = try number(Variable.supervisorPID, environment[Variable.supervisorPID])
        redisURL = environment[Variable.redis]
    }

    /// Asks the kernel to send SIGTERM to this process when the supervisor dies, then
    /// exits at once if it already has (the parent is no longer the supervisor), so a
    /// worker never outlives it.
    public func dieWithSupervisor() {
        _ = snorky_set_parent_death_signal(SIGTERM)
        if getppid() != supervisorPID {
            exit(1)
        }
    }

    /// Tells the supervisor this worker accepts connections (one byte `R`).
    public func reportReady() {
        send(StatusPipe.ready)
    }

    /// Tells the supervisor this worker has stopped accepting (one byte `S`): during a
    /// reload, that is when the slot's next worker is started on the same sockets.
    public func reportDraining() {
        send(StatusPipe.draining)
    }

    /// Best effort: if the supervisor is gone, nobody is listening, and the worker will
    /// get its parent-death signal anyway. (Workers normally ignore SIGPIPE, as NIO does.)
    private func send(_ byte: UInt8) {
        var byte = byte
        while write(statusFD, &byte, 1) < 0 && errno == EINTR {}
    }
}
