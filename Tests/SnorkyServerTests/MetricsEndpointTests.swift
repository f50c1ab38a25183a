import Snorky
import SnorkyProtocol
import SnorkyServer
import SnorkyTesting
import Testing

/// `GET /metrics` of one worker on its own (no metrics directory, as with `--bus memory`):
/// its counters move with what clients and backends do.
@Suite("Live worker: GET /metrics")
struct MetricsEndpointTests {
    private func scrape(_ live: LiveWorker) async throws -> PrometheusExposition {
        let response = try await HTTPTestClient.get(host: "127.0.0.1", port: live.backendPort, path: "/metrics")
        #expect(response.status == 200)
        let contentType = response.headers.first { $0.0.lowercased() == "content-type" }?.1
        #expect(contentType == "text/plain; version=0.0.4; charset=utf-8")
        #expect(response.headers.first { $0.0.lowercased() == "x-snorky-worker" }?.1 == "0")
        return try PrometheusExposition(parsing: response.body)
    }

    private let publish = #"{"service":"pubsub_backend","message":{"command":"publish","params":{"channel":"t","message":1}}}"#

    @Test("no key needed; every sample is this worker's; the counts follow the traffic")
    func countsFollowTraffic() async throws {
        let live = try await LiveWorker.start()
        let before = try await scrape(live)
        #expect(before.value("snorky_connections", ["worker": "0"]) == 0)
        #expect(before.value("snorky_build_info", ["version": SnorkyVersion.current]) == 1)
        #expect(before.families.allSatisfy { family in family.samples.allSatisfy { $0.labels["worker"] == "0" } })

        let subscribers = [try await live.connect(), try await live.connect()]
        for subscriber in subscribers {
            #expect(try await subscriber.request("pubsub", "subscribe", ["channel": "t"], callId: 1) == rpcResponse("pubsub", callId: 1))
        }
        #expect(try await subscribers[0].request("pubsub", "subscribe", ["channel": "u"], callId: 2) == rpcResponse("pubsub", callId: 2))
        #expect(try await live.backend(publish).status == 200)
        #expect(try await live.backend(publish, key: "wrong").status == 401)
        for subscriber in subscribers {
            #expect(try await subscriber.nextJSON() == pubsubNotification(channel: "t", message: 1))
        }

        // A protocol error, then a binary frame: closed by the server with 1003.
        let rude = try await live.connect()
        try await rude.send(text: "not json")
        #expect(try await rude.nextJSON() == protocolError("Invalid JSON"))
        try await rude.send(binary: [1, 2, 3])
        #expect(try await rude.expectClose() == CloseCode.unsupportedData)
        // A client that says goodbye itself is not a server close.
        let polite = try await live.connect()
        try await polite.close(code: 1000)
        try await polite.waitForDisconnect()
        try await eventually(timeout: .seconds(15), "the closed connections are gone") {
            try await scrape(live).value("snorky_connections", ["worker": "0"]) == 2
        }

        let metrics = try await scrape(live)
        #expect(metrics.value("snorky_connections_accepted_total") == 4)
        #expect(metrics.value("snorky_subscriptions") == 3)
        #expect(metrics.value("snorky_topics") == 2)
        #expect(metrics.value("snorky_deliveries_total") == 2)
        #expect(metrics.value("snorky_frames_received_total") == 4)
        // 3 responses, 2 deliveries, 1 protocol error, 1 backend reply.
        #expect(metrics.value("snorky_frames_sent_total") == 7)
        #expect(metrics.value("snorky_protocol_errors_total") == 1)
        #expect(metrics.value("snorky_connection_closes_total", ["reason": "unsupported_data"]) == 1)
        #expect(metrics.value("snorky_connection_closes_total", ["reason": "normal"]) == 0)
        #expect(metrics.samples("snorky_connection_closes_total").map(\.value).reduce(0, +) == 1)
        #expect(metrics.value("snorky_backend_requests_total", ["code": "200"]) == 1)
        #expect(metrics.value("snorky_backend_requests_total", ["code": "401"]) == 1)
        #expect(metrics.value("snorky_bus_messages_published_total") == 1)
        #expect(metrics.value("snorky_bus_reconnects_total") == 0)
        #expect(metrics.family("snorky_worker_restarts_total") == nil, "no supervisor, no restarts")
        await live.shutdown()
    }

    @Test("HEAD answers the headers only; other methods are not found")
    func headAndOtherMethods() async throws {
        let live = try await LiveWorker.start()
        let head = try await HTTPTestClient.request(method: "HEAD", host: "127.0.0.1", port: live.backendPort, path: "/metrics")
        #expect(head.status == 200)
        #expect(head.body.isEmpty)
        let post = try await HTTPTestClient.request(method: "POST", host: "127.0.0.1", port: live.backendPort, path: "/metrics")
        #expect(post.status == 404)
        await live.shutdown()
    }
}
