import SnorkyServices

/// Reads the identity of a WebSocket connection from the `token` query parameter of its
/// URL (PROTOCOL.md section 4). No token: an anonymous connection. A bad token: the
/// upgrade is refused with 401, so a misconfigured client fails loudly.
struct ConnectionIdentity {
    enum Outcome: Equatable {
        case anonymous
        case identified(String)
        case refused(String)
    }

    let tokens: ConnectionTokens?

    func resolve(uri: String) -> Outcome {
        guard let token = Self.queryParameter("token", in: uri) else { return .anonymous }
        guard let tokens else { return .refused("Authentication is not configured on this server") }
        do {
            return .identified(try tokens.verify(token))
        } catch {
            return .refused(error.message)
        }
    }

    /// The percent-decoded value of a query parameter; nil when absent.
    static func queryParameter(_ name: String, in uri: String) -> String? {
        guard let query = uri.split(separator: "?", maxSplits: 1).dropFirst().first else { return nil }
        for pair in query.split(separator: "&") {
            let parts = pair.split(separator: "=", maxSplits: 1, omittingEmptySubsequences: false)
            guard parts.first.map(String.init) == name else { continue }
            return percentDecode(parts.count > 1 ? parts[1] : "")
        }
        return nil
    }

    private static func percentDecode(_ text: Substring) -> String {
        var bytes: [UInt8] = []
        var iterator = Array(text.utf8).makeIterator()
        while let byte = iterator.next() {
            if byte == UInt8(ascii: "%"), let high = iterator.next(), let low = iterator.next(),
                let value = UInt8(String(decoding: [high, low], as: UTF8.self), radix: 16)
            {
                bytes.append(value)
            } else if byte == UInt8(ascii: "+") {
                bytes.append(UInt8(ascii: " "))
            } else {
                bytes.append(byte)
            }
        }
        return String(decoding: bytes, as: UTF8.self)
    }
}
