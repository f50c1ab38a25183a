import Synchronization

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// The status line on stderr while a run is going. On a terminal it rewrites one line; into
/// a log it prints at most one line per second.
final class ProgressLine: Sendable {
    private let enabled: Bool
    private let isTerminal: Bool
    private let lastLineNanos = Mutex<UInt64>(0)

    init(enabled: Bool) {
        self.enabled = enabled
        self.isTerminal = isatty(2) != 0
    }

    func update(_ text: String) {
        guard enabled else { return }
        if isTerminal {
            write("\r\u{1B}[K" + text)
            return
        }
        let now = monotonicNanos()
        let due = lastLineNanos.withLock { last in
            guard now - last >= 1_000_000_000 else { return false }
            last = now
            return true
        }
        if due { write(text + "\n") }
    }

    /// A line that stays (phase changes, warnings).
    func note(_ text: String) {
        guard enabled else { return }
        write((isTerminal ? "\r\u{1B}[K" : "") + text + "\n")
    }

    func finish() {
        if enabled, isTerminal { write("\r\u{1B}[K") }
    }

    private func write(_ text: String) {
        var bytes = Array(text.utf8)
        bytes.withUnsafeMutableBytes { buffer in
            var offset = 0
            while offset < buffer.count {
                let written = Glibc.write(2, buffer.baseAddress! + offset, buffer.count - offset)
                if written <= 0 { return }
                offset += written
            }
        }
    }
}

/// "12,345" — thousands separators make the table readable at a glance.
func grouped(_ value: Int) -> String {
    let digits = String(value.magnitude)
    var result = ""
    for (index, character) in digits.enumerated() {
        if index > 0, (digits.count - index) % 3 == 0 { result.append(",") }
        result.append(character)
    }
    return value < 0 ? "-" + result : result
}

func grouped(_ value: Double) -> String {
    grouped(Int(value.rounded()))
}

/// Fixed decimals without Foundation's locale-dependent formatting.
func fixed(_ value: Double, _ decimals: Int) -> String {
    guard value.isFinite else { return "n/a" }
    var scale = 1.0
    for _ in 0..<decimals { scale *= 10 }
    let scaled = (value * scale).rounded()
    let negative = scaled < 0
    let magnitude = Int(abs(scaled))
    let whole = magnitude / Int(scale)
    let fraction = magnitude % Int(scale)
    var text = String(whole)
    if decimals > 0 {
        let fractionText = String(fraction)
        text += "." + String(repeating: "0", count: decimals - fractionText.count) + fractionText
    }
    return negative ? "-" + text : text
}

func formatBytes(_ bytes: Double) -> String {
    let magnitude = abs(bytes)
    let kibi = 1024.0
    if magnitude >= kibi * kibi * kibi { return fixed(bytes / (kibi * kibi * kibi), 2) + " GiB" }
    if magnitude >= kibi * kibi { return fixed(bytes / (kibi * kibi), 1) + " MiB" }
    if magnitude >= kibi { return fixed(bytes / kibi, 1) + " KiB" }
    return fixed(bytes, 0) + " B"
}

func formatMicros(_ micros: Double) -> String {
    if micros >= 1_000_000 { return fixed(micros / 1_000_000, 2) + " s" }
    if micros >= 1000 { return fixed(micros / 1000, 2) + " ms" }
    return fixed(micros, 0) + " µs"
}
