import SwiftCompilerPlugin
import SwiftSyntaxMacros

/// The compiler plugin behind `@RPCService` and `@Command` (declared in `Snorky/RPCService.swift`).
@main
struct SnorkyMacrosPlugin: CompilerPlugin {
    let providingMacros: [any Macro.Type] = [
        RPCServiceMacro.self,
        CommandMacro.self,
    ]
}
