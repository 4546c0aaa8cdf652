// Kite.js's `connection` option: a kite over a WebSocket the program opened itself (served
// here by the package's own Node server).

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { WebSocket } from 'ws';

import { KiteServer, Kite, rejection } from './server-kit.mjs';

let server;
let rawUrl;

before(async () => {
  server = new KiteServer({
    name: 'square',
    kiteKey: false,
    api: {
      square: { func: (x) => x * x, auth: false },
      callMeBack: { func: async (cb) => { await cb('hello'); return 'called'; }, auth: false },
    },
  });
  await server.listen(0);
  rawUrl = server.url.replace(/^http/, 'ws') + '/websocket';
});

after(() => server.close());

test('a kite over a WebSocket that is still opening', { timeout: 20_000 }, async () => {
  const ws = new WebSocket(rawUrl);
  const kite = new Kite({ connection: ws });
  assert.equal(await kite.tell('square', 12), 144);
  const got = [];
  assert.equal(await kite.tell('callMeBack', (m) => got.push(m)), 'called');
  assert.deepEqual(got, ['hello']);
  assert.equal(kite.transport, 'raw-websocket');
  kite.disconnect();
});

test('a kite over a WebSocket already open', { timeout: 20_000 }, async () => {
  const ws = new WebSocket(rawUrl);
  await new Promise((resolve, reject) => {
    ws.once('open', resolve);
    ws.once('error', reject);
  });
  const kite = new Kite({ connection: ws });
  assert.equal(await kite.tell('square', 3), 9);
  kite.disconnect();
});

test('the raw websocket is also served at the root, where Kite.js servers had it', { timeout: 20_000 }, async () => {
  const { port } = new URL(server.url);
  const kite = new Kite({ url: `ws://127.0.0.1:${port}`, autoReconnect: false });
  assert.equal(await kite.tell('square', 5), 25);
  kite.disconnect();
});

test('a closed connection fails the calls instead of dialing anything', { timeout: 20_000 }, async () => {
  const ws = new WebSocket(rawUrl);
  await new Promise((resolve) => ws.once('open', resolve));
  ws.close();
  await new Promise((resolve) => ws.once('close', resolve));
  const kite = new Kite({ connection: ws });
  const errors = [];
  kite.on('error', (e) => errors.push(e));
  const e = await rejection(kite.tell('square', 2));
  assert.equal(e.type, 'disconnect');
  assert.ok(errors.some((x) => /given connection is closed/.test(x.message)), JSON.stringify(errors));
  kite.disconnect();
});
