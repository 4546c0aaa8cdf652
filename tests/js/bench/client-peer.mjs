// One client run for client.mjs: `square` on the fixtures' native math kite from kite-wasm's
// npm package or from Kite.js 1.0.13 (tests/interop's node_modules), under Node, with C calls
// in flight on one connection; prints one JSON line { calls, seconds, p50, p99 } (µs).
//
//   node client-peer.mjs --impl ours|kitejs --url URL --transport websocket|raw-websocket \
//     --inflight C --calls N
//
// URL is the kite's SockJS base (http://...) for `websocket`, its raw websocket (ws://...) for
// `raw-websocket`. KITE_WASM_PKG may point at another build of the package.

import { createRequire } from 'node:module';
import { performance } from 'node:perf_hooks';
import { resolve } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';

const here = resolve(fileURLToPath(import.meta.url), '..');
const root = resolve(here, '../../..');

function arg(name, fallback) {
  const i = process.argv.indexOf(name);
  return i < 0 ? fallback : process.argv[i + 1];
}
const impl = arg('--impl');
const url = arg('--url');
const transport = arg('--transport', 'websocket');
const inFlight = Number(arg('--inflight', 64));
const calls = Number(arg('--calls', 20000));
const warmup = Number(arg('--warmup', 2000));

// Both clients answer with a promise of the result; `call(i)` asks for square(i).
async function connect() {
  if (impl === 'ours') {
    if (typeof globalThis.WebSocket !== 'function') {
      globalThis.WebSocket = (await import('ws')).WebSocket;
    }
    const pkgDir = resolve(process.env.KITE_WASM_PKG || resolve(root, 'kite-wasm/pkg'));
    const { Kite } = await import(pathToFileURL(resolve(pkgDir, 'node/index.js')).href);
    const options = { url, autoReconnect: false };
    if (transport === 'websocket') options.transports = ['websocket'];
    const kite = new Kite(options);
    await kite.ready();
    return { call: (i) => kite.tell('square', i), close: () => kite.disconnect() };
  }
  if (impl === 'kitejs') {
    const require = createRequire(resolve(root, 'tests/interop/package.json'));
    const { Kite } = require('kite.js');
    const options = { url, autoReconnect: false, logLevel: 0 };
    if (transport === 'websocket') {
      options.transportClass = Kite.transport.SockJS;
      options.transportOptions = { transports: ['websocket'] };
    }
    const kite = new Kite(options);
    await new Promise((ok) => kite.ready(ok));
    return { call: (i) => kite.tell('square', [i]), close: () => kite.disconnect() };
  }
  throw new Error(`--impl ours|kitejs, not ${impl}`);
}

const client = await connect();
async function drive(n, latencies) {
  let next = 0;
  async function worker() {
    while (next < n) {
      const i = next++;
      const t0 = performance.now();
      const r = await client.call(i);
      if (latencies) latencies[i] = performance.now() - t0;
      if (r !== i * i) throw new Error(`square(${i}) = ${r}`);
    }
  }
  await Promise.all(Array.from({ length: inFlight }, worker));
}
// Warm up: JIT, connection, buffers.
await drive(warmup, null);
const latencies = new Float64Array(calls);
const start = performance.now();
await drive(calls, latencies);
const seconds = (performance.now() - start) / 1000;
latencies.sort();
const pct = (p) => Math.round(latencies[Math.min(calls - 1, Math.floor((calls * p) / 100))] * 1000);
console.log(JSON.stringify({ calls, seconds, p50: pct(50), p99: pct(99) }));
client.close();
process.exit(0);
