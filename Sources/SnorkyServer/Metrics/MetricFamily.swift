public import Snorky

/// One metric family of the Prometheus text exposition format (0.0.4): a name, its help
/// text, its type, and its samples.
public struct MetricFamily: Sendable, Equatable {
    public enum Kind: String, Sendable, Equatable, CaseIterable {
        case counter
        case gauge
        case histogram
    }

    public var name: String
    public var help: String
    public var kind: Kind
    public var samples: [MetricSample]

    public init(name: String, help: String, kind: Kind, samples: [MetricSample]) {
        self.name = name
        self.help = help
        self.kind = kind
        self.samples = samples
    }

    /// A counter or gauge with one unlabelled sample.
    public init(name: String, help: String, kind: Kind, value: Double) {
        self.init(name: name, help: help, kind: kind, samples: [MetricSample(value: value)])
    }

    /// A histogram family from a `DurationHistogram`: cumulative `_bucket`s (`le` the
    /// bound in seconds, last `+Inf`), `_sum` and `_count`.
    public init(histogram: DurationHistogram, name: String, help: String) {
        let counts = histogram.cumulativeCounts
        var samples: [MetricSample] = []
        for (index, count) in counts.enumerated() {
            let bound = index < histogram.bounds.count ? PrometheusText.format(histogram.bounds[index]) : "+Inf"
            samples.append(MetricSample(suffix: "_bucket", labels: [MetricLabel("le", bound)], value: Double(count)))
        }
        samples.append(MetricSample(suffix: "_sum", value: histogram.sumSeconds))
        // The +Inf bucket, read in the same pass as the others, so the two always agree.
        samples.append(MetricSample(suffix: "_count", value: Double(counts.last ?? 0)))
        self.init(name: name, help: help, kind: .histogram, samples: samples)
    }

    /// The sample name suffixes a family of this kind may have.
    var allowedSuffixes: Set<String> {
        switch kind {
        case .counter, .gauge: [""]
        case .histogram: ["_bucket", "_sum", "_count"]
        }
    }
}

/// One line of a family: `<name><suffix>{labels} value`.
public struct MetricSample: Sendable, Equatable {
    /// Empty for counters and gauges; `_bucket`, `_sum` or `_count` for histograms.
    public var suffix: String
    /// In output order.
    public var labels: [MetricLabel]
    public var value: Double

    public init(suffix: String = "", labels: [MetricLabel] = [], value: Double) {
        self.suffix = suffix
        self.labels = labels
        self.value = value
    }
}

public struct MetricLabel: Sendable, Equatable {
    public var name: String
    public var value: String

    public init(_ name: String, _ value: String) {
        self.name = name
        self.value = value
    }
}

/// Metric and label names, as the exposition format allows them.
enum MetricName {
    /// `[a-zA-Z_:][a-zA-Z0-9_:]*`
    static func isValidMetric(_ name: String) -> Bool {
        isValid(name, allowColon: true)
    }

    /// `[a-zA-Z_][a-zA-Z0-9_]*`, and not starting with `__` (reserved for Prometheus).
    static func isValidLabel(_ name: String) -> Bool {
        isValid(name, allowColon: false) && !name.hasPrefix("__")
    }

    private static func isValid(_ name: String, allowColon: Bool) -> Bool {
        guard let first = name.utf8.first else { return false }
        func isLetter(_ byte: UInt8) -> Bool {
            (UInt8(ascii: "a")...UInt8(ascii: "z")).contains(byte) || (UInt8(ascii: "A")...UInt8(ascii: "Z")).contains(byte)
                || byte == UInt8(ascii: "_") || (allowColon && byte == UInt8(ascii: ":"))
        }
        guard isLetter(first) else { return false }
        return name.utf8.allSatisfy { isLetter($0) || (UInt8(ascii: "0")...UInt8(ascii: "9")).contains($0) }
    }
}
