import ArgumentParser
import Snorky

@main
struct SnorkyCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "snorky",
        abstract: "Snorky: a real-time WebSocket server with pubsub, chat, cursors and datasync.",
        version: SnorkyVersion.current,
        subcommands: [ServeCommand.self, TokenCommand.self, WorkerCommand.self],
        defaultSubcommand: ServeCommand.self
    )
}
