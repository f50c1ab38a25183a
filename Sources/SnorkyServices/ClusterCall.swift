import Snorky

/// Runs one operation on the cluster state or the bus for a command, and turns its failure
/// into what the caller may see: `Service unavailable` while Redis (or whatever backs the
/// cluster) cannot be reached, `Internal error` for anything else. The details are logged,
/// never sent to the client.
enum ClusterCall {
    static func run<Result>(
        _ node: Node,
        _ operation: String,
        _ body: () async throws(BusError) -> Result
    ) async throws(RPCError) -> Result {
        do {
            return try await body()
        } catch {
            node.logger.warning("cluster operation failed", metadata: ["operation": "\(operation)", "error": "\(error)"])
            throw error.isUnavailable ? .serviceUnavailable : .internalError
        }
    }

    /// For cleanup that has no caller to answer (a disconnect, a reap): logs and carries on.
    static func attempt(_ node: Node, _ operation: String, _ body: () async throws(BusError) -> Void) async {
        do {
            try await body()
        } catch {
            node.logger.warning("cluster cleanup failed", metadata: ["operation": "\(operation)", "error": "\(error)"])
        }
    }
}
