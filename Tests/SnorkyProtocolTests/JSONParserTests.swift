import SnorkyProtocol
import Testing

/// Parses text, failing the test (not crashing) on an error.
private func parse(_ text: String, maxDepth: Int = JSON.defaultMaxDepth) throws -> JSON {
    try JSON.parse(text, maxDepth: maxDepth)
}

private func rejects(_ text: String, maxDepth: Int = JSON.defaultMaxDepth) -> Bool {
    (try? JSON.parse(text, maxDepth: maxDepth)) == nil
}

private func rejects(bytes: [UInt8]) -> Bool {
    (try? JSON.parse(bytes)) == nil
}

@Suite("JSON parser")
struct JSONParserTests {
    // MARK: Value kinds

    @Test("every value kind parses to the matching case")
    func valueKinds() throws {
        #expect(try parse("null") == .null)
        #expect(try parse("true") == .bool(true))
        #expect(try parse("false") == .bool(false))
        #expect(try parse("\"hi\"") == .string("hi"))
        #expect(try parse("[]") == .array([]))
        #expect(try parse("{}") == .object(JSONObject()))
        #expect(try parse("[1,\"a\",null,true,[],{}]") == [1, "a", nil, true, [], [:]])

        let nested = try parse(#"{"a":{"b":[1,{"c":"d"}]},"e":false}"#)
        #expect(nested["a"]?["b"]?.arrayValue?[1]["c"] == "d")
        #expect(nested["e"] == false)
        #expect(nested["missing"] == nil)
    }

    @Test("integers keep the integer case, fractions and exponents give doubles")
    func integerVersusDouble() throws {
        guard case .int(7) = try parse("7") else { Issue.record("7 is not .int(7)"); return }
        guard case .int(-7) = try parse("-7") else { Issue.record("-7 is not .int(-7)"); return }
        guard case .double(1.0) = try parse("1.0") else { Issue.record("1.0 is not a double"); return }
        guard case .double(100) = try parse("1e2") else { Issue.record("1e2 is not a double"); return }
        guard case .double(100) = try parse("1E2") else { Issue.record("1E2 is not a double"); return }
        guard case .double(100) = try parse("1e+2") else { Issue.record("1e+2 is not a double"); return }
        guard case .double(0.01) = try parse("1e-2") else { Issue.record("1e-2 is not 0.01"); return }
        guard case .double(-2.5) = try parse("-2.5") else { Issue.record("-2.5 is not a double"); return }
        guard case .double(0.5) = try parse("0.5") else { Issue.record("0.5 is not a double"); return }
        guard case .double(1250) = try parse("12.5e2") else { Issue.record("12.5e2 is not 1250"); return }
        // A callId of 7 must be echoed as 7, not 7.0.
        #expect(try parse("7").encodedString() == "7")
    }

    @Test("Int64 bounds stay integers; one past them becomes a double")
    func int64Overflow() throws {
        guard case .int(Int64.max) = try parse("9223372036854775807") else {
            Issue.record("Int64.max is not an int"); return
        }
        guard case .int(Int64.min) = try parse("-9223372036854775808") else {
            Issue.record("Int64.min is not an int"); return
        }
        guard case .double(let above) = try parse("9223372036854775808") else {
            Issue.record("Int64.max + 1 is not a double"); return
        }
        #expect(above == 9_223_372_036_854_775_808.0)
        guard case .double(let below) = try parse("-9223372036854775809") else {
            Issue.record("Int64.min - 1 is not a double"); return
        }
        #expect(below == -9_223_372_036_854_775_808.0)
        guard case .double(let huge) = try parse("123456789012345678901234567890") else {
            Issue.record("30-digit integer is not a double"); return
        }
        #expect(huge == 1.2345678901234568e29)
    }

    @Test("-0 parses and equals 0")
    func negativeZero() throws {
        #expect(try parse("-0") == 0)
        #expect(try parse("-0.0") == 0)
        #expect(try parse("-0e3") == 0)
        #expect(try parse("[-0]") == [0])
    }

    @Test("numbers that overflow a Double are rejected; underflow is zero")
    func outOfRangeNumbers() throws {
        #expect(rejects("1e400"))
        #expect(rejects("-1e400"))
        #expect(rejects("[1e309]"))
        #expect(rejects("1" + String(repeating: "0", count: 400)))
        #expect(try parse("1e-400") == 0)
        #expect(try parse("1.7976931348623157e308") == .double(.greatestFiniteMagnitude))
    }

    @Test(
        "malformed numbers are rejected",
        arguments: [
            "01", "-01", "00", "00.5", "1.", ".5", "+1", "-", "1e", "1e+", "1e-", "0x10", "1.e3", "1.5.2",
            "--1", "-a", "1ee2", "Infinity", "-Infinity", "NaN", "1_000", "0.", "-.5",
        ]
    )
    func malformedNumbers(text: String) {
        #expect(rejects(text), "accepted \(text)")
    }

    @Test("literals must be exact")
    func literals() {
        for text in ["tru", "nul", "fals", "True", "NULL", "nulll", "truex", "t", "undefined", "'a'"] {
            #expect(rejects(text), "accepted \(text)")
        }
    }

    // MARK: Strings

    @Test("simple escapes decode")
    func simpleEscapes() throws {
        #expect(try parse(#""\"\\\/\b\f\n\r\t""#) == .string("\"\\/\u{08}\u{0C}\n\r\t"))
        #expect(try parse(#""a\nb""#) == "a\nb")
        // Escapes mixed with raw multi-byte UTF-8 around them.
        #expect(try parse(#""é\tü€""#) == "é\tü€")
    }

    @Test("\\u escapes decode, upper and lower case hex, including NUL")
    func unicodeEscapes() throws {
        #expect(try parse(#""\u0041\u00e9\u00E9\u20ac""#) == "Aéé€")
        #expect(try parse(#""\u0000""#) == .string("\u{0}"))
        #expect(try parse(#""\uffff""#) == .string("\u{FFFF}"))
    }

    @Test("surrogate pairs decode to one scalar")
    func surrogatePairs() throws {
        #expect(try parse(#""\ud83d\ude00""#) == "😀")
        #expect(try parse(#""\uD83D\uDE00""#) == "😀")
        #expect(try parse(#""x\ud834\udd1ey""#) == "x𝄞y")
        #expect(try parse(#""\udbff\udfff""#) == .string("\u{10FFFF}"))
        // Raw (unescaped) 4-byte UTF-8 is fine too.
        #expect(try parse("\"😀\"") == "😀")
    }

    @Test(
        "lone or mismatched surrogates are rejected",
        arguments: [
            #""\ud83d""#, #""\ud83dx""#, #""\ud83d\u0041""#, #""\ude00""#, #""\ude00\ud83d""#,
            #""\ud83d\ud83d""#, #""\ud83d\n""#, #""\ud83d\""#, #""\ud83d\u00""#, #"{"\udc00":1}"#,
        ]
    )
    func loneSurrogates(text: String) {
        #expect(rejects(text), "accepted \(text)")
    }

    @Test(
        "invalid escapes are rejected",
        arguments: [#""\x41""#, #""\u12""#, #""\u12G4""#, #""\'""#, #""\a""#, #""\""#, #""\u""#, #""\U0041""#]
    )
    func invalidEscapes(text: String) {
        #expect(rejects(text), "accepted \(text)")
    }

    @Test("raw control characters in strings are rejected, on both the fast and the escape path")
    func controlCharacters() {
        for byte in UInt8(0)..<0x20 {
            #expect(rejects(bytes: [0x22, 0x61, byte, 0x62, 0x22]), "accepted raw 0x\(String(byte, radix: 16))")
            // After an escape the parser is on its slow path.
            #expect(rejects(bytes: [0x22, 0x5C, 0x6E, byte, 0x22]), "accepted raw 0x\(String(byte, radix: 16)) after escape")
        }
        // DEL is not a control character for JSON.
        #expect((try? JSON.parse([0x22, 0x7F, 0x22])) == .string("\u{7F}"))
    }

    @Test(
        "invalid UTF-8 is rejected, in strings, keys, and outside strings",
        arguments: [
            [0x22, 0xFF, 0x22],  // never valid
            [0x22, 0xC0, 0xAF, 0x22],  // overlong '/'
            [0x22, 0xE0, 0x80, 0xAF, 0x22],  // overlong 3-byte
            [0x22, 0xED, 0xA0, 0x80, 0x22],  // UTF-8 encoded surrogate
            [0x22, 0xE2, 0x82, 0x22],  // truncated 3-byte sequence
            [0x22, 0x80, 0x22],  // lone continuation byte
            [0x22, 0xF4, 0x90, 0x80, 0x80, 0x22],  // above U+10FFFF
            [0x22, 0x5C, 0x6E, 0xFF, 0x22],  // after an escape (slow path)
            [0x7B, 0x22, 0xFF, 0x22, 0x3A, 0x31, 0x7D],  // in a key
            [0xFF],
            [0x5B, 0xC3, 0x5D],
            [0xEF, 0xBB, 0xBF, 0x7B, 0x7D],  // a BOM is not JSON whitespace
        ] as [[UInt8]]
    )
    func invalidUTF8(bytes: [UInt8]) {
        #expect(rejects(bytes: bytes), "accepted \(bytes)")
    }

    @Test("unterminated strings are rejected")
    func unterminatedStrings() {
        for text in ["\"", "\"abc", "\"abc\\", "\"a\\n", "[\"a]", "{\"a:1}"] {
            #expect(rejects(text), "accepted \(text)")
        }
    }

    // MARK: Structure

    @Test("nesting up to the depth limit parses; one more level is rejected")
    func depthLimit() throws {
        let limit = JSON.defaultMaxDepth
        let atLimit = String(repeating: "[", count: limit) + String(repeating: "]", count: limit)
        #expect(throws: Never.self) { try JSON.parse(atLimit) }
        let over = String(repeating: "[", count: limit + 1) + String(repeating: "]", count: limit + 1)
        #expect(rejects(over))
        let objects = String(repeating: #"{"a":"#, count: limit + 1) + "1" + String(repeating: "}", count: limit + 1)
        #expect(rejects(objects))
        // A custom limit.
        #expect(rejects("[[[1]]]", maxDepth: 2))
        #expect(try parse("[[1]]", maxDepth: 2) == [[1]])
        // Depth is depth, not count: many siblings at depth 1 are fine.
        let wide = "[" + Array(repeating: "[]", count: 10_000).joined(separator: ",") + "]"
        #expect(try parse(wide, maxDepth: 2).arrayValue?.count == 10_000)
    }

    @Test("hostile nesting (100,000 levels, unterminated) fails fast without exhausting the stack")
    func hostileNesting() {
        #expect(rejects(String(repeating: "[", count: 100_000)))
        #expect(rejects(String(repeating: #"{"a":["#, count: 100_000)))
    }

    @Test(
        "trailing data, trailing commas and missing separators are rejected",
        arguments: [
            "{} x", "1 2", "{}{}", "[]]", "null,", "[1,]", "{\"a\":1,}", "[1 2]", "{\"a\" 1}", "{\"a\":1 \"b\":2}",
            "{a:1}", "{'a':1}", "{1:1}", "[,1]", "", "   ", "{\"a\"}", "{\"a\":}", "[", "{", "]", "}", ",", ":",
            "/* c */ 1", "1 // c", "[1,,2]",
        ]
    )
    func structuralErrors(text: String) {
        #expect(rejects(text), "accepted \(text)")
    }

    @Test("JSON whitespace (space, tab, LF, CR) is allowed around every token; other spaces are not")
    func whitespace() throws {
        let text = " \t\n\r{ \"a\" :\t[ 1 ,\n2 , { } , [ ] ]\r, \"b\" : null } \n\t"
        #expect(try parse(text) == ["a": [1, 2, [:], []], "b": nil])
        #expect(rejects("\u{0C}1"))  // form feed
        #expect(rejects("\u{A0}1"))  // no-break space
        #expect(rejects("1\u{0B}"))  // vertical tab
        #expect(rejects("[1,\u{2028}2]"))
    }

    @Test("duplicate keys: the last value wins, at the first key's position")
    func duplicateKeys() throws {
        let small = try parse(#"{"a":1,"b":2,"a":3}"#)
        #expect(small.objectValue?.count == 2)
        #expect(small["a"] == 3)
        #expect(small.objectValue?.keys == ["a", "b"])
    }

    @Test("duplicate keys in objects with more than 16 keys (indexed path)")
    func duplicateKeysLargeObject() throws {
        var members = (0..<20).map { #""k\#($0)":\#($0)"# }
        members.append(#""k3":"last""#)  // duplicate of a key seen before the index was built
        members.append(#""k19":"x""#)  // duplicate of a key added after the index was built
        members.append(#""k0":1"#)
        members.append(#""k0":"final""#)
        let object = try #require(try parse("{" + members.joined(separator: ",") + "}").objectValue)
        #expect(object.count == 20)
        #expect(object["k3"] == "last")
        #expect(object["k19"] == "x")
        #expect(object["k0"] == "final")
        #expect(object["k7"] == 7)
        #expect(object.keys == (0..<20).map { "k\($0)" })

        // A duplicate arriving exactly when the 17th member would be added.
        let sixteen = (0..<16).map { #""k\#($0)":\#($0)"# }.joined(separator: ",")
        let atBoundary = try #require(try parse("{" + sixteen + #","k15":"b","k16":16}"#).objectValue)
        #expect(atBoundary.count == 17)
        #expect(atBoundary["k15"] == "b")
        #expect(atBoundary["k16"] == 16)
    }

    @Test("many keys parse in insertion order")
    func manyKeys() throws {
        let count = 5_000
        let text = "{" + (0..<count).map { #""key\#($0)":\#($0)"# }.joined(separator: ",") + "}"
        let object = try #require(try parse(text).objectValue)
        #expect(object.count == count)
        #expect(object.keys.first == "key0")
        #expect(object.keys.last == "key\(count - 1)")
        #expect(object["key4321"] == 4321)
    }

    @Test("object keys that differ only in Unicode normalization are distinct keys, as in JavaScript")
    func keysCompareByScalars() throws {
        // U+00E9 versus "e" + U+0301: different strings for JSON (RFC 8259 §8.3), JavaScript
        // and Python; Swift's String == says they are equal.
        let object = try #require(try parse(#"{"\u00e9":1,"e\u0301":2}"#).objectValue)
        #expect(object.count == 2)
    }

    @Test("non-contiguous byte collections parse like arrays")
    func nonContiguousInput() throws {
        let bytes = Array(#"{"a":[1,2.5,"x"]}"#.utf8)
        let lazy = bytes.lazy.map { $0 }
        #expect(try JSON.parse(lazy) == JSON.parse(bytes))
        #expect(throws: JSONParseError.self) { try JSON.parse(Array("[1,".utf8).lazy.map { $0 }) }
    }

    @Test("parse errors carry a byte offset")
    func errorOffset() {
        do {
            _ = try JSON.parse("[1, 2, x]")
            Issue.record("accepted invalid JSON")
        } catch {
            #expect(error.offset == 7)
            #expect(!error.reason.isEmpty)
        }
    }
}
