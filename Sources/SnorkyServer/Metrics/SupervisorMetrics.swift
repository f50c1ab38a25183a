#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// The supervisor's part of a node's metrics: per worker slot, its restarts and whether it
/// is up. Written to the metrics directory by the process that runs the supervisor (which
/// knows nothing about metrics itself), read by whichever worker answers a scrape.
public enum SupervisorMetrics {
    /// The supervisor's snapshot, from `Supervisor.workerRestarts` and `workerReady`.
    public static func snapshot(restarts: [Int], ready: [Bool]) -> MetricsSnapshot {
        MetricsSnapshot(pid: getpid(), writtenAt: wallClockSeconds(), labels: [], families: families(restarts: restarts, ready: ready))
    }

    static func families(restarts: [Int], ready: [Bool]) -> [MetricFamily] {
        [
            MetricFamily(
                name: "snorky_worker_restarts_total",
                help: "Workers the supervisor started to replace one that died, per slot (reloads not counted).",
                kind: .counter,
                samples: restarts.enumerated().map { slot, count in
                    MetricSample(labels: [MetricLabel("worker", "\(slot)")], value: Double(count))
                }),
            MetricFamily(
                name: "snorky_worker_up", help: "1 while the slot has a worker that reported ready, per slot.", kind: .gauge,
                samples: ready.enumerated().map { slot, up in
                    MetricSample(labels: [MetricLabel("worker", "\(slot)")], value: up ? 1 : 0)
                }),
        ]
    }
}
