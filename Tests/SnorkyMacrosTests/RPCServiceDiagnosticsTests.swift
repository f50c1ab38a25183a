import SnorkyMacros
import SwiftSyntaxMacroExpansion
import SwiftSyntaxMacrosTestSupport
import XCTest

/// The compile errors the macros give for what they cannot turn into a command. A method
/// with a problem is left out of the switch, so the only errors are these, on the user's
/// own code, not knock-on errors inside the generated extension.
final class RPCServiceDiagnosticsTests: XCTestCase {
    private var macros: [String: MacroSpec] {
        [
            "RPCService": MacroSpec(type: RPCServiceMacro.self, conformances: ["RPCService"]),
            "Command": MacroSpec(type: CommandMacro.self),
        ]
    }

    /// The extension every test below expects (after a blank line), around the cases that remain.
    private func service(_ type: String, cases: String = "") -> String {
        """

        extension \(type): RPCService {
            func performCommand(_ command: String, params: JSON, request: Request) async throws -> CommandResult {
                switch command {
        \(cases)        default:
                    throw RPCError.unknownCommand
                }
            }
        }
        """
    }

    func testRPCServiceOnAProtocol() {
        assertMacroExpansion(
            """
            @RPCService
            protocol Calculating {}
            """,
            expandedSource: """
                protocol Calculating {}
                """,
            diagnostics: [
                DiagnosticSpec(
                    message: "@RPCService can only be applied to an actor, class, struct or enum, not a protocol",
                    line: 1,
                    column: 1
                )
            ],
            macroSpecs: macros
        )
    }

    func testRPCServiceOnAnExtension() {
        assertMacroExpansion(
            """
            @RPCService
            extension Calculator {}
            """,
            expandedSource: """
                extension Calculator {}
                """,
            diagnostics: [
                DiagnosticSpec(
                    message: "@RPCService can only be applied to an actor, class, struct or enum, not an extension",
                    line: 1,
                    column: 1
                )
            ],
            macroSpecs: macros
        )
    }

    func testCommandOnSomethingOtherThanAMethod() {
        assertMacroExpansion(
            """
            @RPCService
            actor Service {
                @Command var total = 0
                @Command init() {}
                @Command subscript(index: Int) -> Int { index }
            }
            """,
            expandedSource: """
                actor Service {
                    var total = 0
                    init() {}
                    subscript(index: Int) -> Int { index }
                }

                """ + service("Service"),
            diagnostics: [
                DiagnosticSpec(message: "@Command can only be applied to a method", line: 3, column: 5),
                DiagnosticSpec(message: "@Command can only be applied to a method", line: 4, column: 5),
                DiagnosticSpec(message: "@Command can only be applied to a method", line: 5, column: 5),
            ],
            macroSpecs: macros
        )
    }

    /// `@RPCService` reads only the type's own body; a command anywhere else would be
    /// silently missing, so it is an error.
    func testCommandWhereRPCServiceCannotSeeIt() {
        assertMacroExpansion(
            """
            actor Plain {
                @Command func ping() {}
            }
            @RPCService
            actor Outer {
                struct Inner {
                    @Command func ping() {}
                }
            }
            extension Outer {
                @Command func pong() {}
            }
            @Command func free() {}
            """,
            expandedSource: """
                actor Plain {
                    func ping() {}
                }
                actor Outer {
                    struct Inner {
                        func ping() {}
                    }
                }
                extension Outer {
                    func pong() {}
                }
                func free() {}

                """ + service("Outer"),
            diagnostics: [
                DiagnosticSpec(message: "@Command has no effect outside a type marked @RPCService", line: 2, column: 5),
                DiagnosticSpec(message: "@Command has no effect outside a type marked @RPCService", line: 7, column: 9),
                DiagnosticSpec(
                    message: "@Command methods must be declared in the body of the @RPCService type, not in an extension",
                    line: 11,
                    column: 5
                ),
                DiagnosticSpec(message: "@Command has no effect outside a type marked @RPCService", line: 13, column: 1),
            ],
            macroSpecs: macros
        )
    }

    func testDuplicateCommandNames() {
        assertMacroExpansion(
            """
            @RPCService
            actor Duplicates {
                @Command func remove(key: String) {}
                @Command("remove") func delete(key: String) {}
                @Command func remove(keys: [String]) {}
            }
            """,
            expandedSource: """
                actor Duplicates {
                    func remove(key: String) {}
                    func delete(key: String) {}
                    func remove(keys: [String]) {}
                }

                """
                + service(
                    "Duplicates",
                    cases: """
                                case "remove":
                                    let binder = try ParamsBinder(params, accepting: ["key"])
                                    let key = try binder.required("key", as: String.self)
                                    self.remove(key: key)
                                    return .reply(.null)

                        """
                ),
            diagnostics: [
                DiagnosticSpec(
                    message: "duplicate command name 'remove'",
                    line: 4,
                    column: 5,
                    notes: [NoteSpec(message: "command 'remove' is first declared here", line: 3, column: 5)]
                ),
                DiagnosticSpec(
                    message: "duplicate command name 'remove'",
                    line: 5,
                    column: 5,
                    notes: [NoteSpec(message: "command 'remove' is first declared here", line: 3, column: 5)]
                ),
            ],
            macroSpecs: macros
        )
    }

    /// The same name in two branches of one `#if` is fine; after the `#if` it clashes.
    func testDuplicateAfterConditionalBranches() {
        assertMacroExpansion(
            """
            @RPCService
            actor Branches {
                #if DEBUG
                @Command func mode() {}
                #else
                @Command func mode() {}
                #endif
                @Command("mode") func other() {}
            }
            """,
            expandedSource: """
                actor Branches {
                    #if DEBUG
                    func mode() {}
                    #else
                    func mode() {}
                    #endif
                    func other() {}
                }

                """
                + service(
                    "Branches",
                    cases: """
                                #if DEBUG
                                case "mode":
                                    _ = try ParamsBinder(params, accepting: [])
                                    self.mode()
                                    return .reply(.null)
                                #else
                                case "mode":
                                    _ = try ParamsBinder(params, accepting: [])
                                    self.mode()
                                    return .reply(.null)
                                #endif

                        """
                ),
            diagnostics: [
                DiagnosticSpec(
                    message: "duplicate command name 'mode'",
                    line: 8,
                    column: 5,
                    notes: [NoteSpec(message: "command 'mode' is first declared here", line: 4, column: 5)]
                )
            ],
            macroSpecs: macros
        )
    }

    func testInoutAndVariadicParameters() {
        assertMacroExpansion(
            """
            @RPCService
            actor Parameters {
                @Command func bump(counter: inout Int) {}
                @Command func sum(numbers: Double...) -> Double { 0 }
                @Command func skip(_ _: Int) {}
            }
            """,
            expandedSource: """
                actor Parameters {
                    func bump(counter: inout Int) {}
                    func sum(numbers: Double...) -> Double { 0 }
                    func skip(_ _: Int) {}
                }

                """ + service("Parameters"),
            diagnostics: [
                DiagnosticSpec(
                    message: "command parameter 'counter' cannot be inout: it is bound from the call's params",
                    line: 3,
                    column: 24
                ),
                DiagnosticSpec(
                    message: "command parameter 'numbers' cannot be variadic; take an array instead",
                    line: 4,
                    column: 23
                ),
                DiagnosticSpec(
                    message: "command parameter needs a label or a name to be bound from the call's params",
                    line: 5,
                    column: 24
                ),
            ],
            macroSpecs: macros
        )
    }

    func testGenericCommands() {
        assertMacroExpansion(
            """
            @RPCService
            actor Generic {
                @Command func store<Value: JSONDecodable>(value: Value) {}
                @Command func echo(value: some JSONConvertible) {}
            }
            """,
            expandedSource: """
                actor Generic {
                    func store<Value: JSONDecodable>(value: Value) {}
                    func echo(value: some JSONConvertible) {}
                }

                """ + service("Generic"),
            diagnostics: [
                DiagnosticSpec(
                    message: "a command cannot be generic: params are bound to concrete types",
                    line: 3,
                    column: 24
                ),
                DiagnosticSpec(
                    message: "command parameter 'value' cannot have an opaque ('some') type: params are bound to concrete types",
                    line: 4,
                    column: 31
                ),
            ],
            macroSpecs: macros
        )
    }

    func testDeferredCommandReturningAValue() {
        assertMacroExpansion(
            """
            @RPCService
            actor Deferred {
                @Command func wait(request: Request) -> Int { 0 }
            }
            """,
            expandedSource: """
                actor Deferred {
                    func wait(request: Request) -> Int { 0 }
                }

                """ + service("Deferred"),
            diagnostics: [
                DiagnosticSpec(
                    message:
                        "a command taking a Request is deferred and must not return a value; answer with request.reply(...) instead",
                    line: 3,
                    column: 42,
                    notes: [NoteSpec(message: "the Request parameter makes the command deferred", line: 3, column: 24)]
                )
            ],
            macroSpecs: macros
        )
    }

    func testMutatingCommand() {
        assertMacroExpansion(
            """
            @RPCService
            struct Counter {
                @Command mutating func increment() {}
            }
            """,
            expandedSource: """
                struct Counter {
                    mutating func increment() {}
                }

                """ + service("Counter"),
            diagnostics: [
                DiagnosticSpec(
                    message: "a command cannot be mutating; make the service an actor or a class to keep state",
                    line: 3,
                    column: 14
                )
            ],
            macroSpecs: macros
        )
    }

    func testCommandNameMustBeANonEmptyLiteral() {
        assertMacroExpansion(
            #"""
            @RPCService
            actor Names {
                @Command(commandName) func first() {}
                @Command("cmd\(suffix)") func second() {}
                @Command("") func third() {}
            }
            """#,
            expandedSource: """
                actor Names {
                    func first() {}
                    func second() {}
                    func third() {}
                }

                """ + service("Names"),
            diagnostics: [
                DiagnosticSpec(message: "command name must be a string literal without interpolation", line: 3, column: 14),
                DiagnosticSpec(message: "command name must be a string literal without interpolation", line: 4, column: 14),
                DiagnosticSpec(message: "command name must not be empty", line: 5, column: 14),
            ],
            macroSpecs: macros
        )
    }

    func testOperatorCommand() {
        assertMacroExpansion(
            """
            @RPCService
            enum Operators {
                @Command static func + (lhs: Int, rhs: Int) -> Int { lhs + rhs }
            }
            """,
            expandedSource: """
                enum Operators {
                    static func + (lhs: Int, rhs: Int) -> Int { lhs + rhs }
                }

                """ + service("Operators"),
            diagnostics: [
                DiagnosticSpec(message: "an operator cannot be a command", line: 3, column: 26)
            ],
            macroSpecs: macros
        )
    }

    /// `@Command` itself never generates anything.
    func testCommandExpandsToNothing() {
        assertMacroExpansion(
            """
            @RPCService
            final class Marker: Sendable {
                @Command func ping() -> String { "pong" }
            }
            """,
            expandedSource: """
                final class Marker: Sendable {
                    func ping() -> String { "pong" }
                }

                """
                + service(
                    "Marker",
                    cases: """
                                case "ping":
                                    _ = try ParamsBinder(params, accepting: [])
                                    return .reply(self.ping().json)

                        """
                ),
            macroSpecs: macros
        )
    }
}
