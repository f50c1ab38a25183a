#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// The body of every publication the bench sends.
///
/// Snorky wraps a message in a JSON envelope and Nchan delivers it raw, so a subscriber finds
/// the body by its marker instead of parsing JSON. The fields are fixed-width lowercase hex,
/// which needs no JSON escaping and decodes in a few instructions:
///
///     sb1:<kind 1><channel 8><sequence 12><sent at 16>xxxx… (padded to the payload size)
///
/// `sent at` is CLOCK_MONOTONIC in nanoseconds, which every process on the machine shares,
/// so a helper process can measure latency of messages its parent stamped.
enum BenchPayload {
    static let marker: [UInt8] = Array("sb1:".utf8)
    /// Bytes before the padding; smaller payload sizes are rounded up to this.
    static let headerLength = 4 + 1 + 8 + 12 + 16
    static let padding = UInt8(ascii: "x")

    enum Kind: UInt8, Sendable {
        /// Counted, timed and checked for order.
        case measured = 0x6D  // "m"
        /// Sent before measuring to prove every subscription is live; never counted.
        case warmup = 0x77  // "w"
    }

    struct Fields: Equatable, Sendable {
        var kind: Kind
        var channel: UInt32
        var sequence: UInt64
        var sentNanos: UInt64
    }

    /// The length of the body for a requested payload size.
    static func length(forPayloadSize size: Int) -> Int {
        max(size, headerLength)
    }

    /// Writes the body, `length(forPayloadSize:)` bytes, into `destination`.
    static func write(_ fields: Fields, payloadSize: Int, into destination: UnsafeMutableRawBufferPointer) -> Int {
        let total = length(forPayloadSize: payloadSize)
        precondition(destination.count >= total)
        var offset = 0
        for byte in marker {
            destination[offset] = byte
            offset += 1
        }
        destination[offset] = fields.kind.rawValue
        offset += 1
        writeHex(UInt64(fields.channel), digits: 8, into: destination, at: &offset)
        writeHex(fields.sequence, digits: 12, into: destination, at: &offset)
        writeHex(fields.sentNanos, digits: 16, into: destination, at: &offset)
        while offset < total {
            destination[offset] = padding
            offset += 1
        }
        return total
    }

    /// The body as an array; used where speed does not matter (tests, warmups).
    static func bytes(_ fields: Fields, payloadSize: Int) -> [UInt8] {
        [UInt8](unsafeUninitializedCapacity: length(forPayloadSize: payloadSize)) { buffer, count in
            count = write(fields, payloadSize: payloadSize, into: UnsafeMutableRawBufferPointer(buffer))
        }
    }

    /// Finds the first well-formed body in a received frame.
    static func find(in bytes: UnsafeRawBufferPointer) -> Fields? {
        guard let base = bytes.baseAddress, bytes.count >= headerLength else { return nil }
        var start = 0
        let lastStart = bytes.count - headerLength
        while start <= lastStart {
            // memchr for the marker's first byte skips the envelope quickly.
            guard let hit = memchr(base + start, Int32(marker[0]), lastStart - start + 1) else { return nil }
            let index = base.distance(to: UnsafeRawPointer(hit))
            if bytes[index + 1] == marker[1], bytes[index + 2] == marker[2], bytes[index + 3] == marker[3],
               let fields = decode(bytes, at: index + 4)
            {
                return fields
            }
            start = index + 1
        }
        return nil
    }

    private static func decode(_ bytes: UnsafeRawBufferPointer, at position: Int) -> Fields? {
        guard let kind = Kind(rawValue: bytes[position]) else { return nil }
        var offset = position + 1
        guard let channel = readHex(bytes, digits: 8, at: &offset),
              let sequence = readHex(bytes, digits: 12, at: &offset),
              let sent = readHex(bytes, digits: 16, at: &offset)
        else { return nil }
        return Fields(kind: kind, channel: UInt32(truncatingIfNeeded: channel), sequence: sequence, sentNanos: sent)
    }

    private static let hexDigits: [UInt8] = Array("0123456789abcdef".utf8)

    private static func writeHex(_ value: UInt64, digits: Int, into buffer: UnsafeMutableRawBufferPointer, at offset: inout Int) {
        var shift = (digits - 1) * 4
        for _ in 0..<digits {
            buffer[offset] = hexDigits[Int((value >> UInt64(shift)) & 0xF)]
            offset += 1
            shift -= 4
        }
    }

    private static func readHex(_ bytes: UnsafeRawBufferPointer, digits: Int, at offset: inout Int) -> UInt64? {
        var value: UInt64 = 0
        for _ in 0..<digits {
            let byte = bytes[offset]
            let digit: UInt8
            switch byte {
            case UInt8(ascii: "0")...UInt8(ascii: "9"): digit = byte &- UInt8(ascii: "0")
            case UInt8(ascii: "a")...UInt8(ascii: "f"): digit = byte &- UInt8(ascii: "a") &+ 10
            default: return nil
            }
            value = value << 4 | UInt64(digit)
            offset += 1
        }
        return value
    }
}

/// CLOCK_MONOTONIC in nanoseconds: shared by every process on the machine, unlike a
/// process-relative clock, so parent and helper processes can compare stamps.
@inline(__always)
func monotonicNanos() -> UInt64 {
    var spec = timespec()
    clock_gettime(CLOCK_MONOTONIC, &spec)
    return UInt64(spec.tv_sec) &* 1_000_000_000 &+ UInt64(spec.tv_nsec)
}

extension UnsafeRawBufferPointer {
    /// Whether `needle` occurs in these bytes. Used on the few control replies (subscribe
    /// and publish responses), never on deliveries.
    func containsBytes(_ needle: [UInt8]) -> Bool {
        guard let base = baseAddress, !needle.isEmpty, count >= needle.count else { return false }
        var start = 0
        let lastStart = count - needle.count
        while start <= lastStart {
            guard let hit = memchr(base + start, Int32(needle[0]), lastStart - start + 1) else { return false }
            let index = base.distance(to: UnsafeRawPointer(hit))
            if memcmp(base + index, needle, needle.count) == 0 { return true }
            start = index + 1
        }
        return false
    }
}
