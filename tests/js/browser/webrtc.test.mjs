// `kite-wasm/webrtc` in headless Chromium: two pages, each with kites on the fixtures' `relay`
// kite (a native kite with `use_webrtc` that logs every request it gets), connect over an
// RTCDataChannel (host candidates on loopback) and call each other — callbacks included —
// while the relay's log shows none of those calls passed through it. The same pages relayed
// (`direct: false`, and after ICE fails) show the calls in the relay's log, so that check can
// fail.

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';

import { fx, serveStatic, launchChromium } from './kit.mjs';

let server;
let browser;
let pageA;
let pageB;
const pageErrors = [];

async function relayLog() {
  const r = await fetch(`${fx.control}/relay/log`);
  assert.equal(r.status, 200);
  return r.json();
}

/** The relay's requests after the first `from`. */
async function requestsSince(from) {
  const log = await relayLog();
  assert.ok(log.total - from <= log.requests.length, 'the relay log kept every request of the test');
  return log.requests.slice(log.requests.length - (log.total - from));
}

/** Runs `rtcTest[fn](...args)` in `page`, within 20 s. */
function on(page, fn, ...args) {
  let timer;
  const deadline = new Promise((_, reject) => {
    timer = setTimeout(() => reject(new Error(`${fn}: no answer from the page within 20 s`)), 20_000);
  });
  return Promise.race([page.evaluate(([f, a]) => window.rtcTest[f](...a), [fn, args]), deadline]).finally(() =>
    clearTimeout(timer),
  );
}

async function openPage(context, base) {
  const page = await context.newPage();
  page.on('pageerror', (e) => pageErrors.push(String(e)));
  page.on('console', (m) => {
    if (m.type() === 'error') pageErrors.push(m.text());
  });
  await page.goto(`${base}/webrtc.html`);
  await page.waitForFunction(() => window.rtcReady !== undefined);
  assert.equal(await page.evaluate(() => window.rtcReady), true, await page.evaluate(() => window.rtcLoadError));
  return page;
}

before(async () => {
  server = await serveStatic(['webrtc.html', 'webrtc-page.js']);
  const base = `http://127.0.0.1:${server.address().port}`;
  browser = await launchChromium();
  const context = await browser.newContext();
  pageA = await openPage(context, base);
  pageB = await openPage(context, base);
});

after(async () => {
  if (browser) await browser.close();
  if (server) await new Promise((resolve) => server.close(resolve));
});

test('page A calls page B over a data channel, B calls back; the relay sees none of it', async () => {
  const b = await on(pageB, 'start', 'b', fx.relay);
  await on(pageA, 'start', 'a', fx.relay);
  const peer = await on(pageA, 'connect', 'a', b);
  assert.equal(peer.direct, true, 'a data channel opened');
  assert.equal(peer.id, b);
  const [accepted] = await on(pageB, 'accepted', 'b');
  assert.equal(accepted.direct, true);
  assert.equal(accepted.connectionId, peer.connectionId);

  const from = (await relayLog()).total;
  const marker = `over-the-channel-${process.pid}-${Date.now()}`;
  const { results, heard } = await on(pageA, 'squares', 'a', 20);
  assert.deepEqual(results, Array.from({ length: 20 }, (_, i) => i * i));
  assert.deepEqual(heard, Array.from({ length: 20 }, (_, i) => `b squared ${i}`));
  assert.equal(await on(pageA, 'call', 'a', 'echo', marker), marker);
  // The other way: B calls the page A's methods over the connection A made.
  assert.equal(await on(pageB, 'callBack', 'b', 'page.name'), 'a');

  const since = await requestsSince(from);
  assert.deepEqual(
    since.filter((r) => r.method !== 'kite.handleWebRTC' || !r.args.includes('"type":"candidate"')),
    [],
    'nothing but late ICE candidates reached the relay while the pages called each other',
  );
  assert.ok(!since.some((r) => r.args.includes(marker)));
});

test('relayed (direct: false), the same calls do pass through the relay', async () => {
  const b = await on(pageB, 'start', 'b2', fx.relay);
  await on(pageA, 'start', 'a2', fx.relay, { direct: false });
  const peer = await on(pageA, 'connect', 'a2', b);
  assert.equal(peer.direct, false);
  const from = (await relayLog()).total;
  const marker = `through-the-relay-${process.pid}-${Date.now()}`;
  assert.equal(await on(pageA, 'call', 'a2', 'echo', marker), marker);
  const { heard } = await on(pageA, 'squares', 'a2', 3);
  assert.deepEqual(heard, ['b2 squared 0', 'b2 squared 1', 'b2 squared 2']);
  const since = await requestsSince(from);
  assert.ok(since.some((r) => r.args.includes(marker)), 'the relay carried the call');
  assert.ok(since.every((r) => r.args.includes('"type":"data"')));
});

test('when ICE fails, the connection falls back to the relay after the timeout', async () => {
  const b = await on(pageB, 'start', 'b3', fx.relay, { deaf: true, timeout: 2_000 });
  await on(pageA, 'start', 'a3', fx.relay, { deaf: true, timeout: 2_000 });
  const peer = await on(pageA, 'connect', 'a3', b);
  assert.equal(peer.direct, false);
  const { results, heard } = await on(pageA, 'squares', 'a3', 2);
  assert.deepEqual(results, [0, 1]);
  assert.deepEqual(heard, ['b3 squared 0', 'b3 squared 1']);
  assert.equal(await on(pageB, 'callBack', 'b3', 'page.name'), 'a3');
});

test('the pages logged no errors', async () => {
  for (const name of ['a', 'a2', 'a3']) await on(pageA, 'close', name);
  for (const name of ['b', 'b2', 'b3']) await on(pageB, 'close', name);
  assert.deepEqual(pageErrors, []);
});
