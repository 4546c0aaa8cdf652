// The npm package's browser build (kite-wasm/pkg/web) in headless Chromium, driven by
// Playwright: a static page imports it as an ES module, runs checks against the fixture kites
// and shows the results, which end up in artifacts/page.png.

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs/promises';
import path from 'node:path';

import { fx, artifacts, serveStatic, launchChromium } from './kit.mjs';

let server;
let browser;
let page;
let base;
const pageErrors = [];
const consoleErrors = [];
let screenshotTaken = false;

async function screenshot() {
  await fs.mkdir(artifacts, { recursive: true });
  const file = path.join(artifacts, 'page.png');
  await page.screenshot({ path: file, fullPage: true });
  screenshotTaken = true;
  return file;
}

/** Runs check `name` in the page; fails the test with the page's error if it threw. */
async function run(name, ...args) {
  let timer;
  const deadline = new Promise((_, reject) => {
    timer = setTimeout(() => reject(new Error(`${name}: no result from the page within 20 s`)), 20_000);
  });
  const r = await Promise.race([
    page.evaluate(([n, f, a]) => window.kiteTests.run(n, f, ...a), [name, fx, args]),
    deadline,
  ]).finally(() => clearTimeout(timer));
  assert.ok(r.ok, `${name} threw in the page: ${JSON.stringify(r.error)}`);
  return r.value;
}

before(async () => {
  server = await serveStatic(['page.html', 'page.js']);
  base = `http://127.0.0.1:${server.address().port}`;
  browser = await launchChromium();
  const context = await browser.newContext({ viewport: { width: 1200, height: 560 } });
  page = await context.newPage();
  page.setDefaultTimeout(20_000);
  page.on('pageerror', (e) => pageErrors.push(String(e)));
  page.on('console', (m) => {
    if (m.type() === 'error') consoleErrors.push(m.text());
  });
});

after(async () => {
  try {
    if (page && !screenshotTaken) await screenshot().catch(() => {});
  } finally {
    if (browser) await browser.close();
    if (server) await new Promise((resolve) => server.close(resolve));
  }
});

test('the page loads the package (ES module + wasm) with the right content types', async () => {
  const wasm = await fetch(`${base}/pkg/web/kite_bg.wasm`);
  assert.equal(wasm.status, 200);
  assert.equal(wasm.headers.get('content-type'), 'application/wasm');
  await wasm.arrayBuffer();
  const js = await fetch(`${base}/pkg/web/kite.js`);
  assert.match(js.headers.get('content-type'), /^text\/javascript/);
  await js.text();
  assert.equal((await fetch(`${base}/../../../Cargo.toml`)).status, 404);

  const response = await page.goto(`${base}/page.html`);
  assert.equal(response.status(), 200);
  await page.waitForFunction(() => window.kiteReady !== undefined);
  const ready = await page.evaluate(() => window.kiteReady);
  assert.equal(ready, true, await page.evaluate(() => window.kiteLoadError));
  assert.match(await page.textContent('#status'), /module loaded/);
});

for (const transport of ['websocket', 'xhr-streaming', 'xhr-polling']) {
  test(`square over ${transport}`, async () => {
    const r = await run('square', transport);
    assert.deepEqual(r, { result: 16, transport, state: 1 });
  });
}

test('callbacks: count calls the page back in order', async () => {
  assert.deepEqual(await run('count'), { result: 3, seen: [1, 2, 3] });
});

test("the native kite calls the page's methods (callPage)", async () => {
  assert.deepEqual(await run('callPage'), { hello: 'hi kite from Chromium', later: 42 });
});

test('falls back to xhr-streaming when the server has no websocket', async () => {
  assert.deepEqual(await run('fallback'), { result: 36, transport: 'xhr-streaming' });
});

test('Kontrol: fetchKites, connect, square', async () => {
  assert.deepEqual(await run('kontrol'), {
    found: 1,
    name: 'discoverable',
    username: 'fixture',
    result: 49,
  });
});

test('an error rejects with a KiteError', async () => {
  assert.deepEqual(await run('fail'), {
    isError: true,
    name: 'KiteError',
    type: 'testError',
    message: 'boom',
    code: 'E42',
  });
});

test('the page shows every result, without errors; screenshot saved', async () => {
  await page.evaluate(() => window.kiteTests.cleanup());
  const cells = await page.$$eval('#results tr td:nth-child(2)', (tds) => tds.map((td) => td.textContent));
  assert.equal(cells.length, 8);
  assert.deepEqual(
    cells.filter((c) => !c.includes('pass')),
    [],
  );
  assert.deepEqual(pageErrors, []);
  assert.deepEqual(consoleErrors, []);
  const file = await screenshot();
  const png = await fs.readFile(file);
  assert.ok(png.length > 5_000, `a ${png.length}-byte screenshot`);
  assert.deepEqual([...png.subarray(0, 4)], [0x89, 0x50, 0x4e, 0x47]);
});
