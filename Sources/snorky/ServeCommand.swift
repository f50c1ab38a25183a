import ArgumentParser
import Logging
import Snorky
import SnorkyConfig
import SnorkySupervisor

struct ServeCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "serve",
        abstract: "Run a Snorky node: a supervisor and one worker per core sharing a Redis bus."
    )

    @OptionGroup var options: ServerOptions

    func run() async throws {
        let configuration = try options.load()
        let logger = LoggingSetup.bootstrap(
            level: configuration.logLevel, role: configuration.bus == .memory ? "worker" : "supervisor")

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
        let supervisor = Supervisor(
            configuration: SupervisorConfiguration(
                workerCount: configuration.resolvedWorkers,
                listeners: [
                    ListenerSpec(name: "ws", host: configuration.host, port: configuration.port),
                    ListenerSpec(name: "backend", host: configuration.backendHost, port: configuration.backendPort),
                ],
                workerArguments: ["worker"] + forwarded.arguments,
                workerEnvironment: forwarded.environment,
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
        let status = try await supervisor.run()
        if status != 0 {
            throw ExitCode(status)
        }
    }
}
