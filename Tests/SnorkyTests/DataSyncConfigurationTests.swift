import Snorky
import SnorkyServices
import Testing

@Suite("DataSync configuration")
struct DataSyncConfigurationTests {
    @Test("dealers of every kind, the TTL and the buffer limit come from [datasync]")
    func parsesEverything() throws {
        let options = try DataSyncOptions(
            configurationText: """
                port = 5800            # a node setting: not datasync's business

                [datasync]
                subscription_ttl = 2.5
                max_buffered_deltas = 50

                [[datasync.dealers]]
                name = "players_with_color"
                model = "Player"
                kind = "simple"
                key = "color"

                [[datasync.dealers]]
                name = "players_by_team"
                model = "Player"
                kind = "simple"
                key = "team.name"

                [[datasync.dealers]]
                name = "all_cars"
                model = "Car"
                kind = "broadcast"

                [[datasync.dealers]]
                name = "player_filter"
                model = "Player"
                kind = "filter"
                """)
        #expect(options.subscriptionTTL == .milliseconds(2500))
        #expect(options.maxBufferedDeltas == 50)
        #expect(options.dealers.byName.keys.sorted() == ["all_cars", "player_filter", "players_by_team", "players_with_color"])
        #expect((options.dealers["players_with_color"] as? SimpleDealer)?.key == FieldPath("color"))
        #expect((options.dealers["players_by_team"] as? SimpleDealer)?.key == FieldPath("team.name"))
        #expect(options.dealers["all_cars"] is BroadcastDealer)
        #expect(options.dealers["player_filter"] is FilterDealer)
        #expect(options.dealers["player_filter"]?.model == "Player")
        #expect(options.dealers.hasDealer(forModel: "Car"))
    }

    @Test("a file without [datasync] keeps the defaults; code-registered dealers stay")
    func defaults() throws {
        let options = try DataSyncOptions(configurationText: "port = 1\n[other]\nx = 1\n")
        #expect(options.subscriptionTTL == .seconds(120))
        #expect(options.maxBufferedDeltas == 1000)
        #expect(options.dealers.isEmpty)

        var withCode = DataSyncOptions()
        try withCode.add(BroadcastDealer(name: "coded", model: "M"))
        try withCode.apply(configurationText: "[[datasync.dealers]]\nname = \"filed\"\nmodel = \"M\"\nkind = \"filter\"\n")
        #expect(withCode.dealers.byName.keys.sorted() == ["coded", "filed"])
    }

    @Test(
        "mistakes are reported clearly",
        arguments: [
            ("datasync = 3", "datasync: expected a table ([datasync]), got integer"),
            ("[datasync]\nttl = 3", "datasync: unknown setting 'ttl' (expected subscription_ttl, max_buffered_deltas or dealers)"),
            ("[datasync]\nsubscription_ttl = 0", "datasync.subscription_ttl: expected a positive number of seconds"),
            ("[datasync]\nsubscription_ttl = \"2\"", "datasync.subscription_ttl: expected a positive number of seconds"),
            ("[datasync]\nmax_buffered_deltas = 0", "datasync.max_buffered_deltas: expected an integer in 1...1000000"),
            ("[datasync]\ndealers = 1", "datasync.dealers: expected an array of tables ([[datasync.dealers]])"),
            ("[datasync]\ndealers = [1]", "datasync.dealers #1: expected a table, got integer"),
            ("[[datasync.dealers]]\nmodel = \"P\"\nkind = \"broadcast\"", "datasync.dealers #1: missing 'name'"),
            ("[[datasync.dealers]]\nname = \"\"", "datasync.dealers #1: 'name' must be a non-empty string"),
            ("[[datasync.dealers]]\nname = \"a\"\nkind = \"broadcast\"", "datasync.dealers #1 (a): missing 'model'"),
            ("[[datasync.dealers]]\nname = \"a\"\nmodel = \"P\"", "datasync.dealers #1 (a): missing 'kind' (broadcast, simple or filter)"),
            (
                "[[datasync.dealers]]\nname = \"a\"\nmodel = \"P\"\nkind = \"fancy\"",
                "datasync.dealers #1 (a): unknown kind 'fancy' (expected broadcast, simple or filter)"
            ),
            (
                "[[datasync.dealers]]\nname = \"a\"\nmodel = \"P\"\nkind = \"simple\"",
                "datasync.dealers #1 (a): a simple dealer needs 'key' (a field name or dotted path)"
            ),
            (
                "[[datasync.dealers]]\nname = \"a\"\nmodel = \"P\"\nkind = \"filter\"\nkey = \"x\"",
                "datasync.dealers #1 (a): 'key' is only for simple dealers"
            ),
            (
                "[[datasync.dealers]]\nname = \"a\"\nmodel = \"P\"\nkind = \"broadcast\"\nquery = 1",
                "datasync.dealers #1 (a): unknown key 'query' (expected name, model, kind, key)"
            ),
            (
                "[[datasync.dealers]]\nname = \"a\"\nmodel = \"P\"\nkind = \"broadcast\"\n[[datasync.dealers]]\nname = \"a\"\nmodel = \"Q\"\nkind = \"filter\"",
                "datasync.dealers #2: two dealers are named 'a'"
            ),
            ("[datasync\n", nil),
        ] as [(String, String?)])
    func errors(text: String, message: String?) {
        do {
            _ = try DataSyncOptions(configurationText: text, fileName: "snorky.toml")
            Issue.record("accepted: \(text)")
        } catch {
            if let message {
                #expect(error.message == message)
            } else {
                #expect(error.message.hasPrefix("snorky.toml: line 1"))
            }
        }
    }
}
