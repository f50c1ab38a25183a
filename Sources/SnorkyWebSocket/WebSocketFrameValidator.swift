package import NIOCore
package import NIOWebSocket

/// Rejects frames a client must not send (RFC 6455 section 5): unmasked frames, RSV bits
/// without a negotiated extension, and reserved opcodes. Sits right after NIO's frame
/// decoder, before fragments are reassembled (the reassembled frame carries no mask).
package final class WebSocketFrameValidator: ChannelInboundHandler, RemovableChannelHandler {
    package typealias InboundIn = WebSocketFrame
    package typealias InboundOut = WebSocketFrame

    package struct Violation: Error, CustomStringConvertible {
        package let description: String
    }

    private var failed = false

    package init() {}

    package func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        guard !failed else { return }
        let frame = unwrapInboundIn(data)
        let violation: String? =
            if frame.maskKey == nil {
                "unmasked client frame"
            } else if frame.rsv1 || frame.rsv2 || frame.rsv3 {
                "RSV bit set without an extension"
            } else if !Self.knownOpcodes.contains(frame.opcode) {
                "reserved opcode"
            } else {
                nil
            }
        if let violation {
            failed = true
            context.fireErrorCaught(Violation(description: violation))
            return
        }
        context.fireChannelRead(data)
    }

    private static let knownOpcodes: [WebSocketOpcode] = [.continuation, .text, .binary, .connectionClose, .ping, .pong]
}

/// The handlers every client connection's frames pass through after NIO's frame decoder
/// (which the upgrader installs with the size limit): the RFC 6455 checks NIO does not make,
/// then the reassembly of fragmented messages, at most `maxFrameSize` bytes in all.
package enum InboundWebSocketPipeline {
    package static func addHandlers(to pipeline: ChannelPipeline.SynchronousOperations, maxFrameSize: Int) throws {
        // NIO's decoder accepts what RFC 6455 forbids from a client (unmasked frames, RSV
        // bits, reserved opcodes); refuse those before reassembly.
        try pipeline.addHandler(WebSocketFrameValidator())
        try pipeline.addHandler(
            NIOWebSocketFrameAggregator(
                minNonFinalFragmentSize: 0,
                maxAccumulatedFrameCount: 1024,
                maxAccumulatedFrameSize: maxFrameSize
            )
        )
    }
}
