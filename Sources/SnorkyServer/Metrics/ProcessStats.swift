#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif
import Synchronization

/// This process's CPU time, memory, start time and file descriptors, from `/proc` (Linux).
/// Exported under the names Prometheus's client libraries use for every process
/// (`process_cpu_seconds_total`, …), so existing dashboards work unchanged.
struct ProcessStats: Sendable, Equatable {
    var cpuSeconds: Double
    var residentMemoryBytes: Double
    var virtualMemoryBytes: Double
    /// Seconds since the Unix epoch.
    var startTimeSeconds: Double?
    var openFileDescriptors: Int?
    var maxFileDescriptors: Int?

    /// The current values; nil where `/proc` is not available.
    static func current() -> ProcessStats? {
        guard let stat = MetricsDirectory.readFile("/proc/self/stat"),
            var stats = parse(stat: String(decoding: stat, as: UTF8.self),
                ticksPerSecond: Double(sysconf(Int32(_SC_CLK_TCK))), pageSize: Double(sysconf(Int32(_SC_PAGESIZE))),
                bootTime: bootTimeSeconds)
        else { return nil }
        stats.openFileDescriptors = recentOpenFileDescriptorCount()
        var limit = rlimit()
        if getrlimit(Int32(RLIMIT_NOFILE.rawValue), &limit) == 0, limit.rlim_cur != rlim_t.max {
            stats.maxFileDescriptors = Int(limit.rlim_cur)
        }
        return stats
    }

    /// Parses `/proc/<pid>/stat` (proc(5)): the command name in parentheses may contain
    /// spaces and parentheses, so fields are counted from the last `)`.
    static func parse(stat: String, ticksPerSecond: Double, pageSize: Double, bootTime: Double?) -> ProcessStats? {
        guard let close = stat.lastIndex(of: ")") else { return nil }
        // Field 3 (state) is the first after the name.
        let fields = stat[stat.index(after: close)...].split(separator: " ")
        func field(_ number: Int) -> Double? {
            let index = number - 3
            return index < fields.count ? Double(fields[index]) : nil
        }
        guard ticksPerSecond > 0, let userTicks = field(14), let systemTicks = field(15), let startTicks = field(22),
            let virtualBytes = field(23), let residentPages = field(24)
        else { return nil }
        return ProcessStats(
            cpuSeconds: (userTicks + systemTicks) / ticksPerSecond,
            residentMemoryBytes: residentPages * pageSize,
            virtualMemoryBytes: virtualBytes,
            startTimeSeconds: bootTime.map { $0 + startTicks / ticksPerSecond },
            openFileDescriptors: nil,
            maxFileDescriptors: nil)
    }

    /// The `btime` line of `/proc/stat`: when the machine booted, in seconds since the epoch.
    private static func bootTime() -> Double? {
        guard let bytes = MetricsDirectory.readFile("/proc/stat") else { return nil }
        for line in String(decoding: bytes, as: UTF8.self).split(separator: "\n") where line.hasPrefix("btime ") {
            return Double(line.dropFirst("btime ".count))
        }
        return nil
    }

    private static let bootTimeSeconds = bootTime()

    /// Counting walks `/proc/self/fd`, an entry per connection, and workers export their
    /// stats every second: the count is refreshed at most every `fileDescriptorCountMaxAge`.
    private static let fileDescriptorCountMaxAge = Duration.seconds(10)
    private static let cachedFileDescriptorCount = Mutex<(count: Int?, at: ContinuousClock.Instant)?>(nil)

    private static func recentOpenFileDescriptorCount() -> Int? {
        let now = ContinuousClock.now
        if let cached = cachedFileDescriptorCount.withLock({ $0 }), now - cached.at < fileDescriptorCountMaxAge {
            return cached.count
        }
        let count = openFileDescriptorCount()
        cachedFileDescriptorCount.withLock { $0 = (count, now) }
        return count
    }

    private static func openFileDescriptorCount() -> Int? {
        guard let directory = opendir("/proc/self/fd") else { return nil }
        defer { closedir(directory) }
        var count = 0
        while readdir(directory) != nil { count += 1 }
        // ".", "..", and the descriptor opendir itself holds.
        return max(0, count - 3)
    }

    var families: [MetricFamily] {
        var families = [
            MetricFamily(name: "process_cpu_seconds_total", help: "User and system CPU time spent in seconds.", kind: .counter, value: cpuSeconds),
            MetricFamily(name: "process_resident_memory_bytes", help: "Resident memory size in bytes.", kind: .gauge, value: residentMemoryBytes),
            MetricFamily(name: "process_virtual_memory_bytes", help: "Virtual memory size in bytes.", kind: .gauge, value: virtualMemoryBytes),
        ]
        if let startTimeSeconds {
            families.append(MetricFamily(
                name: "process_start_time_seconds", help: "Start time of the process since the Unix epoch in seconds.", kind: .gauge,
                value: startTimeSeconds))
        }
        if let openFileDescriptors {
            families.append(MetricFamily(name: "process_open_fds", help: "Number of open file descriptors.", kind: .gauge, value: Double(openFileDescriptors)))
        }
        if let maxFileDescriptors {
            families.append(MetricFamily(name: "process_max_fds", help: "Maximum number of open file descriptors.", kind: .gauge, value: Double(maxFileDescriptors)))
        }
        return families
    }
}
