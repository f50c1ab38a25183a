import SnorkyProtocol
import SnorkyTesting
import Testing

@Suite("UTF-8 validation")
struct UTF8ValidationTests {
    private func isValid(_ bytes: [UInt8]) -> Bool {
        bytes.withUnsafeBytes { UTF8Validation.isValid($0) }
    }

    @Test(
        "the edges of each sequence length",
        arguments: [
            ([], true), (Array("plain ASCII, longer than eight bytes".utf8), true),
            ([0x7F], true), ([0x80], false), ([0xC0, 0x80], false), ([0xC1, 0xBF], false),
            ([0xC2, 0x80], true), ([0xDF, 0xBF], true), ([0xC2], false), ([0xC2, 0x41], false),
            ([0xE0, 0x9F, 0xBF], false), ([0xE0, 0xA0, 0x80], true), ([0xED, 0x9F, 0xBF], true),
            ([0xED, 0xA0, 0x80], false), ([0xEF, 0xBF, 0xBF], true), ([0xE1, 0x80], false),
            ([0xF0, 0x8F, 0xBF, 0xBF], false), ([0xF0, 0x90, 0x80, 0x80], true),
            ([0xF4, 0x8F, 0xBF, 0xBF], true), ([0xF4, 0x90, 0x80, 0x80], false), ([0xF5, 0x80, 0x80, 0x80], false),
            ([0xF0, 0x90, 0x80, 0x41], false), ([0xFF], false),
            (Array("eight ok".utf8) + [0xE2, 0x82, 0xAC] + Array("then more ASCII".utf8), true),
            (Array("eight ok".utf8) + [0xE2, 0x82], false),
        ] as [([UInt8], Bool)])
    func edges(_ bytes: [UInt8], _ expected: Bool) {
        #expect(isValid(bytes) == expected)
    }

    @Test("agrees with the standard library on random byte strings mixing ASCII, valid and broken sequences")
    func agreesWithTheStandardLibrary() {
        var rng = SeededGenerator(seed: 0x5EED_0F_07F8)
        let pieces: [[UInt8]] = [
            Array("abcdefghij".utf8), Array("é".utf8), Array("€".utf8), Array("😀".utf8), [0x80], [0xC3], [0xE2, 0x82],
            [0xED, 0xA0, 0x80], [0xF4, 0x90, 0x80, 0x80], [0xC0, 0xAF], [0xFE],
        ]
        for _ in 0..<20_000 {
            var bytes: [UInt8] = []
            for _ in 0..<Int.random(in: 0..<12, using: &rng) {
                if Bool.random(using: &rng) {
                    bytes += pieces.randomElement(using: &rng)!
                } else {
                    bytes.append(UInt8.random(in: 0...255, using: &rng))
                }
            }
            #expect(isValid(bytes) == (String(validating: bytes, as: UTF8.self) != nil), "\(bytes)")
        }
    }
}
