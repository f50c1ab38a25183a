import NIOCore
import NIOHTTP1
import NIOPosix
import Synchronization

/// Opens the bench's connections: subscribers with bounded concurrency, and publishers.
struct Connector: Sendable {
    let loops: [any EventLoop]
    let stats: [LoopStats]
    let workload: Workload
    let serverAddress: SocketAddress
    let publishAddress: SocketAddress

    init(loops: [any EventLoop], stats: [LoopStats], workload: Workload) throws {
        self.loops = loops
        self.stats = stats
        self.workload = workload
        let settings = workload.settings
        serverAddress = try SocketAddress.makeAddressResolvingHost(settings.host, port: settings.port)
        publishAddress = try SocketAddress.makeAddressResolvingHost(settings.host, port: settings.publishPort)
    }

    private var handshakeTimeout: TimeAmount { .seconds(30) }

    private func bootstrap(on loop: any EventLoop, connection index: Int) -> ClientBootstrap {
        var bootstrap = ClientBootstrap(group: loop)
            .connectTimeout(.seconds(30))
            .channelOption(.socketOption(.tcp_nodelay), value: 1)
        if let source = workload.sourceAddress(forConnection: index) {
            bootstrap = bootstrap.bind(to: source)
        }
        return bootstrap
    }

    /// Connects subscriber `index` and completes once all its subscriptions are confirmed.
    func connectSubscriber(index: Int) -> EventLoopFuture<any Channel> {
        let loopIndex = index % loops.count
        let loop = loops[loopIndex]
        let loopStats = stats[loopIndex]
        let workload = self.workload
        let settings = workload.settings
        let channels = workload.channels(ofConnection: index)
        let requests = workload.subscribeRequests(channels: channels)
        let path = workload.subscribePath(channels: channels)
        let ready = loop.makePromise(of: Void.self)
        let timeout = handshakeTimeout
        let connected = bootstrap(on: loop, connection: index)
            .channelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    let session = SubscriberSession(
                        channels: channels, subscribeRequests: requests, stats: loopStats,
                        recorder: loopStats.recorder.value, ready: ready)
                    let handler = WebSocketClientHandler(
                        host: settings.host, port: settings.port, path: path, session: session, handshakeTimeout: timeout)
                    try channel.pipeline.syncOperations.addHandler(handler)
                }
            }
            .connect(to: serverAddress)
        // A failed connect never activates the channel, so the session cannot have completed
        // `ready`; once connected, the session alone completes it.
        connected.whenFailure { ready.fail($0) }
        return connected.flatMap { channel in ready.futureResult.map { channel } }
    }

    /// Connects publisher `index` (of `count`), owning channels c with c % count == index.
    func connectPublisher(index: Int, count: Int, gauge: DeliveryGauge) -> EventLoopFuture<PublisherHandle> {
        let loop = loops[index % loops.count]
        let settings = workload.settings
        let workload = self.workload
        let owned = Array(stride(from: index, to: settings.channels, by: count))
        let counters = PublisherCounters()
        let box = NIOLoopBoundBox.makeEmptyBox(valueType: PublisherCore.self, eventLoop: loop)
        let opened = loop.makePromise(of: Void.self)
        let timeout = handshakeTimeout
        let viaHTTP = settings.publishVia == .backend
        // Past this many unanswered WebSocket publishes the server is clearly not keeping
        // up; stop piling on (counted as stalls) rather than buffer without bound.
        let maxInFlight = viaHTTP ? settings.pipeline : 100_000
        let connectionIndex = settings.connections + index
        let connected = loop.submit {
            box.value = PublisherCore(ownedChannels: owned, maxInFlight: maxInFlight, counters: counters, gauge: gauge)
        }.flatMap {
            bootstrap(on: loop, connection: connectionIndex)
                .channelInitializer { channel in
                    channel.eventLoop.makeCompletedFuture {
                        guard let core = box.value else { return }
                        if viaHTTP {
                            try channel.pipeline.syncOperations.addHTTPClientHandlers()
                            try channel.pipeline.syncOperations.addHandler(
                                HTTPPublisherHandler(workload: workload, core: core, opened: opened))
                        } else {
                            let session = WebSocketPublisherSession(workload: workload, core: core, opened: opened)
                            try channel.pipeline.syncOperations.addHandler(WebSocketClientHandler(
                                host: settings.host, port: settings.port, path: settings.path,
                                session: session, handshakeTimeout: timeout))
                        }
                    }
                }
                .connect(to: viaHTTP ? publishAddress : serverAddress)
        }
        connected.whenFailure { opened.fail($0) }
        return opened.futureResult.map { PublisherHandle(eventLoop: loop, counters: counters, core: box) }
    }

    struct SubscriberOutcome: Sendable {
        var ready: Int = 0
        var failedIndices: [Int] = []
        var firstErrors: [String] = []
        var channels: [any Channel] = []
        var firstStartNanos: UInt64 = 0
        var lastReadyNanos: UInt64 = 0
    }

    /// Connects the given subscribers, at most `concurrency` in setup at once. Connections
    /// not started within `timeout` seconds count as failed.
    func connectSubscribers(
        _ indices: [Int], concurrency: Int, timeout: Double, onProgress: @Sendable (Int, Int) -> Void
    ) async -> SubscriberOutcome {
        var outcome = SubscriberOutcome()
        outcome.firstStartNanos = monotonicNanos()
        let deadline = outcome.firstStartNanos + UInt64(timeout * 1e9)
        await withTaskGroup(of: (Int, Result<any Channel, any Error>).self) { group in
            var next = 0
            func startNext() {
                guard next < indices.count else { return }
                guard monotonicNanos() < deadline else {
                    let skipped = indices[next...]
                    outcome.failedIndices.append(contentsOf: skipped)
                    outcome.firstErrors.append("\(skipped.count) connection(s) not attempted: --connect-timeout \(timeout) s passed")
                    next = indices.count
                    return
                }
                let index = indices[next]
                next += 1
                let future = connectSubscriber(index: index)
                group.addTask {
                    do {
                        return (index, .success(try await future.get()))
                    } catch {
                        return (index, .failure(error))
                    }
                }
            }
            for _ in 0..<min(concurrency, indices.count) { startNext() }
            var done = 0
            while let (index, result) = await group.next() {
                done += 1
                switch result {
                case .success(let channel):
                    outcome.ready += 1
                    outcome.channels.append(channel)
                    outcome.lastReadyNanos = monotonicNanos()
                case .failure(let error):
                    outcome.failedIndices.append(index)
                    if outcome.firstErrors.count < 5 { outcome.firstErrors.append("connection \(index): \(error)") }
                }
                if done % 100 == 0 || done == indices.count { onProgress(done, outcome.ready) }
                startNext()
            }
        }
        return outcome
    }
}
