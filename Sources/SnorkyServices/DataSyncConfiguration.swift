public import Snorky
public import SnorkyConfig

/// Settings of `datasync` and `datasync_backend`.
public struct DataSyncOptions: Sendable {
    /// The dealers subscription items may name. Add with `add(_:)` or from the config file.
    public private(set) var dealers = DealerRegistry()
    /// Where tokens, buffers and owners live. nil gives each service its own in-memory
    /// store, which is right for one worker only: with several workers or nodes every one
    /// must share a store (`RedisSubscriptionStore`), or a token authorized on one worker
    /// cannot be acquired on another.
    public var store: (any SubscriptionStore)?
    /// How long an authorized token may wait for its acquire. Default 120 s.
    public var subscriptionTTL: Duration = .seconds(120)
    /// Deltas a pending token may buffer; one more and the token is dropped (its acquire
    /// answers `No such subscription`), since a subscriber must not start from a state it
    /// cannot complete. Default 1,000.
    public var maxBufferedDeltas = 1000

    public init() {}

    /// The keys the `[datasync]` section accepts, one per case of `apply(configuration:)`;
    /// the example config (deploy/snorky.toml) is tested to document each.
    public static let sectionKeys = ["subscription_ttl", "max_buffered_deltas", "dealers"]
    /// The keys of one `[[datasync.dealers]]` table.
    public static let dealerKeys = ["name", "model", "kind", "key"]

    public mutating func add(_ dealer: any Dealer) throws(DuplicateDealer) {
        try dealers.add(dealer)
    }

    /// Reads the `[datasync]` section of a parsed config file (`root` is the whole file);
    /// a file without one leaves the defaults.
    ///
    /// ```toml
    /// [datasync]
    /// subscription_ttl = 120        # seconds
    /// max_buffered_deltas = 1000
    ///
    /// [[datasync.dealers]]
    /// name = "players_with_color"
    /// model = "Player"
    /// kind = "simple"               # broadcast | simple | filter
    /// key = "color"                 # simple only: field name or dotted path
    /// ```
    public init(configuration root: TOMLTable) throws(ConfigurationError) {
        self.init()
        try apply(configuration: root)
    }

    /// Parses `text` as TOML and reads its `[datasync]` section.
    public init(configurationText text: String, fileName: String = "config file") throws(ConfigurationError) {
        self.init()
        try apply(configurationText: text, fileName: fileName)
    }

    /// Parses `text` as TOML and applies its `[datasync]` section on top of these options.
    public mutating func apply(configurationText text: String, fileName: String = "config file") throws(ConfigurationError) {
        let root: TOMLTable
        do {
            root = try TOML.parse(text)
        } catch {
            throw ConfigurationError("\(fileName): \(error)")
        }
        try apply(configuration: root)
    }

    /// Applies the `[datasync]` section of `root` on top of these options (dealers declared
    /// there are added to those registered in code).
    public mutating func apply(configuration root: TOMLTable) throws(ConfigurationError) {
        guard let section = root["datasync"] else { return }
        guard case .table(let table) = section else {
            throw ConfigurationError("datasync: expected a table ([datasync]), got \(section.typeName)")
        }
        for (key, value) in table {
            switch key {
            case "subscription_ttl":
                guard let seconds = value.doubleValue, seconds.isFinite, seconds > 0 else {
                    throw ConfigurationError("datasync.subscription_ttl: expected a positive number of seconds")
                }
                subscriptionTTL = .milliseconds(Int64((seconds * 1000).rounded(.up)))
            case "max_buffered_deltas":
                guard let count = value.integerValue, (1...1_000_000).contains(count) else {
                    throw ConfigurationError("datasync.max_buffered_deltas: expected an integer in 1...1000000")
                }
                maxBufferedDeltas = Int(count)
            case "dealers":
                guard case .array(let entries) = value else {
                    throw ConfigurationError("datasync.dealers: expected an array of tables ([[datasync.dealers]])")
                }
                for (index, entry) in entries.enumerated() {
                    let dealer = try Self.dealer(entry, number: index + 1)
                    do {
                        try add(dealer)
                    } catch {
                        throw ConfigurationError("datasync.dealers #\(index + 1): \(error)")
                    }
                }
            default:
                throw ConfigurationError(
                    "datasync: unknown setting '\(key)' (expected "
                        + Self.sectionKeys.dropLast().joined(separator: ", ") + " or \(Self.sectionKeys.last!))")
            }
        }
    }

    private static func dealer(_ entry: TOMLValue, number: Int) throws(ConfigurationError) -> any Dealer {
        guard case .table(let table) = entry else {
            throw ConfigurationError("datasync.dealers #\(number): expected a table, got \(entry.typeName)")
        }
        var context = "datasync.dealers #\(number)"
        func string(_ key: String) throws(ConfigurationError) -> String? {
            guard let value = table[key] else { return nil }
            guard case .string(let text) = value, !text.isEmpty else {
                throw ConfigurationError("\(context): '\(key)' must be a non-empty string")
            }
            return text
        }
        guard let name = try string("name") else { throw ConfigurationError("\(context): missing 'name'") }
        context += " (\(name))"
        guard let model = try string("model") else { throw ConfigurationError("\(context): missing 'model'") }
        guard let kind = try string("kind") else {
            throw ConfigurationError("\(context): missing 'kind' (broadcast, simple or filter)")
        }
        let key = try string("key")
        for other in table.keys where !dealerKeys.contains(other) {
            throw ConfigurationError("\(context): unknown key '\(other)' (expected \(dealerKeys.joined(separator: ", ")))")
        }
        switch kind {
        case "simple":
            guard let key else { throw ConfigurationError("\(context): a simple dealer needs 'key' (a field name or dotted path)") }
            return SimpleDealer(name: name, model: model, key: key)
        case "broadcast", "filter":
            guard key == nil else { throw ConfigurationError("\(context): 'key' is only for simple dealers") }
            return kind == "broadcast" ? BroadcastDealer(name: name, model: model) : FilterDealer(name: name, model: model)
        default:
            throw ConfigurationError("\(context): unknown kind '\(kind)' (expected broadcast, simple or filter)")
        }
    }
}
