// End-to-end tests of the `snorky-bench` executable against an in-process worker: the
// numbers it reports must add up (everything published is delivered and counted once) on
// each publishing path, with helper processes and spread source addresses too.

import Foundation
import SnorkyTesting
import Testing

#if canImport(Glibc)
import Glibc
#endif

@Suite("snorky-bench", .serialized, .timeLimit(.minutes(2)))
struct BenchToolTests {
    /// Runs snorky-bench with `--json --quiet` and returns its exit code and parsed report.
    private func runBench(_ arguments: [String], timeout: Duration = .seconds(60)) async throws -> (Int32, [String: Any]?, String) {
        let executable = try SnorkyExecutable.locate(named: "snorky-bench")
        let process = try await ProcessHandle.launch(executable, arguments: arguments + ["--json", "--quiet"])
        let status = try await process.waitForExit(timeout: timeout)
        // The exit can be seen before the last output is read: read to the end of both pipes
        // (they close with the process; its helpers are gone before it exits).
        var stdoutLines: [String] = []
        var stderrLines: [String] = []
        for await line in process.lines {
            if line.stream == .stdout { stdoutLines.append(line.text) } else { stderrLines.append(line.text) }
        }
        let stdout = stdoutLines.joined(separator: "\n")
        let stderr = stderrLines.joined(separator: "\n")
        let report = (try? JSONSerialization.jsonObject(with: Data(stdout.utf8))) as? [String: Any]
        return (status, report, stderr)
    }

    private func target(_ worker: LiveWorker) -> [String] {
        ["--port", "\(worker.port)", "--publish-port", "\(worker.backendPort)", "--backend-key", LiveWorker.backendKey]
    }

    private func section(_ report: [String: Any]?, _ name: String) -> [String: Any] {
        report?[name] as? [String: Any] ?? [:]
    }

    @Test func backendPublishingDeliversEverythingOnce() async throws {
        let worker = try await LiveWorker.start()
        do {
            let (status, report, stderr) = try await runBench(target(worker) + [
                "--connections", "40", "--channels", "8", "--channels-per-connection", "2",
                "--rate", "400", "--duration", "1", "--server-pids", "\(getpid())",
            ])
            #expect(status == 0, "\(stderr)")
            let connections = section(report, "connections")
            #expect(connections["ready"] as? Int == 40)
            #expect(connections["subscriptions"] as? Int == 80)
            let delivery = section(report, "delivery")
            let expected = try #require(delivery["expected"] as? Int)
            // 40 connections x 2 channels over 8 channels: 10 subscribers per publication.
            let sent = try #require(section(report, "publishing")["sent"] as? Int)
            #expect(sent > 100)
            #expect(expected == sent * 10)
            #expect(delivery["delivered"] as? Int == expected)
            #expect(delivery["lost"] as? Int == 0)
            #expect(delivery["outOfOrder"] as? Int == 0)
            #expect(section(report, "latency")["count"] as? Int == expected)
            #expect(section(report, "server")["cpuSeconds"] is Double)
            #expect((report?["settings"] as? [String: Any])?["backendKey"] as? String == "(redacted)")
        } catch {
            await worker.shutdown()
            throw error
        }
        await worker.shutdown()
    }

    @Test func clientPublishingWithHelperProcessesAndSourceAddresses() async throws {
        let worker = try await LiveWorker.start()
        do {
            let (status, report, stderr) = try await runBench(target(worker) + [
                "--connections", "30", "--channels", "3", "--publish-via", "client",
                "--rate", "0", "--messages", "300", "--duration", "20",
                "--processes", "2", "--source-addresses", "2",
            ])
            #expect(status == 0, "\(stderr)")
            let connections = section(report, "connections")
            #expect(connections["ready"] as? Int == 30)
            #expect(connections["clientProcesses"] as? Int == 2)
            #expect(connections["sourceAddresses"] as? Int == 2)
            #expect(section(report, "publishing")["sent"] as? Int == 300)
            // Every channel has 10 subscribers; half of them live in the helper process.
            let delivery = section(report, "delivery")
            #expect(delivery["expected"] as? Int == 3000)
            #expect(delivery["delivered"] as? Int == 3000)
            #expect(delivery["lost"] as? Int == 0)
            #expect(section(report, "latency")["count"] as? Int == 3000)
        } catch {
            await worker.shutdown()
            throw error
        }
        await worker.shutdown()
    }

    @Test func idleRunReportsMemoryOnly() async throws {
        let worker = try await LiveWorker.start()
        do {
            let (status, report, stderr) = try await runBench(target(worker) + [
                "--connections", "50", "--channels", "50", "--publish-via", "none",
                "--settle", "0.1", "--hold", "0.1", "--server-pids", "\(getpid())",
            ])
            #expect(status == 0, "\(stderr)")
            #expect(section(report, "connections")["ready"] as? Int == 50)
            #expect(report?["delivery"] == nil)
            #expect(section(report, "server")["rssPerConnectionBytes"] is Double)
        } catch {
            await worker.shutdown()
            throw error
        }
        await worker.shutdown()
    }

    @Test func refusesAddressesOffThisMachine() async throws {
        let (status, _, stderr) = try await runBench(["--host", "10.1.2.3", "--backend-key", "k"])
        #expect(status != 0)
        #expect(stderr.contains("loopback"))
    }
}
