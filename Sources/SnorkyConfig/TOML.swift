// A small, strict TOML 1.0 parser for Snorky's configuration file.
//
// Strict means: anything TOML 1.0 forbids is an error with a line and column, never a
// guess. A config file is read once at start-up, so clarity of errors matters more than
// speed. Dates and times are validated and then kept as the string that was written
// (Snorky's settings have no date-valued keys).

// MARK: - Public types

/// A TOML value. Dates and times are represented as `.string` holding the text as written.
public enum TOMLValue: Sendable, Equatable {
    case string(String)
    case integer(Int64)
    case float(Double)
    case bool(Bool)
    case array([TOMLValue])
    case table(TOMLTable)

    public var stringValue: String? { if case .string(let v) = self { v } else { nil } }
    public var integerValue: Int64? { if case .integer(let v) = self { v } else { nil } }
    /// The value as a `Double`; integers convert, because `timeout = 5` should satisfy a float setting.
    public var doubleValue: Double? {
        switch self {
        case .float(let v): v
        case .integer(let v): Double(v)
        default: nil
        }
    }
    public var boolValue: Bool? { if case .bool(let v) = self { v } else { nil } }
    public var arrayValue: [TOMLValue]? { if case .array(let v) = self { v } else { nil } }
    public var tableValue: TOMLTable? { if case .table(let v) = self { v } else { nil } }

    /// A short name of the value's kind, for error messages such as "expected integer, found string".
    public var typeName: String {
        switch self {
        case .string: "string"
        case .integer: "integer"
        case .float: "float"
        case .bool: "boolean"
        case .array: "array"
        case .table: "table"
        }
    }
}

/// A TOML table: keys keep the order in which the file defined them (so a config dump or
/// an "unknown key" warning can follow the file), while equality ignores order, as TOML does.
public struct TOMLTable: Sendable, Equatable {
    public private(set) var keys: [String] = []
    private var storage: [String: TOMLValue] = [:]

    public init() {}

    public var count: Int { keys.count }
    public var isEmpty: Bool { keys.isEmpty }

    public subscript(key: String) -> TOMLValue? {
        get { storage[key] }
        set {
            if let newValue {
                if storage.updateValue(newValue, forKey: key) == nil { keys.append(key) }
            } else if storage.removeValue(forKey: key) != nil {
                keys.removeAll { $0 == key }
            }
        }
    }

    /// Looks a value up by a path of keys, descending through tables: `table[path: "redis", "url"]`.
    public subscript(path first: String, _ rest: String...) -> TOMLValue? {
        var value = storage[first]
        for key in rest { value = value?.tableValue?[key] }
        return value
    }

    public static func == (lhs: TOMLTable, rhs: TOMLTable) -> Bool { lhs.storage == rhs.storage }
}

extension TOMLTable: Sequence {
    public func makeIterator() -> some IteratorProtocol<(key: String, value: TOMLValue)> {
        // Every key in `keys` is in `storage` by construction of the subscript setter.
        keys.lazy.map { (key: $0, value: storage[$0]!) }.makeIterator()
    }
}

// Literal conformances make expected values in tests and defaults readable.
extension TOMLTable: ExpressibleByDictionaryLiteral {
    public init(dictionaryLiteral elements: (String, TOMLValue)...) {
        for (key, value) in elements { self[key] = value }
    }
}

extension TOMLValue: ExpressibleByStringLiteral, ExpressibleByIntegerLiteral, ExpressibleByFloatLiteral,
    ExpressibleByBooleanLiteral, ExpressibleByArrayLiteral, ExpressibleByDictionaryLiteral
{
    public init(stringLiteral value: String) { self = .string(value) }
    public init(integerLiteral value: Int64) { self = .integer(value) }
    public init(floatLiteral value: Double) { self = .float(value) }
    public init(booleanLiteral value: Bool) { self = .bool(value) }
    public init(arrayLiteral elements: TOMLValue...) { self = .array(elements) }
    public init(dictionaryLiteral elements: (String, TOMLValue)...) {
        var table = TOMLTable()
        for (key, value) in elements { table[key] = value }
        self = .table(table)
    }
}

// Values print as TOML inline syntax, so a failing test or a config dump is readable.
extension TOMLValue: CustomStringConvertible {
    public var description: String {
        switch self {
        case .string(let value): TOMLValue.quoted(value)
        case .integer(let value): String(value)
        case .float(let value):
            if value.isNaN { "nan" } else if value.isInfinite { value < 0 ? "-inf" : "inf" } else { "\(value)" }
        case .bool(let value): String(value)
        case .array(let values): "[" + values.map(\.description).joined(separator: ", ") + "]"
        case .table(let table): table.description
        }
    }

    fileprivate static func quoted(_ text: String) -> String {
        var out = "\""
        for scalar in text.unicodeScalars {
            switch scalar {
            case "\"": out += "\\\""
            case "\\": out += "\\\\"
            case "\n": out += "\\n"
            case "\t": out += "\\t"
            case "\r": out += "\\r"
            case _ where scalar.value < 0x20 || scalar.value == 0x7F:
                let hex = String(scalar.value, radix: 16, uppercase: true)
                out += "\\u" + String(repeating: "0", count: 4 - hex.count) + hex
            default: out.unicodeScalars.append(scalar)
            }
        }
        return out + "\""
    }
}

extension TOMLTable: CustomStringConvertible {
    public var description: String {
        let pairs = map { key, value in
            let bare = !key.isEmpty && key.utf8.allSatisfy { $0.isBareKeyByte }
            return (bare ? key : TOMLValue.quoted(key)) + " = " + value.description
        }
        return pairs.isEmpty ? "{}" : "{ " + pairs.joined(separator: ", ") + " }"
    }
}

/// A parse error, positioned at the offending character. Lines and columns start at 1;
/// columns count Unicode scalars, so they match what an editor shows for most text.
public struct TOMLError: Error, Sendable, Equatable, CustomStringConvertible {
    public var line: Int
    public var column: Int
    public var message: String

    public init(line: Int, column: Int, message: String) {
        self.line = line
        self.column = column
        self.message = message
    }

    public var description: String { "line \(line), column \(column): \(message)" }
}

public enum TOML {
    /// Parses a whole TOML document into its root table.
    public static func parse(_ text: String) throws(TOMLError) -> TOMLTable {
        var parser = TOMLParser(text)
        return try parser.parseDocument()
    }
}

// MARK: - Document builder
//
// While parsing, tables are mutable reference nodes that remember *how* they came to exist:
// TOML's rules against redefinition depend on that history, not on the final shape.

private final class TableNode {
    enum Origin {
        /// The document root, an array-of-tables element, or an inline table: never reopened by a header.
        case fixed
        /// Created as a parent of a `[a.b]` header (`a`); a later `[a]` may define it once.
        case implicit
        /// Defined by a `[header]`.
        case header
        /// Created by a dotted key (`a.b = 1` creates `a`); only dotted keys may add to it.
        case dotted
    }

    var origin: Origin
    var keys: [String] = []
    var entries: [String: Entry] = [:]

    init(origin: Origin) { self.origin = origin }

    func insert(_ key: String, _ entry: Entry) {
        keys.append(key)
        entries[key] = entry
    }

    func build() -> TOMLTable {
        var table = TOMLTable()
        for key in keys {
            switch entries[key]! {
            case .value(let value): table[key] = value
            case .table(let node): table[key] = .table(node.build())
            case .tableArray(let array): table[key] = .array(array.elements.map { .table($0.build()) })
            }
        }
        return table
    }
}

/// An array created by `[[name]]` headers; unlike a literal array it may grow.
private final class TableArrayNode {
    var elements: [TableNode]
    init(first: TableNode) { elements = [first] }
}

private enum Entry {
    /// A finished value: scalars, literal arrays and inline tables, all closed to further keys.
    case value(TOMLValue)
    case table(TableNode)
    case tableArray(TableArrayNode)
}

private struct Key {
    var name: String
    var offset: Int
}

// MARK: - Parser

private struct TOMLParser {
    private let bytes: [UInt8]
    private var pos = 0
    private let root = TableNode(origin: .fixed)
    /// Nested arrays and inline tables recurse; a bound keeps a hostile file from exhausting the stack.
    private let maxDepth = 100

    init(_ text: String) {
        var bytes = Array(text.utf8)
        // A UTF-8 byte order mark is not content.
        if bytes.starts(with: [0xEF, 0xBB, 0xBF]) { bytes.removeFirst(3) }
        self.bytes = bytes
    }

    mutating func parseDocument() throws(TOMLError) -> TOMLTable {
        var current = root
        // The current header's path, so that errors name keys in full ("server.tls.cert").
        var section: [Key] = []
        while true {
            skipWhitespace()
            guard let byte = peek() else { break }
            switch byte {
            case .hash, .newline, .carriageReturn:
                try expectLineEnd(after: "comment")
                continue
            case .leftBracket:
                (current, section) = try parseHeader()
                try expectLineEnd(after: "table header")
            default:
                try parseKeyValue(into: current, section: section)
                try expectLineEnd(after: "value")
            }
        }
        return root.build()
    }

    // MARK: Headers and key/value pairs

    private mutating func parseHeader() throws(TOMLError) -> (TableNode, [Key]) {
        let start = pos
        pos += 1
        let isArray = peek() == .leftBracket
        if isArray { pos += 1 }
        skipWhitespace()
        let path = try parseKeyPath()
        skipWhitespace()
        if isArray {
            guard peek() == .rightBracket, peek(at: 1) == .rightBracket else {
                throw error("expected ']]' after array of tables name")
            }
            pos += 2
        } else {
            guard peek() == .rightBracket else { throw error("expected ']' after table name") }
            pos += 1
        }
        let table = isArray ? try appendTableArrayElement(path, headerOffset: start) : try defineTable(path, headerOffset: start)
        return (table, path)
    }

    /// Walks a header's parent keys, creating implicit tables and entering the latest element
    /// of arrays of tables, as `[a.b]` after `[[a]]` refers to the last `a`.
    private func walkHeaderParents(_ path: [Key]) throws(TOMLError) -> TableNode {
        var node = root
        for (index, key) in path.dropLast().enumerated() {
            switch node.entries[key.name] {
            case nil:
                let child = TableNode(origin: .implicit)
                node.insert(key.name, .table(child))
                node = child
            case .table(let child):
                node = child
            case .tableArray(let array):
                node = array.elements[array.elements.count - 1]
            case .value(let value):
                let name = displayPath(path.prefix(index + 1))
                if case .table = value { throw error("cannot add to inline table '\(name)'", at: key.offset) }
                throw error("key '\(name)' is already defined as \(article(value.typeName)), not a table", at: key.offset)
            }
        }
        return node
    }

    private func defineTable(_ path: [Key], headerOffset: Int) throws(TOMLError) -> TableNode {
        let parent = try walkHeaderParents(path)
        let last = path[path.count - 1]
        let name = displayPath(path)
        switch parent.entries[last.name] {
        case nil:
            let node = TableNode(origin: .header)
            parent.insert(last.name, .table(node))
            return node
        case .table(let node):
            switch node.origin {
            case .implicit:
                node.origin = .header
                return node
            case .header, .fixed:
                throw error("table '\(name)' is defined more than once", at: headerOffset)
            case .dotted:
                throw error("table '\(name)' was already defined with dotted keys", at: headerOffset)
            }
        case .tableArray:
            throw error("'\(name)' is already an array of tables; use [[\(name)]]", at: headerOffset)
        case .value(let value):
            throw error("key '\(name)' is already defined as \(describe(value))", at: headerOffset)
        }
    }

    private func appendTableArrayElement(_ path: [Key], headerOffset: Int) throws(TOMLError) -> TableNode {
        let parent = try walkHeaderParents(path)
        let last = path[path.count - 1]
        let name = displayPath(path)
        let element = TableNode(origin: .fixed)
        switch parent.entries[last.name] {
        case nil:
            parent.insert(last.name, .tableArray(TableArrayNode(first: element)))
        case .tableArray(let array):
            array.elements.append(element)
        case .table:
            throw error("'\(name)' is already a table, not an array of tables", at: headerOffset)
        case .value(let value):
            throw error("key '\(name)' is already defined as \(describe(value))", at: headerOffset)
        }
        return element
    }

    private mutating func parseKeyValue(into table: TableNode, section: [Key]) throws(TOMLError) {
        let path = try parseKeyPath()
        skipWhitespace()
        guard peek() == .equals else { throw error("expected '=' after key") }
        pos += 1
        skipWhitespace()
        let value = try parseValue(depth: 0)
        try assign(value, to: path, in: table, section: section)
    }

    /// Assigns `a.b.c = value`: `a` and `b` are created as (or must already be) tables
    /// that dotted keys defined; tables from headers and inline tables are closed to them.
    private func assign(_ value: TOMLValue, to path: [Key], in table: TableNode, section: [Key]) throws(TOMLError) {
        var node = table
        for (index, key) in path.dropLast().enumerated() {
            let name = displayPath(section + path.prefix(index + 1))
            switch node.entries[key.name] {
            case nil:
                let child = TableNode(origin: .dotted)
                node.insert(key.name, .table(child))
                node = child
            case .table(let child) where child.origin == .dotted:
                node = child
            case .table:
                throw error("cannot add keys to table '\(name)' with dotted keys: it is defined by a table header", at: key.offset)
            case .tableArray:
                throw error("cannot add keys to array of tables '\(name)' with dotted keys", at: key.offset)
            case .value(let existing):
                if case .table = existing {
                    throw error("cannot add keys to inline table '\(name)'", at: key.offset)
                }
                throw error("key '\(name)' is already defined as \(article(existing.typeName)), not a table", at: key.offset)
            }
        }
        let last = path[path.count - 1]
        guard node.entries[last.name] == nil else {
            throw error("duplicate key '\(displayPath(section + path))'", at: last.offset)
        }
        node.insert(last.name, .value(value))
    }

    // MARK: Keys

    private mutating func parseKeyPath() throws(TOMLError) -> [Key] {
        var path = [try parseSimpleKey()]
        while true {
            let save = pos
            skipWhitespace()
            guard peek() == .dot else {
                pos = save
                return path
            }
            pos += 1
            skipWhitespace()
            path.append(try parseSimpleKey())
        }
    }

    private mutating func parseSimpleKey() throws(TOMLError) -> Key {
        let start = pos
        switch peek() {
        case .quote:
            if peek(at: 1) == .quote, peek(at: 2) == .quote {
                throw error("a multi-line string cannot be used as a key")
            }
            return Key(name: try parseBasicString(), offset: start)
        case .apostrophe:
            if peek(at: 1) == .apostrophe, peek(at: 2) == .apostrophe {
                throw error("a multi-line string cannot be used as a key")
            }
            return Key(name: try parseLiteralString(), offset: start)
        default:
            while let byte = peek(), byte.isBareKeyByte { pos += 1 }
            guard pos > start else {
                switch peek() {
                case .equals: throw error("missing key before '='")
                case nil: throw error("expected a key, found end of file")
                default: throw error("expected a key")
                }
            }
            return Key(name: String(decoding: bytes[start..<pos], as: UTF8.self), offset: start)
        }
    }

    // MARK: Values

    private mutating func parseValue(depth: Int) throws(TOMLError) -> TOMLValue {
        guard depth < maxDepth else { throw error("arrays and inline tables are nested too deeply") }
        switch peek() {
        case .quote:
            if peek(at: 1) == .quote, peek(at: 2) == .quote { return .string(try parseMultilineBasicString()) }
            return .string(try parseBasicString())
        case .apostrophe:
            if peek(at: 1) == .apostrophe, peek(at: 2) == .apostrophe { return .string(try parseMultilineLiteralString()) }
            return .string(try parseLiteralString())
        case .leftBracket:
            return try parseArray(depth: depth)
        case .leftBrace:
            return try parseInlineTable(depth: depth)
        default:
            return try parseBareValue()
        }
    }

    private mutating func parseArray(depth: Int) throws(TOMLError) -> TOMLValue {
        pos += 1
        var elements: [TOMLValue] = []
        while true {
            try skipTrivia()
            if peek() == .rightBracket {
                pos += 1
                return .array(elements)
            }
            elements.append(try parseValue(depth: depth + 1))
            try skipTrivia()
            switch peek() {
            case .comma: pos += 1
            case .rightBracket:
                pos += 1
                return .array(elements)
            case nil: throw error("unterminated array: expected ']'")
            default: throw error("expected ',' or ']' after array element")
            }
        }
    }

    private mutating func parseInlineTable(depth: Int) throws(TOMLError) -> TOMLValue {
        pos += 1
        // Dotted keys inside `{ a.b = 1, a.c = 2 }` build sub-tables exactly as at top level.
        let node = TableNode(origin: .fixed)
        skipWhitespace()
        if peek() == .rightBrace {
            pos += 1
            return .table(node.build())
        }
        while true {
            skipWhitespace()
            if peek() == .rightBrace { throw error("trailing comma is not allowed in an inline table") }
            if peek() == .newline || peek() == .carriageReturn {
                throw error("newlines are not allowed in an inline table")
            }
            let path = try parseKeyPath()
            skipWhitespace()
            guard peek() == .equals else { throw error("expected '=' after key") }
            pos += 1
            skipWhitespace()
            let value = try parseValue(depth: depth + 1)
            // Inside an inline table, errors name keys relative to it.
            try assign(value, to: path, in: node, section: [])
            skipWhitespace()
            switch peek() {
            case .comma: pos += 1
            case .rightBrace:
                pos += 1
                return .table(node.build())
            case .newline, .carriageReturn: throw error("newlines are not allowed in an inline table")
            case nil: throw error("unterminated inline table: expected '}'")
            default: throw error("expected ',' or '}' after inline table value")
            }
        }
    }

    // MARK: Strings

    private mutating func parseBasicString() throws(TOMLError) -> String {
        pos += 1
        var out: [UInt8] = []
        while true {
            guard let byte = peek() else { throw error("unterminated string") }
            switch byte {
            case .quote:
                pos += 1
                return String(decoding: out, as: UTF8.self)
            case .backslash:
                try parseEscape(into: &out)
            case .newline, .carriageReturn:
                throw error("unterminated string: newline before closing '\"'")
            default:
                try checkStringByte(byte)
                out.append(byte)
                pos += 1
            }
        }
    }

    private mutating func parseMultilineBasicString() throws(TOMLError) -> String {
        pos += 3
        skipNewlineAfterOpeningDelimiter()
        var out: [UInt8] = []
        while true {
            guard let byte = peek() else { throw error("unterminated multi-line string: expected '\"\"\"'") }
            switch byte {
            case .quote:
                if try consumeQuoteRun(.quote, into: &out) { return String(decoding: out, as: UTF8.self) }
            case .backslash:
                if isLineEndingBackslash() {
                    // A backslash at the end of a line joins lines: it eats the newline and
                    // all whitespace up to the next visible character.
                    pos += 1
                    while let next = peek(), next == .space || next == .tab || next == .newline
                        || (next == .carriageReturn && peek(at: 1) == .newline)
                    {
                        pos += 1
                    }
                } else {
                    try parseEscape(into: &out)
                }
            default:
                try appendMultilineByte(byte, into: &out)
            }
        }
    }

    private mutating func parseLiteralString() throws(TOMLError) -> String {
        pos += 1
        let start = pos
        while true {
            guard let byte = peek() else { throw error("unterminated literal string") }
            switch byte {
            case .apostrophe:
                pos += 1
                return String(decoding: bytes[start..<pos - 1], as: UTF8.self)
            case .newline, .carriageReturn:
                throw error("unterminated literal string: newline before closing \"'\"")
            default:
                try checkStringByte(byte)
                pos += 1
            }
        }
    }

    private mutating func parseMultilineLiteralString() throws(TOMLError) -> String {
        pos += 3
        skipNewlineAfterOpeningDelimiter()
        var out: [UInt8] = []
        while true {
            guard let byte = peek() else { throw error("unterminated multi-line literal string: expected \"'''\"") }
            if byte == .apostrophe {
                if try consumeQuoteRun(.apostrophe, into: &out) { return String(decoding: out, as: UTF8.self) }
            } else {
                try appendMultilineByte(byte, into: &out)
            }
        }
    }

    /// Handles a run of delimiter quotes inside a multi-line string. Three close the string,
    /// and up to two more just before them belong to the content (`"""a""""` is `a"`).
    /// Returns true when the string was closed.
    private mutating func consumeQuoteRun(_ quote: UInt8, into out: inout [UInt8]) throws(TOMLError) -> Bool {
        let start = pos
        while peek() == quote { pos += 1 }
        let run = pos - start
        if run < 3 {
            out.append(contentsOf: repeatElement(quote, count: run))
            return false
        }
        guard run <= 5 else { throw error("too many quotes at the end of a multi-line string", at: start) }
        out.append(contentsOf: repeatElement(quote, count: run - 3))
        return true
    }

    private mutating func appendMultilineByte(_ byte: UInt8, into out: inout [UInt8]) throws(TOMLError) {
        if byte == .carriageReturn {
            guard peek(at: 1) == .newline else { throw error("a carriage return must be followed by a newline") }
            // Newlines are normalised to "\n" so a file edited on Windows means the same thing.
            out.append(.newline)
            pos += 2
            return
        }
        if byte != .newline { try checkStringByte(byte) }
        out.append(byte)
        pos += 1
    }

    private mutating func skipNewlineAfterOpeningDelimiter() {
        if peek() == .newline {
            pos += 1
        } else if peek() == .carriageReturn, peek(at: 1) == .newline {
            pos += 2
        }
    }

    /// True if the backslash at `pos` is followed only by whitespace up to the end of the line.
    private func isLineEndingBackslash() -> Bool {
        var index = pos + 1
        while index < bytes.count, bytes[index] == .space || bytes[index] == .tab { index += 1 }
        guard index < bytes.count else { return false }
        return bytes[index] == .newline || (bytes[index] == .carriageReturn && index + 1 < bytes.count && bytes[index + 1] == .newline)
    }

    private mutating func parseEscape(into out: inout [UInt8]) throws(TOMLError) {
        let start = pos
        pos += 1
        guard let code = peek() else { throw error("unterminated string") }
        pos += 1
        switch code {
        case UInt8(ascii: "b"): out.append(0x08)
        case UInt8(ascii: "t"): out.append(.tab)
        case UInt8(ascii: "n"): out.append(.newline)
        case UInt8(ascii: "f"): out.append(0x0C)
        case UInt8(ascii: "r"): out.append(.carriageReturn)
        case .quote: out.append(.quote)
        case .backslash: out.append(.backslash)
        case UInt8(ascii: "u"): try appendUnicodeEscape(digits: 4, escapeStart: start, into: &out)
        case UInt8(ascii: "U"): try appendUnicodeEscape(digits: 8, escapeStart: start, into: &out)
        default:
            let shown = code.isPrintableASCII ? String(UnicodeScalar(code)) : "U+" + hex(code)
            throw error("invalid escape sequence '\\\(shown)'", at: start)
        }
    }

    private mutating func appendUnicodeEscape(digits: Int, escapeStart: Int, into out: inout [UInt8]) throws(TOMLError) {
        var value: UInt32 = 0
        for _ in 0..<digits {
            guard let byte = peek(), let digit = byte.hexDigitValue else {
                throw error("expected \(digits) hexadecimal digits in Unicode escape", at: escapeStart)
            }
            value = value << 4 | UInt32(digit)
            pos += 1
        }
        guard let scalar = Unicode.Scalar(value) else {
            let text = String(decoding: bytes[escapeStart..<pos], as: UTF8.self)
            throw error("'\(text)' is not a Unicode scalar value", at: escapeStart)
        }
        out.append(contentsOf: String(Character(scalar)).utf8)
    }

    /// Control characters other than tab must be escaped inside strings.
    private func checkStringByte(_ byte: UInt8) throws(TOMLError) {
        if byte.isForbiddenControl {
            throw error("control character U+\(hex(byte)) must be escaped in a string")
        }
    }

    // MARK: Numbers, booleans, dates

    private mutating func parseBareValue() throws(TOMLError) -> TOMLValue {
        let start = pos
        while let byte = peek(), byte.isBareValueByte { pos += 1 }
        // "1979-05-27 07:32:00": a space may separate date and time; take it only when a time follows.
        if pos - start == 10, isLocalDate(bytes[start..<pos]), peek() == .space,
            peek(at: 1)?.isDigit == true, peek(at: 2)?.isDigit == true, peek(at: 3) == .colon
        {
            pos += 1
            while let byte = peek(), byte.isBareValueByte { pos += 1 }
        }
        let token = bytes[start..<pos]
        let text = String(decoding: token, as: UTF8.self)
        guard !token.isEmpty else {
            switch peek() {
            case nil, .newline, .carriageReturn, .hash: throw error("expected a value")
            default:
                let found = String(decoding: bytes[pos..<min(pos + 4, bytes.count)], as: UTF8.self).first.map(String.init) ?? "?"
                throw error("expected a value, found '\(found)'")
            }
        }
        switch text {
        case "true": return .bool(true)
        case "false": return .bool(false)
        case "inf", "+inf": return .float(.infinity)
        case "-inf": return .float(-.infinity)
        case "nan", "+nan": return .float(.nan)
        case "-nan": return .float(-.nan)
        default: break
        }
        if isDateTime(token) { return .string(text) }
        if looksLikeDateTime(token) { throw error("invalid date or time '\(text)'", at: start) }
        if token.count > 2, token[start] == UInt8(ascii: "0"),
            let radix = radix(of: token[start + 1])
        {
            return .integer(try parseRadixInteger(token.dropFirst(2), radix: radix, text: text, at: start))
        }
        return try parseDecimalNumber(token, text: text, at: start)
    }

    private func radix(of prefix: UInt8) -> Int? {
        switch prefix {
        case UInt8(ascii: "x"): 16
        case UInt8(ascii: "o"): 8
        case UInt8(ascii: "b"): 2
        default: nil
        }
    }

    private func parseRadixInteger(_ digits: ArraySlice<UInt8>, radix: Int, text: String, at offset: Int) throws(TOMLError) -> Int64 {
        guard let cleaned = removeUnderscores(digits), !cleaned.isEmpty else {
            throw error("invalid integer '\(text)'", at: offset)
        }
        var value: Int64 = 0
        for byte in cleaned {
            guard let digit = byte.hexDigitValue, digit < radix else {
                throw error("invalid digit in integer '\(text)'", at: offset)
            }
            let (shifted, overflow1) = value.multipliedReportingOverflow(by: Int64(radix))
            let (sum, overflow2) = shifted.addingReportingOverflow(Int64(digit))
            guard !overflow1, !overflow2 else { throw error("integer '\(text)' does not fit in 64 bits", at: offset) }
            value = sum
        }
        return value
    }

    /// Decimal integers and floats share a grammar up to the fraction or exponent.
    private func parseDecimalNumber(_ token: ArraySlice<UInt8>, text: String, at offset: Int) throws(TOMLError) -> TOMLValue {
        // Positions are computed only when an error is actually thrown: it costs a scan of the file.
        func invalid() -> TOMLError { error("invalid value '\(text)' (strings must be quoted)", at: offset) }
        var rest = token
        if let first = rest.first, first == .plus || first == .minus { rest = rest.dropFirst() }
        let integerPart = rest.prefix { $0.isDigit || $0 == .underscore }
        rest = rest.dropFirst(integerPart.count)
        guard let integerDigits = removeUnderscores(integerPart), !integerDigits.isEmpty else { throw invalid() }
        if integerDigits.count > 1, integerDigits.first == UInt8(ascii: "0") {
            throw error("leading zeros are not allowed in '\(text)'", at: offset)
        }
        var isFloat = false
        if rest.first == .dot {
            rest = rest.dropFirst()
            let fraction = rest.prefix { $0.isDigit || $0 == .underscore }
            rest = rest.dropFirst(fraction.count)
            guard let digits = removeUnderscores(fraction), !digits.isEmpty else { throw invalid() }
            isFloat = true
        }
        if let e = rest.first, e == UInt8(ascii: "e") || e == UInt8(ascii: "E") {
            rest = rest.dropFirst()
            if let sign = rest.first, sign == .plus || sign == .minus { rest = rest.dropFirst() }
            let exponent = rest.prefix { $0.isDigit || $0 == .underscore }
            rest = rest.dropFirst(exponent.count)
            guard let digits = removeUnderscores(exponent), !digits.isEmpty else { throw invalid() }
            isFloat = true
        }
        guard rest.isEmpty else { throw invalid() }
        let cleaned = String(decoding: token.filter { $0 != .underscore }, as: UTF8.self)
        if isFloat {
            guard let value = Double(cleaned) else { throw invalid() }
            // `inf` must be written as such; an overflowing literal is a mistake, not infinity.
            guard value.isFinite else { throw error("float '\(text)' is out of range", at: offset) }
            return .float(value)
        }
        guard let value = Int64(cleaned) else { throw error("integer '\(text)' does not fit in 64 bits", at: offset) }
        return .integer(value)
    }

    /// Removes digit separators, or returns nil if an underscore is not between two digits.
    private func removeUnderscores(_ digits: ArraySlice<UInt8>) -> [UInt8]? {
        var out: [UInt8] = []
        var previousWasDigit = false
        for byte in digits {
            if byte == .underscore {
                guard previousWasDigit else { return nil }
                previousWasDigit = false
            } else {
                out.append(byte)
                previousWasDigit = true
            }
        }
        return digits.last == .underscore ? nil : out
    }

    /// Offset date-time, local date-time, local date or local time, per RFC 3339 as TOML restricts it.
    private func isDateTime(_ token: ArraySlice<UInt8>) -> Bool {
        if isLocalTime(token) { return true }
        guard token.count >= 10 else { return false }
        let date = token.prefix(10)
        guard isLocalDate(date) else { return false }
        var rest = token.dropFirst(10)
        if rest.isEmpty { return true }
        guard let separator = rest.first, separator == UInt8(ascii: "T") || separator == UInt8(ascii: "t") || separator == .space
        else { return false }
        rest = rest.dropFirst()
        // Split off an offset: "Z", or "+hh:mm"/"-hh:mm" as the last six bytes.
        if let last = rest.last, last == UInt8(ascii: "Z") || last == UInt8(ascii: "z") {
            return isLocalTime(rest.dropLast())
        }
        if rest.count > 6, let sign = rest.dropLast(5).last, sign == .plus || sign == .minus {
            let offset = rest.suffix(5)
            guard isTwoDigits(offset.prefix(2), max: 23), offset.dropFirst(2).first == .colon,
                isTwoDigits(offset.suffix(2), max: 59)
            else { return false }
            return isLocalTime(rest.dropLast(6))
        }
        return isLocalTime(rest)
    }

    /// `dddd-` or `dd:` at the start: meant as a date or time, so say that rather than "invalid value".
    private func looksLikeDateTime(_ token: ArraySlice<UInt8>) -> Bool {
        let b = Array(token.prefix(5))
        if b.count == 5, b[0..<4].allSatisfy(\.isDigit), b[4] == .minus { return true }
        return b.count >= 3 && b[0].isDigit && b[1].isDigit && b[2] == .colon
    }

    private func isLocalDate(_ token: ArraySlice<UInt8>) -> Bool {
        guard token.count == 10 else { return false }
        let b = Array(token)
        guard b[4] == .minus, b[7] == .minus, let year = number(b[0..<4]), let month = number(b[5..<7]),
            let day = number(b[8..<10]), (1...12).contains(month)
        else { return false }
        let isLeap = (year % 4 == 0 && year % 100 != 0) || year % 400 == 0
        let days = [31, isLeap ? 29 : 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31][month - 1]
        return (1...days).contains(day)
    }

    private func isLocalTime(_ token: ArraySlice<UInt8>) -> Bool {
        let b = Array(token)
        guard b.count >= 8, b[2] == .colon, b[5] == .colon, isTwoDigits(b[0..<2], max: 23),
            isTwoDigits(b[3..<5], max: 59), isTwoDigits(b[6..<8], max: 60)  // 60: leap second
        else { return false }
        if b.count == 8 { return true }
        return b[8] == .dot && b.count > 9 && b[9...].allSatisfy(\.isDigit)
    }

    private func isTwoDigits(_ bytes: ArraySlice<UInt8>, max: Int) -> Bool {
        bytes.count == 2 && (number(bytes).map { $0 <= max } ?? false)
    }

    private func number(_ digits: ArraySlice<UInt8>) -> Int? {
        guard !digits.isEmpty, digits.allSatisfy(\.isDigit) else { return nil }
        return digits.reduce(0) { $0 * 10 + Int($1 - UInt8(ascii: "0")) }
    }

    // MARK: Whitespace, comments, line ends

    private mutating func skipWhitespace() {
        while let byte = peek(), byte == .space || byte == .tab { pos += 1 }
    }

    /// Inside arrays, newlines and comments may appear between elements.
    private mutating func skipTrivia() throws(TOMLError) {
        while let byte = peek() {
            switch byte {
            case .space, .tab, .newline: pos += 1
            case .carriageReturn:
                guard peek(at: 1) == .newline else { throw error("a carriage return must be followed by a newline") }
                pos += 2
            case .hash: try skipComment()
            default: return
            }
        }
    }

    private mutating func skipComment() throws(TOMLError) {
        while let byte = peek(), byte != .newline {
            if byte == .carriageReturn, peek(at: 1) == .newline { return }
            if byte.isForbiddenControl || byte == .carriageReturn {
                throw error("control character U+\(hex(byte)) is not allowed in a comment")
            }
            pos += 1
        }
    }

    /// After a key/value pair or header only whitespace and a comment may follow on the line.
    private mutating func expectLineEnd(after what: String) throws(TOMLError) {
        skipWhitespace()
        if peek() == .hash { try skipComment() }
        switch peek() {
        case nil: return
        case .newline: pos += 1
        case .carriageReturn where peek(at: 1) == .newline: pos += 2
        case .carriageReturn: throw error("a carriage return must be followed by a newline")
        default: throw error("expected end of line after \(what)")
        }
    }

    // MARK: Helpers

    private func peek(at offset: Int = 0) -> UInt8? {
        let index = pos + offset
        return index < bytes.count ? bytes[index] : nil
    }

    private func error(_ message: String, at offset: Int? = nil) -> TOMLError {
        let end = min(offset ?? pos, bytes.count)
        var line = 1
        var column = 1
        for byte in bytes[..<end] {
            if byte == .newline {
                line += 1
                column = 1
            } else if byte & 0xC0 != 0x80 {  // count scalars, not UTF-8 continuation bytes
                column += 1
            }
        }
        return TOMLError(line: line, column: column, message: message)
    }

    private func displayPath(_ path: some Collection<Key>) -> String {
        path.map { key in
            !key.name.isEmpty && key.name.utf8.allSatisfy(\.isBareKeyByte) ? key.name : "\"\(key.name)\""
        }.joined(separator: ".")
    }

    /// "an inline table" rather than "a table", so a redefinition error names the real conflict.
    private func describe(_ value: TOMLValue) -> String {
        if case .table = value { return "an inline table" }
        return article(value.typeName)
    }

    private func article(_ typeName: String) -> String {
        (typeName.first.map { "aeiou".contains($0) } ?? false) ? "an \(typeName)" : "a \(typeName)"
    }

    private func hex(_ byte: UInt8) -> String {
        let digits = String(byte, radix: 16, uppercase: true)
        return String(repeating: "0", count: 4 - digits.count) + digits
    }
}

// MARK: - Byte classes

extension UInt8 {
    fileprivate static let tab = UInt8(ascii: "\t")
    fileprivate static let newline = UInt8(ascii: "\n")
    fileprivate static let carriageReturn = UInt8(ascii: "\r")
    fileprivate static let space = UInt8(ascii: " ")
    fileprivate static let quote = UInt8(ascii: "\"")
    fileprivate static let apostrophe = UInt8(ascii: "'")
    fileprivate static let hash = UInt8(ascii: "#")
    fileprivate static let plus = UInt8(ascii: "+")
    fileprivate static let comma = UInt8(ascii: ",")
    fileprivate static let minus = UInt8(ascii: "-")
    fileprivate static let dot = UInt8(ascii: ".")
    fileprivate static let colon = UInt8(ascii: ":")
    fileprivate static let equals = UInt8(ascii: "=")
    fileprivate static let leftBracket = UInt8(ascii: "[")
    fileprivate static let backslash = UInt8(ascii: "\\")
    fileprivate static let rightBracket = UInt8(ascii: "]")
    fileprivate static let underscore = UInt8(ascii: "_")
    fileprivate static let leftBrace = UInt8(ascii: "{")
    fileprivate static let rightBrace = UInt8(ascii: "}")

    fileprivate var isDigit: Bool { self >= UInt8(ascii: "0") && self <= UInt8(ascii: "9") }

    fileprivate var isLetter: Bool {
        (self >= UInt8(ascii: "a") && self <= UInt8(ascii: "z")) || (self >= UInt8(ascii: "A") && self <= UInt8(ascii: "Z"))
    }

    fileprivate var isBareKeyByte: Bool { isLetter || isDigit || self == .underscore || self == .minus }

    /// Bytes that can make up an unquoted value: numbers, booleans, inf/nan and dates.
    fileprivate var isBareValueByte: Bool {
        isLetter || isDigit || self == .underscore || self == .minus || self == .plus || self == .dot || self == .colon
    }

    fileprivate var hexDigitValue: Int? {
        switch self {
        case UInt8(ascii: "0")...UInt8(ascii: "9"): Int(self - UInt8(ascii: "0"))
        case UInt8(ascii: "a")...UInt8(ascii: "f"): Int(self - UInt8(ascii: "a")) + 10
        case UInt8(ascii: "A")...UInt8(ascii: "F"): Int(self - UInt8(ascii: "A")) + 10
        default: nil
        }
    }

    /// U+0000–U+0008, U+000A–U+001F and U+007F; tab is the one control character TOML allows
    /// in strings and comments. Callers handle newline and carriage return themselves.
    fileprivate var isForbiddenControl: Bool {
        (self < 0x20 && self != .tab && self != .newline && self != .carriageReturn) || self == 0x7F
    }

    fileprivate var isPrintableASCII: Bool { self >= 0x20 && self < 0x7F }
}
