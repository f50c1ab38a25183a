import SnorkyConfig
import Testing

/// Parses `text`, expecting success.
private func parse(_ text: String) throws -> TOMLTable {
    try TOML.parse(text)
}

/// Parses `text`, expecting a failure, and returns the error for position checks.
private func parseError(_ text: String, sourceLocation: SourceLocation = #_sourceLocation) -> TOMLError? {
    do {
        let table = try TOML.parse(text)
        Issue.record("expected a parse error, got \(table)", sourceLocation: sourceLocation)
        return nil
    } catch {
        return error
    }
}

@Suite("TOML: comments, keys, tables")
struct TOMLStructureTests {
    @Test func emptyDocumentAndComments() throws {
        #expect(try parse("").isEmpty)
        #expect(try parse("# only a comment\n\n   # indented\r\n") == [:])
        #expect(try parse("a = 1 # trailing comment\n# another") == ["a": 1])
        #expect(try parse("a = \"# not a comment\"") == ["a": "# not a comment"])
    }

    @Test func bareAndQuotedKeys() throws {
        let table = try parse(
            """
            bare_key = 1
            bare-key = 2
            1234 = 3
            "127.0.0.1" = 4
            "character encoding" = 5
            'key2' = 6
            "ʎǝʞ" = 7
            "" = 8
            "tab\\tkey" = 9
            """)
        #expect(table["bare_key"] == 1)
        #expect(table["bare-key"] == 2)
        #expect(table["1234"] == 3)
        #expect(table["127.0.0.1"] == 4)
        #expect(table["character encoding"] == 5)
        #expect(table["key2"] == 6)
        #expect(table["ʎǝʞ"] == 7)
        #expect(table[""] == 8)
        #expect(table["tab\tkey"] == 9)
    }

    @Test func keysKeepFileOrder() throws {
        let table = try parse("z = 1\na = 2\nm = 3")
        #expect(table.keys == ["z", "a", "m"])
        #expect(table.map(\.key) == ["z", "a", "m"])
        // Equality ignores order, as TOML tables are unordered.
        #expect(table == ["a": 2, "m": 3, "z": 1])
    }

    @Test func dottedKeys() throws {
        let table = try parse(
            """
            name = "Orange"
            physical.color = "orange"
            physical . shape = "round"
            site."google.com" = true
            3.14159 = "pi"
            """)
        #expect(
            table == [
                "name": "Orange",
                "physical": ["color": "orange", "shape": "round"],
                "site": ["google.com": true],
                "3": ["14159": "pi"],
            ])
    }

    @Test func tables() throws {
        let table = try parse(
            """
            top = 0
            [server]
            port = 8080
            [ redis . pool ]
            size = 4
            [redis]
            url = "redis://x"
            ["quoted key".inner]
            v = 1
            """)
        #expect(table["top"] == 0)
        #expect(table[path: "server", "port"] == 8080)
        #expect(table[path: "redis", "pool", "size"] == 4)
        #expect(table[path: "redis", "url"] == "redis://x")
        #expect(table[path: "quoted key", "inner", "v"] == 1)
        #expect(table[path: "redis"]?.tableValue?.keys == ["pool", "url"])
    }

    @Test func superTableAfterSubTable() throws {
        let table = try parse("[x.y.z.w]\na = 1\n[x]\nb = 2")
        #expect(table == ["x": ["y": ["z": ["w": ["a": 1]]], "b": 2]])
    }

    @Test func subTableOfDottedKeyTable() throws {
        let table = try parse(
            """
            [fruit]
            apple.color = "red"
            apple.taste.sweet = true
            [fruit.apple.texture]
            smooth = true
            """)
        #expect(
            table == [
                "fruit": ["apple": ["color": "red", "taste": ["sweet": true], "texture": ["smooth": true]]]
            ])
    }

    @Test func arrayOfTables() throws {
        let table = try parse(
            """
            [[fruits]]
            name = "apple"

            [fruits.physical]
            color = "red"

            [[fruits.varieties]]
            name = "red delicious"

            [[fruits.varieties]]
            name = "granny smith"

            [[fruits]]
            name = "banana"

            [[fruits.varieties]]
            name = "plantain"

            [[a.b]]
            x = 1
            """)
        #expect(
            table == [
                "fruits": [
                    [
                        "name": "apple",
                        "physical": ["color": "red"],
                        "varieties": [["name": "red delicious"], ["name": "granny smith"]],
                    ],
                    ["name": "banana", "varieties": [["name": "plantain"]]],
                ],
                "a": ["b": [["x": 1]]],
            ])
    }

    @Test func emptyArrayOfTablesElements() throws {
        #expect(try parse("[[w]]\n[[w]]") == ["w": [[:], [:]]])
    }

    @Test func crlfLineEndings() throws {
        #expect(try parse("a = 1\r\n[t]\r\nb = 'x'\r\n") == ["a": 1, "t": ["b": "x"]])
    }

    @Test func byteOrderMarkIsIgnored() throws {
        #expect(try parse("\u{FEFF}a = 1") == ["a": 1])
    }
}

@Suite("TOML: strings")
struct TOMLStringTests {
    @Test func basicStringEscapes() throws {
        let table = try parse(
            #"""
            s = "tab\tnewline\nquote\"backslash\\cr\rbs\bff\f"
            u = "\u00E9\U0001F600"
            """#)
        #expect(table["s"] == "tab\tnewline\nquote\"backslash\\cr\rbs\u{8}ff\u{C}")
        #expect(table["u"] == "é😀")
    }

    @Test func literalStrings() throws {
        let table = try parse(
            #"""
            path = 'C:\Users\nodejs\templates'
            regex = '<\i\c*\s*>'
            quoted = 'Tom "Dubs" Preston-Werner'
            """#)
        #expect(table["path"] == #"C:\Users\nodejs\templates"#)
        #expect(table["regex"] == #"<\i\c*\s*>"#)
        #expect(table["quoted"] == #"Tom "Dubs" Preston-Werner"#)
    }

    @Test func multilineBasicStrings() throws {
        let table = try parse(
            "a = \"\"\"\nRoses are red\nViolets are blue\"\"\"\n"
                + "b = \"\"\"\nThe quick brown \\\n\n\n  fox jumps over \\\n    the lazy dog.\"\"\"\n"
                + "c = \"\"\"\\\n       The quick brown \\\r\n       fox.\\\n       \"\"\"\n"
                + "d = \"\"\"Here are two quotation marks: \"\". Simple enough.\"\"\"\n"
                + "e = \"\"\"Here are fifteen quotation marks: \"\"\\\"\"\"\\\"\"\"\\\"\"\"\\\"\"\"\\\".\"\"\"\n"
                + "f = \"\"\"\"This,\" she said, \"is just a pointless statement.\"\"\"\"\n"
                + "g = \"\"\"windows\r\nline\"\"\"\n"
                + "h = \"\"\"trailing backslash with spaces \\   \n   end\"\"\"\n"
        )
        #expect(table["a"] == "Roses are red\nViolets are blue")
        #expect(table["b"] == "The quick brown fox jumps over the lazy dog.")
        #expect(table["c"] == "The quick brown fox.")
        #expect(table["d"] == "Here are two quotation marks: \"\". Simple enough.")
        #expect(table["e"] == "Here are fifteen quotation marks: \"\"\"\"\"\"\"\"\"\"\"\"\"\"\".")
        #expect(table["f"] == "\"This,\" she said, \"is just a pointless statement.\"")
        #expect(table["g"] == "windows\nline")
        #expect(table["h"] == "trailing backslash with spaces end")
    }

    @Test func multilineLiteralStrings() throws {
        let table = try parse(
            "regex2 = '''I [dw]on't need \\d{2} apples'''\n"
                + "lines = '''\nThe first newline is\ntrimmed in raw strings.\n   All other whitespace\n   is preserved.\n'''\n"
                + "quot15 = '''Here are fifteen quotation marks: \"\"\"\"\"\"\"\"\"\"\"\"\"\"\"'''\n"
                + "apos15 = \"Here are fifteen apostrophes: '''''''''''''''\"\n"
                + "str = ''''That,' she said, 'is still pointless.''''\n"
        )
        #expect(table["regex2"] == "I [dw]on't need \\d{2} apples")
        #expect(table["lines"] == "The first newline is\ntrimmed in raw strings.\n   All other whitespace\n   is preserved.\n")
        #expect(table["quot15"] == "Here are fifteen quotation marks: \"\"\"\"\"\"\"\"\"\"\"\"\"\"\"")
        #expect(table["apos15"] == "Here are fifteen apostrophes: '''''''''''''''")
        #expect(table["str"] == "'That,' she said, 'is still pointless.'")
    }

    @Test func tabIsAllowedInStrings() throws {
        #expect(try parse("a = \"x\ty\"\nb = 'x\ty'") == ["a": "x\ty", "b": "x\ty"])
    }
}

@Suite("TOML: numbers, booleans, dates")
struct TOMLScalarTests {
    @Test func integers() throws {
        let table = try parse(
            """
            a = +99
            b = 42
            c = 0
            d = -17
            e = 1_000
            f = 5_349_221
            g = 1_2_3_4_5
            h = 0xDEADBEEF
            i = 0xdead_beef
            j = 0o01234567
            k = 0o755
            l = 0b11010110
            m = 9223372036854775807
            n = -9223372036854775808
            o = +0
            p = -0
            q = 0x7FFFFFFFFFFFFFFF
            """)
        let expected: [String: Int64] = [
            "a": 99, "b": 42, "c": 0, "d": -17, "e": 1000, "f": 5_349_221, "g": 12345, "h": 0xDEAD_BEEF,
            "i": 0xDEAD_BEEF, "j": 0o01234567, "k": 0o755, "l": 0b1101_0110, "m": .max, "n": .min, "o": 0, "p": 0,
            "q": .max,
        ]
        for (key, value) in expected { #expect(table[key] == .integer(value), "key \(key)") }
    }

    @Test func floats() throws {
        let table = try parse(
            """
            a = +1.0
            b = 3.1415
            c = -0.01
            d = 5e+22
            e = 1e06
            f = -2E-2
            g = 6.626e-34
            h = 224_617.445_991_228
            i = 0.0
            j = -0.0
            k = 0e0
            l = inf
            m = +inf
            n = -inf
            o = nan
            p = +nan
            q = -nan
            """)
        let expected: [String: Double] = [
            "a": 1, "b": 3.1415, "c": -0.01, "d": 5e22, "e": 1e6, "f": -2e-2, "g": 6.626e-34, "h": 224_617.445_991_228,
            "i": 0, "k": 0, "l": .infinity, "m": .infinity, "n": -.infinity,
        ]
        for (key, value) in expected { #expect(table[key] == .float(value), "key \(key)") }
        #expect(table["j"]?.doubleValue?.sign == .minus)
        for key in ["o", "p", "q"] { #expect(table[key]?.doubleValue?.isNaN == true, "key \(key)") }
    }

    @Test func booleans() throws {
        #expect(try parse("t = true\nf = false") == ["t": true, "f": false])
    }

    @Test func datesAreKeptAsStrings() throws {
        let table = try parse(
            """
            odt1 = 1979-05-27T07:32:00Z
            odt2 = 1979-05-27T00:32:00-07:00
            odt3 = 1979-05-27T00:32:00.999999+07:00
            odt4 = 1979-05-27 07:32:00Z
            ldt1 = 1979-05-27T07:32:00
            ldt2 = 1979-05-27t00:32:00.999999
            ld = 1979-05-27
            lt1 = 07:32:00
            lt2 = 00:32:00.999999
            leap = 2024-02-29
            arr = [1979-05-27, 07:32:00]
            """)
        #expect(table["odt1"] == "1979-05-27T07:32:00Z")
        #expect(table["odt2"] == "1979-05-27T00:32:00-07:00")
        #expect(table["odt3"] == "1979-05-27T00:32:00.999999+07:00")
        #expect(table["odt4"] == "1979-05-27 07:32:00Z")
        #expect(table["ldt1"] == "1979-05-27T07:32:00")
        #expect(table["ldt2"] == "1979-05-27t00:32:00.999999")
        #expect(table["ld"] == "1979-05-27")
        #expect(table["lt1"] == "07:32:00")
        #expect(table["lt2"] == "00:32:00.999999")
        #expect(table["leap"] == "2024-02-29")
        #expect(table["arr"] == ["1979-05-27", "07:32:00"])
    }

    @Test(arguments: [
        "a = 2023-02-29", "a = 1979-13-01", "a = 1979-05-27T25:00:00", "a = 07:60:00", "a = 1979-05-27T07:32",
        "a = 1979-05-27T07:32:00+7:00", "a = 1979-05-27 07:32:00 Z",
    ])
    func invalidDates(_ text: String) {
        #expect(parseError(text) != nil)
    }

    @Test(arguments: [
        "a = 01", "a = +01.5", "a = 1__0", "a = _1", "a = 1_", "a = 0x", "a = 0xG", "a = 0o8", "a = 0b2", "a = -0x1",
        "a = 0X1", "a = 1.", "a = .5", "a = 1.e5", "a = 1e", "a = 1e_5", "a = 1.5_", "a = 9223372036854775808",
        "a = 0x8000000000000000", "a = -9223372036854775809", "a = Inf", "a = NaN", "a = True", "a = 1_.5",
    ])
    func invalidNumbers(_ text: String) {
        #expect(parseError(text) != nil)
    }
}

@Suite("TOML: arrays and inline tables")
struct TOMLCompositeTests {
    @Test func arrays() throws {
        let table = try parse(
            """
            integers = [ 1, 2, 3 ]
            colors = [ "red", 'yellow', \"\"\"green\"\"\" ]
            nested = [ [ 1, 2 ], [3, 4, 5] ]
            mixed = [ 0.1, 1, "x", true, { a = 1 } ]
            empty = []
            multi = [
              1, # comment after element
              2,
              # a comment line
              3, # trailing comma next
            ]
            emptyMulti = [

            ]
            """)
        #expect(table["integers"] == [1, 2, 3])
        #expect(table["colors"] == ["red", "yellow", "green"])
        #expect(table["nested"] == [[1, 2], [3, 4, 5]])
        #expect(table["mixed"] == [0.1, 1, "x", true, ["a": 1]])
        #expect(table["empty"] == [])
        #expect(table["multi"] == [1, 2, 3])
        #expect(table["emptyMulti"] == [])
    }

    @Test func inlineTables() throws {
        let table = try parse(
            """
            name = { first = "Tom", last = "Preston-Werner" }
            point = {x=1,y=2}
            animal = { type.name = "pug", type.size = 'small' }
            empty = {}
            nested = { a = { b = [1, { c = true }] } }
            """)
        #expect(table["name"] == ["first": "Tom", "last": "Preston-Werner"])
        #expect(table["point"] == ["x": 1, "y": 2])
        #expect(table["animal"] == ["type": ["name": "pug", "size": "small"]])
        #expect(table["empty"] == [:])
        #expect(table["nested"] == ["a": ["b": [1, ["c": true]]]])
    }

    @Test func descriptionIsInlineTOMLThatParsesBack() throws {
        let table = try parse(
            "s = \"a\\\"b\\n\\u0001\"\n\"odd key\" = [1, 2.5, inf, true]\nt = { u = {}, v = [] }\n[[w]]\nx = 'y'")
        #expect(table.description == #"{ s = "a\"b\n\u0001", "odd key" = [1, 2.5, inf, true], t = { u = {}, v = [] }, w = [{ x = "y" }] }"#)
        #expect(try parse("r = " + table.description) == ["r": .table(table)])
    }

    @Test func valueAccessors() throws {
        let table = try parse("s = 'x'\ni = 5\nf = 1.5\nb = true\na = [1]\nt = {k = 1}")
        #expect(table["s"]?.stringValue == "x")
        #expect(table["i"]?.integerValue == 5)
        #expect(table["i"]?.doubleValue == 5)
        #expect(table["f"]?.doubleValue == 1.5)
        #expect(table["b"]?.boolValue == true)
        #expect(table["a"]?.arrayValue == [1])
        #expect(table["t"]?.tableValue == ["k": 1])
        #expect(table["s"]?.integerValue == nil)
        #expect(table["i"]?.typeName == "integer")
    }
}

@Suite("TOML: errors carry positions")
struct TOMLErrorTests {
    private func expectError(
        _ text: String, line: Int, column: Int, _ fragment: String, sourceLocation: SourceLocation = #_sourceLocation
    ) {
        guard let error = parseError(text, sourceLocation: sourceLocation) else { return }
        #expect(error.line == line, "\(error)", sourceLocation: sourceLocation)
        #expect(error.column == column, "\(error)", sourceLocation: sourceLocation)
        #expect(error.message.contains(fragment), "\(error)", sourceLocation: sourceLocation)
    }

    @Test func descriptionFormat() {
        let error = parseError("a = 1\nb = 2\nname  x")
        #expect(error?.description == "line 3, column 7: expected '=' after key")
    }

    @Test func duplicateKeys() {
        expectError("a = 1\na = 2", line: 2, column: 1, "duplicate key 'a'")
        expectError("a.b = 1\na.b = 2", line: 2, column: 3, "duplicate key 'a.b'")
        expectError("a = 1\na.b = 2", line: 2, column: 1, "already defined as an integer")
        expectError("\"a\" = 1\n'a' = 2", line: 2, column: 1, "duplicate key")
        expectError("p = { x = 1, x = 2 }", line: 1, column: 14, "duplicate key 'x'")
        expectError("[t]\nk = 1\n[t]", line: 3, column: 1, "table 't' is defined more than once")
        expectError("[a.b]\n[a]\n[a]", line: 3, column: 1, "defined more than once")
    }

    @Test func redefinedTables() {
        expectError("[fruit]\napple.color = 'red'\n[fruit.apple]", line: 3, column: 1, "already defined with dotted keys")
        expectError("[fruit]\napple = 'red'\n[fruit.apple]", line: 3, column: 1, "already defined as a string")
        expectError("[fruit]\napple = 'red'\n[fruit.apple.x]", line: 3, column: 8, "not a table")
        expectError("a = {}\n[a]", line: 2, column: 1, "already defined as an inline table")
        expectError("a = {}\n[a.b]", line: 2, column: 2, "cannot add to inline table 'a'")
        expectError("a = { b = 1 }\na.c = 2", line: 2, column: 1, "cannot add keys to inline table 'a'")
        expectError("[a.b.c]\nz = 1\n[a]\nb.c.t = 2", line: 4, column: 1, "defined by a table header")
        expectError("[product]\ntype.name = 'Nail'\ntype = { edible = false }", line: 3, column: 1, "duplicate key 'product.type'")
    }

    @Test func arrayOfTablesConflicts() {
        expectError("[fruit.physical]\n[[fruit]]", line: 2, column: 1, "already a table, not an array of tables")
        expectError("fruits = []\n[[fruits]]", line: 2, column: 1, "already defined as an array")
        expectError("[[fruits]]\n[fruits]", line: 2, column: 1, "already an array of tables")
        expectError("[[a]]\nb.c = 1\n[a.b]", line: 3, column: 1, "dotted keys")
    }

    @Test func syntaxErrors() {
        expectError("key", line: 1, column: 4, "expected '=' after key")
        expectError("= 1", line: 1, column: 1, "missing key before '='")
        expectError("a =", line: 1, column: 4, "expected a value")
        expectError("a = # nothing", line: 1, column: 5, "expected a value")
        expectError("a = 1 2", line: 1, column: 7, "expected end of line after value")
        expectError("a = 1\n\n  b = hello", line: 3, column: 7, "invalid value 'hello' (strings must be quoted)")
        expectError("[table", line: 1, column: 7, "expected ']' after table name")
        expectError("[[table]", line: 1, column: 8, "expected ']]'")
        expectError("[a] b = 1", line: 1, column: 5, "expected end of line after table header")
        expectError("[]", line: 1, column: 2, "expected a key")
        expectError("a.  = 1", line: 1, column: 5, "missing key")
        expectError("\"\"\"k\"\"\" = 1", line: 1, column: 1, "multi-line string cannot be used as a key")
        expectError("a = 1\r\rb = 2", line: 1, column: 6, "carriage return")
    }

    @Test func stringErrors() {
        expectError("a = \"abc", line: 1, column: 9, "unterminated string")
        expectError("a = \"abc\nb = 1", line: 1, column: 9, "newline before closing")
        expectError("a = 'abc\n", line: 1, column: 9, "newline before closing")
        expectError("a = \"\"\"abc", line: 1, column: 11, "unterminated multi-line string")
        expectError("a = '''abc", line: 1, column: 11, "unterminated multi-line literal string")
        expectError(#"a = "bad \x escape""#, line: 1, column: 10, #"invalid escape sequence '\x'"#)
        expectError(#"a = "\uD800""#, line: 1, column: 6, "not a Unicode scalar value")
        expectError(#"a = "\u12""#, line: 1, column: 6, "4 hexadecimal digits")
        expectError(#"a = "\U0011FFFF""#, line: 1, column: 6, "not a Unicode scalar value")
        expectError("a = \"x\u{1}y\"", line: 1, column: 7, "control character U+0001")
        expectError("a = 'x\u{7F}y'", line: 1, column: 7, "control character U+007F")
        expectError("a = \"\"\"x\"\"\"\"\"\"", line: 1, column: 9, "too many quotes")
        expectError("a = \"\"\"trailing \\ x\"\"\"", line: 1, column: 17, "invalid escape sequence")
        expectError("# bad \u{0} comment", line: 1, column: 7, "not allowed in a comment")
    }

    @Test func arrayAndInlineTableErrors() {
        expectError("a = [1 2]", line: 1, column: 8, "expected ',' or ']'")
        expectError("a = [1,,2]", line: 1, column: 8, "expected a value, found ','")
        expectError("a = [1,\n2", line: 2, column: 2, "unterminated array")
        expectError("a = { b = 1, }", line: 1, column: 14, "trailing comma")
        expectError("a = { b = 1\n}", line: 1, column: 12, "newlines are not allowed")
        expectError("a = {\nb = 1}", line: 1, column: 6, "newlines are not allowed")
        expectError("a = { b = 1 c = 2 }", line: 1, column: 13, "expected ',' or '}'")
        expectError("a = { b = 1", line: 1, column: 12, "unterminated inline table")
        expectError("a = { b }", line: 1, column: 9, "expected '=' after key")
    }

    @Test func errorsNameKeysInFull() {
        expectError("[server]\ntls = 1\ntls.cert = 'x'", line: 3, column: 1, "key 'server.tls' is already defined as an integer")
        expectError("[a.\"b c\"]\nd = 1\nd = 2", line: 3, column: 1, "duplicate key 'a.\"b c\".d'")
    }

    @Test func invalidDatesSaySo() {
        expectError("d = 2023-02-29", line: 1, column: 5, "invalid date or time '2023-02-29'")
        expectError("t = 24:00:00", line: 1, column: 5, "invalid date or time")
    }

    @Test func numberErrorsPointAtTheNumber() {
        expectError("x = 1\ny = 0123", line: 2, column: 5, "leading zeros")
        expectError("x = -1e400", line: 1, column: 5, "out of range")
        expectError("y = 99999999999999999999", line: 1, column: 5, "does not fit in 64 bits")
        expectError("y = 0o9", line: 1, column: 5, "invalid digit")
    }

    @Test func columnsCountCharactersNotBytes() {
        expectError("\"é✓\" = 1 x", line: 1, column: 10, "expected end of line")
    }

    @Test func deepNestingIsRejected() {
        let deep = "a = " + String(repeating: "[", count: 200) + String(repeating: "]", count: 200)
        #expect(parseError(deep)?.message.contains("nested too deeply") == true)
        let fine = "a = " + String(repeating: "[", count: 50) + String(repeating: "]", count: 50)
        #expect((try? TOML.parse(fine)) != nil)
    }
}
