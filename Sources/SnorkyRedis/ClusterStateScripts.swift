/// The Lua scripts behind `RedisClusterState`: every mutation is one script, so it is
/// atomic in Redis however many workers and nodes call it at once.
///
/// Key layout (`P` is the key prefix; `L(x)` is a component of user text written as
/// `<byte length>:<bytes>`, which is self-delimiting, so no space, group, member, name or
/// id can make two keys or index entries collide, whatever bytes it holds):
///
/// | key                                   | type   | content                                      |
/// |---------------------------------------|--------|----------------------------------------------|
/// | `P:names:L(space)`                    | hash   | name → owner `node/client`                   |
/// | `P:members:L(space)L(group)`          | set    | members with at least one connection         |
/// | `P:conns:L(space)L(group)L(member)`   | zset   | connection `node/client`, score = join order |
/// | `P:records:L(space)L(group)`          | hash   | id → value bytes                             |
/// | `P:recowners:L(space)L(group)`        | hash   | id → owner `node/client`                     |
/// | `P:seq:L(space)L(group)`              | string | the group's sequence (INCR)                  |
/// | `P:owned:L(node)L(client)L(space)`    | set    | what one client owns in one space (entries)  |
/// | `P:clients:L(node)`                   | set    | `client:space` of every non-empty owned set  |
/// | `P:alive:L(node)`                     | string | heartbeat, expires after the TTL             |
/// | `P:nodes`                             | set    | node ids that heartbeated and were not reaped|
///
/// Owned-set entries: `n L(name)`, `p L(group) L(member)`, `r L(group) L(id)` (no spaces).
/// The owned sets are the index that makes `removeAll(ownedBy:in:)` proportional to what
/// that client owns, and reaping a node proportional to what its clients own.
///
/// Every script takes the prefix as `ARGV[1]` and builds its keys itself from the user
/// text in `ARGV`: reaping must reach keys it only learns from the index, so the scripts
/// assume a single Redis (not Redis Cluster, where keys must be declared in `KEYS`).
enum ClusterStateScripts {
    /// Shared by every script: key builders, the owned index, and the removal primitives.
    private static let prelude = #"""
        local P = ARGV[1]

        local function L(s) return #s .. ':' .. s end

        -- Reads the L-encoded component of s starting at pos; returns it and the next position.
        local function readL(s, pos)
          local colon = string.find(s, ':', pos, true)
          local n = tonumber(string.sub(s, pos, colon - 1))
          return string.sub(s, colon + 1, colon + n), colon + n + 1
        end

        local function namesKey(space) return P .. ':names:' .. L(space) end
        local function membersKey(space, group) return P .. ':members:' .. L(space) .. L(group) end
        local function connsKey(space, group, member) return P .. ':conns:' .. L(space) .. L(group) .. L(member) end
        local function recordsKey(space, group) return P .. ':records:' .. L(space) .. L(group) end
        local function ownersKey(space, group) return P .. ':recowners:' .. L(space) .. L(group) end
        local function ownedKey(node, client, space) return P .. ':owned:' .. L(node) .. L(client) .. L(space) end
        local function clientsKey(node) return P .. ':clients:' .. L(node) end
        local function aliveKey(node) return P .. ':alive:' .. L(node) end
        local nodesKey = P .. ':nodes'

        -- 'node/client' -> node, client. Node ids never contain '/'; the client id is decimal
        -- and stays a string (Lua numbers lose precision above 2^53).
        local function splitOwner(owner) return string.match(owner, '^(.*)/(%d+)$') end

        local function indexAdd(node, client, space, entry)
          redis.call('SADD', ownedKey(node, client, space), entry)
          redis.call('SADD', clientsKey(node), client .. ':' .. space)
        end

        local function indexRemove(node, client, space, entry)
          local key = ownedKey(node, client, space)
          redis.call('SREM', key, entry)
          if redis.call('SCARD', key) == 0 then
            redis.call('SREM', clientsKey(node), client .. ':' .. space)
          end
        end

        local function indexRemoveOwner(owner, space, entry)
          local node, client = splitOwner(owner)
          if node then indexRemove(node, client, space, entry) end
        end

        -- Removes one connection of a member. nil: it was not there; else 1 when it was the
        -- member's last connection in the group, 0 otherwise. Leaves the index alone.
        local function leaveOne(space, group, member, node, client)
          local conns = connsKey(space, group, member)
          if redis.call('ZREM', conns, node .. '/' .. client) == 0 then return nil end
          if redis.call('EXISTS', conns) == 0 then
            redis.call('SREM', membersKey(space, group), member)
            return 1
          end
          return 0
        end

        -- Removes everything node/client owns in space, appending one array per removed entry
        -- to out: {'n', space, name, node, client}, {'p', space, group, member, node, client,
        -- isLast}, {'r', space, group, id, value, node, client}. An index entry whose target
        -- no longer belongs to this owner is dropped without being reported.
        local function removeOwned(node, client, space, out)
          local owner = node .. '/' .. client
          local key = ownedKey(node, client, space)
          for _, entry in ipairs(redis.call('SMEMBERS', key)) do
            local kind = string.sub(entry, 1, 1)
            if kind == 'n' then
              local name = readL(entry, 2)
              local names = namesKey(space)
              if redis.call('HGET', names, name) == owner then
                redis.call('HDEL', names, name)
                out[#out + 1] = {'n', space, name, node, client}
              end
            elseif kind == 'p' then
              local group, pos = readL(entry, 2)
              local member = readL(entry, pos)
              local isLast = leaveOne(space, group, member, node, client)
              if isLast then out[#out + 1] = {'p', space, group, member, node, client, isLast} end
            elseif kind == 'r' then
              local group, pos = readL(entry, 2)
              local id = readL(entry, pos)
              local owners = ownersKey(space, group)
              if redis.call('HGET', owners, id) == owner then
                local records = recordsKey(space, group)
                local value = redis.call('HGET', records, id) or ''
                redis.call('HDEL', owners, id)
                redis.call('HDEL', records, id)
                out[#out + 1] = {'r', space, group, id, value, node, client}
              end
            end
          end
          redis.call('DEL', key)
          redis.call('SREM', clientsKey(node), client .. ':' .. space)
        end

        """#

    private static func script(_ body: String) -> RedisScript {
        RedisScript(prelude + body)
    }

    /// ARGV: prefix, space, name, node, client. Returns the current owner, or nil when claimed.
    static let claimName = script(
        #"""
        local space, name, node, client = ARGV[2], ARGV[3], ARGV[4], ARGV[5]
        local names = namesKey(space)
        local current = redis.call('HGET', names, name)
        if current then return current end
        redis.call('HSET', names, name, node .. '/' .. client)
        indexAdd(node, client, space, 'n' .. L(name))
        return false
        """#)

    /// ARGV: prefix, space, name, node, client. Returns 0 released, 1 not found, 2 owned by other.
    static let releaseName = script(
        #"""
        local space, name, node, client = ARGV[2], ARGV[3], ARGV[4], ARGV[5]
        local names = namesKey(space)
        local current = redis.call('HGET', names, name)
        if not current then return 1 end
        if current ~= node .. '/' .. client then return 2 end
        redis.call('HDEL', names, name)
        indexRemove(node, client, space, 'n' .. L(name))
        return 0
        """#)

    /// ARGV: prefix, space, group, member, node, client. Returns {isFirst (0/1), members}.
    /// A new connection is scored one above the member's latest, so ZRANGE is join order.
    static let join = script(
        #"""
        local space, group, member, node, client = ARGV[2], ARGV[3], ARGV[4], ARGV[5], ARGV[6]
        local conns = connsKey(space, group, member)
        local members = membersKey(space, group)
        local connection = node .. '/' .. client
        local isFirst = 0
        if not redis.call('ZSCORE', conns, connection) then
          local latest = redis.call('ZRANGE', conns, -1, -1, 'WITHSCORES')
          local score = 1
          if #latest == 2 then score = tonumber(latest[2]) + 1 else isFirst = 1 end
          redis.call('ZADD', conns, score, connection)
          redis.call('SADD', members, member)
          indexAdd(node, client, space, 'p' .. L(group) .. L(member))
        end
        return {isFirst, redis.call('SMEMBERS', members)}
        """#)

    /// ARGV: prefix, space, group, member, node, client. Returns {wasPresent, isLast} (0/1).
    static let leave = script(
        #"""
        local space, group, member, node, client = ARGV[2], ARGV[3], ARGV[4], ARGV[5], ARGV[6]
        local isLast = leaveOne(space, group, member, node, client)
        if not isLast then return {0, 0} end
        indexRemove(node, client, space, 'p' .. L(group) .. L(member))
        return {1, isLast}
        """#)

    /// ARGV: prefix, space, group, id, value, node, client. A replaced record moves from its
    /// previous owner's index to the new owner's.
    static let putRecord = script(
        #"""
        local space, group, id, value, node, client = ARGV[2], ARGV[3], ARGV[4], ARGV[5], ARGV[6], ARGV[7]
        local owner = node .. '/' .. client
        local owners = ownersKey(space, group)
        local entry = 'r' .. L(group) .. L(id)
        local previous = redis.call('HGET', owners, id)
        if previous and previous ~= owner then indexRemoveOwner(previous, space, entry) end
        redis.call('HSET', recordsKey(space, group), id, value)
        redis.call('HSET', owners, id, owner)
        indexAdd(node, client, space, entry)
        return 1
        """#)

    /// ARGV: prefix, space, group, id. Returns 1 removed, 0 not there.
    static let removeRecord = script(
        #"""
        local space, group, id = ARGV[2], ARGV[3], ARGV[4]
        local owners = ownersKey(space, group)
        local previous = redis.call('HGET', owners, id)
        if not previous then return 0 end
        redis.call('HDEL', owners, id)
        redis.call('HDEL', recordsKey(space, group), id)
        indexRemoveOwner(previous, space, 'r' .. L(group) .. L(id))
        return 1
        """#)

    /// ARGV: prefix, space, group. Returns {{id, value, owner}, ...}: read in one script so
    /// values and owners are consistent with each other.
    static let records = script(
        #"""
        local space, group = ARGV[2], ARGV[3]
        local owners = ownersKey(space, group)
        local all = redis.call('HGETALL', recordsKey(space, group))
        local out = {}
        for i = 1, #all, 2 do
          out[#out + 1] = {all[i], all[i + 1], redis.call('HGET', owners, all[i]) or ''}
        end
        return out
        """#)

    /// ARGV: prefix, node, ttl in milliseconds.
    static let heartbeat = script(
        #"""
        local node = ARGV[2]
        redis.call('SET', aliveKey(node), '1', 'PX', ARGV[3])
        redis.call('SADD', nodesKey, node)
        return 1
        """#)

    /// ARGV: prefix, survivor. Read-only: the known nodes, other than the survivor, whose
    /// heartbeat expired. Each is then reaped (and re-checked) by `reapNode`.
    static let deadNodes = script(
        #"""
        local survivor = ARGV[2]
        local dead = {}
        for _, node in ipairs(redis.call('SMEMBERS', nodesKey)) do
          if node ~= survivor and redis.call('EXISTS', aliveKey(node)) == 0 then dead[#dead + 1] = node end
        end
        return dead
        """#)

    /// ARGV: prefix, node. Removes everything the node's clients own and returns it (as
    /// `removeOwned` reports it), or nil when the node is alive again or another reaper got
    /// it first: the check and the removal are one atomic step, so each entry is reaped once.
    static let reapNode = script(
        #"""
        local node = ARGV[2]
        if redis.call('EXISTS', aliveKey(node)) == 1 then return false end
        if redis.call('SREM', nodesKey, node) == 0 then return false end
        local out = {}
        local clients = clientsKey(node)
        for _, pair in ipairs(redis.call('SMEMBERS', clients)) do
          local colon = string.find(pair, ':', 1, true)
          removeOwned(node, string.sub(pair, 1, colon - 1), string.sub(pair, colon + 1), out)
        end
        redis.call('DEL', clients)
        return out
        """#)

    /// ARGV: prefix, node, client, space. Removes and returns what one client owns in one space.
    static let removeAll = script(
        #"""
        local out = {}
        removeOwned(ARGV[2], ARGV[3], ARGV[4], out)
        return out
        """#)

    static let all: [RedisScript] = [
        claimName, releaseName, join, leave, putRecord, removeRecord, records, heartbeat, deadNodes, reapNode, removeAll,
    ]
}

/// The keys of `ClusterStateScripts`' layout that Swift reads directly (single commands,
/// no script needed). Must build exactly what the Lua key functions build.
struct ClusterStateKeys: Sendable {
    let prefix: String

    /// `<byte length>:<bytes>`, as the scripts' `L`.
    static func component(_ text: String) -> String {
        "\(text.utf8.count):\(text)"
    }

    func names(space: String) -> String {
        prefix + ":names:" + Self.component(space)
    }

    func members(space: String, group: String) -> String {
        prefix + ":members:" + Self.component(space) + Self.component(group)
    }

    func connections(space: String, group: String, member: String) -> String {
        prefix + ":conns:" + Self.component(space) + Self.component(group) + Self.component(member)
    }

    func sequence(space: String, group: String) -> String {
        prefix + ":seq:" + Self.component(space) + Self.component(group)
    }

    func alive(node: String) -> String {
        prefix + ":alive:" + Self.component(node)
    }

    var nodes: String { prefix + ":nodes" }
}
