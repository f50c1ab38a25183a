public import SnorkyProtocol

/// What a command did with its request.
public enum CommandResult: Sendable {
    /// Answer now with `data`.
    case reply(JSON)
    /// The command kept the `Request` and will resolve it later, exactly once.
    case deferred
}

/// A service whose messages are RPC calls (PROTOCOL.md section 2).
///
/// Write the commands as methods and let the macro generate `performCommand`:
///
/// ```swift
/// @RPCService
/// actor Calculator {
///     let name = "calculator"
///     @Command func sum(number1: Double, number2: Double) -> Double { number1 + number2 }
///     @Command func log(number: Double, base: Double = 2.718) -> Double { ... }
/// }
/// ```
///
/// Parameters are bound by name from `params` (any `JSONDecodable` type; a default value
/// makes a parameter optional). A parameter of type `Client` receives the caller, one of
/// type `Request` makes the command deferred: it must call `reply` or `fail` itself, now or
/// later. The return value (any `JSONEncodable`, or nothing for `null`) is the response's
/// `data`. Throw `RPCError("...")` to fail with that message; anything else thrown becomes
/// `Internal error`.
public protocol RPCService: Service {
    func performCommand(_ command: String, params: JSON, request: Request) async throws -> CommandResult
}

extension RPCService {
    public func handle(message: JSON, from client: Client) async {
        let call: RPCCall
        switch RPCCall.decode(message) {
        case .success(let decoded):
            call = decoded
        case .failure(let malformed):
            client.send(
                service: name,
                message: RPCMessage.error(callId: malformed.callId, message: ProtocolErrorMessage.malformedRequest)
            )
            client.node.reportProtocolError(from: client)
            return
        }
        let request = Request(client: client, service: name, command: call.command, callId: call.callId)
        do {
            switch try await performCommand(call.command, params: call.params, request: request) {
            case .reply(let data):
                request.reply(data)
            case .deferred:
                break
            }
        } catch let error as RPCError {
            request.fail(error)
        } catch {
            request.fail(dueTo: error)
        }
    }
}

/// Marks a type as an RPC service: generates `performCommand` from its `@Command` methods.
@attached(extension, conformances: RPCService, names: named(performCommand))
public macro RPCService() = #externalMacro(module: "SnorkyMacros", type: "RPCServiceMacro")

/// Marks a method as an RPC command, named after the method unless a name is given.
@attached(peer)
public macro Command(_ name: String? = nil) = #externalMacro(module: "SnorkyMacros", type: "CommandMacro")
