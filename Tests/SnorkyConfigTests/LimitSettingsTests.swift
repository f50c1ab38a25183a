import SnorkyConfig
import Testing

@Suite("Configuration: max_subscriptions and allowed_origins")
struct LimitSettingsTests {
    @Test("defaults: 1,000 subscriptions, any origin")
    func defaults() throws {
        let configuration = try ConfigurationLoader.load()
        #expect(configuration.maxSubscriptions == 1000)
        #expect(configuration.allowedOrigins == nil)
    }

    @Test("max_subscriptions from the file, the environment and a flag, in that priority")
    func maxSubscriptions() throws {
        #expect(try ConfigurationLoader.load(fileText: "max_subscriptions = 5").maxSubscriptions == 5)
        #expect(
            try ConfigurationLoader.load(
                fileText: "max_subscriptions = 5", environment: ["SNORKY_MAX_SUBSCRIPTIONS": "7"]
            ).maxSubscriptions == 7)
        #expect(
            try ConfigurationLoader.load(
                environment: ["SNORKY_MAX_SUBSCRIPTIONS": "7"], flags: ["max_subscriptions": "9"]
            ).maxSubscriptions == 9)
        #expect(throws: ConfigurationError.self) { try ConfigurationLoader.load(fileText: "max_subscriptions = 0") }
    }

    @Test("allowed_origins: comma-separated text anywhere, or a TOML array; blanks trimmed")
    func allowedOrigins() throws {
        let expected = ["https://a.example", "https://b.example"]
        #expect(
            try ConfigurationLoader.load(environment: ["SNORKY_ALLOWED_ORIGINS": "https://a.example, https://b.example"])
                .allowedOrigins == expected)
        #expect(
            try ConfigurationLoader.load(flags: ["allowed_origins": "https://a.example,https://b.example,"])
                .allowedOrigins == expected)
        #expect(
            try ConfigurationLoader.load(fileText: #"allowed_origins = "https://a.example,https://b.example""#)
                .allowedOrigins == expected)
        #expect(
            try ConfigurationLoader.load(fileText: #"allowed_origins = ["https://a.example", "https://b.example"]"#)
                .allowedOrigins == expected)
        #expect(throws: ConfigurationError.self) { try ConfigurationLoader.load(environment: ["SNORKY_ALLOWED_ORIGINS": " , "]) }
        #expect(throws: ConfigurationError.self) { try ConfigurationLoader.load(fileText: "allowed_origins = [1]") }
    }
}

@Suite("Configuration: demo")
struct DemoSettingTests {
    @Test("demo is off by default; on from the file, SNORKY_DEMO or --demo")
    func demo() throws {
        #expect(try ConfigurationLoader.load().demo == false)
        #expect(try ConfigurationLoader.load(fileText: "demo = true").demo == true)
        #expect(try ConfigurationLoader.load(environment: ["SNORKY_DEMO": "1"]).demo == true)
        #expect(try ConfigurationLoader.load(fileText: "demo = true", environment: ["SNORKY_DEMO": "false"]).demo == false)
        #expect(try ConfigurationLoader.load(environment: ["SNORKY_DEMO": "no"], flags: ["demo": "true"]).demo == true)
        #expect(throws: ConfigurationError.self) { try ConfigurationLoader.load(fileText: #"demo = "maybe""#) }
        let setting = try #require(ConfigurationLoader.settings.first { $0.key == "demo" })
        #expect(setting.flag == "--demo")
        #expect(setting.environmentVariable == "SNORKY_DEMO")
        #expect(!setting.isSecret)
    }
}
