// Calls per second and latency of the kite-wasm npm package under Node: `square` on the
// fixtures' math kite, one call at a time and 64 in flight, over each SockJS transport.
//
// Run by `KITE_WASM_ONLY=bench scripts/test-wasm` (which starts the fixture kites and builds the
// package); KITE_WASM_PKG may point at another build of the package to compare.
// Prints one table row per run: transport, calls in flight, calls, calls/s, p50 and p99 in µs.

import { performance } from 'node:perf_hooks';

import { fx, Kite, pkgDir } from '../node/package.mjs';

const RUNS = [
  { transport: 'websocket', inFlight: 1, calls: 3000 },
  { transport: 'websocket', inFlight: 64, calls: 30000 },
  { transport: 'xhr-streaming', inFlight: 1, calls: 1000 },
  { transport: 'xhr-streaming', inFlight: 64, calls: 10000 },
];

function percentile(sorted, p) {
  return sorted[Math.min(sorted.length - 1, Math.floor((sorted.length * p) / 100))];
}

async function run({ transport, inFlight, calls }) {
  const kite = new Kite({ url: fx.math, transports: [transport], autoReconnect: false });
  await kite.ready();
  // Warm up: JIT, connection, buffers.
  for (let i = 0; i < 200; i++) await kite.tell('square', i);
  const latencies = new Float64Array(calls);
  let next = 0;
  const start = performance.now();
  async function worker() {
    while (next < calls) {
      const i = next++;
      const t0 = performance.now();
      const r = await kite.tell('square', i);
      latencies[i] = performance.now() - t0;
      if (r !== i * i) throw new Error(`square(${i}) = ${r}`);
    }
  }
  await Promise.all(Array.from({ length: inFlight }, worker));
  const seconds = (performance.now() - start) / 1000;
  kite.disconnect();
  const sorted = Array.from(latencies).sort((a, b) => a - b);
  const us = (ms) => Math.round(ms * 1000);
  return `| ${transport} | ${inFlight} | ${calls} | ${Math.round(calls / seconds)} | ${us(percentile(sorted, 50))} | ${us(percentile(sorted, 99))} |`;
}

console.log(`kite-wasm package: ${pkgDir}`);
console.log('| transport | in flight | calls | calls/s | p50 µs | p99 µs |');
console.log('|---|---|---|---|---|---|');
for (const r of RUNS) {
  console.log(await run(r));
}
process.exit(0);
