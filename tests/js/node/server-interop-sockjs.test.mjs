// The real sockjs-client 1.6.1 (tests/interop) calling the Node KiteServer over each of its
// transports, forced one at a time, with dnode kite messages written out by hand as Kite.js
// puts them on the wire (see tests/interop/sockjs-client-kite.js); and a peer sending
// malformed messages, which harms neither its own session nor anyone else's.

import { test, describe, before, after } from 'node:test';
import assert from 'node:assert/strict';

import { within, TEST_TIMEOUT, SUITE_TIMEOUT, TRANSPORTS } from './fixtures.mjs';
import { KiteServer, SockJS, interopApi } from './server-kit.mjs';

const CALLER = { id: 'ad8ec4c5-80f1-4102-962e-f30aa73f3e33', username: 'sockjs', environment: 'test', name: 'sockjs-client', version: '1.6.1', region: 'test', hostname: 'test' };

/** A Kite.js-shaped request for `method` with `withArgs`, its response callback numbered `id`. */
function request(method, withArgs, id, callbacks = {}) {
  return JSON.stringify({
    arguments: [{ kite: CALLER, withArgs, responseCallback: '[Function]' }],
    callbacks: { [id]: ['0', 'responseCallback'], ...callbacks },
    links: [],
    method,
  });
}

/** A sockjs-client session over `transport` only, with the messages it receives in order. */
async function open(url, transport) {
  const sock = new SockJS(url, null, { transports: [transport] });
  const inbox = [];
  let wake = () => {};
  sock.onmessage = (e) => {
    inbox.push(JSON.parse(e.data));
    wake();
  };
  const closed = new Promise((resolve) => {
    sock.onclose = (e) => resolve({ code: e.code, reason: e.reason });
  });
  await within(
    new Promise((resolve, reject) => {
      sock.onopen = resolve;
      closed.then((e) => reject(new Error(`closed before opening: ${e.code} ${e.reason}`)));
    }),
    10_000,
    `sockjs-client over ${transport}: open`,
  );
  return {
    sock,
    inbox,
    closed,
    send: (text) => sock.send(text),
    /** The messages received up to and including the first one for callback `id`. */
    async until(id, ms = 10_000) {
      const found = () => inbox.findIndex((m) => m.method === id);
      const deadline = Date.now() + ms;
      while (found() < 0) {
        if (Date.now() > deadline) throw new Error(`no message for callback ${id} within ${ms} ms`);
        await Promise.race([new Promise((r) => (wake = r)), closed.then((e) => { throw new Error(`closed: ${e.code} ${e.reason}`); })]);
      }
      return inbox.splice(0, found() + 1);
    },
    async close() {
      sock.close();
      await closed;
    },
  };
}

/** The `{error, result}` a response carries. */
const answer = (m) => m.arguments[0];

describe('sockjs-client 1.6.1 -> Node KiteServer', { timeout: SUITE_TIMEOUT }, () => {
  let server;

  before(async () => {
    server = new KiteServer({ name: 'interop', kiteKey: false, logLevel: 'none', api: interopApi() });
    await server.listen({ port: 0, host: '127.0.0.1' });
  });

  after(() => server?.close());

  for (const transport of TRANSPORTS) {
    test(`${transport}: square, a callback and an error, answered`, { timeout: TEST_TIMEOUT }, async () => {
      const s = await open(server.url, transport);
      assert.equal(s.sock.transport, transport);
      s.send(request('square', [4], 1));
      const [squared] = await s.until(1);
      assert.deepEqual(squared, { method: 1, arguments: [{ error: null, result: 16 }], callbacks: {} });

      // The server calls our function (callback id 3) twice, then answers (id 2).
      s.send(request('callback', [{ value: 7, times: 2, cb: '[Function]' }], 2, { 3: ['0', 'withArgs', '0', 'cb'] }));
      const got = await s.until(2);
      assert.deepEqual(got.map((m) => [m.method, m.arguments]), [[3, [7]], [3, [7]], [2, [{ error: null, result: 7 }]]]);

      s.send(request('fail', [], 4));
      const [failed] = await s.until(4);
      assert.deepEqual(answer(failed).error, { type: 'genericError', message: 'node says no', code: 'N1', id: answer(failed).error.id });
      assert.equal(answer(failed).result, null);
      await s.close();
    });
  }

  test('malformed messages are skipped or answered with a kite error; the session and others go on', { timeout: TEST_TIMEOUT }, async () => {
    const bystander = await open(server.url, 'xhr-streaming');
    const s = await open(server.url, 'websocket');
    const hostile = [
      '{"method":', // broken JSON
      'null',
      '[1,2,3]',
      '{"method":"square","arguments":"not a list","callbacks":{}}',
      '{"method":"square","arguments":[],"callbacks":{"x":"not a path"}}',
      // A callback path to nowhere (the call is answered, the bad path ignored).
      request('square', [3], 10, { 11: ['0', 'no', 'such', 'place'] }),
      // A response to a callback the server never sent.
      '{"method":999,"arguments":[1],"callbacks":{}}',
      // A callback path that is not a list of keys.
      '{"method":"square","arguments":[{"withArgs":[2],"responseCallback":"[Function]"}],"callbacks":{"12":[{"a":1}]}}',
      // Credentials that are not {type, key}: a kite error.
      '{"method":"square","arguments":[{"kite":{},"withArgs":[2],"authentication":"bogus","responseCallback":"[Function]"}],"callbacks":{"16":["0","responseCallback"]}}',
    ];
    for (const m of hostile) s.send(m);
    s.send(request('square', [5], 20));
    const seen = await s.until(20);
    const last = seen.pop();
    assert.deepEqual(answer(last), { error: null, result: 25 });
    // Before it, exactly two answers: the call with the bad path, and the refusal.
    const byId = Object.fromEntries(seen.map((m) => [m.method, answer(m)]));
    assert.deepEqual(Object.keys(byId).sort(), ['10', '16'], JSON.stringify(seen));
    assert.deepEqual(byId[10], { error: null, result: 9 });
    assert.equal(byId[16].result, null);
    assert.equal(byId[16].error.type, 'authenticationError');
    assert.equal(byId[16].error.message, 'malformed authentication: expected an object {type, key}');
    // The other peer is served throughout.
    bystander.send(request('square', [6], 1));
    const [b] = await bystander.until(1);
    assert.deepEqual(answer(b), { error: null, result: 36 });
    await s.close();
    await bystander.close();
  });
});
