import Foundation
import NIOHTTP1
import Snorky
import SnorkyProtocol
@testable import SnorkyServer
import SnorkyServices
import SnorkyTesting
import Testing

/// The JavaScript client and the demo page compiled into the binary and served on the
/// public port (`/snorky.js`, `/snorky.mjs`, and `/` with `--demo`).
@Suite("Public port: the JavaScript client and the demo page")
struct ClientAssetsTests {
    /// The repository's `clients/js` directory, found from this file's path.
    static let clientDirectory = URL(fileURLWithPath: #filePath)
        .deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
        .appendingPathComponent("clients/js")

    static func source(_ path: String) throws -> String {
        try String(contentsOf: clientDirectory.appendingPathComponent(path), encoding: .utf8)
    }

    static func header(_ name: String, in headers: [(String, String)]) -> String? {
        headers.first { $0.0.lowercased() == name.lowercased() }?.1
    }

    func routes(demo: Bool, tokens: ConnectionTokens? = ConnectionTokens(secret: "demo-secret")) -> PublicRoutes {
        PublicRoutes(
            webSocketPath: "/ws", identities: ConnectionIdentity(tokens: tokens), isOriginAllowed: { _ in true }, demo: demo)
    }

    func request(_ uri: String, method: HTTPMethod = .GET, headers: [(String, String)] = []) -> HTTPRequestHead {
        HTTPRequestHead(version: .http1_1, method: method, uri: uri, headers: HTTPHeaders(headers))
    }

    // MARK: The embedded copies

    @Test("the embedded files are exactly clients/js/snorky.js, snorky.mjs and demo/index.html (else run scripts/embed-client.sh)")
    func embeddedCopiesAreCurrent() throws {
        #expect(ClientAssets.snorkyJS == (try Self.source("snorky.js")), "stale: run scripts/embed-client.sh")
        #expect(ClientAssets.snorkyModule == (try Self.source("snorky.mjs")), "stale: run scripts/embed-client.sh")
        #expect(ClientAssets.demoPage == (try Self.source("demo/index.html")), "stale: run scripts/embed-client.sh")
    }

    // MARK: Routes

    @Test("/snorky.js and /snorky.mjs: JavaScript with an ETag, revalidated on every use")
    func clientServed() throws {
        let routes = routes(demo: false)
        for (path, asset) in [("/snorky.js", StaticAsset.client), ("/snorky.mjs", StaticAsset.clientModule)] {
            let response = routes.respond(to: request(path))
            #expect(response.status == .ok)
            #expect(Self.header("Content-Type", in: response.headers) == "text/javascript; charset=utf-8")
            #expect(Self.header("Content-Length", in: response.headers) == String(asset.bytes.count))
            #expect(Self.header("Cache-Control", in: response.headers) == "no-cache")
            #expect(Self.header("X-Content-Type-Options", in: response.headers) == "nosniff")
            #expect(Self.header("ETag", in: response.headers) == asset.entityTag)
            #expect(response.body == asset.bytes)
        }
        #expect(routes.respond(to: request("/snorky.js?v=3")).status == .ok)
        #expect(StaticAsset.client.entityTag != StaticAsset.clientModule.entityTag)
    }

    @Test("If-None-Match with the current ETag (or *, or a list holding it, weak or not) answers 304 without a body")
    func notModified() throws {
        let routes = routes(demo: false)
        let tag = StaticAsset.client.entityTag
        for value in [tag, "*", "\"other\", \(tag)", "W/\(tag)"] {
            let response = routes.respond(to: request("/snorky.js", headers: [("If-None-Match", value)]))
            #expect(response.status == .notModified, "\(value)")
            #expect(response.body.isEmpty)
            #expect(Self.header("ETag", in: response.headers) == tag)
        }
        let stale = routes.respond(to: request("/snorky.js", headers: [("If-None-Match", "\"0123\"")]))
        #expect(stale.status == .ok)
    }

    @Test("the ETag follows the content")
    func entityTagFollowsContent() {
        let one = StaticAsset("let a = 1;\n", contentType: StaticAsset.javaScriptType)
        let same = StaticAsset("let a = 1;\n", contentType: StaticAsset.javaScriptType)
        let other = StaticAsset("let a = 2;\n", contentType: StaticAsset.javaScriptType)
        #expect(one.entityTag == same.entityTag)
        #expect(one.entityTag != other.entityTag)
        #expect(one.entityTag.count == 34)
    }

    @Test("other methods than GET and HEAD get 405 with Allow")
    func methods() {
        let response = routes(demo: true).respond(to: request("/snorky.js", method: .POST))
        #expect(response.status == .methodNotAllowed)
        #expect(Self.header("Allow", in: response.headers) == "GET, HEAD")
        #expect(routes(demo: true).respond(to: request("/demo/token?name=a", method: .DELETE)).status == .methodNotAllowed)
    }

    @Test("without --demo, / and /demo/token are 404; with it / is the demo page")
    func demoPage() {
        #expect(routes(demo: false).respond(to: request("/")).status == .notFound)
        #expect(routes(demo: false).respond(to: request("/demo/token?name=alice")).status == .notFound)
        let page = routes(demo: true).respond(to: request("/"))
        #expect(page.status == .ok)
        #expect(Self.header("Content-Type", in: page.headers) == "text/html; charset=utf-8")
        #expect(page.body == StaticAsset.demoPage.bytes)
        #expect(String(decoding: page.body, as: UTF8.self).contains(#"<script src="/snorky.js"></script>"#))
        #expect(routes(demo: true).respond(to: request("/index.html")).status == .ok)
        #expect(routes(demo: true).respond(to: request("/elsewhere")).status == .notFound)
    }

    @Test("/demo/token gives a token whose identity is the name asked for")
    func demoToken() throws {
        let tokens = ConnectionTokens(secret: "demo-secret")
        let response = routes(demo: true, tokens: tokens).respond(to: request("/demo/token?name=Ana%20Mar%C3%ADa"))
        #expect(response.status == .ok)
        #expect(Self.header("Cache-Control", in: response.headers) == "no-store")
        let body = try JSON.parse(response.body)
        #expect(body["identity"] == "Ana María")
        let token = try #require(body["token"]?.stringValue)
        #expect(try tokens.verify(token) == "Ana María")
        #expect(throws: ConnectionTokens.Failure.self) { try ConnectionTokens(secret: "other").verify(token) }
    }

    @Test("/demo/token refuses empty, long or control-character names, and needs a token secret")
    func demoTokenRefusals() throws {
        let routes = routes(demo: true)
        let long = String(repeating: "x", count: DemoTokens.maxNameLength + 1)
        for query in ["", "?name=", "?name=%20%20", "?name=\(long)", "?name=a%0Ab", "?name=%07"] {
            let response = routes.respond(to: request("/demo/token" + query))
            #expect(response.status == .badRequest, "\(query)")
            #expect(try JSON.parse(response.body)["error"] != nil)
        }
        #expect(routes.respond(to: request("/demo/token?name=" + String(repeating: "é", count: DemoTokens.maxNameLength))).status == .ok)
        let unsigned = self.routes(demo: true, tokens: nil).respond(to: request("/demo/token?name=alice"))
        #expect(unsigned.status == .serviceUnavailable)
    }

    // MARK: Over a real socket

    @Test("a live worker serves /snorky.js byte for byte, 304 on revalidation, HEAD without a body")
    func liveClient() async throws {
        let live = try await LiveWorker.start()
        let response = try await HTTPTestClient.get(host: "127.0.0.1", port: live.port, path: "/snorky.js")
        #expect(response.status == 200)
        #expect(response.body == (try Self.source("snorky.js")))
        #expect(Self.header("Content-Type", in: response.headers) == "text/javascript; charset=utf-8")
        let tag = try #require(Self.header("ETag", in: response.headers))
        let revalidated = try await HTTPTestClient.get(
            host: "127.0.0.1", port: live.port, path: "/snorky.js", headers: [("If-None-Match", tag)])
        #expect(revalidated.status == 304)
        #expect(revalidated.body.isEmpty)
        let head = try await HTTPTestClient.request(method: "HEAD", host: "127.0.0.1", port: live.port, path: "/snorky.mjs")
        #expect(head.status == 200)
        #expect(head.body.isEmpty)
        #expect(Self.header("Content-Length", in: head.headers) == String(StaticAsset.clientModule.bytes.count))
        #expect(try await HTTPTestClient.get(host: "127.0.0.1", port: live.port, path: "/").status == 404)
        // The WebSocket endpoint still works next to the files.
        let client = try await live.connect()
        try await client.expectUsable()
        await live.shutdown()
    }

    @Test("a live demo worker serves the page, and its token opens a connection with that identity")
    func liveDemo() async throws {
        let tokens = ConnectionTokens(secret: "live-demo-secret")
        let live = try await LiveWorker.start(configure: {
            $0.demo = true
            $0.tokens = tokens
        }) { node in
            var options = BuiltinServiceOptions()
            options.tokens = tokens
            BuiltinServices.register(on: node, options: options)
        }
        let page = try await HTTPTestClient.get(host: "127.0.0.1", port: live.port, path: "/")
        #expect(page.status == 200)
        #expect(page.body == (try Self.source("demo/index.html")))
        let issued = try await HTTPTestClient.get(host: "127.0.0.1", port: live.port, path: "/demo/token?name=alice")
        #expect(issued.status == 200)
        let token = try #require(try JSON.parse(issued.body)["token"]?.stringValue)
        let alice = try await WebSocketTestClient.connect(host: "127.0.0.1", port: live.port, query: "token=\(token)")
        #expect(try await alice.request("chat", "join", ["channel": "#lobby"], callId: 1)
            == rpcResponse("chat", callId: 1, data: ["members": ["alice"]]))
        await live.shutdown()
    }
}
