// Types of kite-wasm (the client: `kite-wasm`, `kite-wasm/web`, `kite-wasm/node`).
//
// Written by hand and installed by scripts/build-wasm as pkg/web/kite.d.ts in place of the
// one wasm-bindgen generates (which types every argument as `any`), so the browser build stays
// byte for byte what it was. tests/js/types checks these with `tsc --strict`, and
// tests/js/node/types.test.mjs that they declare everything the built modules export.

// ---- identities, credentials, queries ----

/** The seven fields naming a kite, as sent with every call and stored by Kontrol. */
export interface KiteIdentity {
  username: string;
  environment: string;
  name: string;
  version: string;
  region: string;
  hostname: string;
  id: string;
}

/** A Kontrol query: the identity fields to match; fields left out (or empty) match anything. */
export type KontrolQuery = Partial<KiteIdentity>;

/** Credentials as a call carries them (`authentication`). */
export interface KiteAuthentication {
  type: string;
  key: string;
}

/** The `auth` option: the credentials this side sends. `key` may be left out for a token that
 *  is given later with `setToken`. */
export interface KiteAuthOption {
  /** `kiteKey`, `token`, or a type of the remote kite's own. */
  type: 'kiteKey' | 'token' | (string & {});
  key?: string;
}

// ---- errors and logging ----

/** Every rejected promise of the client carries a `KiteError`; so does the `error` event. */
export declare class KiteError extends Error {
  readonly name: 'KiteError';
  /** The protocol's error type: `methodNotFound`, `authenticationError`, `timeout`,
   *  `disconnect`, `invalidResponse`, `genericError`, `argumentError`,
   *  `requestLimitError`, or the remote's own. */
  type: string;
  /** The remote's error code (empty if none). */
  code: string;
  /** The request id the remote gave the error (empty if none). */
  id: string;
  /** A predicate for `catch`/`filter`: is `err` a kite error with this `code`? */
  static codeIs(code: string): (err: unknown) => boolean;
  /** The negation of `codeIs(code)`. */
  static codeIsnt(code: string): (err: unknown) => boolean;
  /** A `KiteError` from a plain `{type, message, code}` (Kite.js's). */
  static makeProperError(error?: { type?: string; message?: string; code?: string }): KiteError;
  constructor(message?: string, type?: string, code?: string, id?: string);
}

/** Kite.js's log levels. */
export declare const LogLevel: Readonly<{
  NONE: -1;
  CRITICAL: 0;
  ERROR: 1;
  WARNING: 2;
  NOTICE: 3;
  INFO: 4;
  DEBUG: 5;
}>;

/** A log level by name (`warn` is `warning`). */
export type LogLevelName = 'none' | 'critical' | 'error' | 'warning' | 'warn' | 'notice' | 'info' | 'debug';

/** Where log lines go (`console` by default). */
export interface Logger {
  error(...args: unknown[]): void;
  warn(...args: unknown[]): void;
  info(...args: unknown[]): void;
  debug?(...args: unknown[]): void;
}

// ---- options ----

/** A transport: the SockJS ones (`websocket`, `xhr-streaming`, `xhr-polling`) or a plain
 *  websocket (`raw-websocket`, what Kite.js servers speak). */
export type KiteTransport = 'websocket' | 'xhr-streaming' | 'xhr-polling' | 'raw-websocket';

/** Reconnection delays: each ±50 %, until `maxReconnectAttempts` (then `backOffFailed`). */
export interface KiteBackoff {
  /** ms before the first attempt (default 500). */
  initialDelayMs?: number;
  /** Growth of the delay per attempt (default 1.5). */
  multiplyFactor?: number;
  /** The longest delay, ms (default 60,000). */
  maxDelayMs?: number;
  /** Attempts before giving up (default `Infinity`: forever). */
  maxReconnectAttempts?: number;
}

/** What a method of the page is given after its arguments and the callback. */
export interface KiteMethodContext {
  /** The caller's identity, as it sent it. */
  kite: KiteIdentity;
  /** The caller's credentials, or `null`. */
  authentication: KiteAuthentication | null;
  /** The method called. */
  method: string;
  /** The user an authentication check named, if it named one. */
  username?: string;
}

/** The Node-style callback a method may answer through instead of returning. */
export type KiteMethodCallback = (error: unknown, result?: unknown) => void;

/**
 * A method the remote kite may call: `fn(...args, callback, context)`. The arguments are what
 * the remote sent (its functions arrive as functions: calling one calls the remote back); the
 * method answers with its return value, the value of the promise it returns, or (returning
 * `undefined` having declared the callback parameter) through the callback. Parameters may be
 * typed as the method expects them.
 */
export type KiteMethodFunction = {
  // A method signature, so that functions with typed parameters are accepted.
  method(...args: unknown[]): unknown;
}['method'];

/** Checks a caller's credentials: `true` or a username accepts, `false` refuses. */
export type KiteAuthenticator = (
  authentication: KiteAuthentication,
  kite: KiteIdentity,
) => boolean | string | Promise<boolean | string>;

/** Who may call a method: `false` (the client's default: anyone), `true` (the `authenticate`
 *  option decides) or a check of its own. */
export type KiteMethodAuth = boolean | KiteAuthenticator;

/** A method of `api`: a function, or `{func, auth}`. */
export type KiteMethod = KiteMethodFunction | { func: KiteMethodFunction; auth?: KiteMethodAuth };

/** The `api` option: methods by name. */
export type KiteApi = Record<string, KiteMethod>;

/** Every option but where to connect. */
export interface KiteCommonOptions {
  /** Appended to `url` (Kite.js). */
  prefix?: string;
  /** This side's identity (defaults `browser-kite`, `anonymous`, `browser-environment`,
   *  `1.0.0`, `browser-region`, `browser-hostname`, a UUIDv4). */
  name?: string;
  username?: string;
  environment?: string;
  version?: string;
  region?: string;
  hostname?: string;
  id?: string;
  /** Credentials sent with every call. */
  auth?: KiteAuthOption;
  /** Connect at once (default true). */
  autoConnect?: boolean;
  /** Reconnect after the connection drops (default true). */
  autoReconnect?: boolean;
  backoff?: KiteBackoff;
  /** Transports in order of preference (default `['websocket', 'xhr-streaming',
   *  'xhr-polling']`, or `['raw-websocket']` for a `ws(s)://` URL). */
  transports?: KiteTransport | KiteTransport[];
  /** ms a call may wait for its answer (default 0: none). */
  timeout?: number;
  /** ms one transport may take to open (default 10,000). */
  connectTimeout?: number;
  /** A SockJS session silent this long (ms) is dropped and reconnected (default 45,000; 0: never). */
  heartbeatTimeout?: number;
  /** ms before the token's `exp` at which `tokenExpired` fires (default 30,000). */
  renewBefore?: number;
  /** ms calls refused with `token is expired` wait for `setToken` (default 15,000). */
  tokenWait?: number;
  /** Methods the remote kite may call on this connection. */
  api?: KiteApi;
  /** Checks credentials for methods with `auth: true`. */
  authenticate?: KiteAuthenticator;
  logLevel?: LogLevelName | number;
  logger?: Logger;
}

/**
 * `new Kite(options)`: `url` is `http(s)://host:port/kite` for a SockJS kite or `ws(s)://…`
 * for a raw websocket; or `connection`, a WebSocket opened by the caller (used once, never
 * reconnected; its URL is the kite's unless `url` is given).
 */
export type KiteOptions = KiteCommonOptions &
  ({ url: string; connection?: WebSocket } | { url?: string; connection: WebSocket });

// ---- events ----

/** How a connection ended. */
export interface KiteCloseInfo {
  code: number;
  reason: string;
}

/** Listeners by event name. */
export interface KiteEvents {
  /** The connection opened (again). */
  open: () => void;
  /** The connection ended. */
  close: (info: KiteCloseInfo) => void;
  /** A failed connection attempt, or something the remote sent that cannot be read. */
  error: (error: KiteError) => void;
  /** The remote called `kite.log` with this. */
  info: (message: unknown) => void;
  /** The token expires soon (or a call was refused with `token is expired`): call `setToken`. */
  tokenExpired: () => void;
  /** `setToken` was called with this token. */
  tokenSet: (token: string) => void;
  /** Reconnecting gave up after `backoff.maxReconnectAttempts`. */
  backOffFailed: () => void;
}

export type KiteEventName = keyof KiteEvents;

/** Kite.js's state numbers: 0 not ready (never connected), 1 ready, 3 closed, 5 connecting. */
export type KiteState = 0 | 1 | 3 | 5;

export interface KiteRequestOptions {
  /** ms this call may wait (overrides the kite's `timeout`; 0: none). */
  timeout?: number;
}

// ---- Kite ----

/** A kite reached over the network, and the page's side of that connection. */
export declare class Kite {
  /** `new Kite(url)` or `new Kite(options)`; throws a `TypeError` on a bad URL or option. */
  constructor(options: string | KiteOptions);
  /** Calls `method` with any number of arguments (sent as `withArgs`); functions among them
   *  become callbacks the remote may call. Resolves with the result, rejects with a
   *  `KiteError`. */
  tell<T = unknown>(method: string, ...args: unknown[]): Promise<T>;
  /** Sends a WebRTC signalling message to the relay kite this kite is connected to (Go's
   *  `SendWebRTCRequest`: `kite.handleWebRTC`); the relay sets `src` to this kite's id and
   *  forwards it to `dst`. Rejects with the relay's error (`dst not set`, `dst not registered`). */
  sendWebRTCRequest(message: WebRTCSignalMessage): Promise<void>;
  /** Calls `method` with the list `args`. */
  request<T = unknown>(method: string, args?: unknown[], options?: KiteRequestOptions): Promise<T>;
  /** Connects (nothing happens if connected or connecting). */
  connect(): void;
  /** Closes the connection (calls in flight fail with `disconnect`); with `reconnect`,
   *  connects again. */
  disconnect(reconnect?: boolean | null): void;
  /** `kite.ping` on the remote: resolves with `'pong'`. */
  ping(): Promise<string>;
  /** Resolves when connected; calls `callback` too, if given. */
  ready(callback?: (() => void) | null): Promise<void>;
  on<E extends keyof KiteEvents>(event: E, listener: KiteEvents[E]): void;
  once<E extends keyof KiteEvents>(event: E, listener: KiteEvents[E]): void;
  off<E extends keyof KiteEvents>(event: E, listener: KiteEvents[E]): void;
  /** Adds or replaces a method the remote may call. */
  handle(method: string, func: KiteMethodFunction, auth?: KiteMethodAuth): void;
  /** Uses `token` from now on and sends the calls that waited for it. */
  setToken(token: string): void;
  /** The current token, with token authentication. */
  getToken(): string | undefined;
  /** This side's identity, as sent with every call. */
  getKiteInfo(): KiteIdentity;
  readonly state: KiteState;
  /** The transport in use, when connected. */
  readonly transport: KiteTransport | undefined;
  /** The URL dialed. */
  readonly url: string;
  /** The remote's identity, for kites from Kontrol (`null` otherwise). */
  readonly remote: KiteIdentity | null;
  /** Functions of this page held for peers, over all kites. */
  static liveCallbacks(): number;
  /** `KiteError` (Kite.js's `Kite.Error`). */
  static Error: typeof KiteError;
  /** Frees the kite's memory in the wasm module now (it is freed when collected anyway). */
  free(): void;
  [Symbol.dispose](): void;
}

// ---- Kontrol ----

export interface KontrolGetKitesArgs {
  query: KontrolQuery;
}

/** A kite registering or going away, for `watchKites`/`watch`. */
export interface WatchEvent {
  action: 'REGISTER' | 'DEREGISTER';
  kite: KiteIdentity;
  /** Where to reach it (registrations). */
  url?: string;
  /** A token for calling it (registrations). */
  token?: string;
  /** An unconnected `Kite` for it (registrations). */
  remote?: Kite;
}

/** A WebRTC signalling message (Go's `WebRTCSignalMessage`); empty fields may be left out. */
export interface WebRTCSignalMessage {
  /** `offer`, `answer`, `candidate` or `leave` (any case). */
  type?: string;
  /** The sender's kite id (set by the relay). */
  src?: string;
  /** The kite id of the peer the message is for. */
  dst?: string;
  /** What the peers exchange: `{sdp: {type, sdp}}`, `{candidate: {candidate, sdpMid,
   *  sdpMLineIndex}}`, `connectionId`, `label`, ... */
  payload?: unknown;
}

/** Kontrol's answer to `register`. */
export interface RegisterResult {
  url: string;
  [key: string]: unknown;
}

/** What `Kontrol#register` tells of the registrations after the first. */
export interface RegisterOptions {
  onRegister?: (result: RegisterResult) => void;
  onError?: (error: KiteError) => void;
}

/** A watch on Kontrol. */
export interface KiteWatch {
  /** The kites matching when the watch started. */
  kites: Kite[];
  /** Kontrol's id of the watcher. */
  watcherID?: string;
  /** Ends the watch. */
  cancel(): Promise<void>;
}

/** A client of Kontrol, the registry. */
export declare class Kontrol {
  /** The options of a `Kite` (usually `url` and `auth: {type: 'kiteKey', key}`). */
  constructor(options: string | KiteOptions);
  /** The connection to Kontrol itself. */
  readonly kite: Kite;
  connect(): void;
  disconnect(): void;
  /** Unconnected kites matching the query (call `connect()`); their tokens are renewed
   *  through this Kontrol. */
  fetchKites(args: KontrolGetKitesArgs): Promise<Kite[]>;
  /** The first kite matching the query (rejects if none). */
  fetchKite(args: KontrolGetKitesArgs): Promise<Kite>;
  /** A token for calling a kite (a `Kite` from `fetchKites`, or an identity). */
  getToken(kite: Kite | KiteIdentity): Promise<string>;
  /** `fetchKites`, then `handler` for each kite that registers or goes away. */
  watchKites(args: KontrolGetKitesArgs, handler: (event: WatchEvent) => void): Promise<Kite[]>;
  /** Like `watchKites`, with a handle to cancel the watch. */
  watch(args: KontrolGetKitesArgs, handler: (event: WatchEvent) => void): Promise<KiteWatch>;
  /** Stops a watcher by its id. */
  cancelWatcher(id: string): Promise<unknown>;
  /** Registers this connection's kite with Kontrol as reachable at `url`, and again whenever
   *  the connection to Kontrol comes back (`onRegister` / `onError` hear of those). */
  register(url: string | { url: string }, options?: RegisterOptions): Promise<RegisterResult>;
  free(): void;
  [Symbol.dispose](): void;
}

// ---- loading the module (wasm-bindgen's) ----

export type InitInput = RequestInfo | URL | Response | BufferSource | WebAssembly.Module;
export type SyncInitInput = BufferSource | WebAssembly.Module;

/** The module's exports (internal). */
export interface InitOutput {
  readonly memory: WebAssembly.Memory;
  readonly [name: string]: unknown;
}

/** Runs by itself when the module is instantiated (it defines `Kite.prototype.tell`); calling
 *  it again does nothing. */
export function start(): void;

/** Instantiates the module from bytes or a compiled module (Node's entry point does this). */
export function initSync(module: { module: SyncInitInput } | SyncInitInput): InitOutput;

/** Fetches and instantiates the module (by default `kite_bg.wasm` beside this file). Call it
 *  once before using anything else in the browser build. */
export default function init(
  module_or_path?: { module_or_path: InitInput | Promise<InitInput> } | InitInput | Promise<InitInput>,
): Promise<InitOutput>;
