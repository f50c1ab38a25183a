public import Snorky

/// A database change made by the application (PROTOCOL.md section 5):
/// `{"type": "insert"|"delete", "model": m, "data": row}` or
/// `{"type": "update", "model": m, "newData": row, "oldData": row}`.
public enum DataSyncDelta: Sendable, Equatable {
    case insert(model: String, data: JSON)
    case update(model: String, newData: JSON, oldData: JSON)
    case delete(model: String, data: JSON)

    /// Error strings of `publishDeltas`, exact (they are part of the protocol).
    public enum Failure {
        public static let modelMustBeString = "model must be string"
        public static let invalidDeltaType = "Invalid delta type"
        public static let missingField = "Missing field"
        public static let noDealerForModel = "No dealer for model"
    }

    /// Parses a delta as the backend sent it, checking fields in the original server's
    /// order: `model` (present, then a string), `type`, then the type's row fields. A
    /// delta that is not an object is `Invalid params`. Rows may be any JSON value (a
    /// non-object simply has no fields to match). Unknown extra keys are ignored.
    public init(validating json: JSON) throws(RPCError) {
        guard case .object(let object) = json else { throw .invalidParams }
        guard let modelValue = object["model"] else { throw RPCError(Failure.missingField) }
        guard case .string(let model) = modelValue else { throw RPCError(Failure.modelMustBeString) }
        guard let type = object["type"] else { throw RPCError(Failure.missingField) }
        func field(_ key: String) throws(RPCError) -> JSON {
            guard let value = object[key] else { throw RPCError(Failure.missingField) }
            return value
        }
        switch type.stringValue {
        case "insert": self = .insert(model: model, data: try field("data"))
        case "delete": self = .delete(model: model, data: try field("data"))
        case "update": self = .update(model: model, newData: try field("newData"), oldData: try field("oldData"))
        default: throw RPCError(Failure.invalidDeltaType)
        }
    }

    public var model: String {
        switch self {
        case .insert(let model, _), .update(let model, _, _), .delete(let model, _): model
        }
    }

    /// The wire form, with only the protocol's fields.
    public var json: JSON {
        switch self {
        case .insert(let model, let data):
            ["type": "insert", "model": .string(model), "data": data]
        case .delete(let model, let data):
            ["type": "delete", "model": .string(model), "data": data]
        case .update(let model, let newData, let oldData):
            ["type": "update", "model": .string(model), "newData": newData, "oldData": oldData]
        }
    }

    /// What one subscription receives of this delta, given whether it matches a row: an
    /// insert or delete if it matches the row; an update becomes the update if it matches
    /// both rows, an insert of `newData` if only the new row, a delete of `oldData` if only
    /// the old one, and nothing otherwise.
    func delivery(matching: (JSON) -> Bool) -> DataSyncDelta? {
        switch self {
        case .insert(_, let data), .delete(_, let data):
            return matching(data) ? self : nil
        case .update(let model, let newData, let oldData):
            return Self.split(model: model, newData: newData, oldData: oldData,
                              newMatches: matching(newData), oldMatches: matching(oldData))
        }
    }

    static func split(model: String, newData: JSON, oldData: JSON, newMatches: Bool, oldMatches: Bool) -> DataSyncDelta? {
        switch (newMatches, oldMatches) {
        case (true, true): .update(model: model, newData: newData, oldData: oldData)
        case (true, false): .insert(model: model, data: newData)
        case (false, true): .delete(model: model, data: oldData)
        case (false, false): nil
        }
    }
}
