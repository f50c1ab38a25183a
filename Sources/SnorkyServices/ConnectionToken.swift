import Crypto
public import Foundation
import Snorky

/// Connection tokens: HS256 JSON Web Tokens signed with the server's token secret. The
/// identity of a connection is the token's `sub`; `exp` and `nbf` are honoured.
public struct ConnectionTokens: Sendable {
    public enum Failure: Error, Sendable, Equatable {
        /// Malformed, wrong algorithm, bad signature, or no `sub`.
        case invalid
        case expired

        /// The exact RPC error strings of PROTOCOL.md section 4.
        public var message: String {
            switch self {
            case .invalid: "Invalid token"
            case .expired: "Token expired"
            }
        }
    }

    /// Kept as bytes: `SymmetricKey` is not `Sendable`; a key is cheap to build per use.
    private let secret: [UInt8]

    public init(secret: String) {
        self.secret = Array(secret.utf8)
    }

    private var key: SymmetricKey { SymmetricKey(data: secret) }

    /// Verifies `token` and returns its identity (`sub`).
    public func verify(_ token: String, now: Date = Date()) throws(Failure) -> String {
        let parts = token.split(separator: ".", omittingEmptySubsequences: false)
        guard parts.count == 3,
            let headerBytes = Base64URL.decode(parts[0]),
            let payloadBytes = Base64URL.decode(parts[1]),
            let signature = Base64URL.decode(parts[2])
        else { throw .invalid }
        // Only HS256: `alg: none` or an asymmetric algorithm must never be accepted.
        guard let header = try? JSON.parse(headerBytes), header["alg"] == "HS256" else { throw .invalid }
        let signedPart = Data(token.utf8.prefix(parts[0].utf8.count + 1 + parts[1].utf8.count))
        // isValidAuthenticationCode compares in constant time.
        guard HMAC<SHA256>.isValidAuthenticationCode(signature, authenticating: signedPart, using: key) else {
            throw .invalid
        }
        guard let payload = try? JSON.parse(payloadBytes), case .string(let subject)? = payload["sub"], !subject.isEmpty
        else { throw .invalid }
        let seconds = now.timeIntervalSince1970
        if let expiry = payload["exp"] {
            guard let expiry = expiry.doubleValue else { throw .invalid }
            if seconds >= expiry { throw .expired }
        }
        if let notBefore = payload["nbf"] {
            guard let notBefore = notBefore.doubleValue, seconds >= notBefore else { throw .invalid }
        }
        return subject
    }

    /// Makes a token for `subject`, valid for `lifetime` seconds (nil: no expiry).
    public func make(subject: String, lifetime: TimeInterval?, now: Date = Date()) -> String {
        let issued = Int64(now.timeIntervalSince1970)
        var payload: JSONObject = ["sub": .string(subject), "iat": .int(issued)]
        if let lifetime { payload["exp"] = .int(issued + Int64(lifetime)) }
        let header: JSON = ["alg": "HS256", "typ": "JWT"]
        let signingInput =
            Base64URL.encode(header.encodedBytes()) + "." + Base64URL.encode(JSON.object(payload).encodedBytes())
        let signature = HMAC<SHA256>.authenticationCode(for: Data(signingInput.utf8), using: key)
        return signingInput + "." + Base64URL.encode(Array(signature))
    }
}

/// Base64 with the URL alphabet and no padding (RFC 7515 section 2).
enum Base64URL {
    static func encode(_ bytes: [UInt8]) -> String {
        Data(bytes).base64EncodedString()
            .replacingOccurrences(of: "+", with: "-")
            .replacingOccurrences(of: "/", with: "_")
            .replacingOccurrences(of: "=", with: "")
    }

    static func decode(_ text: Substring) -> [UInt8]? {
        guard text.allSatisfy({ $0.isASCII && ($0.isLetter || $0.isNumber || $0 == "-" || $0 == "_") }) else {
            return nil
        }
        var base64 = text.replacingOccurrences(of: "-", with: "+").replacingOccurrences(of: "_", with: "/")
        while base64.count % 4 != 0 { base64 += "=" }
        return Data(base64Encoded: base64).map { Array($0) }
    }
}
