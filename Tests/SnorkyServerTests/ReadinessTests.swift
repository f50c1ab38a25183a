import NIOCore
import Snorky
import SnorkyServer
import SnorkyTesting
import Testing

/// A bus that accepts publications and silently never delivers them: the failure `/ready`
/// exists to catch.
final class SilentBus: Bus {
    func start(receiver: any BusReceiver) async throws {}
    func subscribe(topic: String) async {}
    func unsubscribe(topic: String) {}
    func publish(topic: String, payload: ByteBuffer) async throws(BusError) {}
    func shutdown() async {}
}

@Suite("GET /ready: accepting, and the bus delivering")
struct ReadinessTests {
    @Test("ready once a probe sent through the bus came back")
    func readyAndDraining() async throws {
        let worker = try await LiveWorker.start()
        try await eventually(timeout: .seconds(15)) {
            try await HTTPTestClient.get(host: "127.0.0.1", port: worker.backendPort, path: "/ready").status == 200
        }
        let ready = try await HTTPTestClient.get(host: "127.0.0.1", port: worker.backendPort, path: "/ready")
        #expect(try JSON.parse(ready.body) == ["ready": true, "accepting": true, "bus": true])
        await worker.shutdown()
    }

    @Test("a bus that swallows publications makes the worker not ready (503)")
    func silentBusIsNotReady() async throws {
        let worker = try await LiveWorker.start(bus: SilentBus())
        // Several probe rounds fail; the answer must stay 503.
        for _ in 0..<3 {
            let reply = try await HTTPTestClient.get(host: "127.0.0.1", port: worker.backendPort, path: "/ready")
            #expect(reply.status == 503)
            #expect(try JSON.parse(reply.body)["bus"] == false)
        }
        await worker.shutdown()
    }
}
