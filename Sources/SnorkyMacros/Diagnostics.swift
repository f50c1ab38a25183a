import SwiftDiagnostics

/// Every error the macros report. Each says what is wrong and what to write instead, since
/// the user sees it on their own code, not on the generated extension.
enum SnorkyDiagnostic: DiagnosticMessage {
    case rpcServiceOnUnsupportedDeclaration(kind: String)
    case commandOnNonFunction
    case commandOutsideService
    case commandInExtension
    case commandNameNotLiteral
    case commandNameEmpty
    case duplicateCommandName(String)
    case inoutParameter(String)
    case variadicParameter(String)
    case unnamedParameter
    case genericCommand
    case opaqueParameter(String)
    case mutatingCommand
    case deferredCommandReturnsValue
    case operatorCommand

    var message: String {
        switch self {
        case .rpcServiceOnUnsupportedDeclaration(let kind):
            return "@RPCService can only be applied to an actor, class, struct or enum, not \(kind)"
        case .commandOnNonFunction:
            return "@Command can only be applied to a method"
        case .commandOutsideService:
            return "@Command has no effect outside a type marked @RPCService"
        case .commandInExtension:
            return "@Command methods must be declared in the body of the @RPCService type, not in an extension"
        case .commandNameNotLiteral:
            return "command name must be a string literal without interpolation"
        case .commandNameEmpty:
            return "command name must not be empty"
        case .duplicateCommandName(let name):
            return "duplicate command name '\(name)'"
        case .inoutParameter(let name):
            return "command parameter '\(name)' cannot be inout: it is bound from the call's params"
        case .variadicParameter(let name):
            return "command parameter '\(name)' cannot be variadic; take an array instead"
        case .unnamedParameter:
            return "command parameter needs a label or a name to be bound from the call's params"
        case .genericCommand:
            return "a command cannot be generic: params are bound to concrete types"
        case .opaqueParameter(let name):
            return "command parameter '\(name)' cannot have an opaque ('some') type: params are bound to concrete types"
        case .mutatingCommand:
            return "a command cannot be mutating; make the service an actor or a class to keep state"
        case .deferredCommandReturnsValue:
            return "a command taking a Request is deferred and must not return a value; answer with request.reply(...) instead"
        case .operatorCommand:
            return "an operator cannot be a command"
        }
    }

    var diagnosticID: MessageID {
        let id: String
        switch self {
        case .rpcServiceOnUnsupportedDeclaration: id = "rpcServiceOnUnsupportedDeclaration"
        case .commandOnNonFunction: id = "commandOnNonFunction"
        case .commandOutsideService: id = "commandOutsideService"
        case .commandInExtension: id = "commandInExtension"
        case .commandNameNotLiteral: id = "commandNameNotLiteral"
        case .commandNameEmpty: id = "commandNameEmpty"
        case .duplicateCommandName: id = "duplicateCommandName"
        case .inoutParameter: id = "inoutParameter"
        case .variadicParameter: id = "variadicParameter"
        case .unnamedParameter: id = "unnamedParameter"
        case .genericCommand: id = "genericCommand"
        case .opaqueParameter: id = "opaqueParameter"
        case .mutatingCommand: id = "mutatingCommand"
        case .deferredCommandReturnsValue: id = "deferredCommandReturnsValue"
        case .operatorCommand: id = "operatorCommand"
        }
        return MessageID(domain: "SnorkyMacros", id: id)
    }

    var severity: DiagnosticSeverity { .error }
}

enum SnorkyNote: NoteMessage {
    case firstCommandDeclaration(String)
    case requestParameter

    var message: String {
        switch self {
        case .firstCommandDeclaration(let name): return "command '\(name)' is first declared here"
        case .requestParameter: return "the Request parameter makes the command deferred"
        }
    }

    var noteID: MessageID {
        switch self {
        case .firstCommandDeclaration: MessageID(domain: "SnorkyMacros", id: "firstCommandDeclaration")
        case .requestParameter: MessageID(domain: "SnorkyMacros", id: "requestParameter")
        }
    }
}
