// The Node KiteServer (kite-wasm/server) answers what the Go kite server answered, byte for byte:
// the requests Go and Kite.js clients put on the wire (the golden captures in
// kite-core/tests/golden/, copied from the reference captures; see their README) are replayed
// verbatim over plain `ws` sockets and `http` requests, so every frame is seen as sent, and the
// answers are compared with the Go server's captured answers.
//
// Normalised, because it must differ: request ids of errors (16 random hex characters), and in
// `echo-nested` the two numbers Go echoed as the client's raw text (a JS number cannot hold
// 12345678901234567890, and it prints -1.5e-07 as -1.5e-7). Nothing else: the escaping of
// <, >, &, U+2028, the key order of envelopes and errors, the callback ids, the SockJS frames.

import { describe, test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import http from 'node:http';
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { pathToFileURL } from 'node:url';
import WebSocket from 'ws';

import { repoRoot, pkgDir, within, TEST_TIMEOUT, SUITE_TIMEOUT } from './fixtures.mjs';
import { split } from './server-kit.mjs';

const { KiteServer } = await import(pathToFileURL(path.join(pkgDir, 'server/index.js')).href);

const GOLDEN = path.join(repoRoot, 'kite-core/tests/golden');

/** The lines of a capture. */
function load(file) {
  return readFileSync(path.join(GOLDEN, file), 'utf8')
    .split('\n')
    .filter(Boolean)
    .map((l) => JSON.parse(l));
}

/** A SockJS server frame's messages (`a[...]`), or null for another frame. */
function messagesOf(frame) {
  return frame.startsWith('a[') ? JSON.parse(frame.slice(1)) : null;
}

/**
 * A capture's cases: name -> { requests: the client's frames or `xhr_send` bodies as sent,
 * frames: the server's websocket frames (no `o`, `h`, nor Go's empty farewell frame),
 * answers: the dnode messages the server sent, polls: the bodies of `/xhr` answers }.
 */
function cases(file) {
  const out = new Map();
  for (const v of load(file)) {
    const c = out.get(v.case) ?? { requests: [], frames: [], answers: [], polls: [], contentType: null };
    out.set(v.case, c);
    const p = v.http?.path ?? '';
    if (v.kind === 'ws-message' && v.dir === 'c2s') c.requests.push(v.payload);
    if (v.kind === 'http-request' && p.endsWith('/xhr_send')) c.requests.push(v.payload);
    let frames = [];
    if (v.kind === 'ws-message' && v.dir === 's2c') {
      frames = [v.payload];
      if (!['o', 'h', ''].includes(v.payload)) c.frames.push(v.payload);
    }
    if (v.kind === 'http-response' && /\/xhr(_streaming)?$/.test(p)) {
      if (v.payload !== '') c.polls.push(v.payload);
      c.contentType ??= v.http.content_type;
      frames = v.payload.split('\n');
    }
    for (const f of frames) c.answers.push(...(messagesOf(f) ?? []));
  }
  return out;
}

/** Error ids are random per request: compare them by shape. */
const normalise = (s) => s.replace(/"id":"[0-9a-f]{16}"/g, '"id":"<request id>"').replace(/\\"id\\":\\"[0-9a-f]{16}\\"/g, '\\"id\\":\\"<request id>\\"');

/** What a JS server must print where Go echoed the client's raw number text. */
function jsNumbers(s) {
  return s.replace('12345678901234567890', String(12345678901234567890)).replace('-1.5e-07', String(-1.5e-7));
}

/**
 * Go's encoder writes <, >, & and U+2028/U+2029 in strings as \u escapes; ours (kite-core's,
 * the native server's too) writes them as they are: the same JSON string either way. Only the
 * cases that echo such strings need this.
 */
function goEscapesUndone(s) {
  return s
    .replace(/\\u003c/g, '<')
    .replace(/\\u003e/g, '>')
    .replace(/\\u0026/g, '&')
    .replace(/\\u2028/g, '\u2028')
    .replace(/\\u2029/g, '\u2029');
}

const ECHOED = new Set(['echo-nested', 'echo']);

/** `got` (frames or messages) equals `want` but for what must differ. */
function same(name, got, want) {
  if (ECHOED.has(name)) {
    const messages = (list) => list.flatMap((x) => messagesOf(x) ?? [x]);
    got = messages(got);
    want = messages(want).map(goEscapesUndone).map(jsNumbers);
  }
  assert.deepEqual(got.map(normalise), want.map(normalise), name);
}

/** Cases whose answers the Go server sent in an order set by timing (20 calls in flight). */
const UNORDERED = new Set(['ws-no-batching-bench-40-conc-20', 'xhr-batching-bench-40-conc-20']);
const sorted = (name, list) => (UNORDERED.has(name) ? [...list].sort() : list);

// ---- the Go math-server's methods (the captures' server), with its results ----


const argumentError = (message) => Object.assign(new Error(message), { type: 'argumentError' });

function mathApi(auth) {
  const method = (func) => ({ func: (...a) => func(split(a)), auth });
  return {
    square: method(({ args: [x] }) => {
      const n = typeof x === 'number' ? x : typeof x?.number === 'number' ? x.number : null;
      if (n === null) throw argumentError('square expects a number or {"number": n}');
      return n * n;
    }),
    echo: method(({ args }) => (args.length ? args[0] : null)),
    callback: method(({ args }) => {
      const [first, second] = args;
      const [value, cb, times] =
        typeof second === 'function' ? [first, second, 1] : [first.value, first.cb, first.times ?? 1];
      for (let i = 0; i < times; i++) cb(value);
      return value;
    }),
    error: method(({ args }) => {
      throw new Error(typeof args[0] === 'string' ? args[0] : 'math-server: intentional error');
    }),
    panic: method(() => {
      throw new Error('math-server: intentional panic');
    }),
    whoami: method(({ ctx }) => ({
      auth: ctx.authentication,
      kite: ctx.kite,
      username: ctx.username ?? ctx.kite.username,
    })),
    // The goaway-server's method: answers, then closes the caller's session.
    goaway: method(({ ctx }) => {
      setTimeout(() => ctx.peer.disconnect(), 50);
      return 'bye';
    }),
  };
}

/** The Kontrol key the captured kite keys were signed with (their `kontrolKey` claim). */
function capturedKontrolKey() {
  for (const v of load('s1-go-go-websocket.jsonl')) {
    if (v.case !== 'auth-kitekey-square' || v.kind !== 'ws-message' || v.dir !== 'c2s') continue;
    const msg = JSON.parse(JSON.parse(v.payload)[0]);
    const key = msg.arguments[0].authentication.key;
    return JSON.parse(Buffer.from(key.split('.')[1], 'base64url').toString()).kontrolKey;
  }
  throw new Error('no kite key in s1-go-go-websocket.jsonl');
}

let open; // like `math-server`
let authed; // like `math-server -auth`

before(async () => {
  open = new KiteServer({ name: 'math', kiteKey: false, logLevel: 'none', api: mathApi(false) });
  authed = new KiteServer({
    name: 'math',
    kiteKey: false,
    logLevel: 'none',
    api: mathApi(true),
    auth: { kontrolKey: capturedKontrolKey(), kontrolUser: 'testuser' },
  });
  await open.listen({ port: 0, host: '127.0.0.1' });
  await authed.listen({ port: 0, host: '127.0.0.1' });
});

after(async () => {
  await open?.close();
  await authed?.close();
});

const serverFor = (caseName) => (caseName.startsWith('auth-') ? authed : open);

let sessions = 0;
const sessionPath = (server) => `${server.url}/100/golden${process.pid}x${++sessions}`;

// ---- the clients: plain sockets and requests ----

/** Sends `frames` on a websocket to `url` as soon as it opens and collects text frames until
 *  `done(frames)`; resolves with them. */
function wsExchange(url, frames, done, what) {
  return new Promise((resolve, reject) => {
    const ws = new WebSocket(url, { perMessageDeflate: false });
    const got = [];
    const timer = setTimeout(() => {
      ws.terminate();
      reject(new Error(`${what}: only ${JSON.stringify(got)}`));
    }, 10_000);
    const finish = () => {
      clearTimeout(timer);
      ws.close();
      resolve(got);
    };
    ws.on('open', () => frames.forEach((f) => ws.send(f)));
    ws.on('message', (data) => {
      got.push(data.toString('utf8'));
      if (done(got)) finish();
    });
    ws.on('close', () => {
      if (done(got, true)) finish();
    });
    ws.on('error', (e) => {
      clearTimeout(timer);
      reject(e);
    });
  });
}

/** One POST with `body`: { status, headers, body }. */
function post(url, body = '') {
  return new Promise((resolve, reject) => {
    const req = http.request(url, { method: 'POST', headers: { 'Content-Type': 'text/plain' } }, (res) => {
      const chunks = [];
      res.on('data', (c) => chunks.push(c));
      res.on('end', () => resolve({ status: res.statusCode, headers: res.headers, body: Buffer.concat(chunks).toString('utf8') }));
    });
    req.setTimeout(15_000, () => req.destroy(new Error(`POST ${url}: no answer`)));
    req.on('error', reject);
    req.end(body);
  });
}

const count = (frames) => frames.reduce((n, f) => n + (messagesOf(f)?.length ?? 0), 0);

/** SockJS websocket: the server's frames after `o` until `want` messages came. */
async function overWebSocket(server, requests, want, name) {
  const url = `${sessionPath(server).replace(/^http/, 'ws')}/websocket`;
  const got = await wsExchange(url, requests, (f) => count(f) >= want, name);
  assert.equal(got[0], 'o', `${name}: the first frame`);
  return got.slice(1).filter((f) => f !== 'h');
}

/** xhr-polling: `o` on the first poll, 204 for each `xhr_send`, then polls until `want`
 *  messages came; the poll bodies. */
async function overXhrPolling(server, requests, want, name, contentType) {
  const session = sessionPath(server);
  const first = await post(`${session}/xhr`);
  assert.equal(first.status, 200);
  assert.equal(first.body, 'o\n', `${name}: the opening poll`);
  if (contentType) assert.equal(first.headers['content-type'], contentType, `${name}: Content-Type`);
  for (const body of requests) {
    const r = await post(`${session}/xhr_send`, body);
    assert.equal(r.status, 204, `${name}: xhr_send`);
    assert.equal(r.body, '');
  }
  const polls = [];
  let n = 0;
  while (n < want) {
    const r = await post(`${session}/xhr`);
    assert.equal(r.status, 200, `${name}: poll`);
    assert.match(r.body, /^(h|a\[.*\])\n$/s, `${name}: one frame per poll`);
    if (r.body !== 'h\n') polls.push(r.body);
    n += messagesOf(r.body.slice(0, -1))?.length ?? 0;
  }
  return polls;
}

/** xhr-streaming: the prelude, `o`, then the frames of one long response while the requests
 *  go by `xhr_send`; resolves with the messages once `want` came. */
function overXhrStreaming(server, requests, want, name) {
  const session = sessionPath(server);
  return new Promise((resolve, reject) => {
    let text = '';
    let opened = false;
    const req = http.request(`${session}/xhr_streaming`, { method: 'POST' }, (res) => {
      assert.equal(res.statusCode, 200);
      res.setEncoding('utf8');
      res.on('data', async (chunk) => {
        text += chunk;
        const lines = text.split('\n');
        if (!opened && lines.length > 2) {
          // 2048 `h` and a newline, as Go's (and sockjs-node's) prelude, then `o`.
          assert.equal(lines[0], 'h'.repeat(2048), `${name}: the prelude`);
          assert.equal(lines[1], 'o', `${name}: the open frame`);
          opened = true;
          try {
            for (const body of requests) assert.equal((await post(`${session}/xhr_send`, body)).status, 204);
          } catch (e) {
            reject(e);
          }
        }
        const frames = lines.slice(2, -1).filter((f) => f !== 'h');
        if (count(frames) >= want) {
          req.destroy();
          resolve(frames.flatMap((f) => messagesOf(f) ?? []));
        }
      });
    });
    req.setTimeout(10_000, () => req.destroy(new Error(`${name}: only ${JSON.stringify(text.slice(2050))}`)));
    req.on('error', (e) => (e.message.includes('socket hang up') ? undefined : reject(e)));
    req.end();
  });
}

/** Raw websocket (`<prefix>/websocket`): bare dnode messages, no SockJS framing. */
function overRawWebSocket(server, requests, want, name) {
  const url = `${server.url.replace(/^http/, 'ws')}/websocket`;
  return wsExchange(url, requests, (f) => f.length >= want, name);
}

// ---- the captures ----

describe('golden: Go client (s1-go-go-websocket) over SockJS websocket', { timeout: SUITE_TIMEOUT }, () => {
  const all = cases('s1-go-go-websocket.jsonl');
  test('has the cases', () => assert.ok(all.size >= 17, `${all.size} cases`));
  for (const [name, c] of all) {
    if (c.requests.length === 0) continue;
    test(name, { timeout: TEST_TIMEOUT }, async () => {
      const frames = await overWebSocket(serverFor(name), c.requests, c.answers.length, name);
      // Go sends one message per websocket frame: the frames themselves compare.
      same(name, frames, c.frames);
    });
  }
});

describe('golden: Go client (s1-go-go-xhr) over SockJS xhr-polling', { timeout: SUITE_TIMEOUT }, () => {
  const all = cases('s1-go-go-xhr.jsonl');
  test('has the cases', () => assert.ok(all.size >= 17, `${all.size} cases`));
  for (const [name, c] of all) {
    if (c.requests.length === 0) continue;
    test(name, { timeout: TEST_TIMEOUT }, async () => {
      const polls = await overXhrPolling(serverFor(name), c.requests, c.answers.length, name, c.contentType);
      // How many messages share one poll depends on timing: compare the messages.
      const got = polls.flatMap((p) => messagesOf(p.slice(0, -1)));
      same(name, got, c.answers);
    });
  }
});

for (const [file, transport] of [
  ['s2-kitejs-go-sockjs-websocket.jsonl', 'websocket'],
  ['s2-kitejs-go-sockjs-xhr.jsonl', 'xhr-polling'],
  ['s2-kitejs-go-sockjs-xhr-streaming.jsonl', 'xhr-streaming'],
]) {
  describe(`golden: Kite.js client (${file}) over SockJS ${transport}`, { timeout: SUITE_TIMEOUT }, () => {
    const all = cases(file);
    test('has the cases', () => assert.ok(all.size >= 3, `${all.size} cases`));
    for (const [name, c] of all) {
      if (c.requests.length === 0) continue;
      test(name, { timeout: TEST_TIMEOUT }, async () => {
        const server = serverFor(name);
        if (transport === 'websocket') {
          same(name, await overWebSocket(server, c.requests, c.answers.length, name), c.frames);
        } else if (transport === 'xhr-polling') {
          const polls = await overXhrPolling(server, c.requests, c.answers.length, name, c.contentType);
          same(name, polls.flatMap((p) => messagesOf(p.slice(0, -1))), c.answers);
        } else {
          same(name, await overXhrStreaming(server, c.requests, c.answers.length, name), c.answers);
        }
      });
    }
  });
}

describe('golden: Kite.js raw-websocket requests (s2-kitejs-kitejs-rawws) get the Go answers', { timeout: SUITE_TIMEOUT }, () => {
  // Kite.js's raw transport sends bare dnode messages. Its capture was answered by a Kite.js
  // server (a Go server has no raw endpoint): the answers expected are the Go server's to the
  // same Kite.js case over SockJS, unframed.
  const go = cases('s2-kitejs-go-sockjs-websocket.jsonl');
  const raw = cases('s2-kitejs-kitejs-rawws.jsonl');
  const shared = [...raw.keys()].filter((name) => raw.get(name).requests.length > 0 && go.has(name));
  test('has the cases', () => assert.ok(shared.length >= 5, `${shared}`));
  for (const name of shared) {
    test(name, { timeout: TEST_TIMEOUT }, async () => {
      const want = go.get(name).answers;
      const got = await overRawWebSocket(serverFor(name), raw.get(name).requests, want.length, name);
      same(name, got, want);
    });
  }
});

describe('golden: Go server frames (s3-go-server-frames)', { timeout: SUITE_TIMEOUT }, () => {
  const all = cases('s3-go-server-frames.jsonl');

  for (const name of ['ws-callback-5', 'ws-no-batching-bench-40-conc-20', 'ws-client-sends-close-frame']) {
    test(name, { timeout: TEST_TIMEOUT }, async () => {
      const c = all.get(name);
      assert.ok(c && c.answers.length > 0, name);
      const frames = await overWebSocket(open, c.requests, c.answers.length, name);
      same(name, sorted(name, frames), sorted(name, c.frames));
    });
  }

  for (const name of ['xhr-batching-callback-5', 'xhr-batching-bench-40-conc-20']) {
    test(name, { timeout: TEST_TIMEOUT }, async () => {
      const c = all.get(name);
      assert.ok(c && c.answers.length > 0, name);
      const polls = await overXhrPolling(open, c.requests, c.answers.length, name, c.contentType);
      const got = polls.flatMap((p) => messagesOf(p.slice(0, -1)));
      same(name, sorted(name, got), sorted(name, c.answers));
    });
  }

  test('xhr-second-poll-c2010: a second receiving poll is refused as Go refuses it', { timeout: TEST_TIMEOUT }, async () => {
    const c = all.get('xhr-second-poll-c2010');
    const session = sessionPath(open);
    assert.equal((await post(`${session}/xhr`)).body, c.polls[0]);
    const first = post(`${session}/xhr`);
    await new Promise((r) => setTimeout(r, 100));
    const second = await post(`${session}/xhr`);
    assert.equal(second.body, 'c[2010,"Another connection still open"]\n');
    assert.equal(second.body, c.polls[1]);
    for (const body of c.requests) assert.equal((await post(`${session}/xhr_send`, body)).status, 204);
    assert.equal((await first).body, c.polls[2]);
  });

  test('ws-server-close-go-away: a method closing its caller ends with c[3000,"Go away!"]', { timeout: TEST_TIMEOUT }, async () => {
    const c = all.get('ws-server-close-go-away');
    assert.deepEqual(c.frames.slice(-1), ['c[3000,"Go away!"]']);
    const url = `${sessionPath(open).replace(/^http/, 'ws')}/websocket`;
    const gone = new Promise((resolve) => open.once('disconnect', resolve));
    const got = await wsExchange(url, c.requests, (f, closed) => closed === true, 'goaway');
    same('ws-server-close-go-away', got.slice(1), c.frames);
    // The server saw its peer go (`disconnect`) and still serves.
    await within(gone, 5_000, "the server's disconnect event");
    const again = await overWebSocket(open, all.get('ws-callback-5').requests, 6, 'after goaway');
    same('after goaway', again, all.get('ws-callback-5').frames);
  });

  test('xhr-server-close-go-away: the next poll gets c[3000,"Go away!"], and the one after', { timeout: TEST_TIMEOUT }, async () => {
    const c = all.get('xhr-server-close-go-away-repolled');
    const session = sessionPath(open);
    assert.equal((await post(`${session}/xhr`)).body, 'o\n');
    assert.equal((await post(`${session}/xhr_send`, c.requests[0])).status, 204);
    const polls = [];
    for (let i = 0; i < 3; i++) polls.push((await post(`${session}/xhr`)).body);
    assert.deepEqual(polls, c.polls.slice(1, 4));
  });

  test('/info answers as Go does (but for the entropy)', { timeout: TEST_TIMEOUT }, async () => {
    const info = load('s2-kitejs-go-sockjs-websocket.jsonl').find(
      (v) => v.kind === 'http-response' && v.http.path === '/kite/info',
    );
    const got = await new Promise((resolve, reject) => {
      http.get(`${open.url}/info`, (res) => {
        let body = '';
        res.on('data', (d) => (body += d));
        res.on('end', () => resolve({ res, body }));
      }).on('error', reject);
    });
    // Go ends the body with a newline; kite-core's /info (the native server's too) does not.
    const entropy = (s) => s.replace(/"entropy":\d+/, '"entropy":N').replace(/\n$/, '');
    assert.equal(entropy(got.body), entropy(info.payload));
    assert.equal(got.res.headers['content-type'], info.http.content_type);
  });
});
