#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif
public import Logging

/// Writes one log event as one line of logfmt or JSON, whatever the message and metadata
/// contain: quotes, line feeds and control characters are escaped, never written raw.
///
/// Fields come in a fixed order, so lines are easy to read and to grep:
/// `ts`, `level`, then the process's identity (`role`, `slot`, `pid`) when present, `msg`,
/// then the remaining metadata sorted by key.
///
/// ```
/// ts=2026-11-25T01:02:03.456Z level=info role=worker slot=0 pid=123 msg="worker listening" ws=127.0.0.1:5800
/// {"ts":"2026-11-25T01:02:03.456Z","level":"info","role":"worker","slot":"0","pid":"123","msg":"worker listening","ws":"127.0.0.1:5800"}
/// ```
public struct LogLineFormatter: Sendable {
    public enum Format: String, Sendable, CaseIterable {
        /// `key=value` pairs (values quoted when needed): the default.
        case logfmt
        /// One JSON object per line.
        case json
    }

    /// Metadata written right after the level, in this order, when present.
    public static let leadingKeys = ["role", "slot", "pid"]
    /// Field names the formatter writes itself; metadata with these names is written as
    /// `_ts`, `_level`, `_msg` instead of overwriting them.
    static let reservedKeys: Set<String> = ["ts", "level", "msg"]
    /// The logger label Snorky's own loggers use; any other label is written as `logger`.
    public static let defaultLabel = "snorky"

    public var format: Format

    public init(format: Format) {
        self.format = format
    }

    /// The line for one event, without the trailing line feed.
    /// - Parameter time: seconds and milliseconds since the Unix epoch.
    public func line(
        time: (seconds: Int, milliseconds: Int),
        level: Logger.Level,
        message: String,
        label: String = LogLineFormatter.defaultLabel,
        metadata: Logger.Metadata
    ) -> String {
        var fields: [(key: String, value: FieldValue)] = [
            ("ts", .text(Self.timestamp(time))),
            ("level", .text(level.rawValue)),
        ]
        var rest = metadata
        for key in Self.leadingKeys {
            if let value = rest.removeValue(forKey: key) { fields.append((key, FieldValue(value))) }
        }
        fields.append(("msg", .text(message)))
        if label != Self.defaultLabel, rest["logger"] == nil { rest["logger"] = .string(label) }
        for (key, value) in rest.sorted(by: { $0.key < $1.key }) {
            fields.append((Self.reservedKeys.contains(key) ? "_" + key : key, FieldValue(value)))
        }
        switch format {
        case .logfmt: return Self.logfmt(fields)
        case .json: return Self.json(fields)
        }
    }

    // MARK: Values

    /// A metadata value reduced to what both formats can write.
    enum FieldValue {
        case text(String)
        case list([FieldValue])
        case map([(key: String, value: FieldValue)])

        init(_ value: Logger.MetadataValue) {
            switch value {
            case .string(let text): self = .text(text)
            case .stringConvertible(let convertible): self = .text(convertible.description)
            case .array(let values): self = .list(values.map(FieldValue.init))
            case .dictionary(let members): self = .map(members.sorted { $0.key < $1.key }.map { ($0.key, FieldValue($0.value)) })
            }
        }

        /// A single-text rendering for logfmt: lists as `[a,b]`, maps as `{k=v,…}`.
        var flatText: String {
            switch self {
            case .text(let text): text
            case .list(let values): "[" + values.map(\.flatText).joined(separator: ",") + "]"
            case .map(let members): "{" + members.map { "\($0.key)=\($0.value.flatText)" }.joined(separator: ",") + "}"
            }
        }
    }

    // MARK: logfmt

    static func logfmt(_ fields: [(key: String, value: FieldValue)]) -> String {
        var line = ""
        for (index, field) in fields.enumerated() {
            if index > 0 { line += " " }
            line += logfmtKey(field.key)
            line += "="
            line += logfmtValue(field.value.flatText)
        }
        return line
    }

    /// Keys cannot be quoted in logfmt: anything that would end or split one becomes `_`.
    static func logfmtKey(_ key: String) -> String {
        guard !key.isEmpty else { return "_" }
        var safe = ""
        for scalar in key.unicodeScalars {
            safe.unicodeScalars.append(scalar.value <= 0x20 || scalar == "=" || scalar == "\"" || scalar.value == 0x7F ? "_" : scalar)
        }
        return safe
    }

    /// Bare when it holds no space, `=`, quote or control character; quoted and escaped
    /// otherwise (and when empty, so the field is still visible).
    static func logfmtValue(_ value: String) -> String {
        let needsQuotes = value.isEmpty
            || value.unicodeScalars.contains { $0.value <= 0x20 || $0 == "=" || $0 == "\"" || $0 == "\\" || $0.value == 0x7F || isLineBreak($0) }
        guard needsQuotes else { return value }
        return "\"" + escaped(value) + "\""
    }

    // MARK: JSON

    static func json(_ fields: [(key: String, value: FieldValue)]) -> String {
        var line = "{"
        for (index, field) in fields.enumerated() {
            if index > 0 { line += "," }
            line += "\"" + escaped(field.key) + "\":"
            appendJSON(field.value, to: &line)
        }
        return line + "}"
    }

    private static func appendJSON(_ value: FieldValue, to line: inout String) {
        switch value {
        case .text(let text):
            line += "\"" + escaped(text) + "\""
        case .list(let values):
            line += "["
            for (index, value) in values.enumerated() {
                if index > 0 { line += "," }
                appendJSON(value, to: &line)
            }
            line += "]"
        case .map(let members):
            line += "{"
            for (index, member) in members.enumerated() {
                if index > 0 { line += "," }
                line += "\"" + escaped(member.key) + "\":"
                appendJSON(member.value, to: &line)
            }
            line += "}"
        }
    }

    // MARK: Escaping

    /// The body of a quoted string, valid in both logfmt and JSON: backslash, quote and
    /// control characters escaped, and the Unicode line and paragraph separators too, so
    /// no tool ever sees a line break inside an event.
    static func escaped(_ text: String) -> String {
        guard text.unicodeScalars.contains(where: { $0.value < 0x20 || $0 == "\"" || $0 == "\\" || $0.value == 0x7F || isLineBreak($0) })
        else { return text }
        var result = ""
        for scalar in text.unicodeScalars {
            switch scalar {
            case "\"": result += "\\\""
            case "\\": result += "\\\\"
            case "\n": result += "\\n"
            case "\r": result += "\\r"
            case "\t": result += "\\t"
            default:
                if scalar.value < 0x20 || scalar.value == 0x7F || isLineBreak(scalar) {
                    result += "\\u" + hex4(scalar.value)
                } else {
                    result.unicodeScalars.append(scalar)
                }
            }
        }
        return result
    }

    /// Line breaks beyond the ASCII ones: NEL, LINE SEPARATOR, PARAGRAPH SEPARATOR.
    private static func isLineBreak(_ scalar: Unicode.Scalar) -> Bool {
        scalar.value == 0x85 || scalar.value == 0x2028 || scalar.value == 0x2029
    }

    private static func hex4(_ value: UInt32) -> String {
        let digits = String(value, radix: 16)
        return String(repeating: "0", count: max(0, 4 - digits.count)) + digits
    }

    // MARK: Time

    /// `2026-11-25T01:02:03.456Z` (UTC, milliseconds).
    static func timestamp(_ time: (seconds: Int, milliseconds: Int)) -> String {
        var seconds = time_t(time.seconds)
        var parts = tm()
        gmtime_r(&seconds, &parts)
        func pad(_ value: Int32, _ width: Int) -> String {
            let digits = String(value)
            return String(repeating: "0", count: max(0, width - digits.count)) + digits
        }
        return "\(pad(parts.tm_year + 1900, 4))-\(pad(parts.tm_mon + 1, 2))-\(pad(parts.tm_mday, 2))"
            + "T\(pad(parts.tm_hour, 2)):\(pad(parts.tm_min, 2)):\(pad(parts.tm_sec, 2)).\(pad(Int32(time.milliseconds), 3))Z"
    }

    /// The current time in the form `line(time:…)` takes.
    public static func now() -> (seconds: Int, milliseconds: Int) {
        var now = timespec()
        clock_gettime(CLOCK_REALTIME, &now)
        return (Int(now.tv_sec), Int(now.tv_nsec / 1_000_000))
    }
}
