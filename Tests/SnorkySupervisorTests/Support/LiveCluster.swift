#if canImport(Glibc)
import Glibc
#endif
import Logging
import SnorkySupervisor

/// A supervisor running Python test workers on ephemeral ports, for one test.
struct LiveCluster {
    let supervisor: Supervisor
    let logs: LogCapture
    let run: Task<Int32, any Error>

    var port: Int { supervisor.boundListeners[0].port }

    static func configuration(
        workers: Int,
        mode: String = "serve",
        listeners: [String] = ["ws"],
        environment: [String: String] = [:],
        restartPolicy: RestartPolicy = RestartPolicy(initialBackoff: .milliseconds(50)),
        shutdownTimeout: Duration = .seconds(5),
        readinessTimeout: Duration = .seconds(10),
        embeddedRedis: EmbeddedRedisConfiguration? = nil
    ) -> SupervisorConfiguration {
        SupervisorConfiguration(
            workerCount: workers,
            listeners: listeners.map { ListenerSpec(name: $0, host: "127.0.0.1", port: 0) },
            executablePath: TestWorker.python,
            workerArguments: TestWorker.arguments(mode: mode),
            workerEnvironment: environment,
            restartPolicy: restartPolicy,
            shutdownTimeout: shutdownTimeout,
            readinessTimeout: readinessTimeout,
            embeddedRedis: embeddedRedis
        )
    }

    /// Binds, starts `run()` and (by default) waits for `cluster ready`.
    static func start(_ configuration: SupervisorConfiguration, waitUntilReady: Bool = true) async throws -> LiveCluster {
        let logs = LogCapture()
        let supervisor = Supervisor(configuration: configuration, logger: logs.logger)
        try supervisor.bind()
        let run = Task { try await supervisor.run() }
        let cluster = LiveCluster(supervisor: supervisor, logs: logs, run: run)
        if waitUntilReady {
            do {
                _ = try await logs.first("cluster ready")
            } catch {
                _ = await cluster.stop()
                throw error
            }
        }
        return cluster
    }

    /// Drains and returns `run()`'s exit code (-1 if it threw).
    @discardableResult
    func stop() async -> Int32 {
        await supervisor.shutdown()
        return (try? await run.value) ?? -1
    }
}

/// Runs `body` with a started cluster and makes sure it is stopped even when `body`
/// throws (the body normally stops it itself to check the exit code).
func withCluster<T>(
    _ configuration: SupervisorConfiguration,
    _ body: (LiveCluster) async throws -> T
) async throws -> T {
    let cluster = try await LiveCluster.start(configuration)
    do {
        let result = try await body(cluster)
        await cluster.stop()
        return result
    } catch {
        await cluster.stop()
        throw error
    }
}
