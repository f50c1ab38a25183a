import Foundation
import SnorkyProtocol
import SnorkyTesting
import Testing

extension ClusterTests {
    /// Publications crossing workers and nodes through Redis.
    @Suite struct PubSub {
        /// 200 subscribers spread over every worker (proved by each worker's own `/stats`)
        /// receive 1,000 publications from a client and 1,000 from the backend API, each
        /// stream in order, nothing lost, nothing duplicated.
        @Test(arguments: [2, 4])
        func everySubscriberOnEveryWorkerReceivesEveryPublicationInOrder(workers: Int) async throws {
            try await withRedis { redis in
                try await withCluster(workers: workers, redis: redis.url, arguments: SnorkyCluster.unlimitedRequestRate) { cluster in
                    let channel: JSON = "fan-out"
                    let subscribers = try await cluster.connectMany(200, subscribingTo: channel)

                    let stats = try await cluster.stats()
                    #expect(cluster.totalConnections(stats) == 200, "\(stats.values.sorted { $0.slot < $1.slot })")
                    let pids = cluster.workerPIDs
                    for slot in 0..<workers {
                        let worker = try #require(stats[slot])
                        // 200 / workers on average; a fourth of that rules out a worker left out.
                        #expect(worker.connections >= 200 / workers / 4, "\(worker)")
                        #expect(worker.topics == 1, "\(worker)")
                        #expect(worker.pid == pids[slot], "stats come from the supervisor's worker of slot \(slot)")
                    }

                    let publisher = try await cluster.connect()
                    async let fromClient = publishFromClient(publisher, channel, count: 1000)
                    async let fromBackend = publishFromBackend(cluster, channel, count: 1000)
                    let (clientFailures, backendFailures) = try await (fromClient, fromBackend)
                    #expect(clientFailures.isEmpty, "client publish failures: \(clientFailures.prefix(5))")
                    #expect(backendFailures.isEmpty, "backend publish failures: \(backendFailures.prefix(5))")
                    // After both streams: anything duplicated or late would arrive before it.
                    #expect(try await publisher.publish(channel, ["end": true], callId: 9999) == .response(.null))

                    let problems = try await verifyAll(subscribers, on: channel, expecting: ["client": 1000, "backend": 1000])
                    #expect(problems.isEmpty, "\(problems.count) subscribers saw a problem, e.g. \(problems.prefix(3))")
                }
            }
        }

        /// A backend pipelines 2,000 publications on one connection: the worker handles them
        /// together (their Redis commands share writes), yet every subscriber, on either
        /// worker, gets them in request order, and the replies come back in order.
        @Test func pipelinedBackendPublicationsKeepTheirOrderThroughRedis() async throws {
            try await withRedis { redis in
                try await withCluster(workers: 2, redis: redis.url) { cluster in
                    let channel: JSON = "pipelined"
                    let subscribers = try await cluster.connectMany(40, subscribingTo: channel)
                    let stats = try await cluster.stats()
                    #expect(stats.values.allSatisfy { $0.topics == 1 }, "subscribers on both workers: \(stats)")

                    let count = 2000
                    let requests = (0...count).map { seq in
                        let message = seq == count ? ["end": true] : publication("pipelined", seq)
                        let body = Envelope(
                            service: "pubsub_backend",
                            message: ["command": "publish", "params": ["channel": channel, "message": message], "callId": .int(Int64(seq))]
                        ).json.encodedString()
                        return HTTPTestClient.PipelinedRequest(
                            path: "/backend", headers: [("X-Backend-Key", SnorkyCluster.backendKey)], body: body)
                    }
                    let responses = try await HTTPTestClient.pipelined(
                        host: cluster.host, port: cluster.backendPort, requests: requests, timeout: .seconds(30))
                    #expect(responses.map(\.status) == Array(repeating: 200, count: count + 1))
                    let callIds = try responses.map { try JSON.parse($0.body)["message"]?["callId"]?.int64Value }
                    #expect(callIds == (0...Int64(count)).map { $0 })

                    let problems = try await verifyAll(subscribers, on: channel, expecting: ["pipelined": count])
                    #expect(problems.isEmpty, "\(problems.count) subscribers saw a problem, e.g. \(problems.prefix(3))")
                }
            }
        }

        /// 2,000 new connections to 4 workers: each worker accepts at least 300, by its own count.
        @Test func twoThousandConnectionsSpreadOverFourWorkers() async throws {
            try await withCluster(workers: 4, redis: nil) { cluster in
                let clients = try await cluster.connectMany(2000, parallel: 100)
                let stats = try await cluster.stats()
                let summary = stats.values.sorted { $0.slot < $1.slot }.map(\.description)
                #expect(cluster.totalConnections(stats) == 2000, "\(summary)")
                let pids = cluster.workerPIDs
                for slot in 0..<4 {
                    let worker = try #require(stats[slot])
                    #expect(worker.connections >= 300, "\(summary)")
                    #expect(worker.pid == pids[slot])
                }
                #expect(clients.allSatisfy { $0.isConnected })
            }
        }

        /// Two nodes (two supervisors on their own ports) sharing one Redis over TCP: the
        /// backend API of node A reaches subscribers on every worker of node B, and a client
        /// of node B reaches a subscriber on node A.
        @Test func twoNodesSharingOneRedis() async throws {
            try await withRedis(tcp: true) { redis in
                let url = try #require(redis.tcpURL)
                try await withCluster(workers: 2, redis: url) { nodeA in
                    try await withCluster(workers: 2, redis: url) { nodeB in
                        #expect(nodeA.wsPort != nodeB.wsPort && nodeA.backendPort != nodeB.backendPort)
                        let channel: JSON = ["room": "two-nodes", "id": 7]
                        let onB = try await nodeB.connectMany(20, subscribingTo: channel)
                        let onA = try await nodeA.connect()
                        try await onA.subscribe(channel)

                        let statsB = try await nodeB.stats()
                        let statsA = try await nodeA.stats()
                        #expect(nodeB.totalConnections(statsB) == 20)
                        #expect(statsB.values.allSatisfy { $0.topics == 1 }, "both workers of B subscribe: \(statsB)")
                        #expect(Set(statsA.values.map(\.node)).isDisjoint(with: statsB.values.map(\.node)))

                        for seq in 0..<50 {
                            let (status, reply) = try await nodeA.backendPublish(channel, publication("a-backend", seq))
                            #expect(status == 200 && reply?["type"] == "response", "publish \(seq): \(status) \(reply.map { "\($0)" } ?? "-")")
                        }
                        let publisherOnB = try await nodeB.connect()
                        for seq in 0..<10 {
                            #expect(try await publisherOnB.publish(channel, publication("b-client", seq)) == .response(.null))
                        }
                        #expect(try await publisherOnB.publish(channel, ["end": true], callId: 99) == .response(.null))

                        let problems = try await verifyAll(onB + [onA], on: channel, expecting: ["a-backend": 50, "b-client": 10])
                        #expect(problems.isEmpty, "\(problems.prefix(3))")
                    }
                }
            }
        }

        /// Redis subscriptions are reference-counted per worker and released a debounce
        /// delay (1 s) after the last local subscriber left: by `unsubscribe` or by leaving.
        @Test func redisChannelsAreReleasedAfterTheLastSubscriberLeaves() async throws {
            try await withRedis { redis in
                try await withCluster(workers: 2, redis: redis.url) { cluster in
                    let everyone: JSON = "release-all"
                    let single: JSON = ["release": "one"]
                    let everyoneChannel = #"snorky:pubsub:"release-all""#
                    let singleChannel = #"snorky:pubsub:{"release":"one"}"#
                    // Every Snorky channel but the workers' own inboxes (`snorky:node:<id>`,
                    // subscribed for as long as a worker runs).
                    func channels() throws -> Set<String> {
                        Set(try redis.commandLines(["PUBSUB", "CHANNELS", "snorky:*"]).filter { !$0.hasPrefix("snorky:node:") })
                    }

                    let clients = try await cluster.connectMany(20, subscribingTo: everyone)
                    let stats = try await cluster.stats()
                    #expect(stats.values.allSatisfy { $0.topics == 1 && $0.connections > 0 }, "\(stats)")
                    try await clients[0].subscribe(single)
                    let subscribed = try channels()
                    #expect(subscribed == [everyoneChannel, singleChannel])
                    // One Redis subscription per worker, not per client.
                    #expect(try redis.commandLines(["PUBSUB", "NUMSUB", everyoneChannel]) == [everyoneChannel, "2"])

                    #expect(try await clients[0].call("pubsub", "unsubscribe", ["channel": single], callId: 2) == .response(.null))
                    // Debounced: not released at once (the delay is 1 s)...
                    #expect(try channels().contains(singleChannel))
                    // ...but within the delay and some slack, while the other channel stays.
                    try await eventually(timeout: .seconds(2), "\(singleChannel) released") { try channels() == [everyoneChannel] }

                    try await withThrowingTaskGroup(of: Void.self) { group in
                        for client in clients {
                            group.addTask {
                                try await client.close()
                                #expect(try await client.expectClose() == 1000)
                            }
                        }
                        try await group.waitForAll()
                    }
                    try await eventually(timeout: .seconds(2), "every snorky channel released") { try channels().isEmpty }
                    let after = try await cluster.stats()
                    #expect(after.values.allSatisfy { $0.topics == 0 }, "\(after)")
                }
            }
        }

        /// A password-protected Redis, its URL given as a flag or in `SNORKY_REDIS`: the
        /// password reaches the workers (publications cross workers through Redis), yet never
        /// a worker's command line, which every local user can read, nor any log line.
        @Test(arguments: [true, false])
        func aRedisPasswordStaysOffWorkerCommandLinesAndLogs(givenAsFlag: Bool) async throws {
            let password = "pw-\(UInt64.random(in: 1...UInt64.max))"
            let redis = try await RedisServerProcess(unixSocket: false, tcp: true, extraArguments: ["--requirepass", password])
            defer { redis.remove() }
            let address = try #require(redis.tcpURL).dropFirst("redis://".count)
            let url = "redis://:\(password)@\(address)"
            try await withCluster(
                workers: 2, redis: givenAsFlag ? url : nil, environment: givenAsFlag ? [:] : ["SNORKY_REDIS": url]
            ) { cluster in
                let channel: JSON = "with-password"
                let subscribers = try await cluster.connectMany(20, subscribingTo: channel)
                let stats = try await cluster.stats()
                #expect(stats.values.allSatisfy { $0.topics == 1 }, "subscribers on both workers: \(stats)")
                #expect(try await cluster.backendPublish(channel, "hello").status == 200)
                for subscriber in subscribers {
                    #expect(try await subscriber.nextPublication(on: channel) == "hello")
                }

                let workers = cluster.workerPIDs
                #expect(workers.count == 2)
                for pid in workers.values {
                    let commandLine = try #require(FileManager.default.contents(atPath: "/proc/\(pid)/cmdline"))
                    let text = String(decoding: commandLine, as: UTF8.self)
                    #expect(text.contains("worker"), "\(text)")
                    #expect(!text.contains(password), "the password is on worker \(pid)'s command line")
                }
                let leaks = cluster.logs.records.filter { $0.text.contains(password) }
                #expect(leaks.isEmpty, "the password in the log: \(leaks)")
                for subscriber in subscribers { try? await subscriber.close() }
            }
        }
    }
}

// MARK: - Helpers

/// Publishes `count` publications from a WebSocket client, one after another (each waits
/// for its response, so they reach Redis in this order). Returns the failures.
func publishFromClient(_ client: WebSocketTestClient, _ channel: JSON, count: Int) async throws -> [String] {
    var failures: [String] = []
    for seq in 0..<count {
        let outcome = try await client.publish(channel, publication("client", seq), callId: Int64(seq))
        if outcome != .response(.null) { failures.append("\(seq): \(outcome)") }
    }
    return failures
}

/// Publishes `count` publications through the backend API, one request after another
/// (each on a new connection, so they land on various workers). Returns the failures.
func publishFromBackend(_ cluster: SnorkyCluster, _ channel: JSON, count: Int) async throws -> [String] {
    var failures: [String] = []
    for seq in 0..<count {
        let (status, reply) = try await cluster.backendPublish(channel, publication("backend", seq))
        if status != 200 || reply?["type"] != "response" {
            failures.append("\(seq): \(status) \(reply.map { "\($0)" } ?? "-")")
        }
    }
    return failures
}

/// Reads publications on `channel` until the `{"end": true}` marker.
func receiveUntilEnd(_ client: WebSocketTestClient, on channel: JSON, timeout: Duration = .seconds(20)) async throws -> [JSON] {
    var received: [JSON] = []
    while true {
        let payload = try await client.nextPublication(on: channel, timeout: timeout)
        if payload["end"] == true { return received }
        received.append(payload)
    }
}

/// Checks that `received` holds, for each source, exactly the publications 0..<count in
/// order (sources may interleave). Returns the first problem, or nil.
func sequenceProblem(_ received: [JSON], expecting counts: [String: Int]) -> String? {
    var next: [String: Int] = [:]
    for (index, payload) in received.enumerated() {
        guard let src = payload.src, let seq = payload.seq, counts[src] != nil else {
            return "unexpected publication \(payload) at \(index)"
        }
        let expected = next[src, default: 0]
        guard seq == expected else {
            return seq < expected
                ? "\(src) \(seq) again or out of order (expected \(expected)) at \(index)"
                : "\(src) \(expected)..<\(seq) lost (next was \(seq)) at \(index)"
        }
        next[src] = expected + 1
    }
    for (src, count) in counts where next[src, default: 0] != count {
        return "\(src): received \(next[src, default: 0]) of \(count)"
    }
    return nil
}

/// Reads every subscriber up to the end marker (concurrently) and checks its sequence.
/// Returns the problems, one per subscriber that has one.
///
/// Frames are first compared with the text the server is expected to send (its compact
/// encoding, keys in the order it builds them), which is much cheaper than parsing 400,000
/// frames in a debug build; anything else is parsed and checked by value, so a server that
/// orders keys differently is still judged correctly, only more slowly.
func verifyAll(_ subscribers: [WebSocketTestClient], on channel: JSON, expecting counts: [String: Int]) async throws -> [String] {
    var expectedTexts: [String: [String]] = [:]
    for (src, count) in counts {
        expectedTexts[src] = (0..<count).map { seq in
            let notification: JSON = ["type": "message", "channel": channel, "message": publication(src, seq)]
            return Envelope(service: "pubsub", message: notification).json.encodedString()
        }
    }
    let expected = expectedTexts
    return try await withThrowingTaskGroup(of: String?.self) { group in
        for (index, subscriber) in subscribers.enumerated() {
            group.addTask {
                do {
                    let received = try await receiveUntilEnd(subscriber, on: channel, expectedTexts: expected)
                    return sequenceProblem(received, expecting: counts).map { "subscriber \(index): \($0)" }
                } catch {
                    return "subscriber \(index): \(error)"
                }
            }
        }
        var problems: [String] = []
        for try await problem in group {
            if let problem { problems.append(problem) }
        }
        return problems
    }
}

/// `receiveUntilEnd` with a fast path: a frame equal to the next expected text of a source
/// counts as that publication without being parsed.
func receiveUntilEnd(
    _ client: WebSocketTestClient,
    on channel: JSON,
    expectedTexts: [String: [String]],
    timeout: Duration = .seconds(20)
) async throws -> [JSON] {
    var received: [JSON] = []
    var next: [String: Int] = [:]
    frames: while true {
        let text = try await client.nextText(timeout: timeout)
        for (src, texts) in expectedTexts {
            let seq = next[src, default: 0]
            if seq < texts.count, texts[seq] == text {
                next[src] = seq + 1
                received.append(publication(src, seq))
                continue frames
            }
        }
        let envelope = try Envelope.decode(Array(text.utf8))
        let message = envelope.message
        guard envelope.service == "pubsub", message["type"] == "message", message["channel"] == channel,
            let payload = message["message"]
        else { throw ClusterFixtureError("expected a publication on \(channel), got \(text)") }
        if payload["end"] == true { return received }
        if let src = payload.src, let seq = payload.seq, seq == next[src, default: 0] { next[src] = seq + 1 }
        received.append(payload)
    }
}
