import SwiftDiagnostics
import SwiftSyntax
import SwiftSyntaxMacros

/// `@Command`: a marker read by `@RPCService`, which generates the call. It expands to
/// nothing; it only reports placements where `@RPCService` would never see it, since a
/// silently ignored command would surface only as `Unknown command` at run time.
///
/// Problems with the method itself (inout parameters, generics, …) are reported once, by
/// `@RPCService`, which has to check them anyway before generating the call.
public struct CommandMacro: PeerMacro {
    public static func expansion(
        of node: AttributeSyntax,
        providingPeersOf declaration: some DeclSyntaxProtocol,
        in context: some MacroExpansionContext
    ) throws -> [DeclSyntax] {
        guard declaration.is(FunctionDeclSyntax.self) else {
            context.diagnose(Diagnostic(node: node, message: SnorkyDiagnostic.commandOnNonFunction))
            return []
        }
        // The innermost enclosing declaration; it must be the @RPCService type itself.
        let enclosing = context.lexicalContext.first
        if enclosing?.is(ExtensionDeclSyntax.self) == true {
            context.diagnose(Diagnostic(node: node, message: SnorkyDiagnostic.commandInExtension))
        } else if !isRPCServiceType(enclosing) {
            context.diagnose(Diagnostic(node: node, message: SnorkyDiagnostic.commandOutsideService))
        }
        return []
    }

    private static func isRPCServiceType(_ syntax: Syntax?) -> Bool {
        guard let syntax else { return false }
        let attributes: AttributeListSyntax
        if let decl = syntax.as(ActorDeclSyntax.self) {
            attributes = decl.attributes
        } else if let decl = syntax.as(ClassDeclSyntax.self) {
            attributes = decl.attributes
        } else if let decl = syntax.as(StructDeclSyntax.self) {
            attributes = decl.attributes
        } else if let decl = syntax.as(EnumDeclSyntax.self) {
            attributes = decl.attributes
        } else {
            return false
        }
        return attributes.contains { element in
            if case .attribute(let attribute) = element {
                return CommandAnalysis.isAttribute(attribute, named: "RPCService")
            }
            return false
        }
    }
}
