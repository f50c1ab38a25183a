import Logging
import Synchronization

#if canImport(Glibc)
import Glibc
#endif

/// One captured log line.
struct LogRecord: Sendable, CustomStringConvertible {
    var level: Logger.Level
    var message: String
    var metadata: [String: String]

    var description: String {
        let fields = metadata.sorted { $0.key < $1.key }.map { "\($0.key)=\($0.value)" }.joined(separator: " ")
        return "[\(level)] \(message) \(fields)"
    }
}

struct LogWaitTimedOut: Error, CustomStringConvertible {
    var what: String
    var description: String { "timed out waiting for a log line: \(what)" }
}

/// Collects a supervisor's log lines and lets a test await one (no polling). Set
/// SNORKY_TEST_LOGS=1 to also print them to stderr.
final class LogCapture: Sendable {
    private struct Waiter {
        let predicate: @Sendable (LogRecord) -> Bool
        let continuation: CheckedContinuation<LogRecord, any Error>
    }

    private struct State {
        var records: [LogRecord] = []
        var waiters: [Int: Waiter] = [:]
        var cancelled: Set<Int> = []
        var nextID = 0
    }

    private let state = Mutex(State())
    private let echo = getenv("SNORKY_TEST_LOGS") != nil

    var logger: Logger {
        var logger = Logger(label: "supervisor-test") { _ in Handler(capture: self) }
        logger.logLevel = .debug
        return logger
    }

    var records: [LogRecord] { state.withLock { $0.records } }

    func records(_ message: String) -> [LogRecord] {
        records.filter { $0.message == message }
    }

    fileprivate func append(_ record: LogRecord) {
        if echo {
            let line = Array("\(record)\n".utf8)
            _ = write(2, line, line.count)
        }
        let matched = state.withLock { state in
            state.records.append(record)
            let ids = state.waiters.filter { $0.value.predicate(record) }.map(\.key)
            return ids.compactMap { state.waiters.removeValue(forKey: $0) }
        }
        for waiter in matched { waiter.continuation.resume(returning: record) }
    }

    /// The first line (already logged or yet to come) matching `predicate`.
    func first(
        _ what: String,
        timeout: Duration = .seconds(20),
        where predicate: @escaping @Sendable (LogRecord) -> Bool
    ) async throws -> LogRecord {
        try await withThrowingTaskGroup(of: LogRecord.self) { group in
            group.addTask { try await self.wait(for: predicate) }
            group.addTask {
                try await Task.sleep(for: timeout)
                throw LogWaitTimedOut(what: what)
            }
            defer { group.cancelAll() }
            return try await group.next()!
        }
    }

    /// The first line with this message whose metadata contains `metadata`.
    func first(_ message: String, _ metadata: [String: String] = [:], timeout: Duration = .seconds(20)) async throws -> LogRecord {
        try await first("\(message) \(metadata)", timeout: timeout) { record in
            record.message == message && metadata.allSatisfy { record.metadata[$0.key] == $0.value }
        }
    }

    /// Waits until `count` lines with this message exist.
    func count(_ message: String, reaches count: Int, timeout: Duration = .seconds(20)) async throws {
        let seen = Mutex(0)
        _ = try await first("\(count)× \(message)", timeout: timeout) { record in
            guard record.message == message else { return false }
            return seen.withLock { $0 += 1; return $0 >= count }
        }
    }

    private func wait(for predicate: @escaping @Sendable (LogRecord) -> Bool) async throws -> LogRecord {
        let id = state.withLock { state in
            defer { state.nextID += 1 }
            return state.nextID
        }
        return try await withTaskCancellationHandler {
            try await withCheckedThrowingContinuation { continuation in
                let existing: Result<LogRecord, any Error>? = state.withLock { state in
                    if state.cancelled.remove(id) != nil { return .failure(CancellationError()) }
                    if let record = state.records.first(where: predicate) { return .success(record) }
                    state.waiters[id] = Waiter(predicate: predicate, continuation: continuation)
                    return nil
                }
                if let existing { continuation.resume(with: existing) }
            }
        } onCancel: {
            let waiter = state.withLock { state in
                guard let waiter = state.waiters.removeValue(forKey: id) else {
                    state.cancelled.insert(id)
                    return nil as Waiter?
                }
                return waiter
            }
            waiter?.continuation.resume(throwing: CancellationError())
        }
    }

    private struct Handler: LogHandler {
        let capture: LogCapture
        var metadata: Logger.Metadata = [:]
        var logLevel: Logger.Level = .debug

        subscript(metadataKey key: String) -> Logger.Metadata.Value? {
            get { metadata[key] }
            set { metadata[key] = newValue }
        }

        func log(event: LogEvent) {
            let merged = metadata.merging(event.metadata ?? [:]) { $1 }
            capture.append(LogRecord(
                level: event.level,
                message: event.message.description,
                metadata: merged.mapValues { $0.description }
            ))
        }
    }
}
