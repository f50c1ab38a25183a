#if canImport(Glibc)
import Glibc
#endif
import Foundation
import SnorkyProtocol
import SnorkyTesting
import Synchronization
import Testing

// The harness of the cluster integration tests: a real `snorky serve` (supervisor and
// worker processes), its log lines as records a test can await, its per-worker `/stats`,
// and the wire protocol spoken by real clients.

// MARK: - Log records

/// One line of the cluster's output (supervisor and workers share its stderr), parsed from
/// Snorky's structured lines: logfmt (`ts=… level=info role=worker slot=0 pid=123 msg="…"
/// key=value`) or, with `--log-format json`, one JSON object of strings per line. A line in
/// neither form (redis-server's own output) keeps its text as the message, with no level
/// or metadata.
struct LogRecord: Sendable, CustomStringConvertible {
    enum Format: Sendable { case logfmt, json }

    var text: String
    var level: String
    var message: String
    /// Every field but `ts`, `level` and `msg`.
    var metadata: [String: String]
    /// How the line parsed; nil when it is not a structured line.
    var format: Format?

    var description: String { text }
    var role: String? { metadata["role"] }
    var pid: Int32? { metadata["pid"].flatMap { Int32($0) } }
    var slot: Int? { metadata["slot"].flatMap { Int($0) } }
    var isSupervisor: Bool { role == "supervisor" }

    init(_ text: String) {
        self.text = text
        level = ""
        message = text
        metadata = [:]
        var fields: [(key: String, value: String)]
        if text.hasPrefix("{") {
            guard let object = (try? JSON.parse(text))?.objectValue else { return }
            fields = []
            for (key, value) in object {
                fields.append((key, value.stringValue ?? value.encodedString()))
            }
            format = .json
        } else {
            guard let line = try? LogfmtLine(parsing: text) else { return }
            fields = line.fields
            format = .logfmt
        }
        guard let level = fields.first(where: { $0.key == "level" })?.value,
            let message = fields.first(where: { $0.key == "msg" })?.value
        else {
            format = nil
            return
        }
        self.level = level
        self.message = message
        for (key, value) in fields where !["ts", "level", "msg"].contains(key) {
            metadata[key] = value
        }
    }
}

enum LogWatchError: Error, CustomStringConvertible {
    case timedOut(waitingFor: String, after: Duration, recent: [String])
    case ended(waitingFor: String, recent: [String])

    var description: String {
        switch self {
        case .timedOut(let what, let timeout, let recent):
            "no log line \(what) within \(timeout); last lines:\n" + recent.joined(separator: "\n")
        case .ended(let what, let recent):
            "the output ended before a log line \(what); last lines:\n" + recent.joined(separator: "\n")
        }
    }
}

/// Every output line of a process as a `LogRecord`, kept from the start, so a test can ask
/// for the first record matching a predicate whether it was printed already or is still to
/// come (unlike `ProcessHandle.waitForLine`, which consumes lines, several waits here can
/// look for different lines in any order). Waits resume as soon as the line is read.
final class LogWatch: Sendable {
    private struct Waiter {
        var id: Int
        var predicate: @Sendable (LogRecord) -> Bool
        var description: String
        var continuation: CheckedContinuation<LogRecord, any Error>
    }

    private struct State {
        var records: [LogRecord] = []
        var waiters: [Waiter] = []
        var ended = false
        var nextID = 0
    }

    private let state = Mutex(State())

    private init() {}

    /// Starts reading `lines` (the watch must be its only consumer).
    static func start(_ lines: AsyncStream<OutputLine>) -> LogWatch {
        let watch = LogWatch()
        Task {
            for await line in lines { watch.append(LogRecord(line.text)) }
            watch.end()
        }
        return watch
    }

    var records: [LogRecord] { state.withLock { $0.records } }

    /// How many records were read so far: pass it as `after` to wait only for later ones.
    var count: Int { state.withLock { $0.records.count } }

    func records(where predicate: (LogRecord) -> Bool) -> [LogRecord] {
        state.withLock { $0.records.filter(predicate) }
    }

    /// Supervisor records with this message (and these metadata values).
    func supervisor(_ message: String, _ metadata: [String: String] = [:]) -> [LogRecord] {
        records { Self.matches($0, message, metadata) }
    }

    func recent(_ count: Int = 60) -> [String] {
        state.withLock { $0.records.suffix(count).map(\.text) }
    }

    /// The first supervisor record with `message` whose metadata contains `metadata`.
    @discardableResult
    func first(
        _ message: String,
        _ metadata: [String: String] = [:],
        after index: Int = 0,
        timeout: Duration = .seconds(20)
    ) async throws -> LogRecord {
        try await first("\"\(message)\" \(metadata)", after: index, timeout: timeout) { Self.matches($0, message, metadata) }
    }

    private static func matches(_ record: LogRecord, _ message: String, _ metadata: [String: String]) -> Bool {
        record.isSupervisor && record.message == message && metadata.allSatisfy { record.metadata[$0.key] == $0.value }
    }

    /// The first record (printed already or to come) satisfying `predicate`, ignoring the
    /// first `index` records.
    @discardableResult
    func first(
        _ description: String,
        after index: Int = 0,
        timeout: Duration = .seconds(20),
        where predicate: @escaping @Sendable (LogRecord) -> Bool
    ) async throws -> LogRecord {
        let id = state.withLock { state in
            state.nextID += 1
            return state.nextID
        }
        let timer = Task {
            try? await Task.sleep(for: timeout)
            if !Task.isCancelled {
                self.fail(id, LogWatchError.timedOut(waitingFor: description, after: timeout, recent: self.recent()))
            }
        }
        defer { timer.cancel() }
        return try await withTaskCancellationHandler {
            try await withCheckedThrowingContinuation { (continuation: CheckedContinuation<LogRecord, any Error>) in
                let immediate: Result<LogRecord, any Error>? = state.withLock { state in
                    if let record = state.records.dropFirst(index).first(where: predicate) { return .success(record) }
                    if state.ended {
                        return .failure(LogWatchError.ended(waitingFor: description, recent: state.records.suffix(60).map(\.text)))
                    }
                    if Task.isCancelled { return .failure(CancellationError()) }
                    state.waiters.append(Waiter(id: id, predicate: predicate, description: description, continuation: continuation))
                    return nil
                }
                if let immediate { continuation.resume(with: immediate) }
            }
        } onCancel: {
            self.fail(id, CancellationError())
        }
    }

    private func fail(_ id: Int, _ error: any Error) {
        let waiter = state.withLock { state -> Waiter? in
            guard let index = state.waiters.firstIndex(where: { $0.id == id }) else { return nil }
            return state.waiters.remove(at: index)
        }
        waiter?.continuation.resume(throwing: error)
    }

    private func append(_ record: LogRecord) {
        let matched = state.withLock { state -> [Waiter] in
            state.records.append(record)
            let matched = state.waiters.filter { $0.predicate(record) }
            state.waiters.removeAll { $0.predicate(record) }
            return matched
        }
        for waiter in matched { waiter.continuation.resume(returning: record) }
    }

    private func end() {
        let waiters = state.withLock { state -> [(Waiter, [String])] in
            state.ended = true
            defer { state.waiters = [] }
            let recent = state.records.suffix(60).map(\.text)
            return state.waiters.map { ($0, recent) }
        }
        for (waiter, recent) in waiters {
            waiter.continuation.resume(throwing: LogWatchError.ended(waitingFor: waiter.description, recent: recent))
        }
    }
}

// MARK: - The cluster

/// What one worker reports on `GET /stats`.
struct WorkerStats: Sendable, Equatable, CustomStringConvertible {
    var slot: Int
    var pid: Int32
    var node: String
    var connections: Int
    var topics: Int

    var description: String { "slot \(slot) (pid \(pid)): \(connections) connections, \(topics) topics" }
}

struct ClusterFixtureError: Error, CustomStringConvertible {
    var description: String
    init(_ description: String) { self.description = description }
}

/// A running `snorky serve`: the supervisor process (leading a process group that holds
/// its workers), its log, and the ports it bound.
final class SnorkyCluster: Sendable {
    static let backendKey = "cluster-test-key"
    /// Arguments for a cluster whose test clients publish in a tight loop, as a load
    /// generator does: the default request rate limit (100 per second) would close them
    /// with 4004.
    static let unlimitedRequestRate = ["--max-requests-per-second", "0"]
    let host = "127.0.0.1"

    let process: ProcessHandle
    let logs: LogWatch
    let workers: Int
    let wsPort: Int
    let backendPort: Int

    private init(process: ProcessHandle, logs: LogWatch, workers: Int, wsPort: Int, backendPort: Int) {
        self.process = process
        self.logs = logs
        self.workers = workers
        self.wsPort = wsPort
        self.backendPort = backendPort
    }

    /// Starts `snorky serve --workers N` on ephemeral ports and waits for `cluster ready`.
    ///
    /// - Parameters:
    ///   - redis: `--redis` URL; nil lets the supervisor start its private redis-server.
    ///   - environment: added to the test runner's environment (whose `SNORKY_*` settings
    ///     are removed so they cannot change the configuration under test).
    static func start(
        workers: Int,
        redis: String?,
        logLevel: String = "info",
        arguments extra: [String] = [],
        environment: [String: String] = [:],
        timeout: Duration = .seconds(30)
    ) async throws -> SnorkyCluster {
        var arguments = [
            "serve", "--workers", "\(workers)", "--backend-key", backendKey,
            "--port", "0", "--backend-port", "0", "--log-level", logLevel,
        ]
        if let redis { arguments += ["--redis", redis] }
        var base = ProcessInfo.processInfo.environment.filter { !$0.key.hasPrefix("SNORKY_") || $0.key == "SNORKY_TEST_ECHO" }
        base.merge(environment) { _, new in new }
        let process = try await ProcessHandle.launch(try SnorkyExecutable.path, arguments: arguments + extra, environment: base)
        let logs = LogWatch.start(process.lines)
        do {
            let ws = try await logs.first("listening ws=", timeout: timeout) {
                $0.isSupervisor && $0.message == "listening" && $0.metadata["ws"] != nil
            }
            let backend = try await logs.first("listening backend=", timeout: timeout) {
                $0.isSupervisor && $0.message == "listening" && $0.metadata["backend"] != nil
            }
            try await logs.first("cluster ready", timeout: timeout)
            guard let wsPort = ws.metadata["ws"].flatMap(Self.port(of:)),
                let backendPort = backend.metadata["backend"].flatMap(Self.port(of:))
            else { throw ClusterFixtureError("cannot read the ports from \(ws) / \(backend)") }
            return SnorkyCluster(process: process, logs: logs, workers: workers, wsPort: wsPort, backendPort: backendPort)
        } catch {
            await process.terminate(grace: .seconds(2))
            throw error
        }
    }

    private static func port(of address: String) -> Int? {
        address.split(separator: ":").last.flatMap { Int($0) }
    }

    /// SIGTERM, SIGKILL to the whole group after `grace`. Safe to call more than once.
    @discardableResult
    func terminate(grace: Duration = .seconds(15)) async -> ProcessHandle.Exit? {
        await process.terminate(grace: grace)
    }

    /// The current worker of each slot, from the supervisor's `worker started` lines.
    var workerPIDs: [Int: Int32] {
        var pids: [Int: Int32] = [:]
        for record in logs.supervisor("worker started") {
            if let slot = record.slot, let pid = record.pid { pids[slot] = pid }
        }
        return pids
    }

    // MARK: Clients

    func connect(timeout: Duration = .seconds(10)) async throws -> WebSocketTestClient {
        try await WebSocketTestClient.connect(host: host, port: wsPort, path: "/ws", timeout: timeout)
    }

    /// Opens `count` connections, at most `parallel` at a time, each subscribed to
    /// `channel` when one is given. Returned in opening order.
    func connectMany(_ count: Int, subscribingTo channel: JSON? = nil, parallel: Int = 50) async throws -> [WebSocketTestClient] {
        try await withThrowingTaskGroup(of: (Int, WebSocketTestClient).self) { group in
            var clients = [WebSocketTestClient?](repeating: nil, count: count)
            var next = 0
            func add() {
                let index = next
                next += 1
                group.addTask {
                    let client = try await self.connect()
                    if let channel { try await client.subscribe(channel) }
                    return (index, client)
                }
            }
            while next < min(parallel, count) { add() }
            while let (index, client) = try await group.next() {
                clients[index] = client
                if next < count { add() }
            }
            return clients.map { $0! }
        }
    }

    // MARK: Backend API

    /// `POST /backend` with an RPC request; returns the status and the decoded body.
    func backend(
        _ service: String,
        _ command: String,
        _ params: JSON,
        callId: JSON? = nil,
        timeout: Duration = .seconds(10)
    ) async throws -> (status: Int, body: JSON) {
        var message: JSONObject = ["command": .string(command), "params": params]
        if let callId { message["callId"] = callId }
        let body = Envelope(service: service, message: .object(message)).encodedBytes()
        let response = try await HTTPTestClient.request(
            host: host, port: backendPort, path: "/backend",
            headers: [("Content-Type", "application/json"), ("X-Backend-Key", Self.backendKey)],
            body: body, timeout: timeout)
        let json = try JSON.parse(response.body)
        return (response.status, json)
    }

    /// Publishes through `pubsub_backend`; returns the HTTP status and the reply's `message`.
    func backendPublish(_ channel: JSON, _ message: JSON, timeout: Duration = .seconds(10)) async throws -> (status: Int, reply: JSON?) {
        let (status, body) = try await backend("pubsub_backend", "publish", ["channel": channel, "message": message], timeout: timeout)
        return (status, body["message"])
    }

    // MARK: Stats

    /// One `GET /stats`, answered by whichever worker the kernel hands the connection to.
    func statsOnce() async throws -> WorkerStats {
        try await Self.statsOnce(host: host, port: backendPort, backendKey: Self.backendKey)
    }

    /// Every slot's stats. Each request is a new connection, which SO_REUSEPORT hashes to a
    /// slot's socket by its source port, so asking often enough reaches every worker.
    /// Call it while the counts are settled.
    func stats(requests: Int = 400) async throws -> [Int: WorkerStats] {
        try await Self.stats(host: host, port: backendPort, backendKey: Self.backendKey, workers: workers, requests: requests)
    }

    /// One `GET /stats` on any node's backend port.
    static func statsOnce(host: String, port: Int, backendKey: String) async throws -> WorkerStats {
        let response = try await HTTPTestClient.get(
            host: host, port: port, path: "/stats", headers: [("X-Backend-Key", backendKey)], timeout: .seconds(5))
        guard response.status == 200 else { throw ClusterFixtureError("GET /stats: \(response.status) \(response.body)") }
        let json = try JSON.parse(response.body)
        guard let slot = json["slot"]?.stringValue.flatMap({ Int($0) }),
            let pid = json["pid"]?.stringValue.flatMap({ Int32($0) }),
            let node = json["node"]?.stringValue,
            let connections = json["connections"]?.int64Value,
            let topics = json["topics"]?.int64Value
        else { throw ClusterFixtureError("unexpected /stats body \(response.body)") }
        return WorkerStats(slot: slot, pid: pid, node: node, connections: Int(connections), topics: Int(topics))
    }

    /// The stats of each of a node's `workers` slots, asking until every slot answered.
    static func stats(host: String, port: Int, backendKey: String, workers: Int, requests: Int = 400) async throws -> [Int: WorkerStats] {
        var seen: [Int: WorkerStats] = [:]
        for _ in 0..<requests {
            let stats = try await statsOnce(host: host, port: port, backendKey: backendKey)
            seen[stats.slot] = stats
            if seen.count == workers { return seen }
        }
        throw ClusterFixtureError("only slots \(seen.keys.sorted()) answered /stats in \(requests) requests: \(seen)")
    }

    // MARK: Metrics

    /// One `GET /metrics` (no key), answered by whichever worker gets the connection,
    /// checked by the strict reader; returns the exposition, its text, and the slot of the
    /// worker that answered (whose values are live; the others' come from their snapshots).
    func metricsOnce() async throws -> (exposition: PrometheusExposition, text: String, answeredBy: Int) {
        let response = try await HTTPTestClient.request(
            method: "GET", host: host, port: backendPort, path: "/metrics", timeout: .seconds(5))
        guard response.status == 200 else { throw ClusterFixtureError("GET /metrics: \(response.status) \(response.body)") }
        let contentType = response.headers.first { $0.0.lowercased() == "content-type" }?.1
        guard contentType == "text/plain; version=0.0.4; charset=utf-8" else {
            throw ClusterFixtureError("GET /metrics: Content-Type \(contentType ?? "(none)")")
        }
        guard let answeredBy = response.headers.first(where: { $0.0.lowercased() == "x-snorky-worker" }).flatMap({ Int($0.1) }) else {
            throw ClusterFixtureError("GET /metrics: no X-Snorky-Worker header")
        }
        return (try PrometheusExposition(parsing: response.body), response.body, answeredBy)
    }

    /// `stats()` summed over the workers.
    func totalConnections(_ stats: [Int: WorkerStats]) -> Int {
        stats.values.map(\.connections).reduce(0, +)
    }
}

/// Starts a cluster, runs `body`, and stops the cluster whatever happened.
func withCluster<T>(
    workers: Int,
    redis: String?,
    logLevel: String = "info",
    arguments: [String] = [],
    environment: [String: String] = [:],
    _ body: (SnorkyCluster) async throws -> T
) async throws -> T {
    let cluster = try await SnorkyCluster.start(
        workers: workers, redis: redis, logLevel: logLevel, arguments: arguments, environment: environment)
    do {
        let result = try await body(cluster)
        await cluster.terminate()
        return result
    } catch {
        await cluster.terminate(grace: .seconds(2))
        throw error
    }
}

/// Starts a real redis-server, runs `body`, and removes it whatever happened.
func withRedis<T>(tcp: Bool = false, _ body: (RedisServerProcess) async throws -> T) async throws -> T {
    let redis = try await RedisServerProcess(unixSocket: !tcp, tcp: tcp)
    defer { redis.remove() }
    return try await body(redis)
}

// MARK: - Protocol

/// How an RPC call ended.
enum RPCOutcome: Sendable, Equatable, CustomStringConvertible {
    case response(JSON)
    case error(String)

    var description: String {
        switch self {
        case .response(let data): "response \(data)"
        case .error(let message): "error \"\(message)\""
        }
    }
}

extension WebSocketTestClient {
    func send(_ service: String, _ command: String, _ params: JSON, callId: JSON?) async throws {
        var message: JSONObject = ["command": .string(command), "params": params]
        if let callId { message["callId"] = callId }
        try await send(text: Envelope(service: service, message: .object(message)).json.encodedString())
    }

    /// The next frame as an envelope.
    func nextEnvelope(timeout: Duration = .seconds(10)) async throws -> Envelope {
        let text = try await nextText(timeout: timeout)
        return try Envelope.decode(Array(text.utf8))
    }

    /// Sends a request and returns its outcome. The reply must be the next frame: clients
    /// that call this are not subscribed to anything that could arrive in between.
    func call(
        _ service: String,
        _ command: String,
        _ params: JSON,
        callId: Int64 = 1,
        timeout: Duration = .seconds(10)
    ) async throws -> RPCOutcome {
        try await send(service, command, params, callId: .int(callId))
        let reply = try await nextEnvelope(timeout: timeout)
        let message = reply.message
        guard reply.service == service, message["callId"] == .int(callId) else {
            throw ClusterFixtureError("expected the reply to call \(callId) on \(service), got \(reply.json)")
        }
        switch message["type"]?.stringValue {
        case "response": return .response(message["data"] ?? .null)
        case "error": return .error(message["message"]?.stringValue ?? "\(message)")
        default: throw ClusterFixtureError("expected a reply, got \(reply.json)")
        }
    }

    func subscribe(_ channel: JSON) async throws {
        let outcome = try await call("pubsub", "subscribe", ["channel": channel])
        guard outcome == .response(.null) else { throw ClusterFixtureError("subscribe \(channel): \(outcome)") }
    }

    func publish(_ channel: JSON, _ message: JSON, callId: Int64 = 1, timeout: Duration = .seconds(10)) async throws -> RPCOutcome {
        try await call("pubsub", "publish", ["channel": channel, "message": message], callId: callId, timeout: timeout)
    }

    /// The next pubsub notification on `channel`; returns its `message`.
    func nextPublication(on channel: JSON, timeout: Duration = .seconds(10)) async throws -> JSON {
        let envelope = try await nextEnvelope(timeout: timeout)
        let message = envelope.message
        guard envelope.service == "pubsub", message["type"] == "message", message["channel"] == channel,
            let payload = message["message"]
        else { throw ClusterFixtureError("expected a publication on \(channel), got \(envelope.json)") }
        return payload
    }
}

/// A publication of the tests: `{"src": source, "seq": n}`.
func publication(_ source: String, _ seq: Int) -> JSON {
    ["src": .string(source), "seq": .int(Int64(seq))]
}

extension JSON {
    var seq: Int? { self["seq"]?.int64Value.map { Int($0) } }
    var src: String? { self["src"]?.stringValue }
}

// MARK: - Processes

/// Whether `pid` is a live process (a zombie waiting to be reaped is not).
func processIsAlive(_ pid: Int32) -> Bool {
    guard kill(pid, 0) == 0 else { return false }
    guard let stat = try? String(contentsOfFile: "/proc/\(pid)/stat", encoding: .utf8),
        let close = stat.lastIndex(of: ")")
    else { return false }
    let state = stat[stat.index(after: close)...].drop { $0 == " " }.first
    return state != "Z" && state != "X"
}

/// "pid (name) state ppid" from /proc, for failure messages.
func processSummary(_ pid: Int32) -> String {
    guard let stat = try? String(contentsOfFile: "/proc/\(pid)/stat", encoding: .utf8) else { return "\(pid): gone" }
    return stat.split(separator: " ").prefix(4).joined(separator: " ")
}

func fileExists(_ path: String) -> Bool {
    access(path, F_OK) == 0
}

/// A counter a background task raises and the test awaits (`wait(atLeast:)`) without polling.
final class Progress: Sendable {
    private struct Waiter {
        var id: Int
        var target: Int
        var continuation: CheckedContinuation<Bool, Never>
    }

    private struct State {
        var value = 0
        var nextID = 0
        var waiters: [Waiter] = []
    }

    private let state = Mutex(State())

    var value: Int { state.withLock { $0.value } }

    func add(_ amount: Int = 1) {
        let ready = state.withLock { state -> [Waiter] in
            state.value += amount
            let value = state.value
            defer { state.waiters.removeAll { $0.target <= value } }
            return state.waiters.filter { $0.target <= value }
        }
        for waiter in ready { waiter.continuation.resume(returning: true) }
    }

    /// Returns once the counter reached `target`; throws after `timeout`.
    func wait(atLeast target: Int, timeout: Duration, _ what: String) async throws {
        let id = state.withLock { state in
            state.nextID += 1
            return state.nextID
        }
        let timer = Task {
            try? await Task.sleep(for: timeout)
            let waiter = self.state.withLock { state -> Waiter? in
                guard let index = state.waiters.firstIndex(where: { $0.id == id }) else { return nil }
                return state.waiters.remove(at: index)
            }
            waiter?.continuation.resume(returning: false)
        }
        defer { timer.cancel() }
        let reached = await withCheckedContinuation { (continuation: CheckedContinuation<Bool, Never>) in
            let done = state.withLock { state in
                if state.value >= target { return true }
                state.waiters.append(Waiter(id: id, target: target, continuation: continuation))
                return false
            }
            if done { continuation.resume(returning: true) }
        }
        if !reached {
            throw ClusterFixtureError("\(what): reached \(value) of \(target) within \(timeout)")
        }
    }
}

/// A flag a test sets to stop a background load.
final class StopFlag: Sendable {
    private let flag = Atomic<Bool>(false)
    func set() { flag.store(true, ordering: .relaxed) }
    var isSet: Bool { flag.load(ordering: .relaxed) }
}

/// A value shared between a background load and the test.
final class Locked<Value: Sendable>: Sendable {
    private let mutex: Mutex<Value>
    init(_ value: Value) { mutex = Mutex(value) }
    func withLock<R: Sendable>(_ body: (inout Value) -> R) -> R { mutex.withLock { body(&$0) } }
    var value: Value { mutex.withLock { $0 } }
}
