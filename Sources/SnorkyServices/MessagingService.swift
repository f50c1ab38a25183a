public import Snorky
import Synchronization

/// Which participant names a connection may register, on top of the built-in rule
/// (`MessagingService.isAcceptableName`).
public struct MessagingPolicy: Sendable {
    /// Optional per-call hook: return false to refuse `name` for `client` with
    /// `Name not allowed` (e.g. names that must match the connection's identity).
    public var isNameAllowed: (@Sendable (_ client: Client, _ name: String) async -> Bool)?

    public init(isNameAllowed: (@Sendable (_ client: Client, _ name: String) async -> Bool)? = nil) {
        self.isNameAllowed = isNameAllowed
    }
}

/// The `messaging` service (PROTOCOL.md section 5): connections register participant
/// names and send messages to a name, wherever in the cluster its owner is connected.
///
/// Names live in the cluster state (space = the service name), claimed atomically, so two
/// connections on different workers can never both get one. Names are strings: a
/// non-string `name`, `sender` or `dest` is simply a name nobody can hold, so it fails with
/// the command's own error (`Name not allowed`, `Unknown participant`, `Invalid sender`,
/// `Unknown destination`) rather than `Invalid params`.
@RPCService
public final class MessagingService: Sendable {
    public let name: String
    private let node: Node
    private let policy: MessagingPolicy

    /// The local connections that have claimed a name. The cluster state decides who owns
    /// what; this only tells a disconnect whether there is anything to free, so closing a
    /// connection that never registered costs no round trip to the state.
    private let claimants = Mutex<Set<UInt64>>([])

    /// Longest accepted name, in UTF-8 bytes.
    public static let maxNameLength = 256

    public init(name: String = "messaging", node: Node, policy: MessagingPolicy = MessagingPolicy()) {
        self.name = name
        self.node = node
        self.policy = policy
    }

    /// The built-in naming rule. A name must be:
    /// - non-empty: an empty name cannot be shown or addressed sensibly;
    /// - at most `maxNameLength` UTF-8 bytes: names are kept cluster-wide, so their size is
    ///   bounded like any other client input;
    /// - free of control characters (Unicode category Cc: C0, DEL, C1): they render as
    ///   nothing or reshape the text around them, letting one name pass for another in a UI
    ///   or a log line.
    public static func isAcceptableName(_ name: String) -> Bool {
        guard !name.isEmpty, name.utf8.count <= maxNameLength else { return false }
        return !name.unicodeScalars.contains { $0.properties.generalCategory == .control }
    }

    @Command func registerParticipant(name participant: JSON, client: Client) async throws {
        guard case .string(let participant) = participant, Self.isAcceptableName(participant) else {
            throw RPCError("Name not allowed")
        }
        if let isNameAllowed = policy.isNameAllowed, await !isNameAllowed(client, participant) {
            throw RPCError("Name not allowed")
        }
        let address = node.address(of: client)
        // Noted before the claim: if the claim lands but its reply is lost, the disconnect
        // still knows to free whatever this connection may hold.
        claimants.withLock { _ = $0.insert(client.id) }
        let owner = try await ClusterCall.run(node, "claimName") { () async throws(BusError) in
            try await node.state.claimName(participant, in: name, for: address)
        }
        if owner != nil {
            // Including this connection's own earlier claim, as the original did.
            throw RPCError("Name already registered")
        }
    }

    @Command func unregisterParticipant(name participant: JSON, client: Client) async throws {
        guard case .string(let participant) = participant else { throw RPCError("Unknown participant") }
        let address = node.address(of: client)
        let release = try await ClusterCall.run(node, "releaseName") { () async throws(BusError) in
            try await node.state.releaseName(participant, in: name, by: address)
        }
        switch release {
        case .released: break
        case .notFound: throw RPCError("Unknown participant")
        case .ownedByOther: throw RPCError("Invalid participant")
        }
    }

    @Command func listParticipants() async throws -> [String] {
        try await ClusterCall.run(node, "names") { () async throws(BusError) in
            try await node.state.names(in: name)
        }
    }

    @Command func send(sender: JSON, dest: JSON, body: JSON, client: Client) async throws {
        let address = node.address(of: client)
        guard case .string(let senderName) = sender else { throw RPCError("Invalid sender") }
        // The state, not a local list, says who holds the name: it may have been reaped.
        let senderOwner = try await ClusterCall.run(node, "nameOwner") { () async throws(BusError) in
            try await node.state.nameOwner(senderName, in: name)
        }
        guard senderOwner == address else { throw RPCError("Invalid sender") }
        guard case .string(let destName) = dest else { throw RPCError("Unknown destination") }
        let destOwner = try await ClusterCall.run(node, "nameOwner") { () async throws(BusError) in
            try await node.state.nameOwner(destName, in: name)
        }
        guard let destOwner else { throw RPCError("Unknown destination") }
        // If the owner lets the name go between the lookup and the delivery, the message
        // still reaches the connection that held it when it was sent, like a message in
        // flight; a connection that is gone drops it silently.
        let message: JSON = ["type": "message", "sender": sender, "dest": dest, "body": body]
        try await ClusterCall.run(node, "send") { () async throws(BusError) in
            try await node.send(service: name, message: message, to: destOwner)
        }
    }

    public func clientDisconnected(_ client: Client) async {
        guard claimants.withLock({ $0.remove(client.id) }) != nil else { return }
        _ = await node.removeState(ownedBy: node.address(of: client), in: name)
    }
}
