public import Snorky
import Synchronization

/// The `cursors` service (PROTOCOL.md section 5): each connection shows its cursors in a
/// shared document to the document's other connections.
///
/// Cursors live in the cluster state as records (space = the service name, group = the
/// document's canonical JSON, id = the public handle, value = the cursor's JSON, owner = the
/// connection), so `join` lists the cursors of every worker and node, and the survivors can
/// announce the cursors of a worker that died. Public handles come from the document's
/// sequence in the state: unique within the document cluster-wide, never reused (**Fixed**;
/// the original drew random 16-bit numbers per connection, which could collide). Changes
/// travel on one bus topic per document.
@RPCService
public final class CursorsService: Sendable {
    public let name: String
    private let node: Node

    /// Cursors one connection may own, over all its documents.
    public static let maxCursorsPerConnection = 16

    private struct Cursor: Equatable {
        var publicHandle: Int64
        var documentKey: String
        var document: JSON
        var position: JSON
        var status: JSON
        var owner: String

        var json: JSON {
            ["publicHandle": .int(publicHandle), "document": document, "position": position, "status": status,
             "owner": .string(owner)]
        }
    }

    private struct Joined {
        var document: JSON
        /// The identity the connection joined as: the owner shown on its cursors there.
        var identity: String
    }

    /// One local connection's documents and cursors (by private handle). Its commands run
    /// one at a time, so an entry is never changed by two tasks at once. An entry exists
    /// from the first join to the disconnect, which then removes whatever the connection may
    /// own in the state.
    private struct Connection {
        var documents: [String: Joined] = [:]
        var cursors: [JSON: Cursor] = [:]
    }

    private let connections = Mutex<[UInt64: Connection]>([:])

    public init(name: String = "cursors", node: Node) {
        self.name = name
        self.node = node
    }

    /// The bus topic of a document, from its key (`document.canonicalString()`).
    public func topic(forKey key: String) -> String {
        "\(name):\(key)"
    }

    private func connection(of client: Client) -> Connection {
        connections.withLock { $0[client.id] ?? Connection() }
    }

    private func update(_ client: Client, _ body: (inout Connection) -> Void) {
        connections.withLock { connections in
            var connection = connections[client.id] ?? Connection()
            body(&connection)
            connections[client.id] = connection
        }
    }

    @Command func join(document: JSON, client: Client) async throws -> JSON {
        guard let identity = client.identity else { throw RPCError("Not authenticated") }
        let key = document.canonicalString()
        guard connection(of: client).documents[key] == nil else { throw RPCError("Already joined") }
        let topic = topic(forKey: key)
        // Subscribe before reading the records: a cursor created meanwhile anywhere is then
        // in the list or announced to us (possibly both), never missed.
        await node.subscribe(client, to: topic)
        update(client) { $0.documents[key] = Joined(document: document, identity: identity) }
        let records: [ClusterRecord]
        do {
            records = try await ClusterCall.run(node, "records") { () async throws(BusError) in
                try await node.state.records(group: key, in: name)
            }
        } catch {
            node.unsubscribe(client, from: topic)
            update(client) { $0.documents[key] = nil }
            throw error
        }
        var cursors: [(handle: Int64, json: JSON)] = []
        for record in records {
            guard let json = try? JSON.parse(record.value) else {
                node.logger.warning("cursors: unreadable record in the state", metadata: ["id": "\(record.id)"])
                continue
            }
            cursors.append((json["publicHandle"]?.int64Value ?? Int64(record.id) ?? 0, json))
        }
        // In creation order, whatever order the state keeps ids in ("10" < "9" as text).
        cursors.sort { $0.handle < $1.handle }
        return ["cursors": .array(cursors.map(\.json))]
    }

    @Command func leave(document: JSON, client: Client) async throws {
        let key = document.canonicalString()
        let connection = connection(of: client)
        guard connection.documents[key] != nil else { throw RPCError("Not joined") }
        let owned = connection.cursors.filter { $0.value.documentKey == key }.sorted { $0.value.publicHandle < $1.value.publicHandle }
        // Each cursor is forgotten only once announced, so a leave that fails half-way can
        // be retried and finishes the job.
        for (privateHandle, cursor) in owned {
            try await remove(cursor, privateHandle: privateHandle, client: client)
        }
        node.unsubscribe(client, from: topic(forKey: key))
        update(client) { $0.documents[key] = nil }
    }

    @Command func createCursor(
        privateHandle: JSON, document: JSON, position: JSON, status: JSON, client: Client
    ) async throws -> Int64 {
        let key = document.canonicalString()
        let connection = connection(of: client)
        guard let joined = connection.documents[key] else { throw RPCError("Not joined") }
        guard connection.cursors[privateHandle] == nil else { throw RPCError("Reused handle") }
        guard connection.cursors.count < Self.maxCursorsPerConnection else { throw RPCError("Too many cursors") }
        let address = node.address(of: client)

        let publicHandle = try await ClusterCall.run(node, "nextSequence") { () async throws(BusError) in
            try await node.state.nextSequence(group: key, in: name)
        }
        let cursor = Cursor(
            publicHandle: publicHandle, documentKey: key, document: document, position: position, status: status,
            owner: joined.identity)
        try await ClusterCall.run(node, "putRecord") { () async throws(BusError) in
            try await node.state.putRecord(
                cursor.json.encodedBytes(), id: String(publicHandle), group: key, owner: address, in: name)
        }
        do {
            try await ClusterCall.run(node, "broadcast") { () async throws(BusError) in
                try await node.broadcast(
                    service: name, message: ["type": "cursorAdded", "cursor": cursor.json], topic: topic(forKey: key),
                    excluding: client)
            }
        } catch {
            // A failed call changes nothing: take the record back (best effort; if the state
            // is unreachable too, the disconnect removes it).
            await ClusterCall.attempt(node, "removeRecord") { () async throws(BusError) in
                _ = try await node.state.removeRecord(id: String(publicHandle), group: key, in: name)
            }
            throw error
        }
        update(client) { $0.cursors[privateHandle] = cursor }
        return publicHandle
    }

    @Command func updateCursor(privateHandle: JSON, newData: JSONObject, client: Client) async throws {
        guard let cursor = connection(of: client).cursors[privateHandle] else { throw RPCError("No such cursor") }
        // Only the position and the status are the client's to change.
        var updated = cursor
        if let position = newData["position"] { updated.position = position }
        if let status = newData["status"] { updated.status = status }
        // **Fixed**: the original announced every update, even one that changed nothing.
        guard updated != cursor else { return }
        let address = node.address(of: client)
        try await ClusterCall.run(node, "putRecord") { () async throws(BusError) in
            try await node.state.putRecord(
                updated.json.encodedBytes(), id: String(updated.publicHandle), group: updated.documentKey,
                owner: address, in: name)
        }
        try await ClusterCall.run(node, "broadcast") { () async throws(BusError) in
            try await node.broadcast(
                service: name, message: ["type": "cursorUpdated", "cursor": updated.json],
                topic: topic(forKey: updated.documentKey), excluding: client)
        }
        // Kept local only once announced: if the announcement failed, the same update is not
        // taken for a no-op when retried.
        update(client) { $0.cursors[privateHandle] = updated }
    }

    @Command func removeCursor(privateHandle: JSON, client: Client) async throws {
        guard let cursor = connection(of: client).cursors[privateHandle] else { throw RPCError("No such cursor") }
        try await remove(cursor, privateHandle: privateHandle, client: client)
    }

    /// Removes one of the caller's cursors from the state, announces it to the document's
    /// other connections, then forgets it (so a failed announcement can be retried).
    private func remove(_ cursor: Cursor, privateHandle: JSON, client: Client) async throws(RPCError) {
        _ = try await ClusterCall.run(node, "removeRecord") { () async throws(BusError) in
            try await node.state.removeRecord(id: String(cursor.publicHandle), group: cursor.documentKey, in: name)
        }
        try await ClusterCall.run(node, "broadcast") { () async throws(BusError) in
            try await node.broadcast(
                service: name, message: removal(publicHandle: cursor.publicHandle, document: cursor.document),
                topic: topic(forKey: cursor.documentKey), excluding: client)
        }
        update(client) { $0.cursors[privateHandle] = nil }
    }

    private func removal(publicHandle: Int64, document: JSON) -> JSON {
        ["type": "cursorRemoved", "cursor": ["publicHandle": .int(publicHandle), "document": document]]
    }

    public func clientDisconnected(_ client: Client) async {
        guard connections.withLock({ $0.removeValue(forKey: client.id) }) != nil else { return }
        // The state, not the local entry, lists what to remove: it also holds a record whose
        // creation failed half-way. The node has already dropped the client's topics.
        let reaped = await node.removeState(ownedBy: node.address(of: client), in: name)
        await announceRemovals(reaped.records)
    }

    /// A worker or node died: its cursors are gone from the state; tell their documents.
    public func stateReaped(_ reaped: ReapedState) async {
        await announceRemovals(reaped.records)
    }

    private func announceRemovals(_ records: [ReapedState.Record]) async {
        for entry in records where entry.space == name {
            // The record holds the document as its creator spelled it; the key (canonical
            // JSON, an equal value) is the fallback.
            let stored = try? JSON.parse(entry.record.value)
            guard
                let publicHandle = stored?["publicHandle"]?.int64Value ?? Int64(entry.record.id),
                let document = stored?["document"] ?? (try? JSON.parse(entry.group))
            else {
                node.logger.warning("cursors: unreadable record in the state", metadata: ["id": "\(entry.record.id)"])
                continue
            }
            let notification = removal(publicHandle: publicHandle, document: document)
            await ClusterCall.attempt(node, "broadcast") { () async throws(BusError) in
                try await node.broadcast(service: name, message: notification, topic: topic(forKey: entry.group))
            }
        }
    }
}
