/// A listening TCP socket the supervisor binds for its workers.
public struct ListenerSpec: Sendable, Hashable {
    /// A short name used in logs, e.g. `ws` or `backend`.
    public var name: String
    /// Address to bind: a numeric IPv4/IPv6 address or a host name (its first address is used).
    public var host: String
    /// Port to bind; 0 picks an ephemeral port (shared by every worker slot).
    public var port: Int

    public init(name: String, host: String, port: Int) {
        self.name = name
        self.host = host
        self.port = port
    }
}

/// A listener after binding: `port` is the real port, even when 0 was asked for.
public struct BoundListener: Sendable, Hashable {
    public var name: String
    public var host: String
    public var port: Int

    public init(name: String, host: String, port: Int) {
        self.name = name
        self.host = host
        self.port = port
    }
}

/// When to restart a process that died, and when to stop trying.
public struct RestartPolicy: Sendable, Hashable {
    /// Delay before the first restart after a crash; doubles with every further crash in
    /// `crashLoopWindow`.
    public var initialBackoff: Duration
    /// Upper bound of the doubling delay.
    public var maxBackoff: Duration
    /// The supervisor gives up (and exits non-zero) when one slot crashes this many times
    /// within `crashLoopWindow`.
    public var crashLoopLimit: Int
    public var crashLoopWindow: Duration

    public init(
        initialBackoff: Duration = .milliseconds(100),
        maxBackoff: Duration = .seconds(5),
        crashLoopLimit: Int = 5,
        crashLoopWindow: Duration = .seconds(30)
    ) {
        self.initialBackoff = initialBackoff
        self.maxBackoff = maxBackoff
        self.crashLoopLimit = crashLoopLimit
        self.crashLoopWindow = crashLoopWindow
    }
}

/// A private `redis-server` the supervisor runs on a Unix socket (no TCP, no persistence)
/// so one command can run a whole single-node cluster.
public struct EmbeddedRedisConfiguration: Sendable, Hashable {
    /// A name looked up on `PATH`, or a path (anything containing `/`).
    public var executable: String
    /// Parent of the private runtime directory (`snorky-<pid>-XXXXXX`, mode 0700) that holds
    /// the socket. nil: `$XDG_RUNTIME_DIR`, or `/tmp` when that is unset.
    public var runtimeDirectory: String?

    public init(executable: String = "redis-server", runtimeDirectory: String? = nil) {
        self.executable = executable
        self.runtimeDirectory = runtimeDirectory
    }
}

public struct SupervisorConfiguration: Sendable {
    /// Number of worker slots (processes running at once, outside a reload).
    public var workerCount: Int
    /// Sockets to bind; worker fds 3, 4, … follow this order.
    public var listeners: [ListenerSpec]
    /// The worker program. `/proc/self/exe` re-runs the supervisor's own binary, but note it
    /// keeps naming the *running* inode: to pick up a replaced binary on reload, pass the
    /// installed path instead.
    public var executablePath: String
    /// Arguments after argv[0].
    public var workerArguments: [String]
    /// Added to (and overriding) the supervisor's own environment for workers.
    public var workerEnvironment: [String: String]
    public var restartPolicy: RestartPolicy
    /// How long a draining worker may take before it is killed (shutdown and reload).
    public var shutdownTimeout: Duration
    /// How long a new worker may take to report ready.
    public var readinessTimeout: Duration
    /// nil: no embedded redis-server.
    public var embeddedRedis: EmbeddedRedisConfiguration?

    public init(
        workerCount: Int,
        listeners: [ListenerSpec],
        executablePath: String = "/proc/self/exe",
        workerArguments: [String] = [],
        workerEnvironment: [String: String] = [:],
        restartPolicy: RestartPolicy = RestartPolicy(),
        shutdownTimeout: Duration = .seconds(10),
        readinessTimeout: Duration = .seconds(30),
        embeddedRedis: EmbeddedRedisConfiguration? = nil
    ) {
        self.workerCount = workerCount
        self.listeners = listeners
        self.executablePath = executablePath
        self.workerArguments = workerArguments
        self.workerEnvironment = workerEnvironment
        self.restartPolicy = restartPolicy
        self.shutdownTimeout = shutdownTimeout
        self.readinessTimeout = readinessTimeout
        self.embeddedRedis = embeddedRedis
    }
}
