// The Node kite server (kite-wasm/server): authentication as a Go kite does it, and a hostile
// peer's input and budgets. Interoperability with Go-shaped traffic, Kite.js, sockjs-client,
// native kites and Kontrol is in server-interop*.test.mjs.

import { test, describe, before, after } from 'node:test';
import assert from 'node:assert/strict';
import net from 'node:net';
import { WebSocket } from 'ws';

import { KiteServer, Kite, keyPair, jwt, now, rejection, until } from './server-kit.mjs';

const TIMEOUT = 30_000;

const caller = {
  id: '2b0c0fa4-0000-4000-8000-000000000001',
  username: 'bob',
  environment: 'test',
  name: 'caller',
  version: '1.0.0',
  region: 'test',
  hostname: 'test',
};

/** A dnode request as Go kite writes it, with a response callback. */
function request(method, args, { auth = null, callbacks = {}, id = 0 } = {}) {
  return JSON.stringify({
    method,
    arguments: [{ kite: caller, authentication: auth, withArgs: args, responseCallback: '[Function]' }],
    links: [],
    callbacks: { [id]: ['0', 'responseCallback'], ...callbacks },
  });
}

/** A raw websocket to `server`, with its messages parsed in arrival order. */
async function rawSocket(server) {
  const ws = new WebSocket(server.url.replace(/^http/, 'ws') + '/websocket');
  const inbox = [];
  const waiting = [];
  ws.on('message', (data) => {
    const m = JSON.parse(data.toString());
    const w = waiting.shift();
    if (w) w(m);
    else inbox.push(m);
  });
  await new Promise((resolve, reject) => {
    ws.once('open', resolve);
    ws.once('error', reject);
  });
  const closed = new Promise((resolve) => ws.once('close', (code, reason) => resolve({ code, reason: reason.toString() })));
  return {
    ws,
    closed,
    send: (text) => ws.send(text),
    next: (ms = 10_000) =>
      inbox.length
        ? Promise.resolve(inbox.shift())
        : new Promise((resolve, reject) => {
            const timer = setTimeout(() => reject(new Error(`no message within ${ms} ms`)), ms);
            waiting.push((m) => {
              clearTimeout(timer);
              resolve(m);
            });
          }),
  };
}

/** The `{error, result}` answer of a response message. */
const answer = (m) => m.arguments[0];

describe('authentication', () => {
  const kontrol = keyPair();
  const other = keyPair();
  let server;
  const kites = [];

  before(async () => {
    server = new KiteServer({
      name: 'math',
      username: 'alice',
      environment: 'test',
      kiteKey: false,
      auth: {
        kontrolKey: kontrol.publicKey,
        kontrolUser: 'kontrol-user',
        authenticators: {
          sessionKey: ({ key }) => (key === 'good-session' ? 'carol' : false),
        },
      },
      api: {
        whoami: (done, ctx) => ctx.username,
        open: { func: () => 'open to all', auth: false },
      },
    });
    await server.listen(0);
  });

  after(async () => {
    for (const k of kites) k.disconnect();
    await server.close();
  });

  const token = (claims, key = kontrol.privateKey, opts) =>
    jwt({ iss: 'kontrol-user', sub: 'bob', aud: '/alice/test/math', iat: now(), exp: now() + 60, ...claims }, key, opts);

  const kite = (auth) => {
    const k = new Kite({ url: server.url, auth, autoReconnect: false, tokenWait: 0, ...caller, name: 'caller' });
    kites.push(k);
    return k;
  };

  test('tokens signed by the Kontrol key with RS256, RS384 and RS512 are accepted', { timeout: TIMEOUT }, async () => {
    for (const [alg, hash] of [['RS256', 'sha256'], ['RS384', 'sha384'], ['RS512', 'sha512']]) {
      const k = kite({ type: 'token', key: token({}, kontrol.privateKey, { alg, hash }) });
      assert.equal(await k.tell('whoami'), 'bob', alg);
      k.disconnect();
    }
  });

  test('a token is verified once, then remembered', { timeout: TIMEOUT }, async () => {
    const k = kite({ type: 'token', key: token({ jti: 'once' }) });
    const before = server.stats().verifications;
    for (let i = 0; i < 5; i++) assert.equal(await k.tell('whoami'), 'bob');
    assert.equal(server.stats().verifications - before, 1);
  });

  test('methods need credentials unless auth: false', { timeout: TIMEOUT }, async () => {
    const k = kite(undefined);
    assert.equal(await k.tell('open'), 'open to all');
    const e = await rejection(k.tell('whoami'));
    assert.equal(e.type, 'authenticationError');
    assert.equal(e.message, 'No authentication information is provided');
  });

  const refused = [
    ['alg none', () => jwt({ iss: 'kontrol-user', sub: 'bob', aud: '/alice/test/math' }, null, { header: { alg: 'none' } }), 'token: invalid signing method'],
    // The classic confusion: HMAC keyed with the public key, which a JWT library that takes
    // the algorithm from the token would accept.
    ['HS256 with the public key as secret', () => {
      const header = Buffer.from(JSON.stringify({ alg: 'HS256', typ: 'JWT' })).toString('base64url');
      const claims = Buffer.from(JSON.stringify({ iss: 'kontrol-user', sub: 'bob', aud: '/alice/test/math' })).toString('base64url');
      return `${header}.${claims}.c2lnbmVk`;
    }, 'token: invalid signing method'],
    ['another issuer', () => token({ iss: 'mallory' }), 'token: issuer is not trusted: mallory'],
    ['another key', () => token({}, other.privateKey), 'token: token is expired'],
    ['expired', () => token({ exp: now() - 90 }), /^token: token is expired by 1m3\ds$/],
    ['not valid yet', () => token({ nbf: now() + 300 }), 'token: token is not valid yet'],
    ['another audience', () => token({ aud: '/mallory' }), /^token: audience: username "mallory" not allowed/],
    ['the root audience', () => token({ aud: '/' }), 'token: root audience (/) is not accepted'],
    ['no user', () => token({ sub: '' }), 'token: token has no username'],
    ['not a JWT', () => 'garbage', /^token: malformed token: /],
  ];
  for (const [what, make, message] of refused) {
    test(`a token is refused: ${what}`, { timeout: TIMEOUT }, async () => {
      const k = kite({ type: 'token', key: make() });
      const e = await rejection(k.tell('whoami'));
      assert.equal(e.type, 'authenticationError');
      if (message instanceof RegExp) assert.match(e.message, message);
      else assert.equal(e.message, message);
      // Refusing one caller harms no one: the open method still answers it.
      assert.equal(await k.tell('open'), 'open to all');
    });
  }

  test('kite keys signed by the trusted Kontrol key are accepted, others refused', { timeout: TIMEOUT }, async () => {
    const good = jwt({ iss: 'kontrol-user', sub: 'dave', kontrolKey: kontrol.publicKey }, kontrol.privateKey);
    assert.equal(await kite({ type: 'kiteKey', key: good }).tell('whoami'), 'dave');
    const foreign = jwt({ iss: 'kontrol-user', sub: 'dave', kontrolKey: other.publicKey }, other.privateKey);
    const e = await rejection(kite({ type: 'kiteKey', key: foreign }).tell('whoami'));
    assert.equal(e.message, 'kiteKey: kontrol key is not trusted');
    // Naming the trusted key without its signature does not help.
    const forged = jwt({ iss: 'kontrol-user', sub: 'dave', kontrolKey: kontrol.publicKey }, other.privateKey);
    const f = await rejection(kite({ type: 'kiteKey', key: forged }).tell('whoami'));
    assert.equal(f.type, 'authenticationError');
  });

  test('custom authenticators by type; unknown types are refused', { timeout: TIMEOUT }, async () => {
    assert.equal(await kite({ type: 'sessionKey', key: 'good-session' }).tell('whoami'), 'carol');
    const bad = await rejection(kite({ type: 'sessionKey', key: 'stolen' }).tell('whoami'));
    assert.equal(bad.message, 'sessionKey: access denied');
    const unknown = await rejection(kite({ type: 'magic', key: 'x' }).tell('whoami'));
    assert.equal(unknown.message, 'Unknown authentication type: magic');
  });
});

describe('hostile input and budgets', () => {
  let server;
  let release = () => {};

  before(async () => {
    server = new KiteServer({
      name: 'target',
      kiteKey: false,
      limits: {
        maxMessageBytes: 64 * 1024,
        maxCallsInFlight: 2,
        maxCallbacks: 3,
        maxSessionsPerAddress: 2,
        maxWebSocketsPerAddress: 4,
        headersTimeoutMs: 300,
      },
      api: {
        square: { func: (x) => x * x, auth: false },
        slow: { func: () => new Promise((resolve) => { const prev = release; release = () => { prev(); resolve('released'); }; }), auth: false },
        echo: { func: (x) => x, auth: false },
        give: { func: (n) => Array.from({ length: n }, () => () => 'called'), auth: false },
      },
    });
    await server.listen(0);
  });

  after(async () => {
    release();
    await server.close();
  });

  test('unknown methods get a kite error object', { timeout: TIMEOUT }, async () => {
    const s = await rawSocket(server);
    s.send(request('nope', []));
    const { error, result } = answer(await s.next());
    assert.equal(result, null);
    assert.equal(error.type, 'methodNotFound');
    assert.equal(typeof error.message, 'string');
    s.ws.close();
  });

  test('broken JSON, a non-dnode message and deep nesting are skipped; the connection goes on', { timeout: TIMEOUT }, async () => {
    const s = await rawSocket(server);
    s.send('{"method": "square", "argu');
    s.send('[1,2,3]');
    s.send(JSON.stringify({ method: 'square', arguments: 'not a list', callbacks: { 0: 'x' } }));
    s.send('['.repeat(30_000) + ']'.repeat(30_000));
    // Deeply nested arguments (a valid message) are answered like any other.
    s.send(request('echo', [JSON.parse('['.repeat(48) + '1' + ']'.repeat(48))]));
    let nested = await s.next();
    while (!Array.isArray(answer(nested).result)) nested = await s.next();
    assert.equal(JSON.stringify(answer(nested).result), '['.repeat(48) + '1' + ']'.repeat(48));
    s.send(request('square', [9]));
    let m = await s.next();
    while (answer(m).result !== 81) m = await s.next();
    s.ws.close();
  });

  test('a message over maxMessageBytes closes that socket only (1009)', { timeout: TIMEOUT }, async () => {
    const bystander = await rawSocket(server);
    const s = await rawSocket(server);
    s.send(request('square', ['x'.repeat(200 * 1024)]));
    const { code } = await s.closed;
    assert.equal(code, 1009);
    bystander.send(request('square', [3]));
    assert.equal(answer(await bystander.next()).result, 9);
    bystander.ws.close();
  });

  test('calls in flight past maxCallsInFlight get requestLimitError', { timeout: TIMEOUT }, async () => {
    const s = await rawSocket(server);
    s.send(request('slow', [], { id: 0 }));
    s.send(request('slow', [], { id: 1 }));
    s.send(request('slow', [], { id: 2 }));
    const third = await s.next();
    assert.equal(third.method, 2);
    assert.equal(answer(third).error.type, 'requestLimitError');
    release();
    const done = [await s.next(), await s.next()].map((m) => answer(m).result);
    assert.deepEqual(done, ['released', 'released']);
    // The slots are free again.
    s.send(request('square', [4], { id: 3 }));
    assert.equal(answer(await s.next()).result, 16);
    s.ws.close();
  });

  test('an answer holding more functions than maxCallbacks becomes requestLimitError', { timeout: TIMEOUT }, async () => {
    const s = await rawSocket(server);
    s.send(request('give', [2], { id: 0 }));
    const two = await s.next();
    assert.equal(answer(two).error, null);
    assert.equal(Object.keys(two.callbacks).length, 2);
    s.send(request('give', [5], { id: 1 }));
    assert.equal(answer(await s.next()).error.type, 'requestLimitError');
    s.ws.close();
  });

  test('sessions per address past maxSessionsPerAddress are refused 503', { timeout: TIMEOUT }, async () => {
    const open = async (session) => fetch(`${server.url}/000/${session}/xhr`, { method: 'POST' });
    const a = await open('sessiona1');
    const b = await open('sessionb1');
    assert.equal(a.status, 200);
    assert.equal(b.status, 200);
    assert.equal(await a.text(), 'o\n');
    await b.text();
    const c = await open('sessionc1');
    assert.equal(c.status, 503);
    await c.text();
  });

  test('an xhr_send body over the limit is refused 413, the server goes on', { timeout: TIMEOUT }, async () => {
    const big = JSON.stringify(['x'.repeat(400 * 1024)]);
    const res = await fetch(`${server.url}/000/sessiona1/xhr_send`, { method: 'POST', body: big }).catch((e) => e);
    if (res instanceof Error) {
      // The server may cut the connection while the body is still being sent.
      assert.match(String(res.cause ?? res), /socket|closed|reset|terminated/i);
    } else {
      assert.equal(res.status, 413);
    }
    const ok = new Kite({ url: server.url.replace(/^http/, 'ws') + '/websocket', autoReconnect: false });
    assert.equal(await ok.tell('square', 5), 25);
    ok.disconnect();
  });

  test('a peer that sends its headers slowly is cut off after headersTimeoutMs', { timeout: TIMEOUT }, async () => {
    const { port } = new URL(server.url);
    const socket = net.connect(Number(port), '127.0.0.1');
    await new Promise((resolve) => socket.once('connect', resolve));
    socket.write('GET /kite/info HTTP/1.1\r\nHost: x\r\n');
    const answer = [];
    socket.on('data', (d) => answer.push(d));
    await new Promise((resolve) => socket.once('close', resolve));
    assert.match(Buffer.concat(answer).toString(), /^HTTP\/1\.1 408 /);
  });

  test('websockets per address past maxWebSocketsPerAddress are refused 503, and given back on close', { timeout: TIMEOUT }, async () => {
    await until(() => server.stats().websockets === 0, 5000, 'earlier websockets forgotten');
    const sockets = await Promise.all([1, 2, 3, 4].map(() => rawSocket(server)));
    const refused = await rawSocket(server).catch((e) => e);
    assert.match(String(refused), /503/);
    for (const s of sockets) s.ws.close();
    await Promise.all(sockets.map((s) => s.closed));
    await until(() => server.stats().websockets === 0 && server.stats().sockets === 0, 5000, 'websockets forgotten');
    const again = await rawSocket(server);
    again.send(request('square', [6]));
    assert.equal(answer(await again.next()).result, 36);
    again.ws.close();
  });
});
