import Snorky
import SnorkyProtocol
import SnorkyServer
import SnorkyServices
import SnorkyTesting
import Testing

/// The per-worker and per-connection limits (docs/protocol.md), over real sockets. Waits
/// are bounded by events (a close frame, a reply); the only timings are the server's own keepalive settings, which tests make short.
@Suite("Live worker: limits")
struct LimitsTests {
    // MARK: Keepalive

    @Test("a client that answers no pings and stays silent is closed with 4002")
    func silentClientClosed() async throws {
        let live = try await LiveWorker.start(configure: {
            $0.pingInterval = .milliseconds(200)
            $0.pongTimeout = .milliseconds(200)
        })
        let silent = try await WebSocketTestClient.connect(host: "127.0.0.1", port: live.port, answersPings: false)
        // The server pings first (the client does not answer), then closes.
        #expect(try await silent.expectClose(ignoringOtherEvents: true) == CloseCode.keepaliveTimeout)
        await live.shutdown()
    }

    @Test("a client that answers pings stays open across several keepalive intervals")
    func answeringClientStaysOpen() async throws {
        // A pong must come back within the timeout; on two loaded cores 200 ms is not always
        // enough, so this test gives it 1.5 s.
        let live = try await LiveWorker.start(configure: {
            $0.pingInterval = .milliseconds(200)
            $0.pongTimeout = .milliseconds(1500)
        })
        let answering = try await live.connect()
        // A silent client in the same worker marks the time: once it has been closed for
        // keepalive, the answering one has been pinged and answered at least once.
        for _ in 0..<3 {
            let silent = try await WebSocketTestClient.connect(host: "127.0.0.1", port: live.port, answersPings: false)
            #expect(try await silent.expectClose(ignoringOtherEvents: true) == CloseCode.keepaliveTimeout)
        }
        #expect(answering.isConnected)
        try await answering.expectUsable("the client answering pings was closed")
        await live.shutdown()
    }

    // MARK: Subscriptions per connection

    @Test("past maxSubscriptionsPerClient pubsub answers Too many subscriptions; unsubscribing frees a place")
    func subscriptionLimit() async throws {
        var node = NodeConfiguration()
        node.maxSubscriptionsPerClient = 3
        let live = try await LiveWorker.start(node: node)
        let client = try await live.connect()
        for n in 0..<3 {
            #expect(try await client.request("pubsub", "subscribe", ["channel": .int(Int64(n))], callId: .int(Int64(n)))
                == rpcResponse("pubsub", callId: .int(Int64(n))))
        }
        #expect(try await client.request("pubsub", "subscribe", ["channel": 3], callId: "over")
            == rpcError("pubsub", callId: "over", "Too many subscriptions"))
        // The refused channel was not subscribed: a publication on it does not arrive.
        let publisher = try await live.connect()
        #expect(try await publisher.request("pubsub", "publish", ["channel": 3, "message": "lost"], callId: 1)
            == rpcResponse("pubsub", callId: 1))
        try await client.expectUsable("a notification arrived for a refused subscription")
        // Another connection has its own allowance.
        #expect(try await publisher.request("pubsub", "subscribe", ["channel": 3], callId: 2) == rpcResponse("pubsub", callId: 2))

        #expect(try await client.request("pubsub", "unsubscribe", ["channel": 0], callId: "u") == rpcResponse("pubsub", callId: "u"))
        #expect(try await client.request("pubsub", "subscribe", ["channel": 3], callId: "again") == rpcResponse("pubsub", callId: "again"))
        #expect(try await publisher.request("pubsub", "publish", ["channel": 3, "message": "found"], callId: 3)
            == pubsubNotification(channel: 3, message: "found"))
        #expect(try await publisher.nextJSON() == rpcResponse("pubsub", callId: 3))
        #expect(try await client.nextJSON() == pubsubNotification(channel: 3, message: "found"))
        await live.shutdown()
    }

    // MARK: Allowed origins

    @Test("with allowedOrigins an upgrade from another Origin gets 403; a listed Origin or none connects")
    func allowedOrigins() async throws {
        let live = try await LiveWorker.start(configure: { $0.allowedOrigins = ["https://app.example.com", "https://other.example.com"] })
        let allowed = try await WebSocketTestClient.connect(
            host: "127.0.0.1", port: live.port, headers: [("Origin", "https://app.example.com")])
        try await allowed.expectUsable("listed origin")
        let noOrigin = try await live.connect()
        try await noOrigin.expectUsable("no Origin header")
        for origin in ["https://evil.example.com", "http://app.example.com", "null"] {
            await #expect {
                _ = try await WebSocketTestClient.connect(host: "127.0.0.1", port: live.port, headers: [("Origin", origin)])
            } throws: { error in
                guard case WebSocketTestClientError.upgradeRejected(let status, _) = error else { return false }
                return status == 403
            }
        }
        await live.shutdown()
    }
}
