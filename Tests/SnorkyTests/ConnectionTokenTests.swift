import Crypto
import Foundation
import Logging
import NIOCore
import Snorky
import SnorkyServices
import Testing

@Suite("Connection tokens (HS256 JWT) and the auth service")
struct ConnectionTokenTests {
    let tokens = ConnectionTokens(secret: "s3cret")
    let now = Date(timeIntervalSince1970: 1_800_000_000)

    @Test("a token made with the secret verifies to its sub")
    func roundTrip() throws {
        let token = tokens.make(subject: "alice", lifetime: 60, now: now)
        #expect(token.split(separator: ".").count == 3)
        #expect(try tokens.verify(token, now: now) == "alice")
        #expect(try tokens.verify(token, now: now.addingTimeInterval(59)) == "alice")
    }

    @Test("exp is honoured: Token expired at and after the expiry")
    func expiry() {
        let token = tokens.make(subject: "alice", lifetime: 60, now: now)
        #expect(throws: ConnectionTokens.Failure.expired) { try tokens.verify(token, now: now.addingTimeInterval(60)) }
        #expect(ConnectionTokens.Failure.expired.message == "Token expired")
    }

    @Test("a token without exp never expires")
    func noExpiry() throws {
        let token = tokens.make(subject: "bob", lifetime: nil, now: now)
        #expect(try tokens.verify(token, now: now.addingTimeInterval(10 * 365 * 86_400)) == "bob")
    }

    @Test("another secret, a changed payload, alg none, garbage: Invalid token")
    func invalid() {
        let token = tokens.make(subject: "alice", lifetime: 60, now: now)
        let parts = token.split(separator: ".").map(String.init)
        let otherSecret = ConnectionTokens(secret: "other").make(subject: "alice", lifetime: 60, now: now)
        let forgedPayload = Base64URLForTests.encode(#"{"sub":"mallory","exp":1900000000}"#)
        let noneHeader = Base64URLForTests.encode(#"{"alg":"none","typ":"JWT"}"#)
        let candidates = [
            otherSecret,
            parts[0] + "." + forgedPayload + "." + parts[2],
            noneHeader + "." + parts[1] + ".",
            noneHeader + "." + parts[1] + "." + parts[2],
            "not a token", "", "a.b", "a.b.c.d", parts[0] + "." + parts[1] + ".@@@",
        ]
        for candidate in candidates {
            #expect(throws: ConnectionTokens.Failure.invalid, "\(candidate)") {
                try tokens.verify(candidate, now: now)
            }
        }
        #expect(ConnectionTokens.Failure.invalid.message == "Invalid token")
    }

    @Test("a token signed correctly but without sub is invalid")
    func missingSubject() {
        let header = Base64URLForTests.encode(#"{"alg":"HS256","typ":"JWT"}"#)
        let payload = Base64URLForTests.encode(#"{"exp":1900000000}"#)
        let signed = Base64URLForTests.sign(header + "." + payload, secret: "s3cret")
        #expect(throws: ConnectionTokens.Failure.invalid) { try tokens.verify(signed, now: now) }
    }

    @Test("auth.authenticate sets the identity; bad and expired tokens fail with the exact strings")
    func authService() async throws {
        let node = Node(id: "auth", bus: InMemoryBus(), logger: Logger(label: "test"))
        node.register(AuthService(tokens: tokens))
        let (client, transport) = RecordingTransport.connect(to: node)
        let good = tokens.make(subject: "carol", lifetime: 600)
        client.didReceive(text: ByteBuffer(string: #"{"service":"auth","message":{"command":"authenticate","params":{"token":"\#(good)"},"callId":1}}"#))
        #expect(try await transport.next() == ["service": "auth", "message": ["type": "response", "callId": 1, "data": ["identity": "carol"]]])
        #expect(client.identity == "carol")

        client.didReceive(text: ByteBuffer(string: #"{"service":"auth","message":{"command":"authenticate","params":{"token":"junk"},"callId":2}}"#))
        #expect(try await transport.next() == ["service": "auth", "message": ["type": "error", "callId": 2, "message": "Invalid token"]])

        let expired = tokens.make(subject: "carol", lifetime: 1, now: Date().addingTimeInterval(-10))
        client.didReceive(text: ByteBuffer(string: #"{"service":"auth","message":{"command":"authenticate","params":{"token":"\#(expired)"},"callId":3}}"#))
        #expect(try await transport.next() == ["service": "auth", "message": ["type": "error", "callId": 3, "message": "Token expired"]])
        #expect(client.identity == "carol")
    }

    @Test("without a token secret, auth.authenticate says authentication is not configured")
    func unconfigured() async throws {
        let node = Node(id: "auth", bus: InMemoryBus(), logger: Logger(label: "test"))
        node.register(AuthService(tokens: nil))
        let (client, transport) = RecordingTransport.connect(to: node)
        client.didReceive(text: ByteBuffer(string: #"{"service":"auth","message":{"command":"authenticate","params":{"token":"x"},"callId":1}}"#))
        let reply = try await transport.next()
        #expect(reply["message"]?["message"] == "Authentication is not configured on this server")
        #expect(client.identity == nil)
    }
}

/// Independent base64url and signing helpers, so the tests do not trust the code under test.
enum Base64URLForTests {
    static func encode(_ text: String) -> String { encode(Array(text.utf8)) }

    static func encode(_ bytes: [UInt8]) -> String {
        Data(bytes).base64EncodedString()
            .replacingOccurrences(of: "+", with: "-").replacingOccurrences(of: "/", with: "_")
            .replacingOccurrences(of: "=", with: "")
    }

    static func sign(_ input: String, secret: String) -> String {
        let mac = HMAC<SHA256>.authenticationCode(for: Data(input.utf8), using: SymmetricKey(data: Data(secret.utf8)))
        return input + "." + encode(Array(mac))
    }
}
