#if canImport(Glibc)
import Glibc
#endif
import Testing
@testable import SnorkySupervisor

/// Real supervisors running real (Python) worker processes. Serialized: they share two
/// cores with everything else, and timing-sensitive checks should not compete.
@Suite(.serialized, .timeLimit(.minutes(1)))
struct LiveSupervisorTests {
    @Test func fourWorkersShareConnectionsEvenlyAndGetTheContract() async throws {
        let configuration = LiveCluster.configuration(
            workers: 4,
            listeners: ["ws", "backend"],
            environment: ["TEST_MARK": "marked"]
        )
        try await withCluster(configuration) { cluster in
            let results = try await TestClient.fetchMany(port: cluster.port, count: 2000)
            let replies = results.compactMap(\.success)
            #expect(replies.count == 2000, "failures: \(Set(results.compactMap(\.failure)))")

            // One SO_REUSEPORT socket per slot: the kernel spreads connections evenly.
            let perSlot = Dictionary(grouping: replies, by: \.slot).mapValues(\.count)
            for slot in 0..<4 {
                #expect(perSlot[slot, default: 0] >= 300, "connections per slot: \(perSlot)")
            }

            // The contract: slot's socket at fd 3, second listener at 4, status pipe after.
            let pids = cluster.supervisor.workerPIDs
            #expect(replies.allSatisfy { pids[$0.slot] == $0.pid })
            #expect(replies.allSatisfy { $0.listener == 0 })
            let sample = try #require(replies.first)
            #expect(sample.listenFDs == "3,4")
            #expect(sample.statusFD == "5")
            #expect(sample.supervisorPID == getpid())
            #expect(sample.mark == "marked")
            #expect(sample.redis == "-")
            let backend = try await TestClient.fetchMany(port: cluster.supervisor.boundListeners[1].port, count: 40)
            #expect(backend.allSatisfy { $0.success?.listener == 1 })

            let listening = cluster.logs.records("listening")
            #expect(listening.count == 2)
            #expect(listening.first?.metadata["ws"] == "127.0.0.1:\(cluster.port)")
            #expect(cluster.logs.records("worker started").count == 4)
            #expect(cluster.logs.records("worker ready").count == 4)
            #expect(await cluster.stop() == 0)
        }
    }

    @Test func aKilledWorkerIsReplacedInItsSlotAndQueuedConnectionsSurvive() async throws {
        try await withCluster(LiveCluster.configuration(workers: 2)) { cluster in
            let before = cluster.supervisor.workerPIDs
            let victim = try #require(before[1])
            #expect(kill(victim, SIGKILL) == 0)

            // Made while slot 1 has no worker: those hashed to its socket wait in the
            // backlog until the replacement accepts them.
            let results = try await TestClient.fetchMany(port: cluster.port, count: 200)
            #expect(results.allSatisfy { $0.success != nil }, "failures: \(Set(results.compactMap(\.failure)))")

            let exited = try await cluster.logs.first("worker exited", ["slot": "1", "pid": "\(victim)"])
            #expect(exited.metadata["status"] == "signal 9 (SIGKILL)")
            #expect(exited.level == .warning)
            let ready = try await cluster.logs.first("replacement ready") { record in
                record.message == "worker ready" && record.metadata["slot"] == "1" && record.metadata["pid"] != "\(victim)"
            }
            let replacement = try #require(cluster.supervisor.workerPIDs[1])
            #expect(ready.metadata["pid"] == "\(replacement)")
            #expect(replacement != victim)
            #expect(cluster.supervisor.workerPIDs[0] == before[0])
            #expect(cluster.supervisor.workerRestarts == [0, 1], "one restart, counted for slot 1")
            #expect(cluster.supervisor.workerReady == [true, true])
            #expect(results.contains { $0.success?.pid == replacement })
            #expect(cluster.logs.records("restarting worker in 50ms").first?.metadata["slot"] == "1")
            #expect(!processExists(victim))
            #expect(await cluster.stop() == 0)
        }
    }

    @Test func reloadReplacesEveryWorkerWithoutRefusingAConnection() async throws {
        try await withCluster(LiveCluster.configuration(workers: 4)) { cluster in
            let before = cluster.supervisor.workerPIDs.compactMap { $0 }
            let stop = Flag()
            // The reload starts once the load has been answered, so it runs across the reload.
            let (firstAnswer, answered) = AsyncStream.makeStream(of: Void.self)
            async let load = TestClient.fetchContinuously(port: cluster.port, minimum: 500, until: stop) {
                answered.finish()
            }
            for await _ in firstAnswer {}
            await cluster.supervisor.reload()
            stop.set()
            let results = try await load

            let failures = results.compactMap(\.failure)
            #expect(failures.isEmpty, "\(failures.count) of \(results.count) failed: \(Set(failures))")
            let after = cluster.supervisor.workerPIDs.compactMap { $0 }
            #expect(after.count == 4)
            #expect(Set(after).isDisjoint(with: before), "every slot gets a new worker")
            #expect(cluster.supervisor.workerRestarts == [0, 0, 0, 0], "a reload's replacements are not restarts")
            #expect(cluster.supervisor.workerReady == [true, true, true, true])
            let served = Set(results.compactMap { $0.success?.pid })
            #expect(!served.isDisjoint(with: before), "the load began before the reload")
            #expect(!served.isDisjoint(with: after), "and went on after it")
            #expect(cluster.logs.records("reload complete").count == 1)
            for pid in before {
                let exit = try await cluster.logs.first("worker exited", ["pid": "\(pid)"])
                #expect(exit.metadata["status"] == "exit 0")
                #expect(exit.level == .info)
            }
            #expect(await cluster.stop() == 0)
        }
    }

    @Test func shutdownDrainsEveryWorkerAndReturnsZero() async throws {
        let directory = makeTemporaryDirectory()
        let events = directory + "/events"
        defer {
            unlink(events)
            rmdir(directory)
        }
        let cluster = try await LiveCluster.start(LiveCluster.configuration(workers: 3, environment: ["TEST_EVENTS": events]))
        let pids = cluster.supervisor.workerPIDs.compactMap { $0 }
        let port = cluster.port
        #expect(pids.count == 3)
        #expect(cluster.supervisor.workerReady == [true, true, true])

        #expect(await cluster.stop() == 0)

        let terms = Set((readFile(events) ?? "").split(separator: "\n").map(String.init))
        #expect(terms == Set(pids.map { "\($0) TERM" }), "every worker got SIGTERM")
        let exits = cluster.logs.records("worker exited")
        #expect(exits.count == 3)
        #expect(exits.allSatisfy { $0.metadata["status"] == "exit 0" })
        #expect(pids.allSatisfy { !processExists($0) })
        #expect(cluster.supervisor.workerPIDs.allSatisfy { $0 == nil })
        #expect(cluster.supervisor.workerReady == [false, false, false])
        #expect(TestClient.fetch(port: port).failure == .connect(errno: ECONNREFUSED), "sockets closed")
        await cluster.supervisor.shutdown()  // idempotent, returns at once
    }

    @Test func aCrashLoopGivesUpAndRunReturnsNonZero() async throws {
        let configuration = LiveCluster.configuration(
            workers: 1,
            mode: "crash",
            restartPolicy: RestartPolicy(initialBackoff: .milliseconds(10), maxBackoff: .milliseconds(100))
        )
        let cluster = try await LiveCluster.start(configuration, waitUntilReady: false)
        let code = try await cluster.run.value
        #expect(code != 0)
        let errors = cluster.logs.records.filter { $0.level == .error }.map(\.message)
        #expect(errors == ["worker slot 0 crashed 5 times in 30s; giving up"])
        let exits = cluster.logs.records("worker exited")
        #expect(exits.count == 5)
        #expect(exits.allSatisfy { $0.metadata["status"] == "exit 3" })
        #expect(cluster.logs.records("cluster ready").isEmpty)
    }

    @Test func aWorkerThatNeverReportsReadyFailsStartup() async throws {
        let configuration = LiveCluster.configuration(workers: 1, mode: "never-ready", readinessTimeout: .seconds(1))
        let cluster = try await LiveCluster.start(configuration, waitUntilReady: false)
        #expect(try await cluster.run.value == 1)
        #expect(cluster.logs.records.contains { $0.level == .error && $0.message == "worker slot 0 not ready after 1s; giving up" })
        // It was still drained gracefully.
        #expect(cluster.logs.records("worker exited").first?.metadata["status"] == "exit 0")
    }
}
