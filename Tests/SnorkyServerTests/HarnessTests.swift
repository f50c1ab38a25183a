// Tests of the test harness itself (Sources/SnorkyTesting), against tiny NIO servers
// defined here and against /bin/sh, so that they need no Snorky server.

import NIOCore
import NIOHTTP1
import NIOPosix
import NIOWebSocket
import Synchronization
import Testing

import SnorkyTesting

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

// MARK: - WebSocketTestClient

@Suite("Harness: WebSocketTestClient")
struct WebSocketTestClientTests {
    @Test func textAndBinaryRoundTrip() async throws {
        try await withEchoServer { server in
            let client = try await WebSocketTestClient.connect(host: "127.0.0.1", port: server.port)
            try await client.send(text: "hello")
            #expect(try await client.nextText() == "hello")
            try await client.send(binary: [0, 1, 255])
            #expect(try await client.next() == .binary([0, 1, 255]))
            // The echo server closes with 1002 on an unmasked frame, so these echoes also
            // show that the client masks what it sends.
        }
    }

    @Test func framesArriveInOrder() async throws {
        try await withEchoServer { server in
            let client = try await WebSocketTestClient.connect(host: "127.0.0.1", port: server.port)
            try await client.send(text: "flood:200")
            for index in 0..<200 {
                #expect(try await client.nextText() == "m\(index)")
            }
        }
    }

    @Test func queryAndHeadersReachTheServer() async throws {
        try await withEchoServer { server in
            // The server greets right behind its 101, which also checks that bytes sharing a
            // read with the upgrade response are not lost.
            let client = try await WebSocketTestClient.connect(
                host: "127.0.0.1", port: server.port, query: "token=abc", headers: [("X-Greet", "hi")])
            #expect(try await client.nextText() == "uri=/ws?token=abc greet=hi")
        }
    }

    @Test func closeRightBehindTheUpgradeIsRead() async throws {
        // The 101, a close frame and the end of the stream arrive together: the close frame
        // must still be read, not lost in the switch from HTTP to WebSocket.
        try await withEchoServer { server in
            for _ in 0..<20 {
                let client = try await WebSocketTestClient.connect(
                    host: "127.0.0.1", port: server.port, headers: [("X-Close-At-Once", "4003")])
                #expect(try await client.next() == .close(code: 4003, reason: "full"))
                try await client.waitForDisconnect()
            }
        }
    }

    @Test func socketBufferAndSegmentSizesAreSetBeforeConnecting() async throws {
        try await withEchoServer { server in
            let small = try await WebSocketTestClient.connect(
                host: "127.0.0.1", port: server.port, receiveBufferSize: 4096, maximumSegmentSize: 536)
            let normal = try await WebSocketTestClient.connect(host: "127.0.0.1", port: server.port)
            let smallBuffer = try await small.receiveBufferSize()
            // Linux doubles the value it is given, for its own bookkeeping.
            #expect(smallBuffer <= 2 * 4096)
            #expect(try await normal.receiveBufferSize() > smallBuffer)
            // Announced in the SYN, so both ends use it (less the TCP options' bytes).
            #expect(try await small.maximumSegmentSize() <= 536)
            #expect(try await normal.maximumSegmentSize() > 536)
            // 100 KB through the small segments, in order.
            try await small.send(text: "flood-large:100")
            for index in 0..<100 {
                let text = try await small.nextText()
                if !text.hasPrefix("\(index):") {
                    Issue.record("message \(index) out of order: \(text.prefix(20))")
                    return
                }
            }
        }
    }

    @Test func rawInboundReceivesTheBytesInsteadOfFrames() async throws {
        try await withEchoServer { server in
            let received = ReceivedBytes()
            let client = try await WebSocketTestClient.connect(
                host: "127.0.0.1", port: server.port, rawInbound: { received.append($0) })
            try await client.send(text: "flood:3")
            try await client.send(text: "close:1000")
            // Three unmasked text frames (FIN + opcode 1, length, "mN"), then the close frame.
            let expected: [UInt8] = [0x81, 2, 0x6D, 0x30, 0x81, 2, 0x6D, 0x31, 0x81, 2, 0x6D, 0x32, 0x88, 5, 0x03, 0xE8]
                + Array("bye".utf8)
            try await eventually(timeout: .seconds(15), "the raw bytes arrive") { received.bytes.count >= expected.count }
            #expect(received.bytes == expected)
            // No frame was decoded, so the close was not answered and nothing is queued.
            try await client.expectNothing(for: .milliseconds(50))
            await client.abort()
        }
    }

    @Test func fragmentedServerMessagesAreReassembled() async throws {
        try await withEchoServer { server in
            let client = try await WebSocketTestClient.connect(host: "127.0.0.1", port: server.port)
            try await client.send(text: "fragment:one two three")
            #expect(try await client.nextText() == "one two three")
        }
    }

    @Test func clientCanSendFragments() async throws {
        try await withEchoServer { server in
            let client = try await WebSocketTestClient.connect(host: "127.0.0.1", port: server.port)
            try await client.send(frame: .text, fin: false, payload: Array("hel".utf8))
            try await client.send(frame: .continuation, fin: false, payload: Array("lo ".utf8))
            try await client.send(frame: .continuation, fin: true, payload: Array("world".utf8))
            #expect(try await client.nextText() == "hello world")
        }
    }

    @Test func rawTextSendsBytesAsGiven() async throws {
        try await withEchoServer { server in
            let client = try await WebSocketTestClient.connect(host: "127.0.0.1", port: server.port)
            try await client.send(rawText: [0x61, 0xFF, 0xFE])
            // The server echoes text that is not UTF-8 back as binary.
            #expect(try await client.next() == .binary([0x61, 0xFF, 0xFE]))
        }
    }

    @Test func unmaskedFrameCanBeSent() async throws {
        try await withEchoServer { server in
            let client = try await WebSocketTestClient.connect(host: "127.0.0.1", port: server.port)
            try await client.send(frame: .text, masked: false, payload: Array("x".utf8))
            #expect(try await client.expectClose() == 1002)
        }
    }

    @Test func pingGetsPong() async throws {
        try await withEchoServer { server in
            let client = try await WebSocketTestClient.connect(host: "127.0.0.1", port: server.port)
            try await client.ping()
            #expect(try await client.next() == .pong)
        }
    }

    @Test func serverPingsAreAnsweredAutomatically() async throws {
        try await withEchoServer { server in
            let client = try await WebSocketTestClient.connect(host: "127.0.0.1", port: server.port)
            try await client.send(text: "ping")
            #expect(try await client.nextText() == "got pong:p")
        }
    }

    @Test func serverCloseIsReportedWithItsCode() async throws {
        try await withEchoServer { server in
            let client = try await WebSocketTestClient.connect(host: "127.0.0.1", port: server.port)
            try await client.send(text: "close:1008")
            #expect(try await client.next() == .close(code: 1008, reason: "bye"))
            // The client echoed the close; the server then closes TCP.
            try await client.waitForDisconnect()
            #expect(!client.isConnected)
            await #expect(throws: WebSocketTestClientError.connectionClosed) { try await client.next() }
        }
    }

    @Test func clientInitiatedClose() async throws {
        try await withEchoServer { server in
            let client = try await WebSocketTestClient.connect(host: "127.0.0.1", port: server.port)
            try await client.close(code: 4001)
            #expect(try await client.expectClose() == 4001)
            try await client.waitForDisconnect()
        }
    }

    @Test func expectCloseCanSkipMessages() async throws {
        try await withEchoServer { server in
            let client = try await WebSocketTestClient.connect(host: "127.0.0.1", port: server.port)
            try await client.send(text: "flood:3")
            try await client.send(text: "close:1009")
            #expect(try await client.expectClose(ignoringOtherEvents: true) == 1009)
        }
    }

    @Test func expectCloseFailsOnOtherEvents() async throws {
        try await withEchoServer { server in
            let client = try await WebSocketTestClient.connect(host: "127.0.0.1", port: server.port)
            try await client.send(text: "hello")
            await #expect(throws: WebSocketTestClientError.unexpectedEvent(expected: "a close frame", got: .text("hello"))) {
                try await client.expectClose()
            }
        }
    }

    @Test func droppedConnectionEndsTheStream() async throws {
        try await withEchoServer { server in
            let client = try await WebSocketTestClient.connect(host: "127.0.0.1", port: server.port)
            try await client.send(text: "hello")
            try await client.send(text: "drop")
            // Frames received before the drop stay readable.
            #expect(try await client.nextText() == "hello")
            await #expect(throws: WebSocketTestClientError.connectionClosed) { try await client.expectClose() }
        }
    }

    @Test func nextTextRejectsOtherEvents() async throws {
        try await withEchoServer { server in
            let client = try await WebSocketTestClient.connect(host: "127.0.0.1", port: server.port)
            try await client.send(binary: [1])
            await #expect(throws: WebSocketTestClientError.unexpectedEvent(expected: "a text frame", got: .binary([1]))) {
                try await client.nextText()
            }
        }
    }

    @Test func nextTimesOut() async throws {
        try await withEchoServer { server in
            let client = try await WebSocketTestClient.connect(host: "127.0.0.1", port: server.port)
            let start = ContinuousClock.now
            await #expect(throws: WebSocketTestClientError.timedOut(waitingFor: "a frame from the server", after: .milliseconds(100))) {
                try await client.next(timeout: .milliseconds(100))
            }
            #expect(ContinuousClock.now - start < .seconds(2))
            // A frame arriving after a timeout is not lost.
            try await client.send(text: "late")
            #expect(try await client.nextText() == "late")
        }
    }

    @Test func expectNothing() async throws {
        try await withEchoServer { server in
            let client = try await WebSocketTestClient.connect(host: "127.0.0.1", port: server.port)
            try await client.expectNothing(for: .milliseconds(50))
            try await client.send(text: "surprise")
            await #expect(throws: WebSocketTestClientError.self) { try await client.expectNothing(for: .seconds(2)) }
        }
    }

    @Test func serverProtocolViolationsFailTheNextRead() async throws {
        try await withEchoServer { server in
            let masked = try await WebSocketTestClient.connect(host: "127.0.0.1", port: server.port)
            try await masked.send(text: "send-masked")
            await #expect(throws: WebSocketTestClientError.protocolViolation("the server sent a masked frame")) {
                try await masked.next()
            }

            let invalid = try await WebSocketTestClient.connect(host: "127.0.0.1", port: server.port)
            try await invalid.send(text: "send-invalid-utf8")
            await #expect(throws: WebSocketTestClientError.protocolViolation("a text message is not valid UTF-8")) {
                try await invalid.next()
            }
        }
    }

    @Test func rejectedUpgradeReportsTheStatus() async throws {
        try await withEchoServer { server in
            await #expect(throws: WebSocketTestClientError.upgradeRejected(status: 403, body: "forbidden: /forbidden")) {
                try await WebSocketTestClient.connect(host: "127.0.0.1", port: server.port, path: "/forbidden")
            }
        }
    }

    @Test func refusedConnectionIsAnError() async throws {
        let holder = try RefusingPort()
        defer { holder.close() }
        let port = holder.port
        let error = await #expect(throws: WebSocketTestClientError.self) {
            try await WebSocketTestClient.connect(host: "127.0.0.1", port: port)
        }
        guard case .connectionFailed(_, let failedPort, _) = error else {
            Issue.record("expected connectionFailed, got \(String(describing: error))")
            return
        }
        #expect(failedPort == port)
    }

    @Test func pauseReadingBacksUpTheServer() async throws {
        try await withEchoServer { server in
            let client = try await WebSocketTestClient.connect(host: "127.0.0.1", port: server.port)
            try await client.pauseReading()
            // 20 MB is far more than socket buffers hold, so the server stays unwritable
            // for as long as the client does not read.
            let count = 20_000
            try await client.send(text: "flood-large:\(count)")
            try await eventually(timeout: .seconds(15)) { server.stats.becameUnwritable }
            try await Task.sleep(for: .milliseconds(200))  // negative check: still backed up
            #expect(!server.stats.writable)

            try await client.resumeReading()
            for index in 0..<count {
                let text = try await client.nextText()
                if !text.hasPrefix("\(index):") {
                    Issue.record("message \(index) out of order: \(text.prefix(20))")
                    return
                }
            }
            try await eventually(timeout: .seconds(15)) { server.stats.writable }
        }
    }
}

// MARK: - HTTPTestClient

@Suite("Harness: HTTPTestClient")
struct HTTPTestClientTests {
    @Test func getAndPost() async throws {
        try await withEchoServer { server in
            let get = try await HTTPTestClient.get(host: "127.0.0.1", port: server.port, path: "/health?x=1")
            #expect(get.status == 200)
            #expect(get.body == "GET /health?x=1 ")
            #expect(get.headers.contains { $0.0.lowercased() == "x-echo-length" && $0.1 == "0" })

            let post = try await HTTPTestClient.request(
                host: "127.0.0.1", port: server.port, path: "/notify", headers: [("Content-Type", "application/json")],
                body: #"{"a":1}"#)
            #expect(post.status == 200)
            #expect(post.body == #"POST /notify {"a":1}"#)

            let bytes = try await HTTPTestClient.request(
                method: "PUT", host: "127.0.0.1", port: server.port, path: "/b", body: [0x68, 0x69])
            #expect(bytes.body == "PUT /b hi")
        }
    }

    @Test func errorStatusIsReturnedNotThrown() async throws {
        try await withEchoServer { server in
            let response = try await HTTPTestClient.get(host: "127.0.0.1", port: server.port, path: "/forbidden")
            #expect(response.status == 403)
            #expect(response.body == "forbidden: /forbidden")
        }
    }

    @Test func timeout() async throws {
        try await withEchoServer { server in
            await #expect(throws: HTTPTestClientError.timedOut(method: "GET", path: "/slow", after: .milliseconds(200))) {
                try await HTTPTestClient.get(host: "127.0.0.1", port: server.port, path: "/slow", timeout: .milliseconds(200))
            }
        }
    }

    @Test func refusedConnection() async throws {
        let holder = try RefusingPort()
        defer { holder.close() }
        let port = holder.port
        let error = await #expect(throws: HTTPTestClientError.self) {
            try await HTTPTestClient.get(host: "127.0.0.1", port: port, path: "/")
        }
        guard case .connectionFailed = error else {
            Issue.record("expected connectionFailed, got \(String(describing: error))")
            return
        }
    }
}

// MARK: - ProcessHandle

@Suite("Harness: ProcessHandle")
struct ProcessHandleTests {
    @Test func waitsForALineAndTerminates() async throws {
        let process = try await ProcessHandle.launch("/bin/sh", arguments: ["-c", "echo hi; sleep 30"])
        #expect(try await process.waitForLine(containing: "hi") == "hi")
        #expect(process.isRunning)
        #expect(process.pid > 0)
        let exit = await process.terminate()
        #expect(exit == .signaled(SIGTERM))
        // The whole group is gone, `sleep` included.
        try await eventually(timeout: .seconds(15)) { kill(-process.pid, 0) != 0 }
    }

    @Test func capturesStdoutAndStderrAndExitCode() async throws {
        let process = try await ProcessHandle.launch("/bin/sh", arguments: ["-c", "echo out; echo err >&2; exit 3"])
        try await process.waitForLine { $0 == "err" }
        #expect(try await process.waitForExit() == 3)
        #expect(process.exit == .exited(3))
        try await eventually(timeout: .seconds(15)) { process.outputLines.count == 2 }
        #expect(Set(process.outputLines) == [OutputLine(stream: .stdout, text: "out"), OutputLine(stream: .stderr, text: "err")])
    }

    @Test func linesAreConsumedInOrder() async throws {
        let process = try await ProcessHandle.launch("/bin/sh", arguments: ["-c", "echo x1; echo y; echo x2; printf x3"])
        #expect(try await process.waitForLine(containing: "x") == "x1")
        #expect(try await process.waitForLine(containing: "x") == "x2")
        // A last line without a newline is delivered when the pipe closes.
        #expect(try await process.waitForLine(containing: "x") == "x3")
    }

    @Test func timeoutShowsRecentOutput() async throws {
        let process = try await ProcessHandle.launch("/bin/sh", arguments: ["-c", "echo one; echo two >&2; sleep 30"])
        try await process.waitForLine(containing: "two")
        let error = await #expect(throws: ProcessHandleError.self) {
            try await process.waitForLine(containing: "never", timeout: .milliseconds(200))
        }
        guard case .timedOut(_, _, let recent) = error else {
            Issue.record("expected timedOut, got \(String(describing: error))")
            return
        }
        // Lines from stdout and stderr are ordered within each stream only.
        #expect(Set(recent) == ["[stdout] one", "[stderr] two"])
        let description = error?.description ?? ""
        #expect(description.contains("last 2 lines of output:\n"))
        #expect(description.contains("[stdout] one") && description.contains("[stderr] two"))
    }

    @Test func endOfOutputFailsAWaitAtOnce() async throws {
        let process = try await ProcessHandle.launch("/bin/sh", arguments: ["-c", "echo bye; exit 2"])
        let start = ContinuousClock.now
        let error = await #expect(throws: ProcessHandleError.self) {
            try await process.waitForLine(containing: "never", timeout: .seconds(20))
        }
        #expect(ContinuousClock.now - start < .seconds(10))
        guard case .outputEnded(_, let exit, let recent) = error else {
            Issue.record("expected outputEnded, got \(String(describing: error))")
            return
        }
        #expect(exit == .exited(2))
        #expect(recent == ["[stdout] bye"])
    }

    @Test func signalsReachTheChild() async throws {
        // SIGHUP is delivered even though the test runner's threads may block it.
        let script = "trap 'echo got-hup' HUP; echo ready; while true; do sleep 0.05; done"
        let process = try await ProcessHandle.launch("/bin/sh", arguments: ["-c", script])
        try await process.waitForLine(containing: "ready")
        try process.signal(SIGHUP)
        try await process.waitForLine(containing: "got-hup")
        try process.kill()
        #expect(try await process.waitForExit() == 128 + SIGKILL)
        #expect(throws: ProcessHandleError.self) { try process.signal(SIGTERM) }
        await process.terminate()
    }

    @Test func environmentAndWorkingDirectory() async throws {
        let process = try await ProcessHandle.launch(
            "sh", arguments: ["-c", "echo \"foo=$FOO\"; pwd"], addingEnvironment: ["FOO": "bar"], workingDirectory: "/tmp")
        #expect(try await process.waitForLine(containing: "foo=") == "foo=bar")
        #expect(try await process.waitForLine { $0.hasPrefix("/") } == "/tmp")
    }

    @Test func childInheritsOnlyStandardDescriptors() async throws {
        #if os(Linux)
        // `ls` lists the descriptors of the shell ($$), not its own.
        let process = try await ProcessHandle.launch("/bin/sh", arguments: ["-c", "ls /proc/$$/fd"])
        var descriptors: [String] = []
        for await line in process.lines { descriptors.append(line.text) }
        #expect(descriptors.sorted() == ["0", "1", "2"])
        #endif
    }

    @Test func linesAsAsyncSequence() async throws {
        let process = try await ProcessHandle.launch("/bin/sh", arguments: ["-c", "echo a; echo b"])
        var texts: [String] = []
        for await line in process.lines { texts.append(line.text) }
        #expect(texts == ["a", "b"])
    }

    @Test func launchFailureIsAnError() async throws {
        await #expect(throws: ProcessHandleError.self) {
            try await ProcessHandle.launch("/nonexistent/snorky-harness-test")
        }
    }

    @Test func snorkyExecutableIsFoundNextToTheTests() throws {
        #expect(!SnorkyExecutable.productDirectories.isEmpty)
        let path = try SnorkyExecutable.path
        #expect(path.hasSuffix("/snorky"))
        #expect(throws: ProcessHandleError.self) { try SnorkyExecutable.locate(named: "no-such-product") }
    }
}

// MARK: - eventually and TimedQueue

@Suite("Harness: waiting primitives")
struct WaitingPrimitiveTests {
    @Test func eventuallyPollsUntilTrue() async throws {
        let counter = Mutex(0)
        try await eventually(timeout: .seconds(15), poll: .milliseconds(1)) {
            counter.withLock { $0 += 1; return $0 >= 5 }
        }
        #expect(counter.withLock { $0 } == 5)
        await #expect(throws: EventuallyTimedOut.self) {
            try await eventually(timeout: .milliseconds(50)) { false }
        }
    }

    @Test func queueHandsElementsToWaitersInOrder() async throws {
        let queue = TimedQueue<Int>()
        async let first = queue.next(deadline: .after(.seconds(5)))
        try await Task.sleep(for: .milliseconds(20))
        queue.append(1)
        queue.append(2)
        #expect(try await first == 1)
        #expect(try await queue.next(deadline: .after(.seconds(5))) == 2)
        queue.append(3)
        queue.finish()
        #expect(try await queue.next(deadline: .after(.seconds(5))) == 3)
        await #expect(throws: TimedQueue<Int>.Failure.self) { try await queue.next(deadline: .after(.seconds(5))) }
        try await queue.waitForFinish(deadline: .after(.seconds(5)))
    }

    @Test func cancelledWaitLeavesElementsQueued() async throws {
        let queue = TimedQueue<Int>()
        let waiter = Task { try await queue.next(deadline: .after(.seconds(30))) }
        try await Task.sleep(for: .milliseconds(20))
        waiter.cancel()
        await #expect(throws: CancellationError.self) { try await waiter.value }
        queue.append(7)
        #expect(try await queue.next(deadline: .after(.seconds(1))) == 7)
    }
}

// MARK: - A tiny WebSocket + HTTP server for the client tests

/// What the echo server observed, for flow-control assertions; shared by the test and the
/// server's handlers.
final class EchoServerStats: Sendable {
    private struct State {
        var writable = true
        var becameUnwritable = false
    }
    private let state = Mutex(State())

    var writable: Bool { state.withLock { $0.writable } }
    var becameUnwritable: Bool { state.withLock { $0.becameUnwritable } }

    func writabilityChanged(to writable: Bool) {
        state.withLock {
            $0.writable = writable
            if !writable { $0.becameUnwritable = true }
        }
    }
}

/// Bytes a test client handed to its `rawInbound` closure, in order.
final class ReceivedBytes: Sendable {
    private let state = Mutex<[UInt8]>([])

    var bytes: [UInt8] { state.withLock { $0 } }

    func append(_ bytes: UnsafeRawBufferPointer) {
        state.withLock { $0 += bytes }
    }
}

struct EchoServer: Sendable {
    var port: Int
    var stats: EchoServerStats
}

/// Runs `body` with a server on 127.0.0.1 and a free port that:
/// - upgrades `/ws` to WebSocket, echoing text (binary if not UTF-8) and binary, reassembling
///   fragments, and obeying commands: `flood:N`, `flood-large:N`, `fragment:TEXT`,
///   `close:CODE`, `ping`, `drop`, `send-masked`, `send-invalid-utf8`; it greets with
///   `uri=... greet=...` if the upgrade request has `X-Greet`, and closes with 1002 on an
///   unmasked client frame;
/// - answers other HTTP requests with `METHOD URI BODY`, `/forbidden` with 403 and `/slow`
///   never.
func withEchoServer(_ body: (EchoServer) async throws -> Void) async throws {
    let stats = EchoServerStats()
    let channel = try await ServerBootstrap(group: MultiThreadedEventLoopGroup.singleton)
        .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
        .childChannelInitializer { channel in
            channel.eventLoop.makeCompletedFuture {
                // NIO's typed upgrade handler does not pass on the request of a declined
                // upgrade, so the refusal is remembered here and answered by EchoHTTPHandler.
                let refusedURI = NIOLoopBoundBox<String?>(nil, eventLoop: channel.eventLoop)
                let upgrader = NIOTypedWebSocketServerUpgrader<Void>(
                    shouldUpgrade: { channel, head in
                        let isWebSocketPath = head.uri == "/ws" || head.uri.hasPrefix("/ws?")
                        if !isWebSocketPath { refusedURI.value = head.uri }
                        return channel.eventLoop.makeSucceededFuture(isWebSocketPath ? HTTPHeaders() : nil)
                    },
                    upgradePipelineHandler: { channel, head in
                        channel.eventLoop.makeCompletedFuture {
                            let greeting = head.headers.first(name: "X-Greet").map { "uri=\(head.uri) greet=\($0)" }
                            let closeAtOnce = head.headers.first(name: "X-Close-At-Once").flatMap { UInt16($0) }
                            try channel.pipeline.syncOperations.addHandler(
                                EchoWebSocketHandler(greeting: greeting, closeAtOnce: closeAtOnce, stats: stats))
                        }
                    }
                )
                let configuration = NIOTypedHTTPServerUpgradeConfiguration<Void>(
                    upgraders: [upgrader],
                    notUpgradingCompletionHandler: { channel in
                        channel.eventLoop.makeCompletedFuture {
                            try channel.pipeline.syncOperations.addHandler(EchoHTTPHandler(refusedURI: refusedURI.value))
                        }
                    }
                )
                _ = try channel.pipeline.syncOperations.configureUpgradableHTTPServerPipeline(
                    configuration: .init(upgradeConfiguration: configuration))
            }
        }
        .bind(host: "127.0.0.1", port: 0)
        .get()
    do {
        try await body(EchoServer(port: channel.localAddress!.port!, stats: stats))
    } catch {
        try? await channel.close()
        throw error
    }
    try await channel.close()
}

/// A port nothing listens on: bound once, then released.
/// A loopback port held by a bound socket that never listens: connecting to it is refused,
/// and no test running in parallel can start a server on it meanwhile (a port that was
/// merely free a moment ago could be taken).
struct RefusingPort {
    let descriptor: Int32
    let port: Int

    init() throws {
        descriptor = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        try #require(descriptor >= 0)
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_addr.s_addr = inet_addr("127.0.0.1")
        var length = socklen_t(MemoryLayout<sockaddr_in>.size)
        let descriptor = self.descriptor
        let bound = withUnsafeMutablePointer(to: &address) { pointer in
            pointer.withMemoryRebound(to: sockaddr.self, capacity: 1) { generic in
                bind(descriptor, generic, length) == 0 && getsockname(descriptor, generic, &length) == 0
            }
        }
        try #require(bound)
        port = Int(UInt16(bigEndian: address.sin_port))
    }

    func close() {
        _ = Glibc.close(descriptor)
    }
}

private final class EchoWebSocketHandler: ChannelInboundHandler {
    typealias InboundIn = WebSocketFrame
    typealias OutboundOut = WebSocketFrame

    private let greeting: String?
    private let closeAtOnce: UInt16?
    private let stats: EchoServerStats
    private var fragments: (opcode: WebSocketOpcode, data: ByteBuffer)?
    private var closing = false

    init(greeting: String?, closeAtOnce: UInt16?, stats: EchoServerStats) {
        self.greeting = greeting
        self.closeAtOnce = closeAtOnce
        self.stats = stats
    }

    func handlerAdded(context: ChannelHandlerContext) {
        if let greeting { sendText(greeting, context: context) }
        if let closeAtOnce {
            // Refuse right behind the 101, as a server at its connection limit does: the
            // close frame and the end of the stream (FIN) follow the upgrade response at once.
            close(code: closeAtOnce, reason: "full", context: context)
            context.close(mode: .output, promise: nil)
        }
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        let frame = unwrapInboundIn(data)
        guard frame.maskKey != nil else { return close(code: 1002, context: context) }
        switch frame.opcode {
        case .text, .binary:
            if frame.fin { handleMessage(frame.opcode, frame.unmaskedData, context: context) }
            else { fragments = (frame.opcode, frame.unmaskedData) }
        case .continuation:
            guard var message = fragments else { return close(code: 1002, context: context) }
            var data = frame.unmaskedData
            message.data.writeBuffer(&data)
            fragments = frame.fin ? nil : message
            if frame.fin { handleMessage(message.opcode, message.data, context: context) }
        case .ping:
            write(WebSocketFrame(fin: true, opcode: .pong, data: frame.unmaskedData), context: context)
        case .pong:
            sendText("got pong:\(String(buffer: frame.unmaskedData))", context: context)
        case .connectionClose:
            if closing {
                context.close(promise: nil)
            } else {
                // Echo the client's close, then close TCP as a server should.
                let echo = WebSocketFrame(fin: true, opcode: .connectionClose, data: frame.unmaskedData)
                context.writeAndFlush(wrapOutboundOut(echo), promise: nil)
                context.close(promise: nil)
            }
        default:
            close(code: 1002, context: context)
        }
    }

    func channelWritabilityChanged(context: ChannelHandlerContext) {
        stats.writabilityChanged(to: context.channel.isWritable)
    }

    private func handleMessage(_ opcode: WebSocketOpcode, _ data: ByteBuffer, context: ChannelHandlerContext) {
        guard opcode == .text, let text = String(validating: data.readableBytesView, as: UTF8.self) else {
            return write(WebSocketFrame(fin: true, opcode: .binary, data: data), context: context)
        }
        let (command, argument) = text.split(separator: ":", maxSplits: 1).map(String.init).splitCommand
        switch command {
        case "flood":
            for index in 0..<(Int(argument) ?? 0) { sendText("m\(index)", flush: false, context: context) }
            context.flush()
        case "flood-large":
            let padding = String(repeating: "x", count: 1000)
            for index in 0..<(Int(argument) ?? 0) { sendText("\(index):\(padding)", flush: false, context: context) }
            context.flush()
        case "fragment":
            let bytes = Array(argument.utf8)
            let third = bytes.count / 3
            let parts = [bytes[..<third], bytes[third..<(2 * third)], bytes[(2 * third)...]]
            for (index, part) in parts.enumerated() {
                let frame = WebSocketFrame(
                    fin: index == 2, opcode: index == 0 ? .text : .continuation, data: ByteBuffer(bytes: part))
                write(frame, context: context)
            }
        case "close":
            close(code: UInt16(argument) ?? 1000, reason: "bye", context: context)
        case "ping":
            write(WebSocketFrame(fin: true, opcode: .ping, data: ByteBuffer(string: "p")), context: context)
        case "drop":
            context.close(promise: nil)
        case "send-masked":
            write(WebSocketFrame(fin: true, opcode: .text, maskKey: .random(), data: ByteBuffer(string: "m")), context: context)
        case "send-invalid-utf8":
            write(WebSocketFrame(fin: true, opcode: .text, data: ByteBuffer(bytes: [0xC3, 0x28])), context: context)
        default:
            sendText(text, context: context)
        }
    }

    private func sendText(_ text: String, flush: Bool = true, context: ChannelHandlerContext) {
        let frame = WebSocketFrame(fin: true, opcode: .text, data: ByteBuffer(string: text))
        if flush { write(frame, context: context) } else { context.write(wrapOutboundOut(frame), promise: nil) }
    }

    private func write(_ frame: WebSocketFrame, context: ChannelHandlerContext) {
        context.writeAndFlush(wrapOutboundOut(frame), promise: nil)
    }

    private func close(code: UInt16, reason: String = "", context: ChannelHandlerContext) {
        guard !closing else { return }
        closing = true
        var data = ByteBuffer()
        data.writeInteger(code)
        data.writeString(reason)
        write(WebSocketFrame(fin: true, opcode: .connectionClose, data: data), context: context)
    }
}

extension Array where Element == String {
    fileprivate var splitCommand: (String, String) { (first ?? "", count > 1 ? self[1] : "") }
}

private final class EchoHTTPHandler: ChannelInboundHandler {
    typealias InboundIn = HTTPServerRequestPart
    typealias OutboundOut = HTTPServerResponsePart

    private let refusedURI: String?
    private var head: HTTPRequestHead?
    private var body = ByteBuffer()

    init(refusedURI: String?) {
        self.refusedURI = refusedURI
    }

    func handlerAdded(context: ChannelHandlerContext) {
        if let refusedURI { respond(status: .forbidden, text: "forbidden: \(refusedURI)", context: context) }
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        switch unwrapInboundIn(data) {
        case .head(let head):
            self.head = head
            body.clear()
        case .body(var chunk):
            body.writeBuffer(&chunk)
        case .end:
            guard let head else { return }
            if head.uri == "/slow" { return }
            let forbidden = head.uri == "/forbidden"
            let text = forbidden ? "forbidden: \(head.uri)" : "\(head.method.rawValue) \(head.uri) \(String(buffer: body))"
            respond(status: forbidden ? .forbidden : .ok, text: text, context: context)
        }
    }

    private func respond(status: HTTPResponseStatus, text: String, context: ChannelHandlerContext) {
        var headers = HTTPHeaders()
        headers.add(name: "Content-Length", value: String(text.utf8.count))
        headers.add(name: "X-Echo-Length", value: String(body.readableBytes))
        let response = HTTPResponseHead(version: .http1_1, status: status, headers: headers)
        context.write(wrapOutboundOut(.head(response)), promise: nil)
        context.write(wrapOutboundOut(.body(.byteBuffer(ByteBuffer(string: text)))), promise: nil)
        context.writeAndFlush(wrapOutboundOut(.end(nil)), promise: nil)
    }
}
