import NIOCore
import Snorky
import SnorkyTesting
import Testing

@testable import SnorkyRedis

/// Two `RedisBus` instances ("workers") on one real Redis.
@Suite("Redis bus")
struct RedisBusTests {
    @Test func deliversAcrossWorkersExactlyOnceInOrder() async throws {
        let redis = try await RedisServerProcess()
        defer { withExtendedLifetime(redis) {} }  // keep the server until the end
        let a = try await startRedisBus(redis)
        let b = try await startRedisBus(redis)
        await a.bus.subscribe(topic: "news")
        for index in 0..<1_000 {
            try await b.bus.publish(topic: "news", payload: ByteBuffer(text: "m\(index)"))
        }
        // A sentinel published after everything else: once it is in, nothing else can come.
        try await b.bus.publish(topic: "news", payload: ByteBuffer(text: "end"))
        #expect(await a.receiver.waitFor("end"))
        #expect(a.receiver.texts == (0..<1_000).map { "m\($0)" } + ["end"])
        #expect(Set(a.receiver.deliveries.map(\.topic)) == ["news"])
        #expect(b.receiver.deliveries.isEmpty)
        await a.bus.shutdown()
        await b.bus.shutdown()
    }

    @Test func publishReturnsAfterTheLocalDelivery() async throws {
        let redis = try await RedisServerProcess()
        defer { withExtendedLifetime(redis) {} }  // keep the server until the end
        let a = try await startRedisBus(redis)
        let b = try await startRedisBus(redis)
        await a.bus.subscribe(topic: "room")
        await b.bus.subscribe(topic: "room")
        for index in 0..<100 {
            try await a.bus.publish(topic: "room", payload: ByteBuffer(text: "own \(index)"))
            // Already handed to the receiver when publish returned: no waiting here.
            #expect(a.receiver.texts.last == "own \(index)")
        }
        // Concurrent publishers on the same worker each get their own echo.
        try await withThrowingTaskGroup(of: Void.self) { group in
            for index in 0..<50 {
                group.addTask {
                    try await a.bus.publish(topic: "room", payload: ByteBuffer(text: "c\(index)"))
                    #expect(a.receiver.texts.contains("c\(index)"))
                }
            }
            try await group.waitForAll()
        }
        #expect(await b.receiver.waitForCount(150))
        #expect(a.receiver.deliveries.count == 150)
        await a.bus.shutdown()
        await b.bus.shutdown()
    }

    @Test func subscribeReturnsOnlyOnceTheSubscriptionIsActive() async throws {
        let redis = try await RedisServerProcess()
        defer { withExtendedLifetime(redis) {} }  // keep the server until the end
        let a = try await startRedisBus(redis)
        let b = try await startRedisBus(redis)
        for index in 0..<30 {
            let topic = "fresh-\(index)"
            await a.bus.subscribe(topic: topic)
            // Published from the other worker right away: Redis already routes it to A.
            try await b.bus.publish(topic: topic, payload: ByteBuffer(text: "hello \(index)"))
        }
        #expect(await a.receiver.waitForCount(30))
        #expect(a.receiver.texts == (0..<30).map { "hello \($0)" })

        // Concurrent first subscribers of one topic all wait for the same confirmation.
        await withTaskGroup(of: Void.self) { group in
            for _ in 0..<10 { group.addTask { await a.bus.subscribe(topic: "shared") } }
        }
        try await b.bus.publish(topic: "shared", payload: ByteBuffer(text: "to all"))
        #expect(await a.receiver.waitFor("to all", on: "shared"))
        #expect(await a.bus.references(of: "shared") == 10)
        await a.bus.shutdown()
        await b.bus.shutdown()
    }

    @Test func unsubscribesUpstreamAfterTheDebounce() async throws {
        let redis = try await RedisServerProcess()
        defer { withExtendedLifetime(redis) {} }  // keep the server until the end
        let debounce = TimeAmount.milliseconds(300)
        let a = try await startRedisBus(redis, unsubscribeDelay: debounce)
        await a.bus.subscribe(topic: "x")
        await a.bus.subscribe(topic: "x")
        await a.bus.subscribe(topic: "y")
        #expect(try Set(redis.commandLines(["PUBSUB", "CHANNELS", "snorky:*"])) == ["snorky:x", "snorky:y"])

        a.bus.unsubscribe(topic: "x")
        a.bus.unsubscribe(topic: "y")
        let lastLeft = ContinuousClock.now
        a.bus.unsubscribe(topic: "x")
        let channels = try redis.commandLines(["PUBSUB", "CHANNELS", "snorky:*"])
        if ContinuousClock.now - lastLeft < .milliseconds(250) {
            // Still inside the debounce: nothing released yet.
            #expect(Set(channels) == ["snorky:x", "snorky:y"])
        }
        let released = try await pollUntil(timeout: .seconds(2)) {
            try redis.commandLines(["PUBSUB", "CHANNELS", "snorky:*"]).isEmpty
        }
        #expect(released)
        #expect(ContinuousClock.now - lastLeft >= .milliseconds(300))
        #expect(await a.bus.references(of: "x") == 0)

        // Subscribing again afterwards works as from scratch.
        await a.bus.subscribe(topic: "x")
        #expect(try redis.commandLines(["PUBSUB", "CHANNELS", "snorky:*"]) == ["snorky:x"])
        await a.bus.shutdown()
    }

    @Test func aFreshSubscribeDuringAPendingUnsubscribeKeepsTheChannel() async throws {
        let redis = try await RedisServerProcess()
        defer { withExtendedLifetime(redis) {} }  // keep the server until the end
        let a = try await startRedisBus(redis, unsubscribeDelay: .milliseconds(100))
        let b = try await startRedisBus(redis)
        await a.bus.subscribe(topic: "keep")
        a.bus.unsubscribe(topic: "keep")
        await a.bus.subscribe(topic: "keep")
        // Let the first debounce run out: it must not release the re-subscribed topic.
        try await Task.sleep(for: .milliseconds(250))
        #expect(try redis.commandLines(["PUBSUB", "CHANNELS", "snorky:*"]) == ["snorky:keep"])
        try await b.bus.publish(topic: "keep", payload: ByteBuffer(text: "still here"))
        #expect(await a.receiver.waitFor("still here"))
        await a.bus.shutdown()
        await b.bus.shutdown()
    }

    @Test func usesTheConfiguredChannelPrefix() async throws {
        let redis = try await RedisServerProcess()
        defer { withExtendedLifetime(redis) {} }  // keep the server until the end
        let a = try await startRedisBus(redis, prefix: "tenant-7")
        let other = try await startRedisBus(redis)
        await a.bus.subscribe(topic: "t")
        await other.bus.subscribe(topic: "t")
        #expect(try Set(redis.commandLines(["PUBSUB", "CHANNELS", "*"])) == ["tenant-7:t", "snorky:t"])
        #expect(a.bus.channelName(for: "t") == "tenant-7:t")
        try await a.bus.publish(topic: "t", payload: ByteBuffer(text: "tenant only"))
        try await other.bus.publish(topic: "t", payload: ByteBuffer(text: "default only"))
        #expect(a.receiver.texts == ["tenant only"])
        #expect(other.receiver.texts == ["default only"])
        await a.bus.shutdown()
        await other.bus.shutdown()
    }

    @Test func dropsUnknownEnvelopeVersions() async throws {
        let redis = try await RedisServerProcess()
        defer { withExtendedLifetime(redis) {} }  // keep the server until the end
        let a = try await startRedisBus(redis)
        let b = try await startRedisBus(redis)
        await a.bus.subscribe(topic: "v")
        try redis.command(["PUBLISH", "snorky:v", "\u{2}from the future"])
        try redis.command(["PUBLISH", "snorky:v", "\u{1}short"])
        try await b.bus.publish(topic: "v", payload: ByteBuffer(text: "current"))
        #expect(await a.receiver.waitFor("current"))
        #expect(a.receiver.texts == ["current"])
        #expect(a.bus.droppedPublicationCount == 2)
        await a.bus.shutdown()
        await b.bus.shutdown()
    }

    @Test func refusesOversizedPayloads() async throws {
        let redis = try await RedisServerProcess()
        defer { withExtendedLifetime(redis) {} }  // keep the server until the end
        let a = try await startRedisBus(redis) { $0.maxPayloadBytes = 1_000 }
        await #expect(throws: BusError.payloadTooLarge("")) {
            try await a.bus.publish(topic: "t", payload: ByteBuffer(repeating: 0, count: 1_001))
        }
        try await a.bus.publish(topic: "t", payload: ByteBuffer(repeating: 0, count: 1_000))
        await a.bus.shutdown()
    }

    @Test func carriesBigPayloadsUnchanged() async throws {
        let redis = try await RedisServerProcess()
        defer { withExtendedLifetime(redis) {} }  // keep the server until the end
        let a = try await startRedisBus(redis)
        let b = try await startRedisBus(redis)
        await a.bus.subscribe(topic: "big")
        let payload = (0..<(1 << 20)).map { UInt8(truncatingIfNeeded: $0 &* 7) }
        try await b.bus.publish(topic: "big", payload: ByteBuffer(bytes: payload))
        #expect(await a.receiver.waitForCount(1))
        #expect(a.receiver.deliveries.first?.payload == payload)
        await a.bus.shutdown()
        await b.bus.shutdown()
    }

    @Test func redisOutageFailsFastThenDeliveriesResumeWithoutResubscribing() async throws {
        let redis = try await RedisServerProcess()
        defer { withExtendedLifetime(redis) {} }  // keep the server until the end
        let a = try await startRedisBus(redis)
        let b = try await startRedisBus(redis)
        await a.bus.subscribe(topic: "live")
        await a.bus.subscribe(topic: "own")
        try await b.bus.publish(topic: "live", payload: ByteBuffer(text: "before"))
        #expect(await a.receiver.waitFor("before"))
        #expect(a.bus.reconnectCount == 0)

        redis.stop()
        // Publishing fails promptly with `unavailable`; nothing hangs.
        try await withTimeLimit(.seconds(2)) {
            for _ in 0..<20 {
                do throws(BusError) {
                    try await b.bus.publish(topic: "live", payload: ByteBuffer(text: "lost"))
                    Issue.record("publish must fail while Redis is down")
                } catch {
                    #expect(error.isUnavailable)
                }
                do throws(BusError) {
                    try await a.bus.publish(topic: "own", payload: ByteBuffer(text: "lost"))
                    Issue.record("publish must fail while Redis is down")
                } catch {
                    #expect(error.isUnavailable)
                }
            }
            // Subscribing while down returns at once (established on reconnect).
            await a.bus.subscribe(topic: "during-outage")
        }
        #expect(!a.bus.isConnected)

        try await redis.restart()
        let restarted = ContinuousClock.now
        // No action from the caller: the bus re-subscribes by itself.
        var delivered = false
        while !delivered && ContinuousClock.now - restarted < .seconds(3) {
            if b.bus.isConnected {
                try? await b.bus.publish(topic: "live", payload: ByteBuffer(text: "after"))
                try? await b.bus.publish(topic: "during-outage", payload: ByteBuffer(text: "new topic"))
            }
            delivered = await a.receiver.waitFor("new topic", timeout: .milliseconds(20))
                && a.receiver.texts.contains("after")
        }
        let elapsed = ContinuousClock.now - restarted
        #expect(delivered)
        #expect(elapsed < .seconds(2), "deliveries resumed after \(elapsed)")
        #expect(a.bus.reconnectCount == 1)
        #expect(b.bus.reconnectCount == 1)
        #expect(a.bus.isConnected)
        #expect(!a.receiver.texts.contains("lost"))
        // Own publications wait for their local delivery again.
        try await a.bus.publish(topic: "own", payload: ByteBuffer(text: "own again"))
        #expect(a.receiver.texts.last == "own again")
        #expect(try Set(redis.commandLines(["PUBSUB", "CHANNELS", "*"])) == ["snorky:live", "snorky:own", "snorky:during-outage"])
        await a.bus.shutdown()
        await b.bus.shutdown()
    }

    @Test func survivesARedisCrashWithAPendingLocalDelivery() async throws {
        let redis = try await RedisServerProcess()
        defer { withExtendedLifetime(redis) {} }  // keep the server until the end
        let a = try await startRedisBus(redis) { $0.localDeliveryTimeout = .seconds(30) }
        await a.bus.subscribe(topic: "t")
        // Many publishes in flight when Redis dies: each returns or throws unavailable, none hangs.
        try await withTimeLimit(.seconds(5)) {
            try await withThrowingTaskGroup(of: Void.self) { group in
                for index in 0..<200 {
                    group.addTask {
                        do throws(BusError) {
                            try await a.bus.publish(topic: "t", payload: ByteBuffer(text: "\(index)"))
                        } catch {
                            #expect(error.isUnavailable)
                        }
                    }
                }
                redis.kill()
                try await group.waitForAll()
            }
        }
        try await redis.restart()
        let back = try await pollUntil(timeout: .seconds(3)) { a.bus.isConnected }
        #expect(back)
        await a.bus.shutdown()
    }

    @Test func startsWhileRedisIsDownAndConnectsWhenItComesUp() async throws {
        let redis = try await RedisServerProcess()
        defer { withExtendedLifetime(redis) {} }  // keep the server until the end
        redis.stop()
        let a = try makeRedisBus(redis)
        let receiver = RecordingReceiver()
        try await withTimeLimit(.seconds(2)) {
            try await a.start(receiver: receiver)
            await a.subscribe(topic: "early")
        }
        #expect(!a.isConnected)
        await #expect(throws: BusError.unavailable("")) {
            try await a.publish(topic: "early", payload: ByteBuffer(text: "x"))
        }
        try await redis.restart()
        let b = try await startRedisBus(redis)
        var delivered = false
        let deadline = ContinuousClock.now + .seconds(3)
        while !delivered && ContinuousClock.now < deadline {
            try await b.bus.publish(topic: "early", payload: ByteBuffer(text: "hello"))
            delivered = await receiver.waitFor("hello", timeout: .milliseconds(20))
        }
        #expect(delivered)
        #expect(a.reconnectCount == 0)  // the first connection is not a reconnect
        await a.shutdown()
        await b.bus.shutdown()
    }

    @Test func reconnectsAndResubscribesWhenTheSubscriberConnectionIsKilled() async throws {
        let redis = try await RedisServerProcess()
        defer { withExtendedLifetime(redis) {} }  // keep the server until the end
        let a = try await startRedisBus(redis)
        let b = try await startRedisBus(redis)
        await a.bus.subscribe(topic: "t")
        try redis.command(["CLIENT", "KILL", "TYPE", "pubsub"])
        var delivered = false
        let deadline = ContinuousClock.now + .seconds(2)
        var index = 0
        while !delivered && ContinuousClock.now < deadline {
            index += 1
            try await b.bus.publish(topic: "t", payload: ByteBuffer(text: "n\(index)"))
            delivered = await a.receiver.waitForCount(1, timeout: .milliseconds(20))
        }
        #expect(delivered)
        #expect(a.bus.reconnectCount == 1)
        #expect(b.bus.reconnectCount == 0)
        await a.bus.shutdown()
        await b.bus.shutdown()
    }

    @Test func aStalledRedisFailsPublishesByTimeoutNotByHanging() async throws {
        let redis = try await RedisServerProcess()
        defer { withExtendedLifetime(redis) {} }  // keep the server until the end
        let a = try await startRedisBus(redis) { $0.connection.commandTimeout = .milliseconds(300) }
        await a.bus.subscribe(topic: "t")
        // (Under heavy load the short timeout may already have cost a reconnect.)
        let reconnectsBefore = a.bus.reconnectCount
        // PUBLISH is held while writes are paused.
        try redis.command(["CLIENT", "PAUSE", "3000", "WRITE"])
        let started = ContinuousClock.now
        do throws(BusError) {
            try await a.bus.publish(topic: "t", payload: ByteBuffer(text: "stuck"))
            Issue.record("expected unavailable")
        } catch {
            #expect(error.isUnavailable)
        }
        #expect(ContinuousClock.now - started < .seconds(2))
        try redis.command(["CLIENT", "UNPAUSE"])
        let back = try await pollUntil(timeout: .seconds(3)) { a.bus.isConnected && a.bus.reconnectCount > reconnectsBefore }
        #expect(back)
        // Publications flow again once the re-subscription is confirmed.
        var delivered = false
        let deadline = ContinuousClock.now + .seconds(3)
        while !delivered && ContinuousClock.now < deadline {
            try await a.bus.publish(topic: "t", payload: ByteBuffer(text: "flowing"))
            delivered = await a.receiver.waitFor("flowing", timeout: .milliseconds(20))
        }
        #expect(delivered)
        await a.bus.shutdown()
    }

    @Test func worksOverTCPWithAPassword() async throws {
        let redis = try await RedisServerProcess(unixSocket: false, tcp: true, extraArguments: ["--requirepass", "pw"])
        defer { withExtendedLifetime(redis) {} }  // keep the server until the end
        let url = "redis://:pw@" + (try #require(redis.tcpURL)).dropFirst("redis://".count)
        func start() async throws -> StartedBus {
            var configuration = try RedisBusConfiguration(url: url)
            configuration.unsubscribeDelay = .milliseconds(100)
            let bus = RedisBus(configuration: configuration, logger: TestLogging.logger)
            let receiver = RecordingReceiver()
            try await bus.start(receiver: receiver)
            return StartedBus(bus: bus, receiver: receiver)
        }
        let a = try await start()
        let b = try await start()
        #expect(a.bus.isConnected)
        await a.bus.subscribe(topic: "secure")
        try await b.bus.publish(topic: "secure", payload: ByteBuffer(text: "over tcp"))
        #expect(await a.receiver.waitFor("over tcp"))
        await a.bus.shutdown()
        await b.bus.shutdown()

        // A wrong password never connects; publish says so at once.
        var configuration = try RedisBusConfiguration(url: try #require(redis.tcpURL))
        configuration.reconnectBackoff = ReconnectBackoff(initial: .milliseconds(200), maximum: .seconds(1))
        let refused = RedisBus(configuration: configuration, logger: TestLogging.logger)
        try await refused.start(receiver: RecordingReceiver())
        #expect(!refused.isConnected)
        await #expect(throws: BusError.unavailable("")) {
            try await refused.publish(topic: "secure", payload: ByteBuffer(text: "x"))
        }
        await refused.shutdown()
    }

    @Test func shutdownClosesConnectionsAndStopsEverything() async throws {
        let redis = try await RedisServerProcess()
        defer { withExtendedLifetime(redis) {} }  // keep the server until the end
        let a = try await startRedisBus(redis)
        await a.bus.subscribe(topic: "t")
        a.bus.unsubscribe(topic: "t")  // a release timer is pending
        #expect(try connectedClients(redis) == 3)  // the bus's two + redis-cli
        await a.bus.shutdown()
        let closed = try await pollUntil(timeout: .seconds(10)) { try connectedClients(redis) == 1 }
        #expect(closed)
        #expect(!a.bus.isConnected)
        await #expect(throws: BusError.unavailable("")) {
            try await a.bus.publish(topic: "t", payload: ByteBuffer(text: "x"))
        }
        try await withTimeLimit(.seconds(1)) { await a.bus.subscribe(topic: "after") }
        await a.bus.shutdown()  // idempotent
    }
}

/// `connected_clients` from INFO (redis-cli's own connection included).
func connectedClients(_ redis: RedisServerProcess) throws -> Int? {
    for line in try redis.command(["INFO", "clients"]).split(whereSeparator: \.isNewline) {
        if line.hasPrefix("connected_clients:") {
            return Int(line.dropFirst("connected_clients:".count).filter(\.isNumber))
        }
    }
    return nil
}
