import SnorkyConfig
import Testing

@Suite("Configuration: max_write_delay")
struct WriteDelaySettingsTests {
    @Test("default 20 ms; zero turns coalescing off; negative or non-numeric values are refused")
    func maxWriteDelay() throws {
        #expect(try ConfigurationLoader.load().maxWriteDelay == 0.02)
        #expect(try ConfigurationLoader.load(fileText: "max_write_delay = 0.02").maxWriteDelay == 0.02)
        #expect(try ConfigurationLoader.load(environment: ["SNORKY_MAX_WRITE_DELAY": "0"]).maxWriteDelay == 0)
        #expect(throws: ConfigurationError.self) { try ConfigurationLoader.load(fileText: "max_write_delay = -1") }
        #expect(throws: ConfigurationError.self) { try ConfigurationLoader.load(environment: ["SNORKY_MAX_WRITE_DELAY": "soon"]) }
    }

    @Test("coalescing_rate: default 20,000 frames/s; zero coalesces at any load; negative or non-numeric values are refused")
    func coalescingRate() throws {
        #expect(try ConfigurationLoader.load().coalescingRate == 20_000)
        #expect(try ConfigurationLoader.load(fileText: "coalescing_rate = 5000").coalescingRate == 5000)
        #expect(try ConfigurationLoader.load(environment: ["SNORKY_COALESCING_RATE": "0"]).coalescingRate == 0)
        #expect(throws: ConfigurationError.self) { try ConfigurationLoader.load(fileText: "coalescing_rate = -1") }
        #expect(throws: ConfigurationError.self) { try ConfigurationLoader.load(environment: ["SNORKY_COALESCING_RATE": "many"]) }
    }
}
