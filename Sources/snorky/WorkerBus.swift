import ArgumentParser
import Logging
import NIOCore
import Snorky
import SnorkyConfig
import SnorkyRedis

/// Builds a supervised worker's bus and cluster state from the configuration.
enum WorkerBus {
    /// The bus a supervised worker uses: Redis at the configured URL (the supervisor puts
    /// its private server's URL in SNORKY_REDIS when none is configured).
    static func make(configuration: SnorkyConfiguration, group: any EventLoopGroup, logger: Logger) throws -> any Bus {
        switch configuration.bus {
        case .memory:
            return InMemoryBus()
        case .redis:
            guard let url = configuration.redis else {
                throw ValidationError("no Redis URL: pass --redis redis://HOST:PORT or let `snorky serve` start one")
            }
            var busConfiguration: RedisBusConfiguration
            do {
                busConfiguration = try RedisBusConfiguration(url: url)
            } catch {
                throw ValidationError("invalid --redis URL: \(error)")
            }
            busConfiguration.channelPrefix = configuration.redisPrefix
            return RedisBus(configuration: busConfiguration, eventLoopGroup: group, logger: logger)
        }
    }

    /// The cluster state: Redis (same URL and prefix as the bus) unless the bus is memory.
    static func makeState(configuration: SnorkyConfiguration, group: any EventLoopGroup, logger: Logger) throws
        -> any ClusterState
    {
        guard configuration.bus == .redis else { return InMemoryClusterState() }
        guard let url = configuration.redis else {
            throw ValidationError("no Redis URL: pass --redis redis://HOST:PORT or let `snorky serve` start one")
        }
        var stateConfiguration: RedisClusterStateConfiguration
        do {
            stateConfiguration = try RedisClusterStateConfiguration(url: url)
        } catch {
            throw ValidationError("invalid --redis URL: \(error)")
        }
        stateConfiguration.keyPrefix = configuration.redisPrefix
        return RedisClusterState(configuration: stateConfiguration, eventLoopGroup: group, logger: logger)
    }

    /// Datasync's shared token store: in Redis (same URL and prefix) unless the bus is memory.
    static func makeSubscriptionStore(configuration: SnorkyConfiguration, logger: Logger) throws -> (any SubscriptionStore)? {
        guard configuration.bus == .redis, let url = configuration.redis else { return nil }
        do {
            return RedisSubscriptionStore(url: try RedisURL(url), keyPrefix: configuration.redisPrefix, logger: logger)
        } catch {
            throw ValidationError("invalid --redis URL: \(error)")
        }
    }
}
