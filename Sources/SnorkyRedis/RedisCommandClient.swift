public import Logging
public import NIOCore
public import Snorky
import Synchronization

/// A Lua script for `EVALSHA`: its source and the SHA-1 Redis knows it by.
///
/// The digest is computed here rather than asked from Redis (`SCRIPT LOAD`) so that a
/// script is a plain value: nothing to load at connect and nothing to forget after a
/// failover or `SCRIPT FLUSH`. `RedisCommandClient.evaluate` falls back to `EVAL` (which
/// caches the script again) when Redis answers `NOSCRIPT`.
public struct RedisScript: Sendable, Hashable {
    public let source: String
    /// Lowercase hex, as Redis prints it.
    public let sha1: String

    public init(_ source: String) {
        self.source = source
        self.sha1 = SHA1.hexDigest(Array(source.utf8))
    }
}

/// FIPS 180-4 SHA-1, only to name scripts the way Redis does (not for security).
enum SHA1 {
    static func hexDigest(_ message: [UInt8]) -> String {
        var h: (UInt32, UInt32, UInt32, UInt32, UInt32) = (0x6745_2301, 0xEFCD_AB89, 0x98BA_DCFE, 0x1032_5476, 0xC3D2_E1F0)
        var padded = message
        padded.append(0x80)
        while padded.count % 64 != 56 { padded.append(0) }
        let bitLength = UInt64(message.count) &* 8
        for shift in stride(from: 56, through: 0, by: -8) { padded.append(UInt8(truncatingIfNeeded: bitLength >> UInt64(shift))) }

        var w = [UInt32](repeating: 0, count: 80)
        for chunk in stride(from: 0, to: padded.count, by: 64) {
            for i in 0..<16 {
                let b = chunk + i * 4
                w[i] = UInt32(padded[b]) << 24 | UInt32(padded[b + 1]) << 16 | UInt32(padded[b + 2]) << 8 | UInt32(padded[b + 3])
            }
            for i in 16..<80 { w[i] = (w[i - 3] ^ w[i - 8] ^ w[i - 14] ^ w[i - 16]).rotatedLeft(1) }
            var (a, b, c, d, e) = h
            for i in 0..<80 {
                let f: UInt32
                let k: UInt32
                switch i {
                case 0..<20: (f, k) = ((b & c) | (~b & d), 0x5A82_7999)
                case 20..<40: (f, k) = (b ^ c ^ d, 0x6ED9_EBA1)
                case 40..<60: (f, k) = ((b & c) | (b & d) | (c & d), 0x8F1B_BCDC)
                default: (f, k) = (b ^ c ^ d, 0xCA62_C1D6)
                }
                let t = a.rotatedLeft(5) &+ f &+ e &+ k &+ w[i]
                (e, d, c, b, a) = (d, c, b.rotatedLeft(30), a, t)
            }
            h = (h.0 &+ a, h.1 &+ b, h.2 &+ c, h.3 &+ d, h.4 &+ e)
        }
        let words = [h.0, h.1, h.2, h.3, h.4]
        let digits = Array("0123456789abcdef".utf8)
        var text: [UInt8] = []
        text.reserveCapacity(40)
        for word in words {
            for shift in stride(from: 28, through: 0, by: -4) {
                text.append(digits[Int((word >> UInt32(shift)) & 0xF)])
            }
        }
        return String(decoding: text, as: UTF8.self)
    }
}

extension UInt32 {
    fileprivate func rotatedLeft(_ count: UInt32) -> UInt32 { self << count | self >> (32 - count) }
}

/// One Redis command connection that re-establishes itself: the connection is opened on
/// first use, and after a loss it is reopened in the background with backoff.
///
/// Commands never queue behind an outage: while no connection is up (waiting for the next
/// attempt) they fail at once with `BusError.unavailable`; while an attempt is in flight
/// they wait for it, which the connect timeout bounds; on a live connection the command
/// timeout bounds the reply (a late reply closes the connection, which reconnects).
/// Commands are never retried: after a lost reply nobody knows whether Redis ran them.
///
/// Concurrency: the connection state lives on `eventLoop` (the connection's loop too), in
/// a loop-bound box; each command hops there once, which it must do anyway to be written.
public final class RedisCommandClient: Sendable {
    public let url: RedisURL
    public let eventLoop: any EventLoop

    private let connectionConfiguration: RedisConnectionConfiguration
    private let backoff: ReconnectBackoff
    private let logger: Logger
    private let state: NIOLoopBoundBox<State>
    private let connected = Atomic<Bool>(false)
    private let reconnects = Atomic<Int>(0)

    private enum Phase {
        case idle
        /// An attempt is in flight; commands wait on it.
        case connecting(EventLoopPromise<RedisConnection>)
        case connected(RedisConnection)
        /// Waiting for the next attempt; commands fail at once.
        case waiting(Scheduled<Void>)
        case shutdown
    }

    /// Confined to `eventLoop`.
    private final class State {
        var phase = Phase.idle
        /// Identifies the current connection; close notifications of older ones are ignored.
        var generation = 0
        var failedAttempts = 0
        var hasConnected = false
    }

    public init(
        url: RedisURL,
        connection: RedisConnectionConfiguration = RedisConnectionConfiguration(),
        reconnectBackoff: ReconnectBackoff = ReconnectBackoff(),
        eventLoop: any EventLoop,
        logger: Logger
    ) {
        self.url = url
        self.eventLoop = eventLoop
        self.connectionConfiguration = connection
        self.backoff = reconnectBackoff
        self.logger = logger
        self.state = .makeBoxSendingValue(State(), eventLoop: eventLoop)
    }

    /// Whether a connection is up right now.
    public var isConnected: Bool { connected.load(ordering: .relaxed) }

    /// How many times a lost connection was re-established.
    public var reconnectCount: Int { reconnects.load(ordering: .relaxed) }

    /// Opens the connection if nobody did yet and waits for that first attempt; does not
    /// throw (a failed attempt is retried in the background).
    public func start() async {
        _ = try? await eventLoop.flatSubmit { self.connectionOnLoop() }.get()
    }

    /// Sends one command. Error replies and every connection problem throw
    /// `BusError.unavailable`.
    public func send(_ arguments: [RESPArgument]) async throws(BusError) -> RESPValue {
        let reply = eventLoop.flatSubmit { self.connectionOnLoop() }.flatMap { $0.submit(arguments) }
        do {
            return try await reply.get()
        } catch {
            throw Self.unavailable(error)
        }
    }

    /// Runs `script` with `EVALSHA`, or `EVAL` when Redis does not have it cached.
    public func evaluate(_ script: RedisScript, keys: [RESPArgument] = [], arguments: [RESPArgument]) async throws(BusError)
        -> RESPValue
    {
        let tail: [RESPArgument] = [.integer(keys.count)] + keys + arguments
        let reply = eventLoop.flatSubmit { self.connectionOnLoop() }.flatMap { connection in
            connection.submit(["EVALSHA", .string(script.sha1)] + tail).flatMapError { error in
                // Only NOSCRIPT means the script did not run, so only then is it safe to send again.
                guard let redisError = error as? RedisError, redisError.code == .errorReply,
                    redisError.message.hasPrefix("NOSCRIPT")
                else {
                    return connection.eventLoop.makeFailedFuture(error)
                }
                return connection.submit(["EVAL", .string(script.source)] + tail)
            }
        }
        do {
            return try await reply.get()
        } catch {
            throw Self.unavailable(error)
        }
    }

    /// Closes the connection and stops reconnecting; later commands throw `unavailable`.
    public func shutdown() async {
        try? await eventLoop.flatSubmit { self.shutdownOnLoop() }.get()
    }

    private static func unavailable(_ error: any Error) -> BusError {
        if let error = error as? BusError { return error }
        if let error = error as? RedisError {
            return error.code == .errorReply ? .unavailable("Redis replied \(error.message)") : .unavailable("\(error)")
        }
        return .unavailable("\(error)")
    }

    // MARK: On the loop

    private func connectionOnLoop() -> EventLoopFuture<RedisConnection> {
        let state = self.state.value
        switch state.phase {
        case .connected(let connection):
            return eventLoop.makeSucceededFuture(connection)
        case .connecting(let attempt):
            return attempt.futureResult
        case .idle:
            return connect(state: state)
        case .waiting:
            return eventLoop.makeFailedFuture(BusError.unavailable("not connected to Redis at \(url) (reconnecting)"))
        case .shutdown:
            return eventLoop.makeFailedFuture(BusError.unavailable("Redis client shut down"))
        }
    }

    private func connect(state: State) -> EventLoopFuture<RedisConnection> {
        state.generation += 1
        let generation = state.generation
        let attempt = eventLoop.makePromise(of: RedisConnection.self)
        state.phase = .connecting(attempt)
        RedisConnection.makeConnection(to: url, configuration: connectionConfiguration, eventLoop: eventLoop)
            .whenComplete { result in self.attemptFinished(generation, result, attempt) }
        return attempt.futureResult
    }

    private func attemptFinished(
        _ generation: Int, _ result: Result<RedisConnection, any Error>, _ attempt: EventLoopPromise<RedisConnection>
    ) {
        let state = self.state.value
        guard case .connecting = state.phase, state.generation == generation else {
            // Shut down meanwhile (which already failed the attempt).
            if case .success(let connection) = result { connection.channel.close(promise: nil) }
            attempt.fail(BusError.unavailable("Redis client shut down"))
            return
        }
        switch result {
        case .success(let connection):
            state.phase = .connected(connection)
            connected.store(true, ordering: .relaxed)
            if state.hasConnected {
                reconnects.add(1, ordering: .relaxed)
                logger.notice("reconnected to Redis", metadata: ["failedAttempts": "\(state.failedAttempts)"])
            } else {
                logger.debug("connected to Redis")
            }
            state.hasConnected = true
            state.failedAttempts = 0
            // Registered after the phase change: an already closed channel is handled at once.
            connection.closeFuture.whenComplete { _ in self.connectionLost(generation: generation) }
            attempt.succeed(connection)
        case .failure(let error):
            state.failedAttempts += 1
            let delay = scheduleReconnect(state: state)
            let metadata: Logger.Metadata = [
                "error": "\(error)", "attempt": "\(state.failedAttempts)", "retryIn": "\(delay.nanoseconds / 1_000_000) ms",
            ]
            if state.failedAttempts == 1 {
                logger.warning("cannot connect to Redis; retrying", metadata: metadata)
            } else {
                logger.debug("cannot connect to Redis; retrying", metadata: metadata)
            }
            attempt.fail(Self.unavailable(error))
        }
    }

    private func connectionLost(generation: Int) {
        let state = self.state.value
        guard state.generation == generation, case .connected = state.phase else { return }
        connected.store(false, ordering: .relaxed)
        let delay = scheduleReconnect(state: state)
        logger.warning("lost connection to Redis; reconnecting", metadata: ["retryIn": "\(delay.nanoseconds / 1_000_000) ms"])
    }

    private func scheduleReconnect(state: State) -> TimeAmount {
        let delay = backoff.delay(attempt: state.failedAttempts, random: Double.random(in: 0..<1))
        state.phase = .waiting(
            eventLoop.scheduleTask(in: delay) {
                let state = self.state.value
                guard case .waiting = state.phase else { return }
                _ = self.connect(state: state)
            })
        return delay
    }

    private func shutdownOnLoop() -> EventLoopFuture<Void> {
        let state = self.state.value
        let previous = state.phase
        state.phase = .shutdown
        connected.store(false, ordering: .relaxed)
        switch previous {
        case .idle, .shutdown:
            return eventLoop.makeSucceededVoidFuture()
        case .waiting(let scheduled):
            scheduled.cancel()
            return eventLoop.makeSucceededVoidFuture()
        case .connecting(let attempt):
            // attemptFinished closes the connection if it still succeeds.
            attempt.fail(BusError.unavailable("Redis client shut down"))
            return eventLoop.makeSucceededVoidFuture()
        case .connected(let connection):
            connection.channel.close(promise: nil)
            return connection.closeFuture
        }
    }
}
