public import Snorky
import Synchronization

/// `datasync` (PROTOCOL.md section 5): browsers acquire the subscriptions the application
/// authorized through `datasync_backend`, and receive the deltas their items match.
///
/// Cluster design. Tokens, pending buffers and owners live in the shared
/// `SubscriptionStore`; delivery to acquired subscriptions goes over the bus. Publishing a
/// batch (on any node) validates it whole, appends what each pending token matches to that
/// token's buffer, then broadcasts the batch once on the topic `<name>:deltas`. Every node
/// that has acquired a subscription listens on that topic and evaluates the batch against
/// its own subscriptions only, so a delta costs one bus message however many nodes and
/// subscribers there are. An acquire registers locally (holding batches) before the
/// store's atomic acquire, and the store numbers every append: a batch appended before
/// the acquire reaches the subscription only through its buffer (or not at all, if it
/// came before the subscription existed), a later one only through the bus, so each delta
/// arrives once however the bus and the acquire interleave.
@RPCService
public final class DataSyncService: Sendable {
    public let name: String
    public let dealers: DealerRegistry
    public let store: any SubscriptionStore
    private let node: Node
    private let subscriptionTTL: Duration
    private let maxBufferedDeltas: Int
    private let local: DataSyncLocalSubscriptions
    private let listener: TopicListener
    /// Compiled items of the pending tokens seen by the last publish: items never change,
    /// so each token is parsed once, not on every publish.
    private let pendingItems = Mutex<[String: [CompiledItem]]>([:])

    public static let failureTokenMustBeString = "token must be string"
    public static let failureNoSuchSubscription = "No such subscription"
    public static let failureAlreadyAcquired = "Subscription already acquired"

    public init(name: String = "datasync", node: Node, options: DataSyncOptions = DataSyncOptions()) {
        self.name = name
        self.node = node
        self.dealers = options.dealers
        self.store = options.store ?? InMemorySubscriptionStore()
        self.subscriptionTTL = options.subscriptionTTL
        self.maxBufferedDeltas = max(1, options.maxBufferedDeltas)
        let local = DataSyncLocalSubscriptions(service: name)
        self.local = local
        let logger = node.logger
        self.listener = TopicListener(node: node, topic: "\(name):deltas") { payload in
            guard let batch = (try? JSON.parse(payload)).flatMap(DeltaBatch.init(json:)) else {
                logger.warning("dropping a malformed datasync batch")
                return
            }
            local.receive(batch)
        }
    }

    /// The bus topic delta batches travel on.
    public var topic: String { listener.topic }

    /// Acquired subscriptions delivered by this node (for tests and stats).
    public var localSubscriptionCount: Int { local.count }

    // MARK: Frontend commands

    @Command func acquireSubscription(token: JSON, client: Client) async throws {
        guard case .string(let token) = token else { throw RPCError(Self.failureTokenMustBeString) }
        // Only this service mints tokens: anything else cannot exist, so spare the store.
        guard Self.isWellFormedToken(token) else { throw RPCError(Self.failureNoSuchSubscription) }
        // Listening first: a batch published after the atomic acquire must reach this node.
        await listener.start(on: client.transport.eventLoop)
        let acquisition = local.beginAcquisition()
        let result: SubscriptionAcquisition
        do {
            result = try await store.acquire(token: token, owner: node.address(of: client))
        } catch {
            local.abandon(acquisition)
            throw failure(error, doing: "acquire")
        }
        switch result {
        case .notFound:
            local.abandon(acquisition)
            throw RPCError(Self.failureNoSuchSubscription)
        case .alreadyAcquired:
            local.abandon(acquisition)
            throw RPCError(Self.failureAlreadyAcquired)
        case .acquired(let items, let buffered, let acquiredAt):
            let entries = buffered.compactMap { bytes in (try? JSON.parse(bytes)).flatMap { try? DataSyncDelta(validating: $0) } }
            if entries.count != buffered.count {
                // No token in the log: it is a bearer credential.
                node.logger.warning("dropped malformed buffered deltas", metadata: ["count": "\(buffered.count - entries.count)"])
            }
            local.activate(acquisition, token: token, client: client, items: compile(items), buffered: entries, acquiredAt: acquiredAt)
        }
    }

    @Command func cancelSubscription(token: JSON, client: Client) async throws {
        guard case .string(let token) = token else { throw RPCError(Self.failureTokenMustBeString) }
        guard local.remove(token, client: client) else { throw RPCError(Self.failureNoSuchSubscription) }
        // Delivery has stopped, which is what the caller asked for; a store that cannot be
        // reached only leaves an owned entry behind, removed when this node is reaped.
        await release([token], of: client)
    }

    public func clientDisconnected(_ client: Client) async {
        let tokens = local.removeAll(of: client)
        if !tokens.isEmpty { await release(tokens, of: client) }
    }

    /// A dead node's clients can no longer receive anything: drop what they acquired.
    public func stateReaped(_ reaped: ReapedState) async {
        for nodeID in reaped.nodes {
            do {
                let tokens = try await store.removeAll(ownedByNode: nodeID)
                if !tokens.isEmpty {
                    node.logger.notice(
                        "dropped the datasync subscriptions of a dead node",
                        metadata: ["node": "\(nodeID)", "subscriptions": "\(tokens.count)"])
                }
            } catch {
                node.logger.warning("could not drop a dead node's subscriptions", metadata: ["error": "\(error)"])
            }
        }
    }

    private func release(_ tokens: [String], of client: Client) async {
        do {
            _ = try await store.release(tokens: tokens, owner: node.address(of: client))
        } catch {
            node.logger.warning("could not release datasync subscriptions", metadata: ["error": "\(error)"])
        }
    }

    // MARK: Backend operations

    /// Validates the items and creates a pending subscription; returns its token. Nothing is
    /// created when an item is refused.
    public func authorize(items: [JSON]) async throws(RPCError) -> String {
        var normalized: [JSON] = []
        normalized.reserveCapacity(items.count)
        for item in items {
            guard case .object(let object) = item else { throw .invalidParams }
            guard let dealerValue = object["dealer"] else { throw RPCError("Missing field 'dealer'") }
            guard let query = object["query"] else { throw RPCError("Missing field 'query'") }
            guard case .string(let dealerName) = dealerValue else { throw RPCError("dealer should be a dealer name") }
            guard let dealer = dealers[dealerName] else { throw RPCError("No such dealer") }
            guard dealer.matcher(for: query) != nil else { throw RPCError("Invalid query") }
            normalized.append(["dealer": .string(dealerName), "query": query])
        }
        let encoded = JSON.array(normalized).encodedBytes()
        // 36^32 tokens: a collision is practically impossible, but never overwrite one.
        for _ in 0..<3 {
            let token = Self.randomToken(length: 32)
            do {
                if try await store.create(token: token, items: encoded, ttl: subscriptionTTL) { return token }
            } catch {
                throw failure(error, doing: "authorize")
            }
        }
        throw .internalError
    }

    /// Validates every delta of the batch, then delivers the batch; a refused delta
    /// delivers nothing.
    public func publish(validating deltas: [JSON]) async throws(RPCError) {
        var parsed: [DataSyncDelta] = []
        parsed.reserveCapacity(deltas.count)
        for json in deltas {
            let delta = try DataSyncDelta(validating: json)
            guard dealers.hasDealer(forModel: delta.model) else { throw RPCError(DataSyncDelta.Failure.noDealerForModel) }
            parsed.append(delta)
        }
        try await publish(parsed)
    }

    /// Delivers deltas to every subscription they concern, pending or acquired, anywhere.
    /// Deltas of a model without a dealer reach nobody.
    public func publish(_ deltas: [DataSyncDelta]) async throws(RPCError) {
        guard !deltas.isEmpty else { return }
        do {
            // 1. Pending tokens buffer what they match (refused atomically once acquired).
            // The append happens even with nothing to buffer: its number tells acquirers
            // whether the batch came before or after their acquire.
            let appends = try await pendingAppends(for: deltas)
            let result = try await store.append(appends, maxBuffered: maxBufferedDeltas)
            if !result.overflowed.isEmpty {
                node.logger.warning(
                    "dropped pending datasync subscriptions whose buffer overflowed",
                    metadata: ["count": "\(result.overflowed.count)", "limit": "\(maxBufferedDeltas)"])
            }
            // 2. Acquired subscriptions get the batch from the bus, after the append, so an
            // acquire that beat the append is already listening.
            let batch = DeltaBatch(sequence: result.sequence, deltas: deltas)
            try await node.publish(topic: topic, envelope: batch.json.encodedBytes())
        } catch {
            throw failure(error, doing: "publish")
        }
    }

    private func pendingAppends(
        for deltas: [DataSyncDelta]
    ) async throws(BusError) -> [(token: String, entries: [[UInt8]])] {
        let pending = try await store.pending()
        let compiled: [(String, [CompiledItem])] = pendingItems.withLock { cache in
            var fresh: [String: [CompiledItem]] = [:]
            for subscription in pending {
                fresh[subscription.token] = cache[subscription.token] ?? compile(subscription.items)
            }
            cache = fresh
            return fresh.map { ($0.key, $0.value) }
        }
        var appends: [(token: String, entries: [[UInt8]])] = []
        for (token, items) in compiled where !items.isEmpty {
            var buffered: [[UInt8]] = []
            for delta in deltas {
                if let delivered = delivery(of: delta, to: items) { buffered.append(delivered.json.encodedBytes()) }
            }
            if !buffered.isEmpty { appends.append((token, buffered)) }
        }
        return appends
    }

    // MARK: Helpers

    /// Compiles stored items. An item whose dealer this node does not know (a deployment
    /// with differing dealer configurations) matches nothing here.
    private func compile(_ items: [UInt8]) -> [CompiledItem] {
        guard case .array(let list)? = try? JSON.parse(items) else { return [] }
        return list.compactMap { item in
            guard case .string(let dealerName)? = item["dealer"], let query = item["query"],
                let dealer = dealers[dealerName], let matcher = dealer.matcher(for: query)
            else {
                node.logger.warning("ignoring a subscription item this node cannot match", metadata: ["item": "\(item)"])
                return nil
            }
            return CompiledItem(model: dealer.model, matcher: matcher)
        }
    }

    private func failure(_ error: BusError, doing operation: String) -> RPCError {
        node.logger.warning("datasync \(operation) failed", metadata: ["error": "\(error)"])
        return error.isUnavailable ? .serviceUnavailable : .internalError
    }

    private static let alphabet = Array("abcdefghijklmnopqrstuvwxyz0123456789".utf8)

    static func isWellFormedToken(_ token: String) -> Bool {
        token.utf8.count == 32 && token.utf8.allSatisfy { alphabet.contains($0) }
    }

    /// `[a-z0-9]{length}` from the system's cryptographic generator (getrandom on Linux):
    /// a token is a bearer credential for its subscription.
    static func randomToken(length: Int) -> String {
        var generator = SystemRandomNumberGenerator()
        let bytes = (0..<length).map { _ in alphabet[Int.random(in: 0..<alphabet.count, using: &generator)] }
        return String(decoding: bytes, as: UTF8.self)
    }
}

/// `datasync_backend`: the application's side, reachable only through the backend API.
@RPCService
public final class DataSyncBackendService: Sendable {
    public let name: String
    private let frontend: DataSyncService

    public init(name: String = "datasync_backend", frontend: DataSyncService) {
        self.name = name
        self.frontend = frontend
    }

    @Command func authorizeSubscription(items: [JSON]) async throws -> String {
        try await frontend.authorize(items: items)
    }

    @Command func publishDeltas(deltas: [JSON]) async throws {
        try await frontend.publish(validating: deltas)
    }
}
