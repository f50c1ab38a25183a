import Histogram
import NIOCore
import NIOPosix
import Synchronization

/// One run, phase by phase:
///
/// 1. sample the server (baseline RSS);
/// 2. connect the publishers, then the subscribers with bounded concurrency (and helper
///    processes, if the open-file limit requires), each ready once its subscribes are answered;
/// 3. settle, sample the server again: RSS per connection;
/// 4. prime: publish warmups until every subscription has received one (so no measured
///    message is lost to a subscription the server has not finished setting up, on either
///    server), or hold (idle runs);
/// 5. publish for --duration / --messages, then drain until every expected delivery
///    arrived or deliveries stop; sample CPU around 5, client CPU too;
/// 6. merge latency histograms and counters into a report.
struct BenchRun {
    let settings: BenchSettings
    let progress: ProgressLine

    func run() async throws -> BenchReport {
        var warnings: [String] = []
        let fileLimit = raiseOpenFileLimit()
        let sockets = settings.connections + (settings.publishVia == .none ? 0 : settings.publishers)
        let processes = settings.processes > 0
            ? settings.processes
            : max(1, (sockets + fileLimit - 257) / max(fileLimit - 256, 1))
        let portsPerAddress = max(ephemeralPortCount() - 2000, 1000)
        var addressCount = settings.sourceAddresses > 0
            ? settings.sourceAddresses
            : (sockets + portsPerAddress - 1) / portsPerAddress
        if addressCount > 1, settings.host.hasPrefix("127.") == false {
            warnings.append("\(sockets) connections may exceed the ephemeral ports of one source address; spreading needs an IPv4 loopback host")
            addressCount = 1
        }
        addressCount = min(addressCount, 254)

        let server = ServerProcesses(pids: settings.serverPids, trees: settings.serverPidTrees)
        let redis = ServerProcesses(pids: settings.redisPid.map { [$0] } ?? [], trees: [])
        let baseline = server.sample()

        let group = MultiThreadedEventLoopGroup(numberOfThreads: settings.threads)
        let loops = Array(group.makeIterator())
        let stats = loops.map(LoopStats.init)
        let gauge = DeliveryGauge(loops: stats)
        let workload = Workload(settings: settings, sourceAddresses: try makeSourceAddresses(count: addressCount))
        let connector = try Connector(loops: loops, stats: stats, workload: workload)
        let shards = try ShardSet.spawn(
            total: processes, settings: settings, sourceAddressCount: addressCount, gauge: gauge)

        var openChannels: [any Channel] = []
        var publishers: [PublisherHandle] = []
        do {
            let report = try await measure(
                workload: workload, connector: connector, stats: stats, gauge: gauge, shards: shards,
                server: server, redis: redis, baseline: baseline, processes: processes,
                addressCount: addressCount, warnings: warnings,
                openChannels: &openChannels, publishers: &publishers)
            await closeEverything(openChannels, publishers: publishers, group: group)
            return report
        } catch {
            shards.terminate()
            await closeEverything(openChannels, publishers: publishers, group: group)
            throw error
        }
    }

    private func closeEverything(_ channels: [any Channel], publishers: [PublisherHandle], group: MultiThreadedEventLoopGroup) async {
        for publisher in publishers { publisher.close() }
        for channel in channels { channel.close(promise: nil) }
        try? await group.shutdownGracefully()
    }

    // swiftlint:disable:next function_body_length function_parameter_count
    private func measure(
        workload: Workload, connector: Connector, stats: [LoopStats], gauge: DeliveryGauge, shards: ShardSet,
        server: ServerProcesses, redis: ServerProcesses, baseline: ServerProcesses.Sample, processes: Int,
        addressCount: Int, warnings initialWarnings: [String],
        openChannels: inout [any Channel], publishers: inout [PublisherHandle]
    ) async throws -> BenchReport {
        var warnings = initialWarnings
        let settings = self.settings
        // The report carries the settings, but never the backend key.
        var reported = settings
        if !reported.backendKey.isEmpty { reported.backendKey = "(redacted)" }

        // Publishers first: a handful of connections, and a run without them is pointless.
        if settings.publishVia != .none {
            do {
                for index in 0..<settings.publishers {
                    publishers.append(try await connector.connectPublisher(
                        index: index, count: settings.publishers, gauge: gauge).get())
                }
            } catch {
                throw BenchError.noPublishers("\(error)")
            }
        }

        // Subscribers.
        let localIndices = Array(stride(from: 0, to: settings.connections, by: processes))
        let progress = self.progress
        let totalConnections = settings.connections
        let outcome = await connector.connectSubscribers(
            localIndices, concurrency: settings.connectConcurrency, timeout: settings.connectTimeout
        ) { done, ready in
            progress.update("connecting: \(grouped(done * processes)) of \(grouped(totalConnections)) attempted, \(grouped(ready * processes)) ready (estimate over \(processes) process(es))")
        }
        openChannels = outcome.channels
        // Helpers stop starting connections at --connect-timeout; the ones in flight then
        // finish or fail within their own timeouts.
        let remoteReady = try await shards.waitUntilReady(timeout: settings.connectTimeout + 120)
        var failedIndices = outcome.failedIndices
        var firstErrors = outcome.firstErrors
        var readyConnections = outcome.ready
        var firstStart = outcome.firstStartNanos
        var lastReady = outcome.lastReadyNanos
        for message in remoteReady {
            failedIndices += message.failedIndices ?? []
            firstErrors += message.firstErrors ?? []
            readyConnections += message.ready ?? 0
            firstStart = min(firstStart, message.firstStartNanos ?? firstStart)
            lastReady = max(lastReady, message.lastReadyNanos ?? lastReady)
        }
        guard readyConnections > 0 else {
            throw BenchError.nothingConnected(firstErrors.first ?? "unknown error")
        }
        var subscribers = workload.plannedSubscribers
        for index in failedIndices {
            for channel in workload.channels(ofConnection: index) { subscribers[channel] -= 1 }
        }
        let subscriptions = subscribers.reduce(0, +)
        let connectSeconds = Double(lastReady &- firstStart) / 1e9
        if !failedIndices.isEmpty {
            warnings.append("\(failedIndices.count) connection(s) failed; first: \(firstErrors.first ?? "?")")
        }
        progress.note("ready: \(grouped(readyConnections)) connections, \(grouped(subscriptions)) subscriptions in \(fixed(connectSeconds, 2)) s")

        try await Task.sleep(for: .seconds(settings.settle))
        var connectedSample = server.sample()
        if settings.publishVia == .none {
            try await Task.sleep(for: .seconds(settings.hold))
            connectedSample = server.sample()
        }

        if !server.isEmpty, connectedSample.rssBytes <= baseline.rssBytes {
            warnings.append("server memory did not grow while connecting: a server that held connections before keeps "
                + "its freed memory, so RSS per connection needs a freshly started server")
        }

        let connections = BenchReport.Connections(
            planned: settings.connections, ready: readyConnections, failed: failedIndices.count,
            firstErrors: Array(firstErrors.prefix(5)), seconds: connectSeconds,
            perSecond: connectSeconds > 0 ? Double(readyConnections) / connectSeconds : 0,
            subscriptions: subscriptions, sourceAddresses: max(addressCount, 1), clientProcesses: processes)

        func serverReport(cpuStart: ServerProcesses.Sample?, cpuEnd: ServerProcesses.Sample?,
                          redisCPU: Double?, deliveries: Int?) -> BenchReport.Server? {
            guard !server.isEmpty else { return nil }
            let cpu = cpuStart.flatMap { start in cpuEnd.map { $0.cpuSeconds - start.cpuSeconds } }
            let perMillion: (Double?) -> Double? = { seconds in
                guard let seconds, let deliveries, deliveries > 0 else { return nil }
                return seconds / Double(deliveries) * 1e6
            }
            return BenchReport.Server(
                pids: (cpuEnd ?? connectedSample).pids, cpuSeconds: cpu,
                cpuSecondsPerMillionDeliveries: perMillion(cpu),
                rssBaselineBytes: baseline.rssBytes, rssConnectedBytes: connectedSample.rssBytes,
                rssEndBytes: cpuEnd?.rssBytes,
                rssPerConnectionBytes: Double(connectedSample.rssBytes - baseline.rssBytes) / Double(readyConnections),
                pssBaselineBytes: baseline.pssBytes, pssConnectedBytes: connectedSample.pssBytes,
                pssPerConnectionBytes: Double(connectedSample.pssBytes - baseline.pssBytes) / Double(readyConnections),
                redisCPUSeconds: redisCPU, redisCPUSecondsPerMillionDeliveries: perMillion(redisCPU))
        }

        if settings.publishVia == .none {
            if processes > 1 { _ = try await shards.stop() }
            return BenchReport(
                label: settings.label, settings: reported, connections: connections,
                server: serverReport(cpuStart: nil, cpuEnd: nil, redisCPU: nil, deliveries: nil),
                client: .init(threads: settings.threads), warnings: warnings)
        }

        // Prime: every subscription must see a warmup before anything is measured.
        var primeSeconds: Double?
        var warmupRounds = 0
        if settings.prime {
            let primeStart = monotonicNanos()
            let deadline = primeStart + UInt64(settings.primeTimeout * 1e9)
            var primed = 0
            while primed < subscriptions, monotonicNanos() < deadline {
                for publisher in publishers { publisher.queueWarmups() }
                warmupRounds += 1
                let roundEnd = monotonicNanos() + 1_000_000_000
                repeat {
                    try await Task.sleep(for: .milliseconds(20))
                    primed = stats.reduce(shards.counts.primed) { $0 + $1.primed.load(ordering: .relaxed) }
                    progress.update("warmup round \(warmupRounds): \(grouped(primed)) of \(grouped(subscriptions)) subscriptions live")
                } while primed < subscriptions && monotonicNanos() < roundEnd
            }
            if primed < subscriptions {
                warnings.append("\(subscriptions - primed) subscription(s) never received a warmup message in \(settings.primeTimeout) s; their losses count")
            } else {
                primeSeconds = Double(monotonicNanos() - primeStart) / 1e9
            }
            // Let the last round's surplus warmups land before timing anything.
            try await Task.sleep(for: .milliseconds(200))
        }

        // Publish.
        let readySubscriptionsPerChannel = Double(subscriptions) / Double(settings.channels)
        let averageFanout = max(readySubscriptionsPerChannel, 1)
        let outstandingLimit = settings.window > 0
            ? Int(Double(settings.window) * averageFanout)
            : max(Int(8 * averageFanout), 5_000)
        let burst = settings.rate > 0
            ? max(16, Int(settings.rate / Double(settings.publishers) / 1000 * 8))
            : max(1, Int(Double(outstandingLimit) / averageFanout) / (4 * settings.publishers))
        let cpuStart = server.sample()
        let redisStart = redis.sample()
        let clientStart = ownCPUSeconds()
        let start = monotonicNanos() + 20_000_000
        let end = start + UInt64(settings.duration * 1e9)
        var futures: [EventLoopFuture<Void>] = []
        for (index, publisher) in publishers.enumerated() {
            let quota = settings.messages.map { total in
                total / settings.publishers + (index < total % settings.publishers ? 1 : 0)
            }
            futures.append(publisher.startMeasuring(MeasurePlan(
                subscribers: subscribers, startNanos: start, endNanos: end, quota: quota,
                rate: settings.rate / Double(settings.publishers),
                outstandingLimit: outstandingLimit, burst: burst,
                replyTimeoutNanos: UInt64(settings.drainTimeout * 1e9))))
        }
        let publishing = Atomic<Bool>(true)
        let allPublished = EventLoopFuture.andAllComplete(futures, on: stats[0].eventLoop)
        allPublished.whenComplete { _ in publishing.store(false, ordering: .relaxed) }

        var lastTick = monotonicNanos()
        var lastDelivered = gauge.delivered
        while publishing.load(ordering: .relaxed) {
            try await Task.sleep(for: .milliseconds(100))
            let now = monotonicNanos()
            if now - lastTick >= 1_000_000_000 {
                let delivered = gauge.delivered
                let rate = Double(delivered - lastDelivered) / (Double(now - lastTick) / 1e9)
                let gaps = stats.reduce(shards.counts.gaps) { $0 + $1.gaps.load(ordering: .relaxed) }
                let sent = publishers.reduce(0) { $0 + $1.counters.sent.load(ordering: .relaxed) }
                progress.update("\(fixed(Double(now - start) / 1e9, 1)) s: published \(grouped(sent)), "
                    + "\(grouped(rate)) deliveries/s, lost so far \(grouped(gaps)), pending \(grouped(gauge.outstanding))")
                lastTick = now
                lastDelivered = delivered
            }
        }
        let publishEnd = monotonicNanos()

        // Drain: until everything expected arrived, deliveries stop for 2 s, or the timeout.
        let drainDeadline = publishEnd + UInt64(settings.drainTimeout * 1e9)
        var lastProgress = monotonicNanos()
        var seen = gauge.delivered
        while gauge.outstanding > 0, monotonicNanos() < drainDeadline {
            try await Task.sleep(for: .milliseconds(20))
            let delivered = gauge.delivered
            if delivered != seen {
                seen = delivered
                lastProgress = monotonicNanos()
            } else if monotonicNanos() - lastProgress > 2_000_000_000 {
                break
            }
            progress.update("draining: \(grouped(gauge.outstanding)) deliveries pending")
        }
        let cpuEnd = server.sample()
        let redisEnd = redis.sample()
        let clientCPU = ownCPUSeconds() - clientStart

        // Gather.
        var histogram = LatencyHistogram.make()
        for loopStats in stats { histogram.add(try await loopStats.latencySnapshot().get()) }
        var counts = stats.map(\.counts).reduce(DeliveryCounts(), +)
        if processes > 1 {
            let finals = try await shards.stop()
            for final in finals {
                if let remote = final.histogram { histogram.add(remote) }
                counts = counts + (final.counts ?? DeliveryCounts())
            }
        }
        let sent = publishers.reduce(0) { $0 + $1.counters.sent.load(ordering: .relaxed) }
        let failed = publishers.reduce(0) { $0 + $1.counters.failed.load(ordering: .relaxed) }
        let stalls = publishers.reduce(0) { $0 + $1.counters.stalls.load(ordering: .relaxed) }
        let firstError = publishers.lazy.compactMap { $0.counters.firstError.withLock { $0 } }.first
        let expected = gauge.expected.load(ordering: .relaxed)
        let lost = max(0, expected - counts.delivered)
        let deliverySeconds = counts.lastDeliveryNanos > start ? Double(counts.lastDeliveryNanos - start) / 1e9 : 0
        let publishSeconds = Double(publishEnd - start) / 1e9
        if counts.delivered > expected {
            warnings.append("\(counts.delivered - expected) more deliveries than expected (duplicates?)")
        }
        if clientCPU > 0.9 * Double(settings.threads) * publishSeconds {
            warnings.append("the client used \(fixed(clientCPU / publishSeconds, 2)) cores: it may be the bottleneck")
        }

        let redisCPU = settings.redisPid == nil ? nil : redisEnd.cpuSeconds - redisStart.cpuSeconds
        return BenchReport(
            label: settings.label, settings: reported, connections: connections,
            publishing: .init(
                via: settings.publishVia, publishers: publishers.count, sent: sent, failed: failed, stalls: stalls,
                firstError: firstError, targetRate: settings.rate,
                achievedRate: publishSeconds > 0 ? Double(sent) / publishSeconds : 0,
                payloadBytes: settings.payloadSize, warmupRounds: warmupRounds, primeSeconds: primeSeconds),
            delivery: .init(
                expected: expected, delivered: counts.delivered, lost: lost,
                lostPercent: expected > 0 ? Double(lost) / Double(expected) * 100 : 0,
                outOfOrder: counts.outOfOrder, unrecognizedFrames: counts.unrecognized, disconnects: counts.disconnects,
                seconds: deliverySeconds, perSecond: deliverySeconds > 0 ? Double(counts.delivered) / deliverySeconds : 0),
            latency: histogram.totalCount == 0 ? nil : .init(
                count: histogram.totalCount,
                p50Micros: Double(histogram.valueAtPercentile(50)),
                p90Micros: Double(histogram.valueAtPercentile(90)),
                p99Micros: Double(histogram.valueAtPercentile(99)),
                p999Micros: Double(histogram.valueAtPercentile(99.9)),
                maxMicros: Double(histogram.max),
                meanMicros: histogram.mean),
            server: serverReport(cpuStart: cpuStart, cpuEnd: cpuEnd, redisCPU: redisCPU, deliveries: counts.delivered),
            client: .init(threads: settings.threads, cpuSeconds: clientCPU),
            warnings: warnings)
    }
}
