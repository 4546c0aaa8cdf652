// The npm package's browser build (kite-wasm/pkg/web) in headless Chromium, driven by
// Playwright: a static page imports it as an ES module, runs checks against the fixture kites
// and shows the results, which end up in artifacts/page.png.

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import http from 'node:http';
import fs from 'node:fs/promises';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

import { chromium } from 'playwright-core';

const here = path.dirname(fileURLToPath(import.meta.url));
const repoRoot = path.resolve(here, '../../..');
const pkgDir = path.resolve(process.env.KITE_WASM_PKG || path.join(repoRoot, 'kite-wasm/pkg'));
const artifacts = path.join(here, 'artifacts');
const chromiumPath = process.env.CHROMIUM_PATH || '/usr/bin/chromium';

if (!process.env.KITE_FIXTURES) {
  throw new Error(
    'KITE_FIXTURES is not set: this test needs the fixture kites, run scripts/test-wasm ' +
      '(KITE_WASM_ONLY=browser scripts/test-wasm for the browser test only)',
  );
}
const fx = JSON.parse(process.env.KITE_FIXTURES);

const TYPES = {
  '.html': 'text/html; charset=utf-8',
  '.js': 'text/javascript; charset=utf-8',
  '.mjs': 'text/javascript; charset=utf-8',
  '.wasm': 'application/wasm',
  '.json': 'application/json',
  '.ts': 'text/plain; charset=utf-8',
  '.md': 'text/plain; charset=utf-8',
};

/** Serves /pkg/* from the package directory and the page's own files from here. */
function serveStatic() {
  const roots = [
    ['/pkg/', pkgDir],
    ['/', here],
  ];
  const server = http.createServer(async (req, res) => {
    const url = new URL(req.url, 'http://localhost');
    const pathname = decodeURIComponent(url.pathname);
    for (const [prefix, root] of roots) {
      if (!pathname.startsWith(prefix)) continue;
      const file = path.resolve(root, '.' + pathname.slice(prefix.length - 1));
      if (!file.startsWith(root + path.sep)) break;
      // Only the page's two files from the test directory.
      if (root === here && !['page.html', 'page.js'].includes(path.relative(here, file))) break;
      try {
        const body = await fs.readFile(file);
        res.writeHead(200, {
          'Content-Type': TYPES[path.extname(file)] || 'application/octet-stream',
          'Cache-Control': 'no-store',
        });
        res.end(body);
      } catch {
        res.writeHead(404, { 'Content-Type': 'text/plain' }).end(`not found: ${pathname}`);
      }
      return;
    }
    res.writeHead(404, { 'Content-Type': 'text/plain' }).end(`not found: ${pathname}`);
  });
  return new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => resolve(server));
  });
}

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
  server = await serveStatic();
  base = `http://127.0.0.1:${server.address().port}`;
  browser = await chromium.launch({
    executablePath: chromiumPath,
    headless: true,
    args: [
      '--headless',
      '--no-sandbox',
      '--disable-gpu',
      '--disable-quic',
      '--no-first-run',
      '--disable-background-networking',
      '--disable-component-update',
      '--disable-sync',
    ],
  });
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
