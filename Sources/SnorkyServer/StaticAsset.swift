/// A file the public port serves from memory: the JavaScript client and the demo page,
/// compiled into the binary (see `ClientAssets`), with an ETag so browsers revalidate
/// cheaply instead of downloading it again.
struct StaticAsset: Sendable {
    let bytes: [UInt8]
    let contentType: String
    /// A strong validator derived from the bytes: it changes whenever the content does.
    let entityTag: String

    init(_ text: String, contentType: String) {
        bytes = Array(text.utf8)
        self.contentType = contentType
        entityTag = "\"" + Self.fingerprint(bytes) + "\""
    }

    /// Whether an `If-None-Match` header (its values as received) names this asset's
    /// current version, so a 304 can be answered instead of the body.
    func isMatched(byIfNoneMatch values: [String]) -> Bool {
        for value in values {
            for candidate in value.split(separator: ",") {
                var tag = candidate.trimmingCharacters(in: " \t")
                if tag == "*" { return true }
                // Weak comparison (RFC 9110 section 13.1.2): a `W/` prefix does not matter.
                if tag.hasPrefix("W/") { tag.removeFirst(2) }
                if tag == entityTag { return true }
            }
        }
        return false
    }

    /// 64-bit FNV-1a of `bytes`, twice with different offsets, as 32 hex digits. An ETag
    /// needs to change with the content, not to resist forgery.
    private static func fingerprint(_ bytes: [UInt8]) -> String {
        func fnv1a(_ offset: UInt64) -> UInt64 {
            var hash = offset
            for byte in bytes {
                hash ^= UInt64(byte)
                hash &*= 0x0000_0100_0000_01B3
            }
            return hash
        }
        let hex = [fnv1a(0xCBF2_9CE4_8422_2325), fnv1a(0x84222325_CBF29CE4)].map { value in
            let digits = String(value, radix: 16)
            return String(repeating: "0", count: 16 - digits.count) + digits
        }
        return hex.joined()
    }
}

extension StaticAsset {
    static let javaScriptType = "text/javascript; charset=utf-8"

    /// `/snorky.js`: the client as a plain script (`window.Snorky`) or CommonJS module.
    static let client = StaticAsset(ClientAssets.snorkyJS, contentType: javaScriptType)
    /// `/snorky.mjs`: the client as an ES module.
    static let clientModule = StaticAsset(ClientAssets.snorkyModule, contentType: javaScriptType)
    /// `/` with `--demo`: chat with presence, a pubsub feed and shared cursors.
    static let demoPage = StaticAsset(ClientAssets.demoPage, contentType: "text/html; charset=utf-8")
}

extension Substring {
    fileprivate func trimmingCharacters(in characters: String) -> String {
        String(drop(while: { characters.contains($0) }).reversed().drop(while: { characters.contains($0) }).reversed())
    }
}
