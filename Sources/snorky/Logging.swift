import Logging
import SnorkyConfig
import SnorkyServer

enum LoggingSetup {
    /// One line per event on standard error (logfmt or JSON), at the configured level.
    static func bootstrap(level: String, format: String, role: String) -> Logger {
        let logLevel = Logger.Level(rawValue: level) ?? .info
        let lineFormat = LogLineFormatter.Format(rawValue: format) ?? .logfmt
        LoggingSystem.bootstrap { label in
            StructuredLogHandler(label: label, format: lineFormat, level: logLevel)
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
