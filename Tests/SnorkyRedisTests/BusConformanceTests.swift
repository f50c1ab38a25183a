import NIOCore
import NIOPosix
import Snorky
import SnorkyTesting
import Testing

@testable import SnorkyRedis

/// Behaviours every `Bus` must have, run against each implementation (the idea of
/// Phoenix.PubSub's shared adapter suite). Single-worker behaviours only: what crosses
/// workers is Redis-specific and tested in `RedisBusTests`.
enum BusKind: String, CaseIterable, CustomTestStringConvertible, Sendable {
    case memory
    case redis
    var testDescription: String { rawValue }
}

enum ConformanceBehaviour: String, CaseIterable, CustomTestStringConvertible, Sendable {
    case deliversOnceToASubscriber
    case publishReturnsAfterLocalDelivery
    case publishingWithoutSubscribersSucceeds
    case referencesAreCounted
    case keepsOrderAndBytes
    case topicsAreIsolated
    case concurrentSubscribers
    case publishesWithoutSuspendingInCallOrder
    var testDescription: String { rawValue }
}

/// A started bus for the conformance suite; keeps its Redis (if any) alive.
struct BusFixture: Sendable {
    let bus: any Bus
    let receiver: RecordingReceiver
    let redis: RedisServerProcess?

    static func make(_ kind: BusKind) async throws -> BusFixture {
        let receiver = RecordingReceiver()
        switch kind {
        case .memory:
            let bus = InMemoryBus()
            try await bus.start(receiver: receiver)
            return BusFixture(bus: bus, receiver: receiver, redis: nil)
        case .redis:
            let redis = try await RedisServerProcess()
            let bus = try makeRedisBus(redis)
            try await bus.start(receiver: receiver)
            return BusFixture(bus: bus, receiver: receiver, redis: redis)
        }
    }
}

/// Runs one conformance behaviour against the bus `makeBus` returns.
func busConformance(_ behaviour: ConformanceBehaviour, makeBus: () async throws -> BusFixture) async throws {
    let fixture = try await makeBus()
    let bus = fixture.bus
    let receiver = fixture.receiver
    defer { withExtendedLifetime(fixture.redis) {} }  // keep the server until the end

    switch behaviour {
    case .deliversOnceToASubscriber:
        await bus.subscribe(topic: "a")
        try await bus.publish(topic: "a", payload: ByteBuffer(text: "one"))
        try await bus.publish(topic: "a", payload: ByteBuffer(text: "two"))
        #expect(receiver.deliveries == [.init(topic: "a", payload: Array("one".utf8)), .init(topic: "a", payload: Array("two".utf8))])

    case .publishReturnsAfterLocalDelivery:
        await bus.subscribe(topic: "mine")
        for index in 0..<50 {
            try await bus.publish(topic: "mine", payload: ByteBuffer(text: "\(index)"))
            #expect(receiver.texts.count == index + 1)
        }

    case .publishingWithoutSubscribersSucceeds:
        await bus.subscribe(topic: "watched")
        try await bus.publish(topic: "nobody", payload: ByteBuffer(text: "into the void"))
        try await bus.publish(topic: "watched", payload: ByteBuffer(text: "sentinel"))
        #expect(receiver.texts == ["sentinel"])

    case .referencesAreCounted:
        await bus.subscribe(topic: "rc")
        await bus.subscribe(topic: "rc")
        bus.unsubscribe(topic: "rc")
        try await bus.publish(topic: "rc", payload: ByteBuffer(text: "still one reference"))
        #expect(receiver.texts == ["still one reference"])
        bus.unsubscribe(topic: "rc")
        // Unbalanced unsubscribes are tolerated.
        bus.unsubscribe(topic: "rc")
        bus.unsubscribe(topic: "never")
        await bus.subscribe(topic: "rc")
        try await bus.publish(topic: "rc", payload: ByteBuffer(text: "again"))
        #expect(receiver.texts.last == "again")

    case .keepsOrderAndBytes:
        await bus.subscribe(topic: "bytes")
        var expected: [[UInt8]] = [[], [0], [0, 255, 13, 10], Array("ünïcödé {\"json\": true}".utf8)]
        expected += (0..<200).map { Array("message \($0)".utf8) }
        expected.append((0..<(256 << 10)).map { UInt8(truncatingIfNeeded: $0) })
        for payload in expected {
            try await bus.publish(topic: "bytes", payload: ByteBuffer(bytes: payload))
        }
        #expect(receiver.deliveries.map(\.payload) == expected)

    case .topicsAreIsolated:
        await bus.subscribe(topic: "left")
        await bus.subscribe(topic: "right")
        try await bus.publish(topic: "left", payload: ByteBuffer(text: "L"))
        try await bus.publish(topic: "right", payload: ByteBuffer(text: "R"))
        try await bus.publish(topic: "left:right", payload: ByteBuffer(text: "neither"))
        #expect(receiver.texts(on: "left") == ["L"])
        #expect(receiver.texts(on: "right") == ["R"])
        #expect(receiver.deliveries.count == 2)

    case .concurrentSubscribers:
        await withTaskGroup(of: Void.self) { group in
            for index in 0..<40 {
                group.addTask { await bus.subscribe(topic: "topic-\(index % 20)") }
            }
        }
        for index in 0..<20 {
            try await bus.publish(topic: "topic-\(index)", payload: ByteBuffer(text: "\(index)"))
        }
        #expect(Set(receiver.texts) == Set((0..<20).map { "\($0)" }))
        #expect(receiver.deliveries.count == 20)

    case .publishesWithoutSuspendingInCallOrder:
        // Started back to back on a loop without awaiting each other, as the backend API's
        // pipelined publications are: they must be delivered in call order.
        await bus.subscribe(topic: "now")
        let loop = MultiThreadedEventLoopGroup.singleton.next()
        let started = try await loop.submit {
            (0..<100).map { bus.publish(topic: "now", payload: ByteBuffer(text: "\($0)"), on: loop) }
        }.get()
        for future in started {
            try await #require(future).get()
        }
        #expect(receiver.texts == (0..<100).map { "\($0)" })
    }

    await bus.shutdown()
}

@Suite("Bus conformance")
struct BusConformanceTests {
    @Test(arguments: BusKind.allCases, ConformanceBehaviour.allCases)
    func conformance(_ kind: BusKind, _ behaviour: ConformanceBehaviour) async throws {
        try await busConformance(behaviour) { try await BusFixture.make(kind) }
    }
}
