import Snorky
import SnorkyServer
import SnorkyServices
import SnorkyTesting
import Testing

/// A probe that reports the caller's identity.
@RPCService
final class WhoAmI: Sendable {
    let name = "whoami"
    @Command func identity(client: Client) -> String? { client.identity }
}

@Suite("Connection tokens over a real WebSocket upgrade (PROTOCOL.md section 4)")
struct TokenAuthTests {
    static let tokens = ConnectionTokens(secret: "live-secret")

    func start(tokens: ConnectionTokens?) async throws -> LiveWorker {
        try await LiveWorker.start(configure: { $0.tokens = tokens }) { node in
            var options = BuiltinServiceOptions()
            options.tokens = tokens
            BuiltinServices.register(on: node, options: options)
            node.register(WhoAmI())
        }
    }

    @Test("?token= gives the connection the token's identity; no token means anonymous")
    func identityFromURL() async throws {
        let worker = try await start(tokens: Self.tokens)
        let token = Self.tokens.make(subject: "alice", lifetime: 600)
        let alice = try await WebSocketTestClient.connect(host: "127.0.0.1", port: worker.port, query: "token=\(token)")
        #expect(try await alice.request("whoami", "identity", [:], callId: 1) == rpcResponse("whoami", callId: 1, data: "alice"))
        let anonymous = try await worker.connect()
        #expect(try await anonymous.request("whoami", "identity", [:], callId: 2) == rpcResponse("whoami", callId: 2, data: nil))
        await worker.shutdown()
    }

    @Test("an invalid or expired token refuses the upgrade with 401 and the reason")
    func badTokensRefused() async throws {
        let worker = try await start(tokens: Self.tokens)
        let expired = Self.tokens.make(subject: "alice", lifetime: 1, now: .init(timeIntervalSinceNow: -100))
        for (query, reason) in [("token=garbage", "Invalid token"), ("token=\(expired)", "Token expired")] {
            await #expect {
                _ = try await WebSocketTestClient.connect(host: "127.0.0.1", port: worker.port, query: query)
            } throws: { error in
                guard case WebSocketTestClientError.upgradeRejected(let status, let body) = error else { return false }
                return status == 401 && body.contains(reason)
            }
        }
        await worker.shutdown()
    }

    @Test("a token on a server with no token secret is refused, not ignored")
    func tokenWithoutSecret() async throws {
        let worker = try await start(tokens: nil)
        await #expect {
            _ = try await WebSocketTestClient.connect(host: "127.0.0.1", port: worker.port, query: "token=abc")
        } throws: { error in
            guard case WebSocketTestClientError.upgradeRejected(let status, _) = error else { return false }
            return status == 401
        }
        await worker.shutdown()
    }
}
