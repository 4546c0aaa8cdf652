// One of the two Node kite servers docs/BENCHMARKS.md compares ("Since: the Node server (issue
// 19)"), serving `square(n)` without authentication, for `kite-bench load` to drive:
//
//   node tests/js/bench/server-peer.mjs --impl ours --port 6100
//   node tests/js/bench/server-peer.mjs --impl kitejs --port 6101 [--sockjs]
//
// `ours`: kite-wasm/server's KiteServer from the package in KITE_WASM_PKG (default
// kite-wasm/pkg, built by scripts/build-wasm): SockJS at /kite, a raw websocket at
// /kite/websocket. `kitejs`: Kite.js 1.0.13's KiteServer from tests/interop/node_modules (npm ci
// there): a raw websocket on any path, or with --sockjs its SockJS server class at /kite (then it
// has no raw websocket). Prints `ready` once listening; exits when stdin closes.

import { createRequire } from 'node:module';
import { resolve } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';

const root = resolve(fileURLToPath(import.meta.url), '../../../..');

function arg(name) {
  const i = process.argv.indexOf(name);
  return i < 0 ? undefined : process.argv[i + 1];
}
const impl = arg('--impl');
const port = Number(arg('--port'));
const sockjs = process.argv.includes('--sockjs');
if (!['ours', 'kitejs'].includes(impl) || !(port > 0)) {
  console.error('usage: server-peer.mjs --impl ours|kitejs --port N [--sockjs]');
  process.exit(2);
}

if (impl === 'ours') {
  const pkg = resolve(process.env.KITE_WASM_PKG ?? resolve(root, 'kite-wasm/pkg'));
  const { KiteServer } = await import(pathToFileURL(resolve(pkg, 'server/index.js')).href);
  const server = new KiteServer({
    name: 'square',
    kiteKey: false,
    logLevel: 'none',
    api: { square: { func: (n) => n * n, auth: false } },
  });
  await server.listen({ port, host: '127.0.0.1' });
  console.log('ready');
} else {
  const require = createRequire(resolve(root, 'tests/interop/package.json'));
  const { KiteServer } = require('kite.js');
  const server = new KiteServer({
    name: 'square',
    auth: false,
    logLevel: 0,
    prefix: sockjs ? '/kite' : undefined,
    serverClass: sockjs ? KiteServer.transport.SockJS : undefined,
    api: { square: (n, done) => done(null, n * n) },
  });
  server.listen(port);
  // Both transport classes wrap a server (http.Server, ws.Server) that emits 'listening'.
  server.server.server.on('listening', () => console.log('ready'));
}
process.stdin.on('end', () => process.exit(0));
process.stdin.resume();
