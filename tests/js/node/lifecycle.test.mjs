// Node can exit once every kite is disconnected: nothing the package leaves behind (timers,
// sockets) keeps the process running. Each check runs in a child process and measures the time
// from the last disconnect() to the child's exit.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { pathToFileURL } from 'node:url';
import path from 'node:path';

import { repoRoot } from './fixtures.mjs';

const helper = pathToFileURL(path.join(repoRoot, 'tests/js/node/fixtures.mjs')).href;
/** How long the child may take to exit after disconnecting everything. */
const EXIT_WITHIN_MS = 3_000;
/** When to give up on the child altogether. */
const KILL_AFTER_MS = 6_000;

/** Runs `body` (an ES module body that can use the fixtures helper's exports) in a child. */
function runChild(body) {
  const source = `import { fx, Kite, Kontrol, DISCOVERABLE, token, kiteKey } from ${JSON.stringify(helper)};
${body}
console.log('DISCONNECTED');
`;
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, ['--input-type=module', '-e', source], {
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

test('after disconnect() of SockJS kites on each transport, Node exits promptly', async () => {
  const r = await runChild(`
const kites = ['websocket', 'xhr-streaming', 'xhr-polling'].map(
  (t) => new Kite({ url: fx.math, transports: [t] }),
);
globalThis.keep = kites; // still referenced: only disconnect() may stop them
for (const k of kites) {
  if ((await k.tell('square', 3)) !== 9) throw new Error('square failed');
}
for (const k of kites) k.disconnect();
`);
  assertExitedPromptly(r);
});

test('after disconnect() of a kite with a token, Node exits promptly', async () => {
  // heartbeatTimeout 0: no SockJS watchdog, so that only the token's handling is measured.
  const r = await runChild(`
const kite = new Kite({ url: fx.auth, auth: { type: 'token', key: await token(3600) }, heartbeatTimeout: 0 });
globalThis.keep = kite;
if ((await kite.tell('square', 3)) !== 9) throw new Error('square failed');
kite.disconnect();
`);
  assertExitedPromptly(r);
});

test('after disconnect() of a raw-websocket kite and a Kontrol, Node exits promptly', async () => {
  const r = await runChild(`
const raw = new Kite(fx.rawWebsocket);
const kontrol = new Kontrol({ url: fx.kontrol, auth: { type: 'kiteKey', key: await kiteKey() }, heartbeatTimeout: 0 });
globalThis.keep = [raw, kontrol];
if ((await raw.tell('square', 3)) !== 9) throw new Error('square failed');
const kites = await kontrol.fetchKites({ query: DISCOVERABLE });
if (kites.length !== 1) throw new Error('fetchKites found ' + kites.length);
// The kites found hold tokens: the test above is about those.
for (const k of kites) k.free();
raw.disconnect();
kontrol.disconnect();
`);
  assertExitedPromptly(r);
});
