// Test doubles for the client's unit tests: a WebSocket the test drives by hand, and a
// clock whose timers fire only when the test advances it.
"use strict";

const Snorky = require("../snorky.js");

/** A WebSocket stand-in: records what the client sends; the test opens, feeds and drops it. */
class FakeSocket {
  constructor(url) {
    this.url = url;
    this.sent = [];
    this.closedWith = null;
    this.onopen = this.onmessage = this.onclose = this.onerror = null;
  }

  send(text) {
    if (typeof text !== "string") throw new TypeError("the client must send text frames");
    this.sent.push(text);
  }

  close(code, reason) {
    this.closedWith = { code, reason };
  }

  /** The server accepted the connection. */
  open() {
    if (this.onopen) this.onopen({});
  }

  /** A frame from the server: an object is encoded as JSON, a string is sent as is. */
  receive(frame) {
    if (this.onmessage) this.onmessage({ data: typeof frame === "string" ? frame : JSON.stringify(frame) });
  }

  /** The connection closed (by the server, or lost). */
  drop(code = 1006, reason = "") {
    if (this.onclose) this.onclose({ code, reason, wasClean: code !== 1006 });
  }

  /** Everything sent, decoded. */
  get frames() {
    return this.sent.map((text) => JSON.parse(text));
  }

  /** Answers the `index`th frame sent (a request) with a response carrying `data`. */
  respond(index, data = null) {
    const { service, message } = this.frames[index];
    this.receive({ service, message: { type: "response", callId: message.callId, data } });
  }

  /** Answers the `index`th frame sent with an RPC error. */
  fail(index, text) {
    const { service, message } = this.frames[index];
    this.receive({ service, message: { type: "error", callId: message.callId, message: text } });
  }
}

/** Timers that fire when `advance` passes their time, in time order. */
class FakeClock {
  constructor() {
    this.time = 0;
    this.timers = new Map();
    this.nextId = 1;
  }

  now() {
    return this.time;
  }

  setTimeout(callback, delay) {
    const id = this.nextId++;
    this.timers.set(id, { at: this.time + delay, callback });
    return id;
  }

  clearTimeout(id) {
    this.timers.delete(id);
  }

  /** Delays of the pending timers, from now, in order. */
  get pending() {
    return [...this.timers.values()].map((timer) => timer.at - this.time).sort((a, b) => a - b);
  }

  advance(milliseconds) {
    const end = this.time + milliseconds;
    for (;;) {
      let nextId = null;
      let next = null;
      for (const [id, timer] of this.timers) {
        if (timer.at <= end && (next === null || timer.at < next.at)) {
          nextId = id;
          next = timer;
        }
      }
      if (next === null) break;
      this.timers.delete(nextId);
      this.time = next.at;
      next.callback();
    }
    this.time = end;
  }
}

/**
 * A client on fake sockets and a fake clock. `sockets` lists every socket the client
 * created, in order; `socket` is the latest.
 */
function makeClient(services = { pubsub: Snorky.PubSub }, options = {}) {
  const sockets = [];
  class TestSocket extends FakeSocket {
    constructor(url) {
      super(url);
      sockets.push(this);
    }
  }
  const clock = new FakeClock();
  const snorky = new Snorky(TestSocket, "ws://server.test/ws", services, {
    timers: clock,
    random: () => 0,
    ...options,
  });
  return {
    snorky,
    clock,
    sockets,
    get socket() {
      return sockets[sockets.length - 1];
    },
  };
}

/** Lets pending promise callbacks run. */
function settle() {
  return new Promise((resolve) => setImmediate(resolve));
}

/** Whether `promise` settled yet, without waiting for it. */
async function state(promise) {
  const marker = {};
  const result = await Promise.race([promise.then(() => "fulfilled", () => "rejected"), settle().then(() => marker)]);
  return result === marker ? "pending" : result;
}

module.exports = { Snorky, FakeSocket, FakeClock, makeClient, settle, state };
