import ArgumentParser
import Foundation
import Logging
import Snorky
import SnorkyConfig
import SnorkyServer
import SnorkySupervisor

/// The worker role, started by the supervisor with the listening sockets inherited.
struct WorkerCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "worker",
        abstract: "Internal: a worker process started by `snorky serve`.",
        shouldDisplay: false
    )

    @OptionGroup var options: ServerOptions

    func run() async throws {
        guard let environment = try WorkerEnvironment.current else {
            throw ValidationError("`snorky worker` is started by `snorky serve`; run that instead")
        }
        environment.dieWithSupervisor()
        let configuration = try options.load()
        WorkerRunner.adoptEventLoopsAsExecutor(threads: configuration.threads)
        var logger = LoggingSetup.bootstrap(level: configuration.logLevel, format: configuration.logFormat, role: "worker")
        logger[metadataKey: "slot"] = "\(environment.slot)"
        guard environment.listenFDs.count == 2 else {
            throw ValidationError("expected 2 inherited sockets, got \(environment.listenFDs.count)")
        }
        var dataSync = try WorkerRunner.dataSyncOptions(fileText: options.configFileText(), fileName: options.config)
        dataSync.store = try WorkerBus.makeSubscriptionStore(configuration: configuration, logger: logger)
        try await WorkerRunner.run(
            configuration: configuration,
            publicListener: .inherited(descriptor: environment.listenFDs[0]),
            backendListener: .inherited(descriptor: environment.listenFDs[1]),
            makeBus: { group in
                try WorkerBus.make(configuration: configuration, group: group, logger: logger)
            },
            makeState: { group in
                try WorkerBus.makeState(configuration: configuration, group: group, logger: logger)
            },
            logger: logger,
            dataSync: dataSync,
            statsLabels: ["slot": "\(environment.slot)"],
            metrics: Self.metricsConfiguration(slot: environment.slot),
            onReady: { environment.reportReady() },
            onDraining: { environment.reportDraining() }
        )
    }

    /// Labelled with the slot; with the node's metrics directory when the supervisor made one.
    static func metricsConfiguration(slot: Int) -> MetricsConfiguration {
        var metrics = MetricsConfiguration()
        metrics.worker = "\(slot)"
        if let path = ProcessInfo.processInfo.environment[MetricsDirectory.environmentVariable], !path.isEmpty {
            metrics.directory = MetricsDirectory(path: path)
        }
        return metrics
    }
}
