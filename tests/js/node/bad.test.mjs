// A deliberately broken SockJS server (tests/fixtures/src/bad.rs), over the websocket
// transport: malformed answers, broken frames, unknown callbacks, silence and a close.

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';

import { fx, Kite, nextEvent, rejection, within, TEST_TIMEOUT } from './fixtures.mjs';

let kite;

before(async () => {
  kite = new Kite({ url: fx.bad, transports: ['websocket'], timeout: 10_000, autoReconnect: false });
  await within(kite.ready(), 15_000, 'connecting to the bad server');
});

after(() => {
  kite.disconnect();
});

test('the bad server answers square correctly', { timeout: TEST_TIMEOUT }, async () => {
  assert.equal(kite.transport, 'websocket');
  assert.equal(await kite.tell('square', 4), 16);
});

test('wrongShape: a response that is not {error, result} rejects with invalidResponse', { timeout: TEST_TIMEOUT }, async () => {
  const e = await rejection(kite.tell('wrongShape'));
  assert.equal(e.name, 'KiteError');
  assert.equal(e.type, 'invalidResponse');
});

test('errorString: an error that is a plain string keeps it as the message', { timeout: TEST_TIMEOUT }, async () => {
  const e = await rejection(kite.tell('errorString'));
  assert.equal(e.name, 'KiteError');
  assert.equal(e.message, 'plain string');
});

// What each misbehaviour's error event says.
const expected = {
  brokenJson: /not dnode/,
  brokenFrame: /broken frame/,
  unknownCallback: /987654/,
};

for (const [method, says] of Object.entries(expected)) {
  test(`${method}: an error event, and the call still gets its answer`, { timeout: TEST_TIMEOUT }, async () => {
    const error = nextEvent(kite, 'error', 5_000);
    assert.equal(await kite.tell(method), `after ${method}`);
    const [e] = await error;
    assert.ok(e instanceof Error, 'the error event carries an Error');
    assert.equal(e.name, 'KiteError');
    assert.match(e.message, says);
    assert.equal(kite.state, 1);
  });
}

test('noAnswer: the call times out, and the next call works', { timeout: TEST_TIMEOUT }, async () => {
  const e = await rejection(kite.request('noAnswer', [], { timeout: 300 }));
  assert.equal(e.type, 'timeout');
  assert.equal(await kite.tell('square', 3), 9);
});

test('closeMe: the server closes; the call rejects with disconnect and close fires', { timeout: TEST_TIMEOUT }, async () => {
  const closed = nextEvent(kite, 'close');
  const e = await rejection(kite.tell('closeMe'));
  assert.equal(e.name, 'KiteError');
  assert.equal(e.type, 'disconnect');
  const [info] = await closed;
  assert.equal(info.code, 3000);
  assert.equal(info.reason, 'go away');
  assert.equal(kite.state, 3);
});
