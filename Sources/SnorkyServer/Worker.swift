public import Logging
public import NIOCore
import NIOPosix
public import Snorky
public import SnorkyServices

/// A complete worker: event loops, node, services and listeners, assembled from plain
/// configuration. The `snorky` executable runs one per process; tests run one in-process
/// on port 0.
public final class Worker: Sendable {
    public let node: Node
    public let server: SnorkyServer
    private let group: any EventLoopGroup
    /// Whether `shutdown()` stops the event loops: false for a group the caller owns (the
    /// process-wide singleton, which cannot be shut down).
    private let ownsGroup: Bool
    private let logger: Logger

    /// - Parameters:
    ///   - eventLoopGroup: the loops to run on; nil creates `threads` loops owned (and shut
    ///     down) by the worker.
    ///   - makeBus: builds the bus on the worker's event loops (so bus deliveries and client
    ///     writes share threads).
    ///   - registerServices: adds services to the node; defaults to the built-ins.
    public init(
        id: String,
        server configuration: ServerConfiguration,
        node nodeConfiguration: NodeConfiguration = NodeConfiguration(),
        threads: Int = 1,
        eventLoopGroup: (any EventLoopGroup)? = nil,
        logger: Logger,
        makeBus: (any EventLoopGroup) throws -> any Bus,
        makeState: (any EventLoopGroup) throws -> any ClusterState = { _ in InMemoryClusterState() },
        registerServices: (Node) -> Void = { BuiltinServices.register(on: $0) }
    ) rethrows {
        let group = eventLoopGroup ?? MultiThreadedEventLoopGroup(numberOfThreads: max(1, threads))
        self.group = group
        self.ownsGroup = eventLoopGroup == nil
        self.logger = logger
        let bus: any Bus
        let state: any ClusterState
        do {
            bus = try makeBus(group)
            state = try makeState(group)
        } catch {
            if eventLoopGroup == nil { try? group.syncShutdownGracefully() }
            throw error
        }
        self.node = Node(id: id, bus: bus, state: state, configuration: nodeConfiguration, logger: logger)
        self.server = SnorkyServer(configuration: configuration, node: node, group: group, logger: logger)
        registerServices(node)
    }

    /// A worker on an existing bus (tests use an `InMemoryBus`).
    public convenience init(
        id: String,
        server configuration: ServerConfiguration,
        node nodeConfiguration: NodeConfiguration = NodeConfiguration(),
        bus: any Bus,
        threads: Int = 1,
        logger: Logger,
        registerServices: (Node) -> Void = { BuiltinServices.register(on: $0) }
    ) {
        self.init(
            id: id, server: configuration, node: nodeConfiguration, threads: threads, logger: logger,
            makeBus: { _ in bus }, makeState: { _ in InMemoryClusterState() }, registerServices: registerServices)
    }

    /// Connects the bus and opens the listeners; returns their addresses.
    public func start(
        publicListener: SnorkyServer.Listener? = nil,
        backendListener: SnorkyServer.Listener? = nil
    ) async throws -> (public: SocketAddress, backend: SocketAddress) {
        try await node.start()
        node.startLiveness()
        return try await server.start(publicListener: publicListener, backendListener: backendListener)
    }

    /// Graceful stop: drain clients, close the bus, stop the event loops.
    public func shutdown() async {
        await server.drain()
        await node.shutdown()
        if ownsGroup { try? await group.shutdownGracefully() }
    }
}
