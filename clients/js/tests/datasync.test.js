// Unit tests of DataSync's delta processor and collections.
"use strict";

const test = require("node:test");
const assert = require("node:assert/strict");
const { Snorky } = require("./support.js");

const { CollectionDeltaProcessor, ArrayCollection, SingleItemCollection, Collection } = Snorky.DataSync;

/** Runs `body` with console.error captured; returns what it printed. */
function capturingConsoleErrors(body) {
  const printed = [];
  const original = console.error;
  console.error = (...args) => printed.push(args.join(" "));
  try {
    body();
  } finally {
    console.error = original;
  }
  return printed;
}

test("insert, update and delete on an ArrayCollection, rows matched by id", () => {
  const players = [{ id: 1, name: "Alice", color: "blue" }];
  const processor = new CollectionDeltaProcessor({ Player: new ArrayCollection(players) });
  processor.processDelta({ type: "insert", model: "Player", data: { id: 2, name: "Bob", color: "red" } });
  processor.processDelta({
    type: "update", model: "Player",
    oldData: { id: 1, name: "Alice", color: "blue" },
    newData: { id: 1, name: "Alice", color: "green" },
  });
  assert.deepEqual(players, [{ id: 1, name: "Alice", color: "green" }, { id: 2, name: "Bob", color: "red" }]);
  processor.processDelta({ type: "delete", model: "Player", data: { id: 1, name: "Alice", color: "green" } });
  assert.deepEqual(players, [{ id: 2, name: "Bob", color: "red" }]);
});

test("an update or delete of a row the collection does not hold changes nothing", () => {
  const players = [{ id: 1 }];
  const processor = new CollectionDeltaProcessor({ Player: new ArrayCollection(players) });
  processor.processDelta({ type: "update", model: "Player", oldData: { id: 9 }, newData: { id: 9, x: 1 } });
  processor.processDelta({ type: "delete", model: "Player", data: { id: 8 } });
  assert.deepEqual(players, [{ id: 1 }]);
});

test("only the first matching row is updated or deleted", () => {
  const rows = [{ id: 1, n: "a" }, { id: 1, n: "b" }];
  const processor = new CollectionDeltaProcessor({ Row: new ArrayCollection(rows) });
  processor.processDelta({ type: "delete", model: "Row", data: { id: 1 } });
  assert.deepEqual(rows, [{ id: 1, n: "b" }]);
});

test("transformItem maps rows on insert and update", () => {
  class Player {
    constructor(row) {
      Object.assign(this, row);
    }
    get label() {
      return `${this.name} (${this.color})`;
    }
  }
  const players = [];
  const processor = new CollectionDeltaProcessor({
    Player: new ArrayCollection(players, { transformItem: (row) => new Player(row) }),
  });
  processor.processDelta({ type: "insert", model: "Player", data: { id: 1, name: "Alice", color: "blue" } });
  processor.processDelta({ type: "update", model: "Player", oldData: { id: 1 }, newData: { id: 1, name: "Alice", color: "red" } });
  assert.ok(players[0] instanceof Player);
  assert.equal(players[0].label, "Alice (red)");
});

test("a custom itemsAreEqual decides which row a delta is about", () => {
  const rows = [{ key: "a", v: 1 }, { key: "b", v: 2 }];
  const processor = new CollectionDeltaProcessor({ Row: new ArrayCollection(rows) }, {
    itemsAreEqual: (item, other) => item.key === other.key,
  });
  processor.processDelta({ type: "update", model: "Row", oldData: { key: "b", v: 2 }, newData: { key: "b", v: 3 } });
  assert.deepEqual(rows, [{ key: "a", v: 1 }, { key: "b", v: 3 }]);
});

test("tagged collections: the delta's tag picks one of several views of a model", () => {
  const red = [];
  const blue = [];
  const processor = new CollectionDeltaProcessor({
    Player: { red: new ArrayCollection(red), blue: new ArrayCollection(blue) },
  });
  processor.processDelta({ type: "insert", model: "Player", tag: "blue", data: { id: 1 } });
  assert.deepEqual([red, blue], [[], [{ id: 1 }]]);
  const printed = capturingConsoleErrors(() =>
    processor.processDelta({ type: "insert", model: "Player", tag: "green", data: { id: 2 } }));
  assert.deepEqual(printed, ["Received delta with unregistered tag: green (model: Player)"]);
});

test("SingleItemCollection reads, updates and removes through its handlers; it ignores inserts", () => {
  let item = { id: 7, title: "draft" };
  const removed = [];
  const collection = new SingleItemCollection(
    () => item,
    (newItem) => (item = newItem),
    () => removed.push(item.id),
  );
  assert.ok(collection instanceof Collection);
  const processor = new CollectionDeltaProcessor({ Post: collection });
  processor.processDelta({ type: "update", model: "Post", oldData: { id: 7 }, newData: { id: 7, title: "final" } });
  assert.deepEqual(item, { id: 7, title: "final" });
  processor.processDelta({ type: "update", model: "Post", oldData: { id: 8 }, newData: { id: 8, title: "other" } });
  assert.deepEqual(item, { id: 7, title: "final" });
  processor.processDelta({ type: "delete", model: "Post", data: { id: 7 } });
  assert.deepEqual(removed, [7]);
  const printed = capturingConsoleErrors(() => processor.processDelta({ type: "insert", model: "Post", data: { id: 9 } }));
  assert.deepEqual(printed, ["Received insert() request in SingleItemCollection"]);
});

test("unregistered models and unknown delta types are reported and change nothing", () => {
  const rows = [{ id: 1 }];
  const processor = new CollectionDeltaProcessor({ Row: new ArrayCollection(rows) });
  const printed = capturingConsoleErrors(() => {
    processor.processDelta({ type: "insert", model: "Other", data: { id: 2 } });
    processor.processDelta({ type: "upsert", model: "Row", data: { id: 2 } });
    processor.processDelta({ type: "insert", model: "toString", data: { id: 3 } });
  });
  assert.deepEqual(rows, [{ id: 1 }]);
  assert.deepEqual(printed, [
    "Received delta for unregistered model: Other",
    "Received delta of strange type: upsert",
    "Received delta for unregistered model: toString",
  ]);
});

test("ArrayIterator refuses to act before next() or twice on a removed item", () => {
  const iterator = new ArrayCollection([1, 2]).getIterator();
  assert.throws(() => iterator.remove(), /not pointing to an item/);
  assert.equal(iterator.next(), 1);
  iterator.remove();
  assert.throws(() => iterator.update(5), /deleted item/);
  assert.equal(iterator.next(), 2);
  assert.equal(iterator.hasNext(), false);
  assert.throws(() => iterator.next(), /Busted iterator/);
});

test("deltas from the datasync service feed a processor end to end", async () => {
  const { makeClient } = require("./support.js");
  const { snorky, socket } = makeClient({ datasync: Snorky.DataSync });
  const players = [];
  const processor = new CollectionDeltaProcessor({ Player: new ArrayCollection(players) });
  snorky.services.datasync.deltaReceived.add(processor.processDelta, processor);
  socket.open();
  socket.receive({ service: "datasync", message: { type: "delta", delta: { type: "insert", model: "Player", data: { id: 1, c: "b" } } } });
  socket.receive({
    service: "datasync",
    message: { type: "delta", delta: { type: "update", model: "Player", oldData: { id: 1, c: "b" }, newData: { id: 1, c: "r" } } },
  });
  assert.deepEqual(players, [{ id: 1, c: "r" }]);
});
