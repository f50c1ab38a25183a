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

    /// `write` then `flush`, which a transport may do in one step. Must be called on
    /// `eventLoop`.
    func writeAndFlush(_ frame: OutboundFrame)

    /// Closes the connection with a WebSocket close code. Callable from any thread.
    func close(code: UInt16, reason: String)

    /// The hub's write bookkeeping for this connection (one instance per transport).
    var writeState: TransportWriteState { get }
}

extension Transport {
    public func writeAndFlush(_ frame: OutboundFrame) {
        write(frame)
        flush()
    }
}

/// What the hub's per-loop writer remembers about one connection between batches: whether
/// it has unflushed frames and when it was last flushed, so a busy connection's frames are
/// coalesced into fewer writes.
// @unchecked Sendable invariant: the fields are read and written only on the transport's
// event loop, by the hub's writer for that loop; other threads only pass the reference on.
public final class TransportWriteState: @unchecked Sendable {
    var unflushedBytes = 0
    var lastFlush = NIODeadline.uptimeNanoseconds(0)
    /// In the writer's list of connections written in the current batch.
    var isDirty = false
    /// In the writer's list of connections waiting for their write delay.
    var isDeferred = false

    public init() {}
}
