#if canImport(Glibc)
import Glibc
#endif
import CSnorkyShims
import Logging

extension Supervisor {
    /// SIGTERM/SIGINT → `shutdown()` (one arriving during a drain kills every child at once),
    /// SIGHUP → `reload()`. For the executable; call it once, before `run()`. The handler
    /// is process-wide and keeps this supervisor alive for the life of the process.
    public func installSignalHandlers() {
        guard claimSignalInstallation() else { return }
        let signals: [Int32] = [SIGTERM, SIGINT, SIGHUP]
        let fd = signals.withUnsafeBufferPointer { snorky_install_signal_pipe($0.baseAddress, Int32($0.count)) }
        guard fd >= 0 else {
            logger.error("cannot install signal handlers", metadata: ["error": "\(errnoDescription(errno))"])
            return
        }
        do {
            try DetachedThread.start(name: "snorky-signals") { [self] in
                // libdispatch and the cooperative pool block these signals in their
                // threads; this one accepts them, so they are always delivered somewhere.
                var accepted = sigset_t()
                sigemptyset(&accepted)
                for signal in signals { sigaddset(&accepted, signal) }
                pthread_sigmask(SIG_UNBLOCK, &accepted, nil)
                var byte: UInt8 = 0
                while true {
                    let count = read(fd, &byte, 1)
                    if count == 1 {
                        handleSignal(Int32(byte))
                    } else if count == 0 || errno != EINTR {
                        return
                    }
                }
            }
        } catch {
            logger.error("cannot start the signal thread", metadata: ["error": "\(error)"])
        }
    }

    private func handleSignal(_ signal: Int32) {
        let metadata: Logger.Metadata = ["signal": "\(signalName(signal))"]
        switch signal {
        case SIGHUP:
            logger.info("reload requested by signal", metadata: metadata)
            Task { await self.reload() }
        default:
            logger.info("stop requested by signal", metadata: metadata)
            // Before run(), shutdown() makes run() return at once; after it, nothing to do.
            if !send(.stopSignal(signal)) {
                Task { await self.shutdown() }
            }
        }
    }
}
