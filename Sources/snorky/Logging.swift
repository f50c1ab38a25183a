import Logging
import SnorkyConfig

enum LoggingSetup {
    /// One line per event on standard error, at the configured level.
    static func bootstrap(level: String, role: String) -> Logger {
        let logLevel = Logger.Level(rawValue: level) ?? .info
        LoggingSystem.bootstrap { label in
            var handler = StreamLogHandler.standardError(label: label)
            handler.logLevel = logLevel
            return handler
        }
        var logger = Logger(label: "snorky")
        logger[metadataKey: "role"] = "\(role)"
        if role == "worker" {
            // The supervisor's own lines name the worker pids they are about.
            logger[metadataKey: "pid"] = "\(ProcessID.current)"
        }
        return logger
    }
}

enum ProcessID {
    static var current: Int32 { getpid() }
}

#if canImport(Glibc)
import Glibc
#endif
