import NIOCore
import Snorky
import SnorkyServer
import Testing

@Suite("UnflushedFrames: frames coalesced between flushes")
struct UnflushedFramesTests {
    @Test("nothing written, nothing to send")
    func empty() {
        var frames = UnflushedFrames()
        #expect(frames.isEmpty)
        #expect(frames.take() == nil)
    }

    @Test("one frame is handed on as the publication's own buffer, not copied")
    func singleFrameIsShared() {
        let frame = OutboundFrame(payload: Array("hello".utf8))
        var frames = UnflushedFrames()
        frames.append(frame.wire)
        #expect(!frames.isEmpty)
        let taken = frames.take()
        #expect(taken == .one(frame.wire))
        if case .one(let buffer) = taken { #expect(sharesStorage(buffer, frame.wire)) }
        #expect(frames.take() == nil)
    }

    @Test("several frames are handed on in order, each still the publication's own buffer")
    func severalFramesAreShared() {
        let texts = (0..<50).map { "message \($0) " + String(repeating: "x", count: $0 * 10) }
        let wires = texts.map { OutboundFrame(payload: Array($0.utf8)).wire }
        var frames = UnflushedFrames()
        for wire in wires { frames.append(wire) }
        let taken = frames.take()
        #expect(taken == .many(wires))
        if case .many(let buffers) = taken {
            #expect(zip(buffers, wires).allSatisfy { sharesStorage($0, $1) })
        }
        #expect(frames.take() == nil)

        // Reused after a take: starts afresh.
        frames.append(wires[1])
        #expect(frames.take() == .one(wires[1]))
    }

    private func sharesStorage(_ a: ByteBuffer, _ b: ByteBuffer) -> Bool {
        a.withUnsafeReadableBytes { a in b.withUnsafeReadableBytes { b in a.baseAddress == b.baseAddress } }
    }
}
