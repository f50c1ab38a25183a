/// Every setting of a Snorky node, with its default. Filled in one place
/// (`ConfigurationLoader`) from, in increasing priority: defaults, the TOML config file,
/// `SNORKY_*` environment variables, and command-line flags.
public struct SnorkyConfiguration: Sendable, Equatable {
    public enum BusKind: String, Sendable, Equatable, CaseIterable {
        /// Redis: the embedded private server, or the one `redis` names.
        case redis
        /// In-process only: a single worker, nothing shared.
        case memory
    }

    public var host = "127.0.0.1"
    public var port = 5800
    public var backendHost = "127.0.0.1"
    public var backendPort = 5801
    public var backendKey: String?
    /// Worker processes; 0 means one per core.
    public var workers = 0
    /// Event-loop threads per worker.
    public var threads = 1
    public var bus = BusKind.redis
    /// `redis://host:port/db` or `unix:///path`; nil starts a private redis-server.
    public var redis: String?
    /// Prefix of every Redis key and channel, so several clusters can share one Redis.
    public var redisPrefix = "snorky"
    /// Whether WebSocket clients may `publish` on pubsub.
    public var clientPublish = true
    public var maxFrameSize = 64 * 1024
    public var maxOutboundBuffer = 1024 * 1024
    public var backendMaxBodySize = 1024 * 1024
    /// Seconds.
    public var backendTimeout = 10.0
    /// Seconds a graceful drain waits for clients.
    public var drainTimeout = 10.0
    /// Seconds over which a drain spreads its 1001 closes.
    public var drainSpread = 2.0
    /// Seconds of silence before a client is pinged.
    public var pingInterval = 25.0
    /// Seconds a pinged client has to answer before it is closed (4002).
    public var pongTimeout = 10.0
    /// Seconds a connection flushed recently waits before its next write, so a busy
    /// connection gets many frames per syscall; 0 writes every batch at once.
    public var maxWriteDelay = 0.02
    /// Frames a second a worker's event loop must be writing before `maxWriteDelay`
    /// applies: a quiet server never makes a frame wait. 0 coalesces at any load.
    public var coalescingRate = 20_000
    /// WebSocket connections per worker; 0 = no limit. More are closed with 4003.
    public var maxConnections = 0
    /// Requests (messages and pings) per second one connection may send, sustained;
    /// 0 = no limit. A client over its allowance is closed with 4004.
    public var maxRequestsPerSecond = 100
    /// Requests a connection may send at once above that rate.
    public var requestBurst = 200
    /// Topics one connection may subscribe to at once; more are refused.
    public var maxSubscriptions = 1000
    /// Origins allowed to open WebSocket connections (`Origin` header); nil allows any.
    /// Requests without an `Origin` header (non-browser clients) are always allowed.
    public var allowedOrigins: [String]?
    public var protocolErrorLimit = 100
    /// Seconds.
    public var protocolErrorWindow = 10.0
    public var logLevel = "info"
    /// `logfmt` (the default) or `json`: how each log line is written.
    public var logFormat = "logfmt"
    /// Secret of the HS256 connection tokens (JWT `sub` = identity); nil disables tokens.
    public var tokenSecret: String?
    /// Serve the demo page at `/`, with connection tokens for any name (trials only).
    public var demo = false

    public init() {}

    /// `workers` with 0 resolved to the number of cores.
    public var resolvedWorkers: Int {
        workers > 0 ? workers : max(1, SystemInfo.coreCount)
    }
}

enum SystemInfo {
    static var coreCount: Int {
        #if os(Linux)
        Int(sysconf(Int32(_SC_NPROCESSORS_ONLN)))
        #else
        ProcessInfo.processInfo.activeProcessorCount
        #endif
    }
}

#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#else
import Foundation
#endif
