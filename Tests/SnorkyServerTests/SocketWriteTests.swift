import SnorkyProtocol
import SnorkyTesting
import Testing

/// A connection's frames go straight to its socket while the channel has nothing queued,
/// and through the channel's queue otherwise (see `WebSocketConnectionHandler.send`). These
/// tests cross that boundary both ways under a client that stops reading.
@Suite("Live worker: writes to a client that stops reading")
struct SocketWriteTests {
    /// About 1 KB per frame: a few hundred of them are more than the kernels hold for a
    /// reader with a small receive buffer, and less than the outbound limit (1 MiB).
    static let padding = String(repeating: "x", count: 1_000)

    @Test("frames queued while the client does not read, and frames published as it reads again, arrive complete and in order")
    func orderAcrossTheQueue() async throws {
        let (live, reader) = try await startWithStalledReader()

        // The next 300 are published while the reader drains: each one is sent while the
        // channel may still hold earlier frames and the socket may already have room.
        let total = 2 * Self.queued
        let publisher = Task {
            for seq in Self.queued..<total { try await publish(seq, on: live) }
        }
        try await reader.resumeReading()
        for seq in 0..<total {
            let notification = try await reader.nextJSON()
            try #require(
                notification == pubsubNotification(channel: "ordered", message: message(seq)),
                "frame \(seq): \(notification.encodedString().prefix(120))")
        }
        try await publisher.value
        // Everything is written: sends go straight to the socket again, and are answered.
        try await reader.expectUsable()
        for seq in total..<(total + 3) {
            try await publish(seq, on: live)
            #expect(try await reader.nextJSON() == pubsubNotification(channel: "ordered", message: message(seq)))
        }
        await live.shutdown()
    }

    @Test("a pong owed to a client that does not read follows the frames queued before it")
    func pongBehindTheQueue() async throws {
        let (live, reader) = try await startWithStalledReader()
        try await reader.ping(payload: Array("after".utf8))
        try await reader.resumeReading()
        for seq in 0..<Self.queued {
            let notification = try await reader.nextJSON()
            try #require(notification == pubsubNotification(channel: "ordered", message: message(seq)), "frame \(seq)")
        }
        #expect(try await reader.next() == .pong)
        try await reader.expectUsable()
        await live.shutdown()
    }

    /// Publications made while the reader does not read: ~300 KB, so the kernels fill up and
    /// the rest waits in the channel.
    static let queued = 300

    /// A worker, and a subscriber with a small receive buffer and segment size (so neither
    /// kernel holds much for it) that stopped reading before `queued` publications.
    private func startWithStalledReader() async throws -> (LiveWorker, WebSocketTestClient) {
        let live = try await LiveWorker.start(threads: 1)
        let reader = try await WebSocketTestClient.connect(
            host: "127.0.0.1", port: live.port, receiveBufferSize: 4096, maximumSegmentSize: 536)
        #expect(try await reader.request("pubsub", "subscribe", ["channel": "ordered"], callId: 1) == rpcResponse("pubsub", callId: 1))
        try await reader.pauseReading()
        for seq in 0..<Self.queued { try await publish(seq, on: live) }
        return (live, reader)
    }

    private func message(_ seq: Int) -> JSON {
        ["seq": .int(Int64(seq)), "padding": .string(Self.padding)]
    }

    private func publish(_ seq: Int, on live: LiveWorker) async throws {
        let body: JSON = [
            "service": "pubsub_backend",
            "message": ["command": "publish", "params": ["channel": "ordered", "message": message(seq)], "callId": 1],
        ]
        let response = try await live.backend(body.encodedString())
        try #require(response.status == 200, "publication \(seq): \(response.status) \(response.body)")
    }
}
