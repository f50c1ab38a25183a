import ArgumentParser
import Logging
import Snorky
import SnorkyConfig
import SnorkyServer
import SnorkySupervisor

struct ServeCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "serve",
        abstract: "Run a Snorky node: a supervisor and one worker per core sharing a Redis bus."
    )

    @OptionGroup var options: ServerOptions

    func run() async throws {
        var configuration = try options.load()
        let logger = LoggingSetup.bootstrap(
            level: configuration.logLevel, format: configuration.logFormat,
            role: configuration.bus == .memory ? "worker" : "supervisor")
        // The demo page needs identities (chat and cursors require one): without a
        // configured secret, demo tokens are signed with one made for this run.
        var demoEnvironment: [String: String] = [:]
        if configuration.demo, configuration.tokenSecret == nil {
            let secret = DemoSecret.make()
            configuration.tokenSecret = secret
            demoEnvironment["SNORKY_TOKEN_SECRET"] = secret
            logger.info("demo mode: connection tokens are signed with a secret made for this run")
        }

        if configuration.bus == .memory {
            guard configuration.resolvedWorkers == 1 else {
                throw ValidationError("--bus memory runs a single in-process worker: pass --workers 1 as well")
            }
            WorkerRunner.adoptEventLoopsAsExecutor(threads: configuration.threads)
            try await WorkerRunner.run(
                configuration: configuration,
                publicListener: nil,
                backendListener: nil,
                makeBus: { _ in InMemoryBus() },
                logger: logger,
                dataSync: try WorkerRunner.dataSyncOptions(fileText: options.configFileText(), fileName: options.config),
                onReady: { logger.info("cluster ready", metadata: ["workers": "1"]) }
            )
            return
        }

        // Fail here, before any worker starts, on a bad [datasync] section.
        _ = try WorkerRunner.dataSyncOptions(fileText: options.configFileText(), fileName: options.config)
        let forwarded = options.forwardedToWorkers
        // Where the workers leave their metrics for the one that answers a scrape.
        let metricsDirectory: MetricsDirectory
        do {
            metricsDirectory = try MetricsDirectory.create()
        } catch {
            throw ValidationError("\(error)")
        }
        defer { metricsDirectory.remove() }
        var workerEnvironment = forwarded.environment.merging(demoEnvironment) { configured, _ in configured }
        workerEnvironment[MetricsDirectory.environmentVariable] = metricsDirectory.path
        // Workers never inherit SNORKY_REDIS: the supervisor clears it, as the variable in
        // which it hands them its private server. A configured URL, whichever source it came
        // from, is handed on here.
        if let redis = configuration.redis { workerEnvironment[WorkerEnvironment.Variable.redis] = redis }
        let supervisor = Supervisor(
            configuration: SupervisorConfiguration(
                workerCount: configuration.resolvedWorkers,
                listeners: [
                    ListenerSpec(name: "ws", host: configuration.host, port: configuration.port),
                    ListenerSpec(name: "backend", host: configuration.backendHost, port: configuration.backendPort),
                ],
                workerArguments: ["worker"] + forwarded.arguments,
                workerEnvironment: workerEnvironment,
                shutdownTimeout: .seconds(configuration.drainTimeout + 5),
                embeddedRedis: configuration.redis == nil ? EmbeddedRedisConfiguration() : nil
            ),
            logger: logger
        )
        if configuration.backendKey == nil {
            logger.warning("no backend key configured: the backend API refuses every request; set --backend-key or SNORKY_BACKEND_KEY")
        }
        _ = try supervisor.bind()
        supervisor.installSignalHandlers()
        let metricsWriter = Task { await Self.writeSupervisorMetrics(of: supervisor, to: metricsDirectory, logger: logger) }
        let status: Int32
        do {
            status = try await supervisor.run()
        } catch {
            metricsWriter.cancel()
            await metricsWriter.value
            throw error
        }
        // Stopped before the directory goes, so no write lands in it afterwards.
        metricsWriter.cancel()
        await metricsWriter.value
        if status != 0 {
            throw ExitCode(status)
        }
    }

    /// Keeps the supervisor's snapshot (restarts and readiness per slot) current in the
    /// metrics directory, once a second, until cancelled.
    static func writeSupervisorMetrics(of supervisor: Supervisor, to directory: MetricsDirectory, logger: Logger) async {
        var reportedFailure = false
        while !Task.isCancelled {
            let snapshot = SupervisorMetrics.snapshot(restarts: supervisor.workerRestarts, ready: supervisor.workerReady)
            do {
                try directory.write(snapshot, as: MetricsDirectory.supervisorFile)
                reportedFailure = false
            } catch {
                if !reportedFailure { logger.warning("cannot write the metrics snapshot", metadata: ["error": "\(error)"]) }
                reportedFailure = true
            }
            try? await Task.sleep(for: .seconds(1))
        }
    }
}

/// A random token secret for a demo run that was given none.
enum DemoSecret {
    static func make() -> String {
        var generator = SystemRandomNumberGenerator()
        return (0..<32).map { _ in
            let byte = UInt8.random(in: 0...255, using: &generator)
            return (byte < 16 ? "0" : "") + String(byte, radix: 16)
        }.joined()
    }
}
