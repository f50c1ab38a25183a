import Testing
@testable import SnorkySupervisor

@Suite struct WorkerEnvironmentTests {
    let complete = [
        "SNORKY_WORKER_SLOT": "2",
        "SNORKY_LISTEN_FDS": "3,4",
        "SNORKY_STATUS_FD": "5",
        "SNORKY_SUPERVISOR_PID": "1234",
        "SNORKY_REDIS": "unix:///tmp/snorky-1/redis.sock",
    ]

    @Test func parsesTheContract() throws {
        let worker = try #require(try WorkerEnvironment(environment: complete))
        #expect(worker == WorkerEnvironment(
            slot: 2,
            listenFDs: [3, 4],
            statusFD: 5,
            supervisorPID: 1234,
            redisURL: "unix:///tmp/snorky-1/redis.sock"
        ))
    }

    @Test func isNilOutsideAWorker() throws {
        #expect(try WorkerEnvironment(environment: ["PATH": "/bin"]) == nil)
    }

    @Test func redisIsOptional() throws {
        var environment = complete
        environment["SNORKY_REDIS"] = nil
        #expect(try WorkerEnvironment(environment: environment)?.redisURL == nil)
    }

    @Test(arguments: [
        ("SNORKY_LISTEN_FDS", "3,x"),
        ("SNORKY_LISTEN_FDS", ""),
        ("SNORKY_STATUS_FD", "-1"),
        ("SNORKY_SUPERVISOR_PID", "abc"),
        ("SNORKY_WORKER_SLOT", "one"),
    ])
    func rejectsMalformedValues(name: String, value: String) {
        var environment = complete
        environment[name] = value
        #expect {
            _ = try WorkerEnvironment(environment: environment)
        } throws: { error in
            (error as? SupervisorError)?.kind == .malformedWorkerEnvironment
        }
    }

    @Test func rejectsAMissingStatusFD() {
        var environment = complete
        environment["SNORKY_STATUS_FD"] = nil
        #expect(throws: SupervisorError.self) { _ = try WorkerEnvironment(environment: environment) }
    }
}
