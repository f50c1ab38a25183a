#if canImport(Glibc)
import Glibc
#endif
import Synchronization

/// The listening sockets: for every listener, one SO_REUSEPORT socket per worker slot, all
/// bound to the same port.
///
/// Why per slot (measured, see ARCHITECTURE.md): one socket shared by every worker wakes
/// them all and spreads connections poorly; one SO_REUSEPORT socket per *process* spreads
/// evenly but drops the connections queued on it when that process exits. Owning one
/// socket per slot in the supervisor, for its whole life, keeps the even kernel spread
/// and each socket has exactly one acceptor, while a worker's exit (crash or reload)
/// loses nothing: the queue stays in the socket until the slot's next worker accepts.
final class ListenerSockets: Sendable {
    let listeners: [BoundListener]
    /// `descriptors[listener][slot]`, all FD_CLOEXEC.
    private let descriptors: [[Int32]]
    private let closed = Mutex(false)

    static let backlog: Int32 = 4096

    private init(listeners: [BoundListener], descriptors: [[Int32]]) {
        self.listeners = listeners
        self.descriptors = descriptors
    }

    deinit { close() }

    /// The descriptors slot `slot`'s worker inherits, in listener order.
    func descriptors(forSlot slot: Int) -> [Int32] {
        descriptors.map { $0[slot] }
    }

    func close() {
        let wasClosed = closed.withLock { closed in
            defer { closed = true }
            return closed
        }
        guard !wasClosed else { return }
        for fd in descriptors.joined() { Glibc.close(fd) }
    }

    /// Binds `slots` sockets for each spec, or none at all.
    static func bind(_ specs: [ListenerSpec], slots: Int) throws(SupervisorError) -> ListenerSockets {
        var bound: [BoundListener] = []
        var descriptors: [[Int32]] = []
        do throws(SupervisorError) {
            for spec in specs {
                let address = try SocketAddress.resolve(spec)
                let port = try claimPort(spec, address)
                var listenerFDs: [Int32] = []
                do throws(SupervisorError) {
                    for _ in 0..<slots {
                        listenerFDs.append(try openListeningSocket(spec, address.with(port: port)))
                    }
                } catch {
                    listenerFDs.forEach { Glibc.close($0) }
                    throw error
                }
                descriptors.append(listenerFDs)
                bound.append(BoundListener(name: spec.name, host: spec.host, port: port))
            }
        } catch {
            descriptors.joined().forEach { Glibc.close($0) }
            throw error
        }
        return ListenerSockets(listeners: bound, descriptors: descriptors)
    }

    /// SO_REUSEPORT lets a second server of the same user join our port silently and take
    /// a share of its connections. Binding a plain socket first turns that into a clear
    /// "address in use", and with port 0 it picks the ephemeral port all slots share.
    private static func claimPort(_ spec: ListenerSpec, _ address: SocketAddress) throws(SupervisorError) -> Int {
        let fd = try makeSocket(spec, address, reusePort: false)
        defer { Glibc.close(fd) }
        try bindSocket(fd, spec, address)
        return try boundPort(fd, spec, address)
    }

    private static func openListeningSocket(_ spec: ListenerSpec, _ address: SocketAddress) throws(SupervisorError) -> Int32 {
        let fd = try makeSocket(spec, address, reusePort: true)
        do throws(SupervisorError) {
            try bindSocket(fd, spec, address)
            // Blocking on purpose: the file description is shared with workers, and a
            // worker that wants non-blocking accepts sets that itself.
            guard listen(fd, backlog) == 0 else {
                throw SupervisorError.bindFailed(listener: spec.name, address: address.description, step: "listen", errno: errno)
            }
            return fd
        } catch {
            Glibc.close(fd)
            throw error
        }
    }

    private static func makeSocket(_ spec: ListenerSpec, _ address: SocketAddress, reusePort: Bool) throws(SupervisorError) -> Int32 {
        let fd = socket(address.family, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        guard fd >= 0 else {
            throw .bindFailed(listener: spec.name, address: address.description, step: "socket", errno: errno)
        }
        var on: Int32 = 1
        // SO_REUSEADDR: restart while old connections sit in TIME_WAIT.
        var options = [SO_REUSEADDR]
        if reusePort { options.append(SO_REUSEPORT) }
        for option in options {
            if setsockopt(fd, SOL_SOCKET, option, &on, socklen_t(MemoryLayout<Int32>.size)) != 0 {
                let code = errno
                Glibc.close(fd)
                throw .bindFailed(listener: spec.name, address: address.description, step: "setsockopt", errno: code)
            }
        }
        return fd
    }

    private static func bindSocket(_ fd: Int32, _ spec: ListenerSpec, _ address: SocketAddress) throws(SupervisorError) {
        let rc = address.withSockAddr { Glibc.bind(fd, $0, $1) }
        guard rc == 0 else {
            let code = errno
            if code == EADDRINUSE { throw .addressInUse(listener: spec.name, address: address.description) }
            throw .bindFailed(listener: spec.name, address: address.description, step: "bind", errno: code)
        }
    }

    private static func boundPort(_ fd: Int32, _ spec: ListenerSpec, _ address: SocketAddress) throws(SupervisorError) -> Int {
        var storage = sockaddr_storage()
        var length = socklen_t(MemoryLayout<sockaddr_storage>.size)
        let rc = withUnsafeMutablePointer(to: &storage) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(fd, $0, &length) }
        }
        guard rc == 0 else {
            throw .bindFailed(listener: spec.name, address: address.description, step: "getsockname", errno: errno)
        }
        return SocketAddress(storage: storage, length: length).port
    }
}
