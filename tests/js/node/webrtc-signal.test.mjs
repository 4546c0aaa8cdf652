// WebRTC signalling between two of the package's kites through a relay kite (the fixtures'
// `math` kite runs with `Config::use_webrtc`): `Kite#sendWebRTCRequest` (Go's
// `SendWebRTCRequest`), the relay setting `src` to the sender's kite id, and the receiving
// kite's own `kite.handleWebRTC` method getting Go's message shape.

import { test, after } from 'node:test';
import assert from 'node:assert/strict';

import { fx, Kite, KiteError, rejection, disconnectAll, within, TEST_TIMEOUT } from './fixtures.mjs';

const kites = [];
after(() => disconnectAll(kites));

/** A kite with id `id` connected to the relay; its signals arrive in order through `next()`. */
function peer(id) {
  const got = [];
  const waiting = [];
  const kite = new Kite({
    url: fx.math,
    id,
    logLevel: 'none',
    api: {
      'kite.handleWebRTC': (message) => {
        const w = waiting.shift();
        if (w) w(message);
        else got.push(message);
      },
    },
  });
  kites.push(kite);
  const next = () =>
    within(got.length ? Promise.resolve(got.shift()) : new Promise((r) => waiting.push(r)), 10_000, `a signal for ${id}`);
  return { kite, next, got };
}

test('sendWebRTCRequest: offer and answer through the relay, src set by the relay', { timeout: TEST_TIMEOUT }, async () => {
  const a = peer(`page-a-${process.pid}`);
  const b = peer(`page-b-${process.pid}`);
  // Nobody has heard from B yet.
  const unknown = await rejection(a.kite.sendWebRTCRequest({ type: 'offer', dst: b.kite.getKiteInfo().id }));
  assert.ok(unknown instanceof KiteError);
  assert.equal(unknown.message, 'dst not registered');
  // B signals once (to nobody: Go's error), which makes it reachable.
  const noDst = await rejection(b.kite.sendWebRTCRequest({ type: 'leave' }));
  assert.equal(noDst.message, 'dst not set');

  const sdp = { type: 'offer', sdp: 'v=0\r\no=- 1 1 IN IP4 127.0.0.1' };
  assert.equal(
    await a.kite.sendWebRTCRequest({ type: 'offer', src: 'forged', dst: b.kite.getKiteInfo().id, payload: { sdp, connectionId: 'c1' } }),
    undefined,
  );
  const offer = await b.next();
  assert.deepEqual(offer, {
    type: 'offer',
    src: a.kite.getKiteInfo().id,
    dst: b.kite.getKiteInfo().id,
    payload: { sdp, connectionId: 'c1' },
  });
  await b.kite.sendWebRTCRequest({ type: 'answer', dst: offer.src, payload: { sdp: { type: 'answer', sdp: 'v=0' } } });
  const answer = await a.next();
  assert.equal(answer.type, 'answer');
  assert.equal(answer.src, b.kite.getKiteInfo().id);
  assert.deepEqual(a.got, []);
  a.kite.disconnect();
  b.kite.disconnect();
});

test('a page without a kite.handleWebRTC method fails the sender with methodNotFound', { timeout: TEST_TIMEOUT }, async () => {
  const quiet = new Kite({ url: fx.math, id: `quiet-${process.pid}`, logLevel: 'none' });
  const loud = peer(`loud-${process.pid}`);
  kites.push(quiet);
  await rejection(quiet.sendWebRTCRequest({ type: 'leave' }));
  const e = await rejection(loud.kite.sendWebRTCRequest({ type: 'offer', dst: `quiet-${process.pid}` }));
  assert.ok(e instanceof KiteError);
  assert.equal(e.type, 'methodNotFound');
  quiet.disconnect();
  loud.kite.disconnect();
});
