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

    // MARK: Request rate

    @Test("a flood of messages or pings past the burst is closed with 4004; a client at the rate and a bystander are served")
    func requestRateLimit() async throws {
        let live = try await LiveWorker.start(configure: {
            $0.maxRequestsPerSecond = 20
            $0.requestBurst = 10
        })
        let bystander = try await live.connect()
        let steady = try await live.connect()
        let flooder = try await live.connect()
        let pinger = try await live.connect()

        // The steady client sends 30 requests, three times its burst, at half the allowed
        // rate, while the others flood. A loaded machine only makes it slower.
        let steadyRun = Task {
            for index in 0..<30 {
                let callId = JSON.int(Int64(index))
                #expect(try await steady.request("pubsub", "unsubscribe", ["channel": "none"], callId: callId)
                    == rpcError("pubsub", callId: callId, "Not subscribed"))
                try await Task.sleep(for: .milliseconds(100))
            }
        }

        // 200 requests back to back: far more than the burst plus what the rate refills while
        // they are sent. Sends fail once the server has closed the connection.
        for index in 0..<200 {
            do {
                try await flooder.call("pubsub", "unsubscribe", ["channel": "none"], callId: .int(Int64(index)))
            } catch WebSocketTestClientError.connectionClosed {
                break
            }
        }
        #expect(try await flooder.expectClose(ignoringOtherEvents: true) == CloseCode.rateLimited)
        for _ in 0..<200 {
            do { try await pinger.ping() } catch WebSocketTestClientError.connectionClosed { break }
        }
        #expect(try await pinger.expectClose(ignoringOtherEvents: true) == CloseCode.rateLimited)

        try await steadyRun.value
        try await bystander.expectUsable("the bystander was affected by the flood")
        try await steady.expectUsable("the client at the allowed rate was closed")
        #expect(try await live.closes("rate_limited") == 2)
        await live.shutdown()
    }

    @Test("maxRequestsPerSecond 0 lifts the limit")
    func requestRateUnlimited() async throws {
        let live = try await LiveWorker.start(configure: {
            $0.maxRequestsPerSecond = 0
            $0.requestBurst = 1
        })
        let client = try await live.connect()
        for index in 0..<300 {
            try await client.call("pubsub", "unsubscribe", ["channel": "none"], callId: .int(Int64(index)))
        }
        for index in 0..<300 {
            #expect(try await client.nextJSON() == rpcError("pubsub", callId: .int(Int64(index)), "Not subscribed"))
        }
        await live.shutdown()
    }

    // MARK: Connections per worker

    @Test("with maxConnections 3 the fourth connection is closed with 4003, the first three keep working, and a place that frees up is taken")
    func connectionLimit() async throws {
        let live = try await LiveWorker.start(configure: { $0.maxConnections = 3 })
        var admitted: [WebSocketTestClient] = []
        for _ in 0..<3 {
            let client = try await live.connect()
            try await client.expectUsable("a connection under the limit")
            admitted.append(client)
        }
        // The upgrade succeeds; the close follows at once.
        let refused = try await live.connect()
        #expect(try await refused.expectClose() == CloseCode.tooManyConnections)
        try await refused.waitForDisconnect()
        for client in admitted {
            try await client.expectUsable("an admitted connection after a refusal")
        }

        // One leaves; once the worker has seen it go, a newcomer is admitted.
        try await admitted[0].close()
        #expect(try await admitted[0].expectClose() == CloseCode.normal)
        try await admitted[0].waitForDisconnect()
        try await eventually(timeout: .seconds(15), "the worker unregisters the closed connection") {
            live.worker.server.connectionCount == 2
        }
        let newcomer = try await live.connect()
        try await newcomer.expectUsable("a connection admitted after one left")
        let refusedAgain = try await live.connect()
        #expect(try await refusedAgain.expectClose() == CloseCode.tooManyConnections)
        #expect(try await live.closes("too_many_connections") == 2)
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
