import Foundation
import Snorky
import SnorkyServices
import Testing

/// The `[datasync]` part of deploy/snorky.toml (the node settings are checked in
/// SnorkyConfigTests): it loads, states the defaults, documents every key the parser
/// accepts, and its commented-out dealers are valid.
@Suite("deploy/snorky.toml, the [datasync] section")
struct DataSyncExampleConfigurationTests {
    static func exampleText() throws -> String {
        let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
            .deletingLastPathComponent()
        return try String(contentsOf: root.appendingPathComponent("deploy/snorky.toml"), encoding: .utf8)
    }

    /// The lines from `[datasync]` to the end of the file.
    static func dataSyncLines() throws -> [String] {
        let lines = try exampleText().components(separatedBy: "\n")
        let start = try #require(lines.firstIndex(of: "[datasync]"), "deploy/snorky.toml has no [datasync] section")
        return Array(lines[start...])
    }

    @Test("loads with the real parser and states the defaults")
    func loadsAsDefaults() throws {
        let options = try DataSyncOptions(configurationText: try Self.exampleText(), fileName: "deploy/snorky.toml")
        let defaults = DataSyncOptions()
        #expect(options.subscriptionTTL == defaults.subscriptionTTL)
        #expect(options.maxBufferedDeltas == defaults.maxBufferedDeltas)
        #expect(options.dealers.isEmpty)
    }

    @Test("documents every key of [datasync] and of a dealer")
    func documentsEveryKey() throws {
        let lines = try Self.dataSyncLines()
        for key in DataSyncOptions.sectionKeys {
            // `dealers` is documented by its `[[datasync.dealers]]` tables.
            let needle = key == "dealers" ? "[[datasync.dealers]]" : "\(key) = "
            #expect(lines.contains { $0.hasPrefix(needle) || $0.hasPrefix("# " + needle) }, "no '\(needle)' under [datasync]")
        }
        for key in DataSyncOptions.dealerKeys {
            #expect(lines.contains { $0.hasPrefix("#   \(key) ") }, "the dealer key '\(key)' is not described")
            #expect(lines.contains { $0.hasPrefix("# \(key) = ") }, "no example of the dealer key '\(key)'")
        }
    }

    @Test("its commented-out dealers load as dealers")
    func commentedDealersLoad() throws {
        // Uncomment the example tables and their keys (the `#   key  meaning` lines stay comments).
        let uncommented = try Self.dataSyncLines().map { line -> String in
            guard line.hasPrefix("# ") else { return line }
            let rest = line.dropFirst(2)
            let isTable = rest.hasPrefix("[[datasync.dealers]]")
            let isKey = DataSyncOptions.dealerKeys.contains { rest.hasPrefix("\($0) = ") }
            return isTable || isKey ? String(rest) : line
        }
        let options = try DataSyncOptions(configurationText: uncommented.joined(separator: "\n"), fileName: "uncommented example")
        #expect(options.dealers.byName.count >= 2)
        #expect(options.dealers.byName.values.contains { $0 is SimpleDealer })
    }
}
