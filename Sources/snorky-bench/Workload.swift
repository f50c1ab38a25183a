import ArgumentParser
import NIOCore

enum BenchTarget: String, Sendable, Codable, CaseIterable, ExpressibleByArgument {
    /// Snorky's protocol: `pubsub.subscribe` over WebSocket, `pubsub.publish` or the
    /// backend API's `pubsub_backend.publish` to publish.
    case snorky
    /// Nchan: WebSocket subscribe at `/sub/CHANNEL`, HTTP POST publish at `/pub/CHANNEL`.
    case nchan
}

enum PublishVia: String, Sendable, Codable, CaseIterable, ExpressibleByArgument {
    /// HTTP POSTs: Snorky's backend API, or Nchan's publisher location.
    case backend
    /// WebSocket clients calling `pubsub.publish` (Snorky only).
    case client
    /// No publishing: connect, subscribe, hold, measure memory.
    case none
}

/// Everything a run needs, validated, with defaults resolved.
struct BenchSettings: Sendable, Codable {
    var target: BenchTarget
    var host: String
    var port: Int
    /// Snorky's WebSocket path; Nchan uses `/sub/…`.
    var path: String
    var publishPort: Int
    var backendKey: String
    var connections: Int
    var channels: Int
    var channelsPerConnection: Int
    var publishVia: PublishVia
    var publishers: Int
    var pipeline: Int
    /// Total publications per second; 0 publishes as fast as delivery keeps up.
    var rate: Double
    /// Messages published but not yet delivered everywhere, in "as fast as possible" mode.
    var window: Int
    var payloadSize: Int
    var duration: Double
    var messages: Int?
    var threads: Int
    var connectConcurrency: Int
    var sourceAddresses: Int
    var prime: Bool
    var primeTimeout: Double
    var settle: Double
    var hold: Double
    var drainTimeout: Double
    var connectTimeout: Double
    var serverPids: [Int32]
    var serverPidTrees: [Int32]
    var redisPid: Int32?
    var processes: Int
    var runID: String
    var label: String?
}

/// Which channels each connection subscribes to, their names, and the bytes each target
/// expects for subscribing and publishing. Shared read-only by every loop.
final class Workload: Sendable {
    let settings: BenchSettings
    /// Channel names, ASCII (letters, digits, underscore: safe in JSON and in URLs).
    let channelNames: [[UInt8]]
    /// Subscriptions per channel if every connection succeeds.
    let plannedSubscribers: [Int]
    /// Local addresses to spread connections over; empty uses the kernel's choice.
    let sourceAddresses: [SocketAddress]

    init(settings: BenchSettings, sourceAddresses: [SocketAddress]) {
        self.settings = settings
        self.sourceAddresses = sourceAddresses
        channelNames = (0..<settings.channels).map { Array("b\(settings.runID)_\($0)".utf8) }
        var counts = [Int](repeating: 0, count: settings.channels)
        for connection in 0..<settings.connections {
            for channel in Self.channels(ofConnection: connection, settings: settings) { counts[channel] += 1 }
        }
        plannedSubscribers = counts
    }

    /// Connection i takes K consecutive channels starting at i*K (mod C): every channel gets
    /// the same number of subscribers (±1) and a connection never repeats a channel while K <= C.
    static func channels(ofConnection connection: Int, settings: BenchSettings) -> [Int] {
        (0..<settings.channelsPerConnection).map {
            (connection * settings.channelsPerConnection + $0) % settings.channels
        }
    }

    func channels(ofConnection connection: Int) -> [Int] {
        Self.channels(ofConnection: connection, settings: settings)
    }

    func sourceAddress(forConnection index: Int) -> SocketAddress? {
        sourceAddresses.isEmpty ? nil : sourceAddresses[index % sourceAddresses.count]
    }

    func name(_ channel: Int) -> String {
        String(decoding: channelNames[channel], as: UTF8.self)
    }

    // MARK: Subscribing

    /// The WebSocket path a subscriber connects to.
    func subscribePath(channels: [Int]) -> String {
        switch settings.target {
        case .snorky:
            return settings.path
        case .nchan:
            // Several channels multiplex over one connection, split on "," by the generated config.
            return "/sub/" + channels.map(name).joined(separator: ",")
        }
    }

    /// Text frames to send once open, each answered by one response.
    func subscribeRequests(channels: [Int]) -> [[UInt8]] {
        switch settings.target {
        case .snorky:
            return channels.enumerated().map { callID, channel in
                Array(#"{"service":"pubsub","message":{"command":"subscribe","params":{"channel":""#.utf8)
                    + channelNames[channel]
                    + Array(#""},"callId":\#(callID)}}"#.utf8)
            }
        case .nchan:
            return []
        }
    }

    // MARK: Publishing

    /// A Snorky `pubsub.publish` request; `callId` is the channel index so an error reply
    /// says which channel's expected deliveries to take back.
    func writeClientPublish(_ fields: BenchPayload.Fields, into buffer: inout ByteBuffer) {
        buffer.writeString(#"{"service":"pubsub","message":{"command":"publish","params":{"channel":""#)
        buffer.writeBytes(channelNames[Int(fields.channel)])
        buffer.writeString(#"","message":""#)
        writeBody(fields, into: &buffer)
        buffer.writeString(#""},"callId":\#(fields.channel)}}"#)
    }

    /// The HTTP request publishing one message: Snorky's backend API or Nchan's publisher.
    func httpPublishRequest(_ fields: BenchPayload.Fields, allocator: ByteBufferAllocator) -> (HTTPRequestParts) {
        var body = allocator.buffer(capacity: BenchPayload.length(forPayloadSize: settings.payloadSize) + 160)
        let uri: String
        switch settings.target {
        case .snorky:
            uri = "/backend"
            body.writeString(#"{"service":"pubsub_backend","message":{"command":"publish","params":{"channel":""#)
            body.writeBytes(channelNames[Int(fields.channel)])
            body.writeString(#"","message":""#)
            writeBody(fields, into: &body)
            body.writeString(#""}}}"#)
        case .nchan:
            uri = "/pub/" + name(Int(fields.channel))
            writeBody(fields, into: &body)
        }
        return HTTPRequestParts(uri: uri, body: body)
    }

    private func writeBody(_ fields: BenchPayload.Fields, into buffer: inout ByteBuffer) {
        let length = BenchPayload.length(forPayloadSize: settings.payloadSize)
        buffer.writeWithUnsafeMutableBytes(minimumWritableBytes: length) { destination in
            BenchPayload.write(fields, payloadSize: settings.payloadSize, into: destination)
        }
    }
}

struct HTTPRequestParts {
    var uri: String
    var body: ByteBuffer
}
