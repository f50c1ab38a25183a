import Foundation
import SnorkyTesting
import Testing

/// The libFuzzer target's checks (Sources/SnorkyFuzz), run by the plain build of
/// `SnorkyFuzz` over the committed corpus: every seed and every input that once crashed
/// it stays covered by the ordinary suite, without a sanitizer build.
@Suite("Fuzz corpus")
struct FuzzCorpusTests {
    static let corpus = URL(fileURLWithPath: #filePath)
        .deletingLastPathComponent().deletingLastPathComponent()
        .appendingPathComponent("Fuzz/corpus").path

    @Test("every input of Tests/Fuzz/corpus goes through the frame and envelope checks without a crash")
    func corpusReplays() async throws {
        let inputs = try FileManager.default.contentsOfDirectory(atPath: Self.corpus)
        #expect(inputs.count >= 50, "the corpus at \(Self.corpus) is missing seeds")
        let process = try await ProcessHandle.launch(try SnorkyExecutable.locate(named: "SnorkyFuzz"), arguments: [Self.corpus])
        let summary = try await process.waitForLine(containing: "inputs without a crash", timeout: .seconds(60))
        #expect(summary == "ran \(inputs.count) inputs without a crash")
        #expect(try await process.waitForExit(timeout: .seconds(15)) == 0, "\(process.recentOutput())")
    }
}
