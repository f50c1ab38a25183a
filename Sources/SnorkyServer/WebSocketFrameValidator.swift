import NIOCore
import NIOWebSocket

/// Rejects frames a client must not send (RFC 6455 section 5): unmasked frames, RSV bits
/// without a negotiated extension, and reserved opcodes. Sits right after NIO's frame
/// decoder, before fragments are reassembled (the reassembled frame carries no mask).
final class WebSocketFrameValidator: ChannelInboundHandler, RemovableChannelHandler {
    typealias InboundIn = WebSocketFrame
    typealias InboundOut = WebSocketFrame

    struct Violation: Error, CustomStringConvertible {
        let description: String
    }

    private var failed = false

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
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
