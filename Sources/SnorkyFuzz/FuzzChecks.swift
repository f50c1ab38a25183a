import NIOCore
import NIOEmbedded
import NIOWebSocket
import SnorkyProtocol
import SnorkyWebSocket

/// What one fuzz input goes through, and the properties that must hold for it. A broken
/// property stops the program (`fatalError`), which libFuzzer reports as a crash and saves
/// the input for.
///
/// Each input is used three ways:
/// - as a text message: the JSON parser, the envelope and the RPC request decoders, with
///   the encoder's round trips;
/// - split at its first NUL byte (which no JSON text contains) into two JSON texts, whose
///   equality must agree with their canonical forms and hashes (canonical JSON names
///   channels on the bus);
/// - as the bytes a client sends after the upgrade: NIO's frame decoder, Snorky's frame
///   checks and reassembly, and what the connection handler does with each frame.
enum FuzzChecks {
    /// Smaller than the server's default (64 KiB) so inputs stay quick; the limit is
    /// enforced by the same code whatever its value.
    static let maxFrameSize = 16 * 1024

    static func run(_ input: UnsafeBufferPointer<UInt8>) {
        checkText(input)
        if let separator = input.firstIndex(of: 0) {
            checkEquality(input[..<separator], input[(separator + 1)...])
        }
        checkFrames(input)
    }

    // MARK: Text messages

    /// The path of a text message through `Node.receive`, and the encoder's promises.
    static func checkText(_ bytes: some Collection<UInt8>) {
        let value: JSON
        do {
            value = try JSON.parse(bytes)
        } catch {
            require((try? Envelope.decode(bytes)) == nil, "Envelope.decode accepted text JSON.parse refused")
            return
        }
        checkEncoding(value)
        guard let envelope = try? Envelope.decode(value) else { return }
        require(envelope == (try? Envelope.decode(bytes)), "Envelope.decode differs between bytes and their JSON")
        if case .success(let call) = RPCCall.decode(envelope.message) {
            require(RPCCall.decode(call.json) == .success(call), "an RPC request does not survive its own encoding")
        }
    }

    /// Compact and canonical encodings parse back to an equal value, and encoding is stable.
    static func checkEncoding(_ value: JSON) {
        let compact = value.encodedBytes()
        guard let reparsed = try? JSON.parse(compact) else {
            fail("the encoder wrote invalid JSON: \(String(decoding: compact, as: UTF8.self))")
        }
        require(reparsed == value, "compact encoding changed the value: \(String(decoding: compact, as: UTF8.self))")
        require(reparsed.encodedBytes() == compact, "encoding is not stable: \(String(decoding: compact, as: UTF8.self))")
        require(reparsed.hashValue == value.hashValue, "equal values hash differently")

        let canonical = value.canonicalString()
        guard let fromCanonical = try? JSON.parse(canonical) else { fail("the canonical form is invalid JSON: \(canonical)") }
        require(fromCanonical == value, "the canonical form changed the value: \(canonical)")
        require(fromCanonical.canonicalString() == canonical, "the canonical form is not stable: \(canonical)")
        require(canonical.utf8.allSatisfy { $0 < 0x80 }, "the canonical form is not ASCII: \(canonical)")
    }

    /// Two values are equal exactly when their canonical forms are, and equal values hash
    /// alike.
    static func checkEquality(_ first: some Collection<UInt8>, _ second: some Collection<UInt8>) {
        guard let a = try? JSON.parse(first), let b = try? JSON.parse(second) else { return }
        let sameCanonical = a.canonicalString() == b.canonicalString()
        require((a == b) == sameCanonical, "== says \(a == b) but the canonical forms say \(sameCanonical): \(a.canonicalString()) / \(b.canonicalString())")
        if a == b { require(a.hashValue == b.hashValue, "equal values hash differently: \(a.canonicalString())") }
    }

    // MARK: Frames

    /// Feeds the bytes to the inbound pipeline of a client connection.
    static func checkFrames(_ bytes: UnsafeBufferPointer<UInt8>) {
        let channel = EmbeddedChannel()
        do {
            let pipeline = channel.pipeline.syncOperations
            try pipeline.addHandler(ByteToMessageHandler(WebSocketFrameDecoder(maxFrameSize: maxFrameSize)))
            try InboundWebSocketPipeline.addHandlers(to: pipeline, maxFrameSize: maxFrameSize)
            try pipeline.addHandler(FrameSink())
        } catch {
            fail("cannot build the pipeline: \(error)")
        }
        // Errors are the point: they are what the server answers with a close code.
        _ = try? channel.writeInbound(channel.allocator.buffer(bytes: bytes))
        _ = try? channel.finish(acceptAlreadyClosed: true)
    }
}

/// The end of the fuzzed pipeline: does with each frame what `WebSocketConnectionHandler`
/// does, short of handing messages to a `Node` (whose tasks would make runs differ).
final class FrameSink: ChannelInboundHandler {
    typealias InboundIn = WebSocketFrame

    /// After a protocol error the server closes; later frames are ignored, as there.
    private var failed = false

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        guard !failed else { return }
        let frame = unwrapInboundIn(data)
        switch frame.opcode {
        case .text:
            let payload = frame.unmaskedData
            require(payload.readableBytes <= FuzzChecks.maxFrameSize, "a message over the size limit was reassembled")
            guard payload.withUnsafeReadableBytes({ UTF8Validation.isValid($0) }) else { return }  // close 1007
            FuzzChecks.checkText(payload.readableBytesView)
        case .ping:
            _ = WebSocketWire.pongFrame(payload: frame.unmaskedData, allocator: context.channel.allocator)
        case .connectionClose:
            var payload = frame.unmaskedData
            let code = payload.readInteger(as: UInt16.self) ?? 1000
            let answer = WebSocketWire.isValidPeerCloseCode(code) ? code : CloseCode.protocolError
            _ = WebSocketWire.closeFrame(code: answer, reason: "", allocator: context.channel.allocator)
            failed = true
        default:
            break  // binary (close 1003), pong
        }
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        failed = true
    }
}

func require(_ condition: Bool, _ message: @autoclosure () -> String) {
    if !condition { fail(message()) }
}

func fail(_ message: String) -> Never {
    fatalError("SnorkyFuzz: \(message)")
}
