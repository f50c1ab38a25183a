#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#elseif canImport(Darwin)
import Darwin
#endif

/// `posix_spawn` with what a test's child process needs, and nothing it must not inherit.
///
/// - The child gets an empty signal mask and default handlers: a process spawned from a
///   Swift concurrency or Dispatch thread otherwise inherits SIGTERM/SIGINT/SIGHUP blocked,
///   and a test could never stop it gracefully.
/// - The child leads its own process group, so cleanup can kill the process together with
///   anything it spawned (a supervisor's workers).
/// - stdout and stderr go to pipes, stdin reads /dev/null, and every other descriptor is
///   closed in the child: tests run in parallel, and a child that inherited another test's
///   pipe or listening socket would keep it open.
enum ProcessSpawn {
    struct Spawned {
        var pid: pid_t
        /// Read ends of the child's stdout and stderr; the caller owns them.
        var stdout: CInt
        var stderr: CInt
    }

    static func spawn(
        executable: String,
        arguments: [String],
        environment: [String: String],
        workingDirectory: String?
    ) throws -> Spawned {
        let stdoutPipe = try makePipe()
        let stderrPipe: (read: CInt, write: CInt)
        do {
            stderrPipe = try makePipe()
        } catch {
            close(stdoutPipe.read)
            close(stdoutPipe.write)
            throw error
        }
        // The parent never writes into the child's output pipes.
        defer {
            close(stdoutPipe.write)
            close(stderrPipe.write)
        }

        #if canImport(Darwin)
        var actions: posix_spawn_file_actions_t? = nil
        var attributes: posix_spawnattr_t? = nil
        #else
        var actions = posix_spawn_file_actions_t()
        var attributes = posix_spawnattr_t()
        #endif
        posix_spawn_file_actions_init(&actions)
        defer { posix_spawn_file_actions_destroy(&actions) }
        posix_spawnattr_init(&attributes)
        defer { posix_spawnattr_destroy(&attributes) }

        posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0)
        posix_spawn_file_actions_adddup2(&actions, stdoutPipe.write, 1)
        posix_spawn_file_actions_adddup2(&actions, stderrPipe.write, 2)
        if let workingDirectory {
            guard let addChdir = GlibcExtensions.addChdir else {
                throw ProcessHandleError.spawnFailed(executable: executable, reason: "changing directory is not supported here")
            }
            _ = addChdir(&actions, workingDirectory)
        }
        _ = GlibcExtensions.addCloseFrom?(&actions, 3)

        var noSignals = sigset_t()
        sigemptyset(&noSignals)
        posix_spawnattr_setsigmask(&attributes, &noSignals)
        var defaultSignals = sigset_t()
        sigemptyset(&defaultSignals)
        // SIGPIPE matters most: the test runner ignores it, and ignored signals survive exec.
        for signal in [SIGPIPE, SIGTERM, SIGINT, SIGHUP, SIGQUIT, SIGUSR1, SIGUSR2, SIGCHLD] {
            sigaddset(&defaultSignals, signal)
        }
        posix_spawnattr_setsigdefault(&attributes, &defaultSignals)
        posix_spawnattr_setpgroup(&attributes, 0)
        posix_spawnattr_setflags(&attributes, Int16(POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF | POSIX_SPAWN_SETPGROUP))

        let argv = ([executable] + arguments).map { strdup($0) }
        let envp = environment.map { strdup("\($0.key)=\($0.value)") }
        defer {
            argv.forEach { free($0) }
            envp.forEach { free($0) }
        }
        var pid: pid_t = 0
        // posix_spawnp searches PATH only for names without a slash, like a shell.
        let result = (argv + [nil]).withUnsafeBufferPointer { argvBuffer in
            (envp + [nil]).withUnsafeBufferPointer { envpBuffer in
                posix_spawnp(&pid, executable, &actions, &attributes, argvBuffer.baseAddress!, envpBuffer.baseAddress!)
            }
        }
        guard result == 0 else {
            close(stdoutPipe.read)
            close(stderrPipe.read)
            throw ProcessHandleError.spawnFailed(executable: executable, reason: String(cString: strerror(result)))
        }
        return Spawned(pid: pid, stdout: stdoutPipe.read, stderr: stderrPipe.read)
    }

    /// A pipe whose ends are close-on-exec, so that only the dup2'd copies reach the child.
    private static func makePipe() throws -> (read: CInt, write: CInt) {
        var fds: [CInt] = [-1, -1]
        guard pipe(&fds) == 0 else {
            throw ProcessHandleError.spawnFailed(executable: "", reason: "pipe: \(String(cString: strerror(errno)))")
        }
        _ = fcntl(fds[0], F_SETFD, FD_CLOEXEC)
        _ = fcntl(fds[1], F_SETFD, FD_CLOEXEC)
        return (fds[0], fds[1])
    }
}

/// Sends `signal` to a process, or to a whole process group when `group` is true.
/// (A free function because `ProcessHandle`'s `signal` and `kill` methods shadow libc's.)
func sendSignal(_ signal: CInt, to pid: pid_t, group: Bool = false) -> Bool {
    kill(group ? -pid : pid, signal) == 0
}

/// glibc extensions Swift's Glibc module does not import (they need `_GNU_SOURCE`),
/// looked up at run time. Both exist since glibc 2.34.
enum GlibcExtensions {
    #if canImport(Darwin)
    typealias Actions = posix_spawn_file_actions_t?
    #else
    typealias Actions = posix_spawn_file_actions_t
    #endif
    typealias AddCloseFrom = @convention(c) (UnsafeMutablePointer<Actions>, CInt) -> CInt
    typealias AddChdir = @convention(c) (UnsafeMutablePointer<Actions>, UnsafePointer<CChar>) -> CInt

    static let addCloseFrom: AddCloseFrom? = lookup("posix_spawn_file_actions_addclosefrom_np")
    static let addChdir: AddChdir? = lookup("posix_spawn_file_actions_addchdir_np")

    private static func lookup<F>(_ name: String) -> F? {
        #if canImport(Darwin)
        let handle = UnsafeMutableRawPointer(bitPattern: -2)  // RTLD_DEFAULT
        #else
        let handle: UnsafeMutableRawPointer? = nil  // RTLD_DEFAULT
        #endif
        guard let symbol = dlsym(handle, name) else { return nil }
        return unsafeBitCast(symbol, to: F.self)
    }
}

/// Writes to the test runner's stderr (the C `stderr` global is not concurrency-safe in Swift 6).
func printToStderr(_ text: String) {
    var text = text
    text.withUTF8 { bytes in _ = write(2, bytes.baseAddress, bytes.count) }
}
