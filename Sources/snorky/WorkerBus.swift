import ArgumentParser
import Logging
import NIOCore
import Snorky
import SnorkyConfig
import SnorkyRedis

/// Builds a supervised worker's bus and shared stores from the configuration: Redis at the
/// configured URL (the supervisor puts its private server's URL in SNORKY_REDIS when none is
/// configured), all under the same key prefix; in memory when the bus is memory.
enum WorkerBus {
    static func make(configuration: SnorkyConfiguration, group: any EventLoopGroup, logger: Logger) throws -> any Bus {
        guard configuration.bus == .redis else { return InMemoryBus() }
        var busConfiguration = RedisBusConfiguration(url: try redisURL(configuration))
        busConfiguration.channelPrefix = configuration.redisPrefix
        return RedisBus(configuration: busConfiguration, eventLoopGroup: group, logger: logger)
    }

    static func makeState(configuration: SnorkyConfiguration, group: any EventLoopGroup, logger: Logger) throws
        -> any ClusterState
    {
        guard configuration.bus == .redis else { return InMemoryClusterState() }
        var stateConfiguration = RedisClusterStateConfiguration(url: try redisURL(configuration))
        stateConfiguration.keyPrefix = configuration.redisPrefix
        return RedisClusterState(configuration: stateConfiguration, eventLoopGroup: group, logger: logger)
    }

    /// Datasync's shared token store; nil (the service's in-memory default) without Redis.
    static func makeSubscriptionStore(configuration: SnorkyConfiguration, logger: Logger) throws -> (any SubscriptionStore)? {
        guard configuration.bus == .redis else { return nil }
        return RedisSubscriptionStore(url: try redisURL(configuration), keyPrefix: configuration.redisPrefix, logger: logger)
    }

    private static func redisURL(_ configuration: SnorkyConfiguration) throws -> RedisURL {
        guard let url = configuration.redis else {
            throw ValidationError("no Redis URL: pass --redis redis://HOST:PORT or let `snorky serve` start one")
        }
        do {
            return try RedisURL(url)
        } catch {
            throw ValidationError("invalid --redis URL: \(error)")
        }
    }
}
