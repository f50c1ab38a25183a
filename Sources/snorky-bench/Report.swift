import Foundation

/// The outcome of a run: printed as a table, or as JSON for scripts (bench/compare.sh).
/// Optional sections are absent when they do not apply (no publishing, no server pids).
struct BenchReport: Codable, Sendable {
    struct Connections: Codable, Sendable {
        var planned: Int
        var ready: Int
        var failed: Int
        var firstErrors: [String]
        /// From the first connection attempt to the last subscription confirmed.
        var seconds: Double
        /// Ready connections per second over `seconds`: connect, upgrade and subscribe.
        var perSecond: Double
        var subscriptions: Int
        var sourceAddresses: Int
        var clientProcesses: Int
    }

    struct Publishing: Codable, Sendable {
        var via: PublishVia
        var publishers: Int
        var sent: Int
        var failed: Int
        var stalls: Int
        var firstError: String?
        var targetRate: Double
        var achievedRate: Double
        var payloadBytes: Int
        var warmupRounds: Int
        var primeSeconds: Double?
    }

    struct Delivery: Codable, Sendable {
        var expected: Int
        var delivered: Int
        var lost: Int
        var lostPercent: Double
        var outOfOrder: Int
        var unrecognizedFrames: Int
        var disconnects: Int
        /// From the first scheduled publication to the last delivery.
        var seconds: Double
        var perSecond: Double
    }

    struct Latency: Codable, Sendable {
        var count: UInt64
        var p50Micros: Double
        var p90Micros: Double
        var p99Micros: Double
        var p999Micros: Double
        var maxMicros: Double
        var meanMicros: Double
    }

    struct Server: Codable, Sendable {
        var pids: [Int32]
        /// CPU time while publishing and draining.
        var cpuSeconds: Double?
        var cpuSecondsPerMillionDeliveries: Double?
        var rssBaselineBytes: Int
        var rssConnectedBytes: Int
        var rssEndBytes: Int?
        /// (connected RSS - baseline RSS) / ready connections.
        var rssPerConnectionBytes: Double?
        var pssBaselineBytes: Int
        var pssConnectedBytes: Int
        /// The same from PSS, which counts pages shared between the server's processes once.
        var pssPerConnectionBytes: Double?
        var redisCPUSeconds: Double?
        var redisCPUSecondsPerMillionDeliveries: Double?
    }

    struct Client: Codable, Sendable {
        var threads: Int
        /// This process's CPU time while publishing and draining (helpers not included).
        var cpuSeconds: Double?
    }

    var label: String?
    var settings: BenchSettings
    var connections: Connections
    var publishing: Publishing?
    var delivery: Delivery?
    var latency: Latency?
    var server: Server?
    var client: Client
    var warnings: [String]

    func jsonText() throws -> String {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.prettyPrinted, .sortedKeys]
        return String(decoding: try encoder.encode(self), as: UTF8.self)
    }

    func table() -> String {
        var rows: [(String, String)] = []
        let s = settings
        var title = "snorky-bench: target \(s.target.rawValue) ws://\(s.host):\(s.port)"
        if let label { title = "\(label) — " + title }
        rows.append(("connections", "\(grouped(connections.ready)) ready of \(grouped(connections.planned))"
            + (connections.failed > 0 ? ", \(grouped(connections.failed)) failed" : "")))
        rows.append(("subscriptions", "\(grouped(connections.subscriptions)) on \(grouped(s.channels)) channel(s)"
            + ", \(s.channelsPerConnection) per connection"))
        rows.append(("connect rate", "\(grouped(connections.perSecond))/s (all ready in \(fixed(connections.seconds, 2)) s)"))
        if connections.sourceAddresses > 1 || connections.clientProcesses > 1 {
            rows.append(("client spread", "\(connections.sourceAddresses) source address(es), \(connections.clientProcesses) process(es)"))
        }
        if let publishing {
            let target = publishing.targetRate > 0 ? "\(grouped(publishing.targetRate))/s" : "as fast as delivery keeps up"
            rows.append(("published", "\(grouped(publishing.sent)) × \(publishing.payloadBytes) B via \(publishing.via.rawValue)"
                + " (\(publishing.publishers) conn), \(grouped(publishing.achievedRate))/s, target \(target)"))
            if publishing.failed > 0 || publishing.firstError != nil {
                rows.append(("publish errors", "\(grouped(publishing.failed))" + (publishing.firstError.map { ": \($0)" } ?? "")))
            }
            if publishing.stalls > 0 {
                rows.append(("publish stalls", "\(grouped(publishing.stalls)) ticks with the in-flight window full"))
            }
            if let prime = publishing.primeSeconds {
                rows.append(("warmup", "every subscription live after \(fixed(prime, 2)) s (\(publishing.warmupRounds) round(s))"))
            }
        }
        if let delivery {
            rows.append(("deliveries", "\(grouped(delivery.delivered)) in \(fixed(delivery.seconds, 2)) s = \(grouped(delivery.perSecond))/s"))
            rows.append(("lost", "\(grouped(delivery.lost)) of \(grouped(delivery.expected)) (\(fixed(delivery.lostPercent, 4)) %)"))
            if delivery.outOfOrder > 0 || delivery.disconnects > 0 || delivery.unrecognizedFrames > 0 {
                rows.append(("anomalies", "\(grouped(delivery.outOfOrder)) out of order, \(grouped(delivery.disconnects)) disconnects, "
                    + "\(grouped(delivery.unrecognizedFrames)) unrecognized frames"))
            }
        }
        if let latency, latency.count > 0 {
            rows.append(("latency", "p50 \(formatMicros(latency.p50Micros))  p99 \(formatMicros(latency.p99Micros))  "
                + "p99.9 \(formatMicros(latency.p999Micros))  max \(formatMicros(latency.maxMicros))"))
        }
        if let server {
            rows.append(("server pids", server.pids.map(String.init).joined(separator: ",")))
            if let cpu = server.cpuSeconds {
                var text = "\(fixed(cpu, 2)) s"
                if let perMillion = server.cpuSecondsPerMillionDeliveries {
                    text += " = \(fixed(perMillion, 3)) s per million deliveries"
                }
                rows.append(("server CPU", text))
            }
            if let redis = server.redisCPUSeconds {
                var text = "\(fixed(redis, 2)) s"
                if let perMillion = server.redisCPUSecondsPerMillionDeliveries {
                    text += " = \(fixed(perMillion, 3)) s per million deliveries"
                }
                rows.append(("redis CPU", text))
            }
            var rss = "baseline \(formatBytes(Double(server.rssBaselineBytes))), connected \(formatBytes(Double(server.rssConnectedBytes)))"
            if let end = server.rssEndBytes { rss += ", end \(formatBytes(Double(end)))" }
            rows.append(("server RSS", rss))
            if let perConnection = server.rssPerConnectionBytes {
                var text = formatBytes(perConnection)
                if let pss = server.pssPerConnectionBytes { text += " (PSS: \(formatBytes(pss)))" }
                rows.append(("RSS/connection", text))
            }
        }
        if let cpu = client.cpuSeconds {
            rows.append(("client CPU", "\(fixed(cpu, 2)) s on \(client.threads) thread(s)"))
        }
        for warning in warnings { rows.append(("warning", warning)) }
        let width = rows.map(\.0.count).max() ?? 0
        let body = rows.map { $0.0.padding(toLength: width, withPad: " ", startingAt: 0) + "  " + $0.1 }
        return ([title] + body).joined(separator: "\n")
    }
}
