#if canImport(Glibc)
import Glibc
#endif
import Snorky
import SnorkyServer
import SnorkyTesting
import Testing

/// The Prometheus text renderer, the aggregation of a node's sources, and the snapshots
/// workers exchange through the metrics directory.
@Suite struct MetricsExpositionTests {
    private func worker(_ connections: Double) -> [MetricFamily] {
        [
            MetricFamily(name: "snorky_connections", help: "Open WebSocket connections.", kind: .gauge, value: connections),
            MetricFamily(
                name: "snorky_connection_closes_total", help: "Closes.", kind: .counter,
                samples: [
                    MetricSample(labels: [MetricLabel("reason", "slow_consumer")], value: 2),
                    MetricSample(labels: [MetricLabel("reason", "keepalive_timeout")], value: 0),
                ]),
        ]
    }

    @Test("several sources make one HELP and one TYPE per family, each sample labelled by its source")
    func familiesAreGroupedAcrossSources() async throws {
        var aggregator = MetricsAggregator()
        aggregator.add(worker(3), labels: [MetricLabel("worker", "0")])
        aggregator.add(worker(4), labels: [MetricLabel("worker", "1")])
        // The supervisor's samples name their slot themselves.
        aggregator.add(
            [MetricFamily(
                name: "snorky_worker_restarts_total", help: "Restarts.", kind: .counter,
                samples: [
                    MetricSample(labels: [MetricLabel("worker", "0")], value: 0),
                    MetricSample(labels: [MetricLabel("worker", "1")], value: 5),
                ])],
            labels: [])
        let text = PrometheusText.render(aggregator.result)

        #expect(text.components(separatedBy: "# TYPE snorky_connections gauge\n").count == 2)
        #expect(text.components(separatedBy: "# HELP snorky_connections ").count == 2)
        #expect(text.contains("snorky_connections{worker=\"0\"} 3\nsnorky_connections{worker=\"1\"} 4\n"))
        #expect(text.contains("snorky_connection_closes_total{worker=\"1\",reason=\"slow_consumer\"} 2\n"))
        #expect(text.contains("snorky_worker_restarts_total{worker=\"1\"} 5\n"))
        #expect(text.hasSuffix("\n"))

        let parsed = try PrometheusExposition(parsing: text)
        #expect(parsed.families.map(\.name) == ["snorky_connection_closes_total", "snorky_connections", "snorky_worker_restarts_total"])
        #expect(parsed.value("snorky_connections", ["worker": "1"]) == 4)
        #expect(parsed.family("snorky_connections")?.help == "Open WebSocket connections.")
        #expect(try await PrometheusClientParser.sampleCount(of: text) == 8)
    }

    @Test("label values escape backslash, quote and line feed; help escapes backslash and line feed")
    func escaping() async throws {
        let value = "C:\\path \"quoted\"\nnext line"
        let help = "Help with a \\ backslash\nand \"quotes\"."
        let family = MetricFamily(
            name: "snorky_test_info", help: help, kind: .gauge,
            samples: [MetricSample(labels: [MetricLabel("path", value)], value: 1)])
        let text = PrometheusText.render([family])
        #expect(text == """
            # HELP snorky_test_info Help with a \\\\ backslash\\nand "quotes".
            # TYPE snorky_test_info gauge
            snorky_test_info{path="C:\\\\path \\"quoted\\"\\nnext line"} 1

            """)
        #expect(text.split(separator: "\n").count == 3, "one line per sample whatever the label holds")
        let parsed = try PrometheusExposition(parsing: text)
        #expect(parsed.samples("snorky_test_info").first?.labels["path"] == value)
        #expect(parsed.family("snorky_test_info")?.help == help)
        #expect(try await PrometheusClientParser.sampleCount(of: text) == 1)
    }

    @Test("integers without a fraction, fractions exactly, and the special values by name")
    func valueFormats() throws {
        let values: [Double] = [0, 42, -7, 0.25, 1.5e-7, 123_456_789_012, .infinity, -.infinity, .nan]
        let family = MetricFamily(
            name: "snorky_values", help: "Values.", kind: .gauge,
            samples: values.enumerated().map { MetricSample(labels: [MetricLabel("i", "\($0)")], value: $1) })
        let lines = PrometheusText.render([family]).split(separator: "\n").dropFirst(2).map { $0.split(separator: " ").last! }
        #expect(lines == ["0", "42", "-7", "0.25", "1.5e-07", "123456789012", "+Inf", "-Inf", "NaN"])
        let parsed = try PrometheusExposition(parsing: PrometheusText.render([family]))
        for (index, value) in values.enumerated() where !value.isNaN {
            #expect(parsed.value("snorky_values", ["i": "\(index)"]) == value)
        }
    }

    @Test("what would make the exposition invalid is left out, the rest kept")
    func invalidInputIsLeftOut() throws {
        var aggregator = MetricsAggregator()
        aggregator.add(worker(1), labels: [MetricLabel("worker", "0")])
        aggregator.add(
            [
                // Same name, another type: dropped rather than a second TYPE line.
                MetricFamily(name: "snorky_connections", help: "Other.", kind: .counter, value: 9),
                MetricFamily(name: "bad-name", help: "Invalid name.", kind: .gauge, value: 1),
                MetricFamily(
                    name: "snorky_labels", help: "Labels.", kind: .gauge,
                    samples: [
                        MetricSample(labels: [MetricLabel("bad-label", "x")], value: 1),
                        MetricSample(labels: [MetricLabel("__reserved", "x")], value: 1),
                        MetricSample(labels: [MetricLabel("ok", "x")], value: 1),
                        // The same series again.
                        MetricSample(labels: [MetricLabel("ok", "x")], value: 2),
                        // A histogram suffix on a gauge.
                        MetricSample(suffix: "_bucket", labels: [MetricLabel("le", "1")], value: 1),
                    ]),
                MetricFamily(
                    name: "snorky_latency_seconds", help: "Latency.", kind: .histogram,
                    samples: [MetricSample(suffix: "_bucket", value: 1), MetricSample(suffix: "_count", value: 1)]),
            ],
            labels: [MetricLabel("worker", "1")])
        // The same worker reported twice (a stale and a fresh snapshot): only the first counts.
        aggregator.add(worker(7), labels: [MetricLabel("worker", "0")])

        let parsed = try PrometheusExposition(parsing: PrometheusText.render(aggregator.result))
        #expect(parsed.family("snorky_connections")?.type == "gauge")
        #expect(parsed.samples("snorky_connections").map(\.value) == [1])
        #expect(parsed.family("bad-name") == nil)
        #expect(parsed.samples("snorky_labels") == [.init(name: "snorky_labels", labels: ["worker": "1", "ok": "x"], value: 1)])
        #expect(parsed.samples("snorky_latency_seconds_bucket").isEmpty, "a bucket without le")
        #expect(parsed.value("snorky_latency_seconds_count", ["worker": "1"]) == 1)
    }

    @Test("a duration histogram renders cumulative buckets in seconds, +Inf equal to the count")
    func histogram() async throws {
        let histogram = DurationHistogram(bounds: [0.001, 0.01, 0.1])
        for duration: Duration in [.microseconds(500), .milliseconds(1), .milliseconds(5), .milliseconds(50), .seconds(2)] {
            histogram.observe(duration)
        }
        #expect(histogram.lastSeconds == 2)
        let family = MetricFamily(histogram: histogram, name: "snorky_probe_seconds", help: "Probe.")
        let text = PrometheusText.render([family])
        #expect(text.contains("""
            snorky_probe_seconds_bucket{le="0.001"} 2
            snorky_probe_seconds_bucket{le="0.01"} 3
            snorky_probe_seconds_bucket{le="0.1"} 4
            snorky_probe_seconds_bucket{le="+Inf"} 5
            snorky_probe_seconds_sum 2.0565
            snorky_probe_seconds_count 5
            """))
        _ = try PrometheusExposition(parsing: text)
        #expect(try await PrometheusClientParser.sampleCount(of: text) == 6)
    }

    @Test("the strict reader refuses a split family, a second TYPE, a duplicated series")
    func strictReaderRefusesInvalidText() {
        let invalid = [
            "# TYPE a gauge\na 1\n# TYPE b gauge\nb 1\n# TYPE a gauge\na{x=\"1\"} 2\n",
            "# TYPE a gauge\na 1\nb 1\n",
            "# TYPE a gauge\na 1\na 2\n",
            "a 1\n",
            "# TYPE a gauge\na{x=\"unterminated} 1\n",
            "# TYPE a gauge\na 1",
        ]
        for text in invalid {
            #expect(throws: PrometheusExpositionError.self, "\(text)") { try PrometheusExposition(parsing: text) }
        }
    }

    // MARK: Snapshots

    @Test("a snapshot survives its JSON form, special values included")
    func snapshotRoundTrip() throws {
        let snapshot = MetricsSnapshot(
            pid: 1234, writtenAt: 1_795_000_000.25, labels: [MetricLabel("worker", "3")],
            families: worker(5) + [
                MetricFamily(
                    name: "snorky_odd", help: "Odd \"values\"\n", kind: .gauge,
                    samples: [
                        MetricSample(labels: [MetricLabel("v", "+Inf")], value: .infinity),
                        MetricSample(labels: [MetricLabel("v", "-Inf")], value: -.infinity),
                        MetricSample(labels: [MetricLabel("v", "half")], value: 0.5),
                    ])
            ])
        let decoded = try MetricsSnapshot(decoding: snapshot.encoded())
        #expect(decoded == snapshot)

        let nan = MetricsSnapshot(pid: 1, writtenAt: 0, labels: [], families: [MetricFamily(name: "n", help: "", kind: .gauge, value: .nan)])
        #expect(try MetricsSnapshot(decoding: nan.encoded()).families[0].samples[0].value.isNaN)
        #expect(throws: MetricsSnapshotError.self) { try MetricsSnapshot(decoding: Array("{\"format\":2}".utf8)) }
        #expect(throws: MetricsSnapshotError.self) { try MetricsSnapshot(decoding: Array("not json".utf8)) }
    }

    @Test("a snapshot counts while fresh and its writer lives; an old one or a dead writer's does not")
    func snapshotFreshness() {
        let now = 1_795_000_000.0
        let own = getpid()
        #expect(MetricsSnapshot(pid: own, writtenAt: now - 1, labels: [], families: []).isCurrent(maxAge: .seconds(5), now: now))
        #expect(!MetricsSnapshot(pid: own, writtenAt: now - 6, labels: [], families: []).isCurrent(maxAge: .seconds(5), now: now))
        // Pids are at most 2^22 on Linux: this one cannot exist.
        #expect(!MetricsSnapshot(pid: 2_000_000_000, writtenAt: now, labels: [], families: []).isCurrent(maxAge: .seconds(5), now: now))
    }

    @Test("the directory is private, replaces files whole, skips what it cannot read, and goes away")
    func directory() throws {
        let directory = try MetricsDirectory.create(parent: "/tmp")
        defer { directory.remove() }
        var status = stat()
        #expect(stat(directory.path, &status) == 0)
        #expect(status.st_mode & 0o777 == 0o700)

        let first = MetricsSnapshot(pid: getpid(), writtenAt: 1, labels: [MetricLabel("worker", "0")], families: worker(1))
        let second = MetricsSnapshot(pid: getpid(), writtenAt: 2, labels: [MetricLabel("worker", "0")], families: worker(2))
        try directory.write(first, as: MetricsDirectory.workerFile(slot: "0"))
        try directory.write(second, as: MetricsDirectory.workerFile(slot: "0"))
        try directory.write(first, as: MetricsDirectory.workerFile(slot: "1"))
        try directory.write(first, as: MetricsDirectory.supervisorFile)
        // Garbage and leftovers of an interrupted write are ignored.
        for (name, text) in [("worker-9.json", "{"), (".worker-2.json.77.tmp", "{}"), ("notes.txt", "x")] {
            let fd = open(directory.path + "/" + name, O_WRONLY | O_CREAT, 0o600)
            _ = text.utf8CString.withUnsafeBytes { write(fd, $0.baseAddress, $0.count - 1) }
            close(fd)
        }

        let all = directory.readSnapshots()
        #expect(all.map(\.name) == ["supervisor.json", "worker-0.json", "worker-1.json"])
        #expect(all.first { $0.name == "worker-0.json" }?.snapshot == second)
        #expect(directory.readSnapshots(excluding: "worker-0.json").map(\.name) == ["supervisor.json", "worker-1.json"])

        directory.remove()
        #expect(access(directory.path, F_OK) != 0)
    }
}
