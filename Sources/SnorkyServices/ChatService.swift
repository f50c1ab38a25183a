public import Snorky
import Synchronization

/// The `chat` service (PROTOCOL.md section 5): channels of identities, with presence.
///
/// An identity may be in a channel through several connections, on any workers of any
/// nodes. Who is in a channel lives in the cluster state (space = the service name, group =
/// the channel's canonical JSON, member = identity, one entry per connection), which decides
/// atomically whether a join is the identity's first connection and a leave its last.
/// What is said in a channel travels on one bus topic per channel, which every joined
/// connection subscribes to.
@RPCService
public final class ChatService: Sendable {
    public let name: String
    private let node: Node
    private let timestamp: @Sendable () -> String

    /// What one local connection joined, by channel key. The connection's commands run one at
    /// a time, so its entry is never changed by two tasks at once.
    private struct Joined {
        var channel: JSON
        /// The identity the connection joined as; it speaks and leaves as that identity even
        /// if it authenticates again later.
        var identity: String
    }

    /// Entries exist for connections that may own chat state (an entry is made before the
    /// first change to the state and dropped at disconnect), so a disconnect knows whether
    /// it has anything to clean up.
    private let connections = Mutex<[UInt64: [String: Joined]]>([:])

    /// - Parameter timestamp: the clock for notifications; by default the current UTC time
    ///   in ISO-8601 with milliseconds. Tests pass a fixed one.
    public init(name: String = "chat", node: Node, timestamp: (@Sendable () -> String)? = nil) {
        self.name = name
        self.node = node
        self.timestamp = timestamp ?? UTCTimestamp.now
    }

    /// The bus topic of a channel, from its key (`channel.canonicalString()`).
    public func topic(forKey key: String) -> String {
        "\(name):\(key)"
    }

    private func joined(_ client: Client, key: String) -> Joined? {
        connections.withLock { $0[client.id]?[key] }
    }

    private func presence(from identity: String, channel: JSON, status: String) -> JSON {
        ["type": "presence", "from": .string(identity), "channel": channel, "status": .string(status), "timestamp": .string(timestamp())]
    }

    @Command func join(channel: JSON, client: Client) async throws -> JSON {
        guard let identity = client.identity else { throw RPCError("Not authenticated") }
        let key = channel.canonicalString()
        guard joined(client, key: key) == nil else { throw RPCError("Already joined") }
        let topic = topic(forKey: key)
        let address = node.address(of: client)

        // Subscribe before becoming visible in the state. Another identity joining at the
        // same time, anywhere, then either is in our `members` or its `joined` reaches us
        // (possibly both), never neither.
        await node.subscribe(client, to: topic)
        connections.withLock { $0[client.id, default: [:]][key] = Joined(channel: channel, identity: identity) }
        let result: (isFirst: Bool, members: [String])
        do {
            result = try await ClusterCall.run(node, "join") { () async throws(BusError) in
                try await node.state.join(group: key, member: identity, connection: address, in: name)
            }
        } catch {
            forget(client, key: key, topic: topic)
            throw error
        }
        if result.isFirst {
            // Only the identity's first connection is news. The joiner itself is excluded:
            // it learns the members from the reply.
            do {
                try await ClusterCall.run(node, "broadcast") { () async throws(BusError) in
                    try await node.broadcast(
                        service: name, message: presence(from: identity, channel: channel, status: "joined"),
                        topic: topic, excluding: client)
                }
            } catch {
                // A failed call changes nothing: undo the join (best effort; if the state is
                // unreachable too, the disconnect removes the entry).
                forget(client, key: key, topic: topic)
                await ClusterCall.attempt(node, "leave") { () async throws(BusError) in
                    _ = try await node.state.leave(group: key, member: identity, connection: address, in: name)
                }
                throw error
            }
        }
        return ["members": .array(result.members.map { .string($0) })]
    }

    /// Drops the local record of a membership (the connection's entry stays, so a
    /// disconnect still cleans the state up).
    private func forget(_ client: Client, key: String, topic: String) {
        node.unsubscribe(client, from: topic)
        connections.withLock { _ = $0[client.id]?.removeValue(forKey: key) }
    }

    @Command func leave(channel: JSON, client: Client) async throws {
        let key = channel.canonicalString()
        guard let joined = joined(client, key: key) else { throw RPCError("Not joined") }
        let topic = topic(forKey: key)
        let address = node.address(of: client)
        // Unsubscribed first: the leaver hears nothing more from the channel, its own `left`
        // included.
        forget(client, key: key, topic: topic)
        let result = try await ClusterCall.run(node, "leave") { () async throws(BusError) in
            try await node.state.leave(group: key, member: joined.identity, connection: address, in: name)
        }
        if result.isLast {
            try await ClusterCall.run(node, "broadcast") { () async throws(BusError) in
                try await node.broadcast(
                    service: name, message: presence(from: joined.identity, channel: joined.channel, status: "left"),
                    topic: topic)
            }
        }
    }

    @Command func send(channel: JSON, body: JSON, client: Client) async throws {
        let key = channel.canonicalString()
        guard let joined = joined(client, key: key) else { throw RPCError("Not joined") }
        let message: JSON = [
            "type": "message", "from": .string(joined.identity), "channel": channel, "body": body,
            "timestamp": .string(timestamp()),
        ]
        // The sender is subscribed too: it gets its own message, before this call's reply.
        try await ClusterCall.run(node, "broadcast") { () async throws(BusError) in
            try await node.broadcast(service: name, message: message, topic: topic(forKey: key))
        }
    }

    @Command func read(channel: JSON, client: Client) async throws {
        let key = channel.canonicalString()
        guard let joined = joined(client, key: key) else { throw RPCError("Not joined") }
        let address = node.address(of: client)
        let peers = try await ClusterCall.run(node, "connections") { () async throws(BusError) in
            try await node.state.connections(of: joined.identity, group: key, in: name)
        }
        let notification: JSON = ["type": "read", "channel": channel, "timestamp": .string(timestamp())]
        for peer in peers where peer != address {
            try await ClusterCall.run(node, "send") { () async throws(BusError) in
                try await node.send(service: name, message: notification, to: peer)
            }
        }
    }

    public func clientDisconnected(_ client: Client) async {
        guard let joined = connections.withLock({ $0.removeValue(forKey: client.id) }) else { return }
        // The node has already dropped the client's topics, so it hears none of this.
        let reaped = await node.removeState(ownedBy: node.address(of: client), in: name)
        await announceDepartures(reaped.presence) { joined[$0]?.channel }
    }

    /// A worker or node died: its connections are gone from the state; tell the channels
    /// about the identities that had no other connection there.
    public func stateReaped(_ reaped: ReapedState) async {
        await announceDepartures(reaped.presence) { _ in nil }
    }

    /// Sends `left` for every removed connection that was its identity's last in the
    /// channel. `channel` gives the channel as the client spelled it when known; otherwise
    /// it is read back from the key (the canonical JSON, an equal value).
    private func announceDepartures(_ departures: [ReapedState.Presence], channel: (String) -> JSON?) async {
        for entry in departures where entry.space == name && entry.isLast {
            guard let channel = channel(entry.group) ?? (try? JSON.parse(entry.group)) else {
                node.logger.warning("chat: unreadable channel key in the state", metadata: ["key": "\(entry.group)"])
                continue
            }
            let notification = presence(from: entry.member, channel: channel, status: "left")
            await ClusterCall.attempt(node, "broadcast") { () async throws(BusError) in
                try await node.broadcast(service: name, message: notification, topic: topic(forKey: entry.group))
            }
        }
    }
}
