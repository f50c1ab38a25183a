public import NIOCore

/// Receives the publications of subscribed topics. The hub is the receiver in a worker.
public protocol BusReceiver: AnyObject, Sendable {
    /// `payload` is the notification exactly as clients receive it (an encoded envelope).
    func deliver(topic: String, payload: ByteBuffer)
}

/// The channel between workers and nodes (Redis in a cluster, in memory in one process).
///
/// Topics are reference-counted per worker: `subscribe` and `unsubscribe` are called once
/// per local subscriber, and the bus subscribes upstream on the first and releases (after a
/// short, re-checked delay) after the last.
public protocol Bus: AnyObject, Sendable {
    /// Starts delivering publications to `receiver`.
    func start(receiver: any BusReceiver) async throws

    /// Adds one local reference to `topic`. Returns once publications on the topic are
    /// delivered, or at once while the bus is down (the subscription is then established
    /// when it comes back).
    func subscribe(topic: String) async

    /// Drops one local reference to `topic`.
    func unsubscribe(topic: String)

    /// Publishes `payload` to every subscriber of `topic` on every worker and node.
    /// Returns once the bus has accepted it and, if this worker subscribes to the topic,
    /// after the local delivery has been queued, so a caller's own notifications precede
    /// its response. Throws `BusError.unavailable` when the bus cannot take it.
    func publish(topic: String, payload: ByteBuffer) async throws(BusError)
    /// `publish(topic:payload:)` without suspending, for a caller on an event loop that
    /// starts no task (the backend API's publish): the publication is handed over before
    /// this returns, so calls made in order are published in order, and the future,
    /// completed on `loop`, fails with a `BusError`. nil when this bus cannot take a
    /// publication without suspending (the default): the caller uses `publish` instead.
    func publish(topic: String, payload: ByteBuffer, on loop: any EventLoop) -> EventLoopFuture<Void>?

    func shutdown() async

    /// How many times the bus reconnected after losing its transport (for metrics).
    var reconnectCount: Int { get }

    /// Messages the bus received but could not deliver: malformed, or of an unknown
    /// envelope version (for metrics).
    var droppedPublicationCount: Int { get }
}

extension Bus {
    public func publish(topic: String, payload: ByteBuffer, on loop: any EventLoop) -> EventLoopFuture<Void>? { nil }

    /// A bus with nothing to reconnect to never reconnects.
    public var reconnectCount: Int { 0 }

    public var droppedPublicationCount: Int { 0 }
}

public struct BusError: Error, Sendable, Equatable, CustomStringConvertible {
    private enum Kind: Equatable {
        case unavailable
        case payloadTooLarge
    }

    private let kind: Kind
    public let detail: String

    /// The bus cannot carry publications right now (e.g. Redis is unreachable).
    public static func unavailable(_ detail: String) -> BusError { BusError(kind: .unavailable, detail: detail) }
    public static func payloadTooLarge(_ detail: String) -> BusError { BusError(kind: .payloadTooLarge, detail: detail) }

    public var isUnavailable: Bool { kind == .unavailable }

    public var description: String {
        switch kind {
        case .unavailable: "bus unavailable: \(detail)"
        case .payloadTooLarge: "publication too large: \(detail)"
        }
    }

    public static func == (lhs: BusError, rhs: BusError) -> Bool { lhs.kind == rhs.kind }
}
