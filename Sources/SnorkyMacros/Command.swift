import SwiftDiagnostics
import SwiftParser
import SwiftSyntax

/// A `@Command` method, understood well enough to generate the call.
struct CommandMethod {
    enum Argument {
        /// Bound from `params[jsonName]` into the local `local` before the call.
        case bound(jsonName: String, local: String, type: TypeSyntax, defaultValue: ExprSyntax?)
        /// `request.client`.
        case client
        /// `request` itself; makes the command deferred.
        case request
    }

    struct Parameter {
        /// The argument label as a call spells it; nil for `_` (passed positionally).
        let label: String?
        let argument: Argument
    }

    /// As written, backticks included, so it can be called.
    let methodName: String
    let isStatic: Bool
    let isAsync: Bool
    let isThrowing: Bool
    let returnsValue: Bool
    let parameters: [Parameter]

    /// The name the method answers to when no name is given: its own, without backticks.
    var defaultName: String { CommandAnalysis.unescaped(methodName) }

    var isDeferred: Bool {
        parameters.contains { if case .request = $0.argument { true } else { false } }
    }
}

enum CommandAnalysis {
    /// Names the generated code uses itself; a parameter local may not shadow them.
    private static let reservedLocals: Set<String> = ["binder", "request", "params", "command", "self", "Self", "_"]

    static func isCommandAttribute(_ attribute: AttributeSyntax) -> Bool {
        isAttribute(attribute, named: "Command")
    }

    /// Matches `@Name` and the module-qualified `@Snorky.Name`.
    static func isAttribute(_ attribute: AttributeSyntax, named name: String) -> Bool {
        let spelled = attribute.attributeName.trimmedDescription
        return spelled == name || spelled == "Snorky.\(name)"
    }

    static func commandAttributes(of attributes: AttributeListSyntax) -> [AttributeSyntax] {
        attributes.compactMap { element in
            guard case .attribute(let attribute) = element, isCommandAttribute(attribute) else { return nil }
            return attribute
        }
    }

    /// The wire name one `@Command` attribute gives `method`: its string literal, else the
    /// method's own name. nil (with the reason) when the argument is not a usable literal.
    static func commandName(
        of attribute: AttributeSyntax,
        method: CommandMethod
    ) -> (name: String?, diagnostics: [Diagnostic]) {
        guard case .argumentList(let arguments) = attribute.arguments, let first = arguments.first,
            !first.expression.is(NilLiteralExprSyntax.self)
        else {
            return (method.defaultName, [])
        }
        guard let literal = first.expression.as(StringLiteralExprSyntax.self),
            let value = literal.representedLiteralValue
        else {
            return (nil, [Diagnostic(node: first.expression, message: SnorkyDiagnostic.commandNameNotLiteral)])
        }
        guard !value.isEmpty else {
            return (nil, [Diagnostic(node: literal, message: SnorkyDiagnostic.commandNameEmpty)])
        }
        return (value, [])
    }

    /// Reads a `@Command` method. Returns nil and the reasons when it cannot be a command;
    /// the generated switch then leaves it out, and the errors stop the build.
    static func analyze(_ function: FunctionDeclSyntax) -> (method: CommandMethod?, diagnostics: [Diagnostic]) {
        var diagnostics: [Diagnostic] = []
        func error(_ node: some SyntaxProtocol, _ message: SnorkyDiagnostic, notes: [Note] = []) {
            diagnostics.append(Diagnostic(node: Syntax(node), message: message, notes: notes))
        }

        let methodName = function.name.trimmed
        switch methodName.tokenKind {
        case .binaryOperator, .prefixOperator, .postfixOperator:
            error(function.name, .operatorCommand)  // the attached node: `trimmed` has no position
        default:
            break
        }
        if let generics = function.genericParameterClause {
            error(generics, .genericCommand)
        }
        var isStatic = false
        for modifier in function.modifiers {
            switch modifier.name.tokenKind {
            case .keyword(.static), .keyword(.class):
                isStatic = true
            case .keyword(.mutating):
                error(modifier, .mutatingCommand)
            default:
                break
            }
        }

        let effects = function.signature.effectSpecifiers
        let isAsync = effects?.asyncSpecifier != nil
        var isThrowing = false
        if let throwsClause = effects?.throwsClause {
            // `throws(Never)` cannot throw, and a `try` on it would be warned about.
            let thrown = throwsClause.type?.trimmedDescription
            isThrowing = thrown != "Never" && thrown != "Swift.Never"
        }
        let returnsValue: Bool
        if let returnType = function.signature.returnClause?.type.trimmedDescription {
            returnsValue = !["Void", "Swift.Void", "()"].contains(returnType)
        } else {
            returnsValue = false
        }

        // Parameters. Locals are named after the parameter unless that would shadow a name
        // the generated code relies on, or the parameter has no usable internal name.
        let parameterList = function.signature.parameterClause.parameters
        var usedLocals = reservedLocals
        for parameter in parameterList {
            usedLocals.insert(unescaped((parameter.secondName ?? parameter.firstName).text))
        }
        var parameters: [CommandMethod.Parameter] = []
        var requestParameter: FunctionParameterSyntax?
        for parameter in parameterList {
            let labelToken = parameter.firstName.trimmed
            let label: String? = labelToken.tokenKind == .wildcard ? nil : argumentLabel(labelToken.text)
            let internalToken = (parameter.secondName ?? parameter.firstName).trimmed
            let internalName: String? = internalToken.tokenKind == .wildcard ? nil : internalToken.text
            let displayName = unescaped(internalName ?? label ?? "_")

            if parameter.ellipsis != nil {
                error(parameter, .variadicParameter(displayName))
                continue
            }
            var type = parameter.type
            if let attributed = type.as(AttributedTypeSyntax.self) {
                let isInout = attributed.specifiers.contains { specifier in
                    if case .simpleTypeSpecifier(let simple) = specifier {
                        return simple.specifier.tokenKind == .keyword(.inout)
                    }
                    return false
                }
                if isInout {
                    error(parameter, .inoutParameter(displayName))
                    continue
                }
                // `borrowing`/`consuming`/`sending` do not change what is bound.
                type = attributed.baseType
            }
            type = type.trimmed

            switch type.trimmedDescription {
            case "Client", "Snorky.Client":
                parameters.append(CommandMethod.Parameter(label: label, argument: .client))
                continue
            case "Request", "Snorky.Request":
                parameters.append(CommandMethod.Parameter(label: label, argument: .request))
                requestParameter = requestParameter ?? parameter
                continue
            default:
                break
            }

            if type.tokens(viewMode: .sourceAccurate).contains(where: { $0.tokenKind == .keyword(.some) }) {
                error(parameter.type, .opaqueParameter(displayName))
                continue
            }
            // The key in params is the label callers see, or the name when there is no label.
            guard let jsonSpelling = label ?? internalName else {
                error(parameter, .unnamedParameter)
                continue
            }
            let jsonName = unescaped(jsonSpelling)
            let local: String
            if let internalName, !reservedLocals.contains(unescaped(internalName)) {
                local = internalName
            } else {
                var candidate = jsonName + "_"
                while usedLocals.contains(candidate) { candidate += "_" }
                usedLocals.insert(candidate)
                local = candidate
            }
            parameters.append(
                CommandMethod.Parameter(
                    label: label,
                    argument: .bound(
                        jsonName: jsonName,
                        local: local,
                        type: type,
                        defaultValue: parameter.defaultValue?.value.trimmed
                    )
                )
            )
        }

        if returnsValue, let requestParameter, let returnClause = function.signature.returnClause {
            error(
                returnClause,
                .deferredCommandReturnsValue,
                notes: [Note(node: Syntax(requestParameter), message: SnorkyNote.requestParameter)]
            )
        }

        guard diagnostics.isEmpty else { return (nil, diagnostics) }
        let method = CommandMethod(
            methodName: methodName.text,
            isStatic: isStatic,
            isAsync: isAsync,
            isThrowing: isThrowing,
            returnsValue: returnsValue,
            parameters: parameters
        )
        return (method, [])
    }

    /// A label as a call spells it: keywords need no backticks there (the compiler warns
    /// about them), except the three that would start a declaration.
    private static func argumentLabel(_ spelled: String) -> String {
        let name = unescaped(spelled)
        return ["inout", "var", "let"].contains(name) ? "`\(name)`" : name
    }

    /// `` `default` `` → `default`: the name as callers and params spell it.
    static func unescaped(_ identifier: String) -> String {
        if identifier.count >= 2, identifier.hasPrefix("`"), identifier.hasSuffix("`") {
            return String(identifier.dropFirst().dropLast())
        }
        return identifier
    }
}

extension CommandMethod {
    /// `case "name": <bind params> <call> <return>`, as source lines without indentation
    /// for the case label (the body is indented one level).
    func switchCaseLines(name: String) -> [String] {
        var lines: [String] = []
        let bound: [(jsonName: String, local: String, type: TypeSyntax, defaultValue: ExprSyntax?)] =
            parameters.compactMap { parameter in
                if case .bound(let jsonName, let local, let type, let defaultValue) = parameter.argument {
                    return (jsonName, local, type, defaultValue)
                }
                return nil
            }

        // The binder is built even without parameters: it is what rejects a params value
        // that is not an object, or that carries keys the command does not take.
        let accepted = bound.map { literal($0.jsonName) }.joined(separator: ", ")
        if bound.isEmpty {
            lines.append("_ = try ParamsBinder(params, accepting: [])")
        } else {
            lines.append("let binder = try ParamsBinder(params, accepting: [\(accepted)])")
        }
        for parameter in bound {
            if let defaultValue = parameter.defaultValue {
                // The annotation gives the default expression the parameter's type as context.
                lines.append(
                    "let \(parameter.local): \(parameter.type.trimmedDescription) = "
                        + "try binder.optional(\(literal(parameter.jsonName)), default: \(defaultValue.trimmedDescription))"
                )
            } else {
                lines.append(
                    "let \(parameter.local) = try binder.required(\(literal(parameter.jsonName)), as: \(metatype(parameter.type)))"
                )
            }
        }

        let arguments = parameters.map { parameter -> String in
            let value: String
            switch parameter.argument {
            case .bound(_, let local, _, _): value = local
            case .client: value = "request.client"
            case .request: value = "request"
            }
            return parameter.label.map { "\($0): \(value)" } ?? value
        }
        // Explicit receiver: a parameter local may share the method's name.
        let receiver = isStatic ? "Self" : "self"
        var call = "\(receiver).\(methodName)(\(arguments.joined(separator: ", ")))"
        if isAsync { call = "await " + call }
        if isThrowing { call = "try " + call }

        if isDeferred {
            lines.append(call)
            lines.append("return .deferred")
        } else if returnsValue {
            lines.append("return .reply(\(call).json)")
        } else {
            lines.append(call)
            lines.append("return .reply(.null)")
        }

        return ["case \(literal(name)):"] + lines.map { "    " + $0 }
    }

    private func literal(_ string: String) -> String {
        StringLiteralExprSyntax(content: string).description
    }

    /// `T.self`, parenthesised when `T` would not parse as the base of `.self`.
    private func metatype(_ type: TypeSyntax) -> String {
        let spelled = type.trimmedDescription
        if type.is(IdentifierTypeSyntax.self) || type.is(MemberTypeSyntax.self) || type.is(ArrayTypeSyntax.self)
            || type.is(DictionaryTypeSyntax.self) || type.is(OptionalTypeSyntax.self)
        {
            return "\(spelled).self"
        }
        return "(\(spelled)).self"
    }
}
