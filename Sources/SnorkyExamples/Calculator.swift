import Foundation
public import Snorky

/// The seed's first example: two commands with named, typed parameters, one with a default.
///
///     {"service":"calculator","message":{"command":"log","params":{"number":8,"base":2},"callId":1}}
///     → {"service":"calculator","message":{"type":"response","callId":1,"data":3.0}}
@RPCService
public actor Calculator {
    public let name: String

    public init(name: String = "calculator") {
        self.name = name
    }

    @Command func sum(number1: Double, number2: Double) -> Double {
        number1 + number2
    }

    @Command func log(number: Double, base: Double = 2.718) throws -> Double {
        guard number > 0, base > 0, base != 1 else { throw RPCError("Math domain error") }
        return Foundation.log(number) / Foundation.log(base)
    }
}
