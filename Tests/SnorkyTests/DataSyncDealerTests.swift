import Snorky
import SnorkyProtocol
import Testing

@testable import SnorkyServices

private let bluePlayer: JSON = ["id": 1, "name": "Alice", "color": "blue", "score": 10, "team": ["name": "red", "rank": 2]]
private let greenPlayer: JSON = ["id": 2, "name": "Bob", "color": "green", "score": 7.5]

private func filter(_ query: JSON) throws -> RowMatcher {
    try #require(FilterDealer(name: "f", model: "Player").matcher(for: query))
}

@Suite("DataSync dealers")
struct DataSyncDealerTests {
    @Test("broadcast matches every row of its model, whatever the query")
    func broadcast() throws {
        let dealer = BroadcastDealer(name: "all", model: "Player")
        for query: JSON in [nil, "anything", ["==", "x", 1]] {
            let matcher = try #require(dealer.matcher(for: query))
            #expect(matcher.matches(bluePlayer))
            #expect(matcher.matches(greenPlayer))
            #expect(matcher.matches(["unrelated": true]))
        }
    }

    @Test("simple matches rows whose key equals the query, by JSON value")
    func simple() throws {
        let dealer = SimpleDealer(name: "by_color", model: "Player", key: "color")
        let blue = try #require(dealer.matcher(for: "blue"))
        #expect(blue.matches(bluePlayer))
        #expect(!blue.matches(greenPlayer))
        #expect(!blue.matches(["name": "no color"]))  // missing field
        #expect(!blue.matches("blue"))  // not an object: no fields

        let byScore = SimpleDealer(name: "by_score", model: "Player", key: "score")
        #expect(try #require(byScore.matcher(for: 10.0)).matches(bluePlayer))  // 10 == 10.0
        #expect(!(try #require(byScore.matcher(for: "10")).matches(bluePlayer)))  // type mismatch

        let byTags = SimpleDealer(name: "by_tags", model: "Player", key: "tags")
        let objectQuery = try #require(byTags.matcher(for: ["b": 2, "a": 1]))
        #expect(objectQuery.matches(["tags": ["a": 1, "b": 2]]))  // key order is irrelevant
        #expect(try #require(byTags.matcher(for: nil)).matches(["tags": nil]))
        #expect(!(try #require(byTags.matcher(for: nil)).matches([:])))  // null is not missing
    }

    @Test("simple follows a dotted path, and a literal dotted key wins")
    func simpleDottedPath() throws {
        let dealer = SimpleDealer(name: "by_team", model: "Player", key: "team.name")
        let red = try #require(dealer.matcher(for: "red"))
        #expect(red.matches(bluePlayer))
        #expect(!red.matches(greenPlayer))
        #expect(!red.matches(["team": "red"]))  // a step that is not an object
        #expect(red.matches(["team.name": "red"]))
        #expect(!red.matches(["team.name": "blue", "team": ["name": "red"]]))
        #expect(FieldPath("a.b.c").value(in: ["a": ["b": ["c": 3]]]) == 3)
        #expect(FieldPath("a..b").value(in: ["a": ["b": 1]]) == nil)
    }

    @Test(
        "filter comparisons on numbers",
        arguments: [
            (["==", "score", 10] as JSON, true), (["==", "score", 10.0], true), (["==", "score", 11], false),
            (["<", "score", 11], true), (["<", "score", 10], false), (["<", "score", 10.5], true),
            (["<=", "score", 10], true), (["<=", "score", 9], false),
            ([">", "score", 9.99], true), ([">", "score", 10], false),
            ([">=", "score", 10], true), ([">=", "score", 11], false),
        ] as [(JSON, Bool)])
    func filterNumbers(query: JSON, expected: Bool) throws {
        #expect(try filter(query).matches(bluePlayer) == expected)
    }

    @Test("filter comparisons on strings use code point order")
    func filterStrings() throws {
        #expect(try filter(["==", "color", "blue"]).matches(bluePlayer))
        #expect(try filter(["<", "name", "Bob"]).matches(bluePlayer))
        #expect(try filter([">=", "name", "Alice"]).matches(bluePlayer))
        #expect(!(try filter([">", "name", "Alice"]).matches(bluePlayer)))
        #expect(try filter(["<", "name", "a"]).matches(bluePlayer))  // "A" (65) < "a" (97)
        // Code points, not Swift's Unicode collation: U+00E9 sorts after "z".
        #expect(try filter([">", "name", "z"]).matches(["name": "\u{E9}"]))
        // "é" precomposed and decomposed are different strings to JSON.
        #expect(!(try filter(["==", "name", "e\u{301}"]).matches(["name": "\u{E9}"])))
    }

    @Test("a type mismatch makes a comparison false")
    func filterTypeMismatch() throws {
        #expect(!(try filter(["<", "score", "20"]).matches(bluePlayer)))
        #expect(!(try filter([">", "color", 1]).matches(bluePlayer)))
        #expect(!(try filter(["==", "score", "10"]).matches(bluePlayer)))
        #expect(!(try filter(["<", "flag", true]).matches(["flag": false])))  // booleans are not ordered
        #expect(!(try filter(["<=", "list", [1]]).matches(["list": [1]])))  // neither are arrays
        #expect(try filter(["==", "list", [1, 2]]).matches(["list": [1, 2]]))  // but they compare equal
    }

    @Test("a missing field makes a comparison false, so its negation true")
    func filterMissingField() throws {
        for op in RowFilter.Comparison.allCases {
            #expect(!(try filter([.string(op.rawValue), "missing", 1]).matches(bluePlayer)))
        }
        #expect(try filter(["not", ["==", "missing", 1]]).matches(bluePlayer))
        #expect(!(try filter(["==", "team.missing", "x"]).matches(bluePlayer)))
    }

    @Test("and, or, not, nested, with dotted fields")
    func filterCombinators() throws {
        let query: JSON = [
            "and",
            ["or", ["==", "color", "blue"], ["==", "color", "green"]],
            ["not", ["<", "score", 8]],
            ["==", "team.name", "red"],
        ]
        #expect(try filter(query).matches(bluePlayer))
        #expect(!(try filter(query).matches(greenPlayer)))  // score 7.5 and no team
        #expect(try filter(["or", ["==", "color", "green"], [">=", "team.rank", 2]]).matches(bluePlayer))
        #expect(!(try filter(["not", ["and", ["==", "color", "blue"], [">", "score", 1]]]).matches(bluePlayer)))
        #expect(try filter(["and"]).matches(bluePlayer))  // none: true
        #expect(!(try filter(["or"]).matches(bluePlayer)))  // none: false
    }

    @Test(
        "an invalid filter is refused",
        arguments: [
            "==", 42, nil, ["x": 1], [], [42], ["===", "a", 1], ["==", "a"], ["==", "a", 1, 2], ["==", 1, 1],
            ["==", "", 1], ["not"], ["not", ["==", "a", 1], ["==", "b", 2]], ["not", "x"], ["and", ["==", "a", 1], "x"],
            ["or", ["bad"]], ["and", ["not", ["<", "a"]]],
        ] as [JSON])
    func invalidFilter(query: JSON) {
        #expect(FilterDealer(name: "f", model: "Player").matcher(for: query) == nil)
    }

    @Test("the registry refuses two dealers with one name and knows the models")
    func registry() throws {
        var registry = try DealerRegistry([
            BroadcastDealer(name: "a", model: "Player"), SimpleDealer(name: "b", model: "Car", key: "make"),
        ])
        #expect(registry["a"]?.model == "Player")
        #expect(registry["missing"] == nil)
        #expect(registry.hasDealer(forModel: "Car"))
        #expect(!registry.hasDealer(forModel: "Boat"))
        #expect(throws: DuplicateDealer(name: "a")) { try registry.add(FilterDealer(name: "a", model: "Boat")) }
        #expect(!registry.hasDealer(forModel: "Boat"))
    }
}

@Suite("DataSync deltas and the subscription index")
struct DataSyncDeltaTests {
    @Test(
        "a delta is validated field by field, in the original order",
        arguments: [
            (["type": "insert", "data": [:]] as JSON, "Missing field"),
            (["model": 3, "type": "insert", "data": [:]], "model must be string"),
            (["model": 3], "model must be string"),
            (["model": "Player", "data": [:]], "Missing field"),
            (["model": "Player", "type": "upsert", "data": [:]], "Invalid delta type"),
            (["model": "Player", "type": 1, "data": [:]], "Invalid delta type"),
            (["model": "Player", "type": "insert"], "Missing field"),
            (["model": "Player", "type": "delete", "newData": [:]], "Missing field"),
            (["model": "Player", "type": "update", "newData": [:]], "Missing field"),
            (["model": "Player", "type": "update", "oldData": [:]], "Missing field"),
            ("not an object", "Invalid params"),
        ] as [(JSON, String)])
    func validation(delta: JSON, message: String) {
        #expect(throws: RPCError(message)) { try DataSyncDelta(validating: delta) }
    }

    @Test("a valid delta keeps only the protocol's fields")
    func normalization() throws {
        let update = try DataSyncDelta(validating: [
            "type": "update", "model": "Player", "newData": ["a": 1], "oldData": ["a": 0], "extra": true,
        ])
        #expect(update == .update(model: "Player", newData: ["a": 1], oldData: ["a": 0]))
        #expect(update.json == ["type": "update", "model": "Player", "newData": ["a": 1], "oldData": ["a": 0]])
        #expect(try DataSyncDelta(validating: ["type": "delete", "model": "Player", "data": 5]) == .delete(model: "Player", data: 5))
    }

    @Test(
        "an update is split per subscription: update, insert, delete or nothing",
        arguments: [
            ("blue", "blue", "update"), ("blue", "green", "insert"), ("green", "blue", "delete"), ("green", "green", nil),
        ] as [(String, String, String?)])
    func updateSplitting(newColor: String, oldColor: String, expected: String?) throws {
        let items = [CompiledItem(model: "Player", matcher: .fieldEquals(FieldPath("color"), "blue"))]
        let newRow: JSON = ["id": 1, "color": .string(newColor)]
        let oldRow: JSON = ["id": 1, "color": .string(oldColor)]
        let delta = DataSyncDelta.update(model: "Player", newData: newRow, oldData: oldRow)
        let direct = delivery(of: delta, to: items)
        var index = SubscriptionIndex()
        index.insert("t", items: items)
        let indexed = index.deliveries(of: delta)
        switch expected {
        case "update":
            #expect(direct == delta)
        case "insert":
            #expect(direct == .insert(model: "Player", data: newRow))
        case "delete":
            #expect(direct == .delete(model: "Player", data: oldRow))
        default:
            #expect(direct == nil)
        }
        #expect(indexed.map(\.delta) == (direct.map { [$0] } ?? []))
    }

    @Test("several matching items of one subscription give one delivery; other models give none")
    func atMostOnce() {
        let items = [
            CompiledItem(model: "Player", matcher: .everyRow),
            CompiledItem(model: "Player", matcher: .fieldEquals(FieldPath("color"), "blue")),
            CompiledItem(model: "Player", matcher: .predicate { _ in true }),
            CompiledItem(model: "Car", matcher: .everyRow),
        ]
        var index = SubscriptionIndex()
        index.insert("t", items: items)
        index.insert("u", items: [CompiledItem(model: "Car", matcher: .everyRow)])
        let insert = DataSyncDelta.insert(model: "Player", data: ["color": "blue"])
        #expect(index.deliveries(of: insert).map(\.token) == ["t"])
        let update = DataSyncDelta.update(model: "Player", newData: ["color": "blue"], oldData: ["color": "green"])
        #expect(index.deliveries(of: update).map(\.token) == ["t"])
        #expect(index.deliveries(of: update).first?.delta == update)  // everyRow matches both rows
        #expect(Set(index.deliveries(of: .delete(model: "Car", data: [:])).map(\.token)) == ["t", "u"])
        #expect(index.deliveries(of: .insert(model: "Boat", data: [:])).isEmpty)

        index.remove("t", items: items)
        #expect(index.deliveries(of: insert).isEmpty)
        index.remove("u", items: [CompiledItem(model: "Car", matcher: .everyRow)])
        #expect(index.isEmpty)
    }
}
