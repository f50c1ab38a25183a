#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

// Two builds of one program (see scripts/fuzz.sh):
// - with `-sanitize=fuzzer,address -D SNORKY_FUZZ`, libFuzzer drives `LLVMFuzzerTestOneInput`
//   with generated inputs and keeps those that reach new code;
// - a plain build runs the inputs named on its command line (files, or directories of
//   files) once each, so a crash libFuzzer found reproduces in any debugger, and the
//   committed corpus is replayed by the test suite.

/// libFuzzer's entry point: one input, which must not crash.
@_cdecl("LLVMFuzzerTestOneInput")
func fuzzOneInput(_ data: UnsafePointer<UInt8>?, _ size: Int) -> CInt {
    FuzzChecks.run(UnsafeBufferPointer(start: data, count: size))
    return 0
}

#if SNORKY_FUZZ
/// libFuzzer's driver, for a program that has its own `main` (SwiftPM gives every
/// executable one).
@_extern(c, "LLVMFuzzerRunDriver")
func runFuzzerDriver(
    _ argc: UnsafeMutablePointer<CInt>,
    _ argv: UnsafeMutablePointer<UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>>,
    _ callback: @convention(c) (UnsafePointer<UInt8>?, Int) -> CInt
) -> CInt
#endif

@main
enum SnorkyFuzz {
    static func main() {
        #if SNORKY_FUZZ
        var argc = CommandLine.argc
        var argv = CommandLine.unsafeArgv
        exit(runFuzzerDriver(&argc, &argv, fuzzOneInput))
        #else
        let paths = CommandLine.arguments.dropFirst()
        guard !paths.isEmpty else {
            print("usage: SnorkyFuzz FILE-OR-DIRECTORY...  (runs each input once; build with scripts/fuzz.sh to fuzz)")
            exit(2)
        }
        var count = 0
        for path in paths {
            for file in CorpusFiles.list(path) {
                guard let bytes = CorpusFiles.contents(of: file) else {
                    print("cannot read \(file)")
                    exit(1)
                }
                bytes.withUnsafeBufferPointer { FuzzChecks.run($0) }
                count += 1
            }
        }
        print("ran \(count) inputs without a crash")
        #endif
    }
}

/// Reading inputs without Foundation, which the fuzz build would have to instrument too.
enum CorpusFiles {
    /// `path` itself, or the regular files directly inside it, sorted.
    static func list(_ path: String) -> [String] {
        guard let directory = opendir(path) else { return [path] }
        defer { closedir(directory) }
        var files: [String] = []
        while let entry = readdir(directory) {
            let name = withUnsafeBytes(of: entry.pointee.d_name) { raw in
                String(decoding: raw.prefix { $0 != 0 }, as: UTF8.self)
            }
            if name != ".", name != ".." { files.append(path + "/" + name) }
        }
        return files.sorted()
    }

    static func contents(of path: String) -> [UInt8]? {
        let descriptor = open(path, O_RDONLY)
        guard descriptor >= 0 else { return nil }
        defer { close(descriptor) }
        var bytes: [UInt8] = []
        var chunk = [UInt8](repeating: 0, count: 65536)
        while true {
            let count = chunk.withUnsafeMutableBytes { read(descriptor, $0.baseAddress, $0.count) }
            if count < 0 { return nil }
            if count == 0 { return bytes }
            bytes += chunk[..<count]
        }
    }
}
