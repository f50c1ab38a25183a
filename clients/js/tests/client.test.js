// Unit tests of the client's connection logic: wire format, calls, timeouts, reconnection
// and restoration. Run with `node --test clients/js/tests/`.
"use strict";

const test = require("node:test");
const assert = require("node:assert/strict");
const { Snorky, makeClient, settle, state } = require("./support.js");

// ---------------------------------------------------------------------------
// Wire format

test("frames are exactly the original client's: envelope, command, params, callId per service from 0", async () => {
  const { snorky, socket } = makeClient({
    pubsub: Snorky.PubSub,
    messaging: Snorky.Messaging,
    chat: Snorky.Chat,
    datasync: Snorky.DataSync,
  });
  const { pubsub, messaging, chat, datasync } = snorky.services;
  socket.open();
  pubsub.subscribe({ channel: "news" });
  pubsub.publish({ channel: "news", message: { title: "Hello", n: 1 } });
  pubsub.unsubscribe({ channel: "news" });
  messaging.registerParticipant({ name: "Alice" });
  messaging.listParticipants();
  messaging.send({ sender: "Alice", dest: "Bob", body: "hi" });
  chat.join({ channel: "#cats" });
  chat.send({ channel: "#cats", body: "meow" });
  chat.read({ channel: "#cats" });
  chat.leave({ channel: "#cats" });
  datasync.acquireSubscription({ token: "abc" });
  datasync.cancelSubscription({ token: "abc" });
  assert.deepEqual(socket.sent, [
    '{"service":"pubsub","message":{"command":"subscribe","params":{"channel":"news"},"callId":0}}',
    '{"service":"pubsub","message":{"command":"publish","params":{"channel":"news","message":{"title":"Hello","n":1}},"callId":1}}',
    '{"service":"pubsub","message":{"command":"unsubscribe","params":{"channel":"news"},"callId":2}}',
    '{"service":"messaging","message":{"command":"registerParticipant","params":{"name":"Alice"},"callId":0}}',
    '{"service":"messaging","message":{"command":"listParticipants","params":{},"callId":1}}',
    '{"service":"messaging","message":{"command":"send","params":{"sender":"Alice","dest":"Bob","body":"hi"},"callId":2}}',
    '{"service":"chat","message":{"command":"join","params":{"channel":"#cats"},"callId":0}}',
    '{"service":"chat","message":{"command":"send","params":{"channel":"#cats","body":"meow"},"callId":1}}',
    '{"service":"chat","message":{"command":"read","params":{"channel":"#cats"},"callId":2}}',
    '{"service":"chat","message":{"command":"leave","params":{"channel":"#cats"},"callId":3}}',
    '{"service":"datasync","message":{"command":"acquireSubscription","params":{"token":"abc"},"callId":0}}',
    '{"service":"datasync","message":{"command":"cancelSubscription","params":{"token":"abc"},"callId":1}}',
  ]);
});

test("calls made before the connection opens are sent, in order, when it opens", () => {
  const { snorky, socket } = makeClient();
  snorky.services.pubsub.subscribe({ channel: "a" });
  snorky.services.pubsub.subscribe({ channel: "b" });
  assert.deepEqual(socket.sent, []);
  socket.open();
  assert.deepEqual(socket.frames.map((frame) => frame.message.params.channel), ["a", "b"]);
});

test("a response resolves with its data, an error rejects with RPCError carrying the server's message", async () => {
  const { snorky, socket } = makeClient({ messaging: Snorky.Messaging });
  socket.open();
  const list = snorky.services.messaging.listParticipants();
  const register = snorky.services.messaging.registerParticipant({ name: "" });
  socket.receive({ service: "messaging", message: { type: "response", callId: 0, data: ["Alice", "Bob"] } });
  socket.fail(1, "Name not allowed");
  assert.deepEqual(await list, ["Alice", "Bob"]);
  await assert.rejects(register, (error) => {
    assert.ok(error instanceof Snorky.RPCError);
    assert.ok(error instanceof Snorky.SnorkyError);
    assert.ok(error instanceof Error);
    assert.equal(error.name, "RPCError");
    assert.equal(error.message, "Name not allowed");
    assert.equal(error.service, "messaging");
    assert.equal(error.command, "registerParticipant");
    return true;
  });
});

test("a response without `data` resolves with null", async () => {
  const { snorky, socket } = makeClient();
  socket.open();
  const call = snorky.services.pubsub.publish({ channel: "c", message: 1 });
  socket.receive({ service: "pubsub", message: { type: "response", callId: 0 } });
  assert.equal(await call, null);
});

test("notifications reach the service's signal; frames for other services, protocol errors and junk are ignored", () => {
  const { snorky, socket } = makeClient();
  const seen = [];
  snorky.services.pubsub.messagePublished.add((message) => seen.push(message));
  socket.open();
  socket.receive("not json");
  socket.receive({ service: "snorky", message: { type: "error", callId: null, message: "Invalid JSON" } });
  socket.receive({ service: "chat", message: { type: "message" } });
  socket.receive({ service: "pubsub", message: { type: "error", callId: 99, message: "stray" } });
  socket.receive({ service: "pubsub", message: { type: "message", channel: "news", message: "hello" } });
  assert.deepEqual(seen, [{ type: "message", channel: "news", message: "hello" }]);
});

// ---------------------------------------------------------------------------
// Timeouts and disconnections

test("a call not answered within callTimeout rejects with TimeoutError; its late answer is ignored", async () => {
  const { snorky, socket, clock } = makeClient(undefined, { callTimeout: 1000 });
  socket.open();
  const call = snorky.services.pubsub.publish({ channel: "c", message: 1 });
  clock.advance(999);
  assert.equal(await state(call), "pending");
  clock.advance(1);
  await assert.rejects(call, (error) => error instanceof Snorky.TimeoutError && error.command === "publish");
  socket.respond(0);
  assert.equal(snorky.services.pubsub.calls.size, 0);
});

test("a per-call timeout overrides callTimeout, and 0 disables it", async () => {
  const { snorky, socket, clock } = makeClient(undefined, { callTimeout: 0 });
  socket.open();
  const forever = snorky.services.pubsub.rpcCall("publish", { channel: "c", message: 1 });
  const short = assert.rejects(
    snorky.services.pubsub.rpcCall("publish", { channel: "c", message: 2 }, { timeout: 50 }), Snorky.TimeoutError);
  clock.advance(1000000);
  assert.equal(await state(forever), "pending");
  await short;
});

test("a queued call that times out is withdrawn: it is never sent", async () => {
  const { snorky, socket, clock } = makeClient(undefined, { callTimeout: 1000 });
  const call = assert.rejects(snorky.services.pubsub.publish({ channel: "c", message: "late" }), Snorky.TimeoutError);
  const kept = snorky.services.pubsub.rpcCall("publish", { channel: "c", message: "kept" }, { timeout: 5000 });
  clock.advance(1000);
  await call;
  socket.open();
  assert.deepEqual(socket.frames.map((frame) => frame.message.params.message), ["kept"]);
  socket.respond(0);
  assert.equal(await kept, null);
});

test("calls on the wire are rejected with DisconnectedError when the connection drops; calls made while down wait for the next connection", async () => {
  const { snorky, sockets, clock } = makeClient();
  sockets[0].open();
  const inFlight = snorky.services.pubsub.publish({ channel: "c", message: "sent" });
  sockets[0].drop();
  await assert.rejects(inFlight, (error) => error instanceof Snorky.DisconnectedError && error.command === "publish");

  const whileDown = snorky.services.pubsub.publish({ channel: "c", message: "queued" });
  clock.advance(500);
  assert.equal(sockets.length, 2);
  sockets[1].open();
  assert.deepEqual(sockets[1].frames.map((frame) => frame.message.params.message), ["queued"]);
  sockets[1].respond(0);
  assert.equal(await whileDown, null);
});

test("disconnect() rejects queued and sent calls, closes with 1000 and never reconnects", async () => {
  const { snorky, sockets, clock } = makeClient();
  const events = [];
  snorky.disconnected.add((event) => events.push(event));
  sockets[0].open();
  const sent = assert.rejects(snorky.services.pubsub.publish({ channel: "c", message: 1 }), Snorky.DisconnectedError);
  snorky.disconnect();
  await sent;
  assert.deepEqual(sockets[0].closedWith, { code: 1000, reason: "Client disconnected" });
  assert.equal(snorky.isConnected, false);
  assert.equal(events.length, 1);
  assert.equal(events[0].willReconnect, false);
  assert.equal(events[0].wasConnected, true);
  clock.advance(3600000);
  assert.equal(sockets.length, 1);
  // A late close event of the abandoned socket changes nothing.
  sockets[0].drop(1000);
  assert.equal(events.length, 1);
  // Calls made while closed wait for a later connect().
  const afterwards = snorky.services.pubsub.publish({ channel: "c", message: 2 });
  snorky.connect();
  assert.equal(sockets.length, 2);
  sockets[1].open();
  assert.equal(sockets[1].frames.length, 1);
  sockets[1].respond(0);
  assert.equal(await afterwards, null);
});

test("with reconnect: false a dropped connection stays down and queued calls are rejected", async () => {
  const { snorky, sockets, clock } = makeClient(undefined, { reconnect: false });
  const events = [];
  snorky.disconnected.add((event) => events.push(event));
  const queued = assert.rejects(snorky.services.pubsub.publish({ channel: "c", message: 1 }), Snorky.DisconnectedError);
  sockets[0].drop();
  await queued;
  assert.equal(events[0].willReconnect, false);
  clock.advance(60000);
  assert.equal(sockets.length, 1);
});

// ---------------------------------------------------------------------------
// Reconnection backoff

test("backoffDelay doubles from initialDelay up to maxDelay, minus up to `jitter` of it at random", () => {
  const policy = { initialDelay: 500, maxDelay: 30000, factor: 2, jitter: 0.5, stableAfter: 5000 };
  const noJitter = () => 0;
  assert.deepEqual([1, 2, 3, 4, 5, 6, 7, 8, 20].map((n) => Snorky.backoffDelay(n, policy, noJitter)),
    [500, 1000, 2000, 4000, 8000, 16000, 30000, 30000, 30000]);
  assert.equal(Snorky.backoffDelay(3, policy, () => 1), 1000);
  assert.equal(Snorky.backoffDelay(3, policy, () => 0.5), 1500);
  for (let i = 0; i < 200; i++) {
    const delay = Snorky.backoffDelay(4, policy);
    assert.ok(delay >= 2000 && delay <= 4000, `${delay}`);
  }
  assert.equal(Snorky.backoffDelay(1, { ...policy, jitter: 0 }, () => 0.9), 500);
});

test("failed attempts back off exponentially; each retry opens a new socket after its delay", () => {
  const { snorky, sockets, clock } = makeClient(undefined, { reconnect: { initialDelay: 100, maxDelay: 1000 } });
  const scheduled = [];
  snorky.reconnecting.add((event) => scheduled.push(event));
  for (let attempt = 1; attempt <= 6; attempt++) {
    sockets[sockets.length - 1].drop();
    const delay = scheduled[scheduled.length - 1].delay;
    clock.advance(delay - 1);
    assert.equal(sockets.length, attempt, "reconnected before its delay");
    clock.advance(1);
    assert.equal(sockets.length, attempt + 1);
  }
  assert.deepEqual(scheduled.map((event) => [event.attempt, event.delay]),
    [[1, 100], [2, 200], [3, 400], [4, 800], [5, 1000], [6, 1000]]);
});

test("jitter spreads the delays of clients that lost the server at the same instant", () => {
  const delays = new Set();
  for (let i = 0; i < 20; i++) {
    const { snorky, socket } = makeClient(undefined, { random: Math.random });
    let delay;
    snorky.reconnecting.add((event) => (delay = event.delay));
    socket.open();
    socket.drop(1001);
    assert.ok(delay >= 250 && delay <= 500, `${delay}`);
    delays.add(delay);
  }
  assert.ok(delays.size > 5, `only ${delays.size} distinct delays`);
});

test("a connection that stayed open `stableAfter` resets the backoff; one closed at once does not", () => {
  const { snorky, sockets, clock } = makeClient(undefined, { reconnect: { initialDelay: 100, stableAfter: 5000 } });
  const delays = [];
  snorky.reconnecting.add((event) => delays.push(event.delay));
  sockets[0].drop();
  clock.advance(100);
  sockets[1].drop();
  clock.advance(200);
  // Accepted then closed right away (e.g. a worker at its connection limit): keeps backing off.
  sockets[2].open();
  clock.advance(10);
  sockets[2].drop(4003);
  clock.advance(400);
  // Stable for 5 s: the next loss starts over.
  sockets[3].open();
  clock.advance(5000);
  sockets[3].drop(1001);
  assert.deepEqual(delays, [100, 200, 400, 100]);
});

test("connect() during a backoff connects at once", () => {
  const { snorky, sockets, clock } = makeClient();
  sockets[0].drop();
  assert.equal(clock.pending.length, 1);
  snorky.connect();
  assert.equal(sockets.length, 2);
  assert.equal(clock.pending.length, 0);
});

// ---------------------------------------------------------------------------
// Tokens

test("a token string is added to the URL, percent-encoded, after ? or &", () => {
  assert.equal(makeClient(undefined, { token: "a.b+c/d=" }).socket.url, "ws://server.test/ws?token=a.b%2Bc%2Fd%3D");
  const sockets = [];
  class Recording {
    constructor(url) {
      sockets.push(url);
    }
  }
  new Snorky(Recording, "ws://h/ws?v=1", {}, { token: "t" });
  new Snorky(Recording, "ws://h/ws", {});
  assert.deepEqual(sockets, ["ws://h/ws?v=1&token=t", "ws://h/ws"]);
});

test("a token function is asked again before every attempt, and may return a promise", async () => {
  let issued = 0;
  const { sockets, clock } = makeClient(undefined, { token: () => Promise.resolve("token-" + ++issued) });
  await settle();
  assert.equal(sockets[0].url, "ws://server.test/ws?token=token-1");
  sockets[0].open();
  sockets[0].drop();
  clock.advance(500);
  await settle();
  assert.equal(sockets[1].url, "ws://server.test/ws?token=token-2");
});

test("a failing token function counts as a failed attempt and is retried with backoff", async () => {
  let calls = 0;
  const { snorky, sockets, clock } = makeClient(undefined, {
    token: () => (++calls < 3 ? Promise.reject(new Error("token service down")) : "ok"),
  });
  const errors = [];
  snorky.reconnecting.add((event) => errors.push([event.attempt, event.delay, event.error && event.error.message]));
  await settle();
  clock.advance(500);
  await settle();
  clock.advance(1000);
  await settle();
  assert.deepEqual(errors, [[1, 500, "token service down"], [2, 1000, "token service down"]]);
  assert.equal(sockets.length, 1);
  assert.equal(sockets[0].url, "ws://server.test/ws?token=ok");
});

// ---------------------------------------------------------------------------
// Restoration after a reconnection

test("pubsub subscriptions are restored after a reconnection, before calls made while down", async () => {
  const { snorky, sockets, clock } = makeClient();
  const pubsub = snorky.services.pubsub;
  sockets[0].open();
  pubsub.subscribe({ channel: "a" });
  pubsub.subscribe({ channel: { room: 1, floor: 2 } });
  pubsub.subscribe({ channel: "gone" });
  pubsub.subscribe({ channel: "refused" }).catch(() => {});
  sockets[0].respond(0);
  sockets[0].respond(1);
  sockets[0].respond(2);
  sockets[0].fail(3, "Too many subscriptions");
  await settle();
  pubsub.unsubscribe({ channel: "gone" });
  sockets[0].respond(4);
  await settle();

  const connected = [];
  const restored = [];
  snorky.connected.add((event) => connected.push(event));
  snorky.restored.add((event) => restored.push(event));
  sockets[0].drop(1001);
  pubsub.publish({ channel: "a", message: "while down" });
  clock.advance(500);
  sockets[1].open();
  assert.deepEqual(connected, [{ reconnected: true }]);
  assert.deepEqual(sockets[1].frames.map((frame) => [frame.message.command, frame.message.params]), [
    ["subscribe", { channel: "a" }],
    ["subscribe", { channel: { room: 1, floor: 2 } }],
    ["publish", { channel: "a", message: "while down" }],
  ]);
  sockets[1].respond(0);
  await settle();
  assert.deepEqual(restored, [], "restored before every restoration was answered");
  sockets[1].respond(1);
  await settle();
  assert.deepEqual(restored, [{ failures: [] }]);
});

test("chat joins are restored; `rejoined` gives the members; a failed rejoin is reported and forgotten", async () => {
  const { snorky, sockets, clock } = makeClient({ chat: Snorky.Chat });
  const chat = snorky.services.chat;
  sockets[0].open();
  chat.join({ channel: "#cats" });
  chat.join({ channel: "#dogs" });
  sockets[0].respond(0, { members: ["alice"] });
  sockets[0].respond(1, { members: ["alice"] });
  await settle();
  const rejoined = [];
  const restored = [];
  chat.rejoined.add((event) => rejoined.push(event));
  snorky.restored.add((event) => restored.push(event));

  sockets[0].drop();
  clock.advance(500);
  sockets[1].open();
  assert.deepEqual(sockets[1].frames.map((frame) => frame.message.params.channel), ["#cats", "#dogs"]);
  sockets[1].respond(0, { members: ["alice", "bob"] });
  sockets[1].fail(1, "Not authenticated");
  await settle();
  assert.deepEqual(rejoined, [{ channel: "#cats", members: ["alice", "bob"] }]);
  assert.equal(restored.length, 1);
  assert.equal(restored[0].failures.length, 1);
  assert.equal(restored[0].failures[0].message, "Not authenticated");

  sockets[1].drop();
  clock.advance(1000); // the second attempt in a row: the connection was not stable
  sockets[2].open();
  assert.deepEqual(sockets[2].frames.map((frame) => frame.message.params.channel), ["#cats"]);
});

test("a chat channel left is not rejoined; `Already joined` still counts as joined", async () => {
  const { snorky, sockets, clock } = makeClient({ chat: Snorky.Chat });
  const chat = snorky.services.chat;
  sockets[0].open();
  chat.join({ channel: "x" }).catch(() => {});
  sockets[0].fail(0, "Already joined");
  chat.join({ channel: "y" });
  sockets[0].respond(1, { members: [] });
  await settle();
  chat.leave({ channel: "y" });
  sockets[0].respond(2);
  await settle();
  sockets[0].drop();
  clock.advance(500);
  sockets[1].open();
  assert.deepEqual(sockets[1].frames.map((frame) => frame.message.params.channel), ["x"]);
});

test("auth restores first, whatever the order of the services, so identity-bound joins succeed", async () => {
  const { snorky, sockets, clock } = makeClient({ chat: Snorky.Chat, auth: Snorky.Auth });
  sockets[0].open();
  snorky.services.chat.join({ channel: "c" });
  snorky.services.auth.authenticate({ token: "jwt" });
  sockets[0].respond(0, { members: [] });
  sockets[0].respond(1, { identity: "alice" });
  await settle();
  assert.equal(snorky.services.auth.identity, "alice");
  sockets[0].drop();
  clock.advance(500);
  sockets[1].open();
  assert.deepEqual(sockets[1].frames.map((frame) => [frame.service, frame.message.command, frame.message.params]), [
    ["auth", "authenticate", { token: "jwt" }],
    ["chat", "join", { channel: "c" }],
  ]);
});

test("messaging names are registered again after a reconnection", async () => {
  const { snorky, sockets, clock } = makeClient({ messaging: Snorky.Messaging });
  const messaging = snorky.services.messaging;
  sockets[0].open();
  messaging.registerParticipant({ name: "Alice" });
  messaging.registerParticipant({ name: "Al" });
  sockets[0].respond(0);
  sockets[0].respond(1);
  await settle();
  messaging.unregisterParticipant({ name: "Al" });
  sockets[0].respond(2);
  await settle();
  sockets[0].drop();
  clock.advance(500);
  sockets[1].open();
  assert.deepEqual(sockets[1].frames.map((frame) => [frame.message.command, frame.message.params]), [
    ["registerParticipant", { name: "Alice" }],
  ]);
});

test("disconnect() forgets the state: a later connect() restores nothing", async () => {
  const { snorky, sockets } = makeClient();
  sockets[0].open();
  snorky.services.pubsub.subscribe({ channel: "a" });
  sockets[0].respond(0);
  await settle();
  snorky.disconnect();
  snorky.connect();
  sockets[1].open();
  assert.deepEqual(sockets[1].sent, []);
});

test("datasync: deltas are dispatched; an acquired subscription lost with the connection is reported once", async () => {
  const { snorky, sockets, clock } = makeClient({ datasync: Snorky.DataSync });
  const datasync = snorky.services.datasync;
  const deltas = [];
  const lost = [];
  datasync.deltaReceived.add((delta) => deltas.push(delta));
  datasync.subscriptionLost.add((event) => lost.push(event));
  sockets[0].open();
  datasync.acquireSubscription({ token: "t1" });
  datasync.acquireSubscription({ token: "t2" });
  sockets[0].respond(0);
  sockets[0].respond(1);
  await settle();
  datasync.cancelSubscription({ token: "t2" });
  sockets[0].respond(2);
  await settle();
  const delta = { type: "insert", model: "Player", data: { id: 1 } };
  sockets[0].receive({ service: "datasync", message: { type: "delta", delta } });
  assert.deepEqual(deltas, [delta]);
  sockets[0].drop();
  assert.deepEqual(lost, [{ token: "t1" }]);
  clock.advance(500);
  sockets[1].open();
  assert.deepEqual(sockets[1].sent, [], "a single-use token must not be acquired again");
  sockets[1].drop();
  assert.equal(lost.length, 1);
});

// ---------------------------------------------------------------------------
// Cursors

async function joinedDocument(cursorsOnServer = []) {
  const client = makeClient({ cursors: Snorky.Cursors });
  client.sockets[0].open();
  const joining = client.snorky.services.cursors.join({ document: "Sheet1" });
  client.sockets[0].respond(0, { cursors: cursorsOnServer });
  client.document = await joining;
  return client;
}

test("cursors: join gives a Document with the foreign cursors; notifications keep it current", async () => {
  const bob = { publicHandle: 1, document: "Sheet1", position: 3, status: "idle", owner: "bob" };
  const { document, socket } = await joinedDocument([bob]);
  assert.equal(document.name, "Sheet1");
  assert.deepEqual(document.cursors.map((cursor) => [cursor.publicHandle, cursor.owner, cursor.isMine]), [[1, "bob", false]]);
  const events = [];
  document.cursorAdded.add((cursor) => events.push(["added", cursor.publicHandle]));
  document.cursorUpdated.add((cursor) => events.push(["updated", cursor.publicHandle, cursor.position]));
  document.cursorRemoved.add((cursor) => events.push(["removed", cursor.publicHandle]));
  const carol = { publicHandle: 2, document: "Sheet1", position: 0, status: "typing", owner: "carol" };
  socket.receive({ service: "cursors", message: { type: "cursorAdded", cursor: carol } });
  socket.receive({ service: "cursors", message: { type: "cursorUpdated", cursor: { ...bob, position: 9 } } });
  socket.receive({ service: "cursors", message: { type: "cursorRemoved", cursor: { publicHandle: 1, document: "Sheet1" } } });
  socket.receive({ service: "cursors", message: { type: "cursorAdded", cursor: { ...carol, document: "Other" } } });
  assert.deepEqual(events, [["added", 2], ["updated", 1, 9], ["removed", 1]]);
  assert.deepEqual(document.cursors.map((cursor) => cursor.owner), ["carol"]);
});

test("cursors: createCursor, updateCursor and removeCursor frames; an unchanged update sends nothing", async () => {
  const { document, socket } = await joinedDocument();
  const [cursor, created] = document.createCursor({ position: { x: 1, y: 2 }, status: "alice" });
  assert.equal(cursor.isMine, true);
  assert.equal(cursor.isSynchronized(), false);
  socket.respond(1, 7);
  assert.equal(await created, 7);
  assert.equal(cursor.publicHandle, 7);
  assert.equal(cursor.isSynchronized(), true);
  await cursor.update({ position: { x: 1, y: 2 } });
  const updated = cursor.update({ position: { x: 5, y: 2 } });
  socket.respond(2);
  await updated;
  assert.throws(() => cursor.update({ owner: "mallory" }), /Can't update 'owner'/);
  const removed = cursor.remove();
  assert.deepEqual(document.cursors, []);
  socket.respond(3);
  await removed;
  assert.deepEqual(socket.sent.slice(1), [
    '{"service":"cursors","message":{"command":"createCursor","params":{"privateHandle":1,"document":"Sheet1","position":{"x":1,"y":2},"status":"alice"},"callId":1}}',
    '{"service":"cursors","message":{"command":"updateCursor","params":{"privateHandle":1,"newData":{"position":{"x":5,"y":2}}},"callId":2}}',
    '{"service":"cursors","message":{"command":"removeCursor","params":{"privateHandle":1},"callId":3}}',
  ]);
});

test("cursors: after a reconnection the document is joined again, own cursors re-created, foreign cursors resynchronised", async () => {
  const bob = { publicHandle: 1, document: "Sheet1", position: 3, status: "idle", owner: "bob" };
  const carol = { publicHandle: 2, document: "Sheet1", position: 4, status: "idle", owner: "carol" };
  const client = await joinedDocument([bob, carol]);
  const { document, sockets, clock, snorky } = client;
  const [cursor] = document.createCursor({ position: 1, status: "alice" });
  sockets[0].respond(1, 3);
  await settle();
  const events = [];
  document.cursorAdded.add((c) => events.push(["added", c.owner]));
  document.cursorUpdated.add((c) => events.push(["updated", c.owner, c.position]));
  document.cursorRemoved.add((c) => events.push(["removed", c.publicHandle]));
  const restored = [];
  snorky.restored.add((event) => restored.push(event));

  sockets[0].drop();
  cursor.update({ position: 2 }); // moved while down: re-created at the new position
  clock.advance(500);
  sockets[1].open();
  assert.deepEqual(sockets[1].frames.map((frame) => [frame.message.command, frame.message.params]), [
    ["join", { document: "Sheet1" }],
    ["createCursor", { privateHandle: 1, document: "Sheet1", position: 2, status: "alice" }],
    ["updateCursor", { privateHandle: 1, newData: { position: 2 } }],
  ]);
  const dave = { publicHandle: 5, document: "Sheet1", position: 0, status: "idle", owner: "dave" };
  sockets[1].respond(0, { cursors: [{ ...bob, position: 8 }, dave] });
  sockets[1].respond(1, 9);
  sockets[1].respond(2);
  await settle();
  assert.deepEqual(events, [["removed", 2], ["updated", "bob", 8], ["added", "dave"]]);
  assert.equal(cursor.publicHandle, 9);
  assert.equal(cursor.isSynchronized(), true);
  assert.deepEqual(restored, [{ failures: [] }]);
  assert.deepEqual(document.cursors.map((c) => c.isMine ? "me" : c.owner).sort(), ["bob", "dave", "me"]);
});

// ---------------------------------------------------------------------------
// Signals and services

test("Signal: priorities, addOnce, remove, detach, and a listener returning false stops the dispatch", () => {
  const signal = new Snorky.Signal();
  const calls = [];
  const low = (x) => calls.push(["low", x]);
  const context = { name: "ctx" };
  signal.add(low);
  signal.add(function (x) {
    calls.push([this.name, x]);
  }, context, 5);
  signal.addOnce((x) => calls.push(["once", x]));
  signal.dispatch(1);
  signal.dispatch(2);
  assert.deepEqual(calls, [["ctx", 1], ["low", 1], ["once", 1], ["ctx", 2], ["low", 2]]);
  assert.equal(signal.getNumListeners(), 2);
  signal.remove(low);
  assert.equal(signal.has(low), false);
  const binding = signal.add(() => false, null, 10);
  calls.length = 0;
  signal.dispatch(3);
  assert.deepEqual(calls, []);
  binding.detach();
  signal.dispatch(4);
  assert.deepEqual(calls, [["ctx", 4]]);
  signal.removeAll();
  assert.equal(signal.getNumListeners(), 0);
});

test("a listener that throws does not stop the other listeners; the error is reported", () => {
  const reported = [];
  const original = Snorky.reportListenerError;
  Snorky.reportListenerError = (error) => reported.push(error.message);
  try {
    const { snorky, socket } = makeClient();
    const seen = [];
    snorky.services.pubsub.messagePublished.add(() => {
      throw new Error("listener bug");
    });
    snorky.services.pubsub.messagePublished.add((message) => seen.push(message.message));
    socket.open();
    socket.receive({ service: "pubsub", message: { type: "message", channel: "c", message: "still delivered" } });
    assert.deepEqual(seen, ["still delivered"]);
    assert.deepEqual(reported, ["listener bug"]);
  } finally {
    Snorky.reportListenerError = original;
  }
});

test("custom services: ES classes or RPCService.extend, with addRPCMethods", async () => {
  class Calculator extends Snorky.RPCService {}
  Calculator.addRPCMethods(["sum"]);
  const Echo = Snorky.RPCService.extend({
    init() {
      Snorky.RPCService.prototype.init.call(this);
      this.echoed = new Snorky.Signal();
      this.notificationReceived.add((message) => this.echoed.dispatch(message.text));
    },
  });
  assert.throws(() => Calculator.addRPCMethods(["rpcCall"]), /already exists/);
  const { snorky, socket } = makeClient({ calculator: Calculator, echo: Echo });
  socket.open();
  const sum = snorky.services.calculator.sum({ number1: 2, number2: 3 });
  assert.equal(socket.sent[0], '{"service":"calculator","message":{"command":"sum","params":{"number1":2,"number2":3},"callId":0}}');
  socket.respond(0, 5);
  assert.equal(await sum, 5);
  const texts = [];
  snorky.services.echo.echoed.add((text) => texts.push(text));
  socket.receive({ service: "echo", message: { type: "echo", text: "hi" } });
  assert.deepEqual(texts, ["hi"]);
});

test("connected and disconnected report each open and close", () => {
  const { snorky, sockets, clock } = makeClient();
  const events = [];
  snorky.connected.add((event) => events.push(["connected", event.reconnected, snorky.isConnected]));
  snorky.disconnected.add((event) => events.push(["disconnected", event.code, event.wasConnected, event.willReconnect]));
  assert.equal(snorky.isConnecting, true);
  sockets[0].open();
  sockets[0].drop(1001);
  clock.advance(500);
  sockets[1].drop(1006);
  clock.advance(1000);
  sockets[2].open();
  assert.deepEqual(events, [
    ["connected", false, true],
    ["disconnected", 1001, true, true],
    ["disconnected", 1006, false, true],
    ["connected", true, true],
  ]);
});
