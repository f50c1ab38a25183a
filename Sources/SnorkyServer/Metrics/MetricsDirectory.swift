#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// The private directory where a node's processes leave their metrics snapshots, so the
/// worker that answers `GET /metrics` (the backend port is shared, a scrape lands on any
/// one of them) can report every worker and the supervisor.
///
/// The supervisor's process creates it (mode 0700, so only the node's own user can read or
/// plant snapshots), hands its path to the workers in `SNORKY_METRICS_DIR`, and removes it
/// when it exits. Each process writes its own file atomically (a temporary file renamed
/// over the old one), so a reader never sees half a snapshot.
public struct MetricsDirectory: Sendable, Hashable {
    /// The environment variable that carries the path to the workers.
    public static let environmentVariable = "SNORKY_METRICS_DIR"
    static let suffix = ".json"

    public let path: String

    public init(path: String) {
        self.path = path
    }

    /// Creates a fresh private directory `snorky-metrics-<pid>-XXXXXX` in `parent`, or
    /// by default in `$XDG_RUNTIME_DIR` (`/tmp` when unset).
    public static func create(parent: String? = nil) throws(MetricsDirectoryError) -> MetricsDirectory {
        let parent = parent
            ?? getenv("XDG_RUNTIME_DIR").map { String(cString: $0) }.flatMap { $0.isEmpty ? nil : $0 }
            ?? "/tmp"
        // mkdtemp creates it with mode 0700, atomically.
        var template = Array("\(parent)/snorky-metrics-\(getpid())-XXXXXX".utf8CString)
        guard let created = template.withUnsafeMutableBufferPointer({ mkdtemp($0.baseAddress!) }) else {
            throw MetricsDirectoryError("cannot create a metrics directory in \(parent): \(errnoText())")
        }
        return MetricsDirectory(path: String(cString: created))
    }

    /// The file name of a worker slot's snapshot.
    public static func workerFile(slot: String) -> String { "worker-\(slot)\(suffix)" }

    /// The file name of the supervisor's snapshot.
    public static let supervisorFile = "supervisor\(suffix)"

    /// Replaces the file `name` with `snapshot` atomically.
    public func write(_ snapshot: MetricsSnapshot, as name: String) throws(MetricsDirectoryError) {
        let bytes = snapshot.encoded()
        let target = path + "/" + name
        // Dot files are never read as snapshots; the pid keeps writers apart.
        let temporary = path + "/.\(name).\(getpid()).tmp"
        let fd = open(temporary, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0o600)
        guard fd >= 0 else { throw MetricsDirectoryError("cannot create \(temporary): \(errnoText())") }
        var written = 0
        var failure: String?
        bytes.withUnsafeBytes { buffer in
            while written < buffer.count {
                let result = writeBytes(fd, buffer.baseAddress! + written, buffer.count - written)
                if result < 0 {
                    if errno == EINTR { continue }
                    failure = errnoText()
                    return
                }
                written += result
            }
        }
        close(fd)
        if let failure {
            unlink(temporary)
            throw MetricsDirectoryError("cannot write \(temporary): \(failure)")
        }
        guard rename(temporary, target) == 0 else {
            let reason = errnoText()
            unlink(temporary)
            throw MetricsDirectoryError("cannot rename \(temporary) to \(target): \(reason)")
        }
    }

    /// Every snapshot in the directory but `excluded`, by file name. Files that cannot be
    /// read or decoded are skipped: a scrape reports what it can.
    public func readSnapshots(excluding excluded: String? = nil) -> [(name: String, snapshot: MetricsSnapshot)] {
        var snapshots: [(name: String, snapshot: MetricsSnapshot)] = []
        for name in fileNames() where name.hasSuffix(Self.suffix) && !name.hasPrefix(".") && name != excluded {
            guard let bytes = Self.readFile(path + "/" + name),
                let snapshot = try? MetricsSnapshot(decoding: bytes)
            else { continue }
            snapshots.append((name, snapshot))
        }
        return snapshots.sorted { $0.name < $1.name }
    }

    /// Removes the directory and everything in it.
    public func remove() {
        for name in fileNames() { unlink(path + "/" + name) }
        rmdir(path)
    }

    private func fileNames() -> [String] {
        guard let directory = opendir(path) else { return [] }
        defer { closedir(directory) }
        var names: [String] = []
        while let entry = readdir(directory) {
            let name = withUnsafeBytes(of: entry.pointee.d_name) { raw in
                String(decoding: raw.prefix { $0 != 0 }, as: UTF8.self)
            }
            if name != "." && name != ".." { names.append(name) }
        }
        return names
    }

    /// A small file's whole content; nil if it cannot be read.
    static func readFile(_ path: String, limit: Int = 4 * 1024 * 1024) -> [UInt8]? {
        let fd = open(path, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { return nil }
        defer { close(fd) }
        var bytes: [UInt8] = []
        var chunk = [UInt8](repeating: 0, count: 16 * 1024)
        while bytes.count < limit {
            let count = chunk.withUnsafeMutableBytes { read(fd, $0.baseAddress, $0.count) }
            if count < 0 {
                if errno == EINTR { continue }
                return nil
            }
            if count == 0 { return bytes }
            bytes += chunk[0..<count]
        }
        return nil
    }
}

public struct MetricsDirectoryError: Error, Sendable, CustomStringConvertible {
    public let description: String

    init(_ description: String) {
        self.description = description
    }
}

/// The system's `write`, which `MetricsDirectory.write` hides inside the type.
private func writeBytes(_ fd: Int32, _ bytes: UnsafeRawPointer, _ count: Int) -> Int {
    write(fd, bytes, count)
}

func errnoText() -> String {
    String(cString: strerror(errno))
}
