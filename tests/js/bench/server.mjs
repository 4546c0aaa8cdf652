// Calls/s of the two Node kite servers under our native client (docs/BENCHMARKS.md, "Since: the
// Node server (issue 19)"): kite-wasm/server's KiteServer and Kite.js 1.0.13's, each serving
// `square` (server-peer.mjs), driven by `kite-bench load` at 1 and 64 calls in flight over the
// SockJS websocket and over a raw websocket.
//
//   cargo build --release -p kite-bench --locked && scripts/build-wasm
//   (cd tests/interop && npm ci)
//   node tests/js/bench/server.mjs [--rounds 3] [--measure-ms 3000] [--kitejs-first]
//
// Every run is a fresh server process; the two servers alternate run for run (ours, Kite.js,
// ours, ...; with --kitejs-first, Kite.js, ours, ...) in each scenario, and the table gives medians and ranges over the rounds, with the
// load averages (os.loadavg, 1 minute) seen at the start of the runs. KITE_BENCH names the
// kite-bench binary (default $CARGO_TARGET_DIR/release/kite-bench, else target/release/...);
// KITE_WASM_PKG the package (default kite-wasm/pkg).

import { spawn, execFile } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import { createServer } from 'node:net';
import { loadavg } from 'node:os';
import { resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';

const here = resolve(fileURLToPath(import.meta.url), '..');
const root = resolve(here, '../../..');

function arg(name, fallback) {
  const i = process.argv.indexOf(name);
  return i < 0 ? fallback : process.argv[i + 1];
}
const rounds = Number(arg('--rounds', 3));
const measureMs = Number(arg('--measure-ms', 3000));
const bench =
  process.env.KITE_BENCH ??
  resolve(process.env.CARGO_TARGET_DIR ?? resolve(root, 'target'), 'release/kite-bench');
if (!existsSync(bench)) {
  console.error(`no ${bench}: cargo build --release -p kite-bench --locked (or set KITE_BENCH)`);
  process.exit(1);
}

// Kite.js's server speaks one transport per class: a raw websocket (its default) or SockJS.
const scenarios = [];
for (const transport of ['websocket', 'raw-websocket']) {
  for (const c of [1, 64]) {
    scenarios.push({
      transport,
      c,
      peers: [
        {
          name: 'ours',
          args: ['--impl', 'ours'],
          url: (p) =>
            transport === 'websocket'
              ? `http://127.0.0.1:${p}/kite`
              : `ws://127.0.0.1:${p}/kite/websocket`,
        },
        {
          name: 'Kite.js',
          args: transport === 'websocket' ? ['--impl', 'kitejs', '--sockjs'] : ['--impl', 'kitejs'],
          url: (p) => (transport === 'websocket' ? `http://127.0.0.1:${p}/kite` : `ws://127.0.0.1:${p}/`),
        },
      ],
    });
  }
}

function freePort() {
  return new Promise((ok, fail) => {
    const s = createServer();
    s.on('error', fail);
    s.listen(0, '127.0.0.1', () => {
      const { port } = s.address();
      s.close(() => ok(port));
    });
  });
}

async function startPeer(args, port) {
  const child = spawn(process.execPath, [resolve(here, 'server-peer.mjs'), ...args, '--port', String(port)], {
    stdio: ['pipe', 'pipe', 'inherit'],
  });
  await new Promise((ok, fail) => {
    let out = '';
    child.stdout.on('data', (d) => {
      out += d;
      if (out.includes('ready')) ok();
    });
    child.on('exit', (code) => fail(new Error(`server-peer ${args.join(' ')} exited (${code})`)));
  });
  return child;
}

function rssKiB(pid) {
  try {
    const m = /VmRSS:\s+(\d+)/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
    return m ? Number(m[1]) : undefined;
  } catch {
    return undefined;
  }
}

async function once(scenario, peer) {
  const port = await freePort();
  const child = await startPeer(peer.args, port);
  const load = loadavg()[0];
  try {
    const { stdout } = await promisify(execFile)(bench, [
      'load',
      '--url',
      peer.url(port),
      '--transport',
      scenario.transport,
      '--concurrency',
      String(scenario.c),
      '--payload',
      'square',
      '--measure-ms',
      String(measureMs),
      '--json',
    ]);
    const s = JSON.parse(stdout);
    return { calls: s.calls_per_sec, p50: s.p50_us, p99: s.p99_us, errors: s.errors, rss: rssKiB(child.pid), load };
  } finally {
    child.stdin.end();
    await new Promise((ok) => (child.exitCode === null ? child.on('exit', ok) : ok()));
  }
}

const median = (xs) => {
  const s = [...xs].sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length % 2 ? s[m] : (s[m - 1] + s[m]) / 2;
};
const int = (x) => Math.round(x).toLocaleString('en-US');

const results = scenarios.map((s) => s.peers.map(() => []));
const order = process.argv.includes('--kitejs-first') ? [1, 0] : [0, 1];
for (let r = 0; r < rounds; r++) {
  for (const [i, s] of scenarios.entries()) {
    for (const j of order) {
      const peer = s.peers[j];
      const x = await once(s, peer);
      results[i][j].push(x);
      console.error(
        `[${r + 1}/${rounds}] ${s.transport} C=${s.c} ${peer.name}: ${int(x.calls)} calls/s, p50 ${int(x.p50)} µs, p99 ${int(x.p99)} µs, ${x.errors} errors, RSS ${x.rss} KiB, load ${x.load.toFixed(2)}`,
      );
    }
  }
}

console.log(`${rounds} rounds, ${measureMs} ms windows after 0.5 s warm-up; medians (range)`);
console.log('| transport | C | server | calls/s | p50 µs | p99 µs | server RSS MiB | errors | load (1 min) | ours ÷ Kite.js |');
console.log('|---|---:|---|---:|---:|---:|---:|---:|---|---:|');
for (const [i, s] of scenarios.entries()) {
  const med = results[i].map((runs) => median(runs.map((x) => x.calls)));
  for (const [j, peer] of s.peers.entries()) {
    const runs = results[i][j];
    const calls = runs.map((x) => x.calls);
    const loads = runs.map((x) => x.load);
    const rss = runs.map((x) => x.rss ?? 0);
    const ratio = j === 0 ? `${(med[0] / med[1]).toFixed(2)}×` : '';
    console.log(
      `| ${s.transport} | ${s.c} | ${peer.name} | ${int(med[j])} (${int(Math.min(...calls))}–${int(Math.max(...calls))}) | ${int(median(runs.map((x) => x.p50)))} | ${int(median(runs.map((x) => x.p99)))} | ${(median(rss) / 1024).toFixed(1)} | ${runs.reduce((a, x) => a + x.errors, 0)} | ${Math.min(...loads).toFixed(1)}–${Math.max(...loads).toFixed(1)} | ${ratio} |`,
    );
  }
}
