// Types of kite-wasm/server: a kite server for Node 20+. Shares the client's types
// (kite-wasm/js/kite.d.ts, installed as ../web/kite.d.ts); tests/js/types checks both with
// tsc --strict.
import { EventEmitter } from 'node:events';
import type {
  Kite,
  KiteAuthentication,
  KiteAuthenticator,
  KiteIdentity,
  KiteMethodContext,
  KiteTransport,
  LogLevel as ClientLogLevel,
  LogLevelName,
  Logger,
  RegisterResult as KontrolRegisterResult,
} from '../web/kite.js';

export { Kite, Kontrol, KiteError } from '../web/kite.js';
export type { KiteIdentity, KiteTransport, LogLevelName, Logger } from '../web/kite.js';

/** A credential as a request carries it. */
export type Authentication = KiteAuthentication;

/** What a method is given after its arguments and callback: `kite`, `authentication`,
 *  `method`, `username` (the authenticated user, for methods that require authentication),
 *  and `peer`. */
export interface MethodContext extends KiteMethodContext {
  /** The caller's connection: `peer.tell(method, ...args)` calls the caller back. */
  peer: Kite;
}

/** Checks credentials of one type: a username (or `true`) accepts, `false` refuses. */
export type Authenticator = KiteAuthenticator;

/** A method: its arguments as sent (functions are callbacks into the caller), then a
 *  Node-style callback `(error, result)` and the `MethodContext`. Returns the result, a
 *  promise of it, or `undefined` and answers through the callback. Parameters may be typed as
 *  the method expects them. */
export type ServerMethod = {
  // A method signature, so that functions with typed parameters are accepted.
  method(...args: unknown[]): unknown;
}['method'];

/** `true` (or left out): authentication required; `false`: open; a function: custom check. */
export type MethodAuth = boolean | Authenticator;

export interface ServerMethodSpec {
  func: ServerMethod;
  auth?: MethodAuth;
}

export type ServerApi = Record<string, ServerMethod | ServerMethodSpec>;

/** Budgets a peer is held to; see `DEFAULT_LIMITS`. */
export interface ServerLimits {
  maxMessageBytes?: number;
  maxQueuedBytes?: number;
  maxSessions?: number;
  maxSessionsPerAddress?: number;
  maxWebSockets?: number;
  maxWebSocketsPerAddress?: number;
  maxCallsInFlight?: number;
  maxCallbacks?: number;
  maxConnections?: number;
  headersTimeoutMs?: number;
  idleTimeoutMs?: number;
}

export interface ServerAuthOptions {
  /** The Kontrol public key (PEM) tokens and kite keys must be signed by (default: the kite
   *  key's `kontrolKey`). */
  kontrolKey?: string;
  /** The Kontrol user tokens must be issued by (default: the kite key's `iss`). */
  kontrolUser?: string;
  /** Seconds of clock skew allowed on `exp`, `nbf`, `iat` (default 0). */
  leeway?: number;
  /** Whether tokens for the root audience `/` are accepted (default false). */
  allowRootAudience?: boolean;
  /** Checks for other credential types, by type. */
  authenticators?: Record<string, Authenticator>;
  /** Whether methods given without `auth` require credentials (default true; `false` as
   *  `auth: false`). */
  required?: boolean;
}

export interface KiteServerOptions {
  name?: string;
  username?: string;
  environment?: string;
  region?: string;
  version?: string;
  hostname?: string;
  id?: string;
  api?: ServerApi;
  /** `false` (Kite.js's): methods given without `auth` are open; `true` (default): they
   *  require credentials; an object configures the verification. */
  auth?: boolean | ServerAuthOptions;
  /** The kite key (default: `$KITE_HOME/kite.key` or `~/.kite/kite.key`; `false`: none). */
  kiteKey?: string | false;
  kontrolKey?: string;
  kontrolURL?: string;
  /** Where the kite is served (default `/kite`). */
  prefix?: string;
  /** Per-call timeout (ms) of calls the server makes to its peers (0: none). */
  timeout?: number;
  /** SockJS heartbeat interval (ms, default 10,000). */
  heartbeatMs?: number;
  /** How long a SockJS session without a receiving request lives (ms, default 5,000). */
  disconnectDelayMs?: number;
  /** Whether the SockJS websocket transport is offered (default true). */
  websocket?: boolean;
  limits?: ServerLimits;
  /** Default `error`, or `$KITE_LOG_LEVEL`. */
  logLevel?: LogLevelName | number;
  logger?: Logger;
}

export interface ListenOptions {
  port?: number;
  host?: string;
  prefix?: string;
}

export interface ServerAddress {
  host: string;
  port: number;
  /** `http://host:port/kite`: what peers dial and what is registered with Kontrol. */
  url: string;
}

export interface RegisterOptions {
  /** The URL registered (default: the one listened on). */
  url?: string;
  /** Kontrol's URL (default: the `kontrolURL` option or the kite key's). */
  kontrolURL?: string;
  /** The transports of the connection to Kontrol. */
  transports?: KiteTransport | KiteTransport[];
}

/** Kontrol's answer to `register`. */
export interface RegisterResult extends KontrolRegisterResult {
  heartbeatInterval?: number;
}

export interface ServerStats {
  /** Peers connected (`Kite`s). */
  connections: number;
  /** SockJS sessions. */
  sessions: number;
  websockets: number;
  /** Bytes queued for peers. */
  queuedBytes: number;
  /** Credentials verified (when the server checks tokens or kite keys). */
  verifications?: number;
  /** HTTP responses held open (xhr-streaming, polling). */
  responses: number;
  /** Websockets open (SockJS and raw). */
  sockets: number;
}

export interface KiteServerEvents {
  connection: [peer: Kite];
  disconnect: [peer: Kite];
  error: [error: Error];
  info: [message: string];
}

export declare const DEFAULT_LIMITS: Readonly<Required<ServerLimits>>;
/** Kite.js's log levels, the client's numbers. */
export declare const LogLevel: typeof ClientLogLevel;

export declare class KiteServer extends EventEmitter {
  constructor(options?: KiteServerOptions);
  /** The options given. */
  readonly options: KiteServerOptions;
  readonly kiteKey: string | undefined;
  readonly kontrolURL: string | undefined;
  readonly prefix: string;
  readonly logger: Logger;
  /** This kite's identity. */
  readonly kite: KiteIdentity;
  /** The URL listened on, once listening. */
  readonly url: string | undefined;
  stats(): ServerStats;
  handle(method: string, func: ServerMethod, auth?: MethodAuth): this;
  listen(port?: number | ListenOptions): Promise<ServerAddress>;
  close(): Promise<void>;
  register(options?: string | RegisterOptions): Promise<RegisterResult>;

  on<E extends keyof KiteServerEvents>(event: E, listener: (...args: KiteServerEvents[E]) => void): this;
  once<E extends keyof KiteServerEvents>(event: E, listener: (...args: KiteServerEvents[E]) => void): this;
  off<E extends keyof KiteServerEvents>(event: E, listener: (...args: KiteServerEvents[E]) => void): this;
  emit<E extends keyof KiteServerEvents>(event: E, ...args: KiteServerEvents[E]): boolean;
}
