#if canImport(Glibc)
import Glibc
#endif
import CSnorkyShims

/// Everything needed to start one child process.
struct SpawnRequest: Sendable {
    /// Path of the program (no PATH lookup).
    var path: String
    /// argv, including argv[0].
    var arguments: [String]
    /// The complete environment of the child.
    var environment: [String: String]
    /// Descriptors the child gets as 3, 4, … in this order; everything else marked
    /// FD_CLOEXEC (all our own descriptors are) is closed in the child.
    var inheritedDescriptors: [Int32] = []
    /// Parent-death signal set in the child before exec (0: none, and posix_spawn is used).
    var deathSignal: Int32 = 0

    /// Starts the child and returns its pid. Blocking and cheap; call it on the
    /// `SpawnerThread`.
    func spawn() -> Result<Int32, SupervisorError> {
        let argv = CStringArray(arguments)
        let envp = CStringArray(environment.map { "\($0.key)=\($0.value)" }.sorted())
        defer {
            argv.free()
            envp.free()
        }
        var pid: pid_t = 0
        let rc = inheritedDescriptors.withUnsafeBufferPointer { fds in
            snorky_spawn(&pid, path, argv.pointers, envp.pointers, fds.baseAddress, Int32(fds.count), deathSignal)
        }
        guard rc == 0 else { return .failure(.spawnFailed(path, errno: rc)) }
        return .success(pid)
    }
}

/// A NULL-terminated `char *[]` for execve-style calls. Freed explicitly: it is only
/// alive for the duration of one spawn.
private struct CStringArray {
    let pointers: [UnsafeMutablePointer<CChar>?]

    init(_ strings: [String]) {
        pointers = strings.map { strdup($0) } + [nil]
    }

    func free() {
        for pointer in pointers { Glibc.free(pointer) }
    }
}

/// The supervisor's own environment, read at spawn time so variables set after startup
/// (by the executable, before calling run()) reach workers too.
func currentProcessEnvironment() -> [String: String] {
    var result: [String: String] = [:]
    let start: UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>? = environ
    guard var entry = start else { return result }
    while let pointer = entry.pointee {
        let pair = String(cString: pointer)
        if let equals = pair.firstIndex(of: "=") {
            result[String(pair[..<equals])] = String(pair[pair.index(after: equals)...])
        }
        entry += 1
    }
    return result
}

/// Reports (on a thread of its own) when `pid` has exited, *without reaping it*: the
/// event loop reaps it with `reap(_:)` when it handles the exit. Until then the pid stays
/// a zombie and cannot be reused, so a signal the supervisor sends to a pid it still
/// tracks can never hit an unrelated process.
///
/// Only this pid is waited for: waiting for any child would steal the children of other
/// code in the same process (tests run many things in one process; a composition root may
/// use Foundation's Process).
func watchExit(of pid: Int32, report: @escaping @Sendable (Int32) -> Void) throws(SupervisorError) {
    try DetachedThread.start(name: "snorky-wait") {
        var info = siginfo_t()
        while waitid(P_PID, id_t(pid), &info, WEXITED | WNOWAIT) != 0 && errno == EINTR {}
        report(pid)
    }
}

/// Collects an exited child's status (after `watchExit` reported it, this does not block).
func reap(_ pid: Int32) -> ExitStatus {
    var status: Int32 = 0
    while true {
        if waitpid(pid, &status, 0) == pid { return ExitStatus(waitStatus: status) }
        if errno != EINTR { return .unknown }
    }
}

/// Is `path` an executable file (what execve needs)?
func isExecutableFile(_ path: String) -> Bool {
    var info = stat()
    guard stat(path, &info) == 0, (info.st_mode & S_IFMT) == S_IFREG else { return false }
    return access(path, X_OK) == 0
}

/// `name` if it contains a slash, else the first executable `dir/name` on `$PATH`.
func resolveExecutable(_ name: String) -> String? {
    if name.contains("/") { return isExecutableFile(name) ? name : nil }
    let path = getenv("PATH").map { String(cString: $0) } ?? "/usr/local/bin:/usr/bin:/bin"
    for directory in path.split(separator: ":", omittingEmptySubsequences: true) {
        let candidate = "\(directory)/\(name)"
        if isExecutableFile(candidate) { return candidate }
    }
    return nil
}
