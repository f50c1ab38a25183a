/// Polls `condition` until it returns true, failing after `timeout`.
///
/// Only for state outside the test's reach that announces nothing: whether a process still
/// exists, a file appeared, a port stopped accepting connections. Anything that produces an
/// event (a WebSocket frame, an output line, an exit) must be awaited with the harness's
/// event-driven waits instead, which react at once and never flake on a slow machine.
public func eventually(
    timeout: Duration,
    poll: Duration = .milliseconds(20),
    _ description: @autoclosure () -> String = "condition",
    fileID: String = #fileID,
    line: Int = #line,
    _ condition: () async throws -> Bool
) async throws {
    let deadline = ContinuousClock.now.advanced(by: timeout)
    while true {
        if try await condition() { return }
        guard ContinuousClock.now < deadline else {
            throw EventuallyTimedOut(description: description(), timeout: timeout, fileID: fileID, line: line)
        }
        try await Task.sleep(for: poll)
    }
}

public struct EventuallyTimedOut: Error, Sendable, CustomStringConvertible {
    public var description: String

    init(description: String, timeout: Duration, fileID: String, line: Int) {
        self.description = "\(description) still false after \(timeout) (eventually at \(fileID):\(line))"
    }
}
