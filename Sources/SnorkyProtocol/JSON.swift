/// A JSON value as Snorky sees it on the wire.
///
/// Numbers keep the integer/fraction distinction of their source text so a `callId` of `7`
/// is echoed as `7`, not `7.0`; equality is numeric (`1 == 1.0`) and object equality ignores
/// key order, because PROTOCOL.md says two channels are equal when their JSON values are.
public enum JSON: Sendable {
    case null
    case bool(Bool)
    case int(Int64)
    case double(Double)
    case string(String)
    case array([JSON])
    case object(JSONObject)
}

extension JSON {
    public var isNull: Bool {
        if case .null = self { return true }
        return false
    }

    public var stringValue: String? {
        if case .string(let value) = self { return value }
        return nil
    }

    public var objectValue: JSONObject? {
        if case .object(let value) = self { return value }
        return nil
    }

    public var arrayValue: [JSON]? {
        if case .array(let value) = self { return value }
        return nil
    }

    public var boolValue: Bool? {
        if case .bool(let value) = self { return value }
        return nil
    }

    /// The value as a Double, for either number representation.
    public var doubleValue: Double? {
        switch self {
        case .int(let value): Double(value)
        case .double(let value): value
        default: nil
        }
    }

    /// The value as an Int64 when it is an integer (or an integral double that fits).
    public var int64Value: Int64? {
        switch self {
        case .int(let value): value
        case .double(let value): Int64(exactly: value)
        default: nil
        }
    }

    /// Object member lookup; nil for non-objects and missing keys.
    public subscript(key: String) -> JSON? {
        objectValue?[key]
    }
}

extension JSON: Equatable {
    public static func == (lhs: JSON, rhs: JSON) -> Bool {
        switch (lhs, rhs) {
        case (.null, .null): true
        case (.bool(let a), .bool(let b)): a == b
        case (.int(let a), .int(let b)): a == b
        case (.double(let a), .double(let b)): a == b
        case (.int(let a), .double(let b)), (.double(let b), .int(let a)): Int64(exactly: b) == a
        case (.string(let a), .string(let b)): a.isIdentical(to: b)
        case (.array(let a), .array(let b)): a == b
        case (.object(let a), .object(let b)): a == b
        default: false
        }
    }
}

extension JSON: Hashable {
    public func hash(into hasher: inout Hasher) {
        switch self {
        case .null:
            hasher.combine(0 as UInt8)
        case .bool(let value):
            hasher.combine(1 as UInt8)
            hasher.combine(value)
        case .int(let value):
            hasher.combine(2 as UInt8)
            hasher.combine(value)
        case .double(let value):
            // Integral doubles hash like the integer they equal.
            if let exact = Int64(exactly: value) {
                hasher.combine(2 as UInt8)
                hasher.combine(exact)
            } else {
                hasher.combine(3 as UInt8)
                hasher.combine(value)
            }
        case .string(let value):
            hasher.combine(4 as UInt8)
            hasher.combine(value)
        case .array(let values):
            hasher.combine(5 as UInt8)
            hasher.combine(values)
        case .object(let object):
            hasher.combine(6 as UInt8)
            hasher.combine(object)
        }
    }
}

extension JSON: ExpressibleByNilLiteral, ExpressibleByBooleanLiteral, ExpressibleByIntegerLiteral,
    ExpressibleByFloatLiteral, ExpressibleByStringLiteral, ExpressibleByArrayLiteral,
    ExpressibleByDictionaryLiteral
{
    public init(nilLiteral: ()) { self = .null }
    public init(booleanLiteral value: Bool) { self = .bool(value) }
    public init(integerLiteral value: Int64) { self = .int(value) }
    public init(floatLiteral value: Double) { self = .double(value) }
    public init(stringLiteral value: String) { self = .string(value) }
    public init(arrayLiteral elements: JSON...) { self = .array(elements) }
    public init(dictionaryLiteral elements: (String, JSON)...) {
        self = .object(JSONObject(elements))
    }
}

extension JSON: CustomStringConvertible {
    public var description: String { encodedString() }
}

/// A JSON object that keeps its members in insertion order (so replies read naturally,
/// `{"type":"response","callId":7,...}`) while comparing and hashing as an unordered map.
public struct JSONObject: Sendable {
    public private(set) var members: [(key: String, value: JSON)]

    public init() {
        members = []
    }

    /// Later duplicates of a key replace earlier ones, as JSON parsers conventionally do.
    public init(_ pairs: some Sequence<(String, JSON)>) {
        members = []
        members.reserveCapacity(pairs.underestimatedCount)
        for (key, value) in pairs {
            self[key] = value
        }
    }

    init(uncheckedUniqueMembers members: [(key: String, value: JSON)]) {
        self.members = members
    }

    public var count: Int { members.count }
    public var isEmpty: Bool { members.isEmpty }
    public var keys: [String] { members.map(\.key) }

    public subscript(key: String) -> JSON? {
        get {
            for member in members where member.key.isIdentical(to: key) {
                return member.value
            }
            return nil
        }
        set {
            if let index = members.firstIndex(where: { $0.key.isIdentical(to: key) }) {
                if let newValue {
                    members[index].value = newValue
                } else {
                    members.remove(at: index)
                }
            } else if let newValue {
                members.append((key, newValue))
            }
        }
    }
}

extension JSONObject: Sequence {
    public func makeIterator() -> IndexingIterator<[(key: String, value: JSON)]> {
        members.makeIterator()
    }
}

extension JSONObject: Equatable {
    public static func == (lhs: JSONObject, rhs: JSONObject) -> Bool {
        guard lhs.count == rhs.count else { return false }
        if lhs.count <= 8 {
            return lhs.members.allSatisfy { rhs[$0.key] == $0.value }
        }
        let right = Dictionary(rhs.members.map { (ExactKey($0.key), $0.value) }, uniquingKeysWith: { _, last in last })
        return lhs.members.allSatisfy { right[ExactKey($0.key)] == $0.value }
    }
}

extension JSONObject: Hashable {
    public func hash(into hasher: inout Hasher) {
        // Order-independent: combine each member's own hash commutatively.
        var combined = 0
        for member in members {
            var memberHasher = Hasher()
            memberHasher.combine(member.key)
            memberHasher.combine(member.value)
            combined = combined &+ memberHasher.finalize()
        }
        hasher.combine(members.count)
        hasher.combine(combined)
    }
}

extension JSONObject: ExpressibleByDictionaryLiteral {
    public init(dictionaryLiteral elements: (String, JSON)...) {
        self.init(elements)
    }
}

extension String {
    /// JSON compares strings by code points (RFC 8259 section 8.3), as JavaScript does;
    /// Swift's `==` also equates canonically equivalent strings ("é" and "e\u{301}"),
    /// which would merge channels a JavaScript client sees as different.
    @inlinable
    public func isIdentical(to other: String) -> Bool {
        utf8.elementsEqual(other.utf8)
    }
}

/// A dictionary key with JSON's string equality (see `String.isIdentical(to:)`). Hashing
/// with String's own hash is consistent: identical strings are always `==` in Swift.
struct ExactKey: Hashable {
    let value: String

    init(_ value: String) {
        self.value = value
    }

    static func == (lhs: ExactKey, rhs: ExactKey) -> Bool {
        lhs.value.isIdentical(to: rhs.value)
    }

    func hash(into hasher: inout Hasher) {
        hasher.combine(value)
    }
}
