import Logging
import NIOCore
import Snorky
import SnorkyProtocol
import SnorkyServices
import Synchronization
import Testing

// Fixtures for the messaging, chat and cursors service tests: one or more nodes sharing
// one bus and one `InMemoryClusterState`, which is how several workers (or nodes) share
// Redis, and clients driven through `RecordingTransport`s.

// MARK: - A bus shared by several nodes

/// The Redis of a one-process cluster: each node attaches its own endpoint (a `Bus` with
/// its own per-topic reference counts), and a publication reaches every endpoint that holds
/// the topic, the publisher's own included, before `publish` returns, as `InMemoryBus`
/// does for one node (`InMemoryBus` has a single receiver, so two nodes cannot share it).
final class SharedMemoryBus: Sendable {
    final class Endpoint: Bus {
        private struct State {
            var receiver: (any BusReceiver)?
            var references: [String: Int] = [:]
        }

        private let state = Mutex(State())
        private let bus: SharedMemoryBus

        fileprivate init(bus: SharedMemoryBus) {
            self.bus = bus
        }

        func start(receiver: any BusReceiver) async throws {
            state.withLock { $0.receiver = receiver }
        }

        func subscribe(topic: String) async {
            state.withLock { $0.references[topic, default: 0] += 1 }
        }

        func unsubscribe(topic: String) {
            state.withLock { state in
                let remaining = (state.references[topic] ?? 0) - 1
                state.references[topic] = remaining > 0 ? remaining : nil
            }
        }

        func publish(topic: String, payload: ByteBuffer) async throws(BusError) {
            bus.deliver(topic: topic, payload: payload)
        }

        /// Detaches the node: it hears nothing more, as if its worker had died.
        func shutdown() async {
            state.withLock { $0.receiver = nil }
        }

        /// The receiver, if the endpoint holds `topic`.
        fileprivate func receiver(for topic: String) -> (any BusReceiver)? {
            state.withLock { $0.references[topic] == nil ? nil : $0.receiver }
        }

        var subscribedTopics: Set<String> {
            state.withLock { Set($0.references.keys) }
        }

        func references(of topic: String) -> Int {
            state.withLock { $0.references[topic] ?? 0 }
        }
    }

    private let endpoints = Mutex<[Endpoint]>([])

    func attach() -> Endpoint {
        let endpoint = Endpoint(bus: self)
        endpoints.withLock { $0.append(endpoint) }
        return endpoint
    }

    fileprivate func deliver(topic: String, payload: ByteBuffer) {
        for endpoint in endpoints.withLock({ $0 }) {
            endpoint.receiver(for: topic)?.deliver(topic: topic, payload: payload)
        }
    }
}

// MARK: - Cluster state that is down

/// A `ClusterState` whose backing store is unreachable: every call fails as Redis would.
final class UnavailableClusterState: ClusterState {
    private func fail() -> BusError { .unavailable("test: state is down") }

    func claimName(_ name: String, in space: String, for owner: ClientAddress) async throws(BusError) -> ClientAddress? { throw fail() }
    func releaseName(_ name: String, in space: String, by owner: ClientAddress) async throws(BusError) -> NameRelease { throw fail() }
    func nameOwner(_ name: String, in space: String) async throws(BusError) -> ClientAddress? { throw fail() }
    func names(in space: String) async throws(BusError) -> [String] { throw fail() }
    func join(group: String, member: String, connection: ClientAddress, in space: String) async throws(BusError) -> (isFirst: Bool, members: [String]) { throw fail() }
    func leave(group: String, member: String, connection: ClientAddress, in space: String) async throws(BusError) -> (wasPresent: Bool, isLast: Bool) { throw fail() }
    func connections(of member: String, group: String, in space: String) async throws(BusError) -> [ClientAddress] { throw fail() }
    func members(of group: String, in space: String) async throws(BusError) -> [String] { throw fail() }
    func nextSequence(group: String, in space: String) async throws(BusError) -> Int64 { throw fail() }
    func putRecord(_ value: [UInt8], id: String, group: String, owner: ClientAddress, in space: String) async throws(BusError) { throw fail() }
    func removeRecord(id: String, group: String, in space: String) async throws(BusError) -> Bool { throw fail() }
    func records(group: String, in space: String) async throws(BusError) -> [ClusterRecord] { throw fail() }
    func heartbeat(nodeID: String, ttl: Duration) async throws(BusError) { throw fail() }
    func reapDeadNodes(survivor: String) async throws(BusError) -> ReapedState { throw fail() }
    func removeAll(ownedBy owner: ClientAddress, in space: String) async throws(BusError) -> ReapedState { throw fail() }
}

// MARK: - Nodes and clients

/// Hears `clientDisconnected` after every other service (it is registered last), so a test
/// can await the end of a disconnect's cleanup instead of sleeping.
final class DisconnectWaiter: Service {
    let name = "test-disconnect-waiter"
    private let state = Mutex<(seen: Set<UInt64>, waiters: [UInt64: CheckedContinuation<Void, Never>])>(([], [:]))

    func clientDisconnected(_ client: Client) async {
        let waiter = state.withLock { state in
            state.seen.insert(client.id)
            return state.waiters.removeValue(forKey: client.id)
        }
        waiter?.resume()
    }

    func handle(message: JSON, from client: Client) async {}

    func wait(for client: Client) async {
        await withCheckedContinuation { continuation in
            let done = state.withLock { state in
                if state.seen.contains(client.id) { return true }
                state.waiters[client.id] = continuation
                return false
            }
            if done { continuation.resume() }
        }
    }
}

/// One worker: a `Node` with the messaging, chat and cursors services.
struct ServiceNode: Sendable {
    let node: Node
    let endpoint: SharedMemoryBus.Endpoint
    let disconnects: DisconnectWaiter

    var id: String { node.id }

    func connect(identity: String? = nil) -> ServiceClient {
        let (client, transport) = RecordingTransport.connect(to: node, identity: identity)
        return ServiceClient(client: client, transport: transport, disconnects: disconnects)
    }

    /// Simulates the worker dying: it stops hearing the bus and its heartbeat has expired,
    /// so the next liveness round of a survivor reaps its state.
    func kill() async throws {
        await endpoint.shutdown()
        try await node.state.heartbeat(nodeID: node.id, ttl: .zero)
    }
}

/// Nodes sharing one bus and one cluster state.
struct ServiceCluster: Sendable {
    /// What chat notifications carry as `timestamp`, so frames compare exactly.
    static let timestamp = "2026-11-24T21:50:00.123Z"

    let bus: SharedMemoryBus
    let state: any ClusterState
    let nodes: [ServiceNode]

    var a: ServiceNode { nodes[0] }
    var b: ServiceNode { nodes[1] }

    /// Starts `nodeCount` nodes ("A", "B", …), runs `body`, and shuts them down even when
    /// `body` throws.
    static func with(
        nodes nodeCount: Int = 1,
        state: any ClusterState = InMemoryClusterState(),
        messagingPolicy: MessagingPolicy = MessagingPolicy(),
        _ body: (ServiceCluster) async throws -> Void
    ) async throws {
        let bus = SharedMemoryBus()
        var nodes: [ServiceNode] = []
        for index in 0..<nodeCount {
            let endpoint = bus.attach()
            let id = String(UnicodeScalar(UInt8(ascii: "A") + UInt8(index)))
            let node = Node(
                id: id, bus: endpoint, state: state,
                logger: Logger(label: "ServiceTests.\(id)", factory: { _ in SwiftLogNoOpLogHandler() }))
            node.register(MessagingService(node: node, policy: messagingPolicy))
            node.register(ChatService(node: node, timestamp: { ServiceCluster.timestamp }))
            node.register(CursorsService(node: node))
            let disconnects = DisconnectWaiter()
            node.register(disconnects)
            try await node.start()
            nodes.append(ServiceNode(node: node, endpoint: endpoint, disconnects: disconnects))
        }
        let cluster = ServiceCluster(bus: bus, state: state, nodes: nodes)
        do {
            try await body(cluster)
        } catch {
            for node in nodes { await node.node.shutdown() }
            throw error
        }
        for node in nodes { await node.node.shutdown() }
    }
}

/// A frame that is not the one a test waited for.
struct UnexpectedServiceFrame: Error, CustomStringConvertible {
    let expected: String
    let frame: JSON
    var description: String { "expected \(expected), got \(frame)" }
}

/// One connection of a test, speaking the RPC protocol.
final class ServiceClient: Sendable {
    let client: Client
    let transport: RecordingTransport
    private let disconnects: DisconnectWaiter
    private let callIds = Atomic<Int64>(1)

    init(client: Client, transport: RecordingTransport, disconnects: DisconnectWaiter) {
        self.client = client
        self.transport = transport
        self.disconnects = disconnects
    }

    /// Sends a request without waiting for anything.
    func send(_ service: String, _ command: String, _ params: JSON = [:], callId: JSON?) {
        var message: JSONObject = ["command": .string(command), "params": params]
        if let callId { message["callId"] = callId }
        let text = Envelope(service: service, message: .object(message)).json.encodedString()
        client.didReceive(text: ByteBuffer(string: text))
    }

    /// The next frame, whole (`{"service": ..., "message": ...}`).
    func next() async throws -> JSON {
        try await transport.next(timeout: .seconds(5))
    }

    /// Calls a command and returns the reply's message (`response` or `error`), checking it
    /// is the very next frame and answers this call.
    func call(_ service: String, _ command: String, _ params: JSON = [:]) async throws -> JSONObject {
        let callId = JSON.int(callIds.wrappingAdd(1, ordering: .relaxed).oldValue)
        send(service, command, params, callId: callId)
        let frame = try await next()
        guard frame["service"] == .string(service), let message = frame["message"]?.objectValue,
            message["callId"] == callId, message["type"] == "response" || message["type"] == "error"
        else {
            throw UnexpectedServiceFrame(expected: "the reply to \(service).\(command) #\(callId)", frame: frame)
        }
        return message
    }

    /// Calls a command that must succeed; returns its `data`.
    @discardableResult
    func reply(_ service: String, _ command: String, _ params: JSON = [:]) async throws -> JSON {
        let message = try await call(service, command, params)
        guard message["type"] == "response", let data = message["data"] else {
            throw UnexpectedServiceFrame(expected: "a response to \(service).\(command)", frame: .object(message))
        }
        return data
    }

    /// Calls a command that must fail; returns the error message.
    func failure(_ service: String, _ command: String, _ params: JSON = [:]) async throws -> String {
        let message = try await call(service, command, params)
        guard message["type"] == "error", let text = message["message"]?.stringValue else {
            throw UnexpectedServiceFrame(expected: "an error from \(service).\(command)", frame: .object(message))
        }
        return text
    }

    /// The next frame, which must be a notification of `service`; returns its message.
    func notification(_ service: String) async throws -> JSON {
        let frame = try await next()
        guard frame["service"] == .string(service), let message = frame["message"],
            message["type"] != "response", message["type"] != "error", message["callId"] == nil
        else {
            throw UnexpectedServiceFrame(expected: "a \(service) notification", frame: frame)
        }
        return message
    }

    /// Proves nothing is pending for this connection: a request's reply must be the very
    /// next frame. Everything the tests cause is queued for the connection before the call
    /// that caused it returns (the bus delivers synchronously in memory), so anything that
    /// was going to arrive would come first.
    func expectIdle() async throws {
        let message = try await call("messaging", "listParticipants")
        #expect(message["type"] == "response")
    }

    /// For a connection that cannot be asked (it is closed): nothing within a short while.
    func expectNothing() async throws {
        try await transport.expectNothing(for: .milliseconds(100))
    }

    /// Closes the connection and waits until every service has cleaned up after it.
    func disconnect() async {
        client.didDisconnect()
        await disconnects.wait(for: client)
    }
}
