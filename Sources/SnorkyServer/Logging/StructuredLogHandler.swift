#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif
public import Logging

/// A swift-log handler that writes each event as one logfmt or JSON line (see
/// `LogLineFormatter`) to standard error.
///
/// Each line goes out in a single `write`, so lines of the supervisor and its workers,
/// which share the stream, never interleave mid-line (writes to a pipe up to 4 KiB are
/// atomic). No lock: nothing is buffered in the process.
public struct StructuredLogHandler: LogHandler {
    public var logLevel: Logger.Level
    public var metadata: Logger.Metadata = [:]
    public var metadataProvider: Logger.MetadataProvider?

    private let label: String
    private let formatter: LogLineFormatter
    private let output: @Sendable (String) -> Void

    /// - Parameter output: receives each line, with its line feed; standard error by default.
    public init(
        label: String,
        format: LogLineFormatter.Format,
        level: Logger.Level = .info,
        metadataProvider: Logger.MetadataProvider? = nil,
        output: @escaping @Sendable (String) -> Void = StructuredLogHandler.writeToStandardError
    ) {
        self.label = label
        self.formatter = LogLineFormatter(format: format)
        self.logLevel = level
        self.metadataProvider = metadataProvider
        self.output = output
    }

    public subscript(metadataKey key: String) -> Logger.Metadata.Value? {
        get { metadata[key] }
        set { metadata[key] = newValue }
    }

    public func log(event: LogEvent) {
        var merged = metadata
        if let provided = metadataProvider?.get(), !provided.isEmpty {
            merged.merge(provided) { _, new in new }
        }
        if let own = event.metadata, !own.isEmpty {
            merged.merge(own) { _, new in new }
        }
        if let error = event.error, merged["error"] == nil {
            merged["error"] = .string("\(error)")
        }
        let line = formatter.line(
            time: LogLineFormatter.now(), level: event.level, message: event.message.description, label: label, metadata: merged)
        output(line + "\n")
    }

    /// Writes `line` to file descriptor 2 in one call (retrying what a partial write left).
    @Sendable public static func writeToStandardError(_ line: String) {
        var line = line
        line.withUTF8 { bytes in
            var offset = 0
            while offset < bytes.count {
                let written = write(2, bytes.baseAddress! + offset, bytes.count - offset)
                if written < 0 {
                    if errno == EINTR { continue }
                    return  // nowhere to report it
                }
                offset += written
            }
        }
    }
}
