#if canImport(Glibc)
import Glibc
#endif
import Testing
@testable import SnorkySupervisor

/// The C spawn helper: descriptors land at 3, 4, … even when the sources sit in that very
/// range (they must be moved out of the way first), for both spawn strategies.
@Suite(.serialized) struct SpawnTests {
    /// Where `fd` points, as the kernel shows it ("pipe:[123]", "socket:[456]", …).
    func target(of fd: Int32, in pid: String = "self") -> String? {
        var buffer = [CChar](repeating: 0, count: 256)
        let count = readlink("/proc/\(pid)/fd/\(fd)", &buffer, buffer.count - 1)
        guard count > 0 else { return nil }
        return String(decoding: buffer[0..<count].map { UInt8(bitPattern: $0) }, as: UTF8.self)
    }

    /// Spawns `request`, closes our copy of the child's output end, and returns everything
    /// the child wrote to `reader` until it exited, with its wait status.
    func run(_ request: SpawnRequest, reading reader: Int32, closingInParent writeEnd: Int32) async throws -> (String, Int32) {
        let spawner = try SpawnerThread()
        defer { spawner.stop() }
        let pid = try #require(await spawner.run { request.spawn() }).get()
        close(writeEnd)
        return try await DetachedThread.run(name: "test-reader") {
            var data: [UInt8] = []
            var buffer = [UInt8](repeating: 0, count: 4096)
            while case let count = read(reader, &buffer, buffer.count), count > 0 { data += buffer[0..<count] }
            var status: Int32 = 0
            waitpid(pid, &status, 0)
            return (String(decoding: data, as: UTF8.self), status)
        }
    }

    @Test(arguments: [Int32(0), SIGTERM])
    func placesDescriptorsEvenWhenSourcesOverlapTheTargets(deathSignal: Int32) async throws {
        // Our own pipes only (other tests run in parallel in this process), numerous enough
        // that some of them sit inside the target range 3..<3+count.
        var sources: [Int32] = []
        defer { sources.forEach { close($0) } }
        // Close-on-exec, so children that other tests start meanwhile do not inherit them.
        for _ in 0..<60 {
            let pipe = try StatusPipe()
            sources += [pipe.readEnd, pipe.writeEnd]
        }
        let outputPipe = try StatusPipe()
        let output = [outputPipe.readEnd, outputPipe.writeEnd]
        defer { close(output[0]) }
        // When the rest of the suite holds many descriptors, the new pipes may all land above
        // the target range: move one into a free slot inside it so the overlap is certain.
        let targetRange = Int32(3)..<(3 + Int32(sources.count + 1))
        if !sources.contains(where: { targetRange.contains($0) }),
            let free = targetRange.first(where: { fcntl($0, F_GETFD) == -1 })
        {
            let moved = fcntl(sources[0], F_DUPFD_CLOEXEC, free)
            try #require(moved >= 0)
            close(sources[0])
            sources[0] = moved
        }
        // If the whole target range is taken by descriptors of other tests running in this
        // process, the placement below is still checked, just without an overlap.
        let inherited = Array(sources.reversed()) + [output[1]]
        let expected = try sources.reversed().map { try #require(target(of: $0)) }

        let script = """
            import os, sys
            n = int(sys.argv[1])
            links = [os.readlink(f"/proc/self/fd/{3 + i}") for i in range(n)]
            os.write(3 + n, " ".join(links).encode())
            """
        let request = SpawnRequest(
            path: TestWorker.python,
            arguments: [TestWorker.python, "-c", script, "\(sources.count)"],
            environment: ["PATH": "/usr/bin:/bin"],
            inheritedDescriptors: inherited,
            deathSignal: deathSignal
        )
        let (text, status) = try await run(request, reading: output[0], closingInParent: output[1])
        #expect(ExitStatus(waitStatus: status) == .exited(code: 0))
        #expect(text == expected.joined(separator: " "))
    }

    /// SwiftNIO opens its sockets without FD_CLOEXEC; a child that inherited a worker's or
    /// supervisor's connection would keep it open after the parent closed it.
    @Test(arguments: [Int32(0), SIGTERM])
    func descriptorsWithoutCloseOnExecAreNotInherited(deathSignal: Int32) async throws {
        var fds: [Int32] = [-1, -1]
        try #require(pipe(&fds) == 0)
        // Far above anything placed at 3, 4, …; no FD_CLOEXEC on the copy.
        let stray = fcntl(fds[0], F_DUPFD, 200)
        close(fds[0])
        close(fds[1])
        try #require(stray >= 200)
        defer { close(stray) }
        let outputPipe = try StatusPipe()
        defer { close(outputPipe.readEnd) }
        let script = """
            import os, sys
            present = os.path.exists(f"/proc/self/fd/{sys.argv[1]}")
            os.write(3, b"present" if present else b"absent")
            """
        let request = SpawnRequest(
            path: TestWorker.python,
            arguments: [TestWorker.python, "-c", script, "\(stray)"],
            environment: ["PATH": "/usr/bin:/bin"],
            inheritedDescriptors: [outputPipe.writeEnd],
            deathSignal: deathSignal
        )
        let (text, status) = try await run(request, reading: outputPipe.readEnd, closingInParent: outputPipe.writeEnd)
        #expect(ExitStatus(waitStatus: status) == .exited(code: 0))
        #expect(text == "absent")
    }

    @Test(arguments: [Int32(0), SIGTERM])
    func aMissingProgramIsAnErrorNotAChild(deathSignal: Int32) async throws {
        let request = SpawnRequest(
            path: "/nonexistent/program",
            arguments: ["program"],
            environment: [:],
            deathSignal: deathSignal
        )
        let spawner = try SpawnerThread()
        defer { spawner.stop() }
        let result = try #require(await spawner.run { request.spawn() })
        #expect(result.failure?.kind == .spawnFailed)
        #expect(result.failure?.description.contains("No such file") == true)
    }
}
