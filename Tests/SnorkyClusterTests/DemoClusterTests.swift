import SnorkyProtocol
import SnorkyTesting
import Testing

extension ClusterTests {
    /// `snorky serve --demo` (or `SNORKY_DEMO`) with two workers: both serve the demo page,
    /// and with no token secret configured they share the one the supervisor made for the
    /// run, so a demo token from any worker opens a connection on every worker.
    @Suite struct DemoCluster {
        @Test("--demo reaches every worker, and a demo token is accepted by every worker")
        func demoFlag() async throws {
            try await withCluster(workers: 2, redis: nil, arguments: ["--demo"]) { cluster in
                try await expectDemoOnEveryWorker(cluster)
            }
        }

        @Test("SNORKY_DEMO=true does the same")
        func demoEnvironment() async throws {
            try await withCluster(workers: 2, redis: nil, environment: ["SNORKY_DEMO": "true"]) { cluster in
                try await expectDemoOnEveryWorker(cluster)
            }
        }

        @Test("without demo mode / is 404 on the cluster, while /snorky.js is served")
        func noDemo() async throws {
            try await withCluster(workers: 2, redis: nil) { cluster in
                for _ in 0..<8 {
                    let page = try await HTTPTestClient.get(host: cluster.host, port: cluster.wsPort, path: "/")
                    let client = try await HTTPTestClient.get(host: cluster.host, port: cluster.wsPort, path: "/snorky.js")
                    #expect(page.status == 404)
                    #expect(client.status == 200)
                }
            }
        }

        private func expectDemoOnEveryWorker(_ cluster: SnorkyCluster) async throws {
            let issued = try await HTTPTestClient.get(host: cluster.host, port: cluster.wsPort, path: "/demo/token?name=alice")
            #expect(issued.status == 200, "\(issued.body)")
            let token = try #require(try JSON.parse(issued.body)["token"]?.stringValue)

            // Connections land on a worker by their source port: open them until both
            // workers hold some. A worker with another secret would refuse the token (401).
            var clients: [ServiceClient] = []
            func everyWorkerHoldsOne() async throws -> Bool {
                try await cluster.stats().values.allSatisfy { $0.connections > 0 }
            }
            while clients.count < 48, try await !everyWorkerHoldsOne() {
                for _ in 0..<8 {
                    let socket = try await WebSocketTestClient.connect(
                        host: cluster.host, port: cluster.wsPort, path: "/ws", query: "token=\(token)")
                    clients.append(ServiceClient("alice #\(clients.count)", socket))
                }
            }
            // (A connection is counted a moment after its handshake completes.)
            try await eventually(timeout: .seconds(15), "both workers hold a demo connection") {
                try await everyWorkerHoldsOne()
            }
            // Every connection has the identity: chat (which needs one) accepts each join.
            for client in clients {
                guard case .response = try await client.call("chat", "join", ["channel": "#lobby"]) else {
                    Issue.record("\(client) could not join")
                    continue
                }
            }
            // Each page request is a new connection too: every one is answered with the page.
            for _ in 0..<8 {
                let page = try await HTTPTestClient.get(host: cluster.host, port: cluster.wsPort, path: "/")
                #expect(page.status == 200)
                #expect(page.body.contains("<title>Snorky demo</title>"))
            }
        }
    }
}
