#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif
import Logging
import NIOCore
import NIOHTTP1
import Snorky
import SnorkyProtocol
import Synchronization

/// The backend HTTP API's logic (PROTOCOL.md section 6), independent of HTTP parsing:
/// key check, envelope decoding, dispatch to a backend service, and the reply.
/// Every request gets an answer: at worst a 504 after `timeout`.
final class BackendAPI: Sendable {
    struct Reply: Sendable {
        var status: HTTPResponseStatus
        var body: ByteBuffer
        var contentType = "application/json"
        var headers: [(String, String)] = []
    }

    /// Names the worker that answered a `GET /metrics` (its slot): the scrape reports the
    /// whole node, and this tells which worker's values are live rather than a snapshot.
    static let metricsWorkerHeader = "X-Snorky-Worker"

    static let keyHeader = "X-Backend-Key"
    static let missingKeyMessage =
        "Backend API disabled: no backend key is configured. Set --backend-key, SNORKY_BACKEND_KEY or backend_key in the config file."

    private let node: Node
    private let key: [UInt8]?
    private let timeout: Duration
    private let stats: @Sendable () -> JSON
    private let isAccepting: @Sendable () -> Bool
    private let exposition: @Sendable () async -> String
    private let metricsWorker: String

    init(
        node: Node, key: String?, timeout: Duration,
        stats: @escaping @Sendable () -> JSON, isAccepting: @escaping @Sendable () -> Bool,
        exposition: @escaping @Sendable () async -> String, metricsWorker: String
    ) {
        self.node = node
        self.key = key.map { Array($0.utf8) }
        self.timeout = timeout
        self.stats = stats
        self.isAccepting = isAccepting
        self.exposition = exposition
        self.metricsWorker = metricsWorker
    }

    /// The worker's counters, for the HTTP handler to count backend requests.
    var metrics: WorkerMetrics { node.metrics }

    /// `GET /ready`: 200 while the worker accepts connections and a probe sent through the
    /// bus came back recently; 503 otherwise (draining, or the bus is not delivering).
    func readyReply() -> Reply {
        let accepting = isAccepting()
        let delivering = node.isBusDelivering
        let body: JSON = ["ready": .bool(accepting && delivering), "accepting": .bool(accepting), "bus": .bool(delivering)]
        return Reply(status: accepting && delivering ? .ok : .serviceUnavailable, body: ByteBuffer(bytes: body.encodedBytes()))
    }

    /// `GET /metrics`: the node's metrics in Prometheus's text format. No key: like
    /// `/health` and `/ready` it reveals counts only, and scrapers rarely send headers.
    func metricsReply() async -> Reply {
        Reply(
            status: .ok, body: ByteBuffer(string: await exposition()), contentType: PrometheusText.contentType,
            headers: [(Self.metricsWorkerHeader, metricsWorker)])
    }

    /// `GET /stats`: this worker's counters, so operators and tests can see how
    /// connections spread over workers. Needs the backend key like `/backend`.
    func statsReply(presentedKey: String?) -> Reply {
        if let refusal = checkKey(presentedKey) { return refusal }
        return Reply(status: .ok, body: ByteBuffer(bytes: stats().encodedBytes()))
    }

    private func checkKey(_ presentedKey: String?) -> Reply? {
        guard let key else {
            return Self.error(.unauthorized, Self.missingKeyMessage)
        }
        guard let presentedKey, constantTimeEqual(Array(presentedKey.utf8), key) else {
            return Self.error(.unauthorized, "Unauthorized")
        }
        return nil
    }

    /// A backend request after the synchronous checks: either already answered (bad key,
    /// bad envelope, unknown service) or a call to make.
    enum Prepared {
        case answered(Reply)
        case call(Call)
    }

    struct Call {
        let service: any Service
        let message: JSON
        /// See `Service.runsPipelinedBackendRequestsConcurrently`.
        var runsConcurrently: Bool { service.runsPipelinedBackendRequestsConcurrently }
    }

    func prepare(presentedKey: String?, body: ByteBuffer) -> Prepared {
        if let refusal = checkKey(presentedKey) { return .answered(refusal) }
        let envelope: Envelope
        do {
            envelope = try Envelope.decode(body.readableBytesView, maxDepth: node.configuration.maxJSONDepth)
        } catch {
            return .answered(Self.error(.badRequest, error.message))
        }
        guard let service = node.backendService(named: envelope.service) else {
            return .answered(Self.error(.notFound, ProtocolErrorMessage.unknownService))
        }
        return .call(Call(service: service, message: envelope.message))
    }

    /// Starts `call` on `eventLoop`: without a task when its service can
    /// (`Service.startBackendRequest`), otherwise in a task on `executor` (the connection's
    /// event loop, so calls started in order run in order up to their first suspension).
    /// The reply is the service's first message; the HTTP handler owns the timeout and
    /// abandons a call that missed it.
    func start(_ call: Call, eventLoop: any EventLoop, executor: EventLoopTaskExecutor) -> BackendReplyTransport {
        let transport = BackendReplyTransport(eventLoop: eventLoop)
        let service = call.service
        if let reply = service.startBackendRequest(call.message, on: eventLoop) {
            let name = service.name
            let metrics = node.metrics
            reply.whenSuccess { message in
                metrics.framesSent.add(1)  // counted like a reply sent through a client's queue
                transport.answer(ByteBuffer(bytes: Envelope.encodedBytes(service: name, message: message)))
            }
            return transport
        }
        let client = node.makeClient(transport: transport)
        let message = call.message
        Task(executorPreference: executor) { await service.handle(message: message, from: client) }
        return transport
    }

    static func reply(to payload: ByteBuffer) -> Reply {
        Reply(status: status(of: payload), body: payload)
    }

    /// The 504 for a request not answered within the timeout; `what` names its service.
    func timedOut(what: String) -> Reply {
        node.logger.warning("backend request timed out", metadata: ["service": "\(what)", "timeout": "\(timeout)"])
        return Self.error(.gatewayTimeout, "Timeout: the service did not answer within \(timeout)")
    }

    var requestTimeout: TimeAmount { TimeAmount(timeout) }

    /// RPC errors are answered with 200 (the envelope carries them), except a bus outage,
    /// which is a 503 so load balancers and retry logic see it.
    private static func status(of payload: ByteBuffer) -> HTTPResponseStatus {
        // Nearly every reply is a success: look for the message's bytes before parsing.
        guard contains(payload, serviceUnavailableBytes),
            let envelope = try? Envelope.decode(payload.readableBytesView),
            envelope.message["type"] == "error",
            envelope.message["message"] == .string(RPCErrorMessage.serviceUnavailable)
        else { return .ok }
        return .serviceUnavailable
    }

    static func error(_ status: HTTPResponseStatus, _ message: String) -> Reply {
        let body = JSON.object(["error": .string(message)]).encodedBytes()
        return Reply(status: status, body: ByteBuffer(bytes: body))
    }
}

private let serviceUnavailableBytes = Array(RPCErrorMessage.serviceUnavailable.utf8)

/// Whether `needle` occurs in the readable bytes of `buffer`: `memchr` finds each candidate
/// first byte, `memcmp` checks the rest. The standard library's subsequence search is
/// generic and unspecialized here, and cost more than the rest of a reply's path together.
private func contains(_ buffer: ByteBuffer, _ needle: [UInt8]) -> Bool {
    guard let first = needle.first else { return true }
    return buffer.withUnsafeReadableBytes { haystack in
        needle.withUnsafeBytes { needle in
            guard var cursor = haystack.baseAddress, let needleBase = needle.baseAddress else { return false }
            let end = cursor + haystack.count
            while end - cursor >= needle.count {
                guard let hit = memchr(cursor, Int32(first), end - cursor) else { return false }
                if end - UnsafeRawPointer(hit) < needle.count { return false }
                if memcmp(hit, needleBase, needle.count) == 0 { return true }
                cursor = UnsafeRawPointer(hit) + 1
            }
            return false
        }
    }
}

/// Compares secrets without an early exit, so response time does not reveal how many
/// leading bytes of a guess were right.
func constantTimeEqual(_ lhs: [UInt8], _ rhs: [UInt8]) -> Bool {
    var difference = UInt8(truncatingIfNeeded: lhs.count ^ rhs.count)
    let length = max(lhs.count, rhs.count)
    for index in 0..<length {
        let left = index < lhs.count ? lhs[index] : 0
        let right = index < rhs.count ? rhs[index] : 0
        difference |= left ^ right
    }
    return difference == 0
}

/// A transport whose first message becomes the HTTP response body.
final class BackendReplyTransport: Transport {
    let eventLoop: any EventLoop
    let writeState = TransportWriteState()
    private let promise: EventLoopPromise<ByteBuffer>
    private let completed = Atomic<Bool>(false)

    init(eventLoop: any EventLoop) {
        self.eventLoop = eventLoop
        self.promise = eventLoop.makePromise(of: ByteBuffer.self)
    }

    var reply: EventLoopFuture<ByteBuffer> { promise.futureResult }

    func write(_ frame: OutboundFrame) {
        answer(frame.payload)
    }

    /// Answers with `payload`, an encoded envelope, unless an answer came first.
    func answer(_ payload: ByteBuffer) {
        complete(.success(payload))
    }

    func flush() {}

    func close(code: UInt16, reason: String) {}

    /// Gives up on the reply (its request timed out); a later message is ignored.
    func abandon() {
        complete(.failure(BackendCallAbandoned()))
    }

    /// The first message wins; anything later is ignored.
    private func complete(_ result: Result<ByteBuffer, any Error>) {
        if completed.compareExchange(expected: false, desired: true, ordering: .acquiringAndReleasing).exchanged {
            promise.completeWith(result)
        }
    }
}

struct BackendCallAbandoned: Error {}
