import ArgumentParser
import Foundation

@main
enum BenchMain {
    static func main() async {
        // Writing to a helper that already exited must be an error, not a fatal signal.
        signal(SIGPIPE, SIG_IGN)
        // A helper process started by a run with --processes > 1 gets its orders from the
        // environment and reports on stdout; it never parses the command line.
        if let shard = ShardChild.fromEnvironment() {
            await shard.run()
            return
        }
        await BenchCommand.main()
    }
}

struct BenchCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "snorky-bench",
        abstract: "Load-test a Snorky (or Nchan) pub/sub server over loopback.",
        discussion: """
            Opens --connections WebSocket connections, subscribes each to \
            --channels-per-connection of --channels channels, waits until every subscription \
            is confirmed and has received a warmup message, then publishes --payload-byte \
            messages at --rate per second (0: as fast as delivery keeps up) for --duration \
            seconds or --messages messages, and reports deliveries per second, \
            publish-to-delivery latency, messages lost, connect rate and, given the server's \
            pids, server CPU per million deliveries and RSS per connection.

            With --publish-via none it only connects, subscribes and holds, to measure memory.
            """
    )

    @Option(help: "Server protocol: snorky or nchan.")
    var target: BenchTarget = .snorky

    @Option(help: "Server address; must be loopback (127.x.x.x, ::1 or localhost).")
    var host = "127.0.0.1"

    @Option(help: "WebSocket port (default: 5800 for snorky, 8090 for nchan).")
    var port: Int?

    @Option(help: "Snorky's WebSocket path.")
    var path = "/ws"

    @Option(help: "Publishing HTTP port: Snorky's backend port (default 5801); Nchan defaults to --port.")
    var publishPort: Int?

    @Option(help: "X-Backend-Key for Snorky's backend API (or SNORKY_BACKEND_KEY).")
    var backendKey: String?

    @Option(name: [.short, .long], help: "Subscribing WebSocket connections.")
    var connections = 1000

    @Option(help: "Channels the connections are spread over.")
    var channels = 1

    @Option(help: "Channels each connection subscribes to.")
    var channelsPerConnection = 1

    @Option(help: "How to publish: backend (HTTP POSTs), client (WebSocket pubsub.publish, Snorky only) or none (idle: memory only).")
    var publishVia: PublishVia = .backend

    @Option(help: "Publishing connections (at most one per channel, so each channel keeps one ordered source).")
    var publishers = 2

    @Option(help: "HTTP publishing: requests pipelined per connection.")
    var pipeline = 64

    @Option(name: [.short, .long], help: "Publications per second over all publishers; 0 publishes as fast as delivery keeps up.")
    var rate: Double = 1000

    @Option(help: "With --rate 0: publications allowed in flight (published, not yet delivered everywhere); 0 picks one from the fan-out.")
    var window = 0

    @Option(help: "Message body size in bytes (at least \(BenchPayload.headerLength): the bench's header).")
    var payload = 100

    @Option(name: [.short, .long], help: "Seconds to publish for.")
    var duration: Double = 10

    @Option(help: "Stop after this many publications in total (whichever of this and --duration comes first).")
    var messages: Int?

    @Option(help: "Client event-loop threads (default: one per core).")
    var threads: Int?

    @Option(help: "Connections being set up at once.")
    var connectConcurrency = 200

    @Option(help: "Source addresses 127.0.0.1…127.0.0.N to spread connections over; 0 adds them only when the connections exceed one address's ephemeral ports.")
    var sourceAddresses = 0

    @Option(help: "Client processes sharing the connections; 0 adds helpers only when the open-file limit requires.")
    var processes = 0

    @Flag(inversion: .prefixedNo, help: "Before measuring, publish warmup messages until every subscription has received one.")
    var prime = true

    @Option(help: "Seconds to wait for every subscription to see a warmup message.")
    var primeTimeout: Double = 30

    @Option(help: "Seconds to wait after all subscriptions are ready before sampling memory.")
    var settle: Double = 1

    @Option(help: "With --publish-via none: seconds to hold the connections before the final memory sample.")
    var hold: Double = 3

    @Option(help: "Seconds to wait after publishing stops for the last deliveries.")
    var drainTimeout: Double = 10

    @Option(help: "Seconds after which no further connection is started (the rest count as failed).")
    var connectTimeout: Double = 180

    @Option(help: "Server pids to sample (comma-separated) for CPU and RSS.")
    var serverPids: String?

    @Option(help: "A server pid whose whole process tree is sampled (supervisor and workers; nginx master and workers). Repeatable.")
    var serverPidTree: [Int32] = []

    @Option(help: "Redis pid: its CPU time is reported next to the server's.")
    var redisPid: Int32?

    @Flag(help: "Print the report as JSON instead of a table.")
    var json = false

    @Option(help: "Also write the JSON report to this file.")
    var jsonFile: String?

    @Flag(help: "No progress line.")
    var quiet = false

    @Option(help: "A name for this run, carried into the report.")
    var label: String?

    func validate() throws {
        guard connections > 0 else { throw ValidationError("--connections must be positive") }
        guard channels > 0 else { throw ValidationError("--channels must be positive") }
        guard (1...channels).contains(channelsPerConnection) else {
            throw ValidationError("--channels-per-connection must be between 1 and --channels")
        }
        guard channelsPerConnection <= 255 else { throw ValidationError("--channels-per-connection is at most 255") }
        guard publishers > 0, pipeline > 0 else { throw ValidationError("--publishers and --pipeline must be positive") }
        guard rate >= 0, duration > 0 else { throw ValidationError("--rate must be >= 0 and --duration positive") }
        guard payload > 0, payload <= 1 << 20 else { throw ValidationError("--payload must be between 1 and 1 MiB") }
        if let messages, messages < 0 { throw ValidationError("--messages must be >= 0") }
        if target == .nchan, publishVia == .client {
            throw ValidationError("--publish-via client is Snorky's pubsub.publish; Nchan publishes with --publish-via backend")
        }
        guard connectConcurrency > 0 else { throw ValidationError("--connect-concurrency must be positive") }
        guard Self.isLoopback(host) else {
            throw ValidationError("--host \(host) is not a loopback address: snorky-bench only talks to this machine")
        }
    }

    static func isLoopback(_ host: String) -> Bool {
        if host == "localhost" || host == "::1" { return true }
        let parts = host.split(separator: ".")
        return parts.count == 4 && parts[0] == "127" && parts.allSatisfy { UInt8($0) != nil }
    }

    func makeSettings() throws -> BenchSettings {
        let pids = try (serverPids ?? "").split(separator: ",").map { text -> Int32 in
            guard let pid = Int32(text.trimmingCharacters(in: .whitespaces)) else {
                throw ValidationError("--server-pids: \(text) is not a pid")
            }
            return pid
        }
        var generator = SystemRandomNumberGenerator()
        let key = backendKey ?? ProcessInfo.processInfo.environment["SNORKY_BACKEND_KEY"] ?? ""
        if target == .snorky, publishVia == .backend, key.isEmpty {
            throw ValidationError("--publish-via backend needs --backend-key (or SNORKY_BACKEND_KEY)")
        }
        let resolvedPort = port ?? (target == .snorky ? 5800 : 8090)
        return BenchSettings(
            target: target,
            host: host == "localhost" ? "127.0.0.1" : host,
            port: resolvedPort,
            path: path,
            publishPort: publishPort ?? (target == .snorky ? 5801 : resolvedPort),
            backendKey: key,
            connections: connections,
            channels: channels,
            channelsPerConnection: channelsPerConnection,
            publishVia: publishVia,
            publishers: min(publishers, channels),
            pipeline: pipeline,
            rate: rate,
            window: window,
            payloadSize: BenchPayload.length(forPayloadSize: payload),
            duration: duration,
            messages: messages,
            threads: threads ?? ProcessInfo.processInfo.activeProcessorCount,
            connectConcurrency: connectConcurrency,
            sourceAddresses: sourceAddresses,
            prime: prime,
            primeTimeout: primeTimeout,
            settle: settle,
            hold: hold,
            drainTimeout: drainTimeout,
            connectTimeout: connectTimeout,
            serverPids: pids,
            serverPidTrees: serverPidTree,
            redisPid: redisPid,
            processes: processes,
            runID: String(generator.next() as UInt32, radix: 16),
            label: label
        )
    }

    func run() async throws {
        let settings = try makeSettings()
        let progress = ProgressLine(enabled: !quiet)
        let report = try await BenchRun(settings: settings, progress: progress).run()
        progress.finish()
        let jsonText = try report.jsonText()
        if let jsonFile {
            try (jsonText + "\n").write(toFile: jsonFile, atomically: true, encoding: .utf8)
        }
        if json {
            print(jsonText)
        } else {
            print(report.table())
        }
    }
}
