public import NIOCore
public import SnorkyProtocol

/// A named endpoint clients talk to with `{"service": name, "message": ...}`.
///
/// Implement it as an `actor` (or a `Sendable` class) to get raw messages; most services
/// are `RPCService`s instead, declared with `@RPCService` and `@Command`.
public protocol Service: AnyObject, Sendable {
    /// The name clients address; chosen when the server is assembled.
    var name: String { get }

    func clientConnected(_ client: Client) async
    func clientDisconnected(_ client: Client) async

    /// Handles one message sent to this service by `client`.
    func handle(message: JSON, from client: Client) async

    /// Cluster state owned by clients of a worker or node that died was removed by this
    /// node; send the notifications its owners could not (e.g. chat `left`). Called on one
    /// surviving node only. Also called with the state of this node's own departed clients
    /// when its removal had to wait for the state to answer again
    /// (`Node.removeState(ownedBy:in:)`).
    func stateReaped(_ reaped: ReapedState) async

    /// Whether requests pipelined on one backend HTTP connection may be handled at the same
    /// time (their replies are still written in request order). Say yes only when handling
    /// never suspends before it has done everything whose order matters: calls start in
    /// request order on the connection's event loop, so they then get that far in order.
    /// `pubsub_backend` qualifies (nothing suspends before the publication is handed to the
    /// bus), which is what lets a backend publish thousands of messages a second on one
    /// connection. Default false: each call waits until the one before it is answered.
    var runsPipelinedBackendRequestsConcurrently: Bool { get }
    /// Starts a backend request without a task, when this service can for `message`:
    /// returns a future, completed on `loop`, of the reply message `handle(message:from:)`
    /// would send (an RPC response or error); nil has the request handled by `handle` in a
    /// task as usual. Worth it for a hot command that only encodes its request and hands it
    /// on (`pubsub_backend`'s `publish`): there a task costs more than the rest of the work,
    /// and it makes the worker's hottest path at low rates longer. Default nil.
    func startBackendRequest(_ message: JSON, on loop: any EventLoop) -> EventLoopFuture<JSON>?
}

extension Service {
    public func clientConnected(_ client: Client) async {}
    public func clientDisconnected(_ client: Client) async {}
    public func stateReaped(_ reaped: ReapedState) async {}
    public var runsPipelinedBackendRequestsConcurrently: Bool { false }
    public func startBackendRequest(_ message: JSON, on loop: any EventLoop) -> EventLoopFuture<JSON>? { nil }

    /// Sends `message` to `client` on this service.
    public func send(_ message: JSON, to client: Client) {
        client.send(service: name, message: message)
    }
}
