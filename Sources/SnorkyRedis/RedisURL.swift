/// Where a Redis server is and how to log in.
///
/// Accepted forms:
/// - `redis://[[username]:password@]host[:port][/database]` (port defaults to 6379;
///   IPv6 hosts in brackets, `redis://[::1]:6379`)
/// - `unix:///path/to/redis.sock[?db=N&password=...&username=...]`, or a bare absolute
///   socket path
///
/// User name and password are percent-decoded. `rediss://` (TLS) is not supported.
public struct RedisURL: Sendable, Hashable, CustomStringConvertible {
    public enum Address: Sendable, Hashable {
        case tcp(host: String, port: Int)
        case unixSocket(path: String)
    }

    public var address: Address
    /// Selected with SELECT after connecting when not 0 (publish/subscribe ignore it).
    public var database: Int
    public var username: String?
    public var password: String?

    public init(address: Address, database: Int = 0, username: String? = nil, password: String? = nil) {
        self.address = address
        self.database = database
        self.username = username
        self.password = password
    }

    public init(_ string: String) throws(RedisError) {
        // Errors quote the URL as given, which reaches logs: never with its password.
        let shown = Self.redacted(string)
        if string.hasPrefix("/") {
            self.init(address: .unixSocket(path: string))
            return
        }
        if string.hasPrefix("rediss://") {
            throw .invalidURL("TLS (rediss://) is not supported: \(shown)")
        }
        if let rest = string.dropPrefix("unix://") {
            let (path, query) = rest.splitOnce("?")
            guard path.hasPrefix("/"), path.count > 1 else {
                throw .invalidURL("expected unix:///absolute/path: \(shown)")
            }
            self.init(address: .unixSocket(path: String(path)))
            if let query { try applyQuery(query, url: shown) }
            return
        }
        guard let rest = string.dropPrefix("redis://") else {
            throw .invalidURL("expected redis://host[:port][/db] or unix:///path: \(shown)")
        }
        let (beforeQuery, query) = rest.splitOnce("?")
        let (authorityPart, path) = beforeQuery.splitOnce("/")
        var authority = authorityPart
        var username: String?
        var password: String?
        if let at = authority.lastIndex(of: "@") {
            let userinfo = authority[..<at]
            authority = authority[authority.index(after: at)...]
            let (user, secret) = userinfo.splitOnce(":")
            if let secret {
                username = user.isEmpty ? nil : try Self.percentDecoded(user, url: shown)
                password = try Self.percentDecoded(secret, url: shown)
            } else {
                // `redis://password@host` is a common shorthand.
                password = try Self.percentDecoded(user, url: shown)
            }
        }
        let host: Substring
        var portText: Substring?
        if authority.hasPrefix("[") {
            guard let close = authority.firstIndex(of: "]") else {
                throw .invalidURL("unterminated IPv6 address: \(shown)")
            }
            host = authority[authority.index(after: authority.startIndex)..<close]
            let after = authority[authority.index(after: close)...]
            if !after.isEmpty {
                guard after.hasPrefix(":") else { throw .invalidURL("bad host: \(shown)") }
                portText = after.dropFirst()
            }
        } else {
            let (name, port) = authority.splitOnce(":")
            host = name
            portText = port
        }
        guard !host.isEmpty else { throw .invalidURL("missing host: \(shown)") }
        var port = 6379
        if let portText {
            guard let value = Int(portText), (1...65535).contains(value) else {
                throw .invalidURL("bad port: \(shown)")
            }
            port = value
        }
        var database = 0
        if let path, !path.isEmpty {
            guard let value = Int(path), value >= 0 else { throw .invalidURL("bad database: \(shown)") }
            database = value
        }
        self.init(address: .tcp(host: String(host), port: port), database: database, username: username, password: password)
        if let query { try applyQuery(query, url: shown) }
    }

    private mutating func applyQuery(_ query: Substring, url: String) throws(RedisError) {
        for pair in query.split(separator: "&") {
            let (key, value) = pair.splitOnce("=")
            let text = try Self.percentDecoded(value ?? "", url: url)
            switch key {
            case "db", "database":
                guard let number = Int(text), number >= 0 else { throw .invalidURL("bad database: \(url)") }
                database = number
            case "password":
                password = text
            case "username", "user":
                username = text
            default:
                throw .invalidURL("unknown parameter \(key): \(url)")
            }
        }
    }

    /// `string` with its credentials masked: everything between `://` and the last `@`,
    /// and the value of a `password` parameter. It need not be a valid URL.
    static func redacted(_ string: String) -> String {
        var text = Substring(string)
        var result = ""
        if let scheme = text.firstRange(of: "://") {
            result += text[..<scheme.upperBound]
            text = text[scheme.upperBound...]
            let beforeQuery = text.prefix { $0 != "?" }
            if let at = beforeQuery.lastIndex(of: "@") {
                result += "***@"
                text = text[text.index(after: at)...]
            }
        }
        guard let question = text.firstIndex(of: "?") else { return result + text }
        result += text[...question]
        let parameters = text[text.index(after: question)...].split(separator: "&", omittingEmptySubsequences: false)
        result += parameters.map { $0.hasPrefix("password=") ? "password=***" : String($0) }.joined(separator: "&")
        return result
    }

    private static func percentDecoded(_ text: Substring, url: String) throws(RedisError) -> String {
        guard text.contains("%") else { return String(text) }
        var bytes: [UInt8] = []
        var iterator = text.utf8.makeIterator()
        while let byte = iterator.next() {
            guard byte == UInt8(ascii: "%") else {
                bytes.append(byte)
                continue
            }
            guard let high = iterator.next().flatMap(hexValue), let low = iterator.next().flatMap(hexValue) else {
                throw .invalidURL("bad percent-encoding: \(url)")
            }
            bytes.append(high << 4 | low)
        }
        return String(decoding: bytes, as: UTF8.self)
    }

    private static func hexValue(_ byte: UInt8) -> UInt8? {
        switch byte {
        case UInt8(ascii: "0")...UInt8(ascii: "9"): byte - UInt8(ascii: "0")
        case UInt8(ascii: "a")...UInt8(ascii: "f"): byte - UInt8(ascii: "a") + 10
        case UInt8(ascii: "A")...UInt8(ascii: "F"): byte - UInt8(ascii: "A") + 10
        default: nil
        }
    }

    /// The URL without the password.
    public var description: String {
        var text: String
        switch address {
        case .tcp(let host, let port):
            let shownHost = host.contains(":") ? "[\(host)]" : host
            var credentials = ""
            if password != nil { credentials = "\(username ?? ""):***@" }
            text = "redis://\(credentials)\(shownHost):\(port)"
            if database != 0 { text += "/\(database)" }
        case .unixSocket(let path):
            text = "unix://\(path)"
            if database != 0 { text += "?db=\(database)" }
        }
        return text
    }
}

extension String {
    fileprivate func dropPrefix(_ prefix: String) -> Substring? {
        guard hasPrefix(prefix) else { return nil }
        return self[index(startIndex, offsetBy: prefix.count)...]
    }
}

extension Substring {
    fileprivate func splitOnce(_ separator: Character) -> (Substring, Substring?) {
        guard let index = firstIndex(of: separator) else { return (self, nil) }
        return (self[..<index], self[self.index(after: index)...])
    }
}
