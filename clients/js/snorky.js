/*! Snorky JavaScript client | one file, no dependencies
 *
 * Works as a plain script (`<script src="/snorky.js">` defines `window.Snorky`), as a
 * CommonJS module (`require("./snorky.js")`), and from ES modules through the small
 * wrapper `snorky.mjs` (`import Snorky from "/snorky.mjs"`).
 *
 *   const snorky = new Snorky(WebSocket, "wss://example.com/ws", {
 *     pubsub: Snorky.PubSub,
 *     chat: Snorky.Chat,
 *   }, { token: () => fetch("/my-token").then((r) => r.text()) });
 *   snorky.services.pubsub.messagePublished.add((m) => console.log(m.channel, m.message));
 *   await snorky.services.pubsub.subscribe({ channel: "news" });
 *
 * The wire format is the one of the original Snorky JavaScript client (0.1.0-a5): every
 * frame is `{"service": name, "message": {"command", "params", "callId"}}` with call ids
 * counting from 0 per service, so servers speaking that protocol understand this client.
 */
(function (root) {
  "use strict";

  var VERSION = "1.0.0";

  // ---------------------------------------------------------------------------
  // Helpers

  function hasOwn(object, key) {
    return Object.prototype.hasOwnProperty.call(object, key);
  }

  /** JSON with object keys sorted: equal JSON values give equal strings. */
  function stableStringify(value) {
    if (value === null || typeof value !== "object") {
      var text = JSON.stringify(value);
      return text === undefined ? "null" : text;
    }
    if (typeof value.toJSON === "function") {
      return stableStringify(value.toJSON());
    }
    if (Array.isArray(value)) {
      return "[" + value.map(stableStringify).join(",") + "]";
    }
    var keys = Object.keys(value).filter(function (key) {
      return value[key] !== undefined && typeof value[key] !== "function";
    });
    keys.sort();
    return "{" + keys.map(function (key) {
      return JSON.stringify(key) + ":" + stableStringify(value[key]);
    }).join(",") + "}";
  }

  function jsonEqual(a, b) {
    return stableStringify(a) === stableStringify(b);
  }

  /** Appends `token=<token>` to a WebSocket URL. */
  function addTokenToURL(address, token) {
    if (token === undefined || token === null || token === "") {
      return address;
    }
    var separator = address.indexOf("?") === -1 ? "?" : "&";
    return address + separator + "token=" + encodeURIComponent(String(token));
  }

  function reportListenerError(error) {
    // A failing listener must not stop the client from processing the frame, nor hide
    // the failure: rethrow it outside of the dispatch (replaceable: Snorky.reportListenerError).
    setTimeout(function () {
      throw error;
    }, 0);
  }

  // ---------------------------------------------------------------------------
  // Signals: the client's events. `signal.add(listener[, context[, priority]])`.

  /**
   * An event with listeners. Listeners with a higher priority run first; equal priorities
   * run in the order they were added. A listener returning `false` stops the dispatch.
   */
  function Signal() {
    this._bindings = [];
    this.active = true;
  }

  Signal.prototype._register = function (listener, context, priority, once) {
    if (typeof listener !== "function") {
      throw new TypeError("Signal listener must be a function");
    }
    var existing = this._indexOf(listener, context);
    if (existing !== -1) {
      var binding = this._bindings[existing];
      if (binding.once !== once) {
        throw new Error("The listener was already added with" + (once ? "out" : "") + " addOnce()");
      }
      return binding;
    }
    var signal = this;
    var created = {
      listener: listener,
      context: context,
      priority: priority || 0,
      once: once,
      detach: function () {
        signal.remove(listener, context);
      },
    };
    var index = this._bindings.length;
    while (index > 0 && this._bindings[index - 1].priority < created.priority) {
      index--;
    }
    this._bindings.splice(index, 0, created);
    return created;
  };

  Signal.prototype._indexOf = function (listener, context) {
    for (var i = 0; i < this._bindings.length; i++) {
      if (this._bindings[i].listener === listener && this._bindings[i].context === context) {
        return i;
      }
    }
    return -1;
  };

  /** Adds a listener; returns a binding whose `detach()` removes it. */
  Signal.prototype.add = function (listener, context, priority) {
    return this._register(listener, context, priority, false);
  };

  /** Adds a listener that is removed after its first call. */
  Signal.prototype.addOnce = function (listener, context, priority) {
    return this._register(listener, context, priority, true);
  };

  Signal.prototype.remove = function (listener, context) {
    var index = this._indexOf(listener, context);
    if (index !== -1) {
      this._bindings.splice(index, 1);
    }
    return listener;
  };

  Signal.prototype.removeAll = function () {
    this._bindings = [];
  };

  Signal.prototype.has = function (listener, context) {
    return this._indexOf(listener, context) !== -1;
  };

  Signal.prototype.getNumListeners = function () {
    return this._bindings.length;
  };

  /** Calls every listener with the given arguments. */
  Signal.prototype.dispatch = function () {
    if (!this.active) {
      return;
    }
    var args = Array.prototype.slice.call(arguments);
    var bindings = this._bindings.slice();
    for (var i = 0; i < bindings.length; i++) {
      var binding = bindings[i];
      if (binding.once) {
        this.remove(binding.listener, binding.context);
      }
      var result;
      try {
        result = binding.listener.apply(binding.context, args);
      } catch (error) {
        Snorky.reportListenerError(error);
      }
      if (result === false) {
        break;
      }
    }
  };

  // ---------------------------------------------------------------------------
  // Errors

  function defineError(name, parent, init) {
    function ErrorType(message) {
      var error = new Error(message);
      Object.setPrototypeOf(error, ErrorType.prototype);
      if (Error.captureStackTrace) {
        Error.captureStackTrace(error, ErrorType);
      }
      if (init) {
        init.apply(error, arguments);
      }
      return error;
    }
    ErrorType.prototype = Object.create(parent.prototype, {
      constructor: { value: ErrorType, writable: true, configurable: true },
      name: { value: name, writable: true, configurable: true },
    });
    Object.setPrototypeOf(ErrorType, parent);
    return ErrorType;
  }

  /** Base of every error the client rejects a call with. */
  var SnorkyError = defineError("SnorkyError", Error);
  /** The server answered the call with an error; `message` is the server's text. */
  var RPCError = defineError("RPCError", SnorkyError, function (message, service, command) {
    this.service = service;
    this.command = command;
  });
  /** No answer within the call timeout. */
  var TimeoutError = defineError("TimeoutError", SnorkyError, function (message, service, command) {
    this.service = service;
    this.command = command;
  });
  /** The connection closed before the answer arrived (the call may or may not have run). */
  var DisconnectedError = defineError("DisconnectedError", SnorkyError, function (message, service, command) {
    this.service = service;
    this.command = command;
  });

  // ---------------------------------------------------------------------------
  // Reconnection policy

  var DEFAULT_RECONNECT = {
    /** Delay before the first retry, in milliseconds. */
    initialDelay: 500,
    /** Upper bound of the delay. */
    maxDelay: 30000,
    /** Each failed attempt multiplies the delay by this. */
    factor: 2,
    /** Fraction of the delay taken off at random (0: none, 1: anywhere in [0, delay]). */
    jitter: 0.5,
    /** A connection that stayed open this long resets the delay to `initialDelay`. */
    stableAfter: 5000,
  };

  function reconnectPolicy(option) {
    if (option === false) {
      return null;
    }
    var policy = {};
    var key;
    for (key in DEFAULT_RECONNECT) {
      policy[key] = DEFAULT_RECONNECT[key];
    }
    if (option && typeof option === "object") {
      for (key in option) {
        if (hasOwn(DEFAULT_RECONNECT, key)) {
          policy[key] = option[key];
        }
      }
    }
    return policy;
  }

  /**
   * The delay before reconnection attempt number `attempt` (1, 2, …): exponential
   * backoff capped at `maxDelay`, minus a random share of up to `jitter`, so clients that
   * lost their server at the same instant do not all come back at the same instant.
   */
  function backoffDelay(attempt, policy, random) {
    policy = policy || DEFAULT_RECONNECT;
    var base = Math.min(policy.maxDelay, policy.initialDelay * Math.pow(policy.factor, Math.max(0, attempt - 1)));
    var draw = (random || Math.random)();
    return Math.max(0, Math.round(base * (1 - policy.jitter * draw)));
  }

  var defaultTimers = {
    setTimeout: function (callback, delay) {
      return setTimeout(callback, delay);
    },
    clearTimeout: function (id) {
      clearTimeout(id);
    },
    now: function () {
      return Date.now();
    },
  };

  // ---------------------------------------------------------------------------
  // The connection

  /**
   * `new Snorky(WebSocket, url, {name: ServiceClass, …}, options)`: opens the connection at
   * once and keeps it open: when it drops, it reconnects with exponential backoff and
   * jitter, and each service restores what it had (subscriptions, chat joins, …).
   *
   * Options: `debug` (log to the console), `token` (a connection token, or a function
   * returning one or a promise of one, called before every connection attempt),
   * `callTimeout` (milliseconds, default 30000, 0 for none), `reconnect` (false, or
   * overrides of `Snorky.DEFAULT_RECONNECT`), `connect` (false: do not connect yet).
   */
  function Snorky(socketClass, address, services, options) {
    if (!(this instanceof Snorky)) {
      throw new TypeError("Snorky must be called with new");
    }
    options = options || {};
    this.socketClass = socketClass;
    this.address = address;
    this.debug = options.debug !== undefined ? Boolean(options.debug) : false;
    this.token = options.token;
    this.callTimeout = options.callTimeout !== undefined ? options.callTimeout : 30000;
    this.reconnectPolicy = reconnectPolicy(options.reconnect);
    this._timers = options.timers || defaultTimers;
    this._random = options.random || Math.random;

    /** Dispatched with `{reconnected}` each time the connection opens. */
    this.connected = new Signal();
    /** Dispatched with `{code, reason, wasClean, wasConnected, willReconnect}` when it closes. */
    this.disconnected = new Signal();
    /** Dispatched with `{attempt, delay, error}` when a reconnection is scheduled. */
    this.reconnecting = new Signal();
    /** Dispatched with `{failures}` once the services restored their state after a reconnection. */
    this.restored = new Signal();

    this.isConnected = false;
    this.isConnecting = false;
    /** Failed attempts since the last stable connection. */
    this.reconnectAttempts = 0;

    this._socket = null;
    this._queuedMessages = [];
    this._reconnectTimer = null;
    this._attempt = 0;
    this._openedAt = 0;
    this._hasConnected = false;
    this._userClosed = false;

    this.services = {};
    for (var serviceName in services) {
      if (hasOwn(services, serviceName)) {
        var ServiceClass = services[serviceName];
        this.services[serviceName] = new ServiceClass(serviceName, this);
      }
    }

    if (options.connect !== false) {
      this.connect();
    }
  }

  Snorky.prototype.logDebug = function () {
    if (this.debug && typeof console !== "undefined" && console.log) {
      (console.debug || console.log).apply(console, ["[snorky]"].concat(Array.prototype.slice.call(arguments)));
    }
  };

  /** Opens the connection (the constructor does it unless `connect: false`). */
  Snorky.prototype.connect = function () {
    if (this._socket || this.isConnecting || this.isConnected) {
      return;
    }
    this._userClosed = false;
    this._cancelReconnect();
    this._openSocket();
  };

  /**
   * Closes the connection for good: no reconnection, every call still waiting is rejected
   * with `DisconnectedError`, and services forget what they would have restored.
   */
  Snorky.prototype.disconnect = function () {
    this._userClosed = true;
    this._cancelReconnect();
    this._attempt += 1; // abandons a connection attempt waiting for its token
    var socket = this._socket;
    var wasConnected = this.isConnected;
    this._socket = null;
    this.isConnected = false;
    this.isConnecting = false;
    if (socket) {
      socket.onopen = socket.onmessage = socket.onclose = socket.onerror = null;
      try {
        socket.close(1000, "Client disconnected");
      } catch (error) {
        this.logDebug("close failed", error);
      }
    }
    this._connectionLost(true);
    for (var name in this.services) {
      this.services[name].resetState();
    }
    this._hasConnected = false;
    this.disconnected.dispatch({
      code: 1000, reason: "Client disconnected", wasClean: true, wasConnected: wasConnected, willReconnect: false,
    });
  };

  Snorky.prototype._openSocket = function () {
    var self = this;
    var attempt = ++this._attempt;
    this.isConnecting = true;
    var token;
    try {
      token = typeof this.token === "function" ? this.token() : this.token;
    } catch (error) {
      this._attemptFailed(error);
      return;
    }
    if (token && typeof token.then === "function") {
      token.then(function (value) {
        if (attempt === self._attempt && !self._userClosed) {
          self._createSocket(value);
        }
      }, function (error) {
        if (attempt === self._attempt && !self._userClosed) {
          self._attemptFailed(error);
        }
      });
    } else {
      this._createSocket(token);
    }
  };

  Snorky.prototype._createSocket = function (token) {
    var self = this;
    var socket;
    try {
      socket = new this.socketClass(addTokenToURL(this.address, token));
    } catch (error) {
      this._attemptFailed(error);
      return;
    }
    this._socket = socket;
    // Events of a socket this client gave up on (replaced or closed) are ignored.
    socket.onopen = function () {
      if (self._socket === socket) self._onSocketOpen();
    };
    socket.onmessage = function (event) {
      if (self._socket === socket) self._onSocketMessage(event);
    };
    socket.onclose = function (event) {
      if (self._socket === socket) self._onSocketClose(event || {});
    };
    socket.onerror = function () {
      // A close event always follows; it carries what there is to know.
    };
  };

  Snorky.prototype._attemptFailed = function (error) {
    this.logDebug("connection attempt failed:", error);
    this.isConnecting = false;
    this._socket = null;
    this._scheduleReconnect(error);
  };

  Snorky.prototype._onSocketOpen = function () {
    this.logDebug("Connected to Snorky server.");
    this.isConnected = true;
    this.isConnecting = false;
    this._openedAt = this._timers.now();
    var reconnected = this._hasConnected;
    this._hasConnected = true;

    // Restore first, so that the server sees every earlier subscription or join before
    // the calls made while the connection was down.
    var restorations = [];
    if (reconnected) {
      var names = Object.keys(this.services);
      var services = this.services;
      names.sort(function (a, b) {
        return (services[b].restoreFirst ? 1 : 0) - (services[a].restoreFirst ? 1 : 0);
      });
      for (var i = 0; i < names.length; i++) {
        var promises = this.services[names[i]].restoreState() || [];
        restorations = restorations.concat(promises);
      }
    }

    var queued = this._queuedMessages;
    this._queuedMessages = [];
    for (var j = 0; j < queued.length; j++) {
      if (!queued[j].cancelled) {
        this._socket.send(queued[j].raw);
        if (queued[j].onSent) queued[j].onSent();
      }
    }

    this.connected.dispatch({ reconnected: reconnected });

    if (reconnected) {
      var self = this;
      settleAll(restorations).then(function (results) {
        var failures = [];
        for (var k = 0; k < results.length; k++) {
          if (results[k].status === "rejected") failures.push(results[k].reason);
        }
        if (failures.length) self.logDebug("restoring state failed:", failures);
        self.restored.dispatch({ failures: failures });
      });
    }
  };

  function settleAll(promises) {
    return Promise.all(promises.map(function (promise) {
      return Promise.resolve(promise).then(function (value) {
        return { status: "fulfilled", value: value };
      }, function (reason) {
        return { status: "rejected", reason: reason };
      });
    }));
  }

  Snorky.prototype._onSocketMessage = function (event) {
    var packet;
    try {
      packet = JSON.parse(event.data);
    } catch (error) {
      this.logDebug("ignoring a frame that is not JSON:", event.data);
      return;
    }
    if (!packet || typeof packet !== "object" || typeof packet.service !== "string") {
      this.logDebug("ignoring a frame without a service:", event.data);
      return;
    }
    if (hasOwn(this.services, packet.service)) {
      this.services[packet.service].packetReceived.dispatch(packet.message);
    } else {
      // Includes the server's protocol errors on the reserved service `snorky`.
      this.logDebug("frame for service", packet.service, packet.message);
    }
  };

  Snorky.prototype._onSocketClose = function (event) {
    var wasConnected = this.isConnected;
    this.logDebug("Snorky disconnected", event.code, event.reason);
    this._socket = null;
    this.isConnected = false;
    this.isConnecting = false;
    if (wasConnected && this._timers.now() - this._openedAt >= (this.reconnectPolicy || DEFAULT_RECONNECT).stableAfter) {
      this.reconnectAttempts = 0;
    }
    var willReconnect = Boolean(this.reconnectPolicy) && !this._userClosed;
    this._connectionLost(!willReconnect);
    this.disconnected.dispatch({
      code: event.code,
      reason: event.reason,
      wasClean: event.wasClean,
      wasConnected: wasConnected,
      willReconnect: willReconnect,
    });
    if (willReconnect) {
      this._scheduleReconnect(null);
    }
  };

  /** Rejects the calls that were on the wire; with `final`, the queued ones too. */
  Snorky.prototype._connectionLost = function (final) {
    if (final) {
      var queued = this._queuedMessages;
      this._queuedMessages = [];
      for (var i = 0; i < queued.length; i++) {
        if (!queued[i].cancelled && queued[i].onDropped) queued[i].onDropped();
      }
    }
    for (var name in this.services) {
      this.services[name].connectionLost(final);
    }
  };

  Snorky.prototype._scheduleReconnect = function (error) {
    if (!this.reconnectPolicy || this._userClosed) {
      return;
    }
    var self = this;
    this.reconnectAttempts += 1;
    var delay = backoffDelay(this.reconnectAttempts, this.reconnectPolicy, this._random);
    this.logDebug("reconnecting in", delay, "ms (attempt " + this.reconnectAttempts + ")");
    this.reconnecting.dispatch({ attempt: this.reconnectAttempts, delay: delay, error: error || null });
    this._cancelReconnect();
    this._reconnectTimer = this._timers.setTimeout(function () {
      self._reconnectTimer = null;
      if (!self._userClosed && !self._socket) {
        self._openSocket();
      }
    }, delay);
  };

  Snorky.prototype._cancelReconnect = function () {
    if (this._reconnectTimer !== null) {
      this._timers.clearTimeout(this._reconnectTimer);
      this._reconnectTimer = null;
    }
  };

  /**
   * Sends `{"service": serviceName, "message": message}` now, or queues it until the
   * connection opens. Returns the queue entry (`cancelled = true` withdraws it) or null
   * when sent at once.
   */
  Snorky.prototype._sendServiceMessage = function (serviceName, message, onSent, onDropped) {
    var rawMessage = JSON.stringify({
      service: serviceName,
      message: message,
    });
    if (this.isConnected) {
      this._socket.send(rawMessage);
      if (onSent) onSent();
      return null;
    }
    var entry = { raw: rawMessage, onSent: onSent, onDropped: onDropped, cancelled: false };
    this._queuedMessages.push(entry);
    return entry;
  };

  // ---------------------------------------------------------------------------
  // Services

  /** A service connector: `new ServiceClass(name, snorky)` is called by `Snorky`. */
  function Service(name, snorky) {
    if (typeof name !== "string" || !snorky) {
      throw new Error("Bad arguments for service constructor");
    }
    this.name = name;
    this.snorky = snorky;
    /** Every message the server sends on this service. */
    this.packetReceived = new Signal();
    this.init();
  }

  /** Subclasses set themselves up here (the constructor calls it). */
  Service.prototype.init = function () {};

  Service.prototype.sendMessage = function (message, onSent, onDropped) {
    return this.snorky._sendServiceMessage(this.name, message, onSent, onDropped);
  };

  /**
   * After a reconnection: re-establish what the previous connection had. Returns an array
   * of promises (failures are reported through `snorky.restored`).
   */
  Service.prototype.restoreState = function () {
    return [];
  };

  /** The connection closed; `final` when it will not be reopened. */
  Service.prototype.connectionLost = function () {};

  /** `disconnect()` was called: forget what would be restored. */
  Service.prototype.resetState = function () {};

  /** Services whose restoration others depend on (authentication) restore first. */
  Service.prototype.restoreFirst = false;

  /** Makes `Child` inherit from `Parent` (ES5 style; `class Child extends Parent` works too). */
  function inherit(Child, Parent, methods) {
    Child.prototype = Object.create(Parent.prototype, {
      constructor: { value: Child, writable: true, configurable: true },
    });
    Object.setPrototypeOf(Child, Parent);
    for (var key in methods) {
      Child.prototype[key] = methods[key];
    }
    return Child;
  }

  /** A service speaking the RPC protocol: `rpcCall(command, params)` returns a promise. */
  function RPCService(name, snorky) {
    Service.call(this, name, snorky);
  }

  inherit(RPCService, Service, {
    init: function () {
      this.nextCallId = 0;
      this.calls = new Map(); // callId -> pending call
      this.notificationReceived = new Signal();
      this.packetReceived.add(this.onPacket, this);
    },

    /**
     * Sends `command` with `params` and resolves with the response's `data`; rejects with
     * `RPCError` (the server's message), `TimeoutError`, or `DisconnectedError`.
     * `options.timeout` overrides the client's `callTimeout` for this call.
     */
    rpcCall: function (command, params, options) {
      var self = this;
      var snorky = this.snorky;
      return new Snorky.Promise(function (resolve, reject) {
        var callId = self.nextCallId++;
        var call = { command: command, resolve: resolve, reject: reject, onWire: false, timer: null, queued: null };
        self.calls.set(callId, call);
        var timeout = options && options.timeout !== undefined ? options.timeout : snorky.callTimeout;
        if (timeout > 0) {
          call.timer = snorky._timers.setTimeout(function () {
            call.timer = null;
            self._settle(callId, new TimeoutError(
              "No answer to " + self.name + "." + command + " within " + timeout + " ms", self.name, command));
          }, timeout);
        }
        call.queued = self.sendMessage(
          { command: command, params: params, callId: callId },
          function () {
            call.onWire = true;
            call.queued = null;
          },
          function () {
            self._settle(callId, new DisconnectedError("Disconnected before the call was sent", self.name, command));
          }
        );
      });
    },

    /** Rejects or resolves call `callId` once; `outcome` is an Error or `{data}`. */
    _settle: function (callId, outcome) {
      var call = this.calls.get(callId);
      if (!call) return;
      this.calls.delete(callId);
      if (call.timer !== null) this.snorky._timers.clearTimeout(call.timer);
      if (call.queued) call.queued.cancelled = true;
      if (outcome instanceof Error) {
        call.reject(outcome);
      } else {
        call.resolve(outcome.data);
      }
    },

    onPacket: function (message) {
      if (!message || typeof message !== "object" || !("type" in message)) {
        this.snorky.logDebug('Non-RPC message received from service "' + this.name + '"', message);
        return;
      }
      if (message.type === "response" || message.type === "error") {
        var call = this.calls.get(message.callId);
        if (!call) {
          // A call that timed out already, or an error about a malformed request.
          this.snorky.logDebug("reply to an unknown call", this.name, message);
          return;
        }
        if (message.type === "response") {
          this._settle(message.callId, { data: message.data === undefined ? null : message.data });
        } else {
          this._settle(message.callId, new RPCError(message.message, this.name, call.command));
        }
      } else {
        this.notificationReceived.dispatch(message);
      }
    },

    connectionLost: function () {
      var self = this;
      var onWire = [];
      this.calls.forEach(function (call, callId) {
        if (call.onWire) onWire.push(callId);
      });
      onWire.forEach(function (callId) {
        var call = self.calls.get(callId);
        self._settle(callId, new DisconnectedError(
          "The connection closed before " + self.name + "." + call.command + " was answered", self.name, call.command));
      });
    },
  });

  /** Adds methods `method(params)` that call the command of the same name. */
  RPCService.addRPCMethods = function (methods) {
    var cls = this;
    methods.forEach(function (method) {
      if (method in cls.prototype) {
        throw new Error('Method "' + method + '" already exists in the class. Refusing to overwrite it.');
      }
      cls.prototype[method] = function (params) {
        return this.rpcCall(method, params || {});
      };
    });
  };

  /** `Child = RPCService.extend({init, …methods})`: an ES5-friendly subclass. */
  RPCService.extend = Service.extend = function (methods) {
    var Parent = this;
    function Child(name, snorky) {
      Parent.call(this, name, snorky);
    }
    inherit(Child, Parent, methods || {});
    return Child;
  };

  /**
   * Remembers keyed state to restore after a reconnection (subscribed channels, joined
   * chat channels, registered names). Keys are the canonical JSON of the value.
   */
  function KeyedSet() {
    this._items = new Map();
  }
  KeyedSet.prototype.add = function (value) {
    this._items.set(stableStringify(value), value);
  };
  KeyedSet.prototype.delete = function (value) {
    this._items.delete(stableStringify(value));
  };
  KeyedSet.prototype.values = function () {
    return Array.from(this._items.values());
  };
  KeyedSet.prototype.clear = function () {
    this._items.clear();
  };
  KeyedSet.prototype.has = function (value) {
    return this._items.has(stableStringify(value));
  };

  /**
   * Calls `command`, then records `value` in `set` on success (`add`) or removes it
   * (`delete`). `alreadyDone` is the server error that means the state already is what
   * the call wanted (e.g. `Already subscribed`): the set is updated then too.
   */
  function tracked(service, command, params, set, action, alreadyDone, value) {
    return service.rpcCall(command, params).then(function (result) {
      set[action](value);
      return result;
    }, function (error) {
      if (error instanceof RPCError && error.message === alreadyDone) set[action](value);
      throw error;
    });
  }

  // pubsub --------------------------------------------------------------------

  /** `pubsub`: `subscribe({channel})`, `unsubscribe({channel})`, `publish({channel, message})`. */
  var PubSub = RPCService.extend({
    init: function () {
      RPCService.prototype.init.call(this);
      /** `{type: "message", channel, message}` for every publication on a subscribed channel. */
      this.messagePublished = new Signal();
      this.channels = new KeyedSet();
      this.notificationReceived.add(this.onNotification, this);
    },
    onNotification: function (message) {
      if (message.type === "message") {
        this.messagePublished.dispatch(message);
      } else {
        this.snorky.logDebug("Unknown message type in pubsub service: " + message.type);
      }
    },
    subscribe: function (params) {
      params = params || {};
      return tracked(this, "subscribe", params, this.channels, "add", "Already subscribed", params.channel);
    },
    unsubscribe: function (params) {
      params = params || {};
      return tracked(this, "unsubscribe", params, this.channels, "delete", "Not subscribed", params.channel);
    },
    restoreState: function () {
      var self = this;
      return this.channels.values().map(function (channel) {
        return self.rpcCall("subscribe", { channel: channel }).catch(function (error) {
          if (!(error instanceof RPCError && error.message === "Already subscribed")) self.channels.delete(channel);
          throw error;
        });
      });
    },
    resetState: function () {
      this.channels.clear();
    },
  });
  PubSub.addRPCMethods(["publish"]);

  // messaging -----------------------------------------------------------------

  /** `messaging`: named participants sending each other messages. */
  var Messaging = RPCService.extend({
    init: function () {
      RPCService.prototype.init.call(this);
      /** `{type: "message", sender, dest, body}` addressed to one of this client's names. */
      this.messageReceived = new Signal();
      this.participants = new KeyedSet();
      this.notificationReceived.add(this.onNotification, this);
    },
    onNotification: function (message) {
      if (message.type === "message") {
        this.messageReceived.dispatch(message);
      } else {
        this.snorky.logDebug("Unknown message type in messaging service: " + message.type);
      }
    },
    registerParticipant: function (params) {
      params = params || {};
      return tracked(this, "registerParticipant", params, this.participants, "add", null, params.name);
    },
    unregisterParticipant: function (params) {
      params = params || {};
      return tracked(this, "unregisterParticipant", params, this.participants, "delete", "Unknown participant", params.name);
    },
    restoreState: function () {
      var self = this;
      return this.participants.values().map(function (name) {
        return self.rpcCall("registerParticipant", { name: name }).catch(function (error) {
          self.participants.delete(name);
          throw error;
        });
      });
    },
    resetState: function () {
      this.participants.clear();
    },
  });
  Messaging.addRPCMethods(["listParticipants", "send"]);

  // auth ----------------------------------------------------------------------

  /** `auth`: `authenticate({token})` gives the connection the token's identity. */
  var Auth = RPCService.extend({
    init: function () {
      RPCService.prototype.init.call(this);
      this.identity = null;
      this._token = null;
    },
    restoreFirst: true,
    authenticate: function (params) {
      var self = this;
      params = params || {};
      return this.rpcCall("authenticate", params).then(function (result) {
        self._token = params.token;
        self.identity = result && result.identity !== undefined ? result.identity : null;
        return result;
      });
    },
    restoreState: function () {
      if (this._token === null) return [];
      var self = this;
      return [this.rpcCall("authenticate", { token: this._token }).catch(function (error) {
        self._token = null;
        self.identity = null;
        throw error;
      })];
    },
    resetState: function () {
      this._token = null;
      this.identity = null;
    },
  });

  // chat ----------------------------------------------------------------------

  /** `chat`: channels with presence; needs an identity (a connection token). */
  var Chat = RPCService.extend({
    init: function () {
      RPCService.prototype.init.call(this);
      /** `{type: "message", from, channel, body, timestamp}`, own messages included. */
      this.messageReceived = new Signal();
      /** `{type: "presence", from, channel, status: "joined" | "left", timestamp}`. */
      this.presenceReceived = new Signal();
      /** `{type: "read", channel, timestamp}` from this identity's other connections. */
      this.readReceived = new Signal();
      /** `{channel, members}` after a reconnection joined `channel` again. */
      this.rejoined = new Signal();
      this.channels = new KeyedSet();
      this.notificationReceived.add(this.onNotification, this);
    },
    onNotification: function (message) {
      if (message.type === "message") {
        this.messageReceived.dispatch(message);
      } else if (message.type === "presence") {
        this.presenceReceived.dispatch(message);
      } else if (message.type === "read") {
        this.readReceived.dispatch(message);
      } else {
        this.snorky.logDebug("Unknown message type in chat service: " + message.type);
      }
    },
    join: function (params) {
      params = params || {};
      return tracked(this, "join", params, this.channels, "add", "Already joined", params.channel);
    },
    leave: function (params) {
      params = params || {};
      return tracked(this, "leave", params, this.channels, "delete", "Not joined", params.channel);
    },
    restoreState: function () {
      var self = this;
      return this.channels.values().map(function (channel) {
        return self.rpcCall("join", { channel: channel }).then(function (result) {
          self.rejoined.dispatch({ channel: channel, members: result && result.members ? result.members : [] });
          return result;
        }, function (error) {
          self.channels.delete(channel);
          throw error;
        });
      });
    },
    resetState: function () {
      this.channels.clear();
    },
  });
  Chat.addRPCMethods(["send", "read"]);

  // cursors -------------------------------------------------------------------

  /** A cursor of another connection: `{publicHandle, document, position, status, owner}`. */
  function ForeignCursor(data) {
    for (var key in data) {
      if (hasOwn(data, key)) this[key] = data[key];
    }
  }
  ForeignCursor.prototype.isMine = false;

  /** A cursor of this connection; `document` is its `Cursors.Document`. */
  function OwnCursor(document, data) {
    this.document = document;
    this.removed = false;
    for (var key in data) {
      if (hasOwn(data, key)) this[key] = data[key];
    }
    this.pendingPromiseCount = 1; // the create request is still pending
  }
  OwnCursor.prototype.isMine = true;

  /** Changes `position` and/or `status`; sends nothing when they are unchanged. */
  OwnCursor.prototype.update = function (newData) {
    var self = this;
    var service = this.document.service;
    var changed = false;
    for (var key in newData) {
      if (key !== "position" && key !== "status") {
        throw new Error("Can't update '" + key + "' of cursor.");
      }
      if (!jsonEqual(this[key], newData[key])) changed = true;
    }
    if (!changed || this.removed) {
      return Snorky.Promise.resolve();
    }
    for (var field in newData) {
      this[field] = newData[field];
    }
    this.pendingPromiseCount += 1;
    return service.rpcCall("updateCursor", { privateHandle: this.privateHandle, newData: newData }).then(function () {
      self.pendingPromiseCount -= 1;
    }, function (error) {
      self.pendingPromiseCount -= 1;
      throw error;
    });
  };

  OwnCursor.prototype.remove = function () {
    var self = this;
    var service = this.document.service;
    this.removed = true;
    this.pendingPromiseCount += 1;
    service.ownCursors.delete(this.privateHandle);
    this.document._forget(this);
    return service.rpcCall("removeCursor", { privateHandle: this.privateHandle }).then(function () {
      self.pendingPromiseCount -= 1;
    }, function (error) {
      self.pendingPromiseCount -= 1;
      throw error;
    });
  };

  /** True when the server has every change made to this cursor. */
  OwnCursor.prototype.isSynchronized = function () {
    return this.pendingPromiseCount === 0;
  };

  OwnCursor.prototype._create = function () {
    var self = this;
    return this.document.service.rpcCall("createCursor", {
      privateHandle: this.privateHandle,
      document: this.document.name,
      position: this.position,
      status: this.status,
    }).then(function (publicHandle) {
      self.publicHandle = publicHandle;
      self.pendingPromiseCount -= 1;
      return publicHandle;
    }, function (error) {
      self.pendingPromiseCount -= 1;
      throw error;
    });
  };

  /** A joined document: `cursors` (own and foreign) and their signals. */
  function Document(service, name, cursors) {
    this.service = service;
    this.name = name;
    this.cursors = (cursors || []).map(function (cursor) {
      return new ForeignCursor(cursor);
    });
    /** A foreign cursor appeared. */
    this.cursorAdded = new Signal();
    /** A foreign cursor moved or changed status. */
    this.cursorUpdated = new Signal();
    /** A foreign cursor went away (`{publicHandle, document}`). */
    this.cursorRemoved = new Signal();
  }

  Document.prototype._indexOfForeign = function (publicHandle) {
    for (var i = 0; i < this.cursors.length; i++) {
      if (!this.cursors[i].isMine && this.cursors[i].publicHandle === publicHandle) return i;
    }
    return -1;
  };

  Document.prototype.onCursorAdded = function (data) {
    var cursor = new ForeignCursor(data);
    var index = this._indexOfForeign(cursor.publicHandle);
    if (index === -1) {
      this.cursors.push(cursor);
    } else {
      this.cursors[index] = cursor;
    }
    this.cursorAdded.dispatch(cursor);
  };

  Document.prototype.onCursorUpdated = function (data) {
    var cursor = new ForeignCursor(data);
    var index = this._indexOfForeign(cursor.publicHandle);
    if (index === -1) {
      this.cursors.push(cursor);
    } else {
      this.cursors[index] = cursor;
    }
    this.cursorUpdated.dispatch(cursor);
  };

  Document.prototype.onCursorRemoved = function (data) {
    var index = this._indexOfForeign(data.publicHandle);
    if (index !== -1) this.cursors.splice(index, 1);
    this.cursorRemoved.dispatch(data);
  };

  Document.prototype._forget = function (ownCursor) {
    var index = this.cursors.indexOf(ownCursor);
    if (index !== -1) this.cursors.splice(index, 1);
  };

  /**
   * Creates a cursor of this connection. Returns `[cursor, promise]`: the cursor at once,
   * the promise resolving with its public handle once the server created it.
   */
  Document.prototype.createCursor = function (params) {
    params = params || {};
    var handle = this.service.getFreePrivateHandle();
    var cursor = new OwnCursor(this, { privateHandle: handle, position: params.position, status: params.status });
    this.service.ownCursors.set(handle, cursor);
    this.cursors.push(cursor);
    return [cursor, cursor._create()];
  };

  Document.prototype.leave = function () {
    return this.service.leave({ document: this.name });
  };

  /** After a reconnection: makes the foreign cursors those of `list`, with signals. */
  Document.prototype._resync = function (list) {
    var fresh = new Map();
    (list || []).forEach(function (data) {
      fresh.set(data.publicHandle, data);
    });
    var self = this;
    this.cursors.filter(function (cursor) {
      return !cursor.isMine && !fresh.has(cursor.publicHandle);
    }).forEach(function (cursor) {
      self.onCursorRemoved({ publicHandle: cursor.publicHandle, document: cursor.document });
    });
    fresh.forEach(function (data, publicHandle) {
      var index = self._indexOfForeign(publicHandle);
      if (index === -1) {
        self.onCursorAdded(data);
      } else if (!jsonEqual(self.cursors[index], new ForeignCursor(data))) {
        self.onCursorUpdated(data);
      }
    });
  };

  /** `cursors`: shared cursors on documents; needs an identity (a connection token). */
  var Cursors = RPCService.extend({
    init: function () {
      RPCService.prototype.init.call(this);
      this.documents = new Map(); // canonical JSON of the name -> Document
      this.ownCursors = new Map(); // privateHandle -> OwnCursor
      this._nextHandle = 0;
      this.notificationReceived.add(this.onNotification, this);
    },

    /** Joins `params.document`; resolves with its `Document`. */
    join: function (params) {
      var self = this;
      params = params || {};
      return this.rpcCall("join", params).then(function (data) {
        var document = new Document(self, params.document, data && data.cursors);
        self.documents.set(stableStringify(params.document), document);
        return document;
      });
    },

    leave: function (params) {
      var self = this;
      params = params || {};
      var key = stableStringify(params.document);
      return this.rpcCall("leave", params).then(function (result) {
        self._dropDocument(key);
        return result;
      }, function (error) {
        if (error instanceof RPCError && error.message === "Not joined") self._dropDocument(key);
        throw error;
      });
    },

    _dropDocument: function (key) {
      var document = this.documents.get(key);
      if (!document) return;
      this.documents.delete(key);
      var own = this.ownCursors;
      own.forEach(function (cursor, handle) {
        if (cursor.document === document) own.delete(handle);
      });
    },

    onNotification: function (notification) {
      var cursor = notification.cursor;
      if (!cursor) {
        this.snorky.logDebug("Unknown message in cursors service", notification);
        return;
      }
      var document = this.documents.get(stableStringify(cursor.document));
      if (!document) {
        this.snorky.logDebug("Notification for unknown document: " + stableStringify(cursor.document));
        return;
      }
      if (notification.type === "cursorAdded") {
        document.onCursorAdded(cursor);
      } else if (notification.type === "cursorUpdated") {
        document.onCursorUpdated(cursor);
      } else if (notification.type === "cursorRemoved") {
        document.onCursorRemoved(cursor);
      }
    },

    getFreePrivateHandle: function () {
      do {
        this._nextHandle += 1;
      } while (this.ownCursors.has(this._nextHandle));
      return this._nextHandle;
    },

    restoreState: function () {
      var self = this;
      var promises = [];
      this.documents.forEach(function (document, key) {
        // The server handles a connection's messages in order: the cursors can be
        // created right behind the join, before the queued calls are sent.
        promises.push(self.rpcCall("join", { document: document.name }).then(function (data) {
          document._resync(data && data.cursors);
          return document;
        }, function (error) {
          self._dropDocument(key);
          throw error;
        }));
        self.ownCursors.forEach(function (cursor) {
          if (cursor.document === document && !cursor.removed) {
            cursor.pendingPromiseCount += 1;
            promises.push(cursor._create());
          }
        });
      });
      return promises;
    },

    resetState: function () {
      this.documents.clear();
      this.ownCursors.clear();
    },
  });
  Cursors.Document = Document;
  Cursors.ForeignCursor = ForeignCursor;
  Cursors.OwnCursor = OwnCursor;

  // datasync ------------------------------------------------------------------

  /** `datasync`: deltas of database changes the application authorized. */
  var DataSync = RPCService.extend({
    init: function () {
      RPCService.prototype.init.call(this);
      /** Every delta: `{type: "insert" | "update" | "delete", model, …}`. */
      this.deltaReceived = new Signal();
      /**
       * `{token}` when an acquired subscription ended with the connection: tokens are
       * single-use, so the application fetches its data and a new token again.
       */
      this.subscriptionLost = new Signal();
      this.subscriptions = new KeyedSet();
      this.notificationReceived.add(this.onNotification, this);
    },
    onNotification: function (message) {
      if (message.type === "delta") {
        this.deltaReceived.dispatch(message.delta);
      } else {
        this.snorky.logDebug("Unknown message type in DataSync service: " + message.type);
      }
    },
    acquireSubscription: function (params) {
      params = params || {};
      return tracked(this, "acquireSubscription", params, this.subscriptions, "add", null, params.token);
    },
    cancelSubscription: function (params) {
      params = params || {};
      return tracked(this, "cancelSubscription", params, this.subscriptions, "delete", "No such subscription", params.token);
    },
    connectionLost: function (final) {
      RPCService.prototype.connectionLost.call(this, final);
      var tokens = this.snorky._userClosed ? [] : this.subscriptions.values();
      this.subscriptions.clear();
      var signal = this.subscriptionLost;
      tokens.forEach(function (token) {
        signal.dispatch({ token: token });
      });
    },
    resetState: function () {
      this.subscriptions.clear();
    },
  });

  /** Base of the collections a `CollectionDeltaProcessor` applies deltas to. */
  function Collection() {}

  /** Iterates an array; `remove()` and `update()` act on the last item `next()` gave. */
  function ArrayIterator(array, options) {
    this.array = array;
    this.options = options || {};
    this.index = -1;
    this.deleted = false;
  }
  ArrayIterator.prototype.hasNext = function () {
    return this.index < this.array.length - 1;
  };
  ArrayIterator.prototype.next = function () {
    if (!this.hasNext()) throw new Error("Busted iterator");
    this.deleted = false;
    return this.array[++this.index];
  };
  ArrayIterator.prototype.checkSafe = function () {
    if (this.deleted) throw new Error("Iterator pointing to a deleted item! (call next())");
    if (this.index === -1) throw new Error("Iterator not pointing to an item! (call next())");
  };
  ArrayIterator.prototype.remove = function () {
    this.checkSafe();
    this.array.splice(this.index--, 1);
    this.deleted = true;
  };
  ArrayIterator.prototype.update = function (newValue) {
    this.checkSafe();
    var transform = this.options.transformItem || identity;
    this.array[this.index] = transform(newValue);
  };

  function identity(value) {
    return value;
  }

  /** An array kept in sync; `options.transformItem` maps each row before it is stored. */
  function ArrayCollection(array, options) {
    this.array = array;
    this.options = options || {};
    if (!this.options.transformItem) this.options.transformItem = identity;
  }
  inherit(ArrayCollection, Collection, {
    insert: function (value) {
      this.array.push(this.options.transformItem(value));
    },
    getIterator: function () {
      return new ArrayIterator(this.array, this.options);
    },
  });

  function SingleItemIterator(collection) {
    this.collection = collection;
    this.fetched = false;
  }
  SingleItemIterator.prototype.hasNext = function () {
    return !this.fetched;
  };
  SingleItemIterator.prototype.next = function () {
    if (this.fetched) throw new Error("Busted iterator");
    this.fetched = true;
    return this.collection.readHandler();
  };
  SingleItemIterator.prototype.remove = function () {
    if (!this.fetched) throw new Error("Iterator not pointing to an item! (call next())");
    this.collection.removeHandler();
  };
  SingleItemIterator.prototype.update = function (newValue) {
    if (!this.fetched) throw new Error("Iterator not pointing to an item! (call next())");
    this.collection.updateHandler(newValue);
  };

  /** One item held elsewhere (e.g. a detail view), read and written through handlers. */
  function SingleItemCollection(readHandler, updateHandler, removeHandler) {
    this.readHandler = readHandler;
    this.updateHandler = updateHandler;
    this.removeHandler = removeHandler || function () {};
  }
  inherit(SingleItemCollection, Collection, {
    insert: function () {
      if (typeof console !== "undefined") console.error("Received insert() request in SingleItemCollection");
    },
    getIterator: function () {
      return new SingleItemIterator(this);
    },
  });

  /**
   * Applies deltas to collections: `{Model: collection}`, or `{Model: {tag: collection}}`
   * for several views of one model (the delta's `tag` picks one). Rows are matched by
   * `options.itemsAreEqual(item, row)`, by default equal `id`s.
   */
  function CollectionDeltaProcessor(collections, options) {
    this.collections = collections || {};
    options = options || {};
    if (options.itemsAreEqual) this.itemsAreEqual = options.itemsAreEqual;
  }
  CollectionDeltaProcessor.prototype.itemsAreEqual = function (item, other) {
    return item.id === other.id;
  };
  CollectionDeltaProcessor.prototype.collectionFor = function (delta) {
    if (!hasOwn(this.collections, delta.model)) {
      if (typeof console !== "undefined") console.error("Received delta for unregistered model: " + delta.model);
      return null;
    }
    var entry = this.collections[delta.model];
    if (entry instanceof Collection) return entry;
    if (entry && hasOwn(entry, delta.tag)) return entry[delta.tag];
    if (typeof console !== "undefined") {
      console.error("Received delta with unregistered tag: " + delta.tag + " (model: " + delta.model + ")");
    }
    return null;
  };
  CollectionDeltaProcessor.prototype.processDelta = function (delta) {
    var collection = this.collectionFor(delta);
    if (!collection) return;
    var iterator, item;
    if (delta.type === "insert") {
      collection.insert(delta.data);
    } else if (delta.type === "update") {
      iterator = collection.getIterator();
      while (iterator.hasNext()) {
        item = iterator.next();
        if (this.itemsAreEqual(item, delta.oldData, delta)) {
          iterator.update(delta.newData);
          break;
        }
      }
    } else if (delta.type === "delete") {
      iterator = collection.getIterator();
      while (iterator.hasNext()) {
        item = iterator.next();
        if (this.itemsAreEqual(item, delta.data, delta)) {
          iterator.remove();
          break;
        }
      }
    } else if (typeof console !== "undefined") {
      console.error("Received delta of strange type: " + delta.type);
    }
  };

  DataSync.CollectionDeltaProcessor = CollectionDeltaProcessor;
  DataSync.Collection = Collection;
  DataSync.ArrayCollection = ArrayCollection;
  DataSync.ArrayIterator = ArrayIterator;
  DataSync.SingleItemCollection = SingleItemCollection;
  DataSync.SingleItemIterator = SingleItemIterator;

  // ---------------------------------------------------------------------------
  // Exports

  Snorky.VERSION = VERSION;
  Snorky.Signal = Signal;
  /** The promise type of RPC calls; replaceable (e.g. by a framework's own). */
  Snorky.Promise = Promise;
  Snorky.Service = Service;
  Snorky.RPCService = RPCService;
  Snorky.PubSub = PubSub;
  Snorky.Messaging = Messaging;
  Snorky.Auth = Auth;
  Snorky.Chat = Chat;
  Snorky.Cursors = Cursors;
  Snorky.DataSync = DataSync;
  Snorky.SnorkyError = SnorkyError;
  Snorky.RPCError = RPCError;
  Snorky.TimeoutError = TimeoutError;
  Snorky.DisconnectedError = DisconnectedError;
  Snorky.DEFAULT_RECONNECT = DEFAULT_RECONNECT;
  Snorky.backoffDelay = backoffDelay;
  Snorky.stableStringify = stableStringify;
  Snorky.reportListenerError = reportListenerError;

  if (typeof module === "object" && module && typeof module.exports === "object") {
    module.exports = Snorky;
  } else {
    root.Snorky = Snorky;
  }
})(typeof globalThis !== "undefined" ? globalThis : typeof self !== "undefined" ? self : this);
