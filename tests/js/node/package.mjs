// The fixture kites' URLs and the kite-wasm npm package, loaded for Node: shared by the Node
// tests (through fixtures.mjs) and the benchmark (tests/js/bench).
//
// The fixture kites are started by scripts/test-wasm, which passes their URLs in the
// environment variable KITE_FIXTURES (a JSON object). Without it every importer fails at once
// with a message saying so.
//
// The package is the build in kite-wasm/pkg (scripts/build-wasm); KITE_WASM_PKG may point at
// another copy of it.

import { fileURLToPath, pathToFileURL } from 'node:url';
import path from 'node:path';

const here = path.dirname(fileURLToPath(import.meta.url));
export const repoRoot = path.resolve(here, '../../..');

function readFixtures() {
  const raw = process.env.KITE_FIXTURES;
  if (!raw) {
    throw new Error(
      'KITE_FIXTURES is not set: these tests need the fixture kites, run scripts/test-wasm ' +
        '(KITE_WASM_ONLY=node scripts/test-wasm for the Node tests only)',
    );
  }
  let urls;
  try {
    urls = JSON.parse(raw);
  } catch (e) {
    throw new Error(`KITE_FIXTURES is not JSON (${e.message}): run scripts/test-wasm`);
  }
  for (const key of ['control', 'math', 'noWebsocket', 'rawWebsocket', 'auth', 'kontrol', 'restart', 'relay', 'bad']) {
    if (typeof urls[key] !== 'string') {
      throw new Error(`KITE_FIXTURES has no "${key}" URL: run scripts/test-wasm`);
    }
  }
  return urls;
}

/** The fixture URLs: control, math, noWebsocket, rawWebsocket, auth, kontrol, restart, relay, bad. */
export const fx = readFixtures();

/** The package directory (kite-wasm/pkg unless KITE_WASM_PKG says otherwise). */
export const pkgDir = path.resolve(process.env.KITE_WASM_PKG || path.join(repoRoot, 'kite-wasm/pkg'));

// Node 20 has no global WebSocket, and the package's own `import('ws')` cannot resolve `ws`
// from kite-wasm/pkg: give it ours before loading it.
if (typeof globalThis.WebSocket !== 'function') {
  globalThis.WebSocket = (await import('ws')).WebSocket;
}

let pkg;
try {
  pkg = await import(pathToFileURL(path.join(pkgDir, 'node/index.js')).href);
} catch (e) {
  throw new Error(`cannot load the kite-wasm package from ${pkgDir} (run scripts/build-wasm): ${e.message}`);
}
export const { Kite, Kontrol, KiteError, LogLevel } = pkg;
