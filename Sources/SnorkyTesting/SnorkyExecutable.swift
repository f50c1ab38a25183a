import Foundation

/// Finds executables built by this package, so that tests can start real `snorky serve`
/// processes whatever `--scratch-path` or configuration they were built with.
///
/// SwiftPM puts executables and the test bundle in the same products directory, so the
/// search looks next to the running test binary. `SNORKY_EXECUTABLE` overrides the search
/// for `snorky` (for example to test an installed or release build).
public enum SnorkyExecutable {
    /// The `snorky` executable.
    public static var path: String {
        get throws {
            if let override = ProcessInfo.processInfo.environment["SNORKY_EXECUTABLE"], !override.isEmpty {
                guard isExecutableFile(override) else {
                    throw ProcessHandleError.executableNotFound(name: override, searched: ["SNORKY_EXECUTABLE"])
                }
                return override
            }
            return try locate(named: "snorky")
        }
    }

    /// An executable product of this package, e.g. `"snorky-bench"`.
    public static func locate(named name: String) throws -> String {
        let directories = productDirectories
        for directory in directories {
            let candidate = directory + "/" + name
            if isExecutableFile(candidate) { return candidate }
        }
        throw ProcessHandleError.executableNotFound(name: name, searched: directories)
    }

    /// Where the running test binary lives, found three ways because each runner differs:
    /// Linux runs the `.xctest` executable itself; on macOS a host process (xctest or
    /// swiftpm-testing-helper) loads the bundle.
    package static var productDirectories: [String] {
        var directories: [String] = []
        func add(_ path: String) {
            let directory = (path as NSString).deletingLastPathComponent
            if !directory.isEmpty, !directories.contains(directory) { directories.append(directory) }
        }
        #if os(Linux)
        if let executable = try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/self/exe") {
            add(executable)
        }
        #endif
        for bundle in Bundle.allBundles where bundle.bundlePath.hasSuffix(".xctest") {
            add(bundle.bundlePath)
        }
        if let argument = CommandLine.arguments.first {
            let absolute = argument.hasPrefix("/")
                ? argument : FileManager.default.currentDirectoryPath + "/" + argument
            add((absolute as NSString).standardizingPath)
        }
        return directories
    }

    private static func isExecutableFile(_ path: String) -> Bool {
        var isDirectory: ObjCBool = false
        return FileManager.default.fileExists(atPath: path, isDirectory: &isDirectory) && !isDirectory.boolValue
            && FileManager.default.isExecutableFile(atPath: path)
    }
}
