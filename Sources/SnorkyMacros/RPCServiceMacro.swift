import SwiftDiagnostics
import SwiftSyntax
import SwiftSyntaxBuilder
import SwiftSyntaxMacros

/// `@RPCService`: extends the type with `RPCService` conformance and a `performCommand`
/// that switches on the command name, binds `params` to the `@Command` method's
/// parameters, calls it and turns its result into a `CommandResult`.
///
/// Only the type's own body is read (including `#if` blocks, mirrored in the switch): an
/// extension macro cannot see other extensions, so `@Command` refuses to be used there.
public struct RPCServiceMacro: ExtensionMacro {
    public static func expansion(
        of node: AttributeSyntax,
        attachedTo declaration: some DeclGroupSyntax,
        providingExtensionsOf type: some TypeSyntaxProtocol,
        conformingTo protocols: [TypeSyntax],
        in context: some MacroExpansionContext
    ) throws -> [ExtensionDeclSyntax] {
        guard
            declaration.is(ActorDeclSyntax.self) || declaration.is(ClassDeclSyntax.self)
                || declaration.is(StructDeclSyntax.self) || declaration.is(EnumDeclSyntax.self)
        else {
            context.diagnose(
                Diagnostic(node: node, message: SnorkyDiagnostic.rpcServiceOnUnsupportedDeclaration(kind: describe(declaration)))
            )
            return []
        }

        var collector = CaseCollector()
        var seen: [String: AttributeSyntax] = [:]
        var cases = collector.cases(in: declaration.memberBlock.members, seen: &seen)
        for diagnostic in collector.diagnostics {
            context.diagnose(diagnostic)
        }
        // A `switch` checks the name before anything looks at params, so an unknown command
        // is reported as such whatever its params are.
        cases += ["default:", "    throw RPCError.unknownCommand"]

        // The witness must be as visible as the type's conformance; an extension that declares
        // a conformance cannot carry an access modifier itself.
        let access: String
        if declaration.modifiers.contains(where: { [.keyword(.public), .keyword(.open)].contains($0.name.tokenKind) }) {
            access = "public "
        } else if declaration.modifiers.contains(where: { $0.name.tokenKind == .keyword(.package) }) {
            access = "package "
        } else {
            access = ""
        }
        // `protocols` is empty when the type already states the conformance itself.
        let conformance = protocols.isEmpty ? "" : ": " + protocols.map(\.trimmedDescription).joined(separator: ", ")

        // Generated as indented source text and parsed: the compiler shows expansions as
        // they are produced, so they should read like hand-written code.
        let source = (
            [
                "extension \(type.trimmedDescription)\(conformance) {",
                "    \(access)func performCommand(_ command: String, params: JSON, request: Request) async throws -> CommandResult {",
                "        switch command {",
            ]
            + cases.map { "        " + $0 }
            + [
                "        }",
                "    }",
                "}",
            ]
        ).joined(separator: "\n")
        guard let extensionDecl = DeclSyntax("\(raw: source)").as(ExtensionDeclSyntax.self) else {
            // Unreachable for text that starts with `extension`; an error beats a crashed plugin.
            throw GenerationFailure(source: source)
        }
        return [extensionDecl]
    }

    private static func describe(_ declaration: some DeclGroupSyntax) -> String {
        if declaration.is(ProtocolDeclSyntax.self) { return "a protocol" }
        if declaration.is(ExtensionDeclSyntax.self) { return "an extension" }
        return "this declaration"
    }
}

private struct GenerationFailure: Error, CustomStringConvertible {
    let source: String
    var description: String { "@RPCService generated code that does not parse as an extension:\n\(source)" }
}

/// Walks a member list, turning `@Command` methods into switch cases and reporting
/// methods that cannot be commands and names used twice.
private struct CaseCollector {
    var diagnostics: [Diagnostic] = []

    /// Returns the switch's cases as source lines. `seen` maps each command name already in
    /// the switch to its attribute. Names in different branches of one `#if` do not clash; a
    /// name after the `#if` clashes with any of them.
    mutating func cases(
        in members: MemberBlockItemListSyntax,
        seen: inout [String: AttributeSyntax]
    ) -> [String] {
        var lines: [String] = []
        for member in members {
            if let function = member.decl.as(FunctionDeclSyntax.self) {
                let attributes = CommandAnalysis.commandAttributes(of: function.attributes)
                guard !attributes.isEmpty else { continue }
                let (method, problems) = CommandAnalysis.analyze(function)
                diagnostics += problems
                guard let method else { continue }
                // Several @Command attributes give one method several names.
                for attribute in attributes {
                    let (name, nameProblems) = CommandAnalysis.commandName(of: attribute, method: method)
                    diagnostics += nameProblems
                    guard let name else { continue }
                    if let first = seen[name] {
                        diagnostics.append(
                            Diagnostic(
                                node: attribute,
                                message: SnorkyDiagnostic.duplicateCommandName(name),
                                notes: [Note(node: Syntax(first), message: SnorkyNote.firstCommandDeclaration(name))]
                            )
                        )
                        continue
                    }
                    seen[name] = attribute
                    lines += method.switchCaseLines(name: name)
                }
            } else if let ifConfig = member.decl.as(IfConfigDeclSyntax.self) {
                // Mirrored in the switch, so a command exists exactly when its method does.
                var clauseLines: [String] = []
                var namesInClauses: [String: AttributeSyntax] = [:]
                var hasCases = false
                for clause in ifConfig.clauses {
                    var clauseSeen = seen
                    var cases: [String] = []
                    if case .decls(let decls) = clause.elements {
                        cases = self.cases(in: decls, seen: &clauseSeen)
                    }
                    hasCases = hasCases || !cases.isEmpty
                    for (name, attribute) in clauseSeen where seen[name] == nil && namesInClauses[name] == nil {
                        namesInClauses[name] = attribute
                    }
                    let condition = clause.condition.map { " " + $0.trimmedDescription } ?? ""
                    clauseLines.append(clause.poundKeyword.text + condition)
                    clauseLines += cases
                }
                seen.merge(namesInClauses) { existing, _ in existing }
                if hasCases {
                    lines += clauseLines + ["#endif"]
                }
            }
        }
        return lines
    }
}
