/// A configuration problem, reported before anything starts.
public struct ConfigurationError: Error, Sendable, Equatable, CustomStringConvertible {
    public let message: String

    public init(_ message: String) {
        self.message = message
    }

    public var description: String { message }
}

/// One setting: its config-file key, environment variable, and how a value is applied.
/// The flag is `--` + the key with dashes (`backend_key` → `--backend-key`).
public struct Setting: Sendable {
    public let key: String
    public let summary: String
    let apply: @Sendable (inout SnorkyConfiguration, SettingValue) throws(ConfigurationError) -> Void

    public var environmentVariable: String { "SNORKY_" + key.uppercased() }
    public var flag: String { "--" + key.replacingUnderscores() }
    /// Secrets are never logged or echoed back in errors.
    public var isSecret: Bool { key.hasSuffix("_key") || key.hasSuffix("_secret") }
    /// Whether a value can hold a credential, so that it is passed on in the environment
    /// (readable by its owner only) rather than on a command line (readable by every local
    /// user): the secrets, and the Redis URL, which may carry a password.
    public var mayHoldCredentials: Bool { isSecret || key == "redis" }
}

/// A raw value from the file (typed) or from the environment or a flag (text).
public enum SettingValue: Sendable {
    case text(String)
    case toml(TOMLValue)

    func string(_ key: String) throws(ConfigurationError) -> String {
        switch self {
        case .text(let text): return text
        case .toml(.string(let text)): return text
        case .toml(let other): throw ConfigurationError("\(key): expected a string, got \(other.typeName)")
        }
    }

    func int(_ key: String, range: ClosedRange<Int>) throws(ConfigurationError) -> Int {
        let value: Int?
        switch self {
        case .text(let text): value = Int(text.trimmingSpaces())
        case .toml(.integer(let integer)): value = Int(exactly: integer)
        case .toml: value = nil
        }
        guard let value else { throw ConfigurationError("\(key): expected an integer") }
        guard range.contains(value) else {
            throw ConfigurationError("\(key): \(value) is out of range \(range.lowerBound)...\(range.upperBound)")
        }
        return value
    }

    func seconds(_ key: String, allowZero: Bool = false) throws(ConfigurationError) -> Double {
        let value: Double?
        switch self {
        case .text(let text): value = Double(text.trimmingSpaces())
        case .toml(let toml): value = toml.doubleValue
        }
        guard let value, value.isFinite, value > 0 || (allowZero && value == 0) else {
            throw ConfigurationError("\(key): expected a \(allowZero ? "non-negative" : "positive") number of seconds")
        }
        return value
    }

    func bool(_ key: String) throws(ConfigurationError) -> Bool {
        switch self {
        case .toml(.bool(let value)): return value
        case .text(let text):
            switch text.trimmingSpaces().lowercased() {
            case "1", "true", "yes", "on": return true
            case "0", "false", "no", "off": return false
            default: break
            }
        case .toml: break
        }
        throw ConfigurationError("\(key): expected true or false")
    }
}

public enum ConfigurationLoader {
    /// Every setting, in documentation order.
    public static let settings: [Setting] = [
        Setting(key: "host", summary: "WebSocket listen address") { config, value throws(ConfigurationError) in
            config.host = try value.string("host")
        },
        Setting(key: "port", summary: "WebSocket listen port") { config, value throws(ConfigurationError) in
            config.port = try value.int("port", range: 0...65535)
        },
        Setting(key: "backend_host", summary: "backend API listen address (keep it private)") {
            config, value throws(ConfigurationError) in
            config.backendHost = try value.string("backend_host")
        },
        Setting(key: "backend_port", summary: "backend API listen port") { config, value throws(ConfigurationError) in
            config.backendPort = try value.int("backend_port", range: 0...65535)
        },
        Setting(key: "backend_key", summary: "key the backend API requires in X-Backend-Key") {
            config, value throws(ConfigurationError) in
            let key = try value.string("backend_key")
            config.backendKey = key.isEmpty ? nil : key
        },
        Setting(key: "workers", summary: "worker processes (0 = one per core)") { config, value throws(ConfigurationError) in
            config.workers = try value.int("workers", range: 0...1024)
        },
        Setting(key: "threads", summary: "event-loop threads per worker") { config, value throws(ConfigurationError) in
            config.threads = try value.int("threads", range: 1...256)
        },
        Setting(key: "bus", summary: "redis or memory (memory: one worker, no cluster)") {
            config, value throws(ConfigurationError) in
            let text = try value.string("bus")
            guard let kind = SnorkyConfiguration.BusKind(rawValue: text) else {
                throw ConfigurationError("bus: expected redis or memory, got \(text)")
            }
            config.bus = kind
        },
        Setting(key: "token_secret", summary: "secret of the HS256 connection tokens (identity = JWT sub)") {
            config, value throws(ConfigurationError) in
            let secret = try value.string("token_secret")
            config.tokenSecret = secret.isEmpty ? nil : secret
        },
        Setting(key: "redis", summary: "redis://host:port/db or unix:///path (default: a private redis-server)") {
            config, value throws(ConfigurationError) in
            let url = try value.string("redis")
            guard url.hasPrefix("redis://") || url.hasPrefix("unix://") else {
                throw ConfigurationError("redis: expected redis://host:port/db or unix:///path")
            }
            config.redis = url
        },
        Setting(key: "redis_prefix", summary: "prefix of Snorky's Redis keys and channels") {
            config, value throws(ConfigurationError) in
            config.redisPrefix = try value.string("redis_prefix")
        },
        Setting(key: "client_publish", summary: "whether WebSocket clients may publish on pubsub") {
            config, value throws(ConfigurationError) in
            config.clientPublish = try value.bool("client_publish")
        },
        Setting(key: "max_frame_size", summary: "largest client message in bytes (larger: close 1009)") {
            config, value throws(ConfigurationError) in
            config.maxFrameSize = try value.int("max_frame_size", range: 1024...(64 * 1024 * 1024))
        },
        Setting(key: "max_outbound_buffer", summary: "bytes queued for a non-reading client before close 4001") {
            config, value throws(ConfigurationError) in
            config.maxOutboundBuffer = try value.int("max_outbound_buffer", range: 4096...(1024 * 1024 * 1024))
        },
        Setting(key: "backend_max_body_size", summary: "largest backend request body in bytes (larger: 413)") {
            config, value throws(ConfigurationError) in
            config.backendMaxBodySize = try value.int("backend_max_body_size", range: 1024...(1024 * 1024 * 1024))
        },
        Setting(key: "backend_timeout", summary: "seconds before an unanswered backend request gets 504") {
            config, value throws(ConfigurationError) in
            config.backendTimeout = try value.seconds("backend_timeout")
        },
        Setting(key: "drain_timeout", summary: "seconds a graceful shutdown waits for clients") {
            config, value throws(ConfigurationError) in
            config.drainTimeout = try value.seconds("drain_timeout")
        },
        Setting(key: "drain_spread", summary: "seconds over which a drain spreads its 1001 closes") {
            config, value throws(ConfigurationError) in
            config.drainSpread = try value.seconds("drain_spread")
        },
        Setting(key: "ping_interval", summary: "seconds of silence before a client is pinged") {
            config, value throws(ConfigurationError) in
            config.pingInterval = try value.seconds("ping_interval")
        },
        Setting(key: "pong_timeout", summary: "seconds a pinged client has to answer before close 4002") {
            config, value throws(ConfigurationError) in
            config.pongTimeout = try value.seconds("pong_timeout")
        },
        Setting(key: "max_write_delay", summary: "seconds a busy connection's frames may wait to be sent in one write (0 = never wait)") {
            config, value throws(ConfigurationError) in
            config.maxWriteDelay = try value.seconds("max_write_delay", allowZero: true)
        },
        Setting(key: "coalescing_rate", summary: "frames per second a worker thread must be writing before max_write_delay applies (0 = at any load)") {
            config, value throws(ConfigurationError) in
            config.coalescingRate = try value.int("coalescing_rate", range: 0...1_000_000_000)
        },
        Setting(key: "max_connections", summary: "WebSocket connections per worker (0 = no limit); more: close 4003") {
            config, value throws(ConfigurationError) in
            config.maxConnections = try value.int("max_connections", range: 0...10_000_000)
        },
        Setting(key: "max_requests_per_second", summary: "requests (messages and pings) per second per connection (0 = no limit); more: close 4004") {
            config, value throws(ConfigurationError) in
            config.maxRequestsPerSecond = try value.int("max_requests_per_second", range: 0...1_000_000)
        },
        Setting(key: "request_burst", summary: "requests a connection may send at once above max_requests_per_second") {
            config, value throws(ConfigurationError) in
            config.requestBurst = try value.int("request_burst", range: 1...1_000_000)
        },
        Setting(key: "max_subscriptions", summary: "topics one connection may subscribe to at once") {
            config, value throws(ConfigurationError) in
            config.maxSubscriptions = try value.int("max_subscriptions", range: 1...10_000_000)
        },
        Setting(key: "allowed_origins", summary: "comma-separated Origin values allowed to connect (unset = any); others get 403") {
            config, value throws(ConfigurationError) in
            // A comma-separated string anywhere; a TOML array of strings in the file.
            let parts: [String]
            if case .toml(.array(let items)) = value {
                parts = try items.map { item throws(ConfigurationError) in
                    guard let text = item.stringValue else { throw ConfigurationError("allowed_origins: expected strings") }
                    return text
                }
            } else {
                parts = try value.string("allowed_origins").split(separator: ",").map(String.init)
            }
            let origins = parts
                .map { String($0.drop(while: \.isWhitespace).reversed().drop(while: \.isWhitespace).reversed()) }
                .filter { !$0.isEmpty }
            guard !origins.isEmpty else { throw ConfigurationError("allowed_origins: no origin given") }
            config.allowedOrigins = origins
        },
        Setting(key: "protocol_error_limit", summary: "protocol errors per window before close 1008") {
            config, value throws(ConfigurationError) in
            config.protocolErrorLimit = try value.int("protocol_error_limit", range: 1...1_000_000)
        },
        Setting(key: "protocol_error_window", summary: "seconds of the protocol error window") {
            config, value throws(ConfigurationError) in
            config.protocolErrorWindow = try value.seconds("protocol_error_window")
        },
        Setting(key: "demo", summary: "serve the demo page at / (hands out tokens for any name: trials only)") {
            config, value throws(ConfigurationError) in
            config.demo = try value.bool("demo")
        },
        Setting(key: "log_level", summary: "trace, debug, info, notice, warning, error or critical") {
            config, value throws(ConfigurationError) in
            let level = try value.string("log_level")
            let levels = ["trace", "debug", "info", "notice", "warning", "error", "critical"]
            guard levels.contains(level) else { throw ConfigurationError("log_level: unknown level \(level)") }
            config.logLevel = level
        },
        Setting(key: "log_format", summary: "logfmt or json: one line per event either way") {
            config, value throws(ConfigurationError) in
            let format = try value.string("log_format")
            guard ["logfmt", "json"].contains(format) else {
                throw ConfigurationError("log_format: expected logfmt or json, got \(format)")
            }
            config.logFormat = format
        },
    ]

    /// Builds the configuration: defaults, then `fileText` (TOML), then the environment,
    /// then `flags` (setting key → value as typed on the command line).
    public static func load(
        fileText: String? = nil,
        fileName: String = "config file",
        environment: [String: String] = [:],
        flags: [String: String] = [:]
    ) throws(ConfigurationError) -> SnorkyConfiguration {
        var configuration = SnorkyConfiguration()
        let byKey = Dictionary(uniqueKeysWithValues: settings.map { ($0.key, $0) })

        if let fileText {
            let table: TOMLTable
            do {
                table = try TOML.parse(fileText)
            } catch {
                throw ConfigurationError("\(fileName): \(error)")
            }
            for (key, value) in table {
                if case .table = value { continue }  // sections belong to services (e.g. [datasync])
                guard let setting = byKey[key] else {
                    throw ConfigurationError("\(fileName): unknown setting '\(key)'")
                }
                try apply(setting, .toml(value), to: &configuration, source: fileName)
            }
        }
        for setting in settings {
            if let value = environment[setting.environmentVariable] {
                try apply(setting, .text(value), to: &configuration, source: setting.environmentVariable)
            }
        }
        for (key, value) in flags {
            guard let setting = byKey[key] else { throw ConfigurationError("unknown setting '\(key)'") }
            try apply(setting, .text(value), to: &configuration, source: setting.flag)
        }
        return configuration
    }

    private static func apply(
        _ setting: Setting,
        _ value: SettingValue,
        to configuration: inout SnorkyConfiguration,
        source: String
    ) throws(ConfigurationError) {
        do {
            try setting.apply(&configuration, value)
        } catch {
            throw ConfigurationError("\(source): \(error.message)")
        }
    }
}

extension String {
    fileprivate func replacingUnderscores() -> String {
        String(map { $0 == "_" ? "-" : $0 })
    }

    fileprivate func trimmingSpaces() -> String {
        var text = Substring(self)
        while text.first == " " { text.removeFirst() }
        while text.last == " " { text.removeLast() }
        return String(text)
    }
}
