// kite-wasm/server: a kite server for Node 20+ (the package's `./server` entry point).
//
// This file only moves bytes. The protocol — SockJS's server side, dnode, the built-in
// methods, authentication rules, budgets — is decided by the module's `ServerCore` (Rust, in
// kite-core and kite-wasm), so it is written once. Here: Node's `http` server and the `ws`
// package's sockets, a timer, Node's `crypto` for RSA signatures, reading the kite key, and
// registering with Kontrol through the module's own `Kontrol` client.

import { EventEmitter } from 'node:events';
import http from 'node:http';
import { createPublicKey, randomUUID, verify as verifySignature } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { homedir, hostname as osHostname } from 'node:os';
import { join } from 'node:path';
import { WebSocket as NodeWebSocket, WebSocketServer } from 'ws';
import { initSync, Kontrol, ServerCore } from './kite_server.js';
import { makeLogger } from './extras.js';

if (typeof globalThis.WebSocket !== 'function') {
  // The module's clients (Kontrol, kites found through it) dial with the WebSocket API.
  globalThis.WebSocket = NodeWebSocket;
}
initSync({ module: readFileSync(new URL('./kite_server_bg.wasm', import.meta.url)) });

export { Kite, Kontrol } from './kite_server.js';
// Kite.js's debug levels and error class, the very ones the module's clients use.
export { KiteError, LogLevel } from './extras.js';

/** Defaults of the budgets a peer is held to (see README, "Budgets"). */
export const DEFAULT_LIMITS = Object.freeze({
  maxMessageBytes: 1 << 20,
  maxQueuedBytes: 16 << 20,
  maxSessions: 16384,
  maxSessionsPerAddress: 2048,
  maxWebSockets: 16384,
  maxWebSocketsPerAddress: 4096,
  maxCallsInFlight: 1024,
  maxCallbacks: 10000,
  maxConnections: 16384,
  headersTimeoutMs: 15000,
  idleTimeoutMs: 60000,
});

/** The kite key: `options.kiteKey`, else `$KITE_HOME/kite.key` (default `~/.kite/kite.key`). */
function readKiteKey(options) {
  if (typeof options.kiteKey === 'string') return options.kiteKey.trim();
  if (options.kiteKey === false) return undefined;
  const home = process.env.KITE_HOME || join(homedir(), '.kite');
  try {
    return readFileSync(join(home, 'kite.key'), 'utf8').trim();
  } catch {
    return undefined;
  }
}

/** A JWT's claims, unverified (the kite key is our own). */
function claimsOf(jwt) {
  try {
    const c = JSON.parse(Buffer.from(jwt.split('.')[1], 'base64url').toString('utf8'));
    return c && typeof c === 'object' ? c : {};
  } catch {
    return {};
  }
}

function normalizePrefix(prefix) {
  let p = String(prefix ?? '/kite');
  if (p !== '' && !p.startsWith('/')) p = `/${p}`;
  return p.replace(/\/+$/, '');
}

/** `peer`'s address as budgets count it (IPv4-mapped IPv6 as IPv4). */
function addressOf(socket) {
  const a = socket.remoteAddress ?? '';
  return a.startsWith('::ffff:') ? a.slice(7) : a;
}

/**
 * A kite served from Node: SockJS (`/info`, websocket, xhr-streaming, xhr-polling with
 * xhr_send) and a raw websocket (`<prefix>/websocket`) under `prefix` (default `/kite`), the
 * methods of `api` (authentication required unless `auth: false`), registration with Kontrol.
 * Events: `connection` (the peer's `Kite`), `disconnect` (the peer's `Kite`), `error`, `info`.
 */
export class KiteServer extends EventEmitter {
  #core;
  #http = null;
  #wss;
  #responses = new Map();
  #sockets = new Map();
  #timer = null;
  #keys = new Map();
  #limits;
  #kontrol = null;
  #address = null;
  #pending = null;
  #bodyLimit = 0;
  // Sockets and responses corked since the last uncork (see #cork).
  #corked = [];
  #uncork = () => {
    const corked = this.#corked;
    this.#corked = [];
    for (const s of corked) s.uncork();
  };

  constructor(options = {}) {
    super();
    if (options === null || typeof options !== 'object') {
      throw new TypeError('new KiteServer() needs an options object');
    }
    this.options = options;
    const kiteKey = readKiteKey(options);
    const key = kiteKey ? claimsOf(kiteKey) : {};
    this.kiteKey = kiteKey;
    this.kontrolURL = options.kontrolURL ?? key.kontrolURL;
    this.prefix = normalizePrefix(options.prefix);
    this.#limits = { ...DEFAULT_LIMITS, ...(options.limits ?? {}) };
    this.logger = makeLogger(options.name ?? 'kite', options.logLevel, options.logger);
    // Kite.js's `auth: true | false`: whether methods given without `auth` require it (Go's
    // and our default: true). An object configures the verification, methods requiring it.
    const auth = typeof options.auth === 'object' && options.auth !== null ? options.auth : {};
    const requireAuth = typeof options.auth === 'boolean' ? options.auth : auth.required !== false;
    const identity = {
      name: options.name ?? 'kite',
      username: options.username ?? key.sub ?? 'anonymous',
      environment: options.environment ?? 'unknown',
      region: options.region ?? 'unknown',
      version: options.version ?? '1.0.0',
      hostname: options.hostname ?? osHostname(),
      id: options.id ?? randomUUID(),
    };
    const driver = {
      respond: (id, status, headers, body, end) => this.#respond(id, status, headers, body, end),
      write: (id, body) => this.#write(id, body),
      end: (id) => this.#end(id),
      wsSend: (id, text) => this.#wsSend(id, text),
      wsClose: (id, code, reason) => this.#sockets.get(id)?.close(code, reason),
      arm: (ms) => this.#arm(ms),
      verify: (hash, pem, signed, signature) => this.#verify(hash, pem, signed, signature),
      emit: (event, arg) => this.#emit(event, arg),
    };
    this.#core = new ServerCore(
      {
        ...identity,
        api: options.api,
        timeout: options.timeout,
        heartbeat: options.heartbeatMs,
        disconnectDelay: options.disconnectDelayMs,
        websocket: options.websocket,
        limits: this.#limits,
        requireAuth,
        auth: {
          kontrolKey: auth.kontrolKey ?? options.kontrolKey ?? key.kontrolKey,
          kontrolUser: auth.kontrolUser ?? key.iss ?? 'koding',
          leeway: auth.leeway,
          allowRootAudience: auth.allowRootAudience,
          authenticators: auth.authenticators,
        },
      },
      driver,
    );
    this.#bodyLimit = this.#core.bodyLimit();
    this.#wss = new WebSocketServer({
      noServer: true,
      maxPayload: this.#core.bodyLimit(),
      perMessageDeflate: false,
    });
  }

  /** This kite's identity (`/username/environment/name/version/region/hostname/id`). */
  get kite() {
    return this.#core.identity();
  }

  /** The URL peers reach this kite at once listening (`http://host:port/kite`). */
  get url() {
    return this.#address?.url;
  }

  /** What the server holds now: connections, sessions, websockets, bytes queued. */
  stats() {
    return { ...this.#core.stats(), responses: this.#responses.size, sockets: this.#sockets.size };
  }

  /** Adds or replaces a method (`auth` as in `api`). */
  handle(method, func, auth) {
    this.#core.handle(method, func, auth);
    return this;
  }

  /**
   * Starts listening: `listen(port)` or `listen({ port, host, prefix })` (port 0: any).
   * Resolves with `{ host, port, url }`.
   */
  listen(arg = 0) {
    if (this.#http) return Promise.reject(new Error('Already listening!'));
    const opts = typeof arg === 'object' && arg !== null ? arg : { port: arg };
    if (opts.prefix != null) this.prefix = normalizePrefix(opts.prefix);
    const server = http.createServer({
      // A peer sending its headers (or a body) slowly does not hold a connection for long;
      // long-lived answers (xhr-streaming, polling) are not requests and are not cut.
      headersTimeout: this.#limits.headersTimeoutMs,
      requestTimeout: this.#limits.idleTimeoutMs,
      keepAliveTimeout: 5000,
      // How often those two are checked (Node's default, 30 s, would let a slow peer stay 30 s).
      connectionsCheckingInterval: Math.min(1000, this.#limits.headersTimeoutMs),
    });
    server.maxConnections = this.#limits.maxConnections;
    // A connection with no traffic at all (SockJS answers carry heartbeats) is closed.
    server.timeout = this.#limits.idleTimeoutMs;
    server.on('request', (req, res) => this.#onRequest(req, res));
    server.on('upgrade', (req, socket, head) => this.#onUpgrade(req, socket, head));
    server.on('connection', (socket) => socket.setNoDelay(true));
    server.on('clientError', (err, socket) => {
      const status = err.code === 'ERR_HTTP_REQUEST_TIMEOUT' ? '408 Request Timeout' : '400 Bad Request';
      if (socket.writable) socket.end(`HTTP/1.1 ${status}\r\nConnection: close\r\n\r\n`);
      else socket.destroy();
    });
    this.#http = server;
    return new Promise((resolve, reject) => {
      server.once('error', reject);
      server.listen(opts.port ?? 0, opts.host ?? '0.0.0.0', () => {
        server.off('error', reject);
        server.on('error', (e) => this.#emit('error', e));
        const a = server.address();
        const host = opts.host && opts.host !== '0.0.0.0' && opts.host !== '::' ? opts.host : '127.0.0.1';
        const shown = host.includes(':') ? `[${host}]` : host;
        this.#address = { host, port: a.port, url: `http://${shown}:${a.port}${this.prefix}` };
        this.logger.info(`Listening: ${this.#address.url}`);
        resolve({ ...this.#address });
      });
    });
  }

  /** Stops listening and ends every connection. */
  async close() {
    this.#kontrol?.disconnect();
    this.#kontrol = null;
    this.#core.closeAll();
    for (const ws of this.#sockets.values()) ws.terminate();
    for (const res of this.#responses.values()) res.destroy();
    if (this.#timer) clearTimeout(this.#timer);
    this.#timer = null;
    const server = this.#http;
    this.#http = null;
    if (server) {
      server.closeAllConnections?.();
      await new Promise((resolve) => server.close(() => resolve()));
    }
  }

  /**
   * Registers with Kontrol (`kontrolURL` from the options or the kite key) under `url`
   * (default: the URL listened on), with the kite key; answers Kontrol's heartbeats and
   * registers again whenever the connection to Kontrol comes back. Resolves with Kontrol's
   * answer (`{ url, heartbeatInterval, ... }`).
   */
  async register(options = {}) {
    const o = typeof options === 'string' ? { url: options } : options;
    const kontrolURL = o.kontrolURL ?? this.kontrolURL;
    if (!kontrolURL) throw new TypeError('register: no Kontrol URL (kontrolURL option or kite key)');
    if (!this.kiteKey) throw new TypeError('register: no kite key (kiteKey option or ~/.kite/kite.key)');
    const url = o.url ?? this.url;
    if (!url) throw new TypeError('register: listen() first or give the url to register');
    this.#kontrol?.disconnect();
    const kontrol = new Kontrol({
      ...this.#core.identity(),
      url: kontrolURL,
      auth: { type: 'kiteKey', key: this.kiteKey },
      transports: o.transports,
      logLevel: this.options.logLevel,
      logger: this.options.logger,
    });
    this.#kontrol = kontrol;
    // Kontrol#register registers again whenever the connection to Kontrol comes back.
    const result = await kontrol.register(url, {
      onRegister: () => this.#emit('info', `registered again to Kontrol with URL: ${url}`),
      onError: (e) => this.#emit('error', e),
    });
    this.logger.info(`Registered to Kontrol with URL: ${url}`);
    this.#emit('info', `registered to Kontrol with URL: ${url}`);
    return result;
  }

  // ---- the driver ----

  #emit(event, arg) {
    if (event === 'error' && this.listenerCount('error') === 0) {
      this.logger.error(arg);
      return;
    }
    try {
      this.emit(event, arg);
    } catch (e) {
      this.logger.error(`a '${event}' listener threw`, e);
    }
  }

  #arm(ms) {
    if (this.#timer) clearTimeout(this.#timer);
    this.#timer = null;
    if (ms < 0) return;
    this.#timer = setTimeout(() => {
      this.#timer = null;
      this.#core.timeout();
    }, Math.min(ms, 2_000_000_000));
  }

  #verify(hash, pem, signed, signature) {
    try {
      let key = this.#keys.get(pem);
      if (!key) {
        key = createPublicKey(pem);
        if (this.#keys.size > 64) this.#keys.clear();
        this.#keys.set(pem, key);
      }
      return verifySignature(hash, Buffer.from(signed), key, Buffer.from(signature));
    } catch {
      return false;
    }
  }

  /**
   * Holds what `stream` is given until the current tick's work is done, so that the answers
   * to a read's ~50 requests leave in one `writev` rather than one each (Node's cork: the
   * bytes and their order are the same, and `writableLength` still counts them).
   */
  #cork(stream) {
    if (stream.writableCorked) return;
    stream.cork();
    if (this.#corked.push(stream) === 1) process.nextTick(this.#uncork);
  }

  #respond(id, status, headers, body, end) {
    const res = this.#lookup(id, end);
    if (!res) return;
    for (let i = 0; i + 1 < headers.length; i += 2) res.setHeader(headers[i], headers[i + 1]);
    res.writeHead(status);
    if (end) {
      res.end(Buffer.from(body));
    } else {
      this.#cork(res);
      if (body.length) res.write(Buffer.from(body));
      this.#watchBacklog(id, res);
    }
  }

  #write(id, body) {
    const res = this.#lookup(id, false);
    if (!res) return;
    this.#cork(res);
    res.write(Buffer.from(body));
    this.#watchBacklog(id, res);
  }

  /** A streaming peer that does not read: past the queue budget its response is cut. */
  #watchBacklog(id, res) {
    if (res.writableLength > this.#limits.maxQueuedBytes) {
      this.#responses.delete(id);
      res.destroy();
      this.#core.responseGone(id);
    }
  }

  #end(id) {
    this.#lookup(id, true)?.end();
  }

  #wsSend(id, text) {
    const ws = this.#sockets.get(id);
    if (!ws || ws.readyState !== NodeWebSocket.OPEN) return;
    if (ws._socket) this.#cork(ws._socket);
    ws.send(text);
    if (ws.bufferedAmount > this.#limits.maxQueuedBytes) {
      ws.close(1008, 'Too much output queued: the peer does not read');
    }
  }

  /** What follows the prefix in `url`, or `null` when the URL is not under it. */
  #underPrefix(url) {
    const path = url ?? '/';
    if (this.prefix === '') return path;
    if (path === this.prefix) return '';
    const next = path.charAt(this.prefix.length);
    if (path.startsWith(this.prefix) && (next === '/' || next === '?')) {
      return path.slice(this.prefix.length);
    }
    return null;
  }

  #onRequest(req, res) {
    const rest = this.#underPrefix(req.url);
    if (rest === null) {
      res.writeHead(404, { 'Content-Type': 'text/plain; charset=UTF-8' });
      res.end('404 page not found\n');
      return;
    }
    const chunks = [];
    let size = 0;
    let refused = false;
    req.on('data', (chunk) => {
      if (refused) return;
      size += chunk.length;
      if (size > this.#bodyLimit) {
        refused = true;
        res.writeHead(413, { 'Content-Type': 'text/plain; charset=UTF-8', Connection: 'close' });
        res.end('Payload too large.\n');
        req.destroy();
        return;
      }
      chunks.push(chunk);
    });
    req.on('end', () => {
      if (refused) return;
      const body = chunks.length === 1 ? chunks[0] : Buffer.concat(chunks);
      // The core may answer before it returns the id: the answer then finds this response
      // as the one pending (see #lookup).
      const pending = { res, ended: false };
      this.#pending = pending;
      let id;
      try {
        const header = (name) => (typeof req.headers[name] === 'string' ? req.headers[name] : undefined);
        id = this.#core.http(
          addressOf(req.socket),
          req.method,
          rest,
          header('origin'),
          header('access-control-request-headers'),
          header('cookie'),
          body,
        );
      } finally {
        this.#pending = null;
      }
      if (pending.ended) return;
      this.#responses.set(id, res);
      res.on('close', () => {
        if (this.#responses.get(id) === res) {
          this.#responses.delete(id);
          this.#core.responseGone(id);
        }
      });
    });
  }

  /** The response of answer `id`: a known one, or the one whose request is being handed in. */
  #lookup(id, ending) {
    const res = this.#responses.get(id);
    if (res) {
      if (ending) {
        this.#responses.delete(id);
        if (this.#pending?.res === res) this.#pending.ended = true;
      }
      return res;
    }
    const pending = this.#pending;
    if (!pending || pending.ended) return undefined;
    if (ending) pending.ended = true;
    else this.#responses.set(id, pending.res);
    return pending.res;
  }

  #onUpgrade(req, socket, head) {
    let rest = this.#underPrefix(req.url);
    // Kite.js's server took its raw websocket at the root: so do we, for its clients.
    if (rest === null && (req.url ?? '/').split('?')[0] === '/') rest = '/websocket';
    const refuse = (status, headers, body) => {
      let head = `HTTP/1.1 ${status} ${http.STATUS_CODES[status] ?? ''}\r\n`;
      for (let i = 0; i + 1 < headers.length; i += 2) head += `${headers[i]}: ${headers[i + 1]}\r\n`;
      head += `Content-Length: ${body.length}\r\nConnection: close\r\n\r\n`;
      socket.end(Buffer.concat([Buffer.from(head), Buffer.from(body)]));
    };
    if (rest === null) {
      return refuse(404, ['Content-Type', 'text/plain; charset=UTF-8'], Buffer.from('404 page not found\n'));
    }
    const verdict = this.#core.upgrade(addressOf(socket), rest);
    if (typeof verdict !== 'number') return refuse(verdict.status, verdict.headers, verdict.body);
    const id = verdict;
    this.#wss.handleUpgrade(req, socket, head, (ws) => {
      this.#sockets.set(id, ws);
      ws.on('message', (data, isBinary) => {
        this.#core.wsText(id, isBinary ? Buffer.from(data).toString('utf8') : data.toString('utf8'));
      });
      ws.on('close', () => {
        this.#sockets.delete(id);
        this.#core.wsClosed(id);
      });
      ws.on('error', () => ws.terminate());
      this.#core.wsOpen(id);
    });
  }
}
