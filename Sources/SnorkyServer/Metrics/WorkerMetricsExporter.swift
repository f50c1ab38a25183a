#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif
import Logging
import NIOPosix
import Snorky
import Synchronization

/// How a worker reports on `GET /metrics`.
public struct MetricsConfiguration: Sendable {
    /// The `worker` label of this worker's samples: its slot.
    public var worker = "0"
    /// Where the node's processes leave their snapshots; nil when this worker is alone
    /// (`--bus memory`, tests), which then reports only itself.
    public var directory: MetricsDirectory?
    /// How often this worker's snapshot is rewritten.
    public var snapshotInterval: Duration = .seconds(1)
    /// A snapshot older than this is from a process that stopped writing; it is left out.
    public var maxSnapshotAge: Duration = .seconds(10)

    public init() {}
}

/// A worker's side of the node's metrics: its families (live counters and gauges), its
/// snapshot kept current in the metrics directory, and the exposition a scrape gets, which
/// adds the other workers' and the supervisor's fresh snapshots to this worker's live values.
final class WorkerMetricsExporter: Sendable {
    private let node: Node
    private let connections: ConnectionRegistry
    private let configuration: MetricsConfiguration
    private let logger: Logger
    private let publisher = Mutex<Task<Void, Never>?>(nil)

    init(node: Node, connections: ConnectionRegistry, configuration: MetricsConfiguration, logger: Logger) {
        self.node = node
        self.connections = connections
        self.configuration = configuration
        self.logger = logger
    }

    private var ownLabels: [MetricLabel] { [MetricLabel("worker", configuration.worker)] }
    private var ownFile: String { MetricsDirectory.workerFile(slot: configuration.worker) }

    // MARK: Scrapes

    /// The node's metrics in the text format: this worker live, the others from their
    /// snapshots. Built on NIO's thread pool, off the event loops: it reads files, and
    /// `/proc/self/fd` holds an entry per connection.
    func exposition() async -> String {
        do {
            return try await NIOThreadPool.singleton.runIfActive { self.render() }
        } catch {
            // The pool is gone (shutting down): answer from here rather than not at all.
            return render()
        }
    }

    private func render() -> String {
        var sources = [(labels: ownLabels, families: families())]
        if let directory = configuration.directory {
            let maxAge = configuration.maxSnapshotAge
            sources += directory.readSnapshots(excluding: ownFile)
                .filter { $0.snapshot.isCurrent(maxAge: maxAge) }
                .map { ($0.snapshot.labels, $0.snapshot.families) }
        }
        // Workers in slot order whichever answers, then the supervisor (no label of its own).
        sources.sort { Self.order(of: $0.labels) < Self.order(of: $1.labels) }
        var aggregator = MetricsAggregator()
        for source in sources {
            aggregator.add(source.families, labels: source.labels)
        }
        return PrometheusText.render(aggregator.result)
    }

    private static func order(of labels: [MetricLabel]) -> Int {
        labels.first { $0.name == "worker" }.flatMap { Int($0.value) } ?? Int.max
    }

    // MARK: Snapshots

    /// Writes this worker's snapshot now, then every `snapshotInterval` until
    /// `stopPublishing()`. Returns after the first write, so the worker is visible to
    /// scrapes on the other workers by the time it reports ready. No directory: nothing.
    func startPublishing() async {
        guard let directory = configuration.directory else { return }
        await publish(to: directory)
        let interval = configuration.snapshotInterval
        let task = Task {
            while !Task.isCancelled {
                try? await Task.sleep(for: interval)
                if Task.isCancelled { return }
                await self.publish(to: directory)
            }
        }
        publisher.withLock { $0 = task }
    }

    /// Stops rewriting the snapshot: a draining worker leaves its slot to its replacement.
    func stopPublishing() {
        publisher.withLock { task in
            task?.cancel()
            task = nil
        }
    }

    private func publish(to directory: MetricsDirectory) async {
        do {
            // Off the event loops, like a scrape.
            try await NIOThreadPool.singleton.runIfActive {
                let snapshot = MetricsSnapshot(pid: getpid(), writtenAt: wallClockSeconds(), labels: self.ownLabels, families: self.families())
                try directory.write(snapshot, as: self.ownFile)
            }
        } catch {
            logger.warning("cannot write the metrics snapshot", metadata: ["error": "\(error)"])
        }
    }

    // MARK: Families

    /// This worker's metrics, read now.
    func families() -> [MetricFamily] {
        let metrics = node.metrics
        var families: [MetricFamily] = [
            MetricFamily(
                name: "snorky_build_info", help: "Snorky's version; the value is always 1.", kind: .gauge,
                samples: [MetricSample(labels: [MetricLabel("version", SnorkyVersion.current)], value: 1)]),
            MetricFamily(name: "snorky_connections", help: "Open WebSocket connections.", kind: .gauge, value: Double(connections.count)),
            MetricFamily(
                name: "snorky_connections_accepted_total", help: "WebSocket connections opened, including those refused at the connection limit.",
                kind: .counter, value: Double(connections.openedCount)),
            MetricFamily(
                name: "snorky_connection_closes_total",
                help: "Connections closed by the server, by reason (close code); echoes of a client's own close are not counted.",
                kind: .counter,
                samples: metrics.closes.values.map { MetricSample(labels: [MetricLabel("reason", $0.label)], value: Double($0.count)) }),
            MetricFamily(
                name: "snorky_subscriptions", help: "Topic subscriptions of connected clients (a client on three topics counts three).",
                kind: .gauge, value: Double(metrics.subscriptions.value)),
            MetricFamily(name: "snorky_topics", help: "Topics with at least one local subscriber.", kind: .gauge, value: Double(node.hub.topicCount)),
            MetricFamily(
                name: "snorky_frames_received_total", help: "Text messages received from WebSocket clients.", kind: .counter,
                value: Double(metrics.framesReceived.value)),
            MetricFamily(
                name: "snorky_frames_sent_total", help: "Frames queued for connections: publications, responses, direct messages (backend replies included).",
                kind: .counter, value: Double(metrics.framesSent.value)),
            MetricFamily(
                name: "snorky_deliveries_total", help: "Publications delivered to local subscribers (one per subscriber).", kind: .counter,
                value: Double(metrics.deliveries.value)),
            MetricFamily(
                name: "snorky_protocol_errors_total", help: "Protocol errors (invalid JSON, malformed messages or requests, unknown services) answered to clients.",
                kind: .counter, value: Double(metrics.protocolErrors.value)),
            MetricFamily(
                name: "snorky_backend_requests_total", help: "Backend API requests (POST /backend) by response status.", kind: .counter,
                samples: metrics.backendRequests.values.map { MetricSample(labels: [MetricLabel("code", $0.label)], value: Double($0.count)) }),
            MetricFamily(
                name: "snorky_bus_messages_published_total", help: "Publications and direct messages this worker published on the bus.",
                kind: .counter, value: Double(metrics.busPublished.value)),
            MetricFamily(
                name: "snorky_bus_publish_failures_total", help: "Publishes the bus refused (unavailable or too large).", kind: .counter,
                value: Double(metrics.busPublishFailures.value)),
            MetricFamily(
                name: "snorky_bus_messages_received_total", help: "Publications and direct messages the bus delivered to this worker.",
                kind: .counter, value: Double(metrics.busReceived.value)),
            MetricFamily(
                name: "snorky_bus_messages_dropped_total", help: "Bus messages dropped as malformed or of an unknown envelope version.",
                kind: .counter, value: Double(node.bus.droppedPublicationCount)),
            MetricFamily(
                name: "snorky_bus_reconnects_total", help: "Reconnections of the bus after losing Redis.", kind: .counter,
                value: Double(node.bus.reconnectCount)),
            MetricFamily(
                name: "snorky_bus_up", help: "1 while a probe sent through the bus to this worker came back recently (what GET /ready checks).",
                kind: .gauge, value: node.isBusDelivering ? 1 : 0),
            MetricFamily(
                name: "snorky_bus_probe_failures_total", help: "Bus probes that did not come back within a second.", kind: .counter,
                value: Double(metrics.busProbeFailures.value)),
            MetricFamily(
                histogram: metrics.busRoundTrip, name: "snorky_bus_round_trip_seconds",
                help: "Round trip of a probe through the bus to this worker's own inbox, once a second."),
        ]
        if let last = metrics.busRoundTrip.lastSeconds {
            families.append(MetricFamily(
                name: "snorky_bus_last_round_trip_seconds", help: "The last bus probe's round trip.", kind: .gauge, value: last))
        }
        families += ProcessStats.current()?.families ?? []
        return families
    }
}
