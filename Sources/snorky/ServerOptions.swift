import ArgumentParser
import Foundation
import SnorkyConfig

/// The flags shared by `serve` and the internal `worker` role. Values are handed to
/// `ConfigurationLoader` as text, so a flag, an environment variable and a config-file key
/// of the same setting are validated by the same code.
struct ServerOptions: ParsableArguments {
    @Option(help: "TOML config file (flags and SNORKY_* environment variables override it).")
    var config: String?

    @Option(help: "WebSocket listen address (default 127.0.0.1).")
    var host: String?

    @Option(help: "WebSocket listen port (default 5800; 0 picks a free port).")
    var port: String?

    @Option(help: "Backend API listen address (default 127.0.0.1).")
    var backendHost: String?

    @Option(help: "Backend API listen port (default 5801; 0 picks a free port).")
    var backendPort: String?

    @Option(help: "Key the backend API requires in X-Backend-Key (or SNORKY_BACKEND_KEY).")
    var backendKey: String?

    @Option(help: "Secret of the HS256 connection tokens (or SNORKY_TOKEN_SECRET).")
    var tokenSecret: String?

    @Option(help: "Worker processes (default: one per core).")
    var workers: String?

    @Option(help: "Event-loop threads per worker (default 1).")
    var threads: String?

    @Option(help: "Bus: redis (default) or memory (a single in-process worker).")
    var bus: String?

    @Option(help: "Redis URL, redis://host:port/db or unix:///path (default: a private redis-server).")
    var redis: String?

    @Option(help: "Prefix of Snorky's Redis keys and channels (default snorky).")
    var redisPrefix: String?

    @Option(help: "Whether WebSocket clients may publish on pubsub: true or false (default true).")
    var clientPublish: String?

    @Option(help: "Largest client message in bytes (default 65536).")
    var maxFrameSize: String?

    @Option(help: "Comma-separated Origins allowed to open WebSocket connections (default: any).")
    var allowedOrigins: String?

    @Option(help: "Subscriptions per connection (default 1000).")
    var maxSubscriptions: String?

    @Option(help: "Requests (messages and pings) per second per connection; more close it with 4004 (default 100; 0 = no limit).")
    var maxRequestsPerSecond: String?

    @Option(help: "Requests a connection may send at once above --max-requests-per-second (default 200).")
    var requestBurst: String?

    @Option(help: "Log level: trace, debug, info, notice, warning, error, critical (default info).")
    var logLevel: String?

    @Option(help: "Log format: logfmt (default) or json, one line per event.")
    var logFormat: String?

    @Flag(help: "Serve the demo page at / (chat, feed, shared cursors); it hands out tokens for any name, so only for trials.")
    var demo = false

    /// Settings given as a bare flag (`--demo`): forwarded to workers without a value.
    static let switches: Set<String> = ["demo"]

    /// The flag values keyed by setting name, as given.
    var flagValues: [String: String] {
        let pairs: [(String, String?)] = [
            ("host", host), ("port", port), ("backend_host", backendHost), ("backend_port", backendPort),
            ("backend_key", backendKey), ("token_secret", tokenSecret), ("workers", workers), ("threads", threads), ("bus", bus),
            ("redis", redis), ("redis_prefix", redisPrefix), ("client_publish", clientPublish),
            ("max_frame_size", maxFrameSize), ("allowed_origins", allowedOrigins),
            ("max_subscriptions", maxSubscriptions), ("max_requests_per_second", maxRequestsPerSecond),
            ("request_burst", requestBurst), ("log_level", logLevel), ("log_format", logFormat),
            ("demo", demo ? "true" : nil),
        ]
        return Dictionary(uniqueKeysWithValues: pairs.compactMap { key, value in value.map { (key, $0) } })
    }

    /// The config file's text, if one was given (services read their own sections).
    func configFileText() throws -> String? {
        guard let config else { return nil }
        do {
            return try String(contentsOfFile: config, encoding: .utf8)
        } catch {
            throw ValidationError("cannot read config file \(config): \(error.localizedDescription)")
        }
    }

    /// Defaults, then the config file, then the environment, then flags.
    func load() throws -> SnorkyConfiguration {
        let fileText = try configFileText()
        do {
            return try ConfigurationLoader.load(
                fileText: fileText,
                fileName: config ?? "config file",
                environment: ProcessInfo.processInfo.environment,
                flags: flagValues
            )
        } catch {
            throw ValidationError(error.message)
        }
    }

    /// The arguments and environment to hand a worker so it loads the same configuration.
    /// Secrets and the Redis URL (it may carry a password) travel in the environment, never
    /// on a command line other users can read.
    var forwardedToWorkers: (arguments: [String], environment: [String: String]) {
        var arguments: [String] = []
        var environment: [String: String] = [:]
        if let config { arguments += ["--config", config] }
        for setting in ConfigurationLoader.settings {
            guard let value = flagValues[setting.key] else { continue }
            if Self.switches.contains(setting.key) {
                arguments.append(setting.flag)
            } else if setting.mayHoldCredentials {
                environment[setting.environmentVariable] = value
            } else {
                arguments += [setting.flag, value]
            }
        }
        return (arguments, environment)
    }
}
