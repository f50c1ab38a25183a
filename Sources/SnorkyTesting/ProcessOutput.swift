import NIOCore
import NIOPosix
import Synchronization

/// One line a child process wrote, without its line terminator.
public struct OutputLine: Sendable, Hashable, CustomStringConvertible {
    public enum Stream: Sendable, Hashable { case stdout, stderr }
    public var stream: Stream
    public var text: String

    public init(stream: Stream, text: String) {
        self.stream = stream
        self.text = text
    }

    public var description: String { "[\(stream)] \(text)" }
}

/// Collects a child's stdout and stderr, line by line, into three views: a bounded history
/// (for error messages), a queue that `waitForLine` consumes, and an `AsyncStream` for tests
/// that iterate. Lines are read by NIO pipe channels as they are written, so waits are
/// event-driven.
final class ProcessOutput: Sendable {
    /// A chatty server must not grow a test's memory without bound; failures show the tail.
    static let historyLimit = 10_000

    let queue = TimedQueue<OutputLine>()
    let lines: AsyncStream<OutputLine>
    private let linesContinuation: AsyncStream<OutputLine>.Continuation
    private let echoPrefix: String?
    private struct State {
        var history: [OutputLine] = []
        var openStreams = 2
    }
    private let state = Mutex(State())

    /// - Parameter echoPrefix: when set, every line is also printed to the test's stderr with
    ///   this prefix (see `ProcessHandle.launch`).
    init(echoPrefix: String?) {
        (lines, linesContinuation) = AsyncStream.makeStream(bufferingPolicy: .unbounded)
        self.echoPrefix = echoPrefix
    }

    /// Starts reading both pipes; takes ownership of the descriptors.
    func startReading(stdout: CInt, stderr: CInt, group: any EventLoopGroup) async throws {
        for (fd, stream) in [(stdout, OutputLine.Stream.stdout), (stderr, .stderr)] {
            _ = try await NIOPipeBootstrap(group: group)
                .channelInitializer { channel in
                    channel.eventLoop.makeCompletedFuture {
                        try channel.pipeline.syncOperations.addHandler(LineReader(stream: stream, output: self))
                    }
                }
                .takingOwnershipOfDescriptor(input: fd)
                .get()
        }
    }

    func append(_ line: OutputLine) {
        state.withLock { state in
            state.history.append(line)
            if state.history.count > Self.historyLimit {
                state.history.removeFirst(state.history.count - Self.historyLimit)
            }
        }
        if let echoPrefix { printToStderr("\(echoPrefix)\(line.text)\n") }
        queue.append(line)
        linesContinuation.yield(line)
    }

    func streamEnded() {
        let allEnded = state.withLock { state in
            state.openStreams -= 1
            return state.openStreams == 0
        }
        if allEnded {
            queue.finish()
            linesContinuation.finish()
        }
    }

    var history: [OutputLine] { state.withLock { $0.history } }

    func tail(_ count: Int) -> [OutputLine] { state.withLock { Array($0.history.suffix(count)) } }
}

/// Splits one pipe's bytes into lines (LF or CRLF); a last line without a newline is
/// delivered when the pipe closes.
private final class LineReader: ChannelInboundHandler {
    typealias InboundIn = ByteBuffer

    private let stream: OutputLine.Stream
    private let output: ProcessOutput
    private var pending: [UInt8] = []

    init(stream: OutputLine.Stream, output: ProcessOutput) {
        self.stream = stream
        self.output = output
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        let buffer = unwrapInboundIn(data)
        for byte in buffer.readableBytesView {
            if byte == UInt8(ascii: "\n") {
                emit()
            } else {
                pending.append(byte)
            }
        }
    }

    func channelInactive(context: ChannelHandlerContext) {
        if !pending.isEmpty { emit() }
        output.streamEnded()
        context.fireChannelInactive()
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        context.close(promise: nil)
    }

    private func emit() {
        if pending.last == UInt8(ascii: "\r") { pending.removeLast() }
        output.append(OutputLine(stream: stream, text: String(decoding: pending, as: UTF8.self)))
        pending.removeAll(keepingCapacity: true)
    }
}
