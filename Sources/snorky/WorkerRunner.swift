import ArgumentParser
import Logging
import NIOCore
import NIOPosix
import Snorky
import SnorkyConfig
import SnorkyServer
import SnorkyServices

/// Runs one worker until SIGTERM/SIGINT, then drains it. Shared by the in-process
/// `serve --bus memory` mode and the supervised `worker` role.
enum WorkerRunner {
    static func run(
        configuration: SnorkyConfiguration,
        publicListener: SnorkyServer.Listener?,
        backendListener: SnorkyServer.Listener?,
        makeBus: (any EventLoopGroup) throws -> any Bus,
        makeState: (any EventLoopGroup) throws -> any ClusterState = { _ in InMemoryClusterState() },
        logger: Logger,
        dataSync: DataSyncOptions,
        statsLabels: [String: String] = [:],
        metrics: MetricsConfiguration = MetricsConfiguration(),
        onReady: () -> Void = {},
        onDraining: () -> Void = {}
    ) async throws {
        var options = BuiltinServiceOptions()
        options.pubSubPolicy = PubSubPolicy(clientPublish: configuration.clientPublish)
        options.tokens = configuration.tokenSecret.map(ConnectionTokens.init(secret:))
        options.dataSync = dataSync
        var server = serverConfiguration(configuration)
        server.statsLabels = statsLabels.merging(["pid": "\(getpid())"]) { first, _ in first }
        server.metrics = metrics
        let worker = try Worker(
            id: nodeID(),
            server: server,
            node: nodeConfiguration(configuration),
            eventLoopGroup: MultiThreadedEventLoopGroup.singleton,
            logger: logger,
            makeBus: makeBus,
            makeState: makeState,
            registerServices: { BuiltinServices.register(on: $0, options: options) }
        )
        let addresses = try await worker.start(publicListener: publicListener, backendListener: backendListener)
        logger.info(
            "worker listening",
            metadata: ["ws": "\(describe(addresses.public))", "backend": "\(describe(addresses.backend))"]
        )
        onReady()
        let signal = await TerminationSignal.wait()
        logger.info("draining", metadata: ["signal": "\(signal)"])
        onDraining()
        await worker.shutdown()
        await dataSync.store?.shutdown()
        logger.info("worker stopped")
    }

    /// Makes the worker's event loops the process's Swift concurrency executor, with
    /// `threads` loops. Services, backend requests and bus calls are async code; on the
    /// default cooperative pool every await between them and the sockets would hop threads
    /// (a futex wake-up and a context switch each). Sharing the loops keeps a request on
    /// one thread from the socket read to the reply. Call once, before anything touches
    /// `MultiThreadedEventLoopGroup.singleton`.
    static func adoptEventLoopsAsExecutor(threads: Int) {
        NIOSingletons.groupLoopCountSuggestion = max(1, threads)
        _ = NIOSingletons.unsafeTryInstallSingletonPosixEventLoopGroupAsConcurrencyGlobalExecutor()
    }

    static func serverConfiguration(_ configuration: SnorkyConfiguration) -> ServerConfiguration {
        var server = ServerConfiguration()
        server.host = configuration.host
        server.port = configuration.port
        server.backendHost = configuration.backendHost
        server.backendPort = configuration.backendPort
        server.backendKey = configuration.backendKey
        server.maxFrameSize = configuration.maxFrameSize
        server.maxOutboundBuffer = configuration.maxOutboundBuffer
        server.backendMaxBodySize = configuration.backendMaxBodySize
        server.backendTimeout = .seconds(configuration.backendTimeout)
        server.drainTimeout = .seconds(configuration.drainTimeout)
        server.tokens = configuration.tokenSecret.map(ConnectionTokens.init(secret:))
        server.drainSpread = .seconds(configuration.drainSpread)
        server.pingInterval = .seconds(configuration.pingInterval)
        server.pongTimeout = .seconds(configuration.pongTimeout)
        server.maxConnections = configuration.maxConnections
        server.maxRequestsPerSecond = configuration.maxRequestsPerSecond
        server.requestBurst = configuration.requestBurst
        server.allowedOrigins = configuration.allowedOrigins
        server.demo = configuration.demo
        return server
    }

    /// Datasync's dealers and limits from the config file's `[datasync]` section.
    static func dataSyncOptions(fileText: String?, fileName: String?) throws -> DataSyncOptions {
        guard let fileText else { return DataSyncOptions() }
        do {
            return try DataSyncOptions(configurationText: fileText, fileName: fileName ?? "config file")
        } catch {
            throw ValidationError(error.message)
        }
    }

    static func nodeConfiguration(_ configuration: SnorkyConfiguration) -> NodeConfiguration {
        var node = NodeConfiguration()
        node.protocolErrorBudget = ProtocolErrorBudget(
            limit: configuration.protocolErrorLimit,
            window: .seconds(configuration.protocolErrorWindow)
        )
        node.maxSubscriptionsPerClient = configuration.maxSubscriptions
        node.writePolicy.maxWriteDelay = .nanoseconds(Int64(configuration.maxWriteDelay * 1e9))
        node.writePolicy.coalescingRate = configuration.coalescingRate
        return node
    }

    /// Unique across the cluster: host, process and a random part (pids are reused).
    static func nodeID() -> String {
        var name = [CChar](repeating: 0, count: 256)
        gethostname(&name, name.count)
        let host = String(decoding: name.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
        return "\(host):\(getpid()):\(UInt32.random(in: 0...UInt32.max))"
    }

    static func describe(_ address: SocketAddress) -> String {
        "\(address.ipAddress ?? "?"):\(address.port ?? 0)"
    }
}

#if canImport(Glibc)
import Glibc
#endif
