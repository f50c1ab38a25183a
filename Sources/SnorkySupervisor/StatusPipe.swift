#if canImport(Glibc)
import Glibc
#endif
import CSnorkyShims

/// The pipe a worker reports its state on: one byte `R` (accepting) or `S` (stopped
/// accepting, draining). The supervisor keeps the read end; the worker inherits the write
/// end.
struct StatusPipe {
    static let ready: UInt8 = UInt8(ascii: "R")
    static let draining: UInt8 = UInt8(ascii: "S")

    let readEnd: Int32
    let writeEnd: Int32

    /// Both ends close-on-exec: the write end reaches exactly one worker through the
    /// spawn's dup2, never another child started meanwhile.
    init() throws(SupervisorError) {
        var fds: [Int32] = [-1, -1]
        guard snorky_pipe_cloexec(&fds) == 0 else { throw .spawnFailed("status pipe", errno: errno) }
        readEnd = fds[0]
        writeEnd = fds[1]
    }

    /// Reads bytes on a thread of its own and reports each one, until the worker (and
    /// anything it passed the fd to) has closed the write end; then closes the read end.
    /// The worker's *exit* is detected separately (waitpid), so a grandchild holding the
    /// pipe open only delays the end of this thread, not supervision.
    func startReading(report: @escaping @Sendable (UInt8) -> Void) throws(SupervisorError) {
        let fd = readEnd
        try DetachedThread.start(name: "snorky-status") {
            var buffer = [UInt8](repeating: 0, count: 64)
            while true {
                let count = buffer.withUnsafeMutableBytes { read(fd, $0.baseAddress, $0.count) }
                if count > 0 {
                    for byte in buffer[0..<count] { report(byte) }
                } else if count == 0 || errno != EINTR {
                    break
                }
            }
            close(fd)
        }
    }
}
