// Keeps snorky.d.ts in step with snorky.js: every public member of every exported class
// (methods, signals and fields) must be declared; typical uses must type-check when a
// TypeScript compiler is installed.
"use strict";

const test = require("node:test");
const assert = require("node:assert/strict");
const fs = require("node:fs");
const path = require("node:path");
const { execFileSync } = require("node:child_process");
const { Snorky, makeClient } = require("./support.js");

const declarations = fs.readFileSync(path.join(__dirname, "..", "snorky.d.ts"), "utf8");

/** The text between the braces that follow `opening` (a regular expression source). */
function block(opening) {
  const match = new RegExp(opening).exec(declarations);
  assert.ok(match, `snorky.d.ts has no ${opening}`);
  let depth = 0;
  const start = declarations.indexOf("{", match.index);
  for (let i = start; i < declarations.length; i++) {
    if (declarations[i] === "{") depth++;
    if (declarations[i] === "}" && --depth === 0) return declarations.slice(start + 1, i);
  }
  throw new Error(`unbalanced braces after ${opening}`);
}

function classBlock(name) {
  return block(`(?:^|\\n)\\s*(?:declare )?class ${name}\\b[^{]*`);
}

/** Whether a class body declares `member` (a field, getter or method) itself. */
function declaresMember(body, member) {
  return new RegExp(`(^|\\n)\\s*(?:readonly |static |let |const )*${member}\\??\\s*[(<:]`).test(body);
}

/** The public names a runtime object has: own properties not starting with `_`. */
function publicNames(object) {
  return Object.getOwnPropertyNames(object).filter((name) => !name.startsWith("_") && name !== "constructor");
}

// Each runtime class, its declared name, and an instance (for fields set by constructors).
function runtimeClasses() {
  const { snorky } = makeClient({}, { connect: false });
  const cursors = new Snorky.Cursors("cursors", snorky);
  const document = new Snorky.Cursors.Document(cursors, "doc", []);
  return [
    ["Snorky", Snorky, snorky],
    ["Signal", Snorky.Signal, new Snorky.Signal()],
    ["Service", Snorky.Service, new Snorky.Service("service", snorky)],
    ["RPCService", Snorky.RPCService, new Snorky.RPCService("rpc", snorky)],
    ["PubSub", Snorky.PubSub, new Snorky.PubSub("pubsub", snorky)],
    ["Messaging", Snorky.Messaging, new Snorky.Messaging("messaging", snorky)],
    ["Auth", Snorky.Auth, new Snorky.Auth("auth", snorky)],
    ["Chat", Snorky.Chat, new Snorky.Chat("chat", snorky)],
    ["Cursors", Snorky.Cursors, cursors],
    ["Document", Snorky.Cursors.Document, document],
    ["OwnCursor", Snorky.Cursors.OwnCursor, new Snorky.Cursors.OwnCursor(document, { privateHandle: 1, position: 0, status: 0 })],
    ["ForeignCursor", Snorky.Cursors.ForeignCursor, null],
    ["DataSync", Snorky.DataSync, new Snorky.DataSync("datasync", snorky)],
    ["Collection", Snorky.DataSync.Collection, null],
    ["ArrayCollection", Snorky.DataSync.ArrayCollection, new Snorky.DataSync.ArrayCollection([])],
    ["ArrayIterator", Snorky.DataSync.ArrayIterator, new Snorky.DataSync.ArrayIterator([])],
    ["SingleItemCollection", Snorky.DataSync.SingleItemCollection, new Snorky.DataSync.SingleItemCollection(() => null, () => {})],
    ["SingleItemIterator", Snorky.DataSync.SingleItemIterator, null],
    ["CollectionDeltaProcessor", Snorky.DataSync.CollectionDeltaProcessor, new Snorky.DataSync.CollectionDeltaProcessor({})],
    ["SnorkyError", Snorky.SnorkyError, null],
    ["RPCError", Snorky.RPCError, new Snorky.RPCError("m", "s", "c")],
    ["TimeoutError", Snorky.TimeoutError, new Snorky.TimeoutError("m", "s", "c")],
    ["DisconnectedError", Snorky.DisconnectedError, new Snorky.DisconnectedError("m", "s", "c")],
  ];
}

test("snorky.d.ts declares every public method and field of every class", () => {
  const classes = runtimeClasses();
  const nameOf = new Map(classes.map(([name, cls]) => [cls.prototype, name]));
  const missing = [];
  for (const [name, cls, instance] of classes) {
    // A member may be declared on the class or on a declared ancestor.
    const bodies = [];
    for (let proto = cls.prototype; proto && nameOf.has(proto); proto = Object.getPrototypeOf(proto)) {
      bodies.push(classBlock(nameOf.get(proto)));
    }
    const isDeclared = (member) => bodies.some((body) => declaresMember(body, member));
    const members = new Set(publicNames(cls.prototype).filter((member) => !(cls.prototype instanceof Error && member === "name")));
    if (instance) {
      for (const member of publicNames(instance)) {
        if (!(instance instanceof Error && ["stack", "message", "name"].includes(member))) members.add(member);
      }
    }
    for (const member of members) {
      if (!isDeclared(member)) missing.push(`${name}.${member}`);
    }
  }
  assert.deepEqual(missing, []);
});

test("snorky.d.ts declares every static member and every export of the Snorky namespace", () => {
  const namespace = block("declare namespace Snorky\\s*");
  const missing = [];
  for (const name of publicNames(Snorky).filter((n) => !["length", "name", "prototype"].includes(n))) {
    const declared = new RegExp(`\\n\\s*(?:const|let|function|class|interface) ${name}\\b`).test(namespace);
    if (!declared) missing.push(`Snorky.${name}`);
  }
  const nested = { Cursors: Snorky.Cursors, DataSync: Snorky.DataSync, RPCService: Snorky.RPCService, Service: Snorky.Service };
  for (const [owner, cls] of Object.entries(nested)) {
    for (const name of publicNames(cls).filter((n) => !["length", "name", "prototype"].includes(n))) {
      const inNamespace = /^[A-Z]/.test(name)
        && new RegExp(`namespace ${owner} \\{[\\s\\S]*?class ${name}\\b`).test(declarations);
      const asStatic = new RegExp(`static ${name}\\b`).test(classBlock(owner));
      const inherited = name === "extend" || name === "addRPCMethods";
      if (!inNamespace && !asStatic && !inherited) missing.push(`${owner}.${name}`);
    }
  }
  assert.deepEqual(missing, []);
});

test("the RPC methods of each connector are declared with a params object and a promise", () => {
  const rpcMethods = {
    PubSub: ["subscribe", "unsubscribe", "publish"],
    Messaging: ["registerParticipant", "unregisterParticipant", "listParticipants", "send"],
    Chat: ["join", "leave", "send", "read"],
    Cursors: ["join", "leave"],
    DataSync: ["acquireSubscription", "cancelSubscription"],
    Auth: ["authenticate"],
  };
  for (const [name, methods] of Object.entries(rpcMethods)) {
    const body = classBlock(name);
    for (const method of methods) {
      assert.equal(typeof Snorky[name].prototype[method], "function", `${name}.${method} missing at run time`);
      assert.match(body, new RegExp(`\\n\\s*${method}\\(params\\??: [^)]*\\): Promise<`), `${name}.${method}`);
    }
  }
});

function typeScriptCompiler() {
  try {
    execFileSync("tsc", ["--version"], { stdio: "ignore" });
    return "tsc";
  } catch {
    return null;
  }
}

test("typical uses type-check against the declarations (tsc --strict)", { skip: typeScriptCompiler() ? false : "tsc is not installed" }, () => {
  const files = ["usage.ts", "module-usage.mts"].map((file) => path.join(__dirname, "types", file));
  execFileSync("tsc", [
    "--noEmit", "--strict", "--target", "es2020", "--lib", "es2020,dom",
    "--module", "node16", "--moduleResolution", "node16", ...files,
  ], { stdio: "pipe" });
});
