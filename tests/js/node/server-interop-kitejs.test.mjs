// The real Kite.js 1.0.13 client (tests/interop) calling the Node KiteServer over real sockets:
// over SockJS (Kite.js's `transportClass: Kite.transport.SockJS`, url http://…/kite; its
// default pick, websocket, and xhr-polling forced) and over Kite.js's default transport, the
// plain websocket (ws://…/kite/websocket, and ws://…/ where Kite.js's own KiteServer listens).
// Calls, callbacks both ways, errors in Kite.js's shape, and authentication with a kite key of
// the fixtures' Kontrol.

import { test, describe, before, after } from 'node:test';
import assert from 'node:assert/strict';

import { control, within, TEST_TIMEOUT, SUITE_TIMEOUT } from './fixtures.mjs';
import { KiteServer, KiteJS, interopApi, rejection } from './server-kit.mjs';

/** Kite.js's transports: name -> (server URL) -> Kite.js options. */
const TRANSPORTS = {
  'sockjs (its pick)': (url) => ({ url, transportClass: KiteJS.transport.SockJS }),
  'sockjs xhr-polling': (url) => ({
    url,
    transportClass: KiteJS.transport.SockJS,
    transportOptions: { transports: ['xhr-polling'] },
  }),
  'raw websocket at /kite/websocket': (url) => ({ url: `${url.replace(/^http/, 'ws')}/websocket` }),
  'raw websocket at /': (url) => ({ url: url.replace(/^http/, 'ws').replace(/\/kite$/, '/') }),
};

describe('Kite.js 1.0.13 -> Node KiteServer', { timeout: SUITE_TIMEOUT }, () => {
  let server;
  let callerKey;
  const kites = [];

  before(async () => {
    // The server's kite key makes it trust the fixtures' Kontrol (its key and user).
    const serverKey = await control('GET', '/kite-key?username=node-owner');
    callerKey = await control('GET', '/kite-key?username=kitejs-user');
    server = new KiteServer({ name: 'interop', kiteKey: serverKey, logLevel: 'none', api: interopApi() });
    await server.listen({ port: 0, host: '127.0.0.1' });
  });

  after(async () => {
    for (const k of kites) k.disconnect();
    await server?.close();
  });

  /** A connected Kite.js client with `options` on top of the transport's. */
  async function connect(transport, options = {}) {
    const kite = new KiteJS({ autoReconnect: false, logLevel: 0, ...TRANSPORTS[transport](server.url), ...options });
    kites.push(kite);
    await within(new Promise((resolve) => kite.ready(resolve)), 10_000, `Kite.js over ${transport}: ready`);
    return kite;
  }

  for (const transport of Object.keys(TRANSPORTS)) {
    describe(transport, () => {
      test('square, with an array and with a bare value as withArgs', { timeout: TEST_TIMEOUT }, async () => {
        const kite = await connect(transport);
        // sockjs-client says which transport it opened (Kite.js keeps it as `ws`).
        const expected = { 'sockjs (its pick)': 'websocket', 'sockjs xhr-polling': 'xhr-polling' }[transport];
        if (expected) assert.equal(kite.ws.transport, expected);
        else assert.equal(kite.ws.constructor.name, 'WebSocket');
        assert.equal(await kite.tell('square', [4]), 16);
        assert.equal(await kite.tell('square', 5), 25);
        assert.equal(await kite.tell('kite.ping', []), 'pong');
        const many = await Promise.all(Array.from({ length: 20 }, (_, i) => kite.tell('square', [i])));
        assert.deepEqual(many, Array.from({ length: 20 }, (_, i) => i * i));
        kite.disconnect();
      });

      test('callbacks: the server calls a function the client passed, before it answers', { timeout: TEST_TIMEOUT }, async () => {
        const kite = await connect(transport);
        const got = [];
        const result = await kite.tell('callback', [{ value: 42, times: 3, cb: (v) => got.push(v) }]);
        assert.equal(result, 42);
        assert.deepEqual(got, [42, 42, 42]);
        kite.disconnect();
      });

      test("the server calls the client's function with a reply function, the client answers through it", { timeout: TEST_TIMEOUT }, async () => {
        const kite = await connect(transport);
        const asked = [];
        const result = await kite.tell('ask', [
          (name, reply) => {
            asked.push(name);
            reply(`hello ${name}`);
          },
        ]);
        assert.equal(result, 'client said: hello node');
        assert.deepEqual(asked, ['node']);
        kite.disconnect();
      });

      test("the server calls the client's own api through ctx.peer", { timeout: TEST_TIMEOUT }, async () => {
        const kite = await connect(transport, {
          api: { 'client.hello': (name, done) => done(null, `hello ${name}`) },
        });
        assert.equal(await kite.tell('askPeer', []), 'client said: hello node');
        kite.disconnect();
      });

      test("errors come back in Kite.js's shape ({type, message, code})", { timeout: TEST_TIMEOUT }, async () => {
        const kite = await connect(transport);
        const failed = await rejection(kite.tell('fail', []));
        assert.equal(failed.name, 'KiteError');
        assert.deepEqual(
          { type: failed.type, message: failed.message, code: failed.code },
          { type: 'genericError', message: 'node says no', code: 'N1' },
        );
        const unknown = await rejection(kite.tell('nosuch', [1]));
        assert.equal(unknown.type, 'methodNotFound');
        assert.equal(unknown.message, 'Method not found: nosuch');
        const bad = await rejection(kite.tell('square', ['four']));
        assert.equal(bad.type, 'argumentError');
        assert.match(bad.message, /not a number: "four"/);
        // The connection still serves.
        assert.equal(await kite.tell('square', [3]), 9);
        kite.disconnect();
      });

      test('authentication: refused without credentials, a Kontrol kite key accepted', { timeout: TEST_TIMEOUT }, async () => {
        const anonymous = await connect(transport);
        const refused = await rejection(anonymous.tell('whoami', []));
        assert.equal(refused.type, 'authenticationError');
        assert.equal(refused.message, 'No authentication information is provided');
        anonymous.disconnect();

        const keyed = await connect(transport, { auth: { type: 'kiteKey', key: callerKey } });
        assert.equal(await keyed.tell('whoami', []), 'kitejs-user');
        keyed.disconnect();

        const forged = await connect(transport, { auth: { type: 'kiteKey', key: `${callerKey.slice(0, -8)}AAAAAAAA` } });
        const e = await rejection(forged.tell('whoami', []));
        assert.equal(e.type, 'authenticationError');
        forged.disconnect();
      });
    });
  }
});
