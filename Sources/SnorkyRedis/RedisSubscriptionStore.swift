public import Logging
public import NIOCore
import NIOPosix
public import Snorky

/// `SubscriptionStore` in Redis, shared by every worker of every node that uses the same
/// Redis and key prefix. Every method is one Lua script, so each is atomic however many
/// workers race (in particular acquire against append: see `SubscriptionStore`).
///
/// Keys (`D` is `"<keyPrefix>:datasync:"`; tokens and node ids are suffixes after a fixed
/// family name, so no text can make keys of two families collide):
///
/// | key               | type | content                                                   |
/// |-------------------|------|-----------------------------------------------------------|
/// | `D sub:<token>`   | hash | `state` (`pending`/`acquired`), `items`, `owner` (`node/client`) |
/// | `D buf:<token>`   | list | buffered delta entries, while pending                     |
/// | `D pending`       | set  | tokens that may still be pending (swept when listed)      |
/// | `D owned:<node>`  | set  | tokens acquired by clients of that node                   |
/// | `D seq`           | int  | the last number of the append sequence                    |
///
/// Expiry is Redis's own: a pending `sub` key (and its `buf`) carries the TTL, set with
/// `PEXPIRE`, and an acquire `PERSIST`s it, so every node agrees on the deadline whatever
/// its clock. The scripts build keys from `ARGV` (the pending and owned sets are indexes of
/// keys to visit), so they assume a single Redis, not Redis Cluster.
///
/// One command connection (`RedisCommandClient`): opened on first use, re-opened with
/// backoff after a loss; while it is down every method throws `BusError.unavailable`.
public final class RedisSubscriptionStore: SubscriptionStore {
    private let client: RedisCommandClient
    private let prefix: String

    /// - Parameter keyPrefix: the prefix of every key; give each cluster sharing one Redis
    ///   its own (the bus's channel prefix is a good choice).
    public init(
        url: RedisURL,
        keyPrefix: String = "snorky",
        connection: RedisConnectionConfiguration = RedisConnectionConfiguration(),
        reconnectBackoff: ReconnectBackoff = ReconnectBackoff(),
        eventLoopGroup: any EventLoopGroup = MultiThreadedEventLoopGroup.singleton,
        logger: Logger = Logger(label: "snorky.redis-subscription-store")
    ) {
        var logger = logger
        logger[metadataKey: "redis"] = "\(url)"
        self.client = RedisCommandClient(
            url: url, connection: connection, reconnectBackoff: reconnectBackoff,
            eventLoop: eventLoopGroup.next(), logger: logger)
        self.prefix = keyPrefix + ":datasync:"
    }

    /// Whether the command connection is up right now.
    public var isConnected: Bool { client.isConnected }

    /// Connects now rather than on first use. Optional.
    public func start() async {
        await client.start()
    }

    /// Closes the connection; every later call throws `unavailable`.
    public func shutdown() async {
        await client.shutdown()
    }

    private func key(_ family: String, _ suffix: String) -> RESPArgument {
        .string(prefix + family + suffix)
    }

    private var pendingKey: RESPArgument { .string(prefix + "pending") }
    private var sequenceKey: RESPArgument { .string(prefix + "seq") }

    // MARK: SubscriptionStore

    public func create(token: String, items: [UInt8], ttl: Duration) async throws(BusError) -> Bool {
        let reply = try await client.evaluate(
            SubscriptionStoreScripts.create,
            keys: [key("sub:", token), key("buf:", token), pendingKey],
            arguments: [.string(token), RESPArgument(items), .integer(Self.milliseconds(ttl))])
        return try Self.integer(reply) == 1
    }

    public func pending() async throws(BusError) -> [PendingSubscription] {
        let reply = try await client.evaluate(SubscriptionStoreScripts.pending, keys: [pendingKey], arguments: [.string(prefix)])
        let values = try Self.array(reply)
        guard values.count % 2 == 0 else { throw Self.unexpected(reply) }
        var result: [PendingSubscription] = []
        result.reserveCapacity(values.count / 2)
        for index in stride(from: 0, to: values.count, by: 2) {
            guard let token = values[index].string, let items = values[index + 1].bytes else { throw Self.unexpected(reply) }
            result.append(PendingSubscription(token: token, items: Array(items.readableBytesView)))
        }
        return result
    }

    public func append(
        _ entries: [(token: String, entries: [[UInt8]])], maxBuffered: Int
    ) async throws(BusError) -> AppendResult {
        var arguments: [RESPArgument] = [.string(prefix), .integer(maxBuffered)]
        for (token, list) in entries where !list.isEmpty {
            arguments.append(.string(token))
            arguments.append(.integer(list.count))
            arguments += list.map { RESPArgument($0) }
        }
        let reply = try await client.evaluate(SubscriptionStoreScripts.append, keys: [pendingKey, sequenceKey], arguments: arguments)
        let parts = try Self.array(reply)
        guard parts.count == 3, let sequence = parts[2].integer, sequence > 0 else { throw Self.unexpected(reply) }
        return AppendResult(
            buffered: Set(try Self.strings(parts[0])), overflowed: Set(try Self.strings(parts[1])), sequence: UInt64(sequence))
    }

    public func acquire(token: String, owner: ClientAddress) async throws(BusError) -> SubscriptionAcquisition {
        let reply = try await client.evaluate(
            SubscriptionStoreScripts.acquire,
            keys: [key("sub:", token), key("buf:", token), pendingKey, key("owned:", owner.nodeID), sequenceKey],
            arguments: [.string(token), .string(owner.description)])
        let parts = try Self.array(reply)
        switch parts.first?.integer {
        case 0: return .notFound
        case 1: return .alreadyAcquired
        case 2:
            guard parts.count == 4, let items = parts[1].bytes, let buffered = parts[2].array,
                let sequence = parts[3].integer, sequence >= 0
            else {
                throw Self.unexpected(reply)
            }
            var entries: [[UInt8]] = []
            entries.reserveCapacity(buffered.count)
            for entry in buffered {
                guard let bytes = entry.bytes else { throw Self.unexpected(reply) }
                entries.append(Array(bytes.readableBytesView))
            }
            return .acquired(items: Array(items.readableBytesView), buffered: entries, sequence: UInt64(sequence))
        default:
            throw Self.unexpected(reply)
        }
    }

    public func release(tokens: [String], owner: ClientAddress) async throws(BusError) -> [String] {
        guard !tokens.isEmpty else { return [] }
        let reply = try await client.evaluate(
            SubscriptionStoreScripts.release,
            keys: [key("owned:", owner.nodeID)],
            arguments: [.string(prefix), .string(owner.description)] + tokens.map { .string($0) })
        return try Self.strings(reply)
    }

    public func removeAll(ownedByNode nodeID: String) async throws(BusError) -> [String] {
        let reply = try await client.evaluate(
            SubscriptionStoreScripts.removeNode, keys: [key("owned:", nodeID)], arguments: [.string(prefix), .string(nodeID)])
        return try Self.strings(reply).sorted()
    }

    // MARK: Replies

    private static func milliseconds(_ duration: Duration) -> Int {
        let (seconds, attoseconds) = duration.components
        return max(1, Int(seconds) * 1000 + Int(attoseconds / 1_000_000_000_000_000))
    }

    private static func integer(_ reply: RESPValue) throws(BusError) -> Int64 {
        guard let value = reply.integer else { throw unexpected(reply) }
        return value
    }

    private static func array(_ reply: RESPValue) throws(BusError) -> [RESPValue] {
        guard let values = reply.array else { throw unexpected(reply) }
        return values
    }

    private static func strings(_ reply: RESPValue) throws(BusError) -> [String] {
        var result: [String] = []
        for value in try array(reply) {
            guard let string = value.string else { throw unexpected(reply) }
            result.append(string)
        }
        return result
    }

    /// A reply of the wrong shape is a bug (or a foreign script under our name); the
    /// caller can only report the store as unusable.
    private static func unexpected(_ reply: RESPValue) -> BusError {
        .unavailable("unexpected reply from a datasync script: \(reply)")
    }
}

/// The Lua scripts of `RedisSubscriptionStore`. `ARGV[1]` is the key prefix `D` where a
/// script builds keys itself.
enum SubscriptionStoreScripts {
    static var all: [RedisScript] { [create, pending, append, acquire, release, removeNode] }

    /// KEYS: sub, buf, pending. ARGV: token, items, ttl ms. Returns 1, or 0 if the token exists.
    static let create = RedisScript(
        #"""
        if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
        redis.call('DEL', KEYS[2])
        redis.call('HSET', KEYS[1], 'state', 'pending', 'items', ARGV[2])
        redis.call('PEXPIRE', KEYS[1], ARGV[3])
        redis.call('SADD', KEYS[3], ARGV[1])
        return 1
        """#)

    /// KEYS: pending. ARGV: D. Returns token, items, token, items, ... of the live pending
    /// tokens, and removes the others (expired) from the set.
    static let pending = RedisScript(
        #"""
        local out = {}
        for _, token in ipairs(redis.call('SMEMBERS', KEYS[1])) do
          local fields = redis.call('HMGET', ARGV[1] .. 'sub:' .. token, 'state', 'items')
          if fields[1] == 'pending' then
            out[#out + 1] = token
            out[#out + 1] = fields[2]
          else
            redis.call('SREM', KEYS[1], token)
          end
        end
        return out
        """#)

    /// KEYS: pending, seq. ARGV: D, max, then per token: token, n, n entries. Appends to the
    /// tokens still pending; a token that would pass max is deleted instead. Returns
    /// {buffered tokens, overflowed tokens, this append's sequence number}.
    static let append = RedisScript(
        #"""
        local sequence = redis.call('INCR', KEYS[2])
        local D = ARGV[1]
        local max = tonumber(ARGV[2])
        local buffered, overflowed = {}, {}
        local i = 3
        while i <= #ARGV do
          local token = ARGV[i]
          local n = tonumber(ARGV[i + 1])
          local sub, buf = D .. 'sub:' .. token, D .. 'buf:' .. token
          if redis.call('HGET', sub, 'state') == 'pending' then
            if redis.call('LLEN', buf) + n > max then
              redis.call('DEL', sub, buf)
              redis.call('SREM', KEYS[1], token)
              overflowed[#overflowed + 1] = token
            else
              for j = i + 2, i + 1 + n do redis.call('RPUSH', buf, ARGV[j]) end
              local ttl = redis.call('PTTL', sub)
              if ttl > 0 then redis.call('PEXPIRE', buf, ttl) end
              buffered[#buffered + 1] = token
            end
          end
          i = i + 2 + n
        end
        return {buffered, overflowed, sequence}
        """#)

    /// KEYS: sub, buf, pending, owned:<node>, seq. ARGV: token, owner. Returns {0} (no such
    /// token), {1} (already acquired) or {2, items, buffered entries, last append number}.
    static let acquire = RedisScript(
        #"""
        local state = redis.call('HGET', KEYS[1], 'state')
        if not state then return {0} end
        if state ~= 'pending' then return {1} end
        redis.call('HSET', KEYS[1], 'state', 'acquired', 'owner', ARGV[2])
        redis.call('PERSIST', KEYS[1])
        redis.call('SREM', KEYS[3], ARGV[1])
        redis.call('SADD', KEYS[4], ARGV[1])
        local items = redis.call('HGET', KEYS[1], 'items')
        local buffered = redis.call('LRANGE', KEYS[2], 0, -1)
        redis.call('DEL', KEYS[2])
        return {2, items, buffered, tonumber(redis.call('GET', KEYS[5]) or '0')}
        """#)

    /// KEYS: owned:<node>. ARGV: D, owner, tokens... Deletes the tokens the owner acquired;
    /// returns them.
    static let release = RedisScript(
        #"""
        local removed = {}
        for i = 3, #ARGV do
          local sub = ARGV[1] .. 'sub:' .. ARGV[i]
          local fields = redis.call('HMGET', sub, 'state', 'owner')
          if fields[1] == 'acquired' and fields[2] == ARGV[2] then
            redis.call('DEL', sub)
            redis.call('SREM', KEYS[1], ARGV[i])
            removed[#removed + 1] = ARGV[i]
          end
        end
        return removed
        """#)

    /// KEYS: owned:<node>. ARGV: D, node. Deletes every token acquired by a client of the
    /// node (owner `node/client`; node ids never contain '/'); returns them.
    static let removeNode = RedisScript(
        #"""
        local removed = {}
        local head = ARGV[2] .. '/'
        for _, token in ipairs(redis.call('SMEMBERS', KEYS[1])) do
          local sub = ARGV[1] .. 'sub:' .. token
          local fields = redis.call('HMGET', sub, 'state', 'owner')
          if fields[1] == 'acquired' and fields[2] and string.sub(fields[2], 1, #head) == head then
            redis.call('DEL', sub)
            removed[#removed + 1] = token
          end
        end
        redis.call('DEL', KEYS[1])
        return removed
        """#)
}
