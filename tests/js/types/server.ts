// kite-wasm/server's API as a TypeScript program uses it, checked by tsc --strict (never run).
// Lines after `@ts-expect-error` must be rejected: tsc fails if one is accepted.

import {
  DEFAULT_LIMITS,
  Kite,
  Kontrol,
  KiteServer,
  LogLevel,
  type Authentication,
  type KiteIdentity,
  type KiteServerOptions,
  type MethodContext,
  type RegisterResult,
  type ServerAddress,
  type ServerStats,
} from 'kite-wasm/server';
import { LogLevel as ClientLogLevel } from 'kite-wasm';

const options: KiteServerOptions = {
  name: 'math',
  username: 'alice',
  environment: 'test',
  region: 'eu',
  version: '1.0.0',
  hostname: 'box',
  id: 'math-1',
  kiteKey: false,
  kontrolKey: '-----BEGIN PUBLIC KEY-----',
  kontrolURL: 'http://localhost:4000/kite',
  prefix: '/kite',
  timeout: 1000,
  heartbeatMs: 10000,
  disconnectDelayMs: 5000,
  websocket: true,
  limits: { maxMessageBytes: DEFAULT_LIMITS.maxMessageBytes * 2, maxCallbacks: 100 },
  logLevel: 'notice',
  logger: { error() {}, warn() {}, info() {} },
  auth: {
    kontrolKey: 'pem',
    kontrolUser: 'koding',
    leeway: 5,
    allowRootAudience: false,
    authenticators: { password: (auth: Authentication, caller: KiteIdentity) => auth.key === caller.username && 'root' },
  },
  api: {
    square: (x: number) => x * x,
    echo: { func: (x: unknown) => x, auth: false },
    count: {
      func: async (n: number, onTick: (i: number) => Promise<unknown>, _done: unknown, { peer, username, kite, method }: MethodContext) => {
        for (let i = 1; i <= n; i++) await onTick(i);
        const back: unknown = await peer.tell('hello', 'from Node', username ?? kite.username, method);
        return back;
      },
    },
    custom: { func: () => 1, auth: async (auth) => auth.type === 'password' },
  },
};

async function serve(): Promise<void> {
  const server = new KiteServer(options);
  new KiteServer();
  const address: ServerAddress = await server.listen(0);
  await new KiteServer({ kiteKey: 'jwt' }).listen({ port: 6000, host: '127.0.0.1', prefix: '/math' });
  const url: string = address.url;
  const port: number = address.port;
  server.handle('later', (a: string, cb: (e: unknown, r?: unknown) => void) => cb(null, a)).handle('open', () => 1, false);
  const registered: RegisterResult = await server.register();
  await server.register('http://example.com/kite');
  await server.register({ url: 'http://example.com/kite', kontrolURL: 'http://k/kite', transports: ['websocket'] });
  const heartbeat: number | undefined = registered.heartbeatInterval;
  const stats: ServerStats = server.stats();
  const counts: number[] = [stats.connections, stats.sessions, stats.websockets, stats.queuedBytes, stats.responses, stats.sockets];
  const me: KiteIdentity = server.kite;
  const listening: string | undefined = server.url;
  server.on('connection', (peer: Kite) => void peer.tell('welcome'));
  server.once('disconnect', (peer) => console.log(peer.url));
  server.on('error', (e: Error) => console.log(e.message));
  server.on('info', (m: string) => console.log(m));
  await server.close();
  const kontrol: Kontrol = new Kontrol('http://localhost:4000/kite');
  const level: number = LogLevel.DEBUG;
  const same: typeof ClientLogLevel = LogLevel;
  console.log(url, port, heartbeat, counts, me.name, listening, kontrol, level, same, server.prefix, server.kiteKey, server.kontrolURL);
  server.logger.debug?.('x');
}
void serve;

// ---- what must be rejected ----

// @ts-expect-error: a misspelt server option
new KiteServer({ nmae: 'math' });
// @ts-expect-error: a misspelt limit
new KiteServer({ limits: { maxMesageBytes: 1 } });
// @ts-expect-error: kiteKey is a string or false
new KiteServer({ kiteKey: true });
// @ts-expect-error: listen takes a port or {port, host, prefix}
void new KiteServer().listen('6000');
// @ts-expect-error: a misspelt listen option
void new KiteServer().listen({ prot: 6000 });
// @ts-expect-error: a misspelt event
new KiteServer().on('conection', () => {});
// @ts-expect-error: connection listeners get the peer's Kite
new KiteServer().on('connection', (peer: string) => console.log(peer));
// @ts-expect-error: not a log level
new KiteServer({ logLevel: 'verbose' });
// @ts-expect-error: LogLevel's numbers are Kite.js's (DEBUG is 5)
const wrongDebug: 4 = LogLevel.DEBUG;
void wrongDebug;
