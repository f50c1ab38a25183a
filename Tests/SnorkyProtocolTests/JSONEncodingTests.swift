import SnorkyProtocol
import Testing

private func j(_ value: JSON) -> JSON { value }

@Suite("JSON encoding, canonical form, equality and hashing")
struct JSONEncodingTests {
    // MARK: Encoder

    @Test("output is compact and keeps object member order")
    func compact() {
        let value: JSON = ["z": [1, 2, ["b": nil, "a": true]], "a": "x", "m": [:], "n": []]
        #expect(value.encodedString() == #"{"z":[1,2,{"b":null,"a":true}],"a":"x","m":{},"n":[]}"#)
        #expect(String(decoding: value.encodedBytes(), as: UTF8.self) == value.encodedString())
        #expect(value.description == value.encodedString())
    }

    @Test("scalars encode as JSON text")
    func scalars() {
        #expect(JSON.null.encodedString() == "null")
        #expect(JSON.bool(true).encodedString() == "true")
        #expect(JSON.bool(false).encodedString() == "false")
        #expect(JSON.int(7).encodedString() == "7")
        #expect(JSON.int(-7).encodedString() == "-7")
        #expect(JSON.int(.max).encodedString() == "9223372036854775807")
        #expect(JSON.int(.min).encodedString() == "-9223372036854775808")
        #expect(JSON.double(1.5).encodedString() == "1.5")
        #expect(JSON.double(-0.25).encodedString() == "-0.25")
        #expect(JSON.string("").encodedString() == #""""#)
    }

    @Test("doubles re-parse to the same value, including exponents and -0.0")
    func doublesRoundTrip() throws {
        for value in [1.0, -0.0, 0.1, 1e-7, 1e21, 1.7976931348623157e308, .leastNonzeroMagnitude, -123.456, 2.0e16, 9007199254740993.0] {
            let text = JSON.double(value).encodedString()
            let parsed = try JSON.parse(text)
            guard case .double(let back) = parsed else {
                Issue.record("\(value) encoded as \(text) re-parsed as \(parsed)")
                continue
            }
            #expect(back == value, "\(text)")
            #expect(back.sign == value.sign, "\(text)")
        }
    }

    @Test("non-finite doubles, which JSON cannot express, encode as null")
    func nonFinite() {
        #expect(JSON.double(.infinity).encodedString() == "null")
        #expect(JSON.double(-.infinity).encodedString() == "null")
        #expect(JSON.double(.nan).encodedString() == "null")
        #expect(JSON.array([.double(.nan)]).canonicalString() == "[null]")
    }

    @Test("strings escape quote, backslash and control characters, nothing else")
    func escaping() throws {
        let value = JSON.string("\"\\\n\r\t\u{08}\u{0C}\u{0}\u{1F}/é€😀\u{7F}\u{2028}")
        let expected = #""\"\\\n\r\t\u0008\u000c\u0000\u001f/é€😀"# + "\u{7F}\u{2028}\""
        #expect(value.encodedString() == expected)
        #expect(try JSON.parse(value.encodedBytes()) == value)
        // Keys are escaped the same way.
        let object: JSON = ["a\"b\n": 1]
        #expect(object.encodedString() == #"{"a\"b\n":1}"#)
        #expect(try JSON.parse(object.encodedString()) == object)
    }

    @Test("every control character escapes and round-trips")
    func allControlCharacters() throws {
        let string = String((0..<0x20).map { Character(Unicode.Scalar(UInt8($0))) })
        let encoded = JSON.string(string).encodedBytes()
        #expect(!encoded.contains { $0 < 0x20 }, "raw control byte in output")
        #expect(try JSON.parse(encoded) == .string(string))
    }

    @Test("encode(into:) appends to what is already there")
    func encodeAppends() {
        var output = Array("prefix:".utf8)
        JSON.array([1, "a"]).encode(into: &output)
        #expect(String(decoding: output, as: UTF8.self) == #"prefix:[1,"a"]"#)
    }

    @Test("parse → encode → parse → encode is stable")
    func roundTrip() throws {
        let text = #"{"service":"pubsub","message":{"command":"publish","params":{"channel":{"b":[1,2.5,-0.0,1e+300]},"message":"é\n😀"},"callId":"x"}}"#
        let once = try JSON.parse(text)
        let encoded = once.encodedString()
        let twice = try JSON.parse(encoded)
        #expect(twice == once)
        #expect(twice.encodedString() == encoded)
    }

    // MARK: Canonical form

    @Test("canonicalString sorts keys at every level and is compact")
    func canonicalSortsKeys() {
        let value: JSON = ["b": 1, "a": ["d": 2, "c": [["z": 1, "y": 2]]], "A": nil]
        #expect(value.canonicalString() == #"{"A":null,"a":{"c":[{"y":2,"z":1}],"d":2},"b":1}"#)
    }

    @Test("equal values have equal canonical strings")
    func canonicalOfEqualValues() throws {
        let pairs: [(JSON, JSON)] = [
            (1, 1.0),
            (.int(-3), .double(-3.0)),
            (0, .double(-0.0)),
            (["a": 1, "b": 2], ["b": 2, "a": 1]),
            (["a": [1, ["x": 1.0, "y": 2]]], ["a": [1.0, ["y": 2.0, "x": 1]]]),
            (try JSON.parse(#"{"a":1,"b":2}"#), try JSON.parse(#"{"b":2,"a":1}"#)),
            (try JSON.parse("100"), try JSON.parse("1e2")),
        ]
        for (left, right) in pairs {
            #expect(left == right)
            // Compared as bytes: String == ignores Unicode normalization differences.
            #expect(Array(left.canonicalString().utf8) == Array(right.canonicalString().utf8), "\(left) vs \(right)")
        }
    }

    @Test("different values have different canonical strings")
    func canonicalOfDifferentValues() {
        let values: [JSON] = [
            nil, false, true, 0, 1, 1.5, "1", "", [], [:], [1, 2], [2, 1], ["a": 1], ["a": "1"], ["a": [1]],
            [["a": 1]], "null", .double(1e21), .int(.max), .double(9_223_372_036_854_775_808.0),
        ]
        let canonical = values.map { $0.canonicalString() }
        #expect(Set(canonical).count == values.count, "\(canonical)")
    }

    @Test("canonical strings are valid JSON that parses back to an equal value")
    func canonicalParsesBack() throws {
        let value: JSON = ["z": [1.0, 2.5, -0.0, ["b": "é", "a": nil]], "a": .double(1e300)]
        #expect(try JSON.parse(value.canonicalString()) == value)
    }

    // MARK: Equality and hashing

    @Test("objects compare and hash ignoring key order, small and large")
    func objectEqualityIgnoresOrder() {
        let small: JSON = ["a": 1, "b": 2, "c": 3]
        let smallReordered: JSON = ["c": 3, "a": 1, "b": 2]
        #expect(small == smallReordered)
        #expect(small.hashValue == smallReordered.hashValue)

        // More than 8 members takes the dictionary path.
        let keys = (0..<30).map { "k\($0)" }
        let large = JSON.object(JSONObject(keys.map { ($0, JSON.string($0)) }))
        let largeReordered = JSON.object(JSONObject(keys.reversed().map { ($0, JSON.string($0)) }))
        #expect(large == largeReordered)
        #expect(large.hashValue == largeReordered.hashValue)
        #expect(Set([large, largeReordered]).count == 1)

        var different = JSONObject(keys.map { ($0, JSON.string($0)) })
        different["k29"] = "changed"
        #expect(large != .object(different))
    }

    @Test("objects with different members are different")
    func objectInequality() {
        #expect(j(["a": 1]) != j(["a": 2]))
        #expect(j(["a": 1]) != j(["b": 1]))
        #expect(j(["a": 1]) != j(["a": 1, "b": 2]))
        #expect(j(["a": nil]) != j([:]))
        #expect(j([:]) != j([]))
    }

    @Test("1 == 1.0 with equal hashes; non-integral doubles differ from ints")
    func numericEquality() {
        #expect(JSON.int(1) == JSON.double(1.0))
        #expect(JSON.double(1.0) == JSON.int(1))
        #expect(JSON.int(1).hashValue == JSON.double(1.0).hashValue)
        #expect(JSON.int(0).hashValue == JSON.double(-0.0).hashValue)
        #expect(JSON.int(1) != JSON.double(1.5))
        #expect(JSON.int(1) != JSON.string("1"))
        #expect(JSON.bool(true) != JSON.int(1))
        #expect(JSON.null != JSON.int(0))
        // 2^53 + 1 is not representable as a Double: the int is not equal to the nearest double.
        #expect(JSON.int(9_007_199_254_740_993) != JSON.double(9_007_199_254_740_992.0))
        // Int64.max is not exactly representable either.
        #expect(JSON.int(.max) != JSON.double(9_223_372_036_854_775_808.0))
        // As set members and dictionary keys.
        #expect(Set<JSON>([1, 1.0, ["a": 1], ["a": 1.0]]).count == 2)
        let channels: [JSON: String] = [["a": 1, "b": 2]: "one"]
        #expect(channels[["b": 2.0, "a": 1]] == "one")
    }

    @Test("arrays compare element-wise and in order")
    func arrayEquality() {
        #expect(j([1, 2]) == j([1.0, 2.0]))
        #expect(j([1, 2]) != j([2, 1]))
        #expect(j([1]) != j([1, 1]))
    }

    @Test("strings compare by Unicode scalars, as JSON (RFC 8259 §8.3) and JavaScript do")
    func stringEqualityIsByScalars() {
        // "é" precomposed and decomposed are different JSON strings: different channels for a
        // JavaScript or Python client. Swift's String == treats them as equal, which also
        // breaks "equal values have equal canonical strings" (the pubsub topic).
        let precomposed = JSON.string("\u{E9}")
        let decomposed = JSON.string("e\u{301}")
        #expect(precomposed != decomposed)
        if precomposed == decomposed {
            // Then at least their canonical text (a Redis channel name, compared as bytes)
            // would have to be the same.
            #expect(
                Array(precomposed.canonicalString().utf8) == Array(decomposed.canonicalString().utf8),
                "equal values, different bus topics")
        }
    }

    @Test("JSONObject subscript sets, replaces and removes")
    func objectSubscript() {
        var object: JSONObject = ["a": 1]
        object["b"] = 2
        object["a"] = 3
        #expect(object.keys == ["a", "b"])
        #expect(object["a"] == 3)
        object["a"] = nil
        #expect(object.keys == ["b"])
        #expect(object.count == 1)
        object["missing"] = nil
        #expect(object.count == 1)
        // The initializer dedups, last wins.
        let deduped = JSONObject([("x", 1), ("y", 2), ("x", 3)])
        #expect(deduped.keys == ["x", "y"])
        #expect(deduped["x"] == 3)
    }

    @Test("accessors return the payload of the matching case only")
    func accessors() {
        #expect(JSON.string("a").stringValue == "a")
        #expect(JSON.int(1).stringValue == nil)
        #expect(JSON.int(3).int64Value == 3)
        #expect(JSON.double(3.0).int64Value == 3)
        #expect(JSON.double(3.5).int64Value == nil)
        #expect(JSON.int(3).doubleValue == 3.0)
        #expect(JSON.bool(true).boolValue == true)
        #expect(JSON.null.isNull)
        #expect(!JSON.int(0).isNull)
        #expect(JSON.array([1]).arrayValue == [1])
        #expect(JSON.int(1)["a"] == nil)
    }
}
