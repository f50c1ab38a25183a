#if canImport(Glibc)
import Glibc
#endif

/// Everything the supervisor (or a worker reading its environment) can fail with.
///
/// Compare `kind` to tell failures apart; `description` is the message for humans.
public struct SupervisorError: Error, Sendable, CustomStringConvertible {
    /// The category of a failure, independent of its details.
    public struct Kind: Hashable, Sendable, CustomStringConvertible {
        private let name: String
        private init(_ name: String) { self.name = name }
        public var description: String { name }

        /// Another process already listens on the address.
        public static let addressInUse = Kind("addressInUse")
        /// Resolving, binding or listening failed for another reason.
        public static let bindFailed = Kind("bindFailed")
        /// The embedded redis-server executable could not be found.
        public static let redisNotFound = Kind("redisNotFound")
        /// The worker executable does not exist or is not executable.
        public static let executableNotFound = Kind("executableNotFound")
        /// The embedded redis runtime directory could not be created.
        public static let runtimeDirectory = Kind("runtimeDirectory")
        /// posix_spawn/fork, pipe or thread creation failed.
        public static let spawnFailed = Kind("spawnFailed")
        /// The configuration cannot work (no workers, duplicate listener names, …).
        public static let invalidConfiguration = Kind("invalidConfiguration")
        /// `run()` was called a second time.
        public static let alreadyRunning = Kind("alreadyRunning")
        /// A `SNORKY_*` variable a worker received is malformed.
        public static let malformedWorkerEnvironment = Kind("malformedWorkerEnvironment")
    }

    public let kind: Kind
    public let description: String

    init(_ kind: Kind, _ description: String) {
        self.kind = kind
        self.description = description
    }

    static func addressInUse(listener: String, address: String) -> Self {
        Self(.addressInUse, "cannot bind \(listener) to \(address): address already in use (is another server running?)")
    }

    static func bindFailed(listener: String, address: String, step: String, errno code: Int32) -> Self {
        Self(.bindFailed, "cannot bind \(listener) to \(address): \(step) failed: \(errnoDescription(code))")
    }

    static let redisNotFound = Self(
        .redisNotFound,
        "redis-server not found: install it (apt-get install redis-server) or pass --redis redis://HOST:PORT"
    )

    static func executableNotFound(_ path: String) -> Self {
        Self(.executableNotFound, "worker executable \(path) not found or not executable")
    }

    static func runtimeDirectory(_ path: String, _ problem: String) -> Self {
        Self(.runtimeDirectory, "cannot create redis runtime directory \(path): \(problem)")
    }

    static func spawnFailed(_ what: String, errno code: Int32) -> Self {
        Self(.spawnFailed, "cannot start \(what): \(errnoDescription(code))")
    }

    static func invalidConfiguration(_ problem: String) -> Self {
        Self(.invalidConfiguration, "invalid supervisor configuration: \(problem)")
    }

    static let alreadyRunning = Self(.alreadyRunning, "Supervisor.run() can only be called once")

    static func malformedWorkerEnvironment(_ key: String, _ value: String) -> Self {
        Self(.malformedWorkerEnvironment, "malformed worker environment: \(key)=\(value)")
    }
}

/// "Address already in use (errno 98)": strerror's text plus the number for searching.
func errnoDescription(_ code: Int32) -> String {
    // strerror_r has two incompatible signatures; strerror is fine for these rare,
    // non-concurrent-critical messages (glibc's returns a static table entry).
    "\(String(cString: strerror(code))) (errno \(code))"
}
