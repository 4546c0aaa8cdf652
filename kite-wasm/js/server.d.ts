// Types of kite-wasm/server: a kite server for Node 20+.
import { EventEmitter } from 'node:events';
import type { Kite } from '../web/kite.js';

export { Kite, Kontrol } from '../web/kite.js';

/** A credential as a request carries it. */
export interface Authentication {
  type: string;
  key: string;
}

/** The seven fields naming a kite. */
export interface KiteIdentity {
  username: string;
  environment: string;
  name: string;
  version: string;
  region: string;
  hostname: string;
  id: string;
}

/** What a method is given after its arguments and callback. */
export interface MethodContext {
  /** The caller's identity, as it sent it. */
  kite: KiteIdentity;
  /** The caller's credentials, if it sent any. */
  authentication: Authentication | null;
  /** The method called. */
  method: string;
  /** The authenticated user, for methods that require authentication. */
  username?: string;
  /** The caller's connection: `peer.tell(method, ...args)` calls the caller back. */
  peer: Kite;
}

/** Checks credentials of one type: a username (or `true`) accepts, `false` refuses. */
export type Authenticator = (
  authentication: Authentication,
  caller: KiteIdentity,
) => string | boolean | Promise<string | boolean>;

/** A method: its arguments as sent (functions are callbacks into the caller), then a
 *  Node-style callback and the context. Returns the result, a promise of it, or `undefined`
 *  and answers through the callback. */
export type ServerMethod = (...args: any[]) => unknown;

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

export type LogLevelName = 'none' | 'error' | 'warning' | 'warn' | 'info' | 'debug';

export interface Logger {
  error(...args: unknown[]): void;
  warn(...args: unknown[]): void;
  info(...args: unknown[]): void;
  debug(...args: unknown[]): void;
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
  auth?: ServerAuthOptions;
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
  transports?: Array<'websocket' | 'xhr-streaming' | 'xhr-polling' | 'raw-websocket'>;
}

export interface RegisterResult {
  url: string;
  heartbeatInterval?: number;
  [key: string]: unknown;
}

export interface ServerStats {
  connections: number;
  sessions: number;
  websockets: number;
  queuedBytes: number;
  verifications?: number;
  responses: number;
  sockets: number;
}

export interface KiteServerEvents {
  connection: [peer: Kite];
  disconnect: [peer: Kite];
  error: [error: unknown];
  info: [message: unknown];
}

export declare const DEFAULT_LIMITS: Readonly<Required<ServerLimits>>;
export declare const LogLevel: Readonly<{ NONE: 0; ERROR: 1; WARNING: 2; INFO: 3; DEBUG: 4 }>;

export declare class KiteServer extends EventEmitter {
  constructor(options?: KiteServerOptions);
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
