#if canImport(Glibc)
import Glibc
#endif
import Testing
@testable import SnorkySupervisor

extension LiveSupervisorTests {
    @Test func embeddedRedisServesTheClusterAndIsCleanedUp() async throws {
        let parent = makeTemporaryDirectory()
        defer { rmdir(parent) }
        let configuration = LiveCluster.configuration(
            workers: 2,
            embeddedRedis: EmbeddedRedisConfiguration(runtimeDirectory: parent)
        )
        try await withCluster(configuration) { cluster in
            let url = try #require(cluster.supervisor.redisURL)
            #expect(url.hasPrefix("unix://\(parent)/snorky-\(getpid())-"))
            #expect(url.hasSuffix("/redis.sock"))
            let socketPath = String(url.dropFirst("unix://".count))
            let directory = String(socketPath.dropLast("/redis.sock".count))
            var info = stat()
            #expect(stat(directory, &info) == 0)
            #expect(info.st_mode & 0o777 == 0o700)

            #expect(try await redisCommand(socketPath: socketPath, ["PING"]) == "+PONG\r\n")
            let replies = try await TestClient.fetchMany(port: cluster.port, count: 20)
            #expect(replies.allSatisfy { $0.success?.redis == url }, "workers get SNORKY_REDIS")

            // Restarted when it dies, on the same socket.
            let first = try #require(cluster.supervisor.redisPID)
            #expect(kill(first, SIGKILL) == 0)
            try await cluster.logs.count("redis-server ready", reaches: 2)
            let second = try #require(cluster.supervisor.redisPID)
            #expect(second != first)
            #expect(try await redisCommand(socketPath: socketPath, ["PING"]) == "+PONG\r\n")

            #expect(await cluster.stop() == 0)
            #expect(!processExists(second))
            #expect(!fileExists(directory), "runtime directory removed")
            #expect(cluster.supervisor.redisURL == nil)
            // Workers drain first (they may still use Redis), then Redis stops.
            let messages = cluster.logs.records.map(\.message)
            let lastWorkerExit = try #require(messages.lastIndex(of: "worker exited"))
            let redisStopped = try #require(messages.firstIndex(of: "redis-server stopped"))
            #expect(lastWorkerExit < redisStopped)
        }
    }
}

@Suite struct StartupErrorTests {
    @Test(arguments: ["/nonexistent/redis-server", "snorky-no-such-redis-server"])
    func aMissingRedisServerIsAClearError(executable: String) async throws {
        let logs = LogCapture()
        let configuration = LiveCluster.configuration(
            workers: 1,
            embeddedRedis: EmbeddedRedisConfiguration(executable: executable)
        )
        let supervisor = Supervisor(configuration: configuration, logger: logs.logger)
        let error = await #expect(throws: SupervisorError.self) { _ = try await supervisor.run() }
        #expect(error?.kind == .redisNotFound)
        #expect(error?.description == "redis-server not found: install it (apt-get install redis-server) or pass --redis redis://HOST:PORT")
        #expect(logs.records("worker started").isEmpty)
        await supervisor.shutdown()  // returns at once: the run is over
    }

    @Test func aMissingWorkerExecutableIsAClearError() async throws {
        var configuration = LiveCluster.configuration(workers: 1)
        configuration.executablePath = "/nonexistent/snorky"
        let supervisor = Supervisor(configuration: configuration, logger: LogCapture().logger)
        let error = await #expect(throws: SupervisorError.self) { _ = try await supervisor.run() }
        #expect(error?.kind == .executableNotFound)
        #expect(error?.description.contains("/nonexistent/snorky") == true)
    }
}
