#if canImport(Glibc)
import Glibc
#endif

/// An IPv4 or IPv6 socket address, resolved once and then re-used with other ports.
struct SocketAddress: Sendable, CustomStringConvertible {
    private var storage: sockaddr_storage
    private var length: socklen_t

    init(storage: sockaddr_storage, length: socklen_t) {
        self.storage = storage
        self.length = length
    }

    var family: Int32 { Int32(storage.ss_family) }

    /// Resolves `spec.host` (numeric or a name; the first address getaddrinfo gives).
    static func resolve(_ spec: ListenerSpec) throws(SupervisorError) -> SocketAddress {
        let printable = "\(spec.host):\(spec.port)"
        guard (0...65535).contains(spec.port) else {
            throw .bindFailed(listener: spec.name, address: printable, step: "port check", errno: EINVAL)
        }
        var hints = addrinfo()
        hints.ai_flags = AI_PASSIVE | AI_NUMERICSERV
        hints.ai_family = AF_UNSPEC
        hints.ai_socktype = Int32(SOCK_STREAM.rawValue)
        var results: UnsafeMutablePointer<addrinfo>?
        let rc = getaddrinfo(spec.host, String(spec.port), &hints, &results)
        guard rc == 0, let first = results else {
            let reason = rc == 0 ? "no address" : String(cString: gai_strerror(rc))
            throw SupervisorError(.bindFailed, "cannot bind \(spec.name) to \(printable): cannot resolve \(spec.host): \(reason)")
        }
        defer { freeaddrinfo(results) }
        var storage = sockaddr_storage()
        let length = min(first.pointee.ai_addrlen, socklen_t(MemoryLayout<sockaddr_storage>.size))
        withUnsafeMutableBytes(of: &storage) { target in
            target.copyMemory(from: UnsafeRawBufferPointer(start: first.pointee.ai_addr, count: Int(length)))
        }
        return SocketAddress(storage: storage, length: length)
    }

    var port: Int {
        withUnsafeBytes(of: storage) { raw in
            switch family {
            case AF_INET: Int(UInt16(bigEndian: raw.load(as: sockaddr_in.self).sin_port))
            case AF_INET6: Int(UInt16(bigEndian: raw.load(as: sockaddr_in6.self).sin6_port))
            default: 0
            }
        }
    }

    func with(port: Int) -> SocketAddress {
        var copy = self
        withUnsafeMutableBytes(of: &copy.storage) { raw in
            switch family {
            case AF_INET:
                var address = raw.load(as: sockaddr_in.self)
                address.sin_port = UInt16(port).bigEndian
                raw.storeBytes(of: address, as: sockaddr_in.self)
            case AF_INET6:
                var address = raw.load(as: sockaddr_in6.self)
                address.sin6_port = UInt16(port).bigEndian
                raw.storeBytes(of: address, as: sockaddr_in6.self)
            default:
                break
            }
        }
        return copy
    }

    func withSockAddr<R>(_ body: (UnsafePointer<sockaddr>, socklen_t) -> R) -> R {
        withUnsafeBytes(of: storage) { raw in
            body(raw.baseAddress!.assumingMemoryBound(to: sockaddr.self), length)
        }
    }

    /// "127.0.0.1:5800", "[::1]:5800".
    var description: String {
        var host = [CChar](repeating: 0, count: Int(NI_MAXHOST))
        let rc = withSockAddr { address, length in
            getnameinfo(address, length, &host, socklen_t(host.count), nil, 0, NI_NUMERICHOST)
        }
        let text = rc == 0 ? String(decoding: host.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self) : "?"
        return family == AF_INET6 ? "[\(text)]:\(port)" : "\(text):\(port)"
    }
}
