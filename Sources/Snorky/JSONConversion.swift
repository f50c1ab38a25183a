public import SnorkyProtocol

/// A type an RPC command parameter can be bound to from `params`.
/// A value of the wrong shape makes the call fail with `Invalid params`.
public protocol JSONDecodable {
    init(json: JSON) throws(RPCError)
}

/// A type an RPC command may return; it becomes the response's `data`.
public protocol JSONEncodable {
    var json: JSON { get }
}

public typealias JSONConvertible = JSONDecodable & JSONEncodable

extension JSON: JSONConvertible {
    public init(json: JSON) { self = json }
    public var json: JSON { self }
}

extension JSONObject: JSONConvertible {
    public init(json: JSON) throws(RPCError) {
        guard case .object(let object) = json else { throw .invalidParams }
        self = object
    }
    public var json: JSON { .object(self) }
}

extension String: JSONConvertible {
    public init(json: JSON) throws(RPCError) {
        guard case .string(let value) = json else { throw .invalidParams }
        self = value
    }
    public var json: JSON { .string(self) }
}

extension Bool: JSONConvertible {
    public init(json: JSON) throws(RPCError) {
        guard case .bool(let value) = json else { throw .invalidParams }
        self = value
    }
    public var json: JSON { .bool(self) }
}

extension Double: JSONConvertible {
    public init(json: JSON) throws(RPCError) {
        guard let value = json.doubleValue else { throw .invalidParams }
        self = value
    }
    public var json: JSON { .double(self) }
}

extension Int: JSONConvertible {
    /// Integral doubles (`2.0`) are accepted: JavaScript does not distinguish them.
    public init(json: JSON) throws(RPCError) {
        guard let value = json.int64Value, let int = Int(exactly: value) else { throw .invalidParams }
        self = int
    }
    public var json: JSON { .int(Int64(self)) }
}

extension Int64: JSONConvertible {
    public init(json: JSON) throws(RPCError) {
        guard let value = json.int64Value else { throw .invalidParams }
        self = value
    }
    public var json: JSON { .int(self) }
}

extension Optional: JSONDecodable where Wrapped: JSONDecodable {
    /// `null` binds to nil; a parameter of optional type is still required unless it has a default.
    public init(json: JSON) throws(RPCError) {
        self = json.isNull ? nil : try Wrapped(json: json)
    }
}

extension Optional: JSONEncodable where Wrapped: JSONEncodable {
    public var json: JSON { self?.json ?? .null }
}

extension Array: JSONDecodable where Element: JSONDecodable {
    public init(json: JSON) throws(RPCError) {
        guard case .array(let values) = json else { throw .invalidParams }
        var result: [Element] = []
        result.reserveCapacity(values.count)
        for value in values { result.append(try Element(json: value)) }
        self = result
    }
}

extension Array: JSONEncodable where Element: JSONEncodable {
    public var json: JSON { .array(map(\.json)) }
}

extension Dictionary: JSONDecodable where Key == String, Value: JSONDecodable {
    public init(json: JSON) throws(RPCError) {
        guard case .object(let object) = json else { throw .invalidParams }
        var result: [String: Value] = [:]
        for member in object { result[member.key] = try Value(json: member.value) }
        self = result
    }
}

extension Dictionary: JSONEncodable where Key == String, Value: JSONEncodable {
    /// Keys are sorted so the output is deterministic.
    public var json: JSON {
        .object(JSONObject(sorted { $0.key < $1.key }.map { ($0.key, $0.value.json) }))
    }
}
