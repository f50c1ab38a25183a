/// Where a client lives in the cluster: its node (worker) and its id there. Stored in
/// cluster state (participant owners, chat connections, cursor owners) and used to send
/// a message to one client on any worker of any node.
public struct ClientAddress: Hashable, Sendable, CustomStringConvertible {
    public var nodeID: String
    public var clientID: UInt64

    public init(nodeID: String, clientID: UInt64) {
        self.nodeID = nodeID
        self.clientID = clientID
    }

    /// `nodeID/clientID`; node ids never contain `/`.
    public var description: String { "\(nodeID)/\(clientID)" }

    public init?(_ text: String) {
        guard let slash = text.lastIndex(of: "/"), let id = UInt64(text[text.index(after: slash)...]) else {
            return nil
        }
        self.init(nodeID: String(text[..<slash]), clientID: id)
    }
}
