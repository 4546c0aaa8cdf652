// Calls/s of the two Node kite clients against the same native kite (docs/BENCHMARKS.md,
// "Performance round 2 (issue 22): kite-wasm"): kite-wasm's npm package and Kite.js 1.0.13,
// each calling `square` on the fixtures' math kite (client-peer.mjs) at 64 and 1 calls in
// flight, over the SockJS websocket and over the raw websocket.
//
//   KITE_WASM_ONLY=bench scripts/test-wasm             (starts the fixtures, builds the package)
//   KITE_FIXTURES=... node tests/js/bench/client.mjs [--rounds 3] [--kitejs-first]
//
// Every run is a fresh Node process; the two clients alternate run for run (ours, Kite.js, ...;
// with --kitejs-first, Kite.js first) in each scenario. The table gives medians and ranges over
// the rounds, the median of the paired ratios, and the load averages (1 minute) seen at the
// start of the runs. KITE_WASM_PKG names another build of the package for `ours`.

import { execFile } from 'node:child_process';
import { loadavg } from 'node:os';
import { resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';

const here = resolve(fileURLToPath(import.meta.url), '..');
const run = promisify(execFile);

function arg(name, fallback) {
  const i = process.argv.indexOf(name);
  return i < 0 ? fallback : process.argv[i + 1];
}
const rounds = Number(arg('--rounds', 3));
const kitejsFirst = process.argv.includes('--kitejs-first');
const only = arg('--only', '');
if (!process.env.KITE_FIXTURES) {
  console.error('KITE_FIXTURES is not set: run KITE_WASM_ONLY=bench scripts/test-wasm');
  process.exit(1);
}
const fx = JSON.parse(process.env.KITE_FIXTURES);

const scenarios = [
  { transport: 'websocket', url: fx.math, c: 64, calls: 30000 },
  { transport: 'raw-websocket', url: fx.rawWebsocket, c: 64, calls: 30000 },
  { transport: 'websocket', url: fx.math, c: 1, calls: 5000 },
  { transport: 'raw-websocket', url: fx.rawWebsocket, c: 1, calls: 5000 },
].filter((s) => !only || `${s.transport}/${s.c}` === only);

const median = (xs) => {
  const s = [...xs].sort((a, b) => a - b);
  return s.length % 2 ? s[(s.length - 1) / 2] : (s[s.length / 2 - 1] + s[s.length / 2]) / 2;
};

async function once(impl, s) {
  const { stdout } = await run(process.execPath, [
    resolve(here, 'client-peer.mjs'),
    '--impl', impl, '--url', s.url, '--transport', s.transport,
    '--inflight', String(s.c), '--calls', String(s.calls),
  ], { env: process.env, maxBuffer: 1 << 20 });
  const r = JSON.parse(stdout.trim().split('\n').pop());
  return { rate: r.calls / r.seconds, p50: r.p50, p99: r.p99 };
}

console.log('| transport | in flight | client | calls/s median (range) | p50 µs | p99 µs | ours ÷ Kite.js, paired (range) | load (1 min) |');
console.log('|---|---:|---|---:|---:|---:|---:|---|');
for (const s of scenarios) {
  const res = { ours: [], kitejs: [] };
  const loads = [];
  for (let r = 0; r < rounds; r++) {
    const order = kitejsFirst ? ['kitejs', 'ours'] : ['ours', 'kitejs'];
    for (const impl of order) {
      loads.push(loadavg()[0].toFixed(1));
      res[impl].push(await once(impl, s));
    }
  }
  const ratios = res.ours.map((o, i) => o.rate / res.kitejs[i].rate);
  for (const impl of ['ours', 'kitejs']) {
    const xs = res[impl];
    const rates = xs.map((x) => x.rate);
    const cells = [
      s.transport === 'websocket' ? 'SockJS websocket' : 'raw websocket',
      s.c,
      impl === 'ours' ? 'kite-wasm' : 'Kite.js 1.0.13',
      `${Math.round(median(rates))} (${Math.round(Math.min(...rates))}–${Math.round(Math.max(...rates))})`,
      Math.round(median(xs.map((x) => x.p50))),
      Math.round(median(xs.map((x) => x.p99))),
      impl === 'ours'
        ? `**${median(ratios).toFixed(2)}×** (${Math.min(...ratios).toFixed(2)}–${Math.max(...ratios).toFixed(2)})`
        : '',
      impl === 'ours' ? loads.join(' ') : '',
    ];
    console.log(`| ${cells.join(' | ')} |`);
  }
}
