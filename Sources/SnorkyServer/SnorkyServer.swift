public import Logging
public import NIOCore
import NIOHTTP1
import NIOPosix
import NIOWebSocket
public import Snorky
import SnorkyProtocol
import SnorkyWebSocket
import Synchronization

/// One worker's network face: the public WebSocket listener and the backend HTTP listener,
/// both feeding the same `Node`.
public final class SnorkyServer: Sendable {
    /// How a listener gets its socket: bound here, or inherited from the supervisor.
    public enum Listener: Sendable {
        case bind(host: String, port: Int)
        case inherited(descriptor: CInt)
    }

    public let configuration: ServerConfiguration
    public let node: Node
    private let group: any EventLoopGroup
    private let logger: Logger
    private let connections = ConnectionRegistry()
    private let serverChannels = Mutex<[any Channel]>([])
    private let backendAPI: BackendAPI
    private let metrics: WorkerMetricsExporter

    public init(configuration: ServerConfiguration, node: Node, group: any EventLoopGroup, logger: Logger) {
        self.configuration = configuration
        self.node = node
        self.group = group
        self.logger = logger
        let connections = self.connections
        let metrics = WorkerMetricsExporter(node: node, connections: connections, configuration: configuration.metrics, logger: logger)
        self.metrics = metrics
        self.backendAPI = BackendAPI(
            node: node, key: configuration.backendKey, timeout: configuration.backendTimeout,
            stats: {
                var stats: JSONObject = [
                    "node": .string(node.id),
                    "connections": .int(Int64(connections.count)),
                    "topics": .int(Int64(node.hub.topicCount)),
                ]
                for (key, value) in configuration.statsLabels.sorted(by: { $0.key < $1.key }) {
                    stats[key] = .string(value)
                }
                if let roundTrip = node.busRoundTrip {
                    stats["busRoundTripMicroseconds"] = .int(roundTrip.components.seconds * 1_000_000 + roundTrip.components.attoseconds / 1_000_000_000_000)
                }
                return .object(stats)
            },
            isAccepting: { !connections.isDraining },
            exposition: { await metrics.exposition() }, metricsWorker: configuration.metrics.worker)
    }

    /// Open WebSocket connections on this worker.
    public var connectionCount: Int { connections.count }

    /// Starts both listeners and returns their local addresses (public, backend).
    public func start(
        publicListener: Listener? = nil,
        backendListener: Listener? = nil
    ) async throws -> (public: SocketAddress, backend: SocketAddress) {
        if configuration.backendKey == nil {
            logger.warning("no backend key configured: the backend API refuses every request; set --backend-key or SNORKY_BACKEND_KEY")
        }
        if configuration.demo {
            logger.warning("demo mode: the page at / hands out a connection token for any name; never enable it where identities matter")
        }
        if configuration.allowedOrigins == nil {
            logger.warning("no allowed origins configured: any web page may open WebSocket connections; set allowed_origins or SNORKY_ALLOWED_ORIGINS")
        }
        let publicChannel = try await open(
            publicListener ?? .bind(host: configuration.host, port: configuration.port),
            bootstrap: publicBootstrap(), backlog: Self.publicBacklog
        )
        let backendChannel = try await open(
            backendListener ?? .bind(host: configuration.backendHost, port: configuration.backendPort),
            bootstrap: backendBootstrap(), backlog: Self.backendBacklog
        )
        serverChannels.withLock { $0 = [publicChannel, backendChannel] }
        await metrics.startPublishing()
        return (publicChannel.localAddress!, backendChannel.localAddress!)
    }

    private func open(_ listener: Listener, bootstrap: ServerBootstrap, backlog: Int32) async throws -> any Channel {
        switch listener {
        case .bind(let host, let port):
            return try await bootstrap.bind(host: host, port: port).get()
        case .inherited(let descriptor):
            let channel = try await bootstrap.withBoundSocket(descriptor).get()
            // Adopting a socket, NIO listens again with its default backlog of 128, before
            // the backlog option applies. With 128, a burst of connections (a reconnect
            // storm after a deploy) overflows the accept queue and clients wait a second
            // for their SYN to be retried: listen again with ours.
            _ = listen(descriptor, backlog)
            return channel
        }
    }

    static let publicBacklog: Int32 = 4096
    static let backendBacklog: Int32 = 1024

    /// Stops accepting new connections; existing ones are untouched.
    public func stopAccepting() async {
        let channels = serverChannels.withLock { channels in
            defer { channels = [] }
            return channels
        }
        for channel in channels {
            try? await channel.close()
        }
    }

    /// Graceful drain: stop accepting, ask every client to reconnect elsewhere (1001) in
    /// batches spread over `drainSpread`, and wait up to the drain timeout for them to go.
    public func drain() async {
        metrics.stopPublishing()
        await stopAccepting()
        connections.closeAll(
            code: CloseCode.goingAway, reason: "Server shutting down",
            spread: configuration.drainSpread, lateGrace: .seconds(1))
        await connections.waitUntilEmpty(timeout: configuration.drainTimeout)
    }

    // MARK: Pipelines

    private func publicBootstrap() -> ServerBootstrap {
        let configuration = self.configuration
        let node = self.node
        let connections = self.connections
        return ServerBootstrap(group: group)
            .serverChannelOption(.backlog, value: Self.publicBacklog)
            .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
            .childChannelOption(.socketOption(.tcp_nodelay), value: 1)
            .childChannelOption(
                .writeBufferWaterMark,
                value: .init(low: configuration.maxOutboundBuffer / 2, high: configuration.maxOutboundBuffer)
            )
            .serverChannelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    try channel.pipeline.syncOperations.addHandler(AcceptedConnectionCounter(connections: connections))
                }
            }
            .childChannelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    try Self.configurePublicPipeline(
                        channel: channel, configuration: configuration, node: node, connections: connections)
                }
            }
    }

    private static func configurePublicPipeline(
        channel: any Channel,
        configuration: ServerConfiguration,
        node: Node,
        connections: ConnectionRegistry
    ) throws {
        let path = configuration.webSocketPath
        let maxFrameSize = configuration.maxFrameSize
        let identities = ConnectionIdentity(tokens: configuration.tokens)
        let policy = WebSocketConnectionHandler.Policy(
            pingInterval: TimeAmount(configuration.pingInterval),
            pongTimeout: TimeAmount(configuration.pongTimeout),
            maxConnections: configuration.maxConnections,
            requestRate: configuration.maxRequestsPerSecond > 0
                ? (configuration.maxRequestsPerSecond, max(1, configuration.requestBurst)) : nil)
        let upgrader = NIOWebSocketServerUpgrader(
            maxFrameSize: maxFrameSize,
            automaticErrorHandling: false,
            shouldUpgrade: { channel, head in
                // A refused upgrade falls through to PublicHTTPHandler, which answers it.
                var accept: Bool
                switch identities.resolve(uri: head.uri) {
                case .refused: accept = false
                case .anonymous, .identified: accept = requestPath(head.uri) == path
                }
                if !configuration.isOriginAllowed(head.headers["Origin"]) { accept = false }
                return channel.eventLoop.makeSucceededFuture(accept ? HTTPHeaders() : nil)
            },
            upgradePipelineHandler: { channel, head in
                let identity: String? =
                    if case .identified(let verified) = identities.resolve(uri: head.uri) { verified } else { nil }
                return channel.eventLoop.makeCompletedFuture {
                    let pipeline = channel.pipeline.syncOperations
                    try InboundWebSocketPipeline.addHandlers(to: pipeline, maxFrameSize: maxFrameSize)
                    try pipeline.addHandler(
                        WebSocketConnectionHandler(
                            node: node, connections: connections, identity: identity, policy: policy)
                    )
                }
            }
        )
        let httpHandlerName = "snorky.public-http"
        try channel.pipeline.syncOperations.configureHTTPServerPipeline(
            withServerUpgrade: (
                upgraders: [upgrader],
                completionHandler: { context in
                    context.pipeline.syncOperations.removeHandler(name: httpHandlerName, promise: nil)
                }
            )
        )
        let routes = PublicRoutes(
            webSocketPath: path, identities: identities, isOriginAllowed: configuration.isOriginAllowed,
            demo: configuration.demo)
        try channel.pipeline.syncOperations.addHandler(PublicHTTPHandler(routes: routes), name: httpHandlerName)
    }

    private func backendBootstrap() -> ServerBootstrap {
        let api = backendAPI
        let maxBodySize = configuration.backendMaxBodySize
        return ServerBootstrap(group: group)
            .serverChannelOption(.backlog, value: Self.backendBacklog)
            .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
            .childChannelOption(.socketOption(.tcp_nodelay), value: 1)
            .childChannelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    try BackendHTTPHandler.configurePipeline(channel.pipeline.syncOperations, api: api, maxBodySize: maxBodySize)
                }
            }
    }
}

/// The path part of a request URI (no query string).
func requestPath(_ uri: String) -> String {
    guard let query = uri.utf8.firstIndex(of: UInt8(ascii: "?")) else { return uri }
    return String(uri[..<query])
}

/// Counts a connection the moment it is accepted, before it is registered on its event
/// loop: a drain that only counted initialized connections could find the worker empty
/// while an accepted connection is still on its way, and cut it by exiting.
final class AcceptedConnectionCounter: ChannelInboundHandler {
    typealias InboundIn = any Channel
    typealias InboundOut = any Channel

    private let connections: ConnectionRegistry

    init(connections: ConnectionRegistry) {
        self.connections = connections
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        let child = unwrapInboundIn(data)
        connections.socketOpened()
        let connections = self.connections
        child.closeFuture.whenComplete { _ in connections.socketClosed() }
        context.fireChannelRead(data)
    }
}

#if canImport(Glibc)
import Glibc
#endif
