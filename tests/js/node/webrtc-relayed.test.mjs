// `kite-wasm/webrtc` under Node, which has no RTCPeerConnection: two kites connect through the
// fixtures' `relay` kite and fall back to sending their dnode messages through it as Go-shaped
// signalling messages (type `data`). Calls and callbacks both ways, order kept, and what a
// peer may not do: be refused, exceed maxPeers, or write into a connection it is not part of.
// (The data channel itself is tested in Chromium: tests/js/browser/webrtc.test.mjs.)

import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import path from 'node:path';
import { pathToFileURL } from 'node:url';

import { fx, pkgDir, Kite, KiteError, rejection, disconnectAll, nextEvent, within, until, TEST_TIMEOUT } from './fixtures.mjs';

const { KiteWebRTC } = await import(pathToFileURL(path.join(pkgDir, 'web/webrtc.js')).href);

const kites = [];
const sides = [];
after(() => {
  for (const s of sides) s.close();
  disconnectAll(kites);
});

let serial = 0;
/** A kite on the relay, wrapped in a KiteWebRTC serving `api`. */
function side(label, api = {}, options = {}) {
  const relay = new Kite({ url: fx.relay, id: `${label}-${process.pid}-${serial++}`, logLevel: 'none' });
  kites.push(relay);
  const rtc = new KiteWebRTC({ relay, api, ...options });
  sides.push(rtc);
  return rtc;
}

async function relayLog() {
  const r = await fetch(`${fx.control}/relay/log`);
  assert.equal(r.status, 200);
  return r.json();
}

test('without RTCPeerConnection, calls and callbacks both ways go through the relay', { timeout: TEST_TIMEOUT }, async () => {
  const marker = `relayed-marker-${process.pid}`;
  const b = side('b', {
    square: (n, done) => done(null, n * n),
    // B calls back the function A gave it, then A's own method over the same connection.
    greet: async (name, cb, _done, ctx) => {
      cb(`hello ${name}`);
      return ctx.kite.id;
    },
  });
  const a = side('a', { 'page.answer': () => 42 });
  await b.ready();
  const incoming = nextEvent(b, 'peer');
  const peer = await within(a.connect(b.id), 10_000, 'connect');
  assert.equal(peer.direct, false);
  assert.equal(peer.initiator, true);
  assert.equal(peer.id, b.id);
  const [theirs] = await incoming;
  assert.equal(theirs.id, a.id);
  assert.equal(theirs.connectionId, peer.connectionId);
  assert.equal(theirs.direct, false);

  assert.equal(await peer.kite.tell('square', 7), 49);
  const heard = [];
  const callerId = await peer.kite.tell('greet', marker, (text) => heard.push(text));
  await until(() => heard.length === 1, 5_000, 'the callback');
  assert.deepEqual(heard, [`hello ${marker}`]);
  // The caller's kite id as B sees it is A's id on the relay.
  assert.equal(callerId, a.id);
  assert.equal(await theirs.kite.tell('page.answer'), 42);

  // Many at once arrive in order and all answer.
  const results = await Promise.all(Array.from({ length: 40 }, (_, i) => peer.kite.tell('square', i)));
  assert.deepEqual(results, Array.from({ length: 40 }, (_, i) => i * i));

  // The relay carried them (the browser test shows a data channel keeps them off it).
  const log = await relayLog();
  assert.ok(log.requests.some((r) => r.args.includes(marker)), 'the marker went through the relay');
  assert.ok(log.requests.some((r) => r.args.includes('"type":"data"')));

  const closed = nextEvent(b, 'close');
  peer.close();
  const [gone] = await closed;
  assert.equal(gone.connectionId, peer.connectionId);
  assert.equal(b.peers.length, 0);
  assert.equal(a.peers.length, 0);
  const e = await rejection(peer.kite.tell('square', 2));
  assert.ok(e instanceof KiteError);
});

test('a refused offer, an unknown peer and maxPeers fail connect() with a KiteError', { timeout: TEST_TIMEOUT }, async () => {
  const picky = side('picky', {}, { accept: () => false });
  const a = side('a', {}, { maxPeers: 1 });
  await picky.ready();
  const refused = await rejection(a.connect(picky.id));
  assert.ok(refused instanceof KiteError);
  assert.equal(refused.type, 'webrtcRefused');

  const unknown = await rejection(a.connect(`nobody-${process.pid}`));
  assert.equal(unknown.message, 'dst not registered');

  const b = side('b');
  const c = side('c', {}, { maxPeers: 1 });
  await Promise.all([b.ready(), c.ready()]);
  const first = await a.connect(b.id);
  const full = await rejection(a.connect(c.id));
  assert.equal(full.type, 'requestLimitError');
  // C is full too once it holds one connection: a third side is refused by it.
  const d = side('d');
  await c.connect(b.id);
  const busy = await rejection(d.connect(c.id));
  assert.equal(busy.type, 'requestLimitError');
  first.close();
});

test('a third kite cannot write into a connection between two others', { timeout: TEST_TIMEOUT }, async () => {
  const calls = [];
  const b = side('b', { record: (x) => calls.push(x) });
  const a = side('a');
  await b.ready();
  const peer = await a.connect(b.id);
  // Mallory knows the connection id and B's id, and sends a call as the next message.
  const mallory = new Kite({ url: fx.relay, id: `mallory-${process.pid}`, logLevel: 'none' });
  kites.push(mallory);
  const forged = JSON.stringify({ method: 'record', arguments: ['forged'], callbacks: {}, links: [] });
  for (const seq of [0, 1, 2]) {
    await mallory.sendWebRTCRequest({
      type: 'data',
      dst: b.id,
      payload: { connectionId: peer.connectionId, seq, msg: forged },
    });
  }
  // Nor can it end the connection, or answer in B's place.
  await mallory.sendWebRTCRequest({ type: 'leave', dst: b.id, payload: { connectionId: peer.connectionId } });
  await mallory.sendWebRTCRequest({ type: 'leave', dst: a.id, payload: { connectionId: peer.connectionId } });
  await peer.kite.tell('record', 'real');
  assert.deepEqual(calls, ['real']);
  assert.equal(a.peers.length, 1);
  assert.equal(b.peers.length, 1);
  // Nonsense addressed to a side is ignored, not thrown at the relay.
  for (const payload of [null, 'x', { connectionId: 7 }, { connectionId: 'x'.repeat(500) }, {}]) {
    await mallory.sendWebRTCRequest({ type: 'offer', dst: b.id, payload });
  }
  const bad = await rejection(
    mallory.sendWebRTCRequest({ type: 'offer', dst: b.id, payload: { connectionId: 'c', sdp: { type: 'answer', sdp: 1 } } }),
  );
  assert.equal(bad.type, 'argumentError');
  // An offer of a direct connection to a side without WebRTC is answered with
  // webrtcUnavailable, which an offering KiteWebRTC takes as the cue to relay.
  const direct = await rejection(
    mallory.sendWebRTCRequest({ type: 'offer', dst: b.id, payload: { connectionId: 'd', sdp: { type: 'offer', sdp: 'v=0' } } }),
  );
  assert.equal(direct.type, 'webrtcUnavailable');
  assert.equal(b.peers.length, 1);
  peer.close();
});

test('a side whose relay connection came back is reachable again', { timeout: TEST_TIMEOUT }, async () => {
  const b = side('b', { square: (n) => n * n });
  const a = side('a');
  await b.ready();
  b.relay.disconnect(true);
  await nextEvent(b.relay, 'open');
  // Reachable once the re-announcement went through: connect until it does.
  const peer = await until(() => a.connect(b.id).catch(() => null), 10_000, 'reachable again');
  assert.equal(await peer.kite.tell('square', 5), 25);
  peer.close();
});

test('the options are checked', () => {
  const relay = new Kite({ url: fx.relay, autoConnect: false, logLevel: 'none' });
  kites.push(relay);
  assert.throws(() => new KiteWebRTC({}), TypeError);
  assert.throws(() => new KiteWebRTC({ relay, maxpeers: 3 }), /unknown option maxpeers/);
  const rtc = new KiteWebRTC({ relay });
  sides.push(rtc);
  assert.equal(rtc.id, relay.getKiteInfo().id);
  assert.equal(rtc.relay, relay);
  assert.deepEqual(rtc.peers, []);
});
