public import SnorkyProtocol
import Synchronization

/// One RPC call in flight. It is resolved exactly once: by the framework from a command's
/// return value, or by a deferred command calling `reply`/`fail`, possibly much later and
/// from another client's event. Later resolutions are ignored, and a request dropped
/// unresolved answers `Internal error` so no caller waits forever.
public final class Request: Sendable {
    public let client: Client
    public let service: String
    public let command: String
    /// nil when the call had no `callId` (or a null one).
    public let callId: JSON?
    private let resolved = Atomic<Bool>(false)

    public init(client: Client, service: String, command: String, callId: JSON?) {
        self.client = client
        self.service = service
        self.command = command
        self.callId = callId
    }

    deinit {
        if !resolved.load(ordering: .acquiring) {
            client.node.logger.error(
                "request dropped without a reply",
                metadata: ["service": "\(service)", "command": "\(command)"]
            )
            client.send(service: service, message: RPCMessage.error(callId: callId, message: RPCErrorMessage.internalError))
        }
    }

    public var isResolved: Bool {
        resolved.load(ordering: .acquiring)
    }

    /// Answers with `data` (the response's `data` field).
    public func reply(_ data: some JSONEncodable) {
        guard claim() else { return }
        client.send(service: service, message: RPCMessage.response(callId: callId, data: data.json))
    }

    /// Answers with `null`.
    public func reply() {
        reply(JSON.null)
    }

    /// Fails with the error's message.
    public func fail(_ error: RPCError) {
        guard claim() else { return }
        client.send(service: service, message: RPCMessage.error(callId: callId, message: error.message))
    }

    public func fail(_ message: String) {
        fail(RPCError(message))
    }

    /// Fails with `Internal error`; the details go to the log, never to the client.
    public func fail(dueTo error: any Error) {
        if let rpcError = error as? RPCError {
            fail(rpcError)
            return
        }
        client.node.logger.error(
            "command failed",
            metadata: ["service": "\(service)", "command": "\(command)", "error": "\(String(reflecting: error))"]
        )
        fail(.internalError)
    }

    private func claim() -> Bool {
        if resolved.compareExchange(expected: false, desired: true, ordering: .acquiringAndReleasing).exchanged {
            return true
        }
        client.node.logger.debug(
            "request resolved twice; ignoring", metadata: ["service": "\(service)", "command": "\(command)"])
        return false
    }
}
