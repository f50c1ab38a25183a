import Foundation

#if canImport(Glibc)
import Glibc
#endif

/// CPU time and resident memory of the server under test, read from /proc.
///
/// The pid set is resolved again at every sample, so a worker that a supervisor replaced
/// mid-run is still counted (its predecessor's CPU time is lost with it; the report shows
/// the pids each sample saw).
struct ServerProcesses: Sendable {
    var pids: [Int32]
    /// Roots whose whole process tree counts (a supervisor and its workers, nginx and its workers).
    var trees: [Int32]

    var isEmpty: Bool { pids.isEmpty && trees.isEmpty }

    struct Sample: Sendable, Codable {
        var pids: [Int32]
        /// utime + stime over the pids, in seconds.
        var cpuSeconds: Double
        /// VmRSS summed over the pids, in bytes. Pages shared between the processes (the
        /// binary, nginx's shared memory zone) count once per process.
        var rssBytes: Int
        /// Proportional set size summed over the pids: shared pages split between their
        /// sharers, so the sum is the processes' real footprint.
        var pssBytes: Int
        var nanos: UInt64
    }

    func sample() -> Sample {
        var all = pids
        for root in trees {
            for pid in Self.tree(of: root) where !all.contains(pid) { all.append(pid) }
        }
        var cpu = 0.0
        var rss = 0
        var pss = 0
        var seen: [Int32] = []
        for pid in all {
            guard let stat = Self.cpuSeconds(of: pid) else { continue }
            cpu += stat
            let resident = Self.residentBytes(of: pid) ?? 0
            rss += resident
            pss += Self.proportionalBytes(of: pid) ?? resident
            seen.append(pid)
        }
        return Sample(pids: seen.sorted(), cpuSeconds: cpu, rssBytes: rss, pssBytes: pss, nanos: monotonicNanos())
    }

    /// `root` and all its descendants.
    static func tree(of root: Int32) -> [Int32] {
        var parents: [Int32: [Int32]] = [:]
        let entries = (try? FileManager.default.contentsOfDirectory(atPath: "/proc")) ?? []
        for entry in entries {
            guard let pid = Int32(entry), let fields = statFields(of: pid), fields.count > 1,
                  let parent = Int32(fields[1])
            else { continue }
            parents[parent, default: []].append(pid)
        }
        guard FileManager.default.fileExists(atPath: "/proc/\(root)") else { return [] }
        var result: [Int32] = [root]
        var index = 0
        while index < result.count {
            result.append(contentsOf: parents[result[index]] ?? [])
            index += 1
        }
        return result
    }

    /// Fields of /proc/PID/stat after the command name (which may contain spaces and
    /// parentheses, so everything up to the last ")" is skipped): [0] state, [1] ppid, …
    private static func statFields(of pid: Int32) -> [Substring]? {
        guard let text = try? String(contentsOfFile: "/proc/\(pid)/stat", encoding: .utf8),
              let close = text.lastIndex(of: ")")
        else { return nil }
        return text[text.index(after: close)...].split(separator: " ")
    }

    static func cpuSeconds(of pid: Int32) -> Double? {
        // utime and stime are fields 14 and 15 of stat, i.e. [11] and [12] after the name.
        guard let fields = statFields(of: pid), fields.count > 12,
              let user = Double(fields[11]), let system = Double(fields[12])
        else { return nil }
        return (user + system) / Double(sysconf(Int32(_SC_CLK_TCK)))
    }

    static func residentBytes(of pid: Int32) -> Int? {
        kilobytes(named: "VmRSS:", in: "/proc/\(pid)/status")
    }

    static func proportionalBytes(of pid: Int32) -> Int? {
        kilobytes(named: "Pss:", in: "/proc/\(pid)/smaps_rollup")
    }

    /// A "Name:   1234 kB" line of a /proc file, in bytes.
    private static func kilobytes(named name: String, in path: String) -> Int? {
        guard let text = try? String(contentsOfFile: path, encoding: .utf8) else { return nil }
        for line in text.split(separator: "\n") where line.hasPrefix(name) {
            let value = line.split(separator: " ", omittingEmptySubsequences: true).dropFirst().first
            return value.flatMap { Int($0) }.map { $0 * 1024 }
        }
        return nil
    }
}

/// This process's own CPU time (user + system), to show whether the client kept up.
func ownCPUSeconds() -> Double {
    var usage = rusage()
    getrusage(Int32(RUSAGE_SELF.rawValue), &usage)
    let user = Double(usage.ru_utime.tv_sec) + Double(usage.ru_utime.tv_usec) / 1e6
    let system = Double(usage.ru_stime.tv_sec) + Double(usage.ru_stime.tv_usec) / 1e6
    return user + system
}

/// Raises the soft open-file limit to the hard one; returns the limit in effect.
func raiseOpenFileLimit() -> Int {
    var limit = rlimit()
    guard getrlimit(Int32(RLIMIT_NOFILE.rawValue), &limit) == 0 else { return 1024 }
    if limit.rlim_cur < limit.rlim_max {
        limit.rlim_cur = limit.rlim_max
        _ = setrlimit(Int32(RLIMIT_NOFILE.rawValue), &limit)
        _ = getrlimit(Int32(RLIMIT_NOFILE.rawValue), &limit)
    }
    return Int(clamping: limit.rlim_cur)
}

/// The kernel's ephemeral port range: how many connections one source address can open to
/// one server address.
func ephemeralPortCount() -> Int {
    guard let text = try? String(contentsOfFile: "/proc/sys/net/ipv4/ip_local_port_range", encoding: .utf8) else {
        return 28_000
    }
    let bounds = text.split(whereSeparator: { $0 == " " || $0 == "\t" || $0 == "\n" }).compactMap { Int($0) }
    guard bounds.count == 2, bounds[1] > bounds[0] else { return 28_000 }
    return bounds[1] - bounds[0] + 1
}
