import SnorkyProtocol
import SnorkyTesting
import Testing

/// Random JSON values covering every case and the awkward corners of each.
struct RandomJSON {
    var rng: SeededGenerator

    mutating func value(depth: Int = 0) -> JSON {
        let kind = Int.random(in: 0..<(depth >= 4 ? 5 : 8), using: &rng)
        switch kind {
        case 0: return .null
        case 1: return .bool(Bool.random(using: &rng))
        case 2: return .int(integer())
        case 3: return .double(double())
        case 4: return .string(string())
        case 5, 6:
            let count = Int.random(in: 0..<6, using: &rng)
            return .array((0..<count).map { _ in value(depth: depth + 1) })
        default:
            let count = Int.random(in: 0..<(Bool.random(using: &rng) ? 6 : 24), using: &rng)
            return .object(JSONObject((0..<count).map { _ in (string(), value(depth: depth + 1)) }))
        }
    }

    mutating func integer() -> Int64 {
        switch Int.random(in: 0..<4, using: &rng) {
        case 0: return [0, 1, -1, .max, .min, 9_007_199_254_740_993].randomElement(using: &rng)!
        case 1: return Int64.random(in: -1000...1000, using: &rng)
        default: return Int64(bitPattern: rng.next())
        }
    }

    mutating func double() -> Double {
        switch Int.random(in: 0..<4, using: &rng) {
        case 0:
            return [0.5, -0.0, 1.0, 1e300, -1e-300, .leastNonzeroMagnitude, .greatestFiniteMagnitude, 0.1].randomElement(using: &rng)!
        case 1: return Double.random(in: -1e6...1e6, using: &rng)
        default:
            while true {
                let candidate = Double(bitPattern: rng.next())
                if candidate.isFinite { return candidate }
            }
        }
    }

    mutating func string() -> String {
        let length = Int.random(in: 0..<12, using: &rng)
        var scalars = String.UnicodeScalarView()
        for _ in 0..<length {
            scalars.append(scalar())
        }
        return String(scalars)
    }

    mutating func scalar() -> Unicode.Scalar {
        switch Int.random(in: 0..<6, using: &rng) {
        case 0: return Unicode.Scalar(UInt8.random(in: 0..<0x20, using: &rng))  // control characters
        case 1: return ["\"", "\\", "/", "\u{7F}", "\u{2028}", "\u{FEFF}"].randomElement(using: &rng)!
        case 2: return Unicode.Scalar(UInt32.random(in: 0x10000...0x10FFFF, using: &rng))!  // astral
        case 3:
            while true {
                if let scalar = Unicode.Scalar(UInt32.random(in: 0x80...0xFFFF, using: &rng)) { return scalar }
            }
        default: return Unicode.Scalar(UInt8.random(in: 0x20..<0x7F, using: &rng))
        }
    }
}

/// The same value with every object's members in a different order.
func shuffledKeys(_ value: JSON, using rng: inout SeededGenerator) -> JSON {
    switch value {
    case .array(let values):
        return .array(values.map { shuffledKeys($0, using: &rng) })
    case .object(let object):
        var members = object.members.map { ($0.key, shuffledKeys($0.value, using: &rng)) }
        members.shuffle(using: &rng)
        return .object(JSONObject(members))
    default:
        return value
    }
}

@Suite("JSON properties")
struct JSONPropertyTests {
    @Test("10,000 random values round-trip: parse(encode(v)) == v, byte-stable and hash-stable")
    func randomRoundTrip() throws {
        var generator = RandomJSON(rng: SeededGenerator(seed: 0x5A0B_C0DE))
        for iteration in 0..<10_000 {
            let value = generator.value()
            let encoded = value.encodedBytes()
            let parsed: JSON
            do {
                parsed = try JSON.parse(encoded)
            } catch {
                Issue.record("iteration \(iteration): \(error) for \(String(decoding: encoded, as: UTF8.self))")
                return
            }
            guard parsed == value else {
                Issue.record("iteration \(iteration): \(value) came back as \(parsed)")
                return
            }
            #expect(parsed.encodedBytes() == encoded, "iteration \(iteration)")
            #expect(parsed.hashValue == value.hashValue, "iteration \(iteration)")
            #expect(Array(parsed.canonicalString().utf8) == Array(value.canonicalString().utf8), "iteration \(iteration)")
        }
    }

    @Test("reordering object keys keeps values equal, hashes equal and canonical strings equal")
    func keyOrderIrrelevant() throws {
        var generator = RandomJSON(rng: SeededGenerator(seed: 42))
        var shuffler = SeededGenerator(seed: 43)
        for iteration in 0..<2_000 {
            let value = generator.value()
            let shuffled = shuffledKeys(value, using: &shuffler)
            #expect(shuffled == value, "iteration \(iteration)")
            #expect(shuffled.hashValue == value.hashValue, "iteration \(iteration)")
            #expect(Array(shuffled.canonicalString().utf8) == Array(value.canonicalString().utf8), "iteration \(iteration)")
            #expect(try JSON.parse(shuffled.canonicalString()) == value, "iteration \(iteration)")
        }
    }

    @Test("truncated and mutated JSON never crashes the parser, and valid prefixes are not accepted wrongly")
    func mutationsNeverCrash() {
        var generator = RandomJSON(rng: SeededGenerator(seed: 7))
        var rng = SeededGenerator(seed: 8)
        var rejected = 0
        for _ in 0..<10_000 {
            var bytes = generator.value().encodedBytes()
            switch Int.random(in: 0..<4, using: &rng) {
            case 0:
                bytes = Array(bytes.prefix(Int.random(in: 0...bytes.count, using: &rng)))
            case 1 where !bytes.isEmpty:
                bytes[Int.random(in: 0..<bytes.count, using: &rng)] = UInt8.random(in: 0...255, using: &rng)
            case 2 where !bytes.isEmpty:
                bytes.remove(at: Int.random(in: 0..<bytes.count, using: &rng))
            default:
                bytes.insert(
                    Array("{}[]\",:\\ 0e-".utf8).randomElement(using: &rng)!,
                    at: Int.random(in: 0...bytes.count, using: &rng))
            }
            if let parsed = try? JSON.parse(bytes) {
                // Whatever was accepted must itself round-trip.
                #expect((try? JSON.parse(parsed.encodedBytes())) == parsed)
            } else {
                rejected += 1
            }
        }
        // The mutations are mostly destructive: make sure the test exercised the error paths.
        #expect(rejected > 5_000)
    }
}
