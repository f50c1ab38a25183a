public import NIOCore

/// Settings of `RedisBus`. Every field has a production default; tests shorten the delays.
public struct RedisBusConfiguration: Sendable {
    /// Where Redis is.
    public var url: RedisURL
    /// Redis channel of topic `t` is `"<channelPrefix>:<t>"`. Default `snorky`.
    public var channelPrefix: String = "snorky"
    /// How long a topic stays subscribed upstream after its last local subscriber left
    /// (re-checked when it fires). Default 1 s.
    public var unsubscribeDelay: TimeAmount = .seconds(1)
    /// How long `publish` waits for its own publication to come back when this worker
    /// subscribes to the topic; it returns anyway afterwards. Default 1 s.
    public var localDeliveryTimeout: TimeAmount = .seconds(1)
    /// Connect and reply timeouts of both connections (a late reply closes the connection,
    /// which reconnects). Defaults 2 s and 5 s.
    public var connection = RedisConnectionConfiguration()
    /// Delay between reconnect attempts: 50 ms doubling to 1 s, jitter 50 %.
    public var reconnectBackoff = ReconnectBackoff()
    /// An idle subscriber connection is PINGed this often so a dead peer is noticed even
    /// without a TCP reset. nil disables. Default 10 s.
    public var pingInterval: TimeAmount? = .seconds(10)
    /// Largest payload `publish` accepts (`BusError.payloadTooLarge` beyond). Default 64 MiB.
    public var maxPayloadBytes: Int = 64 << 20
    /// Topics per SUBSCRIBE when re-subscribing after a reconnect. Default 1,000.
    public var resubscribeBatchSize: Int = 1000

    public init(url: RedisURL) {
        self.url = url
    }

    public init(url: String) throws(RedisError) {
        self.url = try RedisURL(url)
    }
}
