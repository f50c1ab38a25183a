#if canImport(Glibc)
import Glibc
#endif
import SnorkyProtocol
import SnorkyTesting
import Testing

extension ClusterTests {
    /// `GET /metrics` on a real node: whichever worker a scrape lands on, it reports every
    /// worker and the supervisor, in a valid exposition; and the node's log lines.
    @Suite struct Metrics {
        static let tokenSecret = "metrics-token-secret"

        /// Sums a per-worker sample over the workers, requiring one sample per worker.
        private func perWorker(_ exposition: PrometheusExposition, _ name: String, _ labels: [String: String] = [:], workers: Int)
            throws -> [Int: Double]
        {
            var values: [Int: Double] = [:]
            for sample in exposition.samples(name, labels) {
                let worker = try #require(sample.labels["worker"].flatMap { Int($0) }, "\(sample) has no worker label")
                #expect(values[worker] == nil, "\(name) twice for worker \(worker)")
                values[worker] = sample.value
            }
            #expect(Set(values.keys) == Set(0..<workers), "\(name) of workers \(values.keys.sorted())")
            return values
        }

        private func total(_ exposition: PrometheusExposition, _ name: String, _ labels: [String: String] = [:], workers: Int) throws -> Double {
            try perWorker(exposition, name, labels, workers: workers).values.reduce(0, +)
        }

        @Test func everyScrapeReportsEveryWorkerAndTheCountsAddUp() async throws {
            try await withRedis { redis in
                try await withCluster(workers: 2, redis: redis.url, arguments: ["--token-secret", Self.tokenSecret]) { cluster in
                    let channel: JSON = "metrics"
                    let subscribers = try await cluster.connectMany(30, subscribingTo: channel)
                    let idle = try await cluster.connectMany(6)
                    let stats = try await cluster.stats()
                    #expect(cluster.totalConnections(stats) == 36)
                    try #require(stats.values.allSatisfy { $0.connections > 0 }, "connections on both workers: \(stats)")

                    let publications = 5
                    for seq in 0..<publications {
                        let (status, reply) = try await cluster.backendPublish(channel, publication("metrics", seq))
                        #expect(status == 200, "\(String(describing: reply))")
                    }
                    for subscriber in subscribers {
                        for seq in 0..<publications {
                            #expect(try await subscriber.nextPublication(on: channel).seq == seq)
                        }
                    }

                    // The other worker's numbers come from its snapshot, at most a second old:
                    // wait until scrapes answered by each worker show the traffic.
                    var settled: Set<Int> = []
                    try await eventually(timeout: .seconds(15), "the scraped counts settle, seen from both workers (\(settled))") {
                        let (metrics, _, answeredBy) = try await cluster.metricsOnce()
                        let complete = try total(metrics, "snorky_connections", workers: 2) == 36
                            && total(metrics, "snorky_subscriptions", workers: 2) == 30
                            && total(metrics, "snorky_deliveries_total", workers: 2) >= Double(30 * publications)
                            && total(metrics, "snorky_backend_requests_total", ["code": "200"], workers: 2) == Double(publications)
                        if complete { settled.insert(answeredBy) }
                        return settled.count == 2
                    }

                    // Every scrape, whichever worker answers it, tells the same story.
                    var answeredBy: Set<Int> = []
                    for scrape in 0..<20 {
                        let (metrics, text, answerer) = try await cluster.metricsOnce()
                        answeredBy.insert(answerer)
                        if scrape < 3 { _ = try await PrometheusClientParser.sampleCount(of: text) }
                        let connections = try perWorker(metrics, "snorky_connections", workers: 2)
                        for (slot, worker) in stats {
                            #expect(connections[slot] == Double(worker.connections), "slot \(slot): \(connections) vs /stats \(stats)")
                        }
                        #expect(try total(metrics, "snorky_connections_accepted_total", workers: 2) >= 36)
                        #expect(try total(metrics, "snorky_subscriptions", workers: 2) == 30)
                        #expect(try total(metrics, "snorky_topics", workers: 2) >= 1)
                        #expect(try total(metrics, "snorky_frames_received_total", workers: 2) >= 30)
                        #expect(try total(metrics, "snorky_frames_sent_total", workers: 2) >= Double(30 + 30 * publications))
                        #expect(try total(metrics, "snorky_deliveries_total", workers: 2) == Double(30 * publications))
                        #expect(try total(metrics, "snorky_bus_messages_published_total", workers: 2) >= Double(publications))
                        #expect(try total(metrics, "snorky_bus_messages_received_total", workers: 2) >= Double(publications))
                        #expect(try perWorker(metrics, "snorky_bus_up", workers: 2).values.allSatisfy { $0 == 1 })
                        #expect(try perWorker(metrics, "snorky_bus_round_trip_seconds_count", workers: 2).values.allSatisfy { $0 >= 1 })
                        #expect(try perWorker(metrics, "snorky_build_info", workers: 2).values.allSatisfy { $0 == 1 })
                        #expect(try perWorker(metrics, "process_resident_memory_bytes", workers: 2).values.allSatisfy { $0 > 1_000_000 })
                        #expect(try perWorker(metrics, "process_cpu_seconds_total", workers: 2).values.allSatisfy { $0 > 0 })
                        #expect(try perWorker(metrics, "snorky_worker_restarts_total", workers: 2).values.allSatisfy { $0 == 0 })
                        #expect(try perWorker(metrics, "snorky_worker_up", workers: 2).values.allSatisfy { $0 == 1 })
                        #expect(metrics.family("snorky_connections")?.type == "gauge")
                        #expect(metrics.family("snorky_deliveries_total")?.type == "counter")
                        #expect(metrics.family("snorky_bus_round_trip_seconds")?.type == "histogram")
                    }
                    #expect(answeredBy.count == 2, "20 scrapes all answered by worker \(answeredBy)")

                    // kill -9: the slot's restart counter goes up, the replacement reports.
                    let victimSlot = 1
                    let victim = try #require(cluster.workerPIDs[victimSlot])
                    #expect(kill(victim, SIGKILL) == 0)
                    try await cluster.logs.first("replacement ready") {
                        $0.isSupervisor && $0.message == "worker ready" && $0.slot == victimSlot && $0.pid != victim
                    }
                    try await eventually(timeout: .seconds(15), "the restart is counted") {
                        let (metrics, _, _) = try await cluster.metricsOnce()
                        return metrics.value("snorky_worker_restarts_total", ["worker": "\(victimSlot)"]) == 1
                            && metrics.value("snorky_worker_up", ["worker": "\(victimSlot)"]) == 1
                    }
                    for _ in 0..<10 {
                        let (metrics, _, _) = try await cluster.metricsOnce()
                        #expect(metrics.value("snorky_worker_restarts_total", ["worker": "\(victimSlot)"]) == 1)
                        #expect(metrics.value("snorky_worker_restarts_total", ["worker": "\(1 - victimSlot)"]) == 0)
                        // The dead worker's last snapshot is not reported: one sample per slot.
                        _ = try perWorker(metrics, "snorky_connections", workers: 2)
                        let started = try perWorker(metrics, "process_start_time_seconds", workers: 2)
                        #expect(started.count == 2)
                    }
                    for client in subscribers + idle { try? await client.close() }

                    // Logs: every line the node wrote is one logfmt event, and no secret is in any.
                    let records = cluster.logs.records
                    let unstructured = records.filter { $0.format != .logfmt }
                    #expect(unstructured.isEmpty, "not logfmt: \(unstructured.prefix(5))")
                    #expect(records.allSatisfy { ["supervisor", "worker"].contains($0.role ?? "") && !$0.level.isEmpty })
                    for slot in 0..<2 {
                        let listening = records.first { $0.role == "worker" && $0.slot == slot && $0.message == "worker listening" }
                        #expect(listening?.pid != nil && listening?.metadata["ws"] != nil && listening?.metadata["backend"] != nil, "\(String(describing: listening))")
                    }
                    let secrets = [SnorkyCluster.backendKey, Self.tokenSecret]
                    let leaks = records.filter { record in secrets.contains { record.text.contains($0) } }
                    #expect(leaks.isEmpty, "secrets in the log: \(leaks)")
                }
            }
        }

        /// `--log-format json`: the supervisor and every worker write one JSON object per line.
        @Test func jsonLogLines() async throws {
            try await withRedis { redis in
                try await withCluster(workers: 2, redis: redis.url, arguments: ["--log-format", "json"]) { cluster in
                    let client = try await cluster.connect()
                    #expect(try await client.call("pubsub", "unsubscribe", ["channel": "none"]) == .error("Not subscribed"))
                    try await client.close()
                    let records = cluster.logs.records
                    #expect(!records.isEmpty)
                    let other = records.filter { $0.format != .json }
                    #expect(other.isEmpty, "not JSON: \(other.prefix(5))")
                    for slot in 0..<2 {
                        let listening = records.first { $0.role == "worker" && $0.slot == slot && $0.message == "worker listening" }
                        #expect(listening?.pid != nil && listening?.level == "info", "\(String(describing: listening))")
                    }
                    let first = try #require(records.first)
                    #expect(first.text.hasPrefix(#"{"ts":""#), "\(first)")
                }
            }
        }
    }
}
