// TypeScript declarations of Snorky's JavaScript client (snorky.js).
//
// Plain script: `Snorky` is a global. CommonJS: `import Snorky = require("./snorky.js")`.
// ES module: `import Snorky from "./snorky.mjs"` (declared in snorky.d.mts).

export = Snorky;
export as namespace Snorky;

/** The JSON values the protocol carries. */
type JSONValue = null | boolean | number | string | JSONValue[] | { [key: string]: JSONValue };

/** The constructor of a WebSocket-like class (the browser's `WebSocket`, or `ws` in Node). */
interface SocketClass {
  new (url: string): Snorky.SocketLike;
}

/** A service class `Snorky` instantiates as `new ServiceClass(name, snorky)`. */
type ServiceClass = new (name: string, snorky: Snorky) => Snorky.Service;

/** The services object given to the constructor, as instances. */
type ServiceInstances<S> = { [K in keyof S]: S[K] extends new (...args: any[]) => infer I ? I : never };

declare class Snorky<S extends Record<string, ServiceClass> = Record<string, ServiceClass>> {
  /**
   * Opens a connection to `address` (e.g. `wss://example.com/ws`) and keeps it open: when
   * it drops, it reconnects with exponential backoff and jitter, and the services restore
   * their subscriptions and joins.
   */
  constructor(socketClass: SocketClass, address: string, services?: S, options?: Snorky.Options);

  readonly socketClass: SocketClass;
  readonly address: string;
  debug: boolean;
  /** The connection token, or a function returning one (or a promise of one) per attempt. */
  token: Snorky.TokenSource | undefined;
  /** Milliseconds before an unanswered call rejects with `TimeoutError`; 0: never. */
  callTimeout: number;
  /** The reconnection policy; null when reconnection is disabled. */
  readonly reconnectPolicy: Snorky.ReconnectPolicy | null;
  /** The service instances, by name. */
  readonly services: ServiceInstances<S>;

  readonly isConnected: boolean;
  readonly isConnecting: boolean;
  /** Failed attempts since the last stable connection. */
  readonly reconnectAttempts: number;

  /** Each time the connection opens. */
  readonly connected: Snorky.Signal<[Snorky.ConnectedEvent]>;
  /** Each time the connection (or an attempt) closes. */
  readonly disconnected: Snorky.Signal<[Snorky.DisconnectedEvent]>;
  /** When a reconnection attempt is scheduled. */
  readonly reconnecting: Snorky.Signal<[Snorky.ReconnectingEvent]>;
  /** Once the services restored their state after a reconnection. */
  readonly restored: Snorky.Signal<[Snorky.RestoredEvent]>;

  /** Opens the connection (done by the constructor unless `connect: false`). */
  connect(): void;
  /** Closes for good: no reconnection; waiting calls reject with `DisconnectedError`. */
  disconnect(): void;
  /** Logs to the console when `debug` is on. */
  logDebug(...args: unknown[]): void;
}

declare namespace Snorky {
  const VERSION: string;

  /** The promise type of RPC calls; replaceable (e.g. by a framework's own). */
  let Promise: PromiseConstructor;

  /** Default reconnection policy. */
  const DEFAULT_RECONNECT: ReconnectPolicy;

  /** The delay (ms) before reconnection attempt `attempt` (1, 2, …) under `policy`. */
  function backoffDelay(attempt: number, policy?: ReconnectPolicy, random?: () => number): number;

  /** JSON with object keys sorted: equal JSON values give equal strings. */
  function stableStringify(value: unknown): string;

  /** Called with an error a signal listener threw (default: rethrown asynchronously). */
  let reportListenerError: (error: unknown) => void;

  interface SocketLike {
    onopen: ((event: unknown) => void) | null;
    onmessage: ((event: { data: unknown }) => void) | null;
    onclose: ((event: { code?: number; reason?: string; wasClean?: boolean }) => void) | null;
    onerror: ((event: unknown) => void) | null;
    send(data: string): void;
    close(code?: number, reason?: string): void;
  }

  type TokenSource = string | null | (() => string | null | undefined | PromiseLike<string | null | undefined>);

  interface ReconnectPolicy {
    /** Delay before the first retry, in milliseconds (default 500). */
    initialDelay: number;
    /** Upper bound of the delay (default 30000). */
    maxDelay: number;
    /** Each failed attempt multiplies the delay by this (default 2). */
    factor: number;
    /** Fraction of the delay taken off at random, 0…1 (default 0.5). */
    jitter: number;
    /** A connection open this long (ms) resets the delay (default 5000). */
    stableAfter: number;
  }

  interface Timers {
    setTimeout(callback: () => void, delay: number): unknown;
    clearTimeout(id: unknown): void;
    now(): number;
  }

  interface Options {
    /** Log to the console. */
    debug?: boolean;
    /** A connection token (sent as the `token` URL parameter), or a function returning one. */
    token?: TokenSource;
    /** Milliseconds before an unanswered call rejects with `TimeoutError` (default 30000; 0: never). */
    callTimeout?: number;
    /** false: never reconnect; an object: overrides of `DEFAULT_RECONNECT`. */
    reconnect?: false | Partial<ReconnectPolicy>;
    /** false: do not connect until `connect()` is called. */
    connect?: boolean;
    /** Timer functions (for tests). */
    timers?: Timers;
    /** Random numbers in [0, 1) for the jitter (for tests). */
    random?: () => number;
  }

  interface ConnectedEvent {
    /** True when this is a reconnection (the services are restoring their state). */
    reconnected: boolean;
  }

  interface DisconnectedEvent {
    code: number | undefined;
    reason: string | undefined;
    wasClean: boolean | undefined;
    /** False when the attempt never got connected. */
    wasConnected: boolean;
    willReconnect: boolean;
  }

  interface ReconnectingEvent {
    attempt: number;
    /** Milliseconds until the attempt. */
    delay: number;
    /** Why the previous attempt failed before a socket opened (e.g. the token function failed). */
    error: unknown;
  }

  interface RestoredEvent {
    /** The errors of the restoration calls that failed (empty when everything came back). */
    failures: unknown[];
  }

  /** Values kept by their canonical JSON (`stableStringify`). */
  interface KeyedSet<T = any> {
    has(value: T): boolean;
    values(): T[];
  }

  /** A call waiting for its answer. */
  interface PendingCall {
    command: string;
    /** Sent (false: queued until the connection opens). */
    onWire: boolean;
  }

  interface SignalBinding {
    /** Removes the listener. */
    detach(): void;
  }

  /** An event: listeners run by priority (higher first), then in the order they were added. */
  class Signal<Args extends unknown[] = unknown[]> {
    active: boolean;
    add(listener: (...args: Args) => unknown, context?: unknown, priority?: number): SignalBinding;
    addOnce(listener: (...args: Args) => unknown, context?: unknown, priority?: number): SignalBinding;
    remove<L extends (...args: Args) => unknown>(listener: L, context?: unknown): L;
    removeAll(): void;
    has(listener: (...args: Args) => unknown, context?: unknown): boolean;
    getNumListeners(): number;
    /** Calls the listeners; one returning `false` stops the dispatch. */
    dispatch(...args: Args): void;
  }

  class SnorkyError extends Error {}
  /** The server answered with an error; `message` is its text (e.g. `Not joined`). */
  class RPCError extends SnorkyError {
    service: string;
    command: string;
  }
  /** No answer within the call timeout. */
  class TimeoutError extends SnorkyError {
    service: string;
    command: string;
  }
  /** The connection closed before the answer came (the call may or may not have run). */
  class DisconnectedError extends SnorkyError {
    service: string;
    command: string;
  }

  /** Base of service connectors. */
  class Service {
    constructor(name: string, snorky: Snorky<any>);
    readonly name: string;
    readonly snorky: Snorky<any>;
    /** Every message the server sends on this service. */
    readonly packetReceived: Signal<[any]>;
    /** Restores first after a reconnection (authentication). */
    restoreFirst: boolean;
    /** Set-up hook, called by the constructor. */
    init(): void;
    sendMessage(message: unknown, onSent?: () => void, onDropped?: () => void): unknown;
    /** After a reconnection: re-establish the previous connection's state. */
    restoreState(): Array<PromiseLike<unknown>>;
    /** The connection closed; `final` when it will not be reopened. */
    connectionLost(final: boolean): void;
    /** `disconnect()` was called: forget what would be restored. */
    resetState(): void;
    /** An ES5-style subclass with these methods. */
    static extend<T extends typeof Service>(this: T, methods: Record<string, unknown>): T;
  }

  /** A service speaking the RPC protocol. */
  class RPCService extends Service {
    nextCallId: number;
    /** Calls waiting for their answer, by call id. */
    readonly calls: Map<number, PendingCall>;
    /** Notifications: messages whose `type` is neither `response` nor `error`. */
    readonly notificationReceived: Signal<[any]>;
    /** Calls `command`; resolves with the response's `data`. */
    rpcCall<T = any>(command: string, params: object, options?: { timeout?: number }): Promise<T>;
    onPacket(message: any): void;
    /** Adds `method(params)` for each name, calling the command of the same name. */
    static addRPCMethods(methods: string[]): void;
  }

  // pubsub

  interface PublishedMessage {
    type: "message";
    channel: any;
    message: any;
  }

  class PubSub extends RPCService {
    readonly messagePublished: Signal<[PublishedMessage]>;
    /** The subscribed channels (restored after a reconnection). */
    readonly channels: KeyedSet;
    subscribe(params: { channel: JSONValue }): Promise<null>;
    unsubscribe(params: { channel: JSONValue }): Promise<null>;
    publish(params: { channel: JSONValue; message: JSONValue }): Promise<null>;
    onNotification(message: any): void;
  }

  // messaging

  interface ParticipantMessage {
    type: "message";
    sender: string;
    dest: string;
    body: any;
  }

  class Messaging extends RPCService {
    readonly messageReceived: Signal<[ParticipantMessage]>;
    /** The names this client registered (registered again after a reconnection). */
    readonly participants: KeyedSet<string>;
    registerParticipant(params: { name: string }): Promise<null>;
    unregisterParticipant(params: { name: string }): Promise<null>;
    listParticipants(params?: {}): Promise<string[]>;
    send(params: { sender: string; dest: string; body: JSONValue }): Promise<null>;
    onNotification(message: any): void;
  }

  // auth

  class Auth extends RPCService {
    /** The identity the last `authenticate` gave, or null. */
    readonly identity: string | null;
    authenticate(params: { token: string }): Promise<{ identity: string }>;
  }

  // chat

  interface ChatMessage {
    type: "message";
    from: string;
    channel: any;
    body: any;
    timestamp: string;
  }

  interface ChatPresence {
    type: "presence";
    from: string;
    channel: any;
    status: "joined" | "left";
    timestamp: string;
  }

  interface ChatRead {
    type: "read";
    channel: any;
    timestamp: string;
  }

  class Chat extends RPCService {
    readonly messageReceived: Signal<[ChatMessage]>;
    readonly presenceReceived: Signal<[ChatPresence]>;
    readonly readReceived: Signal<[ChatRead]>;
    /** After a reconnection joined `channel` again: the members now. */
    readonly rejoined: Signal<[{ channel: any; members: string[] }]>;
    /** The joined channels (joined again after a reconnection). */
    readonly channels: KeyedSet;
    join(params: { channel: JSONValue }): Promise<{ members: string[] }>;
    leave(params: { channel: JSONValue }): Promise<null>;
    send(params: { channel: JSONValue; body: JSONValue }): Promise<null>;
    read(params: { channel: JSONValue }): Promise<null>;
    onNotification(message: any): void;
  }

  // cursors

  interface CursorData {
    publicHandle: number;
    document: any;
    position: any;
    status: any;
    owner: string;
  }

  class Cursors extends RPCService {
    /** Joined documents by the canonical JSON of their name. */
    readonly documents: Map<string, Cursors.Document>;
    /** This connection's cursors by private handle. */
    readonly ownCursors: Map<number, Cursors.OwnCursor>;
    join(params: { document: JSONValue }): Promise<Cursors.Document>;
    leave(params: { document: JSONValue }): Promise<null>;
    getFreePrivateHandle(): number;
    onNotification(notification: any): void;
  }

  namespace Cursors {
    type Cursor = ForeignCursor | OwnCursor;

    /** A cursor of another connection. */
    class ForeignCursor implements CursorData {
      constructor(data: CursorData);
      readonly isMine: false;
      publicHandle: number;
      document: any;
      position: any;
      status: any;
      owner: string;
    }

    /** A cursor of this connection. */
    class OwnCursor {
      readonly isMine: true;
      readonly document: Document;
      readonly privateHandle: number;
      /** Set once the server created the cursor. */
      publicHandle?: number;
      position: any;
      status: any;
      removed: boolean;
      pendingPromiseCount: number;
      /** Changes position and/or status; sends nothing when unchanged. */
      update(newData: { position?: JSONValue; status?: JSONValue }): Promise<void>;
      remove(): Promise<void>;
      /** True when the server has every change. */
      isSynchronized(): boolean;
    }

    /** A joined document. */
    class Document {
      constructor(service: Cursors, name: any, cursors?: CursorData[]);
      readonly service: Cursors;
      readonly name: any;
      readonly cursors: Cursor[];
      readonly cursorAdded: Signal<[ForeignCursor]>;
      readonly cursorUpdated: Signal<[ForeignCursor]>;
      readonly cursorRemoved: Signal<[{ publicHandle: number; document: any }]>;
      /** The cursor at once, and a promise of its public handle. */
      createCursor(params: { position: JSONValue; status: JSONValue }): [OwnCursor, Promise<number>];
      leave(): Promise<null>;
      onCursorAdded(cursor: CursorData): void;
      onCursorUpdated(cursor: CursorData): void;
      onCursorRemoved(cursor: { publicHandle: number; document: any }): void;
    }
  }

  // datasync

  type Delta =
    | { type: "insert"; model: string; data: any; tag?: string }
    | { type: "delete"; model: string; data: any; tag?: string }
    | { type: "update"; model: string; newData: any; oldData: any; tag?: string };

  class DataSync extends RPCService {
    readonly deltaReceived: Signal<[Delta]>;
    /** An acquired subscription ended with the connection (tokens are single-use). */
    readonly subscriptionLost: Signal<[{ token: string }]>;
    /** The acquired subscription tokens. */
    readonly subscriptions: KeyedSet<string>;
    acquireSubscription(params: { token: string }): Promise<null>;
    cancelSubscription(params: { token: string }): Promise<null>;
    onNotification(message: any): void;
  }

  namespace DataSync {
    interface Iterator<T = any> {
      hasNext(): boolean;
      next(): T;
      remove(): void;
      update(newValue: any): void;
    }

    /** Base of the collections deltas are applied to. */
    class Collection {
      insert(value: any): void;
      getIterator(): Iterator;
    }

    interface ArrayCollectionOptions<T> {
      /** Maps each row before it is stored. */
      transformItem?: (row: any) => T;
    }

    class ArrayIterator<T = any> implements Iterator<T> {
      constructor(array: T[], options?: ArrayCollectionOptions<T>);
      array: T[];
      options: ArrayCollectionOptions<T>;
      index: number;
      deleted: boolean;
      hasNext(): boolean;
      next(): T;
      checkSafe(): void;
      remove(): void;
      update(newValue: any): void;
    }

    class ArrayCollection<T = any> extends Collection {
      constructor(array: T[], options?: ArrayCollectionOptions<T>);
      array: T[];
      options: ArrayCollectionOptions<T>;
      insert(value: any): void;
      getIterator(): ArrayIterator<T>;
    }

    class SingleItemIterator<T = any> implements Iterator<T> {
      constructor(collection: SingleItemCollection<T>);
      hasNext(): boolean;
      next(): T;
      remove(): void;
      update(newValue: any): void;
    }

    class SingleItemCollection<T = any> extends Collection {
      constructor(readHandler: () => T, updateHandler: (newValue: any) => void, removeHandler?: () => void);
      readHandler: () => T;
      updateHandler: (newValue: any) => void;
      removeHandler: () => void;
      insert(value: any): void;
      getIterator(): SingleItemIterator<T>;
    }

    interface ProcessorOptions {
      /** Whether collection item `item` is the row `row` (default: equal `id`). */
      itemsAreEqual?: (item: any, row: any, delta: Delta) => boolean;
    }

    /** Applies deltas to `{Model: collection}` or `{Model: {tag: collection}}`. */
    class CollectionDeltaProcessor {
      constructor(collections: Record<string, Collection | Record<string, Collection>>, options?: ProcessorOptions);
      collections: Record<string, Collection | Record<string, Collection>>;
      itemsAreEqual(item: any, row: any, delta: Delta): boolean;
      collectionFor(delta: Delta): Collection | null;
      processDelta(delta: Delta): void;
    }
  }
}
