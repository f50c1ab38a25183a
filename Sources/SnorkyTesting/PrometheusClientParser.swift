#if canImport(Glibc)
import Glibc
#endif

/// Parses an exposition with the official Python client's parser
/// (`prometheus_client.parser.text_string_to_metric_families`, Debian package
/// `python3-prometheus-client`): an independent judge of the format, next to the strict
/// `PrometheusExposition`.
public enum PrometheusClientParser {
    /// The interpreter with the system's packages (a pyenv shim would not see them).
    static let python = "/usr/bin/python3"

    static let script = """
        import sys
        from prometheus_client.parser import text_string_to_metric_families
        text = open(sys.argv[1], encoding="utf-8").read()
        families = list(text_string_to_metric_families(text))
        names = [family.name for family in families]
        if len(names) != len(set(names)):
            sys.exit("a family appears more than once: " + ", ".join(sorted(n for n in set(names) if names.count(n) > 1)))
        print(sum(len(family.samples) for family in families))
        """

    /// Returns how many samples the parser read; throws with its complaint otherwise.
    public static func sampleCount(of exposition: String, timeout: Duration = .seconds(30)) async throws -> Int {
        var template = Array("/tmp/snorky-exposition-XXXXXX".utf8CString)
        let fd = template.withUnsafeMutableBufferPointer { mkstemp($0.baseAddress!) }
        guard fd >= 0 else { throw PrometheusClientParserError(description: "mkstemp failed: errno \(errno)") }
        let path = String(decoding: template.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
        defer { unlink(path) }
        let bytes = Array(exposition.utf8)
        let written = bytes.withUnsafeBytes { write(fd, $0.baseAddress, $0.count) }
        close(fd)
        guard written == bytes.count else { throw PrometheusClientParserError(description: "cannot write \(path)") }

        let process = try await ProcessHandle.launch(python, arguments: ["-c", script, path])
        let status = try await process.waitForExit(timeout: timeout)
        var stdout: [String] = []
        var stderr: [String] = []
        for await line in process.lines {
            if line.stream == .stdout { stdout.append(line.text) } else { stderr.append(line.text) }
        }
        guard status == 0, let count = stdout.last.flatMap({ Int($0) }) else {
            throw PrometheusClientParserError(
                description: "prometheus_client refused the exposition (exit \(status)): " + (stderr + stdout).suffix(10).joined(separator: "\n"))
        }
        return count
    }
}

public struct PrometheusClientParserError: Error, Sendable, CustomStringConvertible {
    public var description: String
}
