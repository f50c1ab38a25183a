public import Snorky

/// The `auth` service: `authenticate(token)` gives the connection the token's identity, for
/// clients that cannot put the token in the WebSocket URL.
@RPCService
public final class AuthService: Sendable {
    public let name: String
    private let tokens: ConnectionTokens?

    /// - Parameter tokens: nil when no token secret is configured; every call then fails.
    public init(name: String = "auth", tokens: ConnectionTokens?) {
        self.name = name
        self.tokens = tokens
    }

    @Command func authenticate(token: String, client: Client) throws -> JSON {
        guard let tokens else { throw RPCError("Authentication is not configured on this server") }
        do {
            let identity = try tokens.verify(token)
            client.setIdentity(identity)
            return ["identity": .string(identity)]
        } catch {
            throw RPCError(error.message)
        }
    }
}
