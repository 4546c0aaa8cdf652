// The browser demo end to end: starts `kite-demo` (Kontrol, the example kites and the page),
// opens the page in headless Chromium through playwright-core and uses every section of it.
//
// Needs `cargo build -p kite-www` (target/debug/kite-demo, or $KITE_DEMO_BIN) and
// `scripts/build-wasm` (kite-wasm/pkg). Run from the repository root (or tests/js with `demo/`):
//   node --test --test-reporter=spec tests/js/demo/
// Leaves a full-page screenshot in tests/js/demo/artifacts/demo.png (failure.png on failure).

import { describe, test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { existsSync, mkdirSync } from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

import { chromium } from 'playwright-core';

const here = path.dirname(fileURLToPath(import.meta.url));
const repoRoot = path.resolve(here, '../../..');
const artifacts = path.join(here, 'artifacts');
const demoBin = path.resolve(
  repoRoot,
  process.env.KITE_DEMO_BIN || path.join(process.env.CARGO_TARGET_DIR || 'target', 'debug/kite-demo'),
);
const pkgEntry = path.join(repoRoot, 'kite-wasm/pkg/web/kite.js');
const chromiumPath = process.env.CHROMIUM || '/usr/bin/chromium';
const CHROMIUM_ARGS = [
  '--headless',
  '--no-sandbox',
  '--disable-gpu',
  '--disable-quic',
  '--no-first-run',
  '--disable-background-networking',
  '--disable-component-update',
  '--disable-sync',
];
const STEP_MS = 15_000; // what one UI step may take (connections, calls, fallbacks)
const DEMO_KITES = ['clock', 'first', 'greeter'];
const FIELDS = ['username', 'environment', 'name', 'version', 'region', 'hostname', 'id'];

// What the test needs, checked before anything starts (one clear failure instead of a cancelled
// suite).
for (const [what, file, how] of [
  ['the kite-demo binary', demoBin, 'build it with `cargo build -p kite-www`'],
  ['the kite-wasm package', pkgEntry, 'build it with scripts/build-wasm'],
  ['Chromium', chromiumPath, 'install it with `apt-get install -y chromium`'],
]) {
  if (!existsSync(file)) throw new Error(`${what} is missing (${file}): ${how}`);
}

/** A port free on 127.0.0.1 right now. */
function freePort() {
  return new Promise((resolve, reject) => {
    const server = net.createServer();
    server.unref();
    server.on('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const { port } = server.address();
      server.close(() => resolve(port));
    });
  });
}

/** Starts kite-demo; resolves with {child, pageUrl, kiteUrls, output()} once it prints its URL. */
async function startDemo() {
  const port = await freePort();
  const child = spawn(demoBin, [], {
    cwd: repoRoot,
    env: { ...process.env, KITE_DEMO_PORT: String(port), KITE_DEMO_ROOT: repoRoot, NO_COLOR: '1' },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let stdout = '';
  let stderr = '';
  const output = () => `--- kite-demo stdout\n${stdout}--- kite-demo stderr\n${stderr}`;
  child.stderr.setEncoding('utf8').on('data', (d) => {
    stderr += d;
  });
  const started = new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`kite-demo printed no "Open http://..." line within 30 s\n${output()}`)), 30_000);
    child.stdout.setEncoding('utf8').on('data', (d) => {
      stdout += d;
      const m = stdout.match(/^Open (http:\/\/\S+)/m);
      if (m) {
        clearTimeout(timer);
        const kiteUrls = {};
        for (const [, name, url] of stdout.matchAll(/^kite:\s+(\S+)\s+(\S+)/gm)) kiteUrls[name] = url;
        resolve({ child, pageUrl: m[1], kiteUrls, output });
      }
    });
    child.on('error', (e) => {
      clearTimeout(timer);
      reject(new Error(`cannot start ${demoBin}: ${e.message}`));
    });
    child.on('exit', (code, signal) => {
      clearTimeout(timer);
      reject(new Error(`kite-demo exited (${signal || code}) before printing its URL\n${output()}`));
    });
  });
  // Never leave it running, even if this process ends abruptly.
  process.once('exit', () => child.kill('SIGKILL'));
  return started;
}

/** Stops kite-demo: Ctrl-C, then SIGKILL if it lingers. */
async function stopDemo(child) {
  if (!child || child.exitCode !== null || child.signalCode !== null) return;
  const exited = new Promise((resolve) => child.once('exit', resolve));
  child.kill('SIGINT');
  const timer = setTimeout(() => child.kill('SIGKILL'), 3000);
  await exited;
  clearTimeout(timer);
}

/** Polls `check` (async) until it returns a truthy value, failing after `ms` with `what`. */
async function until(check, ms, what) {
  const deadline = Date.now() + ms;
  let last;
  for (;;) {
    last = await check();
    if (last) return last;
    if (Date.now() > deadline) throw new Error(`${what}: not true within ${ms} ms`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

describe('kite-demo browser page', { timeout: 90_000 }, () => {
  let demo;
  let browser;
  let page;
  const pageErrors = [];
  const consoleErrors = [];
  let failed = false;

  const tid = (id) => page.getByTestId(id);
  const text = async (id) => ((await tid(id).first().textContent()) ?? '').trim();
  /**
   * Waits for the call just made (the panel turns `pending` when Call is clicked) to settle
   * and returns the outcome box, failing with what the page shows unless it reached `state`.
   */
  async function outcome(state) {
    const box = page.locator('#call-outcome');
    await page.locator('#call-outcome[data-state="ok"], #call-outcome[data-state="error"]').waitFor();
    const got = await box.getAttribute('data-state');
    assert.equal(got, state, `the call ended "${got}": ${(await box.textContent()).trim()}`);
    return box;
  }

  before(async () => {
    try {
      await setUp();
    } catch (e) {
      failed = true;
      throw e;
    }
  });

  async function setUp() {
    mkdirSync(artifacts, { recursive: true });
    demo = await startDemo();
    // launch() gives the browser a fresh temporary profile of its own.
    browser = await chromium.launch({ executablePath: chromiumPath, headless: true, args: CHROMIUM_ARGS });
    const context = await browser.newContext({ viewport: { width: 1366, height: 768 } });
    page = await context.newPage();
    page.setDefaultTimeout(STEP_MS);
    page.on('pageerror', (e) => pageErrors.push(e.message));
    page.on('console', (m) => {
      if (m.type() === 'error') consoleErrors.push(m.text());
    });
    await page.goto(demo.pageUrl);
  }

  after(async () => {
    try {
      if (page && failed) {
        await page.screenshot({ path: path.join(artifacts, 'failure.png'), fullPage: true }).catch(() => {});
      }
      if (failed && demo) console.log(demo.output());
      if (consoleErrors.length) console.log(`browser console errors:\n  ${consoleErrors.join('\n  ')}`);
      await browser?.close();
    } finally {
      await stopDemo(demo?.child);
    }
  });

  /** Runs a step; remembers a failure for the screenshot and logs in `after`. */
  const step = (name, fn) =>
    test(name, async () => {
      try {
        await fn();
      } catch (e) {
        failed = true;
        throw e;
      }
    });

  step('the page loads and connects to Kontrol', async () => {
    assert.equal(await page.title(), 'Kite — browser demo');
    await page.locator('h1', { hasText: 'Kite — browser demo' }).waitFor();
    await page.locator('#kontrol-status[data-state="ok"]').waitFor();
    assert.match(await text('kontrol-status'), /Kontrol connected/);
    assert.ok(await tid('error-banner').isHidden(), `error banner shown: ${await text('error-banner')}`);
  });

  step('the kite list shows first, clock and greeter with all seven fields and URLs', async () => {
    await page.locator('#watch-status[data-state="live"]').waitFor();
    for (const name of DEMO_KITES) {
      const row = page.locator(`tr[data-testid="kite-row"][data-name="${name}"]`);
      await row.waitFor();
      const cell = (field) => row.locator(`td[data-field="${field}"]`);
      const values = {};
      for (const field of FIELDS) {
        values[field] = ((await cell(field).getAttribute('data-value')) ?? '').trim();
        assert.ok(values[field], `${name}: ${field} is empty`);
        assert.ok((await cell(field).textContent()).trim(), `${name}: ${field} shows nothing`);
      }
      assert.equal(values.username, 'demo');
      assert.equal(values.environment, 'demo');
      assert.equal(values.name, name);
      assert.equal(values.version, '1.0.0');
      // The id is shown short, in full in the title.
      assert.equal(await cell('id').getAttribute('title'), values.id);
      const shown = (await cell('id').textContent()).trim();
      assert.ok(shown.length < values.id.length, `${name}: id not shortened (${shown})`);
      assert.ok(values.id.startsWith(shown.replace('…', '')), `${name}: shown id ${shown} is not a prefix of ${values.id}`);
      const url = (await cell('url').textContent()).trim();
      assert.match(url, /^http:\/\/127\.0\.0\.1:\d+\/kite$/);
      assert.equal(url, demo.kiteUrls[name], `${name}: URL differs from what kite-demo printed`);
    }
    assert.equal(await page.locator('tr[data-testid="kite-row"]').count(), DEMO_KITES.length);
    assert.equal(await text('kites-count'), '3 kites');
  });

  step('select first and call square(4): 16 and a round-trip time', async () => {
    await page.locator('tr[data-testid="kite-row"][data-name="first"]').click();
    await page.locator('#selected-kite[data-name="first"]').waitFor();
    assert.equal(await tid('method-input').inputValue(), 'square');
    assert.equal(await tid('args-input').inputValue(), '[4]');
    await tid('call-button').click();
    const ok = await outcome('ok');
    assert.equal((await ok.getByTestId('call-result').textContent()).trim(), '16');
    assert.match((await ok.getByTestId('call-rtt').textContent()).trim(), /^\d+ ms$/);
    const transport = (await ok.getByTestId('call-transport').textContent()).trim();
    assert.equal(transport, 'websocket', 'auto should pick the websocket');
    assert.equal(await text('transport-current'), 'websocket');
  });

  step('the clock stream delivers ticks until stopped', async () => {
    await tid('stream-start').click();
    const tick = await until(
      async () => {
        const n = Number(await tid('stream-tick').getAttribute('data-tick'));
        return n >= 2 ? n : 0;
      },
      STEP_MS,
      'the clock tick reaching 2',
    );
    assert.ok(tick >= 2);
    assert.match(await text('stream-time'), /^\d\d:\d\d:\d\d/);
    assert.ok((await tid('stream-list').locator('li').count()) >= 2, 'the list of last ticks');
    await page.locator('#stream-status[data-state="running"]').waitFor();
    await tid('stream-stop').click();
    await page.locator('#stream-status[data-state="stopped"]').waitFor();
    assert.ok(await tid('stream-start').isEnabled());
    assert.ok(await tid('stream-stop').isDisabled());
  });

  step('greeter calls the page: kite.log, answer(question), and the result', async () => {
    await tid('ask-greeter').click();
    const result = tid('greeter-result');
    await page.locator('#greeter-result[data-state="ok"], #greeter-result[data-state="error"]').waitFor();
    assert.equal(await result.getAttribute('data-state'), 'ok', `askPage failed: ${await text('greeter-result')}`);
    assert.match(await text('greeter-result-text'), /^"the page answered: 42, said the page at \d\d:\d\d:\d\d"$/);
    assert.equal(await text('greeter-log'), 'greeter asks demo-page: What is the answer?');
    assert.match(await text('greeter-answer-call'), /^answer\("What is the answer\?"\)\s*→\s*"42, said the page at \d\d:\d\d:\d\d"$/);
  });

  step('an argument that is not valid JSON shows a validation error', async () => {
    await tid('args-input').fill('[4,');
    await tid('call-button').click();
    await tid('args-error').waitFor();
    assert.match(await text('args-error'), /not valid JSON/);
    await tid('args-input').fill('4');
    await tid('call-button').click();
    await tid('args-error').waitFor();
    assert.match(await text('args-error'), /must be a JSON array/);
    // Fixing it clears the error.
    await tid('args-input').fill('[4]');
    await tid('args-error').waitFor({ state: 'hidden' });
  });

  step('an unknown method shows methodNotFound', async () => {
    await tid('method-input').fill('cube');
    await tid('args-input').fill('[4]');
    await tid('call-button').click();
    const err = await outcome('error');
    assert.equal((await err.getByTestId('call-error-type').textContent()).trim(), 'methodNotFound');
    assert.match((await err.getByTestId('call-error-message').textContent()).trim(), /cube/);
    assert.match((await err.getByTestId('call-rtt').textContent()).trim(), /^\d+ ms$/);
  });

  for (const transport of ['xhr-streaming', 'xhr-polling']) {
    step(`forcing ${transport}: square(4) is 16 over ${transport}`, async () => {
      await tid('transport-select').selectOption(transport);
      await tid('method-input').fill('square');
      await tid('args-input').fill('[4]');
      await tid('call-button').click();
      const ok = await outcome('ok');
      assert.equal((await ok.getByTestId('call-transport').textContent()).trim(), transport);
      assert.equal((await ok.getByTestId('call-result').textContent()).trim(), '16');
      assert.equal(await text('transport-current'), transport);
      const latest = tid('call-history').locator('li').first();
      assert.equal((await latest.getByTestId('history-transport').textContent()).trim(), transport);
    });
  }

  step('the list follows the watch: REGISTER adds a row, DEREGISTER removes it', async () => {
    // Kites registered with the page's kite key belong to user `browser`: watch those in a
    // second tab, and register one from there (the page's own Kontrol connection, posing as a
    // kite at a fake URL; Kontrol heartbeats it until it disconnects).
    const watcher = await page.context().newPage();
    watcher.setDefaultTimeout(STEP_MS);
    watcher.on('pageerror', (e) => pageErrors.push(`second tab: ${e.message}`));
    try {
      await watcher.goto(`${demo.pageUrl}?username=browser`);
      await watcher.locator('#watch-status[data-state="live"]').waitFor();
      assert.equal(await watcher.getByTestId('query-username').textContent(), 'username = browser');
      const url = 'http://127.0.0.1:9/kite';
      const id = await watcher.evaluate(async (url) => {
        const { Kontrol } = await import('/pkg/web/kite.js');
        const config = await (await fetch('/config.json')).json();
        const visitor = new Kontrol({
          url: config.kontrol,
          auth: { type: 'kiteKey', key: config.kiteKey },
          name: 'visitor',
          environment: 'demo',
        });
        await visitor.kite.tell('register', { url });
        window.visitor = visitor;
        return visitor.kite.getKiteInfo().id;
      }, url);
      const row = watcher.locator(`tr[data-testid="kite-row"][data-kite-id="${id}"]`);
      await row.waitFor();
      assert.match(await row.getAttribute('class'), /\badded\b/, 'a new row is highlighted');
      assert.equal(await row.locator('td[data-field="name"]').textContent(), 'visitor');
      assert.equal(await row.locator('td[data-field="username"]').textContent(), 'browser');
      assert.equal(await row.locator('td[data-field="url"]').textContent(), url);
      assert.match(await watcher.getByTestId('watch-last').textContent(), /REGISTER visitor/);
      // Without heartbeats Kontrol deregisters it after its registration TTL (6 s in the demo).
      await watcher.evaluate(() => window.visitor.disconnect());
      await watcher.locator(`tr[data-testid="kite-row-removed"][data-kite-id="${id}"]`).waitFor({ timeout: 20_000 });
      assert.match(await watcher.getByTestId('watch-last').textContent(), /DEREGISTER visitor/);
      await watcher.locator(`tr[data-kite-id="${id}"]`).waitFor({ state: 'detached' });
    } finally {
      await watcher.close();
    }
  });

  step('two pages over WebRTC (webrtc.html): a data channel, square(7) = 49 and the callback', async () => {
    // The first page waits with its id; the second opens its link (?peer=ID) and calls it.
    const first = await page.context().newPage();
    let second;
    first.setDefaultTimeout(STEP_MS);
    first.on('pageerror', (e) => pageErrors.push(`webrtc page 1: ${e.message}`));
    try {
      await first.goto(new URL('webrtc.html', demo.pageUrl).href);
      await first.locator('#rtc-id[data-state="ready"]').waitFor();
      const id = (await first.getByTestId('rtc-id').textContent()).trim();
      const link = await first.getByTestId('rtc-link').getAttribute('href');
      assert.ok(link.endsWith(`?peer=${encodeURIComponent(id)}`), link);
      second = await page.context().newPage();
      second.setDefaultTimeout(STEP_MS);
      second.on('pageerror', (e) => pageErrors.push(`webrtc page 2: ${e.message}`));
      await second.goto(new URL(link, new URL('webrtc.html', demo.pageUrl)).href);
      await second.locator('#rtc-route[data-route]').waitFor();
      assert.equal(await second.getByTestId('rtc-route').textContent(), 'data channel');
      await second.locator('#rtc-result', { hasText: '49' }).waitFor();
      assert.equal(await second.getByTestId('rtc-callback').textContent(), `${id.slice(0, 8)} squared 7`);
      await first.getByTestId('rtc-log').locator('li', { hasText: 'connected (data channel)' }).waitFor();
      await first.getByTestId('rtc-log').locator('li', { hasText: 'called square(7)' }).waitFor();
      for (const p of [first, second]) {
        assert.ok(await p.getByTestId('error-banner').isHidden(), await p.getByTestId('error-banner').textContent());
      }
    } finally {
      await second?.close();
      await first.close();
    }
  });

  step('no page errors, and a screenshot', async () => {
    assert.ok(await tid('error-banner').isHidden(), `error banner shown: ${await text('error-banner')}`);
    assert.deepEqual(pageErrors, [], 'uncaught errors in the page');
    await page.screenshot({ path: path.join(artifacts, 'demo.png'), fullPage: true });
  });
});
