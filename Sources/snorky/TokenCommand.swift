import ArgumentParser
import Foundation
import SnorkyServices

/// `snorky token --sub alice --ttl 3600`: prints a connection token for development.
struct TokenCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "token",
        abstract: "Print an HS256 connection token (JWT) for an identity, signed with the token secret."
    )

    @OptionGroup var options: ServerOptions

    @Option(help: "The identity (JWT sub).")
    var sub: String

    @Option(help: "Lifetime in seconds (0: no expiry).")
    var ttl: Int = 3600

    func run() throws {
        let configuration = try options.load()
        guard let secret = configuration.tokenSecret else {
            throw ValidationError("no token secret: pass --token-secret, set SNORKY_TOKEN_SECRET or token_secret in the config file")
        }
        guard !sub.isEmpty else { throw ValidationError("--sub must not be empty") }
        guard ttl >= 0 else { throw ValidationError("--ttl must be 0 or more") }
        print(ConnectionTokens(secret: secret).make(subject: sub, lifetime: ttl == 0 ? nil : TimeInterval(ttl)))
    }
}
