public import NIOCore

/// The connection under a `Client`: a WebSocket channel in the server, a recording stub in
/// tests. Everything lives on one event loop, so fan-out can write to many transports of a
/// loop in one task and flush each once. Services never write to a transport directly:
/// `Client.send` and `Client.close` go through the hub's per-loop queue, which keeps a
/// connection's frames in the order they were produced.
public protocol Transport: AnyObject, Sendable {
    var eventLoop: any EventLoop { get }

    /// Writes without flushing. Must be called on `eventLoop`.
    func write(_ frame: OutboundFrame)

    /// Flushes pending writes. Must be called on `eventLoop`.
    func flush()

    /// Closes the connection with a WebSocket close code. Callable from any thread.
    func close(code: UInt16, reason: String)
}
