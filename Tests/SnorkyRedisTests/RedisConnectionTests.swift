#if canImport(Glibc)
import Glibc
#endif
import NIOCore
import SnorkyTesting
import Testing

@testable import SnorkyRedis

@Suite("Redis server process (test harness)")
struct RedisServerProcessTests {
    @Test func startsOnAUnixSocketAndCleansUp() async throws {
        var directory = ""
        var pid: Int32 = 0
        do {
            let redis = try await RedisServerProcess()
            defer { withExtendedLifetime(redis) {} }  // keep the server until the end
            directory = redis.directory
            pid = try #require(redis.pid)
            #expect(redis.url.hasPrefix("unix:///tmp/"))
            #expect(redis.port == nil)
            #expect(try redis.command(["PING"]) == "PONG")
            #expect(try redis.command(["CONFIG", "GET", "port"]) == "port\n0")
            #expect(try redis.commandLines(["CONFIG", "GET", "save"]) == ["save"])
        }
        // deinit stopped the server and removed the directory.
        #expect(kill(pid, 0) != 0)
        #expect(access(directory, F_OK) != 0)
    }

    @Test func tcpOnlyRestartAndKill() async throws {
        let redis = try await RedisServerProcess(unixSocket: false, tcp: true)
        defer { withExtendedLifetime(redis) {} }  // keep the server until the end
        let port = try #require(redis.port)
        #expect(redis.url == "redis://127.0.0.1:\(port)")
        try redis.command(["SET", "k", "v"])
        #expect(try redis.command(["GET", "k"]) == "v")

        redis.stop()
        #expect(!redis.isRunning)
        #expect(throws: (any Error).self) { try redis.command(["PING"]) }
        try await redis.restart()
        #expect(try redis.command(["PING"]) == "PONG")
        #expect(try redis.command(["GET", "k"]) == "")  // no persistence

        let pid = try #require(redis.pid)
        redis.kill()
        #expect(kill(pid, 0) != 0)
        try await redis.restart()
        #expect(redis.isRunning)
        redis.remove()
        #expect(!redis.isRunning)
    }

    @Test func bothSocketAndTCP() async throws {
        let redis = try await RedisServerProcess(unixSocket: true, tcp: true)
        defer { withExtendedLifetime(redis) {} }  // keep the server until the end
        #expect(redis.unixURL != nil)
        #expect(redis.tcpURL != nil)
        #expect(redis.url == redis.unixURL)
        let viaTCP = try await RedisConnection.connect(to: RedisURL(try #require(redis.tcpURL)))
        #expect(try await viaTCP.send(["PING"]) == .simpleString("PONG"))
        await viaTCP.close()
    }
}

@Suite("Redis command connection")
struct RedisConnectionTests {
    @Test func setGetAndTypes() async throws {
        let redis = try await RedisServerProcess()
        defer { withExtendedLifetime(redis) {} }  // keep the server until the end
        let connection = try await RedisConnection.connect(to: RedisURL(redis.url))
        #expect(try await connection.send(["SET", "greeting", "hello"]) == .simpleString("OK"))
        #expect(try await connection.send(["GET", "greeting"]) == .bulkString("hello"))
        #expect(try await connection.send(["GET", "missing"]) == .null)
        #expect(try await connection.send(["INCRBY", "n", 41]) == .integer(41))
        #expect(try await connection.send(["INCR", "n"]) == .integer(42))
        let binary = ByteBuffer(bytes: (0...255).map { UInt8($0) })
        try await connection.send(["SET", "bin", .bytes(binary)])
        #expect(try await connection.send(["GET", "bin"]) == .bulkString(binary))
        try await connection.send(["RPUSH", "list", "a", "b", "c"])
        #expect(
            try await connection.send(["LRANGE", "list", 0, -1])
                == .array([.bulkString("a"), .bulkString("b"), .bulkString("c")])
        )
        let big = ByteBuffer(repeating: 0x5A, count: 2 << 20)
        try await connection.send(["SET", "big", .bytes(big)])
        #expect(try await connection.send(["GET", "big"]) == .bulkString(big))
        await connection.close()
    }

    @Test func errorRepliesThrowAndTheConnectionCarriesOn() async throws {
        let redis = try await RedisServerProcess()
        defer { withExtendedLifetime(redis) {} }  // keep the server until the end
        let connection = try await RedisConnection.connect(to: RedisURL(redis.url))
        do {
            try await connection.send(["NOSUCHCOMMAND", "x"])
            Issue.record("expected an error reply")
        } catch let error as RedisError {
            #expect(error.code == .errorReply)
            #expect(error.message.hasPrefix("ERR unknown command"))
        }
        try await connection.send(["SET", "s", "text"])
        await #expect(throws: RedisError.self) { try await connection.send(["INCR", "s"]) }
        // Pipelines return error replies in place.
        let replies = try await connection.pipeline([["PING"], ["INCR", "s"], ["ECHO", "after"]])
        #expect(replies[0] == .simpleString("PONG"))
        #expect(replies[1].errorMessage?.hasPrefix("ERR") == true)
        #expect(replies[2] == .bulkString("after"))
        await connection.close()
    }

    @Test func pipelinesTenThousandCommandsInOrder() async throws {
        let redis = try await RedisServerProcess()
        defer { withExtendedLifetime(redis) {} }  // keep the server until the end
        let connection = try await RedisConnection.connect(to: RedisURL(redis.url))
        // Submitted without waiting: one write each, replies matched in FIFO order.
        let futures = (0..<10_000).map { _ in connection.submit(["INCR", "counter"]) }
        for (index, future) in futures.enumerated() {
            #expect(try await future.get() == .integer(Int64(index + 1)), "reply \(index)")
        }
        // One batch.
        let commands: [[RESPArgument]] = (0..<10_000).map { ["ECHO", .integer($0)] }
        let replies = try await connection.pipeline(commands)
        #expect(replies == (0..<10_000).map { .bulkString("\($0)") })
        await connection.close()
    }

    @Test func selectsTheDatabaseFromTheURL() async throws {
        let redis = try await RedisServerProcess()
        defer { withExtendedLifetime(redis) {} }  // keep the server until the end
        let connection = try await RedisConnection.connect(to: RedisURL(redis.url + "?db=3"))
        try await connection.send(["SET", "where", "db3"])
        #expect(try redis.command(["-n", "3", "GET", "where"]) == "db3")
        #expect(try redis.command(["GET", "where"]) == "")
        await connection.close()
    }

    @Test func authenticatesWithThePasswordFromTheURL() async throws {
        let redis = try await RedisServerProcess(extraArguments: ["--requirepass", "s3cret"])
        defer { withExtendedLifetime(redis) {} }  // keep the server until the end
        await #expect(throws: RedisError.self) {
            let connection = try await RedisConnection.connect(to: RedisURL(redis.url + "?password=wrong"))
            await connection.close()
        }
        let connection = try await RedisConnection.connect(to: RedisURL(redis.url + "?password=s3cret"))
        #expect(try await connection.send(["PING"]) == .simpleString("PONG"))
        await connection.close()
    }

    @Test func connectionRefused() async throws {
        do {
            _ = try await RedisConnection.connect(to: RedisURL("unix:///tmp/snorky-no-such-dir/redis.sock"))
            Issue.record("expected a failure")
        } catch let error as RedisError {
            #expect(error.code == .connectionRefused)
        }
    }

    @Test func commandTimeoutClosesTheConnection() async throws {
        let redis = try await RedisServerProcess()
        defer { withExtendedLifetime(redis) {} }  // keep the server until the end
        let connection = try await RedisConnection.connect(
            to: RedisURL(redis.url),
            configuration: RedisConnectionConfiguration(commandTimeout: .milliseconds(100))
        )
        let started = ContinuousClock.now
        let blocked = connection.submit(["BLPOP", "nothing", 5])
        let queued = connection.submit(["PING"])
        do {
            _ = try await blocked.get()
            Issue.record("expected a timeout")
        } catch let error as RedisError {
            #expect(error.code == .timeout)
        }
        await #expect(throws: RedisError.self) { try await queued.get() }
        #expect(ContinuousClock.now - started < .seconds(2))
        try await connection.closeFuture.get()
        await #expect(throws: RedisError.self) { try await connection.send(["PING"]) }
    }

    @Test func outstandingCommandsFailWhenRedisGoesAway() async throws {
        let redis = try await RedisServerProcess()
        defer { withExtendedLifetime(redis) {} }  // keep the server until the end
        let connection = try await RedisConnection.connect(to: RedisURL(redis.url))
        let blocked = connection.submit(["BLPOP", "nothing", 0])
        redis.kill()
        do {
            _ = try await withTimeLimit(.seconds(5)) { try await blocked.get() }
            Issue.record("expected a failure")
        } catch let error as RedisError {
            #expect(error.code == .connectionClosed)
        }
        await #expect(throws: RedisError.self) { try await connection.send(["PING"]) }
    }
}
