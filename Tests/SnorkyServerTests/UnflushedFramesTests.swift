import NIOCore
import Snorky
import SnorkyServer
import Testing

@Suite("UnflushedFrames: frames coalesced between flushes")
struct UnflushedFramesTests {
    private let allocator = ByteBufferAllocator()

    @Test("nothing written, nothing to send")
    func empty() {
        var frames = UnflushedFrames()
        #expect(frames.take() == nil)
    }

    @Test("one frame is handed on as the publication's own buffer, not copied")
    func singleFrameIsShared() {
        let frame = OutboundFrame(payload: Array("hello".utf8))
        var frames = UnflushedFrames()
        frames.append(frame.wire, allocator: allocator)
        let taken = frames.take()
        #expect(taken == frame.wire)
        taken?.withUnsafeReadableBytes { taken in
            frame.wire.withUnsafeReadableBytes { original in
                #expect(taken.baseAddress == original.baseAddress)
            }
        }
        #expect(frames.take() == nil)
    }

    @Test("several frames become one buffer holding them back to back, in order")
    func severalFramesAreConcatenated() {
        let texts = (0..<50).map { "message \($0) " + String(repeating: "x", count: $0 * 10) }
        let wires = texts.map { OutboundFrame(payload: Array($0.utf8)).wire }
        var frames = UnflushedFrames()
        for wire in wires { frames.append(wire, allocator: allocator) }
        var expected = ByteBuffer()
        for var wire in wires { expected.writeBuffer(&wire) }
        #expect(frames.take() == expected)
        #expect(frames.take() == nil)

        // Reused after a take: starts afresh.
        frames.append(wires[1], allocator: allocator)
        #expect(frames.take() == wires[1])
    }
}
