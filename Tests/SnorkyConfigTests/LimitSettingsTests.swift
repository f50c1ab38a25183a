import SnorkyConfig
import Testing

@Suite("Configuration: max_subscriptions, request rate and allowed_origins")
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

    @Test("request rate: 100 per second with a burst of 200 by default; file < environment < flag; 0 disables")
    func requestRate() throws {
        let defaults = try ConfigurationLoader.load()
        #expect(defaults.maxRequestsPerSecond == 100)
        #expect(defaults.requestBurst == 200)
        let file = "max_requests_per_second = 5\nrequest_burst = 6"
        let fromFile = try ConfigurationLoader.load(fileText: file)
        #expect(fromFile.maxRequestsPerSecond == 5)
        #expect(fromFile.requestBurst == 6)
        let fromEnvironment = try ConfigurationLoader.load(
            fileText: file,
            environment: ["SNORKY_MAX_REQUESTS_PER_SECOND": "7", "SNORKY_REQUEST_BURST": "8"])
        #expect(fromEnvironment.maxRequestsPerSecond == 7)
        #expect(fromEnvironment.requestBurst == 8)
        let fromFlags = try ConfigurationLoader.load(
            fileText: file,
            environment: ["SNORKY_MAX_REQUESTS_PER_SECOND": "7", "SNORKY_REQUEST_BURST": "8"],
            flags: ["max_requests_per_second": "0", "request_burst": "10"])
        #expect(fromFlags.maxRequestsPerSecond == 0)
        #expect(fromFlags.requestBurst == 10)
        #expect(throws: ConfigurationError.self) { try ConfigurationLoader.load(fileText: "max_requests_per_second = -1") }
        #expect(throws: ConfigurationError.self) { try ConfigurationLoader.load(fileText: "request_burst = 0") }
        #expect(throws: ConfigurationError.self) { try ConfigurationLoader.load(environment: ["SNORKY_REQUEST_BURST": "many"]) }
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
