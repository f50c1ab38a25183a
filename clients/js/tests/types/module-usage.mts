// The ES module entry point type-checks too.
import Snorky from "../../snorky.mjs";

declare const WebSocket: { new (url: string): Snorky.SocketLike };
const snorky = new Snorky(WebSocket, "ws://localhost/ws", { pubsub: Snorky.PubSub });
snorky.services.pubsub.subscribe({ channel: "news" }).then((result: null) => console.log(result));
