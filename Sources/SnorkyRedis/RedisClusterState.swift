public import Logging
public import NIOCore
import NIOPosix
public import Snorky
import Synchronization

/// Settings of `RedisClusterState`. Every field has a production default.
public struct RedisClusterStateConfiguration: Sendable {
    /// Where Redis is.
    public var url: RedisURL
    /// Every key starts with `"<keyPrefix>:"`. Default `snorky`, the bus's default channel
    /// prefix: give each cluster sharing one Redis its own prefix, for both.
    public var keyPrefix: String = "snorky"
    /// Connect and reply timeouts. A reply later than the command timeout fails with
    /// `unavailable` and closes the connection, which then reconnects. Defaults 2 s and 5 s.
    public var connection = RedisConnectionConfiguration()
    /// Delay between reconnect attempts: 50 ms doubling to 1 s, jitter 50 %.
    public var reconnectBackoff = ReconnectBackoff()

    public init(url: RedisURL) {
        self.url = url
    }

    public init(url: String) throws(RedisError) {
        self.url = try RedisURL(url)
    }
}

/// `ClusterState` in Redis, shared by every worker of every node that uses the same Redis
/// and key prefix.
///
/// Every mutation is one Lua script (`ClusterStateScripts`, which also documents the keys),
/// so it is atomic however many workers race; reads of one key are single commands. Each
/// entry is also indexed under the client that owns it, per node, so that a client's
/// disconnect (`removeAll(ownedBy:in:)`) and a dead node's reaping each remove exactly what
/// that owner holds, in one script, and report it once.
///
/// Liveness: `heartbeat` sets `P:alive:<node>` with the TTL and records the node in
/// `P:nodes`; `reapDeadNodes` lists known nodes whose alive key expired and reaps each with
/// a script that re-checks both (alive again, or already reaped by a concurrent reaper)
/// before removing anything.
///
/// One command connection per instance, opened on first use (or `start()`) and re-opened
/// with backoff after a loss; while it is down every method throws `BusError.unavailable`
/// at once (or when the reconnect attempt in flight fails, within the connect timeout), and
/// a reply is never awaited longer than the command timeout. Mutations are never retried:
/// when a reply is lost the call throws, though Redis may have applied it. Call
/// `shutdown()` when done.
public final class RedisClusterState: ClusterState {
    public let configuration: RedisClusterStateConfiguration

    private let client: RedisCommandClient
    private let keys: ClusterStateKeys
    private let prefix: RESPArgument
    private let logger: Logger

    public init(
        configuration: RedisClusterStateConfiguration,
        eventLoopGroup: any EventLoopGroup = MultiThreadedEventLoopGroup.singleton,
        logger: Logger = Logger(label: "snorky.redis-cluster-state")
    ) {
        self.configuration = configuration
        var logger = logger
        logger[metadataKey: "redis"] = "\(configuration.url)"
        self.logger = logger
        self.client = RedisCommandClient(
            url: configuration.url,
            connection: configuration.connection,
            reconnectBackoff: configuration.reconnectBackoff,
            eventLoop: eventLoopGroup.next(),
            logger: logger
        )
        self.keys = ClusterStateKeys(prefix: configuration.keyPrefix)
        self.prefix = .string(configuration.keyPrefix)
    }

    /// Whether the command connection is up right now.
    public var isConnected: Bool { client.isConnected }

    /// How many times the connection to Redis was re-established after a loss.
    public var reconnectCount: Int { client.reconnectCount }

    /// Connects now rather than on first use, and returns after that first attempt (which,
    /// if it failed, is retried in the background). Optional.
    public func start() async {
        await client.start()
    }

    /// Closes the connection; every later call throws `unavailable`.
    public func shutdown() async {
        await client.shutdown()
    }

    // MARK: Names

    public func claimName(_ name: String, in space: String, for owner: ClientAddress) async throws(BusError) -> ClientAddress? {
        let reply = try await run(ClusterStateScripts.claimName, [.string(space), .string(name)] + Self.arguments(owner))
        if reply.isNull { return nil }
        return try Self.address(reply)
    }

    public func releaseName(_ name: String, in space: String, by owner: ClientAddress) async throws(BusError) -> NameRelease {
        let reply = try await run(ClusterStateScripts.releaseName, [.string(space), .string(name)] + Self.arguments(owner))
        switch reply.integer {
        case 0: return .released
        case 1: return .notFound
        case 2: return .ownedByOther
        default: throw Self.unexpected(reply)
        }
    }

    public func nameOwner(_ name: String, in space: String) async throws(BusError) -> ClientAddress? {
        let reply = try await client.send(["HGET", .string(keys.names(space: space)), .string(name)])
        if reply.isNull { return nil }
        return try Self.address(reply)
    }

    public func names(in space: String) async throws(BusError) -> [String] {
        try Self.strings(try await client.send(["HKEYS", .string(keys.names(space: space))])).sorted()
    }

    // MARK: Presence

    public func join(
        group: String, member: String, connection: ClientAddress, in space: String
    ) async throws(BusError) -> (isFirst: Bool, members: [String]) {
        let reply = try await run(
            ClusterStateScripts.join, [.string(space), .string(group), .string(member)] + Self.arguments(connection))
        guard let parts = reply.array, parts.count == 2, let isFirst = parts[0].integer else { throw Self.unexpected(reply) }
        return (isFirst == 1, try Self.strings(parts[1]).sorted())
    }

    public func leave(
        group: String, member: String, connection: ClientAddress, in space: String
    ) async throws(BusError) -> (wasPresent: Bool, isLast: Bool) {
        let reply = try await run(
            ClusterStateScripts.leave, [.string(space), .string(group), .string(member)] + Self.arguments(connection))
        guard let parts = reply.array, parts.count == 2, let wasPresent = parts[0].integer, let isLast = parts[1].integer else {
            throw Self.unexpected(reply)
        }
        return (wasPresent == 1, isLast == 1)
    }

    /// In join order, like the in-memory state.
    public func connections(of member: String, group: String, in space: String) async throws(BusError) -> [ClientAddress] {
        let key = keys.connections(space: space, group: group, member: member)
        let reply = try await client.send(["ZRANGE", .string(key), "0", "-1"])
        guard let values = reply.array else { throw Self.unexpected(reply) }
        var addresses: [ClientAddress] = []
        addresses.reserveCapacity(values.count)
        for value in values { addresses.append(try Self.address(value)) }
        return addresses
    }

    public func members(of group: String, in space: String) async throws(BusError) -> [String] {
        try Self.strings(try await client.send(["SMEMBERS", .string(keys.members(space: space, group: group))])).sorted()
    }

    // MARK: Records

    /// A single INCR: atomic by itself, no script needed.
    public func nextSequence(group: String, in space: String) async throws(BusError) -> Int64 {
        let reply = try await client.send(["INCR", .string(keys.sequence(space: space, group: group))])
        guard let value = reply.integer else { throw Self.unexpected(reply) }
        return value
    }

    public func putRecord(
        _ value: [UInt8], id: String, group: String, owner: ClientAddress, in space: String
    ) async throws(BusError) {
        let arguments: [RESPArgument] = [.string(space), .string(group), .string(id), RESPArgument(value)]
        _ = try await run(ClusterStateScripts.putRecord, arguments + Self.arguments(owner))
    }

    public func removeRecord(id: String, group: String, in space: String) async throws(BusError) -> Bool {
        let reply = try await run(ClusterStateScripts.removeRecord, [.string(space), .string(group), .string(id)])
        guard let removed = reply.integer else { throw Self.unexpected(reply) }
        return removed == 1
    }

    /// Sorted by id, like the in-memory state.
    public func records(group: String, in space: String) async throws(BusError) -> [ClusterRecord] {
        let reply = try await run(ClusterStateScripts.records, [.string(space), .string(group)])
        guard let rows = reply.array else { throw Self.unexpected(reply) }
        var records: [ClusterRecord] = []
        records.reserveCapacity(rows.count)
        for row in rows {
            guard let fields = row.array, fields.count == 3, let id = fields[0].string, let value = fields[1].bytes else {
                throw Self.unexpected(row)
            }
            records.append(ClusterRecord(id: id, value: Array(value.readableBytesView), owner: try Self.address(fields[2])))
        }
        return records.sorted { $0.id < $1.id }
    }

    // MARK: Liveness

    public func heartbeat(nodeID: String, ttl: Duration) async throws(BusError) {
        let (seconds, attoseconds) = ttl.components
        let milliseconds = max(1, seconds * 1000 + attoseconds / 1_000_000_000_000_000)
        _ = try await run(ClusterStateScripts.heartbeat, [.string(nodeID), RESPArgument(milliseconds)])
    }

    public func reapDeadNodes(survivor: String) async throws(BusError) -> ReapedState {
        let candidates = try Self.strings(try await run(ClusterStateScripts.deadNodes, [.string(survivor)]))
        var reaped = ReapedState()
        for node in candidates.sorted() {
            let reply: RESPValue
            do {
                reply = try await run(ClusterStateScripts.reapNode, [.string(node)])
            } catch {
                // What earlier scripts removed is only reported here: return it rather than
                // lose it; the remaining nodes are reaped by a later call.
                guard !reaped.nodes.isEmpty else { throw error }
                logger.warning("reaping stopped part-way", metadata: ["node": "\(node)", "error": "\(error)"])
                return reaped
            }
            // nil: alive again, or a concurrent reaper got it first.
            if reply.isNull { continue }
            reaped.nodes.append(node)
            try decodeReaped(reply, into: &reaped)
        }
        return reaped
    }

    public func removeAll(ownedBy owner: ClientAddress, in space: String) async throws(BusError) -> ReapedState {
        let reply = try await run(ClusterStateScripts.removeAll, Self.arguments(owner) + [.string(space)])
        var reaped = ReapedState()
        try decodeReaped(reply, into: &reaped)
        return reaped
    }

    // MARK: Replies

    private func run(_ script: RedisScript, _ arguments: [RESPArgument]) async throws(BusError) -> RESPValue {
        try await client.evaluate(script, arguments: [prefix] + arguments)
    }

    /// Node and client id, as the scripts take an owner.
    private static func arguments(_ owner: ClientAddress) -> [RESPArgument] {
        [.string(owner.nodeID), .string(String(owner.clientID))]
    }

    private static func unexpected(_ reply: RESPValue) -> BusError {
        .unavailable("unexpected reply from Redis: \(reply)")
    }

    private static func address(_ reply: RESPValue) throws(BusError) -> ClientAddress {
        guard let text = reply.string, let address = ClientAddress(text) else { throw unexpected(reply) }
        return address
    }

    private static func strings(_ reply: RESPValue) throws(BusError) -> [String] {
        guard let values = reply.array else { throw unexpected(reply) }
        var strings: [String] = []
        strings.reserveCapacity(values.count)
        for value in values {
            guard let string = value.string else { throw unexpected(value) }
            strings.append(string)
        }
        return strings
    }

    /// Appends the entries a `removeOwned` script reported (see `ClusterStateScripts`).
    private func decodeReaped(_ reply: RESPValue, into reaped: inout ReapedState) throws(BusError) {
        guard let entries = reply.array else { throw Self.unexpected(reply) }
        guard !entries.isEmpty else { return }
        for entry in entries {
            guard let fields = entry.array, let kind = fields.first?.string, fields.count >= 5, let space = fields[1].string
            else {
                throw Self.unexpected(entry)
            }
            let strings = fields.map(\.string)
            func owner(at index: Int) throws(BusError) -> ClientAddress {
                guard index + 1 < fields.count, let node = strings[index], let id = strings[index + 1].flatMap({ UInt64($0) })
                else {
                    throw Self.unexpected(entry)
                }
                return ClientAddress(nodeID: node, clientID: id)
            }
            switch kind {
            case "n":
                guard let name = strings[2] else { throw Self.unexpected(entry) }
                reaped.names.append(.init(space: space, name: name, owner: try owner(at: 3)))
            case "p":
                guard fields.count == 7, let group = strings[2], let member = strings[3], let isLast = fields[6].integer else {
                    throw Self.unexpected(entry)
                }
                reaped.presence.append(
                    .init(space: space, group: group, member: member, connection: try owner(at: 4), isLast: isLast == 1))
            case "r":
                guard fields.count == 7, let group = strings[2], let id = strings[3], let value = fields[4].bytes else {
                    throw Self.unexpected(entry)
                }
                let record = ClusterRecord(id: id, value: Array(value.readableBytesView), owner: try owner(at: 5))
                reaped.records.append(.init(space: space, group: group, record: record))
            default:
                throw Self.unexpected(entry)
            }
        }
    }
}
