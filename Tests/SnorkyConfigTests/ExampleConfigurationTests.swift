import Foundation
import SnorkyConfig
import Testing

/// deploy/snorky.toml is the reference of every setting: it must load, state the true
/// defaults, and document each setting the loader knows, so a setting added to
/// `ConfigurationLoader.settings` without documentation fails here.
@Suite("deploy/snorky.toml, the example configuration")
struct ExampleConfigurationTests {
    @Test("loads with the real loader and changes nothing: its active lines are the defaults")
    func loadsAsDefaults() throws {
        let example = try ExampleConfiguration.load()
        let configuration = try ConfigurationLoader.load(fileText: example.text, fileName: ExampleConfiguration.relativePath)
        #expect(configuration == SnorkyConfiguration())
    }

    @Test("documents every setting the loader knows, each with its default")
    func documentsEverySetting() throws {
        let example = try ExampleConfiguration.load()
        for setting in ConfigurationLoader.settings {
            let lines = example.settingLines(setting.key)
            guard let line = lines.first else {
                Issue.record("\(ExampleConfiguration.relativePath) does not document '\(setting.key)' (as `\(setting.key) = …` or `# \(setting.key) = …`)")
                continue
            }
            #expect(lines.count == 1, "'\(setting.key)' appears \(lines.count) times")
            let documentation = example.commentBlock(above: line)
            #expect(!documentation.isEmpty, "'\(setting.key)' has no comment above it")
            #expect(
                documentation.lowercased().contains("default"),
                "the comment above '\(setting.key)' does not state its default: \(documentation)")
        }
    }

    @Test("its commented-out settings are valid examples that the loader accepts")
    func commentedExamplesLoad() throws {
        let example = try ExampleConfiguration.load()
        let known = Set(ConfigurationLoader.settings.map(\.key))
        let uncommented = example.uncommentingSettings(known)
        #expect(!uncommented.lines.isEmpty, "expected some settings without a default, commented out")
        _ = try ConfigurationLoader.load(fileText: uncommented.text, fileName: "uncommented example")
        for (key, line) in uncommented.lines.sorted(by: { $0.key < $1.key }) {
            let alone = try ConfigurationLoader.load(fileText: line, fileName: key)
            #expect(alone != SnorkyConfiguration(), "the example value of '\(key)' changes nothing")
        }
    }
}

/// The text of deploy/snorky.toml, found from this source file's path.
struct ExampleConfiguration {
    static let relativePath = "deploy/snorky.toml"

    let text: String
    let lines: [String]

    static func load() throws -> ExampleConfiguration {
        let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
            .deletingLastPathComponent()
        let text = try String(contentsOf: root.appendingPathComponent(relativePath), encoding: .utf8)
        return ExampleConfiguration(text: text, lines: text.components(separatedBy: "\n"))
    }

    /// Indices of the top-level lines (before the first `[section]`) that set `key`,
    /// active (`key = …`) or commented out (`# key = …`).
    func settingLines(_ key: String) -> [Int] {
        lines.indices.prefix { !lines[$0].hasPrefix("[") }.filter { index in
            Self.settingKey(of: lines[index]) == key
        }
    }

    /// The key a line sets, active or commented out, if it looks like `[# ]key = value`.
    static func settingKey(of line: String) -> String? {
        var rest = Substring(line)
        if rest.hasPrefix("# ") { rest = rest.dropFirst(2) }
        let key = rest.prefix { $0.isLetter || $0.isNumber || $0 == "_" }
        guard !key.isEmpty, rest.dropFirst(key.count).hasPrefix(" = ") else { return nil }
        return String(key)
    }

    /// The comment lines directly above line `index`, joined, without their `#`.
    func commentBlock(above index: Int) -> String {
        var block: [String] = []
        var current = index - 1
        while current >= 0, lines[current].hasPrefix("#"), Self.settingKey(of: lines[current]) == nil {
            block.insert(String(lines[current].dropFirst()), at: 0)
            current -= 1
        }
        return block.joined(separator: " ")
    }

    /// The text with every commented-out top-level setting among `known` made active, and
    /// each such line by its key.
    func uncommentingSettings(_ known: Set<String>) -> (text: String, lines: [String: String]) {
        var result = lines
        var activated: [String: String] = [:]
        for index in lines.indices.prefix(while: { !lines[$0].hasPrefix("[") }) {
            let line = lines[index]
            guard line.hasPrefix("# "), let key = Self.settingKey(of: line), known.contains(key) else { continue }
            result[index] = String(line.dropFirst(2))
            activated[key] = result[index]
        }
        return (result.joined(separator: "\n"), activated)
    }
}
