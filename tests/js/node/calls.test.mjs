// Calls over each SockJS transport: results, callbacks both ways, errors, the page's own
// methods called by the native kite, per-call timeouts and argument handling.

import { describe, test, before, after } from 'node:test';
import assert from 'node:assert/strict';

import {
  fx,
  Kite,
  TRANSPORTS,
  rejection,
  record,
  nextEvent,
  within,
  TEST_TIMEOUT,
  SUITE_TIMEOUT,
} from './fixtures.mjs';

/** The methods this side serves; the math kite's `callPage(method, ...args)` calls them. */
const pageApi = {
  // Answers with its return value.
  hello: (name) => `hi ${name}`,
  // Answers with the value of the promise it returns.
  later: (a, b) => new Promise((resolve) => setTimeout(() => resolve({ sum: a + b }), 20)),
  // Declares the callback parameter and returns nothing: answers through the callback.
  viaCallback: (a, b, callback) => {
    setTimeout(() => callback(null, a * b), 20);
  },
  // Answers an error through the callback.
  callbackError: (callback) => {
    setTimeout(() => callback({ type: 'pageError', message: 'refused by callback', code: 'P2' }), 0);
  },
  // Throws: the error goes back to the caller.
  boom: () => {
    throw Object.assign(new Error('page broke'), { type: 'pageError', code: 'P1' });
  },
  // Rejects.
  rejects: async () => {
    throw Object.assign(new Error('page rejected'), { type: 'pageError', code: 'P3' });
  },
  // Answers its argument.
  identity: (x) => x,
  // Shows what the page method receives after its arguments.
  meta: (...args) => {
    const [callback, meta] = args.slice(-2);
    return {
      argc: args.length,
      callbackIsFunction: typeof callback === 'function',
      method: meta && meta.method,
      callerName: meta && meta.kite && meta.kite.name,
      callerUser: meta && meta.kite && meta.kite.username,
    };
  },
};

/**
 * A string of just under 1 MiB of UTF-8 mixing ASCII, accents and astral characters (emoji).
 * The fixture kites take dnode messages of at most 1 MiB (kite-native's default
 * max_message_size), envelope included, so the string leaves 4 KiB for the envelope.
 */
function bigString(bytes = (1 << 20) - 4096) {
  const chunk = 'kite-wasm é ü 日本 🚀👍🏽 0123456789 ';
  const chunkBytes = Buffer.byteLength(chunk);
  let s = chunk.repeat(Math.floor(bytes / chunkBytes));
  s += 'x'.repeat(bytes - Buffer.byteLength(s));
  return s;
}

for (const transport of TRANSPORTS) {
  describe(`calls over ${transport}`, { timeout: SUITE_TIMEOUT }, () => {
    let kite;
    let errors;

    before(async () => {
      kite = new Kite({ url: fx.math, transports: [transport], timeout: 15_000, api: pageApi });
      errors = record(kite, 'error');
      await within(kite.ready(), 15_000, `connecting over ${transport}`);
    });

    after(() => {
      kite.disconnect();
    });

    test('connects with the transport asked for', () => {
      assert.equal(kite.transport, transport);
      assert.equal(kite.state, 1);
      assert.equal(kite.url, fx.math);
    });

    test('square', async () => {
      assert.equal(await kite.tell('square', 4), 16);
      assert.equal(await kite.tell('square', -1.5), 2.25);
      assert.equal(await kite.request('square', [7]), 49);
    });

    test('concurrent calls each get their own answer', async () => {
      const ns = Array.from({ length: 20 }, (_, i) => i);
      const results = await Promise.all(ns.map((n) => kite.tell('square', n)));
      assert.deepEqual(results, ns.map((n) => n * n));
    });

    test('kite.ping', async () => {
      assert.equal(await kite.ping(), 'pong');
    });

    test('count calls our callback n times, in order, before answering', async () => {
      const seen = [];
      const result = await kite.tell('count', 5, (i) => seen.push(i));
      assert.equal(result, 5);
      assert.deepEqual(seen, [1, 2, 3, 4, 5]);
    });

    test('adder returns a function of the native kite that we call', async () => {
      const add = await kite.tell('adder', 10);
      assert.equal(typeof add, 'function');
      const sums = await Promise.all([5, -10, 0.5].map((x) => new Promise((resolve) => add(x, resolve))));
      assert.deepEqual(sums, [15, 0, 10.5]);
    });

    test('callCallback calls our callback with the other arguments', async () => {
      let got;
      const called = new Promise((resolve) => {
        got = resolve;
      });
      const result = await kite.tell('callCallback', (...args) => got(args), 'a', { b: [1, 2] }, null);
      assert.equal(result, null);
      assert.deepEqual(await called, ['a', { b: [1, 2] }, null]);
    });

    test('a callback inside an object is callable by the peer', async () => {
      // echo forwards the function: what comes back calls our function through the native kite.
      let resolve;
      const called = new Promise((r) => {
        resolve = r;
      });
      const back = await kite.tell('echo', { nested: { fn: (x) => resolve(x) }, n: 1 });
      assert.equal(back.n, 1);
      assert.equal(typeof back.nested.fn, 'function');
      back.nested.fn('through two hops');
      assert.equal(await called, 'through two hops');
    });

    test('one function of the native kite in two places of an answer is a function at both', async () => {
      const pair = await kite.tell('adderTwice', 100);
      assert.equal(typeof pair.add, 'function');
      assert.equal(typeof pair.again[0], 'function');
      const sums = await Promise.all([
        new Promise((resolve) => pair.add(1, resolve)),
        new Promise((resolve) => pair.again[0](2, resolve)),
      ]);
      assert.deepEqual(sums, [101, 102]);
    });

    test('values nested as deep as Go kites accept come back intact, functions inside too', async () => {
      // A Go kite decodes up to 10,000 levels in a message; the value sits a few levels in.
      const depth = 9_000;
      let resolve;
      const called = new Promise((r) => {
        resolve = r;
      });
      let deep = { leaf: 'bottom', fn: (x) => resolve(x) };
      for (let i = 0; i < depth; i++) deep = [deep];
      const bottom = (v) => {
        let d = 0;
        while (Array.isArray(v)) {
          v = v[0];
          d += 1;
        }
        return [d, v];
      };
      // Through the native kite, and through the native kite to this page's method and back.
      for (const back of [await kite.tell('echo', deep), await kite.tell('callPage', 'identity', deep)]) {
        const [d, leaf] = bottom(back);
        assert.equal(d, depth);
        assert.equal(leaf.leaf, 'bottom');
        assert.equal(typeof leaf.fn, 'function');
      }
      const [, leaf] = bottom(await kite.tell('echo', deep));
      leaf.fn('from the bottom');
      assert.equal(await called, 'from the bottom');
    });

    test('fail rejects with a KiteError carrying type, message and code', async () => {
      const e = await rejection(kite.tell('fail', 'boom'));
      assert.ok(e instanceof Error, 'an Error');
      assert.equal(e.name, 'KiteError');
      assert.equal(e.type, 'testError');
      assert.equal(e.message, 'boom');
      assert.equal(e.code, 'E42');
      assert.equal(typeof e.id, 'string');
    });

    test('an unknown method rejects with methodNotFound', async () => {
      const e = await rejection(kite.tell('noSuchMethod', 1));
      assert.equal(e.name, 'KiteError');
      assert.equal(e.type, 'methodNotFound');
      assert.match(e.message, /noSuchMethod/);
    });

    test('callPage: a page method answering with its return value', async () => {
      assert.equal(await kite.tell('callPage', 'hello', 'bob'), 'hi bob');
    });

    test('callPage: a page method answering with a promise', async () => {
      assert.deepEqual(await kite.tell('callPage', 'later', 2, 3), { sum: 5 });
    });

    test('callPage: a page method answering through its callback', async () => {
      assert.equal(await kite.tell('callPage', 'viaCallback', 6, 7), 42);
    });

    test('callPage: the page method gets a callback and {kite, authentication, method}', async () => {
      const m = await kite.tell('callPage', 'meta', 'x', 'y');
      assert.deepEqual(m, {
        argc: 4,
        callbackIsFunction: true,
        method: 'meta',
        callerName: 'math',
        callerUser: 'fixture',
      });
    });

    test('callPage: an error thrown by the page method reaches the caller', async () => {
      const e = await rejection(kite.tell('callPage', 'boom'));
      assert.equal(e.name, 'KiteError');
      assert.equal(e.type, 'pageError');
      assert.equal(e.message, 'page broke');
      assert.equal(e.code, 'P1');
    });

    test('callPage: a rejected promise of the page method reaches the caller', async () => {
      const e = await rejection(kite.tell('callPage', 'rejects'));
      assert.equal(e.type, 'pageError');
      assert.equal(e.message, 'page rejected');
      assert.equal(e.code, 'P3');
    });

    test('callPage: an error passed to the callback reaches the caller', async () => {
      const e = await rejection(kite.tell('callPage', 'callbackError'));
      assert.equal(e.type, 'pageError');
      assert.equal(e.message, 'refused by callback');
      assert.equal(e.code, 'P2');
    });

    test('callPage: a method the page does not have is methodNotFound', async () => {
      const e = await rejection(kite.tell('callPage', 'notOnThePage'));
      assert.equal(e.type, 'methodNotFound');
      assert.match(e.message, /notOnThePage/);
    });

    test('handle() adds a page method later', async () => {
      kite.handle('added', (x) => `added ${x}`);
      assert.equal(await kite.tell('callPage', 'added', 1), 'added 1');
    });

    test('a per-call timeout rejects, and the connection stays usable', async () => {
      const started = Date.now();
      const e = await rejection(kite.request('slow', [1500], { timeout: 200 }));
      const took = Date.now() - started;
      assert.equal(e.name, 'KiteError');
      assert.equal(e.type, 'timeout');
      assert.ok(took >= 150 && took < 1400, `timed out after ${took} ms`);
      assert.equal(kite.state, 1);
      assert.equal(await kite.tell('square', 3), 9);
      // A call with a longer timeout on the same connection still gets its answer.
      assert.equal(await kite.request('slow', [50], { timeout: 5000 }), 50);
    });

    test('the late answer to a timed-out call raises no error event', async () => {
      const before = errors.length;
      const e = await rejection(kite.request('slow', [300], { timeout: 100 }));
      assert.equal(e.type, 'timeout');
      // Answered after the late answer of slow(300): messages arrive in order on a session.
      assert.equal(await kite.request('slow', [700]), 700);
      assert.deepEqual(
        errors.slice(before).map((x) => x.message),
        [],
        'the late answer was reported as an error',
      );
    });

    test('no arguments', async () => {
      assert.deepEqual(await kite.tell('echoArgs'), []);
      assert.deepEqual(await kite.request('echoArgs', []), []);
      assert.deepEqual(await kite.request('echoArgs'), []);
    });

    test('many arguments', async () => {
      const args = Array.from({ length: 50 }, (_, i) => (i % 2 ? `s${i}` : i));
      assert.deepEqual(await kite.tell('echoArgs', ...args), args);
    });

    test('undefined, null, NaN and infinities', async () => {
      assert.deepEqual(
        await kite.tell('echoArgs', undefined, null, NaN, Infinity, -Infinity, 0, false, ''),
        [null, null, null, null, null, 0, false, ''],
      );
      // Properties holding undefined are left out, as JSON.stringify does.
      assert.deepEqual(await kite.tell('echo', { a: undefined, b: null, c: [undefined, NaN] }), {
        b: null,
        c: [null, null],
      });
      assert.equal(await kite.tell('echo', null), null);
    });

    test('nested objects with unicode and emoji', async () => {
      const value = {
        name: 'Zoë 🚀',
        'clé 🔑': { list: [1, 'ü', { deep: '日本語 👍🏽', empty: {}, none: [] }], n: -0.125 },
        big: 2 ** 53,
        quote: 'a "quoted" \\ back\nslash\t\u0000\u2028',
      };
      assert.deepEqual(await kite.tell('echo', value), value);
    });

    test('a 1 MiB string round trip via echo', async () => {
      const s = bigString();
      assert.equal(Buffer.byteLength(s), (1 << 20) - 4096);
      const back = await kite.request('echo', [s], { timeout: 30_000 });
      assert.equal(typeof back, 'string');
      assert.equal(back.length, s.length);
      assert.ok(back === s, 'the echoed string differs');
      // And once more, as a property of an object, with a function beside it.
      let resolve;
      const called = new Promise((r) => {
        resolve = r;
      });
      const obj = await kite.request('echo', [{ s: s.slice(0, 500_000), f: resolve }], { timeout: 30_000 });
      assert.ok(obj.s === s.slice(0, 500_000));
      obj.f('ok');
      assert.equal(await called, 'ok');
    });

    test('a message over the server\'s 1 MiB limit fails the call, and the kite reconnects', async () => {
      const k = new Kite({
        url: fx.math,
        transports: [transport],
        timeout: 15_000,
        backoff: { initialDelayMs: 50, maxDelayMs: 200 },
      });
      try {
        await k.ready();
        const closed = nextEvent(k, 'close');
        const e = await rejection(k.tell('echo', 'x'.repeat(1 << 20)));
        assert.equal(e.name, 'KiteError');
        assert.equal(e.type, 'disconnect');
        await closed;
        // The next call waits for the new session and succeeds.
        assert.equal(await k.tell('square', 11), 121);
        assert.equal(k.state, 1);
      } finally {
        k.disconnect();
      }
    });

    test('no error events during the normal calls', () => {
      // Late answers to the timed-out calls are the business of the test above.
      const late = /unknown or already answered/;
      assert.deepEqual(
        errors.map((e) => e.message).filter((m) => !late.test(m)),
        [],
      );
    });
  });
}

test('disconnect rejects calls in flight; calls made while disconnected wait for connect()', { timeout: TEST_TIMEOUT }, async () => {
  const kite = new Kite({ url: fx.math, autoReconnect: false });
  try {
    await kite.ready();
    const closed = nextEvent(kite, 'close');
    const inFlight = kite.tell('slow', 2000);
    // Let the call leave before disconnecting.
    await kite.tell('square', 2);
    kite.disconnect();
    const [info] = await closed;
    assert.equal(typeof info.code, 'number');
    assert.equal(typeof info.reason, 'string');
    const e = await rejection(inFlight);
    assert.equal(e.name, 'KiteError');
    assert.equal(e.type, 'disconnect');
    assert.equal(kite.state, 3);
    assert.ok(kite.transport === null || kite.transport === undefined, `transport ${kite.transport}`);
    // Not connected and not reconnecting: the call is kept until connect().
    const later = kite.tell('square', 12);
    const opened = nextEvent(kite, 'open');
    kite.connect();
    await opened;
    assert.equal(await later, 144);
  } finally {
    kite.disconnect();
  }
});

test('with autoConnect false, calls wait until connect()', { timeout: TEST_TIMEOUT }, async () => {
  const kite = new Kite({ url: fx.math, autoConnect: false });
  try {
    assert.equal(kite.state, 0);
    let settled = false;
    const call = kite.tell('square', 9).finally(() => {
      settled = true;
    });
    // Nothing to wait for: give a wrongly eager kite the time to connect and answer.
    await new Promise((resolve) => setTimeout(resolve, 300));
    assert.equal(settled, false, 'the call settled before connect()');
    assert.equal(kite.state, 0);
    kite.connect();
    assert.equal(await call, 81);
    assert.equal(kite.state, 1);
  } finally {
    kite.disconnect();
  }
});

test('a function of the peer called after its connection ended throws a disconnect KiteError', { timeout: TEST_TIMEOUT }, async () => {
  const kite = new Kite({ url: fx.math, autoReconnect: false });
  const add = await kite.tell('adder', 1);
  kite.disconnect();
  assert.throws(
    () => add(1, () => {}),
    (e) => e.name === 'KiteError' && e.type === 'disconnect',
  );
});
