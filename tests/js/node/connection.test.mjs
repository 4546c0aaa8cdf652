// Connections: transport fallback, the raw websocket, reconnection after the kite restarts,
// and token authentication.

import { describe, test } from 'node:test';
import assert from 'node:assert/strict';

import {
  fx,
  Kite,
  TRANSPORTS,
  control,
  nextEvent,
  record,
  rejection,
  token,
  within,
  SUITE_TIMEOUT,
} from './fixtures.mjs';

describe('transports', { timeout: SUITE_TIMEOUT }, () => {
  test('falls back to xhr-streaming when the server has no websocket', async () => {
    const kite = new Kite({ url: fx.noWebsocket, timeout: 10_000 });
    try {
      await within(kite.ready(), 10_000, 'connecting to the noWebsocket kite');
      assert.equal(kite.transport, 'xhr-streaming');
      assert.equal(await kite.tell('square', 6), 36);
      const seen = [];
      assert.equal(await kite.tell('count', 2, (i) => seen.push(i)), 2);
      assert.deepEqual(seen, [1, 2]);
    } finally {
      kite.disconnect();
    }
  });

  test('falls back to xhr-polling when it is the only other transport allowed', async () => {
    const kite = new Kite({ url: fx.noWebsocket, transports: ['websocket', 'xhr-polling'], timeout: 10_000 });
    try {
      assert.equal(await kite.tell('square', 5), 25);
      assert.equal(kite.transport, 'xhr-polling');
    } finally {
      kite.disconnect();
    }
  });

  test('only websocket against a server without one: error event, calls fail with disconnect', async () => {
    const kite = new Kite({ url: fx.noWebsocket, transports: ['websocket'], autoReconnect: false });
    try {
      const failed = nextEvent(kite, 'error');
      const call = kite.tell('square', 2);
      const [err] = await failed;
      assert.equal(err.name, 'KiteError');
      assert.match(err.message, /websocket/);
      const e = await rejection(call);
      assert.equal(e.type, 'disconnect');
      assert.equal(kite.state, 3);
    } finally {
      kite.disconnect();
    }
  });

  test('raw websocket (ws:// URL)', async () => {
    const kite = new Kite({ url: fx.rawWebsocket, api: { greet: (n) => `hello ${n}` } });
    try {
      assert.equal(await kite.tell('square', 5), 25);
      assert.equal(kite.transport, 'raw-websocket');
      const seen = [];
      assert.equal(await kite.tell('count', 3, (i) => seen.push(i)), 3);
      assert.deepEqual(seen, [1, 2, 3]);
      assert.equal(await kite.tell('callPage', 'greet', 'raw'), 'hello raw');
      const e = await rejection(kite.tell('fail', 'raw boom'));
      assert.equal(e.type, 'testError');
      assert.equal(e.code, 'E42');
    } finally {
      kite.disconnect();
    }
  });

  test('new Kite(url) with a bad URL or transport throws a TypeError', () => {
    assert.throws(() => new Kite('ftp://example.com/kite'), TypeError);
    assert.throws(() => new Kite({ url: fx.math, transports: ['carrier-pigeon'] }), TypeError);
    assert.throws(() => new Kite({}), TypeError);
  });
});

// The restart kite is taken down by the control server and comes back on the same port.
describe('reconnection after the kite restarts', { timeout: SUITE_TIMEOUT }, () => {
  for (const transport of TRANSPORTS) {
    test(`over ${transport}: close, then open, and a call made while down is sent`, async () => {
      const kite = new Kite({
        url: fx.restart,
        transports: [transport],
        timeout: 20_000,
        backoff: { initialDelayMs: 100, multiplyFactor: 1.3, maxDelayMs: 400 },
      });
      const events = [];
      kite.on('open', () => events.push('open'));
      kite.on('close', () => events.push('close'));
      try {
        await within(kite.ready(), 10_000, 'connecting');
        assert.equal(await kite.tell('square', 2), 4);
        assert.deepEqual(events, ['open']);

        const closed = nextEvent(kite, 'close');
        const restarted = control('POST', '/restart?down_ms=1000');
        const [info] = await closed;
        assert.equal(typeof info.code, 'number');
        assert.notEqual(kite.state, 1);
        const reopened = nextEvent(kite, 'open', 15_000);

        // Made while the kite is down: queued, sent on the new session.
        const queued = kite.tell('square', 5);
        await restarted;
        await reopened;
        assert.equal(await queued, 25);
        assert.equal(kite.state, 1);
        assert.equal(kite.transport, transport);
        assert.equal(await kite.tell('square', 6), 36);
        assert.deepEqual(events, ['open', 'close', 'open']);
      } finally {
        kite.disconnect();
      }
    });
  }

  // Decided once in kite-core's session, the same on the native client: a connection that
  // dropped with reconnection off has nothing coming, so calls fail at once (they used to wait
  // for a connect() that nothing would make); after disconnect() they still wait for connect().
  test('without autoReconnect, a call after the drop fails at once with disconnect', async () => {
    const kite = new Kite({ url: fx.restart, transports: ['websocket'], autoReconnect: false });
    try {
      await within(kite.ready(), 10_000, 'connecting');
      assert.equal(await kite.tell('square', 2), 4);
      const closed = nextEvent(kite, 'close');
      const restarted = control('POST', '/restart?down_ms=1000');
      await closed;
      const e = await within(rejection(kite.tell('square', 3)), 900, 'the call after the drop');
      assert.equal(e.name, 'KiteError');
      assert.equal(e.type, 'disconnect');
      await restarted;
      const opened = nextEvent(kite, 'open');
      kite.connect();
      await opened;
      assert.equal(await kite.tell('square', 4), 16);
    } finally {
      kite.disconnect();
    }
  });

  test('disconnect(true) connects again', async () => {
    const kite = new Kite({ url: fx.math });
    try {
      await kite.ready();
      const closed = nextEvent(kite, 'close');
      const opened = nextEvent(kite, 'open');
      kite.disconnect(true);
      await closed;
      await opened;
      assert.equal(kite.state, 1);
      assert.equal(await kite.tell('square', 3), 9);
    } finally {
      kite.disconnect();
    }
  });

  test('backOffFailed after maxReconnectAttempts, and the queued calls fail', async () => {
    // Nothing listens on the port of a kite killed through the control server.
    const spawned = JSON.parse(await control('POST', '/kontrol/spawn?name=short-lived'));
    await control('POST', `/kontrol/kill?id=${encodeURIComponent(spawned.id)}`);
    const kite = new Kite({
      url: spawned.url,
      transports: ['websocket'],
      backoff: { initialDelayMs: 20, multiplyFactor: 1, maxDelayMs: 20, maxReconnectAttempts: 3 },
    });
    const errors = record(kite, 'error');
    try {
      const failed = nextEvent(kite, 'backOffFailed');
      const call = kite.tell('square', 2);
      await failed;
      const e = await rejection(call);
      assert.equal(e.type, 'disconnect');
      // The first attempt and three reconnection attempts each reported their failure.
      assert.equal(errors.length, 4);
    } finally {
      kite.disconnect();
    }
  });
});

describe('token authentication (auth kite)', { timeout: SUITE_TIMEOUT }, () => {
  test('a valid token', async () => {
    const t = await token(3600);
    const kite = new Kite({ url: fx.auth, auth: { type: 'token', key: t } });
    try {
      assert.equal(await kite.tell('square', 3), 9);
      const who = await kite.tell('whoami');
      assert.equal(who.username, 'browser-user');
      assert.equal(kite.getToken(), t);
    } finally {
      kite.disconnect();
    }
  });

  test('no credentials: authenticationError', async () => {
    const kite = new Kite({ url: fx.auth });
    try {
      const e = await rejection(kite.tell('square', 3));
      assert.equal(e.name, 'KiteError');
      assert.equal(e.type, 'authenticationError');
      assert.equal(kite.getToken(), undefined);
    } finally {
      kite.disconnect();
    }
  });

  test('a token that is not a JWT: authenticationError', async () => {
    const kite = new Kite({ url: fx.auth, auth: { type: 'token', key: 'not-a-token' } });
    try {
      const e = await rejection(kite.tell('square', 3));
      assert.equal(e.type, 'authenticationError');
    } finally {
      kite.disconnect();
    }
  });

  test('an expired token without a tokenExpired listener: the call fails', async () => {
    const kite = new Kite({ url: fx.auth, auth: { type: 'token', key: await token(-3600) } });
    try {
      const e = await rejection(kite.tell('square', 3));
      assert.equal(e.type, 'authenticationError');
      assert.match(e.message, /token is expired/);
    } finally {
      kite.disconnect();
    }
  });

  test('an expired token: tokenExpired, setToken with a fresh one, the call is sent again', async () => {
    const expired = await token(-3600);
    const kite = new Kite({ url: fx.auth, auth: { type: 'token', key: expired } });
    try {
      // Connected first, so that the call below goes out with the expired token and is refused.
      await kite.ready();
      let expiredEvents = 0;
      const fresh = [];
      kite.on('tokenExpired', async () => {
        expiredEvents += 1;
        const t = await token(3600);
        fresh.push(t);
        kite.setToken(t);
      });
      const tokenSet = nextEvent(kite, 'tokenSet');
      assert.equal(await kite.tell('square', 4), 16);
      const [setTo] = await tokenSet;
      assert.ok(expiredEvents >= 1, 'tokenExpired did not fire');
      assert.equal(setTo, fresh[0]);
      assert.equal(kite.getToken(), fresh[fresh.length - 1]);
      assert.notEqual(kite.getToken(), expired);
      assert.equal((await kite.tell('whoami')).username, 'browser-user');
    } finally {
      kite.disconnect();
    }
  });

  test('tokenExpired fires renewBefore ms before the token expires', async () => {
    const t = await token(3600);
    // Due 3600 s - (3600 s - 1 s) = about 1 s from now.
    const kite = new Kite({ url: fx.auth, auth: { type: 'token', key: t }, renewBefore: 3_599_000 });
    try {
      const started = Date.now();
      await nextEvent(kite, 'tokenExpired', 5_000);
      const after = Date.now() - started;
      assert.ok(after < 3_000, `tokenExpired after ${after} ms`);
      const fresh = await token(7200);
      const set = nextEvent(kite, 'tokenSet');
      kite.setToken(fresh);
      assert.deepEqual(await set, [fresh]);
      assert.equal(await kite.tell('square', 5), 25);
    } finally {
      kite.disconnect();
    }
  });
});
