import Foundation
import NIOCore
import NIOPosix
import Synchronization

/// A child process started by a test (usually `snorky serve`), with its output captured
/// line by line and its lifetime tied to the handle.
///
/// Output waits are event-driven: `waitForLine` resumes as soon as a matching line is read.
/// The process leads its own process group; `terminate()` (or dropping the handle) kills
/// the whole group, so a test never leaves a supervisor or its workers behind.
public final class ProcessHandle: Sendable {
    /// How a process ended.
    public enum Exit: Sendable, Equatable, CustomStringConvertible {
        case exited(Int32)
        case signaled(Int32)

        /// The exit code, or 128 + the signal number, as a shell reports it.
        public var code: Int32 {
            switch self {
            case .exited(let code): code
            case .signaled(let signal): 128 + signal
            }
        }

        public var description: String {
            switch self {
            case .exited(let code): "exited with status \(code)"
            case .signaled(let signal): "killed by signal \(signal)"
            }
        }
    }

    public let pid: pid_t
    public let executable: String
    public let arguments: [String]
    private let output: ProcessOutput
    private let exitWatcher: ExitWatcher

    private init(pid: pid_t, executable: String, arguments: [String], output: ProcessOutput, exitWatcher: ExitWatcher) {
        self.pid = pid
        self.executable = executable
        self.arguments = arguments
        self.output = output
        self.exitWatcher = exitWatcher
    }

    deinit {
        // Kill the whole group even if the leader already exited: leftovers must not outlive
        // the test. A group that no longer exists just makes kill fail with ESRCH.
        _ = sendSignal(SIGKILL, to: pid, group: true)
    }

    /// Starts `executable` (a path, or a name looked up in PATH).
    ///
    /// - Parameters:
    ///   - environment: the complete environment; nil inherits the test runner's.
    ///   - addingEnvironment: variables set on top of `environment`.
    ///   - echoOutput: also print every output line to the test's stderr, prefixed with the
    ///     executable name and pid. Defaults to on when `SNORKY_TEST_ECHO` is set, which is
    ///     the quickest way to see what a server did in a failing test.
    public static func launch(
        _ executable: String,
        arguments: [String] = [],
        environment: [String: String]? = nil,
        addingEnvironment: [String: String] = [:],
        workingDirectory: String? = nil,
        echoOutput: Bool = ProcessInfo.processInfo.environment["SNORKY_TEST_ECHO"] != nil,
        on group: any EventLoopGroup = MultiThreadedEventLoopGroup.singleton
    ) async throws -> ProcessHandle {
        let environment = (environment ?? ProcessInfo.processInfo.environment)
            .merging(addingEnvironment) { _, added in added }
        let spawned = try ProcessSpawn.spawn(
            executable: executable,
            arguments: arguments,
            environment: environment,
            workingDirectory: workingDirectory
        )
        let name = executable.split(separator: "/").last.map(String.init) ?? executable
        let output = ProcessOutput(echoPrefix: echoOutput ? "[\(name) \(spawned.pid)] " : nil)
        let exitWatcher = ExitWatcher(pid: spawned.pid)
        let handle = ProcessHandle(
            pid: spawned.pid, executable: executable, arguments: arguments, output: output, exitWatcher: exitWatcher)
        do {
            try await output.startReading(stdout: spawned.stdout, stderr: spawned.stderr, group: group)
        } catch {
            // The handle's deinit kills the process.
            throw ProcessHandleError.spawnFailed(executable: executable, reason: "reading its output: \(error)")
        }
        return handle
    }

    // MARK: Output

    /// Every line read so far, at most the last 10,000, in arrival order. The two pipes are
    /// read independently, so lines keep their order within stdout and within stderr, but
    /// not necessarily between them.
    public var outputLines: [OutputLine] { output.history }

    /// The output as an async sequence, from the start, ending when both pipes close.
    /// Meant for a single consumer; independent of `waitForLine`.
    public var lines: AsyncStream<OutputLine> { output.lines }

    /// Waits for a line (from stdout or stderr) that satisfies `predicate` and returns it.
    ///
    /// Lines are consumed in order: each call examines only lines after the one the previous
    /// call returned, so waiting twice for "worker started" waits for two such lines.
    /// - Throws: `ProcessHandleError.timedOut` or `.outputEnded`, with the last 50 lines.
    @discardableResult
    public func waitForLine(
        matching predicate: (String) -> Bool,
        timeout: Duration = .seconds(10)
    ) async throws -> String {
        let deadline = ContinuousClock.Instant.after(timeout)
        while true {
            let line: OutputLine
            do {
                line = try await output.queue.next(deadline: deadline)
            } catch TimedQueue<OutputLine>.Failure.timedOut {
                throw ProcessHandleError.timedOut(
                    waitingFor: "a matching output line from \(description)", after: timeout, recentOutput: recentOutput())
            } catch is TimedQueue<OutputLine>.Failure {
                // Both pipes closed: the process (and anything it spawned) is gone or closed them.
                // The pipes usually close as it exits; give the reaper a moment to report how.
                _ = try? await exitWatcher.wait(deadline: .after(.seconds(1)))
                throw ProcessHandleError.outputEnded(process: description, exit: exit, recentOutput: recentOutput())
            }
            if predicate(line.text) { return line.text }
        }
    }

    /// `waitForLine` for the common case of a fixed substring.
    @discardableResult
    public func waitForLine(containing text: String, timeout: Duration = .seconds(10)) async throws -> String {
        try await waitForLine(matching: { $0.contains(text) }, timeout: timeout)
    }

    /// The last `count` output lines, for error messages.
    public func recentOutput(_ count: Int = 50) -> [String] {
        output.tail(count).map(\.description)
    }

    // MARK: Signals and exit

    /// How the process ended, or nil while it runs.
    public var exit: Exit? { exitWatcher.exit }

    public var isRunning: Bool { exit == nil }

    /// Sends `signal` to the process (not its group).
    /// - Throws: `ProcessHandleError.notRunning` once it has exited (its pid may be reused).
    public func signal(_ signal: Int32) throws {
        guard isRunning, sendSignal(signal, to: pid) else { throw ProcessHandleError.notRunning(description) }
    }

    /// Sends SIGKILL to the process only, so that a test can check what its children do.
    public func kill() throws {
        try signal(SIGKILL)
    }

    /// Waits for the process to exit and returns its exit code (128 + signal if killed).
    @discardableResult
    public func waitForExit(timeout: Duration = .seconds(10)) async throws -> Int32 {
        do {
            return try await exitWatcher.wait(deadline: .after(timeout)).code
        } catch TimedQueue<Never>.Failure.timedOut {
            throw ProcessHandleError.timedOut(
                waitingFor: "\(description) to exit", after: timeout, recentOutput: recentOutput())
        }
    }

    /// Stops the process: SIGTERM, then SIGKILL to its whole group if it has not exited
    /// after `grace`. Returns how it ended. Safe to call more than once.
    @discardableResult
    public func terminate(grace: Duration = .seconds(5)) async -> Exit? {
        if isRunning {
            _ = sendSignal(SIGTERM, to: pid)
            _ = try? await exitWatcher.wait(deadline: .after(grace))
        }
        // Also reaps children left in the group when the leader exited on its own.
        _ = sendSignal(SIGKILL, to: pid, group: true)
        return try? await exitWatcher.wait(deadline: .after(.seconds(5)))
    }

    private var description: String { "\(executable) (pid \(pid))" }
}

public enum ProcessHandleError: Error, Sendable, CustomStringConvertible {
    case spawnFailed(executable: String, reason: String)
    case executableNotFound(name: String, searched: [String])
    case timedOut(waitingFor: String, after: Duration, recentOutput: [String])
    /// Both output pipes closed before a matching line appeared.
    case outputEnded(process: String, exit: ProcessHandle.Exit?, recentOutput: [String])
    case notRunning(String)

    public var description: String {
        switch self {
        case .spawnFailed(let executable, let reason):
            return "could not start \(executable): \(reason)"
        case .executableNotFound(let name, let searched):
            return "executable '\(name)' not found in \(searched.joined(separator: ", ")); build it first "
                + "(swift build --product \(name)) or set SNORKY_EXECUTABLE"
        case .timedOut(let what, let duration, let recent):
            return "timed out after \(duration) waiting for \(what)" + Self.format(recent)
        case .outputEnded(let process, let exit, let recent):
            return "\(process) closed its output (\(exit?.description ?? "still running")) before a matching line"
                + Self.format(recent)
        case .notRunning(let process):
            return "\(process) is not running"
        }
    }

    private static func format(_ lines: [String]) -> String {
        lines.isEmpty ? "; it printed nothing" : "; last \(lines.count) lines of output:\n" + lines.joined(separator: "\n")
    }
}

/// Reaps the child on a dedicated thread blocked in `waitpid`, the one way to learn of an
/// exit the moment it happens without SIGCHLD handlers (which would fight other code in
/// the test runner). It waits for this pid only.
private final class ExitWatcher: Sendable {
    private let status = Mutex<ProcessHandle.Exit?>(nil)
    /// Finished (with no elements) when the process has exited; used only to wait.
    private let exited = TimedQueue<Never>()

    init(pid: pid_t) {
        Thread.detachNewThread { [self] in
            var raw: Int32 = 0
            var result: pid_t
            repeat {
                result = waitpid(pid, &raw, 0)
            } while result == -1 && errno == EINTR
            // WIFEXITED/WEXITSTATUS/WTERMSIG are C macros Swift cannot import.
            let signal = raw & 0x7F
            let exit: ProcessHandle.Exit = signal == 0 ? .exited((raw >> 8) & 0xFF) : .signaled(signal)
            status.withLock { $0 = exit }
            exited.finish()
        }
    }

    var exit: ProcessHandle.Exit? { status.withLock { $0 } }

    func wait(deadline: ContinuousClock.Instant) async throws -> ProcessHandle.Exit {
        try await exited.waitForFinish(deadline: deadline)
        // `finish` is called only after the status is stored.
        return exit!
    }
}
