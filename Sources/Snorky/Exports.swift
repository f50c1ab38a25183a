// Service authors write `JSON`, `JSONObject` and `CloseCode` in their commands and in the
// code `@RPCService` generates; re-export the protocol module so `import Snorky` suffices.
@_exported public import SnorkyProtocol
