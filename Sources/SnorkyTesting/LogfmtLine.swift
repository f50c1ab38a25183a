/// A strict reader of one logfmt line (`key=value key="quoted value"`), as Snorky's log
/// handler writes them: every field is `key=value`, quoted values use the escapes `\"`,
/// `\\`, `\n`, `\r`, `\t` and `\uXXXX`. Anything else is an error, so a test that parses
/// a process's output proves each line is well formed.
public struct LogfmtLine: Sendable, Equatable {
    /// In line order.
    public var fields: [(key: String, value: String)]

    public static func == (lhs: LogfmtLine, rhs: LogfmtLine) -> Bool {
        lhs.fields.map(\.key) == rhs.fields.map(\.key) && lhs.fields.map(\.value) == rhs.fields.map(\.value)
    }

    /// The first value of `key`.
    public subscript(key: String) -> String? {
        fields.first { $0.key == key }?.value
    }

    public init(parsing line: String) throws(LogfmtError) {
        var fields: [(key: String, value: String)] = []
        var scalars = Substring(line).unicodeScalars[...]
        func fail(_ reason: String) -> LogfmtError { LogfmtError(line: line, reason: reason) }
        while true {
            while scalars.first == " " { scalars.removeFirst() }
            guard !scalars.isEmpty else { break }
            var key = ""
            while let next = scalars.first, next != "=", next != " " {
                guard next != "\"", next.value > 0x20, next.value != 0x7F else { throw fail("invalid character in key \(key)") }
                key.unicodeScalars.append(next)
                scalars.removeFirst()
            }
            guard !key.isEmpty else { throw fail("empty key") }
            guard scalars.first == "=" else { throw fail("key \(key) without =") }
            scalars.removeFirst()
            var value = ""
            if scalars.first == "\"" {
                scalars.removeFirst()
                var closed = false
                while let next = scalars.popFirst() {
                    if next == "\"" {
                        closed = true
                        break
                    }
                    guard next.value >= 0x20 else { throw fail("raw control character in the value of \(key)") }
                    guard next == "\\" else {
                        value.unicodeScalars.append(next)
                        continue
                    }
                    guard let escape = scalars.popFirst() else { throw fail("unfinished escape in \(key)") }
                    switch escape {
                    case "\"": value += "\""
                    case "\\": value += "\\"
                    case "n": value += "\n"
                    case "r": value += "\r"
                    case "t": value += "\t"
                    case "u":
                        var hex = ""
                        hex.unicodeScalars.append(contentsOf: scalars.prefix(4))
                        guard hex.count == 4, let code = UInt32(hex, radix: 16), let scalar = Unicode.Scalar(code) else {
                            throw fail("bad \\u escape in \(key)")
                        }
                        scalars.removeFirst(4)
                        value.unicodeScalars.append(scalar)
                    default: throw fail("unknown escape \\\(escape) in \(key)")
                    }
                }
                guard closed else { throw fail("unterminated quote in \(key)") }
                guard scalars.isEmpty || scalars.first == " " else { throw fail("text after the quoted value of \(key)") }
            } else {
                while let next = scalars.first, next != " " {
                    guard next != "\"", next != "=", next.value >= 0x20, next.value != 0x7F else {
                        throw fail("a bare value of \(key) must be quoted")
                    }
                    value.unicodeScalars.append(next)
                    scalars.removeFirst()
                }
            }
            fields.append((key, value))
        }
        guard !fields.isEmpty else { throw fail("no fields") }
        self.fields = fields
    }
}

public struct LogfmtError: Error, Sendable, CustomStringConvertible {
    public var line: String
    public var reason: String

    public var description: String { "not logfmt (\(reason)): \(line)" }
}
