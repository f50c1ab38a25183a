/// A strict reader of the Prometheus text exposition format 0.0.4, for tests: it refuses
/// what the format forbids or what makes scrapes ambiguous (a second `# TYPE` or `# HELP`
/// for a family, a family's samples split by another family, a sample before its family's
/// `# TYPE`, a series listed twice, a histogram whose buckets are not cumulative or whose
/// `+Inf` bucket disagrees with `_count`), and gives the samples' values to check.
public struct PrometheusExposition: Sendable {
    public struct Sample: Sendable, Equatable, CustomStringConvertible {
        /// The full sample name (`snorky_x_bucket` for a histogram bucket).
        public var name: String
        public var labels: [String: String]
        public var value: Double

        public init(name: String, labels: [String: String], value: Double) {
            self.name = name
            self.labels = labels
            self.value = value
        }

        public var description: String {
            let labels = labels.sorted { $0.key < $1.key }.map { "\($0.key)=\"\($0.value)\"" }.joined(separator: ",")
            return "\(name){\(labels)} \(value)"
        }
    }

    public struct Family: Sendable {
        public var name: String
        public var type: String
        public var help: String
        public var samples: [Sample]
    }

    /// In exposition order.
    public var families: [Family]

    public func family(_ name: String) -> Family? {
        families.first { $0.name == name }
    }

    /// Samples named `name` (family name plus suffix) whose labels include `labels`.
    public func samples(_ name: String, _ labels: [String: String] = [:]) -> [Sample] {
        families.flatMap(\.samples).filter { sample in
            sample.name == name && labels.allSatisfy { sample.labels[$0.key] == $0.value }
        }
    }

    /// The single sample matching, or nil when there is none or more than one.
    public func value(_ name: String, _ labels: [String: String] = [:]) -> Double? {
        let matching = samples(name, labels)
        return matching.count == 1 ? matching[0].value : nil
    }

    public init(parsing text: String) throws(PrometheusExpositionError) {
        var families: [Family] = []
        var help: [String: String] = [:]
        var closed: Set<String> = []
        var seriesSeen: Set<String> = []
        var lineNumber = 0
        func fail(_ reason: String) -> PrometheusExpositionError {
            PrometheusExpositionError(line: lineNumber, reason: reason)
        }
        guard text.isEmpty || text.hasSuffix("\n") else {
            throw PrometheusExpositionError(line: 0, reason: "the exposition must end with a line feed")
        }
        for line in text.split(separator: "\n", omittingEmptySubsequences: false).dropLast() {
            lineNumber += 1
            if line.isEmpty { continue }
            if line.hasPrefix("# HELP ") {
                let rest = line.dropFirst("# HELP ".count)
                let name = String(rest.prefix { $0 != " " })
                guard Self.isMetricName(name) else { throw fail("bad metric name in HELP: \(name)") }
                guard help[name] == nil else { throw fail("second HELP for \(name)") }
                guard !closed.contains(name) else { throw fail("HELP for \(name) after its samples") }
                help[name] = try Self.unescape(String(rest.dropFirst(name.count).drop { $0 == " " }), quoted: false, fail)
                continue
            }
            if line.hasPrefix("# TYPE ") {
                let parts = line.dropFirst("# TYPE ".count).split(separator: " ")
                guard parts.count == 2, Self.isMetricName(String(parts[0])) else { throw fail("bad TYPE line") }
                let name = String(parts[0])
                let type = String(parts[1])
                guard ["counter", "gauge", "histogram", "summary", "untyped"].contains(type) else { throw fail("unknown type \(type)") }
                guard !families.contains(where: { $0.name == name }) else { throw fail("second TYPE for \(name)") }
                if let current = families.last { closed.insert(current.name) }
                families.append(Family(name: name, type: type, help: "", samples: []))
                continue
            }
            if line.hasPrefix("#") { continue }  // a comment
            let sample = try Self.parseSample(line, fail)
            guard var family = families.last else { throw fail("sample \(sample.name) before any TYPE") }
            let suffixes = family.type == "histogram" ? ["_bucket", "_sum", "_count"] : [""]
            guard suffixes.contains(where: { family.name + $0 == sample.name }) else {
                throw fail("sample \(sample.name) is not part of the family \(family.name) it follows")
            }
            let key = ([sample.name] + sample.labels.sorted { $0.key < $1.key }.map { "\($0.key)=\($0.value)" }).joined(separator: "\u{0}")
            guard seriesSeen.insert(key).inserted else { throw fail("series listed twice: \(sample)") }
            if sample.name.hasSuffix("_bucket"), family.type == "histogram" {
                guard sample.labels["le"] != nil else { throw fail("bucket without le: \(sample)") }
            }
            family.samples.append(sample)
            families[families.count - 1] = family
        }
        for index in families.indices {
            families[index].help = help[families[index].name] ?? ""
            if families[index].type == "histogram" { try Self.checkHistogram(families[index]) }
        }
        self.families = families
    }

    private static func checkHistogram(_ family: Family) throws(PrometheusExpositionError) {
        var groups: [[String: String]: [(bound: Double, count: Double)]] = [:]
        var counts: [[String: String]: Double] = [:]
        for sample in family.samples {
            var labels = sample.labels
            if sample.name == family.name + "_bucket" {
                let bound = labels.removeValue(forKey: "le")!
                guard let value = Double(bound == "+Inf" ? "inf" : bound) else {
                    throw PrometheusExpositionError(line: 0, reason: "bad le \(bound) in \(family.name)")
                }
                groups[labels, default: []].append((value, sample.value))
            } else if sample.name == family.name + "_count" {
                counts[labels] = sample.value
            }
        }
        for (labels, buckets) in groups {
            let sorted = buckets.sorted { $0.bound < $1.bound }
            guard sorted.last?.bound == .infinity else {
                throw PrometheusExpositionError(line: 0, reason: "\(family.name)\(labels) has no +Inf bucket")
            }
            guard zip(sorted, sorted.dropFirst()).allSatisfy({ $0.count <= $1.count }) else {
                throw PrometheusExpositionError(line: 0, reason: "\(family.name)\(labels) buckets are not cumulative")
            }
            guard counts[labels] == sorted.last?.count else {
                throw PrometheusExpositionError(line: 0, reason: "\(family.name)\(labels) _count differs from the +Inf bucket")
            }
        }
    }

    private static func parseSample(
        _ line: Substring, _ fail: (String) -> PrometheusExpositionError
    ) throws(PrometheusExpositionError) -> Sample {
        let name = String(line.prefix { $0 != "{" && $0 != " " })
        guard isMetricName(name) else { throw fail("bad sample name \(name)") }
        var rest = line.dropFirst(name.count)
        var labels: [String: String] = [:]
        if rest.first == "{" {
            rest = rest.dropFirst()
            while rest.first != "}" {
                let labelName = String(rest.prefix { $0 != "=" })
                guard isLabelName(labelName) else { throw fail("bad label name \(labelName)") }
                rest = rest.dropFirst(labelName.count)
                guard rest.hasPrefix("=\"") else { throw fail("label \(labelName) without =\"") }
                rest = rest.dropFirst(2)
                var raw = ""
                var escaping = false
                var closed = false
                while let character = rest.first {
                    rest = rest.dropFirst()
                    if escaping {
                        raw.append("\\")
                        raw.append(character)
                        escaping = false
                    } else if character == "\\" {
                        escaping = true
                    } else if character == "\"" {
                        closed = true
                        break
                    } else {
                        raw.append(character)
                    }
                }
                guard closed else { throw fail("unterminated value of label \(labelName)") }
                guard labels[labelName] == nil else { throw fail("label \(labelName) twice") }
                labels[labelName] = try unescape(raw, quoted: true, fail)
                if rest.first == "," { rest = rest.dropFirst() } else if rest.first != "}" { throw fail("expected , or } after \(labelName)") }
            }
            rest = rest.dropFirst()
        }
        guard rest.first == " " else { throw fail("no space before the value of \(name)") }
        let parts = rest.dropFirst().split(separator: " ")
        guard parts.count == 1 || parts.count == 2 else { throw fail("bad value part of \(name)") }
        let text = String(parts[0])
        let value: Double? =
            switch text {
            case "+Inf": .infinity
            case "-Inf": -.infinity
            case "NaN": .nan
            default: Double(text)
            }
        guard let value else { throw fail("bad value \(text) of \(name)") }
        if parts.count == 2, Int64(parts[1]) == nil { throw fail("bad timestamp of \(name)") }
        return Sample(name: name, labels: labels, value: value)
    }

    private static func unescape(
        _ text: String, quoted: Bool, _ fail: (String) -> PrometheusExpositionError
    ) throws(PrometheusExpositionError) -> String {
        var result = ""
        var escaping = false
        for character in text {
            if escaping {
                switch character {
                case "\\": result.append("\\")
                case "n": result.append("\n")
                case "\"" where quoted: result.append("\"")
                default: throw fail("unknown escape \\\(character)")
                }
                escaping = false
            } else if character == "\\" {
                escaping = true
            } else {
                result.append(character)
            }
        }
        guard !escaping else { throw fail("dangling backslash") }
        return result
    }

    private static func isMetricName(_ name: String) -> Bool {
        guard let first = name.unicodeScalars.first, first.isASCIILetter || first == "_" || first == ":" else { return false }
        return name.unicodeScalars.allSatisfy { $0.isASCIILetter || $0.isASCIIDigit || $0 == "_" || $0 == ":" }
    }

    private static func isLabelName(_ name: String) -> Bool {
        guard let first = name.unicodeScalars.first, first.isASCIILetter || first == "_" else { return false }
        return name.unicodeScalars.allSatisfy { $0.isASCIILetter || $0.isASCIIDigit || $0 == "_" }
    }
}

public struct PrometheusExpositionError: Error, Sendable, CustomStringConvertible {
    public var line: Int
    public var reason: String

    public var description: String { line > 0 ? "invalid exposition, line \(line): \(reason)" : "invalid exposition: \(reason)" }
}

extension Unicode.Scalar {
    fileprivate var isASCIILetter: Bool { ("a"..."z").contains(self) || ("A"..."Z").contains(self) }
    fileprivate var isASCIIDigit: Bool { ("0"..."9").contains(self) }
}
