// The Node KiteServer registered with the fixtures' (native) Kontrol, with a kite key the
// Kontrol signed (its Kontrol URL, key and user come from the key's claims), and found there by
// a native kite (getKites, through the control server's `POST /kontrol/find-call`) that dials
// it with the token Kontrol gave and calls it; once the server closes, Kontrol stops handing it
// out and it is never called again. Kontrol does not drop a registration when the kite's
// connection to it ends: it hands the kite out until the registration expires (the fixtures'
// Kontrol: heartbeats every 1 s, registrations live 5 s past the last one), and until then
// the native caller's dial of the closed server fails.

import { test, describe, before, after } from 'node:test';
import assert from 'node:assert/strict';

import { fx, control, until, within, TEST_TIMEOUT, SUITE_TIMEOUT } from './fixtures.mjs';
import { KiteServer, interopApi } from './server-kit.mjs';

const OWNER = 'node-registrant';
const NAME = 'node-registered';

/** A native kite's getKites for OWNER/NAME, then `method(args)` on the first kite found. */
async function findAndCall(method, args, transport = 'websocket') {
  const q = new URLSearchParams({ username: OWNER, name: NAME, method, transport });
  return JSON.parse(await control('POST', `/kontrol/find-call?${q}`, args));
}

describe('Node KiteServer registered with Kontrol, found by a native kite', { timeout: SUITE_TIMEOUT }, () => {
  let server;

  before(async () => {
    server = new KiteServer({
      name: NAME,
      kiteKey: await control('GET', `/kite-key?username=${OWNER}`),
      logLevel: 'none',
      // Every method wants credentials: the native caller has only Kontrol's token.
      api: interopApi({ auth: true }),
    });
    await server.listen({ port: 0, host: '127.0.0.1' });
  });

  after(() => server?.close());

  test('register() goes to the kite key\'s Kontrol', { timeout: TEST_TIMEOUT }, async () => {
    assert.equal(server.kontrolURL, fx.kontrol, "the Kontrol URL is the kite key's");
    assert.equal(server.kite.username, OWNER, "the username is the kite key's");
    const registered = await server.register();
    assert.equal(registered.url, server.url);
  });

  for (const transport of ['websocket', 'xhr-polling']) {
    test(`a native kite finds it and calls it with Kontrol's token (${transport})`, { timeout: TEST_TIMEOUT }, async () => {
      const out = await findAndCall('square', [4], transport);
      assert.equal(out.found, 1, JSON.stringify(out));
      assert.equal(out.url, server.url);
      assert.equal(out.result, 16, JSON.stringify(out));
      // Authenticated as the finder (Kontrol's token names the kite that asked for it).
      const who = await findAndCall('whoami', [], transport);
      assert.equal(who.result, 'fixture', JSON.stringify(who));
      const asked = await findAndCall('ask', ['[Function]'], transport);
      assert.equal(asked.result, 'client said: native', JSON.stringify(asked));
    });
  }

  test('after Kontrol restarts (losing its registrations), it registers again and is found', { timeout: TEST_TIMEOUT }, async () => {
    const infos = [];
    const again = new Promise((resolve) => {
      server.on('info', (text) => {
        infos.push(text);
        if (/registered again/.test(text)) resolve(text);
      });
    });
    const errors = [];
    server.on('error', (e) => errors.push(e));
    // Kontrol goes down and forgets every registration of OWNER.
    assert.deepEqual(JSON.parse(await control('POST', `/kontrol/restart?down_ms=300&forget=${OWNER}`)), { ok: true });
    assert.match(await within(again, 20_000, 'the server registering again'), /registered again to Kontrol with URL: /);
    const out = await findAndCall('square', [5]);
    assert.equal(out.found, 1, JSON.stringify(out));
    assert.equal(out.url, server.url);
    assert.equal(out.result, 25, JSON.stringify(out));
    assert.deepEqual(errors, []);
  });

  test('once closed, it is no longer found, and never called', { timeout: TEST_TIMEOUT }, async () => {
    let served = 0;
    server.on('connection', () => served++);
    await server.close();
    const gone = await until(
      async () => {
        const out = await findAndCall('square', [4]);
        // Until Kontrol notices, the kite it hands out cannot be reached.
        assert.equal(out.result, undefined, `a closed server answered: ${JSON.stringify(out)}`);
        return out.found === 0 ? out : null;
      },
      15_000,
      'Kontrol forgets the closed server',
    );
    assert.deepEqual(gone, { found: 0 });
    assert.equal(served, 0);
  });
});
