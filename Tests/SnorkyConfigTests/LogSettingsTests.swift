import SnorkyConfig
import Testing

@Suite("Configuration: log_format")
struct LogSettingsTests {
    @Test("logfmt by default; json from the file, SNORKY_LOG_FORMAT or --log-format, in that priority")
    func logFormat() throws {
        #expect(try ConfigurationLoader.load().logFormat == "logfmt")
        #expect(try ConfigurationLoader.load(fileText: #"log_format = "json""#).logFormat == "json")
        #expect(
            try ConfigurationLoader.load(fileText: #"log_format = "json""#, environment: ["SNORKY_LOG_FORMAT": "logfmt"]).logFormat
                == "logfmt")
        #expect(try ConfigurationLoader.load(environment: ["SNORKY_LOG_FORMAT": "logfmt"], flags: ["log_format": "json"]).logFormat == "json")
    }

    @Test("anything else is refused, naming the choices")
    func unknownFormat() throws {
        let error = #expect(throws: ConfigurationError.self) { try ConfigurationLoader.load(flags: ["log_format": "text"]) }
        #expect(error?.message == "--log-format: log_format: expected logfmt or json, got text")
        #expect(throws: ConfigurationError.self) { try ConfigurationLoader.load(fileText: "log_format = 1") }
    }

    @Test("log_format is a setting like the others: its flag and variable follow the key")
    func naming() throws {
        let setting = try #require(ConfigurationLoader.settings.first { $0.key == "log_format" })
        #expect(setting.flag == "--log-format")
        #expect(setting.environmentVariable == "SNORKY_LOG_FORMAT")
        #expect(!setting.isSecret)
    }
}
