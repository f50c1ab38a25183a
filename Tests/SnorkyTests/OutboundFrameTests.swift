import NIOCore
import Testing
@testable import Snorky

/// RFC 6455 section 5.2: a 7-bit length up to 125, then 126 and a 16-bit length, then 127
/// and a 64-bit length, all in network byte order, before an unmasked payload.
@Suite struct OutboundFrameTests {
    @Test(arguments: [
        (0, [0x81, 0x00]),
        (125, [0x81, 125]),
        (126, [0x81, 126, 0x00, 126]),
        (65_535, [0x81, 126, 0xFF, 0xFF]),
        (65_536, [0x81, 127, 0, 0, 0, 0, 0, 0x01, 0x00, 0x00]),
    ] as [(Int, [UInt8])])
    func headerCarriesTheLengthInTheShortestForm(length: Int, header: [UInt8]) {
        let payload = [UInt8](repeating: UInt8(ascii: "x"), count: length)
        let frame = OutboundFrame(payload: payload)
        let wire = Array(frame.wire.readableBytesView)
        #expect(Array(wire.prefix(header.count)) == header)
        #expect(wire.count == header.count + length)
        #expect(Array(frame.payload.readableBytesView) == payload)
    }
}
