// The package's Node example (kite-wasm/examples/square.mjs) run as a user runs it: a child
// process serving `square` as `first`, with a kite key in $KITE_HOME so that it registers with
// the fixtures' Kontrol; then the native `second` example (kite-native/examples/second.rs, built
// by scripts/test-wasm) calls it and prints `pong` and `16`, and a native kite finds it through
// Kontrol and calls it.

import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, execFile } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { promisify } from 'node:util';

import { repoRoot, control, within, TEST_TIMEOUT } from './fixtures.mjs';

const examples = process.env.KITE_EXAMPLES_DIR ?? path.join(repoRoot, 'target/debug/examples');
const second = path.join(examples, 'second');
const owner = `example-owner-${process.pid}`;

const children = [];
after(() => {
  for (const c of children) c.kill('SIGTERM');
});

/** Starts the example; resolves with its URL once it says it serves and (with a key) that it
 *  registered. */
async function startExample(env) {
  const child = spawn(process.execPath, [path.join(repoRoot, 'kite-wasm/examples/square.mjs')], {
    env: { ...process.env, PORT: '0', KITE_LOG_LEVEL: 'error', ...env },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  children.push(child);
  let out = '';
  let err = '';
  child.stderr.on('data', (d) => (err += d));
  const lines = new Promise((resolve, reject) => {
    child.stdout.on('data', (d) => {
      out += d;
      const url = /serving square at (\S+)/.exec(out)?.[1];
      if (url && /registered with Kontrol|not registering|cannot register/.test(out)) resolve({ url, out });
    });
    child.on('exit', (code) => reject(new Error(`the example exited (${code}): ${out}${err}`)));
  });
  return within(lines, 20_000, 'the example starting');
}

test('square.mjs registers with a kite key; native `second` calls it; a native kite finds it', { timeout: TEST_TIMEOUT }, async () => {
  assert.ok(fs.existsSync(second), `${second} is missing: scripts/test-wasm builds it (cargo build -p kite-native --example second)`);
  const home = fs.mkdtempSync(path.join(os.tmpdir(), 'kite-home-'));
  try {
    fs.writeFileSync(path.join(home, 'kite.key'), await control('GET', `/kite-key?username=${owner}`));
    const { url, out } = await startExample({ KITE_HOME: home });
    assert.match(url, /^http:\/\/127\.0\.0\.1:\d+\/kite$/);
    assert.match(out, /registered with Kontrol at /, out);

    const { stdout } = await promisify(execFile)(second, [url], { timeout: 20_000 });
    assert.deepEqual(stdout.trim().split('\n'), ['pong', '16']);

    const q = new URLSearchParams({ username: owner, name: 'first', method: 'square' });
    const found = JSON.parse(await control('POST', `/kontrol/find-call?${q}`, [9]));
    assert.equal(found.found, 1, JSON.stringify(found));
    assert.equal(found.url, url);
    assert.equal(found.result, 81);
  } finally {
    fs.rmSync(home, { recursive: true, force: true });
  }
});

test('without a kite key, square.mjs serves without registering', { timeout: TEST_TIMEOUT }, async () => {
  const home = fs.mkdtempSync(path.join(os.tmpdir(), 'kite-home-'));
  try {
    const { url, out } = await startExample({ KITE_HOME: home });
    assert.match(out, /no kite key: not registering/);
    const { stdout } = await promisify(execFile)(second, [url], { timeout: 20_000 });
    assert.deepEqual(stdout.trim().split('\n'), ['pong', '16']);
  } finally {
    fs.rmSync(home, { recursive: true, force: true });
  }
});
