import Dispatch

#if canImport(Glibc)
import Glibc
#endif

/// Waits for SIGTERM or SIGINT (the start of a graceful drain) and returns the signal.
enum TerminationSignal {
    static func wait() async -> Int32 {
        let signals: [Int32] = [SIGTERM, SIGINT]
        // Ignore the default action (exit) so the dispatch sources see the signals.
        for number in signals { signal(number, SIG_IGN) }
        let (stream, continuation) = AsyncStream<Int32>.makeStream()
        let sources = signals.map { number in
            let source = DispatchSource.makeSignalSource(signal: number, queue: .global())
            source.setEventHandler { continuation.yield(number) }
            source.resume()
            return source
        }
        defer {
            for source in sources { source.cancel() }
        }
        for await number in stream {
            return number
        }
        return SIGTERM
    }
}
