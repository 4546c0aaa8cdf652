// The plain-JavaScript part of the client's API, loaded by the wasm module as a snippet
// (kite-wasm/src/extras.rs): Kite.js's `KiteError` with its `codeIs`/`codeIsnt` guards, the log
// levels and the logger behind `logLevel`/`logger`, and the methods that only compose exported
// ones (`Kite#tell`, `#sendWebRTCRequest`, `Kontrol#register`, `#cancelWatcher`, `#watch`). scripts/build-wasm
// re-exports `KiteError` and `LogLevel` from the package's entry points, from this very module,
// so that `instanceof KiteError` holds for every error the package rejects with.

/** What `Kontrol#register` registered last, by Kontrol object (its `kite` getter hands out a
 * new wrapper of the same connection each time, so the wrapper cannot be the key). */
const registrations = new WeakMap();

/** An error of the kite protocol: `type`, `message`, `code` and the request's `id`. */
export class KiteError extends Error {
  constructor(message, type = 'genericError', code = '', id = '') {
    super(message);
    this.name = 'KiteError';
    this.type = type;
    this.code = code;
    this.id = id;
  }

  /** A predicate true for errors whose `code` is `code` (Kite.js's catch guard). */
  static codeIs(code) {
    return (err) => err != null && err.code === code;
  }

  /** A predicate true for errors whose `code` is not `code`. */
  static codeIsnt(code) {
    return (err) => err == null || err.code !== code;
  }

  /** A `KiteError` from a plain `{ type, message, code }` (Kite.js's `makeProperError`). */
  static makeProperError({ type, message, code } = {}) {
    return new KiteError(message, type, code);
  }
}

/** Called by the module for every error it hands to JavaScript. */
export function newKiteError(message, type, code, id) {
  return new KiteError(message, type, code, id);
}

/** Kite.js's debug levels (`DebugLevel`), and `NONE` to log nothing. */
export const LogLevel = Object.freeze({
  NONE: -1,
  CRITICAL: 0,
  ERROR: 1,
  WARNING: 2,
  NOTICE: 3,
  INFO: 4,
  DEBUG: 5,
});

const CATEGORY = ['CRITICAL', 'ERROR', 'WARNING', 'NOTICE', 'INFO', 'DEBUG'];
const SINK = ['error', 'error', 'warn', 'info', 'info', 'debug'];

/**
 * The level `value` names: a number (Kite.js's), a name (`'info'`, `'warn'`...), or nothing, then
 * `$KITE_LOG_LEVEL` under Node, then `ERROR`.
 */
export function levelOf(value) {
  const v = value ?? globalThis.process?.env?.KITE_LOG_LEVEL;
  if (typeof v === 'number' && Number.isFinite(v)) return Math.max(-1, Math.min(5, Math.trunc(v)));
  if (typeof v !== 'string') return LogLevel.ERROR;
  const name = v.trim().toUpperCase();
  if (name === 'WARN') return LogLevel.WARNING;
  if (/^-?\d+$/.test(name)) return levelOf(Number(name));
  return LogLevel[name] ?? LogLevel.ERROR;
}

/**
 * A logger of `name` at `level` writing to `sink` (an object with `error`, `warn`, `info` and
 * optionally `debug` functions, as Kite.js's logger takes; default `console`), each line
 * prefixed as Kite.js's are: `[name] CATEGORY ...`.
 */
export function makeLogger(name, level, sink) {
  const threshold = levelOf(level);
  const out = sink ?? console;
  const log = (at, ...args) => {
    if (at > threshold) return;
    const write = out[SINK[at]] ?? out.info ?? out.log;
    if (typeof write !== 'function') return;
    try {
      write.call(out, `[${name}]`, CATEGORY[at], ...args);
    } catch {
      // A logger that throws loses its line, nothing else.
    }
  };
  return {
    level: threshold,
    log,
    critical: (...a) => log(0, ...a),
    error: (...a) => log(1, ...a),
    warning: (...a) => log(2, ...a),
    warn: (...a) => log(2, ...a),
    notice: (...a) => log(3, ...a),
    info: (...a) => log(4, ...a),
    debug: (...a) => log(5, ...a),
  };
}

/** `logger.log(level, message, extra)` for the module. */
export function logTo(logger, level, message, extra) {
  if (extra === undefined) logger.log(level, message);
  else logger.log(level, message, extra);
}

function define(proto, name, value) {
  if (!Object.prototype.hasOwnProperty.call(proto, name)) {
    Object.defineProperty(proto, name, { value, writable: true, configurable: true });
  }
}

// The identity the module read last (its seven fields), or null.
let lastIdentity = null;
const IDENTITY = ['name', 'username', 'id', 'environment', 'region', 'version', 'hostname'];

/**
 * Whether `o` holds the identity the module read last (it then uses that one): the same
 * seven own string members, absent ones read as ''. Otherwise remembers `o`'s, and the
 * module reads it (an identity that is not an object or has a member that is not a string
 * is never the same: the module reads it as the empty one).
 */
export function sameIdentity(o) {
  let fields = null;
  if (o !== null && typeof o === 'object' && !Array.isArray(o)) {
    fields = [];
    for (const k of IDENTITY) {
      const v = Object.hasOwn(o, k) ? o[k] : '';
      if (typeof v !== 'string') {
        fields = null;
        break;
      }
      fields.push(v);
    }
  }
  const last = lastIdentity;
  if (fields !== null && last !== null && fields.every((v, i) => v === last[i])) return true;
  lastIdentity = fields;
  return false;
}

/** What a method is told of a call (its last argument); `kite` is copied, for the module reuses it. */
export function callMeta(username, peer, kite, authentication, method) {
  const meta = {};
  if (username !== undefined) meta.username = username;
  if (peer !== undefined) meta.peer = peer;
  meta.kite = Object.assign({}, kite);
  meta.authentication = authentication;
  meta.method = method;
  return meta;
}

/** `ws.send(data)`. Under Node with the `ws` package the socket is corked until the next tick,
 * so the frames of the calls made in one turn leave in one `writev` instead of one each: the
 * same frames, byte for byte, in the same order. */
export function sendFrame(ws, data) {
  const socket = ws._socket;
  if (socket && socket.writableCorked === 0 && typeof process === 'object') {
    socket.cork();
    process.nextTick(() => socket.uncork());
  }
  ws.send(data);
}

/** The resolve and reject functions of the promises `Kite#request` returned, by promise. */
const settlers = new WeakMap();

/** A promise for a call, settled later by `settleCall` (one crossing each way, where a Rust
 * future behind the promise costs a task, a waker and closures per call). */
export function newCall() {
  let settle;
  const promise = new Promise((resolve, reject) => {
    settle = [resolve, reject];
  });
  settlers.set(promise, settle);
  return promise;
}

/** Resolves (`ok`) or rejects the promise of `newCall` with `value`; once. */
export function settleCall(promise, ok, value) {
  const settle = settlers.get(promise);
  if (settle) {
    settlers.delete(promise);
    settle[ok ? 0 : 1](value);
  }
}

/** Puts the composed methods on the prototypes of the module's `Kite` and `Kontrol`. */
export function defineExtras(kite, kontrol) {
  define(kite, 'tell', function tell(method, ...args) {
    return this.request(method, args);
  });
  // Go's `SendWebRTCRequest`: a signalling message to the relay kite this kite is connected to.
  define(kite, 'sendWebRTCRequest', function sendWebRTCRequest(message) {
    return this.tell('kite.handleWebRTC', message).then(() => undefined);
  });
  // Kite.js's `Kite.Error`.
  if (kite.constructor && !kite.constructor.Error) kite.constructor.Error = KiteError;

  define(kontrol, 'register', async function register(url, options = {}) {
    const target = typeof url === 'string' ? url : url?.url;
    if (typeof target !== 'string' || target === '') {
      throw new TypeError('register(url): the URL this kite is reached at is required');
    }
    const kite = this.kite;
    const ask = (u) => kite.tell('register', { url: u });
    const result = await ask(target);
    // Kontrol forgets a kite whose connection to it ended: register again each time it is back,
    // at the latest URL, with one listener however often register() is called.
    const known = registrations.has(this);
    registrations.set(this, { url: target, options });
    if (!known) {
      kite.on('open', () => {
        const r = registrations.get(this);
        ask(r.url).then(
          (again) => r.options.onRegister?.(again),
          (e) => r.options.onError?.(e),
        );
      });
    }
    return result;
  });

  define(kontrol, 'cancelWatcher', function cancelWatcher(id) {
    return this.kite.tell('cancelWatcher', id);
  });

  define(kontrol, 'watch', async function watch(args, handler) {
    let live = true;
    const kites = await this.watchKites(args, (event) => {
      if (live) handler(event);
    });
    const self = this;
    const watcherID = kites.watcherID;
    return {
      kites,
      watcherID,
      async cancel() {
        if (!live) return;
        live = false;
        if (watcherID != null) await self.cancelWatcher(watcherID);
      },
    };
  });
}
