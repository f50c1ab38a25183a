extension JSON {
    /// Appends the compact JSON text (UTF-8, no optional whitespace) to `output`.
    /// Object members keep their order; non-finite doubles, which JSON cannot express,
    /// are written as `null` as JavaScript's `JSON.stringify` does.
    public func encode(into output: inout [UInt8]) {
        write(into: &output, canonical: false)
    }

    public func encodedBytes() -> [UInt8] {
        var output: [UInt8] = []
        output.reserveCapacity(64)
        encode(into: &output)
        return output
    }

    public func encodedString() -> String {
        String(decoding: encodedBytes(), as: UTF8.self)
    }

    /// The canonical text: compact, object keys sorted by code points, integral numbers as
    /// integers, and every non-ASCII character escaped. Equal values have the same canonical
    /// text and different values different text, so it can name a channel on the bus; being
    /// ASCII, it also compares the same as bytes and as Swift strings.
    public func canonicalString() -> String {
        var output: [UInt8] = []
        write(into: &output, canonical: true)
        return String(decoding: output, as: UTF8.self)
    }

    private func write(into output: inout [UInt8], canonical: Bool) {
        switch self {
        case .null:
            output.append(contentsOf: "null".utf8)
        case .bool(let value):
            output.append(contentsOf: (value ? "true" : "false").utf8)
        case .int(let value):
            output.append(contentsOf: String(value).utf8)
        case .double(let value):
            if !value.isFinite {
                output.append(contentsOf: "null".utf8)
            } else if canonical, let exact = Int64(exactly: value) {
                // In canonical form `1.0` and `1` read the same, since they are equal.
                output.append(contentsOf: String(exact).utf8)
            } else {
                output.append(contentsOf: value.description.utf8)
            }
        case .string(let value):
            JSON.writeString(value, into: &output, asciiOnly: canonical)
        case .array(let values):
            output.append(UInt8(ascii: "["))
            for (position, value) in values.enumerated() {
                if position > 0 { output.append(UInt8(ascii: ",")) }
                value.write(into: &output, canonical: canonical)
            }
            output.append(UInt8(ascii: "]"))
        case .object(let object):
            output.append(UInt8(ascii: "{"))
            let members =
                canonical
                ? object.members.sorted { $0.key.unicodeScalars.lexicographicallyPrecedes($1.key.unicodeScalars) }
                : object.members
            for (position, member) in members.enumerated() {
                if position > 0 { output.append(UInt8(ascii: ",")) }
                JSON.writeString(member.key, into: &output, asciiOnly: canonical)
                output.append(UInt8(ascii: ":"))
                member.value.write(into: &output, canonical: canonical)
            }
            output.append(UInt8(ascii: "}"))
        }
    }

    /// Writes a quoted JSON string, escaping only what JSON requires (and, with
    /// `asciiOnly`, every non-ASCII character as `\uXXXX`).
    public static func writeString(_ string: String, into output: inout [UInt8], asciiOnly: Bool = false) {
        output.append(UInt8(ascii: "\""))
        if asciiOnly, string.utf8.contains(where: { $0 >= 0x80 }) {
            for unit in string.utf16 {
                if unit < 0x80 {
                    writeEscaped(UInt8(unit), into: &output)
                } else {
                    writeUnicodeEscape(unit, into: &output)
                }
            }
            output.append(UInt8(ascii: "\""))
            return
        }
        // Most strings need no escaping: then their bytes go in with one copy.
        let plain = string.utf8.withContiguousStorageIfAvailable { bytes in
            !bytes.contains { $0 < 0x20 || $0 == UInt8(ascii: "\"") || $0 == UInt8(ascii: "\\") }
        }
        if plain == true {
            output.append(contentsOf: string.utf8)
        } else {
            for byte in string.utf8 {
                writeEscaped(byte, into: &output)
            }
        }
        output.append(UInt8(ascii: "\""))
    }

    private static let hex: [UInt8] = Array("0123456789abcdef".utf8)

    private static func writeUnicodeEscape(_ unit: UInt16, into output: inout [UInt8]) {
        output.append(contentsOf: [
            UInt8(ascii: "\\"), UInt8(ascii: "u"),
            hex[Int(unit >> 12)], hex[Int((unit >> 8) & 0xF)], hex[Int((unit >> 4) & 0xF)], hex[Int(unit & 0xF)],
        ])
    }

    @inline(__always)
    private static func writeEscaped(_ byte: UInt8, into output: inout [UInt8]) {
        switch byte {
        case UInt8(ascii: "\""):
            output.append(contentsOf: [UInt8(ascii: "\\"), UInt8(ascii: "\"")])
        case UInt8(ascii: "\\"):
            output.append(contentsOf: [UInt8(ascii: "\\"), UInt8(ascii: "\\")])
        case 0x0A:
            output.append(contentsOf: [UInt8(ascii: "\\"), UInt8(ascii: "n")])
        case 0x0D:
            output.append(contentsOf: [UInt8(ascii: "\\"), UInt8(ascii: "r")])
        case 0x09:
            output.append(contentsOf: [UInt8(ascii: "\\"), UInt8(ascii: "t")])
        case 0..<0x20:
            writeUnicodeEscape(UInt16(byte), into: &output)
        default:
            output.append(byte)
        }
    }
}
