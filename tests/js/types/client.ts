// The client's API as a TypeScript program uses it, checked by tsc --strict (never run). Lines
// after `@ts-expect-error` must be rejected: tsc fails if one is accepted.

import {
  Kite,
  Kontrol,
  KiteError,
  LogLevel,
  type KiteCloseInfo,
  type KiteIdentity,
  type KiteMethodContext,
  type KiteMethodCallback,
  type KiteOptions,
  type KiteState,
  type KiteTransport,
  type KiteWatch,
  type KontrolQuery,
  type Logger,
  type RegisterResult,
  type WatchEvent,
} from 'kite-wasm';
import init, { initSync, type InitOutput } from 'kite-wasm/web';
import * as node from 'kite-wasm/node';

// ---- loading the module ----
const loaded: Promise<InitOutput> = init();
void init({ module_or_path: new URL('https://example.com/kite_bg.wasm') });
const output: InitOutput = initSync({ module: new Uint8Array(8) });
const memory: WebAssembly.Memory = output.memory;
const sameKite: typeof Kite = node.Kite;

// ---- options ----
const logger: Logger = {
  error: (...a) => console.error(...a),
  warn: (...a) => console.warn(...a),
  info: (...a) => console.info(...a),
};
const options: KiteOptions = {
  url: 'http://localhost:6000/kite',
  prefix: '/kite',
  name: 'page',
  username: 'alice',
  environment: 'test',
  version: '1.0.0',
  region: 'eu',
  hostname: 'laptop',
  id: '7f2f5b0e-0000-4000-8000-000000000000',
  auth: { type: 'kiteKey', key: 'eyJ...' },
  autoConnect: false,
  autoReconnect: true,
  backoff: { initialDelayMs: 700, multiplyFactor: 1.4, maxDelayMs: 15000, maxReconnectAttempts: Infinity },
  transports: ['websocket', 'xhr-streaming', 'xhr-polling'],
  timeout: 5000,
  connectTimeout: 10000,
  heartbeatTimeout: 45000,
  renewBefore: 30000,
  tokenWait: 15000,
  logLevel: 'warn',
  logger,
  api: {
    hello: (name: string) => `hi ${name}`,
    add: { func: (a: number, b: number) => a + b, auth: false },
    secret: { func: async () => 42, auth: true },
    custom: { func: () => 'ok', auth: (auth, caller) => auth.type === 'token' && caller.username === 'bob' },
    later: (x: unknown, callback: KiteMethodCallback, ctx: KiteMethodContext) => {
      setTimeout(() => callback(null, `${ctx.method} from ${ctx.kite.name}: ${String(x)}`), 1);
    },
  },
  authenticate: async (authentication, kite) => (authentication.key === 'k' ? kite.username : false),
};
const kite = new Kite(options);
new Kite('ws://localhost:6000/websocket');
new Kite({ url: 'ws://localhost:6000/websocket', transports: 'raw-websocket', logLevel: LogLevel.DEBUG });
new Kite({ connection: new WebSocket('ws://localhost:6000/websocket') });
new Kite({ url: 'http://x/kite', auth: { type: 'token' } });

// ---- calls ----
async function calls(): Promise<void> {
  const anything: unknown = await kite.tell('square', 4);
  const squared: number = await kite.tell<number>('square', 4);
  await kite.tell('count', 3, (i: number) => console.log(i));
  await kite.sendWebRTCRequest({ type: 'offer', dst: 'peer-id', payload: { sdp: { type: 'offer', sdp: 'v=0' } } });
  // @ts-expect-error: a signalling message is an object
  await kite.sendWebRTCRequest('offer');
  const listed: string = await kite.request<string>('echo', ['x'], { timeout: 100 });
  await kite.request('kite.ping');
  const pong: string = await kite.ping();
  await kite.ready();
  await kite.ready(() => console.log('ready'));
  kite.connect();
  kite.disconnect();
  kite.disconnect(true);
  kite.handle('late', (n: number) => n + 1);
  kite.handle('guarded', () => 1, true);
  kite.handle('checked', () => 1, async (auth) => auth.key.length > 0);
  kite.setToken('jwt');
  const token: string | undefined = kite.getToken();
  const me: KiteIdentity = kite.getKiteInfo();
  const state: KiteState = kite.state;
  const transport: KiteTransport | undefined = kite.transport;
  const url: string = kite.url;
  const remote: KiteIdentity | null = kite.remote;
  const live: number = Kite.liveCallbacks();
  kite.free();
  console.log(anything, squared, listed, pong, token, me.name, state, transport, url, remote?.id, live);
  try {
    await kite.tell('fails');
  } catch (e) {
    if (e instanceof KiteError) {
      const fields: [string, string, string, string, 'KiteError'] = [e.type, e.message, e.code, e.id, e.name];
      console.log(fields);
    }
    console.log(KiteError.codeIs('404')(e), KiteError.codeIsnt('404')(e));
  }
}

// ---- events ----
const onClose = (info: KiteCloseInfo) => console.log(info.code, info.reason);
kite.on('open', () => console.log('open'));
kite.on('close', onClose);
kite.off('close', onClose);
kite.once('error', (err: KiteError) => console.log(err.type, err.code, err.id, err.message));
kite.on('info', (message) => console.log(message));
kite.on('tokenExpired', () => kite.setToken('new'));
kite.on('tokenSet', (t: string) => console.log(t.length));
kite.on('backOffFailed', () => console.log('gave up'));

// ---- Kontrol ----
async function kontrolUse(): Promise<void> {
  const kontrol = new Kontrol({ url: 'http://localhost:4000/kite', auth: { type: 'kiteKey', key: 'k' } });
  const query: KontrolQuery = { name: 'math', username: 'alice' };
  const kites: Kite[] = await kontrol.fetchKites({ query });
  const one: Kite = await kontrol.fetchKite({ query: { name: 'math' } });
  const t1: string = await kontrol.getToken(one);
  const t2: string = await kontrol.getToken(one.remote ?? kite.getKiteInfo());
  const handler = (event: WatchEvent) => {
    const action: 'REGISTER' | 'DEREGISTER' = event.action;
    const who: string = event.kite.name;
    event.remote?.connect();
    console.log(action, who, event.url, event.token);
  };
  const found: Kite[] = await kontrol.watchKites({ query }, handler);
  const watch: KiteWatch = await kontrol.watch({ query }, handler);
  const watched: Kite[] = watch.kites;
  const watcher: string | undefined = watch.watcherID;
  await watch.cancel();
  await kontrol.cancelWatcher(watcher ?? '');
  const registered: RegisterResult = await kontrol.register('http://localhost:6000/kite');
  const registeredURL: string = registered.url;
  kontrol.kite.on('open', () => {});
  kontrol.connect();
  kontrol.disconnect();
  console.log(kites, t1, t2, found, watched, registeredURL);
}

const levels: number[] = [LogLevel.NONE, LogLevel.CRITICAL, LogLevel.ERROR, LogLevel.WARNING, LogLevel.NOTICE, LogLevel.INFO, LogLevel.DEBUG];
void [loaded, memory, sameKite, calls, kontrolUse, levels];

// ---- what must be rejected ----

// @ts-expect-error: a misspelt option
new Kite({ url: 'http://x/kite', autoconect: true });
// @ts-expect-error: url is a string
new Kite({ url: 6000 });
// @ts-expect-error: neither a url nor a connection
new Kite({ name: 'page' });
// @ts-expect-error: not a transport
new Kite({ url: 'http://x/kite', transports: ['websockets'] });
// @ts-expect-error: auth needs a type
new Kite({ url: 'http://x/kite', auth: { key: 'k' } });
// @ts-expect-error: timeouts are numbers
new Kite({ url: 'http://x/kite', timeout: '5s' });
// @ts-expect-error: not a log level
new Kite({ url: 'http://x/kite', logLevel: 'verbose' });
// @ts-expect-error: an api method is a function or {func, auth}
new Kite({ url: 'http://x/kite', api: { square: 4 } });
// @ts-expect-error: a misspelt event
kite.on('opne', () => {});
// @ts-expect-error: close listeners get {code, reason}, not a number
kite.on('close', (code: number) => console.log(code));
// @ts-expect-error: tokenSet listeners get the token, a string
kite.once('tokenSet', (t: number) => console.log(t));
// @ts-expect-error: error listeners get a KiteError
kite.on('error', (e: string) => console.log(e));
// @ts-expect-error: the method name is a string
kite.tell(42);
// @ts-expect-error: request takes the arguments as a list
kite.request('square', 4);
// @ts-expect-error: state is a number (and read-only)
kite.state = 'ready';
// @ts-expect-error: fetchKites resolves with Kites
kontrolUse().then(async () => { const names: string[] = await new Kontrol('http://k/kite').fetchKites({ query: {} }); return names; });
// @ts-expect-error: a misspelt query field
void new Kontrol('http://k/kite').fetchKites({ query: { nmae: 'math' } });
// @ts-expect-error: KiteError's name is 'KiteError'
const wrongName: 'Error' = new KiteError().name;
void wrongName;
