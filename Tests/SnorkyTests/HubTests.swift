import Dispatch
import Logging
import NIOCore
import NIOPosix
import Snorky
import SnorkyProtocol
import Synchronization
import Testing

/// Records writes, flushes and closes, for checking how the hub batches. Read it only after
/// a barrier on its loop (`drain(loop)`) or `waitForFlushes`, never concurrently with writes.
private final class CountingTransport: Transport {
    let eventLoop: any EventLoop
    let writeState = TransportWriteState()
    private struct State {
        var payloads: [String] = []
        var flushes = 0
        var unflushed = 0
        /// "flush" and "close CODE" in the order they happened, writes as their payload.
        var events: [String] = []
        var flushWaiters: [(count: Int, continuation: CheckedContinuation<Void, Never>)] = []
    }
    private let state = Mutex(State())

    init(eventLoop: any EventLoop) {
        self.eventLoop = eventLoop
    }

    func write(_ frame: OutboundFrame) {
        eventLoop.preconditionInEventLoop()
        state.withLock {
            $0.payloads.append(frame.payloadString)
            $0.events.append(frame.payloadString)
            $0.unflushed += 1
        }
    }

    func flush() {
        eventLoop.preconditionInEventLoop()
        let ready = state.withLock { state in
            state.flushes += 1
            state.unflushed = 0
            state.events.append("flush")
            let flushes = state.flushes
            let ready = state.flushWaiters.filter { $0.count <= flushes }.map(\.continuation)
            state.flushWaiters.removeAll { $0.count <= flushes }
            return ready
        }
        for continuation in ready { continuation.resume() }
    }

    func close(code: UInt16, reason: String) {
        state.withLock { $0.events.append("close \(code)") }
    }

    var payloads: [String] { state.withLock { $0.payloads } }
    var flushes: Int { state.withLock { $0.flushes } }
    var events: [String] { state.withLock { $0.events } }
    /// Writes never followed by a flush would sit in the socket buffer forever.
    var unflushed: Int { state.withLock { $0.unflushed } }

    /// Returns once the transport has been flushed `count` times in all.
    func waitForFlushes(_ count: Int) async {
        await withCheckedContinuation { continuation in
            let done = state.withLock { state in
                if state.flushes >= count { return true }
                state.flushWaiters.append((count, continuation))
                return false
            }
            if done { continuation.resume() }
        }
    }
}

/// Holds an event loop busy until released, so work queued for it piles up.
private final class LoopBlocker: Sendable {
    private let semaphore = DispatchSemaphore(value: 0)
    private let started = DispatchSemaphore(value: 0)

    init(_ loop: any EventLoop) {
        loop.execute { [semaphore, started] in
            started.signal()
            semaphore.wait()
        }
        started.wait()
    }

    func release() {
        semaphore.signal()
    }
}

/// Returns once everything queued on `loop` before the call has run.
private func drain(_ loop: any EventLoop) async throws {
    try await loop.submit {}.get()
}

private func payload(_ text: String) -> ByteBuffer {
    ByteBuffer(string: text)
}

private func makeNode() -> Node {
    Node(id: "hub-tests", bus: InMemoryBus(), logger: Logger(label: "HubTests"))
}

@Suite("Hub")
struct HubTests {
    @Test("add and remove report the first and the last local subscriber")
    func bookkeeping() {
        let node = makeNode()
        let hub = Hub()
        let loop = MultiThreadedEventLoopGroup.singleton.next()
        let first = node.makeClient(transport: CountingTransport(eventLoop: loop))
        let second = node.makeClient(transport: CountingTransport(eventLoop: loop))

        #expect(hub.topicCount == 0)
        #expect(hub.add(first, to: "t"))
        #expect(!hub.add(second, to: "t"))
        #expect(!hub.add(second, to: "t"))  // idempotent
        #expect(hub.subscriberCount(of: "t") == 2)
        #expect(hub.add(first, to: "u"))
        #expect(hub.topicCount == 2)

        #expect(!hub.remove(first, from: "missing"))
        #expect(!hub.remove(first, from: "t"))
        #expect(hub.subscriberCount(of: "t") == 1)
        #expect(hub.remove(second, from: "t"))
        #expect(hub.subscriberCount(of: "t") == 0)
        #expect(!hub.remove(second, from: "t"))
        #expect(hub.remove(first, from: "u"))
        #expect(hub.topicCount == 0)
    }

    @Test("a delivery reaches every subscriber of the topic on every event loop, and nobody else")
    func fanOutAcrossLoops() async throws {
        let group = MultiThreadedEventLoopGroup(numberOfThreads: 4)
        let node = makeNode()
        let hub = Hub()
        var subscribers: [RecordingTransport] = []
        var others: [RecordingTransport] = []
        for index in 0..<40 {
            let transport = RecordingTransport(eventLoop: group.next())
            let client = node.makeClient(transport: transport)
            if index % 5 == 4 {
                hub.add(client, to: "other")
                others.append(transport)
            } else {
                hub.add(client, to: "topic")
                subscribers.append(transport)
            }
        }
        #expect(Set(subscribers.map { ObjectIdentifier($0.eventLoop) }).count == 4)

        for index in 0..<3 {
            hub.deliver(topic: "topic", payload: payload(#"{"n":\#(index)}"#))
        }
        hub.deliver(topic: "nobody", payload: payload("{}"))
        for transport in subscribers {
            for index in 0..<3 {
                #expect(try await transport.next() == ["n": .int(Int64(index))])
            }
        }
        for loop in group.makeIterator() { try await drain(loop) }
        for transport in subscribers + others {
            try await transport.expectNothing(for: .zero)
        }
        try await group.shutdownGracefully()
    }

    @Test("deliveries queued while a loop is busy are all written, in order, with one flush per connection")
    func batching() async throws {
        let group = MultiThreadedEventLoopGroup(numberOfThreads: 1)
        let loop = group.next()
        let node = makeNode()
        let hub = Hub()
        let transports = (0..<5).map { _ in CountingTransport(eventLoop: loop) }
        for transport in transports {
            hub.add(node.makeClient(transport: transport), to: "t")
        }

        let blocker = LoopBlocker(loop)
        let expected = (0..<500).map { "message \($0)" }
        for text in expected {
            hub.deliver(topic: "t", payload: payload(text))
        }
        blocker.release()
        try await drain(loop)

        for transport in transports {
            #expect(transport.payloads == expected)
            #expect(transport.flushes == 1)
            #expect(transport.unflushed == 0)
        }
        try await group.shutdownGracefully()
    }

    @Test("a batch with several topics gives each client exactly its topics' messages, in order")
    func batchingAcrossTopics() async throws {
        let group = MultiThreadedEventLoopGroup(numberOfThreads: 1)
        let loop = group.next()
        let node = makeNode()
        let hub = Hub()
        let onA = CountingTransport(eventLoop: loop)
        let onB = CountingTransport(eventLoop: loop)
        let onBoth = CountingTransport(eventLoop: loop)
        hub.add(node.makeClient(transport: onA), to: "a")
        hub.add(node.makeClient(transport: onB), to: "b")
        let both = node.makeClient(transport: onBoth)
        hub.add(both, to: "a")
        hub.add(both, to: "b")

        let blocker = LoopBlocker(loop)
        var expectedA: [String] = []
        var expectedB: [String] = []
        var expectedBoth: [String] = []
        for index in 0..<100 {
            let topic = index % 3 == 0 ? "b" : "a"
            let text = "\(topic)\(index)"
            hub.deliver(topic: topic, payload: payload(text))
            if topic == "a" { expectedA.append(text) } else { expectedB.append(text) }
            expectedBoth.append(text)
        }
        blocker.release()
        try await drain(loop)

        #expect(onA.payloads == expectedA)
        #expect(onB.payloads == expectedB)
        #expect(onBoth.payloads == expectedBoth)
        for transport in [onA, onB, onBoth] {
            #expect(transport.flushes == 1)
            #expect(transport.unflushed == 0)
        }
        try await group.shutdownGracefully()
    }

    @Test("concurrent publishers: every subscriber gets every message, each publisher's in its order")
    func concurrentDeliveries() async throws {
        let group = MultiThreadedEventLoopGroup(numberOfThreads: 3)
        let node = makeNode()
        let hub = Hub(writePolicy: .immediate)
        let transports = (0..<12).map { _ in CountingTransport(eventLoop: group.next()) }
        for transport in transports {
            hub.add(node.makeClient(transport: transport), to: "t")
        }
        let publishers = 8
        let perPublisher = 300
        await withTaskGroup(of: Void.self) { tasks in
            for publisher in 0..<publishers {
                tasks.addTask {
                    for index in 0..<perPublisher {
                        hub.deliver(topic: "t", payload: payload("\(publisher):\(index)"))
                    }
                }
            }
        }
        for loop in group.makeIterator() { try await drain(loop) }
        for transport in transports {
            let received = transport.payloads
            #expect(received.count == publishers * perPublisher)
            var last = [Int](repeating: -1, count: publishers)
            for text in received {
                let parts = text.split(separator: ":").compactMap { Int($0) }
                #expect(parts[1] == last[parts[0]] + 1, "out of order: \(text)")
                last[parts[0]] = parts[1]
            }
            #expect(transport.unflushed == 0)
        }
        try await group.shutdownGracefully()
    }

    @Test("membership changes take effect for the next delivery")
    func membershipChanges() async throws {
        let group = MultiThreadedEventLoopGroup(numberOfThreads: 1)
        let loop = group.next()
        let node = makeNode()
        let hub = Hub()
        let early = CountingTransport(eventLoop: loop)
        let late = CountingTransport(eventLoop: loop)
        let earlyClient = node.makeClient(transport: early)
        let lateClient = node.makeClient(transport: late)

        hub.add(earlyClient, to: "t")
        hub.deliver(topic: "t", payload: payload("1"))
        hub.add(lateClient, to: "t")
        hub.deliver(topic: "t", payload: payload("2"))
        hub.remove(earlyClient, from: "t")
        hub.deliver(topic: "t", payload: payload("3"))
        hub.remove(lateClient, from: "t")
        hub.deliver(topic: "t", payload: payload("4"))
        try await drain(loop)

        #expect(early.payloads == ["1", "2"])
        #expect(late.payloads == ["2", "3"])
        try await group.shutdownGracefully()
    }

    @Test("a delivery can skip one subscriber")
    func excluding() async throws {
        let group = MultiThreadedEventLoopGroup(numberOfThreads: 1)
        let loop = group.next()
        let node = makeNode()
        let hub = Hub()
        let skipped = CountingTransport(eventLoop: loop)
        let other = CountingTransport(eventLoop: loop)
        let skippedClient = node.makeClient(transport: skipped)
        hub.add(skippedClient, to: "t")
        hub.add(node.makeClient(transport: other), to: "t")
        hub.deliver(topic: "t", payload: payload("1"), excluding: skippedClient)
        hub.deliver(topic: "t", payload: payload("2"))
        try await drain(loop)
        #expect(skipped.payloads == ["2"])
        #expect(other.payloads == ["1", "2"])
        try await group.shutdownGracefully()
    }

    @Test("one frame is built per delivery and written unchanged to every subscriber")
    func sharedFrame() async throws {
        let group = MultiThreadedEventLoopGroup(numberOfThreads: 2)
        let node = makeNode()
        let hub = Hub()
        let transports = (0..<4).map { _ in RecordingTransport(eventLoop: group.next()) }
        for transport in transports { hub.add(node.makeClient(transport: transport), to: "t") }
        let text = #"{"service":"pubsub","message":{"type":"message","channel":"t","message":"é😀"}}"#
        hub.deliver(topic: "t", payload: payload(text))
        for transport in transports {
            _ = try await transport.next()
            #expect(transport.payloads == [text])
        }
        try await group.shutdownGracefully()
    }

    @Test("frames reach a connection in the order they were produced, direct sends and fan-out mixed")
    func directSendsAndFanOutStayOrdered() async throws {
        // PROTOCOL.md section 2: "frames are delivered in the order they were produced".
        // A direct send (a response) produced between two publications must stay between
        // them, even when the first publication's batch has not been written yet.
        let group = MultiThreadedEventLoopGroup(numberOfThreads: 1)
        let loop = group.next()
        let node = makeNode()
        // The node's own hub: responses and fan-out share its per-loop writer.
        let hub = node.hub
        let transport = CountingTransport(eventLoop: loop)
        let client = node.makeClient(transport: transport)
        hub.add(client, to: "t")

        let blocker = LoopBlocker(loop)
        hub.deliver(topic: "t", payload: payload("notification 1"))
        client.send(OutboundFrame(payload: Array("response".utf8)))
        hub.deliver(topic: "t", payload: payload("notification 2"))
        blocker.release()
        try await drain(loop)

        #expect(transport.payloads == ["notification 1", "response", "notification 2"])
        try await group.shutdownGracefully()
    }
}

extension HubTests {
    @Suite("Hub: coalescing writes to busy connections", .timeLimit(.minutes(1)))
    struct WriteCoalescing {
        /// A policy that coalesces at any load, with `maxWriteDelay` and `flushThreshold`.
        private static func alwaysCoalescing(_ delay: TimeAmount, flushThreshold: Int = 16 * 1024) -> WritePolicy {
            WritePolicy(maxWriteDelay: delay, flushThreshold: flushThreshold, coalescingRate: 0)
        }

        /// One subscriber of "t" on a hub with `policy`, on a loop of its own.
        private static func setUp(_ policy: WritePolicy) -> (MultiThreadedEventLoopGroup, Hub, Client, CountingTransport) {
            let group = MultiThreadedEventLoopGroup(numberOfThreads: 1)
            let hub = Hub(writePolicy: policy)
            let transport = CountingTransport(eventLoop: group.next())
            let client = makeNode().makeClient(transport: transport)
            hub.add(client, to: "t")
            return (group, hub, client, transport)
        }

        @Test("a connection that was quiet is written at once")
        func quietConnectionIsFlushedAtOnce() async throws {
            let (group, hub, _, transport) = Self.setUp(Self.alwaysCoalescing(.seconds(3600)))
            hub.deliver(topic: "t", payload: payload("1"))
            try await drain(group.next())
            #expect(transport.events == ["1", "flush"])
            try await group.shutdownGracefully()
        }

        @Test("frames for a connection flushed moments ago wait and go out together, after the delay")
        func busyConnectionIsCoalesced() async throws {
            // Long enough that the three deliveries below surely land within it, even on a
            // loaded machine; the test waits it out once.
            let delay = TimeAmount.seconds(3)
            let (group, hub, _, transport) = Self.setUp(Self.alwaysCoalescing(delay))
            let loop = group.next()
            let start = NIODeadline.now()  // the first flush happens after this
            hub.deliver(topic: "t", payload: payload("1"))
            try await drain(loop)
            for text in ["2", "3", "4"] {
                hub.deliver(topic: "t", payload: payload(text))
                try await drain(loop)
            }
            #expect(transport.flushes == 1)

            await transport.waitForFlushes(2)
            #expect(NIODeadline.now() - start >= delay)
            #expect(transport.events == ["1", "flush", "2", "3", "4", "flush"])
            try await group.shutdownGracefully()
        }

        @Test("past the byte threshold a busy connection is flushed without waiting")
        func thresholdFlushesEarly() async throws {
            let (group, hub, _, transport) = Self.setUp(Self.alwaysCoalescing(.seconds(3600), flushThreshold: 100))
            let loop = group.next()
            hub.deliver(topic: "t", payload: payload("1"))
            try await drain(loop)
            hub.deliver(topic: "t", payload: payload("2"))
            try await drain(loop)
            #expect(transport.flushes == 1)
            let large = String(repeating: "x", count: 150)
            hub.deliver(topic: "t", payload: payload(large))
            try await drain(loop)
            #expect(transport.events == ["1", "flush", "2", large, "flush"])
            try await group.shutdownGracefully()
        }

        @Test("on a quiet loop no frame waits, however close together a connection's frames come")
        func quietLoopNeverDelays() async throws {
            // The default rate (20,000 frames/s) and a delay that would hold every frame
            // after the first for an hour if it applied.
            let (group, hub, _, transport) = Self.setUp(WritePolicy(maxWriteDelay: .seconds(3600)))
            let loop = group.next()
            for text in ["1", "2", "3"] {
                hub.deliver(topic: "t", payload: payload(text))
                try await drain(loop)
            }
            #expect(transport.events == ["1", "flush", "2", "flush", "3", "flush"])
            try await group.shutdownGracefully()
        }

        @Test("once its loop writes coalescingRate frames a second, a busy connection's frames wait")
        func busyLoopDelays() async throws {
            // 10,000 frames/s over the 100 ms load window: 1,000 frames make the loop busy.
            let (group, hub, _, transport) = Self.setUp(WritePolicy(maxWriteDelay: .seconds(3600), coalescingRate: 10_000))
            let loop = group.next()
            let node = makeNode()
            for _ in 0..<100 {
                hub.add(node.makeClient(transport: CountingTransport(eventLoop: loop)), to: "bulk")
            }
            hub.deliver(topic: "t", payload: payload("1"))
            try await drain(loop)

            // 900 frames for others in the same batch as "2": 902 in all, not busy, no wait.
            var blocker = LoopBlocker(loop)
            for _ in 0..<9 { hub.deliver(topic: "bulk", payload: payload("x")) }
            hub.deliver(topic: "t", payload: payload("2"))
            blocker.release()
            try await drain(loop)
            #expect(transport.events == ["1", "flush", "2", "flush"])

            // 1,000 in the batch of "3", so in the current window whatever the clock did:
            // busy, and "t", flushed moments ago, waits.
            blocker = LoopBlocker(loop)
            for _ in 0..<10 { hub.deliver(topic: "bulk", payload: payload("x")) }
            hub.deliver(topic: "t", payload: payload("3"))
            blocker.release()
            try await drain(loop)
            #expect(transport.events == ["1", "flush", "2", "flush", "3"])
            try await group.shutdownGracefully()
        }

        @Test("a close sends the frames still waiting before it")
        func closeSendsWaitingFramesFirst() async throws {
            let (group, hub, client, transport) = Self.setUp(Self.alwaysCoalescing(.seconds(3600)))
            let loop = group.next()
            hub.deliver(topic: "t", payload: payload("1"))
            try await drain(loop)
            hub.deliver(topic: "t", payload: payload("2"))
            hub.close(client, code: 1001, reason: "Going away")
            try await drain(loop)
            #expect(transport.events == ["1", "flush", "2", "flush", "close 1001"])
            try await group.shutdownGracefully()
        }
    }
}

extension HubTests {
    @Suite("Node: fan-out across event loops over the in-memory bus")
    struct NodeFanOut {
        @Test("a publication reaches subscribers on several loops; the bus topic is held once")
        func publishAcrossLoops() async throws {
            let group = MultiThreadedEventLoopGroup(numberOfThreads: 3)
            let bus = InMemoryBus()
            let node = Node(id: "fanout", bus: bus, logger: Logger(label: "HubTests"))
            try await node.start()
            let baseline = bus.subscribedTopics
            var transports: [RecordingTransport] = []
            for _ in 0..<9 {
                let transport = RecordingTransport(eventLoop: group.next())
                let client = node.makeClient(transport: transport)
                #expect(await node.subscribe(client, to: "topic"))
                #expect(!(await node.subscribe(client, to: "topic")))
                transports.append(transport)
            }
            #expect(bus.subscribedTopics.subtracting(baseline) == ["topic"])
            #expect(node.hub.subscriberCount(of: "topic") == 9)

            try await node.broadcast(service: "svc", message: ["n": 1], topic: "topic")
            try await node.publish(topic: "topic", envelope: Array(#"{"raw":true}"#.utf8))
            try await node.publish(topic: "elsewhere", envelope: Array("{}".utf8))
            for transport in transports {
                #expect(try await transport.next() == ["service": "svc", "message": ["n": 1]])
                #expect(try await transport.next() == ["raw": true])
            }
            #expect(transports[0].payloads.first == #"{"service":"svc","message":{"n":1}}"#)
            await node.shutdown()
            try await group.shutdownGracefully()
        }
    }
}
