import Foundation
import Histogram
import NIOCore
import NIOPosix
import Synchronization

#if canImport(Glibc)
import Glibc
#endif

/// Helper processes for runs with more connections than one process may open files.
///
/// The parent keeps the publishers and every `count`-th subscriber; helper k takes the
/// subscribers with index % count == k. A helper reads its orders from the environment,
/// reports on stdout, one JSON object per line (`ready`, then `progress` every 200 ms, then
/// `final` with its latency histogram after the parent writes `stop` to its stdin), and
/// exits when its stdin closes, so it never outlives the parent.
struct ShardOrders: Codable, Sendable {
    var index: Int
    var count: Int
    var settings: BenchSettings
    var sourceAddressCount: Int

    static let environmentVariable = "SNORKY_BENCH_SHARD"
}

struct ShardMessage: Codable, Sendable {
    enum Event: String, Codable, Sendable { case ready, progress, final }

    var event: Event
    var ready: Int?
    var failedIndices: [Int]?
    var firstErrors: [String]?
    var firstStartNanos: UInt64?
    var lastReadyNanos: UInt64?
    var counts: DeliveryCounts?
    var histogram: Histogram<UInt64>?
}

/// The local addresses connections are spread over: 127.0.0.1…127.0.0.N, or none (let the
/// kernel choose) when one address suffices.
func makeSourceAddresses(count: Int) throws -> [SocketAddress] {
    guard count > 1 else { return [] }
    return try (1...count).map { try SocketAddress(ipAddress: "127.0.0.\($0)", port: 0) }
}

// MARK: - Helper side

struct ShardChild {
    let orders: ShardOrders

    static func fromEnvironment() -> ShardChild? {
        guard let text = ProcessInfo.processInfo.environment[ShardOrders.environmentVariable],
              let orders = try? JSONDecoder().decode(ShardOrders.self, from: Data(text.utf8))
        else { return nil }
        return ShardChild(orders: orders)
    }

    func run() async {
        do {
            try await runShard()
            exit(0)
        } catch {
            FileHandle.standardError.write(Data("snorky-bench helper \(orders.index): \(error)\n".utf8))
            exit(1)
        }
    }

    private func emit(_ message: ShardMessage) {
        guard let data = try? JSONEncoder().encode(message) else { return }
        FileHandle.standardOutput.write(data + Data("\n".utf8))
    }

    private func runShard() async throws {
        _ = raiseOpenFileLimit()
        let settings = orders.settings
        let group = MultiThreadedEventLoopGroup(numberOfThreads: settings.threads)
        let loops = Array(group.makeIterator())
        let stats = loops.map(LoopStats.init)
        let workload = Workload(settings: settings, sourceAddresses: try makeSourceAddresses(count: orders.sourceAddressCount))
        let connector = try Connector(loops: loops, stats: stats, workload: workload)

        // Stop on "stop" or on end of input (the parent is gone).
        let stopRequested = Atomic<Bool>(false)
        let watcher = Thread {
            while let line = readLine(), line != "stop" {}
            stopRequested.store(true, ordering: .relaxed)
        }
        watcher.start()

        let indices = Array(stride(from: orders.index, to: settings.connections, by: orders.count))
        let outcome = await connector.connectSubscribers(
            indices, concurrency: settings.connectConcurrency, timeout: settings.connectTimeout) { _, _ in }
        emit(ShardMessage(
            event: .ready, ready: outcome.ready, failedIndices: outcome.failedIndices, firstErrors: outcome.firstErrors,
            firstStartNanos: outcome.firstStartNanos, lastReadyNanos: outcome.lastReadyNanos))

        while !stopRequested.load(ordering: .relaxed) {
            try await Task.sleep(for: .milliseconds(200))
            emit(ShardMessage(event: .progress, counts: stats.map(\.counts).reduce(DeliveryCounts(), +)))
        }

        var histogram = LatencyHistogram.make()
        for loopStats in stats { histogram.add(try await loopStats.latencySnapshot().get()) }
        emit(ShardMessage(event: .final, counts: stats.map(\.counts).reduce(DeliveryCounts(), +), histogram: histogram))
        for channel in outcome.channels { channel.close(promise: nil) }
        try await group.shutdownGracefully()
    }
}

// MARK: - Parent side

/// The helpers of one run, from the parent's side.
final class ShardSet: Sendable {
    private struct Child: Sendable {
        var pid: pid_t
        var stdin: Int32
    }

    private struct State: Sendable {
        var ready: ShardMessage?
        var counts = DeliveryCounts()
        var final: ShardMessage?
        var ended = false
    }

    private let children: [Child]
    private let states: Mutex<[State]>
    private let gauge: DeliveryGauge

    var count: Int { children.count }

    private init(children: [Child], gauge: DeliveryGauge) {
        self.children = children
        self.states = Mutex(Array(repeating: State(), count: children.count))
        self.gauge = gauge
    }

    /// Starts helpers 1..<total (the parent is shard 0).
    static func spawn(total: Int, settings: BenchSettings, sourceAddressCount: Int, gauge: DeliveryGauge) throws -> ShardSet {
        guard total > 1 else { return ShardSet(children: [], gauge: gauge) }
        let executable = try FileManager.default.destinationOfSymbolicLink(atPath: "/proc/self/exe")
        var children: [Child] = []
        var outputs: [Int32] = []
        for index in 1..<total {
            let orders = ShardOrders(index: index, count: total, settings: settings, sourceAddressCount: sourceAddressCount)
            let text = String(decoding: try JSONEncoder().encode(orders), as: UTF8.self)
            let (pid, stdin, stdout) = try spawnHelper(executable: executable, orders: text)
            children.append(Child(pid: pid, stdin: stdin))
            outputs.append(stdout)
        }
        let set = ShardSet(children: children, gauge: gauge)
        for (index, fd) in outputs.enumerated() {
            let thread = Thread { set.readReports(from: fd, child: index) }
            thread.start()
        }
        return set
    }

    /// Reads one helper's JSON lines until it closes stdout.
    private func readReports(from fd: Int32, child: Int) {
        var pending: [UInt8] = []
        var chunk = [UInt8](repeating: 0, count: 1 << 16)
        let decoder = JSONDecoder()
        while true {
            let count = chunk.withUnsafeMutableBytes { read(fd, $0.baseAddress, $0.count) }
            if count < 0, errno == EINTR { continue }
            guard count > 0 else { break }
            pending.append(contentsOf: chunk[0..<count])
            while let newline = pending.firstIndex(of: UInt8(ascii: "\n")) {
                let line = Data(pending[0..<newline])
                pending.removeSubrange(0...newline)
                guard let message = try? decoder.decode(ShardMessage.self, from: line) else { continue }
                record(message, child: child)
            }
        }
        close(fd)
        states.withLock { $0[child].ended = true }
    }

    private func record(_ message: ShardMessage, child: Int) {
        let remote = states.withLock { states -> Int in
            switch message.event {
            case .ready: states[child].ready = message
            case .progress: states[child].counts = message.counts ?? states[child].counts
            case .final:
                states[child].counts = message.counts ?? states[child].counts
                states[child].final = message
            }
            return states.reduce(0) { $0 + $1.counts.delivered }
        }
        gauge.remoteDelivered.store(remote, ordering: .relaxed)
    }

    /// Counters of all helpers, as last reported.
    var counts: DeliveryCounts {
        states.withLock { $0.reduce(DeliveryCounts()) { $0 + $1.counts } }
    }

    /// Waits until every helper has connected its share (or ended).
    func waitUntilReady(timeout: Double) async throws -> [ShardMessage] {
        let deadline = monotonicNanos() + UInt64(timeout * 1e9)
        while true {
            let (ready, ended) = states.withLock { states in
                (states.compactMap(\.ready), states.contains { $0.ready == nil && $0.ended })
            }
            if ready.count == children.count { return ready }
            if ended { throw BenchError.helperFailed("a helper process ended before connecting; see its stderr above") }
            if monotonicNanos() > deadline { throw BenchError.helperFailed("helpers did not finish connecting in time") }
            try await Task.sleep(for: .milliseconds(50))
        }
    }

    /// Asks every helper for its final report and waits for it.
    func stop(timeout: Double = 30) async throws -> [ShardMessage] {
        for child in children {
            _ = "stop\n".withCString { write(child.stdin, $0, 5) }
        }
        let deadline = monotonicNanos() + UInt64(timeout * 1e9)
        while true {
            let (finals, ended) = states.withLock { states in
                (states.compactMap(\.final), states.contains { $0.final == nil && $0.ended })
            }
            if finals.count == children.count {
                terminate()
                return finals
            }
            if ended || monotonicNanos() > deadline {
                terminate()
                throw BenchError.helperFailed("a helper process did not send its final report")
            }
            try await Task.sleep(for: .milliseconds(50))
        }
    }

    /// Closes the helpers' stdin (they exit on EOF) and reaps them.
    func terminate() {
        for child in children {
            close(child.stdin)
        }
        for child in children {
            var status: Int32 = 0
            // Give each a moment to exit on its own; a stuck one is killed.
            var waited = 0
            while waitpid(child.pid, &status, WNOHANG) == 0 {
                if waited >= 100 {
                    kill(child.pid, SIGKILL)
                    waitpid(child.pid, &status, 0)
                    break
                }
                usleep(50_000)
                waited += 1
            }
        }
    }
}

/// posix_spawn of a helper with its stdin and stdout on pipes. Pipes are close-on-exec so a
/// helper inherits only its own ends (dup2 onto 0 and 1 clears the flag there). The signal
/// mask and dispositions are reset: a child spawned from a Swift concurrency thread would
/// otherwise inherit blocked signals.
private func spawnHelper(executable: String, orders: String) throws -> (pid_t, Int32, Int32) {
    var toChild: [Int32] = [0, 0]
    var fromChild: [Int32] = [0, 0]
    guard pipe(&toChild) == 0, pipe(&fromChild) == 0 else {
        throw BenchError.helperFailed("pipe: \(String(cString: strerror(errno)))")
    }
    // Helpers are spawned one after another from this call and nothing else in the process
    // forks, so no other child can inherit these ends before the flag is set.
    for fd in toChild + fromChild { _ = fcntl(fd, F_SETFD, FD_CLOEXEC) }
    var actions = posix_spawn_file_actions_t()
    posix_spawn_file_actions_init(&actions)
    defer { posix_spawn_file_actions_destroy(&actions) }
    posix_spawn_file_actions_adddup2(&actions, toChild[0], 0)
    posix_spawn_file_actions_adddup2(&actions, fromChild[1], 1)

    var attributes = posix_spawnattr_t()
    posix_spawnattr_init(&attributes)
    defer { posix_spawnattr_destroy(&attributes) }
    var noSignals = sigset_t()
    sigemptyset(&noSignals)
    var allSignals = sigset_t()
    sigfillset(&allSignals)
    posix_spawnattr_setsigmask(&attributes, &noSignals)
    posix_spawnattr_setsigdefault(&attributes, &allSignals)
    posix_spawnattr_setflags(&attributes, Int16(POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF))

    var environment = ProcessInfo.processInfo.environment
    environment[ShardOrders.environmentVariable] = orders
    let environmentStrings = environment.map { "\($0.key)=\($0.value)" }
    var cEnvironment: [UnsafeMutablePointer<CChar>?] = environmentStrings.map { strdup($0) } + [nil]
    var arguments: [UnsafeMutablePointer<CChar>?] = [strdup(executable), nil]
    defer {
        for pointer in cEnvironment { free(pointer) }
        for pointer in arguments { free(pointer) }
    }
    var pid: pid_t = 0
    let result = posix_spawn(&pid, executable, &actions, &attributes, &arguments, &cEnvironment)
    close(toChild[0])
    close(fromChild[1])
    guard result == 0 else {
        close(toChild[1])
        close(fromChild[0])
        throw BenchError.helperFailed("posix_spawn \(executable): \(String(cString: strerror(result)))")
    }
    return (pid, toChild[1], fromChild[0])
}

enum BenchError: Error, CustomStringConvertible {
    case helperFailed(String)
    case noPublishers(String)
    case nothingConnected(String)

    var description: String {
        switch self {
        case .helperFailed(let text): "helper process: \(text)"
        case .noPublishers(let text): "publishers could not connect: \(text)"
        case .nothingConnected(let text): "no subscriber connected: \(text)"
        }
    }
}
