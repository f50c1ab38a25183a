import Foundation
import SnorkyProtocol
import SnorkyTesting
import Synchronization
import Testing

/// The outbound-buffer limit under real load (issue #7): a client that stops reading is
/// closed with 4001 while every other client keeps getting every message, and the worker's
/// memory stays bounded.
///
/// 500 readers × 10,000 publications are 5 million deliveries, so the test keeps its own
/// share of the work small: readers do not decode frames into events but match the raw
/// bytes they read against the exact frames the worker must send; ten publishers share the
/// 10,000 publications, so the worker writes (and readers read) several frames at a time
/// (one connection's requests are handled one after the other, so a single publisher would
/// make every delivery its own write); and no publisher runs more than `window`
/// publications ahead of the slowest reader.
@Suite("Cluster: slow consumer")
struct SlowConsumerTests {
    static let readers = 500
    static let publishers = 10
    /// 10,000 publications in all, on one channel.
    static let publicationsPerPublisher = 1_000
    /// Bytes of each publication's `message` string. The non-reader is sent about 2.9 MB in
    /// all, several times what the kernels hold for it (its small receive buffer and
    /// segment size keep that to ~160 KB) plus the outbound limit.
    static let payloadSize = 200
    /// The worker's `max_outbound_buffer` here, a quarter of the default.
    static let outboundLimit = 256 * 1024
    /// Each publisher stays at most `window` (+ one checkpoint) publications ahead of the
    /// slowest reader: at most 10 × 50 frames (~145 KB) wait for a reader even if its kernel
    /// buffers held nothing, under the limit, so on a loaded machine only the non-reader
    /// reaches it.
    static let window = 40
    static let checkpointEvery = 10

    @Test(
        "one client that never reads among 500 that do, 10,000 publications: it is closed with 4001, the others get every message in order, the worker's RSS stays bounded",
        .timeLimit(.minutes(10)))
    func slowConsumerAmongReaders() async throws {
        try await withCluster(
            workers: 1, redis: nil,
            // The publishers pipeline far faster than a browser would.
            arguments: ["--max-requests-per-second", "0"],
            environment: [
                "SNORKY_MAX_OUTBOUND_BUFFER": "\(Self.outboundLimit)",
                // Readers only read, for minutes: no keepalive pings, which the raw byte
                // comparison would not answer, and no other reason to close the non-reader.
                "SNORKY_PING_INTERVAL": "3600",
            ]
        ) { cluster in
            let worker = try await cluster.statsOnce()
            let channel: JSON = "slow-consumer"
            let frames = ExpectedFrames(
                channel: channel, publishers: Self.publishers, count: Self.publicationsPerPublisher, payloadSize: Self.payloadSize)
            let subscribed = Progress()
            let checkpoints = (0..<Self.publishers).map { _ in
                (0..<(Self.publicationsPerPublisher / Self.checkpointEvery)).map { _ in Progress() }
            }

            // 500 readers, each checking its bytes as they arrive.
            let readers = try await connectReaders(
                cluster, channel: channel, frames: frames, subscribed: subscribed, checkpoints: checkpoints)
            try await subscribed.wait(atLeast: Self.readers, timeout: .seconds(60), "readers subscribed")
            // The non-reader: a small receive buffer and segment size, so neither kernel holds
            // much for it (see `WebSocketTestClient.connect`); subscribed, then never reads.
            let nonReader = try await WebSocketTestClient.connect(
                host: cluster.host, port: cluster.wsPort, receiveBufferSize: 4096, maximumSegmentSize: 536)
            try await nonReader.subscribe(channel)
            try await nonReader.pauseReading()

            var publishers: [WebSocketTestClient] = []
            for _ in 0..<Self.publishers { publishers.append(try await cluster.connect()) }

            let baselineRSS = try residentKiB(worker.pid)
            let peakRSS = try await withThrowingTaskGroup(of: Int.self) { group in
                for (publisher, client) in publishers.enumerated() {
                    group.addTask {
                        try await self.publish(
                            as: publisher, channel: channel, from: client, checkpoints: checkpoints[publisher],
                            readers: readers, sampleRSSOf: publisher == 0 ? worker.pid : nil)
                    }
                }
                return try await group.reduce(baselineRSS, max)
            }
            // Every reader got every publisher's last publication, so it got all of them in order.
            for publisher in 0..<Self.publishers {
                try await checkpoints[publisher].last!.wait(
                    atLeast: Self.readers, timeout: .seconds(60), "readers at publisher \(publisher)'s last publication")
            }
            for (index, reader) in readers.enumerated() {
                #expect(reader.check.failure == nil, "reader \(index): \(reader.check.failure ?? "")")
                #expect(reader.check.receivedAll, "reader \(index)")
            }

            // The worker closed one connection, the non-reader, as a slow consumer, and
            // dropped it (and its buffers) within the closing grace period.
            let (metrics, text, _) = try await cluster.metricsOnce()
            let closes = metrics.samples("snorky_connection_closes_total", ["worker": "0"]).filter { $0.value > 0 }
            #expect(closes.map(\.labels) == [["worker": "0", "reason": "slow_consumer"]], "\(text)")
            #expect(closes.map(\.value) == [1])
            let lastCount = Locked<Int64?>(nil)
            do {
                try await eventually(timeout: .seconds(15), "the worker drops the non-reader") {
                    let count = try await rawStats(cluster)["connections"]?.int64Value
                    lastCount.withLock { $0 = count }
                    return count == Int64(Self.readers + Self.publishers)
                }
            } catch {
                throw ClusterFixtureError("\(error): the worker has \(lastCount.value.map(String.init) ?? "?") connections")
            }
            try await nonReader.resumeReading()
            try await nonReader.waitForDisconnect()
            for client in readers.map(\.client) + publishers { #expect(client.isConnected) }

            // 5 million deliveries, 1.4 GB: a worker that kept delivered frames, or queued
            // without bound, would grow by far more than this.
            #expect(peakRSS - baselineRSS < 32 * 1024, "worker RSS grew from \(baselineRSS) KiB to \(peakRSS) KiB")
        }
    }

    private struct Reader {
        var client: WebSocketTestClient
        var check: DeliveryCheck
    }

    private func connectReaders(
        _ cluster: SnorkyCluster,
        channel: JSON,
        frames: ExpectedFrames,
        subscribed: Progress,
        checkpoints: [[Progress]]
    ) async throws -> [Reader] {
        try await withThrowingTaskGroup(of: Reader.self) { group in
            var readers: [Reader] = []
            var started = 0
            func connectOne() {
                started += 1
                group.addTask {
                    let check = DeliveryCheck(
                        frames: frames, subscribed: subscribed, checkpoints: checkpoints, every: Self.checkpointEvery)
                    let client = try await WebSocketTestClient.connect(
                        host: cluster.host, port: cluster.wsPort, rawInbound: check.consume)
                    try await client.send("pubsub", "subscribe", ["channel": channel], callId: 1)
                    return Reader(client: client, check: check)
                }
            }
            while started < min(50, Self.readers) { connectOne() }
            while let reader = try await group.next() {
                readers.append(reader)
                if started < Self.readers { connectOne() }
            }
            return readers
        }
    }

    /// Publishes one publisher's share, keeping 16 requests in flight and never more than
    /// `window` publications ahead of the slowest reader. Returns the largest RSS it saw of
    /// `sampleRSSOf` (sampled at each checkpoint), or 0.
    private func publish(
        as publisher: Int,
        channel: JSON,
        from client: WebSocketTestClient,
        checkpoints: [Progress],
        readers: [Reader],
        sampleRSSOf pid: Int32?
    ) async throws -> Int {
        let inFlight = 16
        var answered = 0
        var peakRSS = 0
        func awaitAnswer() async throws {
            let reply = try await client.nextText(timeout: .seconds(60))
            let expected = Envelope(
                service: "pubsub", message: RPCMessage.response(callId: .int(Int64(answered)), data: nil)
            ).json.encodedString()
            guard reply == expected else {
                throw ClusterFixtureError("publisher \(publisher), publication \(answered): expected \(expected), got \(reply)")
            }
            answered += 1
        }
        for seq in 0..<Self.publicationsPerPublisher {
            if seq % Self.checkpointEvery == 0 {
                let behind = seq - Self.window
                if behind >= 0 {
                    do {
                        try await checkpoints[behind / Self.checkpointEvery].wait(
                            atLeast: Self.readers, timeout: .seconds(60), "readers at publisher \(publisher)'s publication \(behind)")
                    } catch {
                        let failures = readers.enumerated().compactMap { index, reader in
                            reader.check.failure.map { "reader \(index): \($0)" }
                        }
                        throw ClusterFixtureError("\(error); reader failures: \(failures.prefix(5))")
                    }
                }
                if let pid { peakRSS = max(peakRSS, try residentKiB(pid)) }
            }
            if seq - answered >= inFlight { try await awaitAnswer() }
            let message = ExpectedFrames.payload(publisher: publisher, seq: seq, size: Self.payloadSize)
            try await client.send(
                "pubsub", "publish", ["channel": channel, "message": .string(message)], callId: .int(Int64(seq)))
        }
        while answered < Self.publicationsPerPublisher { try await awaitAnswer() }
        return peakRSS
    }

    private func rawStats(_ cluster: SnorkyCluster) async throws -> JSON {
        let response = try await HTTPTestClient.get(
            host: cluster.host, port: cluster.backendPort, path: "/stats",
            headers: [("X-Backend-Key", SnorkyCluster.backendKey)], timeout: .seconds(10))
        guard response.status == 200 else { throw ClusterFixtureError("GET /stats: \(response.status) \(response.body)") }
        return try JSON.parse(response.body)
    }
}

/// The exact frames a reader subscribed with call id 1 must receive: the reply, then each
/// publisher's notifications in that publisher's order (publishers interleave freely).
private struct ExpectedFrames: Sendable {
    /// The subscribe reply's frame.
    let reply: [UInt8]
    /// Per publisher, its notification frames back to back...
    let bytes: [[UInt8]]
    /// ...and where each starts: frame `k` of publisher `p` is `bytes[p][starts[p][k]..<starts[p][k + 1]]`.
    let starts: [[Int]]

    init(channel: JSON, publishers: Int, count: Int, payloadSize: Int) {
        reply = Self.textFrame(Envelope(service: "pubsub", message: RPCMessage.response(callId: 1, data: nil)))
        var bytes: [[UInt8]] = []
        var starts: [[Int]] = []
        for publisher in 0..<publishers {
            var stream: [UInt8] = []
            var offsets = [0]
            for seq in 0..<count {
                let message = JSON.string(Self.payload(publisher: publisher, seq: seq, size: payloadSize))
                stream += Self.textFrame(Envelope(
                    service: "pubsub", message: ["type": "message", "channel": channel, "message": message]))
                offsets.append(stream.count)
            }
            bytes.append(stream)
            starts.append(offsets)
        }
        self.bytes = bytes
        self.starts = starts
    }

    var publishers: Int { bytes.count }
    var count: Int { starts[0].count - 1 }

    static func payload(publisher: Int, seq: Int, size: Int) -> String {
        let head = "\(publisher):\(seq):"
        return head + String(repeating: "x", count: size - head.utf8.count)
    }

    /// RFC 6455 framing of a server's (unmasked) text frame holding `envelope`.
    private static func textFrame(_ envelope: Envelope) -> [UInt8] {
        let payload = Array(envelope.json.encodedString().utf8)
        precondition(payload.count <= Int(UInt16.max))
        let header: [UInt8] =
            payload.count < 126 ? [0x81, UInt8(payload.count)] : [0x81, 126, UInt8(payload.count >> 8), UInt8(payload.count & 0xFF)]
        return header + payload
    }
}

/// One reader's check, run on its connection's event loop for every read: first the
/// subscribe reply, byte for byte, then whole frames, each of which must be the next
/// expected frame of one of the publishers. Nothing but an incomplete frame is buffered.
private final class DeliveryCheck: Sendable {
    private struct State {
        var replyMatched = 0
        /// Bytes of a frame that is not complete yet.
        var partial: [UInt8] = []
        var next: [Int]
        var failure: String?
    }

    private let state: Mutex<State>
    private let frames: ExpectedFrames
    private let subscribed: Progress
    private let checkpoints: [[Progress]]
    private let every: Int

    init(frames: ExpectedFrames, subscribed: Progress, checkpoints: [[Progress]], every: Int) {
        self.state = Mutex(State(next: Array(repeating: 0, count: frames.publishers)))
        self.frames = frames
        self.subscribed = subscribed
        self.checkpoints = checkpoints
        self.every = every
    }

    var failure: String? { state.withLock { $0.failure } }
    var receivedAll: Bool {
        state.withLock { state in state.next.allSatisfy { $0 == frames.count } && state.partial.isEmpty }
    }

    /// The client's `rawInbound`.
    func consume(_ received: UnsafeRawBufferPointer) {
        var reachedReply = false
        var reached: [(publisher: Int, checkpoint: Int)] = []
        state.withLock { state in
            guard state.failure == nil else { return }
            var input = received[...]
            if state.replyMatched < frames.reply.count {
                let length = min(input.count, frames.reply.count - state.replyMatched)
                guard input.prefix(length).elementsEqual(frames.reply[state.replyMatched..<(state.replyMatched + length)]) else {
                    state.failure = "the subscribe reply differs: got \(String(decoding: input.prefix(120), as: UTF8.self))"
                    return
                }
                state.replyMatched += length
                input = input.dropFirst(length)
                reachedReply = state.replyMatched == frames.reply.count
            }
            state.partial += input
            var position = 0
            while let frameLength = Self.frameLength(state.partial, at: position) {
                guard let frameLength else {
                    let text = String(decoding: state.partial[position...].prefix(40), as: UTF8.self)
                    state.failure = "not an unfragmented text frame under 64 KiB: \(text)"
                    return
                }
                guard position + frameLength <= state.partial.count else { break }
                guard let publisher = match(state.partial, at: position, length: frameLength, next: state.next) else {
                    let text = String(decoding: state.partial[position..<(position + min(frameLength, 120))], as: UTF8.self)
                    state.failure = "a frame that is no publisher's next publication (next: \(state.next)): \(text)"
                    return
                }
                state.next[publisher] += 1
                if state.next[publisher] % every == 0 { reached.append((publisher, state.next[publisher] / every - 1)) }
                position += frameLength
            }
            state.partial.removeFirst(position)
        }
        if reachedReply { subscribed.add() }
        for (publisher, checkpoint) in reached { checkpoints[publisher][checkpoint].add() }
    }

    /// The whole length (header and payload) of the frame starting at `position`: nil while
    /// its header is incomplete, `.some(nil)` if it is not what the worker sends here (an
    /// unmasked, unfragmented text frame under 64 KiB).
    private static func frameLength(_ bytes: [UInt8], at position: Int) -> Int?? {
        guard bytes.count - position >= 2 else { return nil }
        guard bytes[position] == 0x81, bytes[position + 1] & 0x80 == 0 else { return .some(nil) }
        let length = Int(bytes[position + 1])
        if length < 126 { return 2 + length }
        guard length == 126 else { return .some(nil) }
        guard bytes.count - position >= 4 else { return nil }
        return 4 + (Int(bytes[position + 2]) << 8 | Int(bytes[position + 3]))
    }

    /// The publisher whose next expected frame is `bytes[position..<position + length]`.
    private func match(_ bytes: [UInt8], at position: Int, length: Int, next: [Int]) -> Int? {
        bytes.withUnsafeBufferPointer { received in
            for publisher in 0..<frames.publishers where next[publisher] < frames.count {
                let start = frames.starts[publisher][next[publisher]]
                guard frames.starts[publisher][next[publisher] + 1] - start == length else { continue }
                let equal = frames.bytes[publisher].withUnsafeBufferPointer { expected in
                    memcmp(received.baseAddress! + position, expected.baseAddress! + start, length) == 0
                }
                if equal { return publisher }
            }
            return nil
        }
    }
}

/// The resident set size of process `pid` in KiB, from /proc/PID/status (VmRSS).
private func residentKiB(_ pid: Int32) throws -> Int {
    let status = try String(contentsOfFile: "/proc/\(pid)/status", encoding: .utf8)
    guard let line = status.split(separator: "\n").first(where: { $0.hasPrefix("VmRSS:") }),
        let kib = line.split(whereSeparator: \.isWhitespace).dropFirst().first.flatMap({ Int($0) })
    else { throw ClusterFixtureError("no VmRSS in /proc/\(pid)/status") }
    return kib
}
