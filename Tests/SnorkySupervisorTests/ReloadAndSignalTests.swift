#if canImport(Glibc)
import Glibc
#endif
import Testing
@testable import SnorkySupervisor

extension LiveSupervisorTests {
    @Test func aReplacementThatNeverGetsReadyAbortsTheReloadAndTheSlotRecovers() async throws {
        let directory = makeTemporaryDirectory()
        let modeFile = directory + "/mode"
        defer {
            unlink(modeFile)
            rmdir(directory)
        }
        let configuration = LiveCluster.configuration(
            workers: 2,
            environment: ["TEST_MODE_FILE": modeFile],
            readinessTimeout: .seconds(2)
        )
        try await withCluster(configuration) { cluster in
            let before = cluster.supervisor.workerPIDs
            try writeFile(modeFile, "never-ready")
            await cluster.supervisor.reload()  // returns when aborted

            #expect(cluster.logs.records("reload aborted").count == 1)
            #expect(cluster.logs.records("reload complete").isEmpty)
            let killed = cluster.logs.records("worker not ready in time; killing it")
            #expect(killed.map { $0.metadata["slot"] } == ["0"])
            #expect(cluster.supervisor.workerPIDs[1] == before[1], "the slots after the failure keep their workers")

            // The normal restart path brings slot 0 back once workers start properly again.
            unlink(modeFile)
            try await cluster.logs.count("cluster ready", reaches: 2)
            let recovered = try #require(cluster.supervisor.workerPIDs[0])
            #expect(recovered != before[0])
            #expect(await cluster.stop() == 0)
        }
    }

    /// Signals go to this very test process; the handlers are removed afterwards.
    @Test func sighupReloadsSigtermDrainsAndASecondStopSignalKills() async throws {
        let directory = makeTemporaryDirectory()
        let modeFile = directory + "/mode"
        defer {
            for signal in [SIGTERM, SIGINT, SIGHUP] { Glibc.signal(signal, SIG_DFL) }
            unlink(modeFile)
            rmdir(directory)
        }
        let configuration = LiveCluster.configuration(
            workers: 2,
            environment: ["TEST_MODE_FILE": modeFile],
            shutdownTimeout: .seconds(40)
        )
        let cluster = try await LiveCluster.start(configuration)
        cluster.supervisor.installSignalHandlers()
        let before = cluster.supervisor.workerPIDs.compactMap { $0 }

        // Replacements ignore SIGTERM (they report S but keep running).
        try writeFile(modeFile, "stubborn")
        kill(getpid(), SIGHUP)
        _ = try await cluster.logs.first("reload complete")
        let after = cluster.supervisor.workerPIDs.compactMap { $0 }
        #expect(after.count == 2)
        #expect(Set(after).isDisjoint(with: before))

        kill(getpid(), SIGTERM)
        _ = try await cluster.logs.first("shutting down", ["reason": "SIGTERM"])
        // The current (stubborn) workers report draining and stay. Counting the old ones'
        // reports too would race: a worker that reports and exits at once may be reaped
        // before its report is read, and a report from a worker already gone is not logged.
        for pid in after {
            _ = try await cluster.logs.first("worker draining", ["pid": "\(pid)"])
        }
        let start = ContinuousClock.now
        kill(getpid(), SIGINT)
        #expect(try await cluster.run.value == 0)
        #expect(ContinuousClock.now - start < .seconds(20), "killed at once, not after the 40 s timeout")
        #expect(cluster.logs.records("stop signal while draining; killing every child now").count == 1)
        let exits = cluster.logs.records("worker exited").filter { record in after.contains { "\($0)" == record.metadata["pid"] } }
        #expect(exits.count == 2)
        #expect(exits.allSatisfy { $0.metadata["status"] == "signal 9 (SIGKILL)" })
    }
}
