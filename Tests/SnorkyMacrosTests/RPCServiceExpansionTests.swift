import SnorkyMacros
import SwiftSyntaxMacroExpansion
import SwiftSyntaxMacrosTestSupport
import XCTest

/// What `@RPCService` generates for the shapes of command it accepts.
final class RPCServiceExpansionTests: XCTestCase {
    /// As the compiler calls the macros: `RPCService` is passed as the conformance to add,
    /// unless the type already states it (see `testStatedConformanceIsNotRepeated`).
    private var macros: [String: MacroSpec] {
        [
            "RPCService": MacroSpec(type: RPCServiceMacro.self, conformances: ["RPCService"]),
            "Command": MacroSpec(type: CommandMacro.self),
        ]
    }

    func testSeedCalculator() {
        assertMacroExpansion(
            """
            @RPCService
            actor Calculator {
                let name = "calculator"
                @Command func sum(number1: Double, number2: Double) -> Double { number1 + number2 }
                @Command func log(number: Double, base: Double = 2.718) -> Double { Foundation.log(number) / Foundation.log(base) }
            }
            """,
            expandedSource: """
                actor Calculator {
                    let name = "calculator"
                    func sum(number1: Double, number2: Double) -> Double { number1 + number2 }
                    func log(number: Double, base: Double = 2.718) -> Double { Foundation.log(number) / Foundation.log(base) }
                }

                extension Calculator: RPCService {
                    func performCommand(_ command: String, params: JSON, request: Request) async throws -> CommandResult {
                        switch command {
                        case "sum":
                            let binder = try ParamsBinder(params, accepting: ["number1", "number2"])
                            let number1 = try binder.required("number1", as: Double.self)
                            let number2 = try binder.required("number2", as: Double.self)
                            return .reply(self.sum(number1: number1, number2: number2).json)
                        case "log":
                            let binder = try ParamsBinder(params, accepting: ["number", "base"])
                            let number = try binder.required("number", as: Double.self)
                            let base: Double = try binder.optional("base", default: 2.718)
                            return .reply(self.log(number: number, base: base).json)
                        default:
                            throw RPCError.unknownCommand
                        }
                    }
                }
                """,
            macroSpecs: macros
        )
    }

    func testRenamedCommandWithInjectedClient() {
        assertMacroExpansion(
            """
            @RPCService
            actor Store {
                @Command("delete") func remove(key: String, client: Client) async throws {}
            }
            """,
            expandedSource: """
                actor Store {
                    func remove(key: String, client: Client) async throws {}
                }

                extension Store: RPCService {
                    func performCommand(_ command: String, params: JSON, request: Request) async throws -> CommandResult {
                        switch command {
                        case "delete":
                            let binder = try ParamsBinder(params, accepting: ["key"])
                            let key = try binder.required("key", as: String.self)
                            try await self.remove(key: key, client: request.client)
                            return .reply(.null)
                        default:
                            throw RPCError.unknownCommand
                        }
                    }
                }
                """,
            macroSpecs: macros
        )
    }

    func testRequestParameterMakesTheCommandDeferred() {
        assertMacroExpansion(
            """
            @RPCService
            actor Timer {
                @Command func later(request: Request, delay: Int) {}
                @Command func check(_ pending: Request) async throws -> Void {}
            }
            """,
            expandedSource: """
                actor Timer {
                    func later(request: Request, delay: Int) {}
                    func check(_ pending: Request) async throws -> Void {}
                }

                extension Timer: RPCService {
                    func performCommand(_ command: String, params: JSON, request: Request) async throws -> CommandResult {
                        switch command {
                        case "later":
                            let binder = try ParamsBinder(params, accepting: ["delay"])
                            let delay = try binder.required("delay", as: Int.self)
                            self.later(request: request, delay: delay)
                            return .deferred
                        case "check":
                            _ = try ParamsBinder(params, accepting: [])
                            try await self.check(request)
                            return .deferred
                        default:
                            throw RPCError.unknownCommand
                        }
                    }
                }
                """,
            macroSpecs: macros
        )
    }

    /// `try` and `await` appear only where the method needs them, so the expansion compiles
    /// without warnings; every spelling of "returns nothing" replies `null`.
    func testEffectsAndVoidSpellings() {
        assertMacroExpansion(
            """
            @RPCService
            final class Effects: Sendable {
                @Command func plain() {}
                @Command func waits() async -> Int { 1 }
                @Command func fails() throws -> () {}
                @Command func both() async throws -> String { "" }
                @Command func typed() throws(RPCError) -> Swift.Void {}
                @Command func never() throws(Never) -> Bool { true }
            }
            """,
            expandedSource: """
                final class Effects: Sendable {
                    func plain() {}
                    func waits() async -> Int { 1 }
                    func fails() throws -> () {}
                    func both() async throws -> String { "" }
                    func typed() throws(RPCError) -> Swift.Void {}
                    func never() throws(Never) -> Bool { true }
                }

                extension Effects: RPCService {
                    func performCommand(_ command: String, params: JSON, request: Request) async throws -> CommandResult {
                        switch command {
                        case "plain":
                            _ = try ParamsBinder(params, accepting: [])
                            self.plain()
                            return .reply(.null)
                        case "waits":
                            _ = try ParamsBinder(params, accepting: [])
                            return .reply(await self.waits().json)
                        case "fails":
                            _ = try ParamsBinder(params, accepting: [])
                            try self.fails()
                            return .reply(.null)
                        case "both":
                            _ = try ParamsBinder(params, accepting: [])
                            return .reply(try await self.both().json)
                        case "typed":
                            _ = try ParamsBinder(params, accepting: [])
                            try self.typed()
                            return .reply(.null)
                        case "never":
                            _ = try ParamsBinder(params, accepting: [])
                            return .reply(self.never().json)
                        default:
                            throw RPCError.unknownCommand
                        }
                    }
                }
                """,
            macroSpecs: macros
        )
    }

    /// The key in params is the argument label, or the parameter name when the label is `_`;
    /// `_` labels are passed positionally.
    func testLabelsAndNames() {
        assertMacroExpansion(
            """
            @RPCService
            actor Labels {
                @Command func move(_ steps: Int, from start: Int, to _: Int, `in` room: String? = nil) {}
            }
            """,
            expandedSource: """
                actor Labels {
                    func move(_ steps: Int, from start: Int, to _: Int, `in` room: String? = nil) {}
                }

                extension Labels: RPCService {
                    func performCommand(_ command: String, params: JSON, request: Request) async throws -> CommandResult {
                        switch command {
                        case "move":
                            let binder = try ParamsBinder(params, accepting: ["steps", "from", "to", "in"])
                            let steps = try binder.required("steps", as: Int.self)
                            let start = try binder.required("from", as: Int.self)
                            let to_ = try binder.required("to", as: Int.self)
                            let room: String? = try binder.optional("in", default: nil)
                            self.move(steps, from: start, to: to_, in: room)
                            return .reply(.null)
                        default:
                            throw RPCError.unknownCommand
                        }
                    }
                }
                """,
            macroSpecs: macros
        )
    }

    /// A parameter named like something the generated code uses gets a local of its own;
    /// the method is called through `self` so a parameter cannot hide it either.
    func testParameterNamesDoNotCaptureGeneratedNames() {
        assertMacroExpansion(
            """
            @RPCService
            actor Clash {
                @Command func binder(binder: String, params: Int, command: Bool, request text: String, binder_: Int) {}
                @Command func `default`(`default`: [String] = [], list: [String: Int]) -> [String] { [] }
            }
            """,
            expandedSource: """
                actor Clash {
                    func binder(binder: String, params: Int, command: Bool, request text: String, binder_: Int) {}
                    func `default`(`default`: [String] = [], list: [String: Int]) -> [String] { [] }
                }

                extension Clash: RPCService {
                    func performCommand(_ command: String, params: JSON, request: Request) async throws -> CommandResult {
                        switch command {
                        case "binder":
                            let binder = try ParamsBinder(params, accepting: ["binder", "params", "command", "request", "binder_"])
                            let binder__ = try binder.required("binder", as: String.self)
                            let params_ = try binder.required("params", as: Int.self)
                            let command_ = try binder.required("command", as: Bool.self)
                            let text = try binder.required("request", as: String.self)
                            let binder_ = try binder.required("binder_", as: Int.self)
                            self.binder(binder: binder__, params: params_, command: command_, request: text, binder_: binder_)
                            return .reply(.null)
                        case "default":
                            let binder = try ParamsBinder(params, accepting: ["default", "list"])
                            let `default`: [String] = try binder.optional("default", default: [])
                            let list = try binder.required("list", as: [String: Int].self)
                            return .reply(self.`default`(default: `default`, list: list).json)
                        default:
                            throw RPCError.unknownCommand
                        }
                    }
                }
                """,
            macroSpecs: macros
        )
    }

    func testDefaultExpressionIsCopiedVerbatim() {
        assertMacroExpansion(
            """
            @RPCService
            actor Defaults {
                @Command func page(size: Int = Defaults.pageSize * 2, sort: Order = .ascending, tags: Set<String> = ["a"]) {}
            }
            """,
            expandedSource: """
                actor Defaults {
                    func page(size: Int = Defaults.pageSize * 2, sort: Order = .ascending, tags: Set<String> = ["a"]) {}
                }

                extension Defaults: RPCService {
                    func performCommand(_ command: String, params: JSON, request: Request) async throws -> CommandResult {
                        switch command {
                        case "page":
                            let binder = try ParamsBinder(params, accepting: ["size", "sort", "tags"])
                            let size: Int = try binder.optional("size", default: Defaults.pageSize * 2)
                            let sort: Order = try binder.optional("sort", default: .ascending)
                            let tags: Set<String> = try binder.optional("tags", default: ["a"])
                            self.page(size: size, sort: sort, tags: tags)
                            return .reply(.null)
                        default:
                            throw RPCError.unknownCommand
                        }
                    }
                }
                """,
            macroSpecs: macros
        )
    }

    func testGeneratedMethodMatchesTheTypesAccessLevel() {
        for (modifier, generated) in [
            ("public ", "public "), ("open ", "public "), ("package ", "package "), ("", ""), ("fileprivate ", ""),
            ("private ", ""),
        ] {
            assertMacroExpansion(
                """
                @RPCService
                \(modifier)final class Levels: Sendable {
                }
                """,
                expandedSource: """
                    \(modifier)final class Levels: Sendable {
                    }

                    extension Levels: RPCService {
                        \(generated)func performCommand(_ command: String, params: JSON, request: Request) async throws -> CommandResult {
                            switch command {
                            default:
                                throw RPCError.unknownCommand
                            }
                        }
                    }
                    """,
                macroSpecs: macros
            )
        }
    }

    /// Structs and enums expand too (whether they may conform is the compiler's call: the
    /// framework's `Service` is class-bound). Static commands are called on `Self`.
    func testStructAndEnumWithStaticCommands() {
        assertMacroExpansion(
            """
            @RPCService
            struct Clock {
                @Command static func now() -> Double { 0 }
            }
            @RPCService
            public enum Maths {
                @Command static func negate(value: Int) -> Int { -value }
                @Command func describe() -> String { "" }
            }
            """,
            expandedSource: """
                struct Clock {
                    static func now() -> Double { 0 }
                }
                public enum Maths {
                    static func negate(value: Int) -> Int { -value }
                    func describe() -> String { "" }
                }

                extension Clock: RPCService {
                    func performCommand(_ command: String, params: JSON, request: Request) async throws -> CommandResult {
                        switch command {
                        case "now":
                            _ = try ParamsBinder(params, accepting: [])
                            return .reply(Self.now().json)
                        default:
                            throw RPCError.unknownCommand
                        }
                    }
                }

                extension Maths: RPCService {
                    public func performCommand(_ command: String, params: JSON, request: Request) async throws -> CommandResult {
                        switch command {
                        case "negate":
                            let binder = try ParamsBinder(params, accepting: ["value"])
                            let value = try binder.required("value", as: Int.self)
                            return .reply(Self.negate(value: value).json)
                        case "describe":
                            _ = try ParamsBinder(params, accepting: [])
                            return .reply(self.describe().json)
                        default:
                            throw RPCError.unknownCommand
                        }
                    }
                }
                """,
            macroSpecs: macros
        )
    }

    /// When the type already says `: RPCService`, the compiler asks for no conformance and
    /// the extension only adds the method.
    func testStatedConformanceIsNotRepeated() {
        assertMacroExpansion(
            """
            @RPCService
            actor Stated: RPCService {
                @Command func ping() -> String { "pong" }
            }
            """,
            expandedSource: """
                actor Stated: RPCService {
                    func ping() -> String { "pong" }
                }

                extension Stated {
                    func performCommand(_ command: String, params: JSON, request: Request) async throws -> CommandResult {
                        switch command {
                        case "ping":
                            _ = try ParamsBinder(params, accepting: [])
                            return .reply(self.ping().json)
                        default:
                            throw RPCError.unknownCommand
                        }
                    }
                }
                """,
            macroSpecs: [
                "RPCService": MacroSpec(type: RPCServiceMacro.self, conformances: []),
                "Command": MacroSpec(type: CommandMacro.self),
            ]
        )
    }

    /// `@Snorky.Command` and `Snorky.Client` are recognised like the plain spellings (the test
    /// harness only expands unqualified attributes, so `@Snorky.Command` stays in the source
    /// here), and several `@Command`s give one method several names.
    func testModuleQualifiedSpellingsAndSeveralNames() {
        assertMacroExpansion(
            """
            @RPCService
            actor Qualified {
                @Snorky.Command @Command("who") @Command(nil) func whoami(caller: Snorky.Client, call: Snorky.Request) {}
                func helper() {}
            }
            """,
            expandedSource: """
                actor Qualified {
                    @Snorky.Command func whoami(caller: Snorky.Client, call: Snorky.Request) {}
                    func helper() {}
                }

                extension Qualified: RPCService {
                    func performCommand(_ command: String, params: JSON, request: Request) async throws -> CommandResult {
                        switch command {
                        case "whoami":
                            _ = try ParamsBinder(params, accepting: [])
                            self.whoami(caller: request.client, call: request)
                            return .deferred
                        case "who":
                            _ = try ParamsBinder(params, accepting: [])
                            self.whoami(caller: request.client, call: request)
                            return .deferred
                        default:
                            throw RPCError.unknownCommand
                        }
                    }
                }
                """,
            diagnostics: [
                DiagnosticSpec(
                    message: "duplicate command name 'whoami'",
                    line: 3,
                    column: 37,
                    notes: [NoteSpec(message: "command 'whoami' is first declared here", line: 3, column: 5)]
                )
            ],
            macroSpecs: macros
        )
    }

    /// Commands inside `#if` exist exactly when their method does; the same name in two
    /// branches is not a duplicate.
    func testConditionalCommandsAreMirrored() {
        assertMacroExpansion(
            """
            @RPCService
            actor Conditional {
                #if DEBUG
                @Command func mode() -> String { "debug" }
                @Command func dump() {}
                #elseif os(Linux)
                @Command func mode() -> String { "linux" }
                #else
                func helper() {}
                #endif
                #if false
                func unrelated() {}
                #endif
            }
            """,
            expandedSource: """
                actor Conditional {
                    #if DEBUG
                    func mode() -> String { "debug" }
                    func dump() {}
                    #elseif os(Linux)
                    func mode() -> String { "linux" }
                    #else
                    func helper() {}
                    #endif
                    #if false
                    func unrelated() {}
                    #endif
                }

                extension Conditional: RPCService {
                    func performCommand(_ command: String, params: JSON, request: Request) async throws -> CommandResult {
                        switch command {
                        #if DEBUG
                        case "mode":
                            _ = try ParamsBinder(params, accepting: [])
                            return .reply(self.mode().json)
                        case "dump":
                            _ = try ParamsBinder(params, accepting: [])
                            self.dump()
                            return .reply(.null)
                        #elseif os(Linux)
                        case "mode":
                            _ = try ParamsBinder(params, accepting: [])
                            return .reply(self.mode().json)
                        #else
                        #endif
                        default:
                            throw RPCError.unknownCommand
                        }
                    }
                }
                """,
            macroSpecs: macros
        )
    }
}
