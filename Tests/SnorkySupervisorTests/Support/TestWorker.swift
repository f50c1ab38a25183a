#if canImport(Glibc)
import Glibc
#endif
@testable import SnorkySupervisor

/// A stand-in worker in Python that keeps the supervisor contract: it accepts on every
/// inherited listener, answers each connection with one line describing itself, reports
/// `R` when accepting, and on SIGTERM reports `S`, stops accepting and exits 0.
///
/// Reply: `pid slot SNORKY_LISTEN_FDS SNORKY_STATUS_FD SNORKY_SUPERVISOR_PID SNORKY_REDIS
/// TEST_MARK listenerIndex`. argv[1] picks a mode: `serve`, `crash` (exit 3 at once),
/// `never-ready` (serve but never report R) or `stubborn` (report S on SIGTERM but go on
/// serving). A file named by TEST_MODE_FILE, when it exists, overrides argv[1], so a test
/// can change what the next worker does. With TEST_EVENTS set, it appends "<pid> TERM"
/// to that file on SIGTERM.
enum TestWorker {
    static let script = #"""
    import ctypes, os, select, signal, socket, sys

    # Die with the test process even if a test forgets to stop its supervisor.
    try:
        ctypes.CDLL(None).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except Exception:
        pass

    env = os.environ
    mode = sys.argv[1] if len(sys.argv) > 1 else "serve"
    mode_file = env.get("TEST_MODE_FILE")
    if mode_file and os.path.exists(mode_file):
        with open(mode_file) as f:
            mode = f.read().strip()
    if mode == "crash":
        sys.exit(3)

    status_fd = int(env["SNORKY_STATUS_FD"])
    listeners = [socket.socket(fileno=int(fd)) for fd in env["SNORKY_LISTEN_FDS"].split(",")]
    for listener in listeners:
        # Non-blocking: after a select says "readable" another acceptor may win.
        listener.setblocking(False)

    stopping = False

    def on_term(signum, frame):
        global stopping
        if stopping:
            return
        stopping = mode != "stubborn"
        events = env.get("TEST_EVENTS")
        if events:
            with open(events, "a") as f:
                f.write(f"{os.getpid()} TERM\n")
        os.write(status_fd, b"S")

    signal.signal(signal.SIGTERM, on_term)

    info = " ".join([
        str(os.getpid()), env["SNORKY_WORKER_SLOT"], env["SNORKY_LISTEN_FDS"], env["SNORKY_STATUS_FD"],
        env["SNORKY_SUPERVISOR_PID"], env.get("SNORKY_REDIS", "-"), env.get("TEST_MARK", "-"),
    ])

    if mode != "never-ready":
        os.write(status_fd, b"R")

    while not stopping:
        readable, _, _ = select.select(listeners, [], [], 0.2)
        for listener in readable:
            if stopping:
                break
            try:
                conn, _ = listener.accept()
            except BlockingIOError:
                continue
            conn.setblocking(True)
            conn.sendall(f"{info} {listeners.index(listener)}\n".encode())
            conn.close()

    for listener in listeners:
        listener.close()
    sys.exit(0)
    """#

    /// Arguments running the script in `mode` (passed with -c: no file to clean up).
    static func arguments(mode: String) -> [String] {
        ["-c", script, mode]
    }

    /// A real python3 binary (a pyenv shim would exec through bash, slowly).
    static let python: String = {
        if isExecutableFile("/usr/bin/python3") { return "/usr/bin/python3" }
        return resolveExecutable("python3") ?? "/usr/bin/python3"
    }()
}
