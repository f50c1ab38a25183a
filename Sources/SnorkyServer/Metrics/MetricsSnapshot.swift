#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif
import SnorkyProtocol

/// What one process of a node (a worker, or the supervisor) last reported about itself,
/// as written to the node's metrics directory for the worker that answers a scrape.
///
/// Stored as JSON: `{"format":1,"pid":…,"writtenAt":…,"labels":[["worker","1"]],
/// "families":[{"name":…,"help":…,"type":…,"samples":[{"suffix":"","labels":[…],"value":…}]}]}`.
/// Non-finite values are written as the strings `+Inf`, `-Inf` and `NaN`.
public struct MetricsSnapshot: Sendable, Equatable {
    public static let format: Int64 = 1

    /// The process that wrote it: a snapshot of a process that is gone is left out.
    public var pid: Int32
    /// When it was written, in seconds since the Unix epoch.
    public var writtenAt: Double
    /// Labels every sample gets when the snapshot is aggregated (`worker="1"`).
    public var labels: [MetricLabel]
    public var families: [MetricFamily]

    public init(pid: Int32, writtenAt: Double, labels: [MetricLabel], families: [MetricFamily]) {
        self.pid = pid
        self.writtenAt = writtenAt
        self.labels = labels
        self.families = families
    }

    /// Written within `maxAge` of `now` (seconds since the epoch) by a process that still
    /// exists: otherwise its writer stopped or died, and its values are not reported.
    public func isCurrent(maxAge: Duration, now: Double = wallClockSeconds()) -> Bool {
        let maxAgeSeconds = Double(maxAge.components.seconds) + Double(maxAge.components.attoseconds) / 1e18
        guard now - writtenAt <= maxAgeSeconds else { return false }
        return kill(pid, 0) == 0 || errno == EPERM
    }

    public func encoded() -> [UInt8] {
        let families: [JSON] = families.map { family in
            [
                "name": .string(family.name),
                "help": .string(family.help),
                "type": .string(family.kind.rawValue),
                "samples": .array(family.samples.map { sample in
                    ["suffix": .string(sample.suffix), "labels": Self.encode(sample.labels), "value": Self.encode(sample.value)]
                }),
            ]
        }
        let document: JSON = [
            "format": .int(Self.format),
            "pid": .int(Int64(pid)),
            "writtenAt": .double(writtenAt),
            "labels": Self.encode(labels),
            "families": .array(families),
        ]
        return document.encodedBytes()
    }

    public init(decoding bytes: some Collection<UInt8>) throws(MetricsSnapshotError) {
        let document: JSON
        do {
            document = try JSON.parse(bytes)
        } catch {
            throw MetricsSnapshotError("not JSON: \(error)")
        }
        guard document["format"]?.int64Value == Self.format else {
            throw MetricsSnapshotError("unknown format \(document["format"].map { "\($0)" } ?? "(none)")")
        }
        guard let pid = document["pid"]?.int64Value.flatMap({ Int32(exactly: $0) }),
            let writtenAt = document["writtenAt"]?.doubleValue,
            let families = document["families"]?.arrayValue
        else { throw MetricsSnapshotError("pid, writtenAt or families missing") }
        self.pid = pid
        self.writtenAt = writtenAt
        self.labels = try Self.decodeLabels(document["labels"] ?? .array([]))
        self.families = try families.map { family throws(MetricsSnapshotError) in
            guard let name = family["name"]?.stringValue,
                let help = family["help"]?.stringValue,
                let kind = family["type"]?.stringValue.flatMap(MetricFamily.Kind.init(rawValue:)),
                let samples = family["samples"]?.arrayValue
            else { throw MetricsSnapshotError("a family without name, help, type or samples") }
            return MetricFamily(
                name: name, help: help, kind: kind,
                samples: try samples.map { sample throws(MetricsSnapshotError) in
                    guard let suffix = sample["suffix"]?.stringValue, let value = sample["value"].flatMap(Self.decodeValue)
                    else { throw MetricsSnapshotError("a sample of \(name) without suffix or value") }
                    return MetricSample(suffix: suffix, labels: try Self.decodeLabels(sample["labels"] ?? .array([])), value: value)
                })
        }
    }

    private static func encode(_ labels: [MetricLabel]) -> JSON {
        .array(labels.map { .array([.string($0.name), .string($0.value)]) })
    }

    private static func decodeLabels(_ json: JSON) throws(MetricsSnapshotError) -> [MetricLabel] {
        guard let pairs = json.arrayValue else { throw MetricsSnapshotError("labels must be an array") }
        return try pairs.map { pair throws(MetricsSnapshotError) in
            guard let parts = pair.arrayValue, parts.count == 2, let name = parts[0].stringValue, let value = parts[1].stringValue
            else { throw MetricsSnapshotError("a label must be [name, value]") }
            return MetricLabel(name, value)
        }
    }

    private static func encode(_ value: Double) -> JSON {
        if value.isNaN { return "NaN" }
        if value.isInfinite { return value > 0 ? "+Inf" : "-Inf" }
        if let integer = Int64(exactly: value) { return .int(integer) }
        return .double(value)
    }

    private static func decodeValue(_ json: JSON) -> Double? {
        switch json {
        case .string("NaN"): .nan
        case .string("+Inf"): .infinity
        case .string("-Inf"): -.infinity
        default: json.doubleValue
        }
    }
}

public struct MetricsSnapshotError: Error, Sendable, CustomStringConvertible {
    public let description: String

    init(_ description: String) {
        self.description = "invalid metrics snapshot: " + description
    }
}

/// Seconds since the Unix epoch.
@usableFromInline func wallClockSeconds() -> Double {
    var now = timespec()
    clock_gettime(CLOCK_REALTIME, &now)
    return Double(now.tv_sec) + Double(now.tv_nsec) / 1e9
}
