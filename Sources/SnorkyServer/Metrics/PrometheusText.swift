/// The Prometheus text exposition format, version 0.0.4.
public enum PrometheusText {
    /// The `Content-Type` of a response in this format.
    public static let contentType = "text/plain; version=0.0.4; charset=utf-8"

    /// Renders `families` in order: `# HELP`, `# TYPE`, then the samples of each. The
    /// families must already be valid and have distinct names (`MetricsAggregator` makes
    /// them so).
    public static func render(_ families: [MetricFamily]) -> String {
        var output = ""
        for family in families {
            output += "# HELP \(family.name) \(escapeHelp(family.help))\n"
            output += "# TYPE \(family.name) \(family.kind.rawValue)\n"
            for sample in family.samples {
                output += family.name
                output += sample.suffix
                if !sample.labels.isEmpty {
                    output += "{"
                    for (index, label) in sample.labels.enumerated() {
                        if index > 0 { output += "," }
                        output += label.name
                        output += "=\""
                        output += escapeLabelValue(label.value)
                        output += "\""
                    }
                    output += "}"
                }
                output += " "
                output += format(sample.value)
                output += "\n"
            }
        }
        return output
    }

    /// HELP text: backslash and line feed are escaped.
    static func escapeHelp(_ text: String) -> String {
        escape(text, quote: false)
    }

    /// Label values: backslash, double quote and line feed are escaped.
    static func escapeLabelValue(_ text: String) -> String {
        escape(text, quote: true)
    }

    private static func escape(_ text: String, quote: Bool) -> String {
        guard text.utf8.contains(where: { $0 == UInt8(ascii: "\\") || $0 == UInt8(ascii: "\n") || (quote && $0 == UInt8(ascii: "\"")) })
        else { return text }
        var escaped = ""
        for character in text.unicodeScalars {
            switch character {
            case "\\": escaped += "\\\\"
            case "\n": escaped += "\\n"
            case "\"" where quote: escaped += "\\\""
            default: escaped.unicodeScalars.append(character)
            }
        }
        return escaped
    }

    /// Integers without a fraction, `+Inf`, `-Inf`, `NaN`, anything else as the shortest
    /// decimal that reads back as the same double.
    static func format(_ value: Double) -> String {
        if value.isNaN { return "NaN" }
        if value.isInfinite { return value > 0 ? "+Inf" : "-Inf" }
        if value == value.rounded(), abs(value) < 9_007_199_254_740_992 {
            return String(Int64(value))
        }
        return "\(value)"
    }
}

/// Combines the metric families of several sources (this worker's live values, the other
/// workers' snapshots, the supervisor's) into one valid exposition: one `# HELP`/`# TYPE`
/// per family, every sample of a source carrying that source's labels (`worker="1"`), and
/// nothing the format forbids. A family or sample that would make the output invalid (bad
/// name, a type that disagrees with the same family from another source, a series already
/// present) is left out rather than breaking the whole scrape.
public struct MetricsAggregator {
    private var names: [String] = []
    private var families: [String: MetricFamily] = [:]
    /// Every series already added: name, suffix and labels.
    private var series: Set<String> = []

    public init() {}

    /// Adds `families`, prefixing each sample's labels with `labels` (a label the sample
    /// already has keeps the sample's value).
    public mutating func add(_ families: [MetricFamily], labels: [MetricLabel] = []) {
        for family in families {
            guard MetricName.isValidMetric(family.name) else { continue }
            if let existing = self.families[family.name], existing.kind != family.kind { continue }
            let allowed = family.allowedSuffixes
            var accepted: [MetricSample] = []
            for var sample in family.samples {
                guard allowed.contains(sample.suffix) else { continue }
                let own = Set(sample.labels.map(\.name))
                sample.labels = labels.filter { !own.contains($0.name) } + sample.labels
                let labelNames = sample.labels.map(\.name)
                guard labelNames.allSatisfy(MetricName.isValidLabel), Set(labelNames).count == labelNames.count else { continue }
                if family.kind == .histogram, sample.suffix != "_bucket", labelNames.contains("le") { continue }
                if family.kind == .histogram, sample.suffix == "_bucket", !labelNames.contains("le") { continue }
                guard series.insert(Self.seriesKey(family.name, sample)).inserted else { continue }
                accepted.append(sample)
            }
            if self.families[family.name] == nil {
                names.append(family.name)
                self.families[family.name] = MetricFamily(name: family.name, help: family.help, kind: family.kind, samples: accepted)
            } else {
                self.families[family.name]!.samples += accepted
            }
        }
    }

    /// The combined families, sorted by name.
    public var result: [MetricFamily] {
        names.sorted().compactMap { families[$0] }
    }

    private static func seriesKey(_ name: String, _ sample: MetricSample) -> String {
        // Label order does not make a different series.
        let labels = sample.labels.sorted { $0.name < $1.name }.map { "\($0.name)=\($0.value)" }
        return ([name + sample.suffix] + labels).joined(separator: "\u{0}")
    }
}
