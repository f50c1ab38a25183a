import Foundation
import Logging
import SnorkyServer
import SnorkyTesting
import Synchronization
import Testing

/// Structured log lines: one event is one line, in logfmt or JSON, fields in a fixed order.
@Suite struct LogLineFormatterTests {
    /// 2026-11-25T01:02:03.456Z
    let time = (seconds: 1_795_568_523, milliseconds: 456)

    private func logfmt(_ message: String, level: Logger.Level = .info, label: String = "snorky", _ metadata: Logger.Metadata = [:]) -> String {
        LogLineFormatter(format: .logfmt).line(time: time, level: level, message: message, label: label, metadata: metadata)
    }

    private func json(_ message: String, level: Logger.Level = .info, label: String = "snorky", _ metadata: Logger.Metadata = [:]) -> String {
        LogLineFormatter(format: .json).line(time: time, level: level, message: message, label: label, metadata: metadata)
    }

    @Test("logfmt: time, level, the process's identity, the message, then metadata by key")
    func logfmtOrder() throws {
        let line = logfmt("worker listening", ["ws": "127.0.0.1:5800", "pid": "123", "backend": "127.0.0.1:5801", "slot": "0", "role": "worker"])
        #expect(line == "ts=2026-11-25T01:02:03.456Z level=info role=worker slot=0 pid=123 msg=\"worker listening\" backend=127.0.0.1:5801 ws=127.0.0.1:5800")
        let parsed = try LogfmtLine(parsing: line)
        #expect(parsed.fields.map(\.key) == ["ts", "level", "role", "slot", "pid", "msg", "backend", "ws"])
        #expect(parsed["msg"] == "worker listening")
    }

    @Test("every level is written by its name", arguments: Logger.Level.allCases)
    func levels(level: Logger.Level) throws {
        #expect(try LogfmtLine(parsing: logfmt("m", level: level))["level"] == level.rawValue)
        #expect(try jsonObject(json("m", level: level))["level"] as? String == level.rawValue)
    }

    @Test("logfmt quotes and escapes whatever would split a field or a line")
    func logfmtEscaping() throws {
        let nasty = "line one\nline two\r\ttab \"quoted\" back\\slash key=value \u{1}\u{7F}\u{2028}end"
        let line = logfmt(nasty, level: .error, ["detail": .string(nasty), "empty": "", "plain": "abc", "we ird=key": "v"])
        #expect(!line.contains("\n") && !line.contains("\r") && !line.contains("\u{2028}"), "one event, one line: \(line)")
        let parsed = try LogfmtLine(parsing: line)
        #expect(parsed["msg"] == nasty)
        #expect(parsed["detail"] == nasty)
        #expect(parsed["empty"] == "")
        #expect(parsed["plain"] == "abc")
        #expect(line.contains(" plain=abc"), "simple values stay bare")
        #expect(parsed["we_ird_key"] == "v", "keys lose the characters logfmt cannot carry")
    }

    @Test("JSON: one object per line with the same fields in the same order, strings escaped")
    func jsonLine() throws {
        let nasty = "a \"b\" \\ c\nd\u{0}e\u{2029}"
        let line = json(nasty, level: .warning, ["role": "supervisor", "status": "signal 9 (SIGKILL)", "detail": .string(nasty)])
        #expect(!line.contains("\n"))
        #expect(line.hasPrefix(#"{"ts":"2026-11-25T01:02:03.456Z","level":"warning","role":"supervisor","msg":"#))
        let object = try jsonObject(line)
        #expect(object["msg"] as? String == nasty)
        #expect(object["detail"] as? String == nasty)
        #expect(object["status"] as? String == "signal 9 (SIGKILL)")
        let keys = line.split(separator: ",").compactMap { $0.split(separator: ":").first }.prefix(4)
        #expect(keys == [#"{"ts""#, #""level""#, #""role""#, #""msg""#])
    }

    @Test("nested metadata: flattened in logfmt, structured in JSON")
    func nestedMetadata() throws {
        let metadata: Logger.Metadata = ["nodes": ["a", "b"], "counts": ["names": "2", "records": "0"]]
        let parsed = try LogfmtLine(parsing: logfmt("reaped", metadata))
        #expect(parsed["nodes"] == "[a,b]")
        #expect(parsed["counts"] == "{names=2,records=0}")
        let object = try jsonObject(json("reaped", metadata))
        #expect(object["nodes"] as? [String] == ["a", "b"])
        #expect(object["counts"] as? [String: String] == ["names": "2", "records": "0"])
    }

    @Test("metadata named like a field the line writes itself does not replace it")
    func reservedKeys() throws {
        let parsed = try LogfmtLine(parsing: logfmt("real", ["msg": "fake", "level": "fake", "ts": "fake"]))
        #expect(parsed["msg"] == "real")
        #expect(parsed["level"] == "info")
        #expect(parsed["_msg"] == "fake" && parsed["_level"] == "fake" && parsed["_ts"] == "fake")
        #expect(parsed.fields.filter { $0.key == "msg" }.count == 1)
    }

    @Test("a logger with another label names it")
    func otherLabel() throws {
        #expect(try LogfmtLine(parsing: logfmt("x"))["logger"] == nil)
        #expect(try LogfmtLine(parsing: logfmt("x", label: "snorky.redis-bus"))["logger"] == "snorky.redis-bus")
    }

    @Test("the handler merges its metadata, the provider's and the event's, and writes one line per event")
    func handler() throws {
        let lines = Mutex<[String]>([])
        var handler = StructuredLogHandler(
            label: "snorky", format: .logfmt, level: .debug,
            metadataProvider: Logger.MetadataProvider { ["request": "r1", "role": "overridden"] },
            output: { line in lines.withLock { $0.append(line) } })
        handler[metadataKey: "role"] = "worker"
        handler[metadataKey: "slot"] = "2"
        var logger = Logger(label: "snorky") { _ in handler }
        logger.logLevel = .debug
        logger.debug("first", metadata: ["role": "event"])
        logger.trace("below the level")
        logger.notice("second\nhalf")
        let written = lines.withLock { $0 }
        #expect(written.count == 2)
        #expect(written.allSatisfy { $0.hasSuffix("\n") && $0.dropLast().firstIndex(of: "\n") == nil })
        let first = try LogfmtLine(parsing: String(written[0].dropLast()))
        #expect(first["role"] == "event", "the event's metadata wins")
        #expect(first["slot"] == "2")
        #expect(first["request"] == "r1")
        #expect(first["level"] == "debug")
        #expect(try LogfmtLine(parsing: String(written[1].dropLast()))["msg"] == "second\nhalf")
    }

    private func jsonObject(_ line: String) throws -> [String: Any] {
        try #require(JSONSerialization.jsonObject(with: Data(line.utf8)) as? [String: Any], "not a JSON object: \(line)")
    }
}
