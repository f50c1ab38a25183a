// Compiled with `tsc --noEmit --strict` by types.test.js when TypeScript is installed:
// typical uses of the client must type-check against snorky.d.ts.
import Snorky = require("../../snorky.js");

declare const WebSocket: { new (url: string): Snorky.SocketLike };

const snorky = new Snorky(WebSocket, "wss://example.com/ws", {
  pubsub: Snorky.PubSub,
  chat: Snorky.Chat,
  cursors: Snorky.Cursors,
  datasync: Snorky.DataSync,
  messaging: Snorky.Messaging,
  auth: Snorky.Auth,
}, {
  token: () => Promise.resolve("jwt"),
  callTimeout: 10000,
  reconnect: { initialDelay: 250, maxDelay: 10000 },
});

snorky.connected.add(({ reconnected }) => console.log(reconnected ? "back" : "up"));
snorky.disconnected.add((event) => console.log(event.code, event.willReconnect));
snorky.reconnecting.add(({ attempt, delay }) => console.log(attempt, delay));
snorky.restored.add(({ failures }) => console.log(failures.length));

async function main(): Promise<void> {
  const { pubsub, chat, cursors, datasync, messaging, auth } = snorky.services;
  pubsub.messagePublished.add((message) => console.log(message.channel, message.message));
  await pubsub.subscribe({ channel: { room: 1 } });
  await pubsub.publish({ channel: "news", message: { title: "hi" } });

  const identity: { identity: string } = await auth.authenticate({ token: "jwt" });
  console.log(identity.identity, auth.identity);

  chat.presenceReceived.add((presence) => console.log(presence.from, presence.status));
  chat.messageReceived.add((message) => console.log(message.from, message.body));
  chat.rejoined.add(({ channel, members }) => console.log(channel, members.join(",")));
  const { members } = await chat.join({ channel: "#cats" });
  console.log(members.length);
  await chat.send({ channel: "#cats", body: "meow" });

  const document = await cursors.join({ document: "canvas" });
  document.cursorAdded.add((cursor) => console.log(cursor.owner, cursor.position));
  document.cursorRemoved.add((cursor) => console.log(cursor.publicHandle));
  const [cursor, created] = document.createCursor({ position: { x: 1, y: 2 }, status: "alice" });
  const handle: number = await created;
  console.log(handle, cursor.isSynchronized());
  await cursor.update({ position: { x: 3, y: 4 } });
  for (const each of document.cursors) {
    if (!each.isMine) console.log(each.owner);
  }

  const players: Array<{ id: number; color: string }> = [];
  const processor = new Snorky.DataSync.CollectionDeltaProcessor({
    Player: new Snorky.DataSync.ArrayCollection(players),
  });
  datasync.deltaReceived.add(processor.processDelta, processor);
  datasync.subscriptionLost.add(({ token }) => console.log(token));
  await datasync.acquireSubscription({ token: "t" });

  messaging.messageReceived.add((message) => console.log(message.sender, message.body));
  const names: string[] = await messaging.listParticipants();
  console.log(names);

  try {
    await pubsub.unsubscribe({ channel: "never" });
  } catch (error) {
    if (error instanceof Snorky.RPCError) console.log(error.message, error.command);
    if (error instanceof Snorky.TimeoutError || error instanceof Snorky.DisconnectedError) console.log("retry");
  }

  class Calculator extends Snorky.RPCService {
    sum(params: { number1: number; number2: number }): Promise<number> {
      return this.rpcCall<number>("sum", params);
    }
  }
  const calculator = new Snorky(WebSocket, "ws://localhost/ws", { calculator: Calculator });
  const total: number = await calculator.services.calculator.sum({ number1: 1, number2: 2 });
  console.log(total, Snorky.backoffDelay(3), Snorky.VERSION);
  snorky.disconnect();
}

main();
