import NIOHTTP1
import SnorkyProtocol
import SnorkyServices

/// A complete HTTP response on the public port.
struct PublicResponse: Sendable {
    var status: HTTPResponseStatus
    var headers: [(String, String)]
    /// Omitted on the wire for HEAD requests and 304s (the headers still describe it).
    var body: [UInt8]

    static func text(_ status: HTTPResponseStatus, _ text: String, headers: [(String, String)] = []) -> PublicResponse {
        PublicResponse(
            status: status,
            headers: [("Content-Type", "text/plain; charset=utf-8"), ("Content-Length", String(text.utf8.count))] + headers,
            body: Array(text.utf8))
    }

    static func json(_ status: HTTPResponseStatus, _ value: JSON) -> PublicResponse {
        let body = value.encodedBytes()
        return PublicResponse(
            status: status,
            headers: [
                ("Content-Type", "application/json"), ("Content-Length", String(body.count)),
                ("Cache-Control", "no-store"),
            ],
            body: body)
    }
}

/// What the public port answers to plain HTTP requests (everything that is not a WebSocket
/// upgrade it accepted): the client at `/snorky.js` and `/snorky.mjs`, the demo page and
/// its tokens when enabled, the reason an upgrade on the WebSocket path was refused, and
/// 404 for the rest. A pure function of the request head, so it is tested without sockets.
struct PublicRoutes: Sendable {
    static let clientPath = "/snorky.js"
    static let clientModulePath = "/snorky.mjs"
    static let demoPath = "/"
    static let demoTokenPath = "/demo/token"

    let webSocketPath: String
    let identities: ConnectionIdentity
    let isOriginAllowed: @Sendable ([String]) -> Bool
    /// Serve the demo page and hand out demo tokens.
    let demo: Bool

    func respond(to head: HTTPRequestHead) -> PublicResponse {
        let path = requestPath(head.uri)
        switch path {
        case webSocketPath:
            return refusedUpgrade(head)
        case Self.clientPath:
            return serve(.client, head)
        case Self.clientModulePath:
            return serve(.clientModule, head)
        case Self.demoPath where demo, "/index.html" where demo:
            return serve(.demoPage, head)
        case Self.demoTokenPath where demo:
            guard head.method == .GET || head.method == .HEAD else { return Self.methodNotAllowed }
            return DemoTokens(tokens: identities.tokens).respond(uri: head.uri)
        default:
            return .text(.notFound, "Not found.\n")
        }
    }

    /// The WebSocket path reached here: the upgrade was refused, or not asked for.
    private func refusedUpgrade(_ head: HTTPRequestHead) -> PublicResponse {
        if !isOriginAllowed(head.headers["Origin"]) {
            return .text(.forbidden, "Origin not allowed\n")
        }
        if case .refused(let reason) = identities.resolve(uri: head.uri) {
            return .text(.unauthorized, reason + "\n")
        }
        return .text(.upgradeRequired, "Use a WebSocket connection.\n")
    }

    private func serve(_ asset: StaticAsset, _ head: HTTPRequestHead) -> PublicResponse {
        guard head.method == .GET || head.method == .HEAD else { return Self.methodNotAllowed }
        // no-cache: a browser keeps its copy but asks (and gets a 304) each time, so a
        // server upgrade reaches every page at its next load.
        let caching = [("ETag", asset.entityTag), ("Cache-Control", "no-cache")]
        if asset.isMatched(byIfNoneMatch: head.headers["If-None-Match"]) {
            return PublicResponse(status: .notModified, headers: caching, body: [])
        }
        return PublicResponse(
            status: .ok,
            headers: [
                ("Content-Type", asset.contentType), ("Content-Length", String(asset.bytes.count)),
                ("X-Content-Type-Options", "nosniff"),
            ] + caching,
            body: asset.bytes)
    }

    private static let methodNotAllowed = PublicResponse.text(
        .methodNotAllowed, "Method not allowed: use GET.\n", headers: [("Allow", "GET, HEAD")])
}

/// `GET /demo/token?name=…` (demo mode only): a connection token for whatever name the
/// visitor typed, so the demo page can use chat and cursors, which need an identity. That
/// is why demo mode is for trying Snorky out, never for a server whose identities matter.
struct DemoTokens {
    /// Seconds a demo token stays valid; the page asks for a new one at each connection.
    static let lifetime = 3600.0
    static let maxNameLength = 40

    let tokens: ConnectionTokens?

    func respond(uri: String) -> PublicResponse {
        guard let tokens else {
            return .json(.serviceUnavailable, ["error": "Demo tokens need a token secret"])
        }
        let name = (ConnectionIdentity.queryParameter("name", in: uri) ?? "").trimmingSpaces()
        guard Self.isAcceptable(name) else {
            return .json(
                .badRequest,
                ["error": .string("name must be 1 to \(Self.maxNameLength) characters without control characters")])
        }
        let token = tokens.make(subject: name, lifetime: Self.lifetime)
        return .json(.ok, ["token": .string(token), "identity": .string(name)])
    }

    static func isAcceptable(_ name: String) -> Bool {
        !name.isEmpty && name.count <= maxNameLength
            && !name.unicodeScalars.contains { $0.properties.generalCategory == .control }
    }
}

extension String {
    fileprivate func trimmingSpaces() -> String {
        String(drop(while: { $0 == " " }).reversed().drop(while: { $0 == " " }).reversed())
    }
}
