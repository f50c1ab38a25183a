// swift-tools-version: 6.1
import CompilerPluginSupport
import PackageDescription

// Swift 6 language mode (complete strict concurrency) comes with tools version 6.
let strict: [SwiftSetting] = [.enableUpcomingFeature("ExistentialAny")]

let package = Package(
    name: "snorky",
    platforms: [.macOS(.v15)],
    products: [
        .executable(name: "snorky", targets: ["snorky"]),
        .executable(name: "snorky-bench", targets: ["snorky-bench"]),
        .library(name: "Snorky", targets: ["Snorky"]),
        .library(name: "SnorkyServices", targets: ["SnorkyServices"]),
        .library(name: "SnorkyServer", targets: ["SnorkyServer"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-nio", from: "2.101.2"),
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.8.2"),
        .package(url: "https://github.com/apple/swift-log", from: "1.16.2"),
        .package(url: "https://github.com/swiftlang/swift-syntax", from: "603.0.1"),
        .package(url: "https://github.com/apple/swift-crypto", from: "3.12.3"),
        .package(url: "https://github.com/HdrHistogram/hdrhistogram-swift", from: "0.2.0"),
    ],
    targets: [
        // C libraries and shims.
        .systemLibrary(
            name: "CHiredis",
            pkgConfig: "hiredis",
            providers: [.apt(["libhiredis-dev"])]
        ),
        .target(name: "CSnorkyShims"),

        // Wire protocol: JSON, envelopes, RPC frames, error strings, close codes. No I/O.
        .target(name: "SnorkyProtocol", swiftSettings: strict),

        // Compiler plugin behind @RPCService / @Command.
        .macro(
            name: "SnorkyMacros",
            dependencies: [
                .product(name: "SwiftSyntaxMacros", package: "swift-syntax"),
                .product(name: "SwiftCompilerPlugin", package: "swift-syntax"),
            ],
            swiftSettings: strict
        ),

        // The framework users build services with.
        .target(
            name: "Snorky",
            dependencies: [
                "SnorkyProtocol",
                "SnorkyMacros",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "Logging", package: "swift-log"),
            ],
            swiftSettings: strict
        ),
        .target(
            name: "SnorkyServices",
            dependencies: [
                "Snorky", "SnorkyProtocol", "SnorkyConfig",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "Crypto", package: "swift-crypto"),
            ],
            swiftSettings: strict
        ),
        // The seed's examples of writing a service: a calculator and a minimal pubsub.
        .target(name: "SnorkyExamples", dependencies: ["Snorky", "SnorkyProtocol"], swiftSettings: strict),
        .target(
            name: "SnorkyRedis",
            dependencies: [
                "Snorky",
                "CHiredis",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "Logging", package: "swift-log"),
            ],
            swiftSettings: strict
        ),
        // The RFC 6455 rules Snorky enforces on client frames and the control frames it
        // writes. Only NIO, so the fuzz target builds it without the rest of the server.
        .target(
            name: "SnorkyWebSocket",
            dependencies: [
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOWebSocket", package: "swift-nio"),
            ],
            swiftSettings: strict
        ),
        .target(
            name: "SnorkyServer",
            dependencies: [
                "Snorky",
                "SnorkyProtocol",
                "SnorkyServices",
                "SnorkyWebSocket",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "NIOHTTP1", package: "swift-nio"),
                .product(name: "NIOWebSocket", package: "swift-nio"),
                .product(name: "Logging", package: "swift-log"),
            ],
            swiftSettings: strict
        ),
        // Settings: plain structs with defaults, filled from flags, environment and a TOML file.
        .target(name: "SnorkyConfig", swiftSettings: strict),
        .target(
            name: "SnorkySupervisor",
            dependencies: [
                "CSnorkyShims",
                .product(name: "Logging", package: "swift-log"),
            ],
            swiftSettings: strict
        ),
        .executableTarget(
            name: "snorky",
            dependencies: [
                "Snorky",
                "SnorkyProtocol",
                "SnorkyServices",
                "SnorkyServer",
                "SnorkyRedis",
                "SnorkySupervisor",
                "SnorkyConfig",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
            ],
            swiftSettings: strict
        ),
        .executableTarget(
            name: "snorky-bench",
            dependencies: [
                "SnorkyProtocol",
                .product(name: "Histogram", package: "hdrhistogram-swift"),
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "NIOHTTP1", package: "swift-nio"),
                .product(name: "NIOWebSocket", package: "swift-nio"),
            ],
            swiftSettings: strict
        ),
        // libFuzzer target for the WebSocket frame and envelope decoders, built by
        // scripts/fuzz.sh with -sanitize=fuzzer; a plain build is a corpus replayer (the
        // `Extern` feature declares libFuzzer's driver, which only that build calls).
        .executableTarget(
            name: "SnorkyFuzz",
            dependencies: [
                "SnorkyProtocol",
                "SnorkyWebSocket",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOEmbedded", package: "swift-nio"),
                .product(name: "NIOWebSocket", package: "swift-nio"),
            ],
            swiftSettings: strict + [.enableExperimentalFeature("Extern")]
        ),
        .target(
            name: "SnorkyTesting",
            dependencies: [
                "SnorkyProtocol",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "NIOHTTP1", package: "swift-nio"),
                .product(name: "NIOWebSocket", package: "swift-nio"),
            ],
            swiftSettings: strict
        ),

        .testTarget(name: "SnorkyProtocolTests", dependencies: ["SnorkyProtocol", "SnorkyTesting"], swiftSettings: strict),
        .testTarget(
            name: "SnorkyTests",
            dependencies: [
                "Snorky", "SnorkyProtocol", "SnorkyServices", "SnorkyExamples",
                .product(name: "Logging", package: "swift-log"),
                .product(name: "Crypto", package: "swift-crypto"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
            ],
            swiftSettings: strict
        ),
        .testTarget(
            name: "SnorkyMacrosTests",
            dependencies: [
                "SnorkyMacros",
                .product(name: "SwiftSyntaxMacrosTestSupport", package: "swift-syntax"),
            ],
            swiftSettings: strict
        ),
        .testTarget(
            name: "SnorkyRedisTests",
            dependencies: [
                "SnorkyRedis", "Snorky", "SnorkyTesting",
                .product(name: "NIOEmbedded", package: "swift-nio"),
            ],
            swiftSettings: strict
        ),
        .testTarget(
            name: "SnorkyServerTests",
            dependencies: [
                "SnorkyServer", "Snorky", "SnorkyServices", "SnorkyProtocol", "SnorkyTesting",
                .product(name: "NIOEmbedded", package: "swift-nio"),
            ],
            swiftSettings: strict
        ),
        .testTarget(name: "SnorkyConfigTests", dependencies: ["SnorkyConfig"], swiftSettings: strict),
        .testTarget(
            name: "SnorkySupervisorTests",
            dependencies: ["SnorkySupervisor"],
            swiftSettings: strict
        ),
        .testTarget(
            name: "SnorkyClusterTests",
            dependencies: ["SnorkyTesting", "SnorkyProtocol", "SnorkyConfig"],
            swiftSettings: strict
        ),
    ]
)
