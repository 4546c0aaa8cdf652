// Node can exit once every kite is disconnected: nothing the package leaves behind (timers,
// sockets) keeps the process running. Each check runs in a child process and measures the time
// from the last disconnect() to the child's exit.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { pathToFileURL } from 'node:url';
import path from 'node:path';

import { repoRoot, TEST_TIMEOUT } from './fixtures.mjs';

const helper = pathToFileURL(path.join(repoRoot, 'tests/js/node/fixtures.mjs')).href;
/** How long the child may take to exit after disconnecting everything. */
const EXIT_WITHIN_MS = 2_000;
/** When to give up on the child altogether. */
const KILL_AFTER_MS = 4_000;

/** Runs `body` (an ES module body that can use the fixtures helper's exports) in a child. */
function runChild(body, nodeArgs = []) {
  const source = `import { fx, Kite, Kontrol, DISCOVERABLE, token, kiteKey } from ${JSON.stringify(helper)};
${body}
console.log('DISCONNECTED');
`;
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [...nodeArgs, '--input-type=module', '-e', source], {
      env: process.env,
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let out = '';
    let err = '';
    let disconnectedAt = null;
    const killer = setTimeout(() => child.kill('SIGKILL'), KILL_AFTER_MS);
    child.stdout.on('data', (d) => {
      out += d;
      if (disconnectedAt === null && out.includes('DISCONNECTED')) disconnectedAt = Date.now();
    });
    child.stderr.on('data', (d) => {
      err += d;
    });
    child.on('error', reject);
    child.on('exit', (code, signal) => {
      clearTimeout(killer);
      resolve({ code, signal, out, err, lingered: disconnectedAt === null ? null : Date.now() - disconnectedAt });
    });
  });
}

function assertExitedPromptly(r) {
  assert.equal(r.err.includes('Error'), false, `the child failed:\n${r.err}`);
  assert.notEqual(r.lingered, null, `the child never disconnected:\n${r.out}\n${r.err}`);
  assert.equal(r.signal, null, `the child was still running ${KILL_AFTER_MS} ms after disconnecting`);
  assert.equal(r.code, 0, r.err);
  assert.ok(
    r.lingered < EXIT_WITHIN_MS,
    `Node exited ${r.lingered} ms after every kite was disconnected (want < ${EXIT_WITHIN_MS} ms)`,
  );
}

for (const transport of ['xhr-streaming', 'xhr-polling']) {
  test(`after disconnect(), no ${transport} request stays open (also after a GC)`, { timeout: TEST_TIMEOUT }, async () => {
    // The receiving request of an xhr session must end with the session, also when the
    // JavaScript objects of the request were garbage-collected in the meantime (Node's fetch
    // loses the link from an AbortController to a Request that was collected).
    const r = await runChild(
      `
const port = new URL(fx.math).port;
const openSockets = () =>
  process._getActiveHandles().filter((h) => h.constructor.name === 'Socket' && String(h.remotePort) === port).length;
const kite = new Kite({ url: fx.math, transports: [${JSON.stringify(transport)}], heartbeatTimeout: 0 });
globalThis.keep = kite;
if ((await kite.tell('square', 3)) !== 9) throw new Error('square failed');
for (let i = 0; i < 3; i++) {
  globalThis.gc();
  await new Promise((r) => setTimeout(r, 20));
}
kite.disconnect();
const deadline = Date.now() + 2000;
while (openSockets() > 0 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 50));
console.log('OPEN_SOCKETS ' + openSockets());
process.exit(0);
`,
      ['--expose-gc'],
    );
    assert.equal(r.code, 0, r.err);
    const m = /OPEN_SOCKETS (\d+)/.exec(r.out);
    assert.ok(m, `no report from the child:\n${r.out}\n${r.err}`);
    assert.equal(Number(m[1]), 0, `a connection to the kite is still open 2 s after disconnect()`);
  });
}

test('after disconnect() of a SockJS websocket kite, Node exits promptly', { timeout: TEST_TIMEOUT }, async () => {
  const r = await runChild(`
const kite = new Kite({ url: fx.math, transports: ['websocket'] });
globalThis.keep = kite; // still referenced: only disconnect() may stop it
if ((await kite.tell('square', 3)) !== 9) throw new Error('square failed');
kite.disconnect();
`);
  assertExitedPromptly(r);
});

test('after disconnect() of a kite with a token, Node exits promptly', { timeout: TEST_TIMEOUT }, async () => {
  // heartbeatTimeout 0: no SockJS watchdog, so that only the token's handling is measured.
  const r = await runChild(`
const kite = new Kite({
  url: fx.auth,
  transports: ['websocket'],
  auth: { type: 'token', key: await token(3600) },
  heartbeatTimeout: 0,
});
globalThis.keep = kite;
if ((await kite.tell('square', 3)) !== 9) throw new Error('square failed');
kite.disconnect();
`);
  assertExitedPromptly(r);
});

test('after disconnect() of a raw-websocket kite and a Kontrol, Node exits promptly', { timeout: TEST_TIMEOUT }, async () => {
  const r = await runChild(`
const raw = new Kite(fx.rawWebsocket);
const kontrol = new Kontrol({
  url: fx.kontrol,
  transports: ['websocket'],
  auth: { type: 'kiteKey', key: await kiteKey() },
  heartbeatTimeout: 0,
});
globalThis.keep = [raw, kontrol];
if ((await raw.tell('square', 3)) !== 9) throw new Error('square failed');
const kites = await kontrol.fetchKites({ query: DISCOVERABLE });
if (kites.length !== 1) throw new Error('fetchKites found ' + kites.length);
for (const k of kites) k.disconnect();
raw.disconnect();
kontrol.disconnect();
`);
  assertExitedPromptly(r);
});

test('kites found through Kontrol and never connected do not keep Node running', { timeout: TEST_TIMEOUT }, async () => {
  // Only the Kontrol connection is closed: the kites fetchKites returned were never connected,
  // so there is nothing of theirs to close (or to renew a token for).
  const r = await runChild(`
const kontrol = new Kontrol({
  url: fx.kontrol,
  transports: ['websocket'],
  auth: { type: 'kiteKey', key: await kiteKey() },
  heartbeatTimeout: 0,
});
const kites = await kontrol.fetchKites({ query: DISCOVERABLE });
globalThis.keep = kites;
if (kites.length !== 1 || kites[0].state !== 0) throw new Error('expected one unconnected kite');
kontrol.disconnect();
`);
  assertExitedPromptly(r);
});
