import ArgumentParser

@main
struct SnorkyCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "snorky",
        abstract: "Snorky: a real-time WebSocket server with pubsub, chat, cursors and datasync.",
        subcommands: [ServeCommand.self, TokenCommand.self, WorkerCommand.self],
        defaultSubcommand: ServeCommand.self
    )
}
