public import Snorky

/// Decides which datasync subscription items a row of its model reaches (PROTOCOL.md
/// section 5). A subscription item names a dealer and carries a query; the dealer turns
/// the query into a `RowMatcher` once, when the item is authorized (nil refuses it with
/// `Invalid query`) and again where the subscription is acquired.
///
/// Write your own by conforming to this protocol and adding it to
/// `DataSyncOptions.dealers`; the built-ins are `BroadcastDealer`, `SimpleDealer` and
/// `FilterDealer`.
public protocol Dealer: Sendable {
    /// Unique among the dealers of a server; what subscription items name.
    var name: String { get }
    /// The model (`"Player"`) whose deltas this dealer routes.
    var model: String { get }

    /// The matcher for an item's query, or nil when the query is invalid for this dealer.
    func matcher(for query: JSON) -> RowMatcher?
}

/// Which rows a subscription item wants. The two structured cases let the subscription
/// index find matching items without testing each (a set for `everyRow`, a hash lookup
/// for `fieldEquals`); `predicate` is tested item by item.
public enum RowMatcher: Sendable {
    case everyRow
    /// The row's value at the path equals the value (JSON equality: `1 == 1.0`, object key
    /// order ignored). A row without the field does not match.
    case fieldEquals(FieldPath, JSON)
    case predicate(@Sendable (_ row: JSON) -> Bool)

    public func matches(_ row: JSON) -> Bool {
        switch self {
        case .everyRow: true
        case .fieldEquals(let path, let value): path.value(in: row) == value
        case .predicate(let test): test(row)
        }
    }
}

/// A field of a row: a key, or a dotted path into nested objects (`player.color`).
///
/// A key that itself contains dots and is present in the row wins over the path, so a row
/// `{"a.b": 1}` still matches field `a.b` as the original server (which had no paths) did.
public struct FieldPath: Hashable, Sendable, CustomStringConvertible {
    public let text: String
    private let segments: [Substring]

    public init(_ text: String) {
        self.text = text
        self.segments = text.split(separator: ".", omittingEmptySubsequences: false)
    }

    public var description: String { text }

    /// The value at this path, or nil when a step is missing or not an object.
    public func value(in row: JSON) -> JSON? {
        guard case .object(let object) = row else { return nil }
        if let literal = object[text] { return literal }
        guard segments.count > 1 else { return nil }
        var current = row
        for segment in segments {
            guard case .object(let object) = current, let next = object[String(segment)] else { return nil }
            current = next
        }
        return current
    }

    public static func == (lhs: FieldPath, rhs: FieldPath) -> Bool { lhs.text.isIdentical(to: rhs.text) }
    public func hash(into hasher: inout Hasher) { hasher.combine(text) }
}

/// Every item of the dealer reaches every row of its model; the query is ignored.
public struct BroadcastDealer: Dealer {
    public let name: String
    public let model: String

    public init(name: String, model: String) {
        self.name = name
        self.model = model
    }

    public func matcher(for query: JSON) -> RowMatcher? { .everyRow }
}

/// An item reaches the rows whose value at `key` (a field name or dotted path) equals its
/// query: with key `color`, query `"blue"` gets the blue players. Any JSON query is valid.
public struct SimpleDealer: Dealer {
    public let name: String
    public let model: String
    public let key: FieldPath

    public init(name: String, model: String, key: String) {
        self.name = name
        self.model = model
        self.key = FieldPath(key)
    }

    public func matcher(for query: JSON) -> RowMatcher? { .fieldEquals(key, query) }
}

/// An item's query is a filter in prefix notation, checked when the item is authorized:
///
///     ["==", "color", "blue"]       also "<", "<=", ">", ">=" (field, value)
///     ["and", q1, q2, ...]          every subfilter (none: true)
///     ["or", q1, q2, ...]           any subfilter (none: false)
///     ["not", q]
///
/// Fields are names or dotted paths. A missing field or a type mismatch makes a comparison
/// false (so `["not", ["==", "color", "blue"]]` matches a row without `color`). `==`
/// compares any JSON values; the ordering operators compare two numbers, or two strings by
/// Unicode code points, and are false for anything else.
public struct FilterDealer: Dealer {
    public let name: String
    public let model: String

    public init(name: String, model: String) {
        self.name = name
        self.model = model
    }

    public func matcher(for query: JSON) -> RowMatcher? {
        guard let filter = RowFilter(query) else { return nil }
        return .predicate { filter.matches($0) }
    }
}

/// A compiled filter query (see `FilterDealer`).
public indirect enum RowFilter: Sendable, Equatable {
    public enum Comparison: String, Sendable, Equatable, CaseIterable {
        case equal = "=="
        case less = "<"
        case lessOrEqual = "<="
        case greater = ">"
        case greaterOrEqual = ">="
    }

    case compare(Comparison, FieldPath, JSON)
    case and([RowFilter])
    case or([RowFilter])
    case not(RowFilter)

    /// Parses a filter query; nil when it is not a valid filter.
    public init?(_ query: JSON) {
        guard case .array(let list) = query, case .string(let op)? = list.first else { return nil }
        let operands = list.dropFirst()
        if let comparison = Comparison(rawValue: op) {
            guard operands.count == 2, case .string(let field) = operands.first!, !field.isEmpty else { return nil }
            self = .compare(comparison, FieldPath(field), operands.last!)
            return
        }
        switch op {
        case "and", "or":
            var filters: [RowFilter] = []
            for operand in operands {
                guard let filter = RowFilter(operand) else { return nil }
                filters.append(filter)
            }
            self = op == "and" ? .and(filters) : .or(filters)
        case "not":
            guard operands.count == 1, let filter = RowFilter(operands.first!) else { return nil }
            self = .not(filter)
        default:
            return nil
        }
    }

    public func matches(_ row: JSON) -> Bool {
        switch self {
        case .compare(let comparison, let field, let value):
            guard let actual = field.value(in: row) else { return false }
            return Self.compare(actual, comparison, value)
        case .and(let filters): return filters.allSatisfy { $0.matches(row) }
        case .or(let filters): return filters.contains { $0.matches(row) }
        case .not(let filter): return !filter.matches(row)
        }
    }

    private static func compare(_ actual: JSON, _ comparison: Comparison, _ expected: JSON) -> Bool {
        if comparison == .equal { return actual == expected }
        guard let order = order(actual, expected) else { return false }
        switch comparison {
        case .equal: return order == 0
        case .less: return order < 0
        case .lessOrEqual: return order <= 0
        case .greater: return order > 0
        case .greaterOrEqual: return order >= 0
        }
    }

    /// -1, 0 or 1; nil when the values are not both numbers or both strings.
    private static func order(_ lhs: JSON, _ rhs: JSON) -> Int? {
        switch (lhs, rhs) {
        case (.int(let a), .int(let b)):
            return a < b ? -1 : (a == b ? 0 : 1)
        case (.int, .double), (.double, .int), (.double, .double):
            // NaN cannot come from JSON text, so doubles are totally ordered here.
            let a = lhs.doubleValue!
            let b = rhs.doubleValue!
            return a < b ? -1 : (a == b ? 0 : 1)
        case (.string(let a), .string(let b)):
            // UTF-8 byte order is code point order, as in Python, not Swift's `<`.
            if a.utf8.elementsEqual(b.utf8) { return 0 }
            return a.utf8.lexicographicallyPrecedes(b.utf8) ? -1 : 1
        default:
            return nil
        }
    }
}

/// The dealers of a server, by name and by model.
public struct DealerRegistry: Sendable {
    public private(set) var byName: [String: any Dealer] = [:]
    public private(set) var models: Set<String> = []

    public init() {}

    /// Fails with the name of the first dealer declared twice.
    public init(_ dealers: [any Dealer]) throws(DuplicateDealer) {
        for dealer in dealers { try add(dealer) }
    }

    public mutating func add(_ dealer: any Dealer) throws(DuplicateDealer) {
        guard byName[dealer.name] == nil else { throw DuplicateDealer(name: dealer.name) }
        byName[dealer.name] = dealer
        models.insert(dealer.model)
    }

    public var isEmpty: Bool { byName.isEmpty }

    public subscript(name: String) -> (any Dealer)? { byName[name] }

    public func hasDealer(forModel model: String) -> Bool { models.contains(model) }
}

public struct DuplicateDealer: Error, Sendable, Equatable, CustomStringConvertible {
    public let name: String
    public var description: String { "two dealers are named '\(name)'" }
}
