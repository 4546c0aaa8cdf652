// Shared helpers of the Node tests of the kite-wasm npm package (the fixtures' URLs and the
// package itself come from package.mjs).

import path from 'node:path';
import { after } from 'node:test';

import { fx, repoRoot, pkgDir, Kite, Kontrol, KiteError, LogLevel } from './package.mjs';

export { fx, repoRoot, pkgDir, Kite, Kontrol, KiteError, LogLevel };
export { nextEvent, within, until, rejection } from './waiting.mjs';

/**
 * How long a test file's process may keep running after its last test. node --test waits for
 * each file's process to exit, so something a kite leaves open after disconnect() (a request,
 * a socket) would hang the whole suite. Past this delay the process reports what is still open
 * and exits with a failure instead. (lifecycle.test.mjs checks for such leftovers precisely.)
 */
const LINGER_MS = 15_000;

function openHandles() {
  return process
    ._getActiveHandles()
    .filter((h) => h !== process.stdout && h !== process.stderr && h !== process.stdin)
    .map((h) =>
      h.constructor.name === 'Socket' && h.remotePort
        ? `socket to ${h.remoteAddress}:${h.remotePort} (${h.bytesRead} bytes read)`
        : h.constructor.name,
    );
}

after(() => {
  const timer = setTimeout(() => {
    process.stderr.write(
      `\n${path.basename(process.argv[1] || 'test')}: still running ${LINGER_MS} ms after the last ` +
        `test, with open handles: ${openHandles().join(', ') || 'none'}. A kite left something ` +
        'open after disconnect(): exiting with a failure.\n',
    );
    process.exit(1);
  }, LINGER_MS);
  timer.unref();
});

/** Time limits, so that a call that never settles fails its test instead of hanging it. */
export const TEST_TIMEOUT = 30_000;
export const SUITE_TIMEOUT = 60_000;

/** The SockJS transports every call test runs over. */
export const TRANSPORTS = ['websocket', 'xhr-streaming', 'xhr-polling'];

/** The Kontrol query matching the `discoverable` fixture kite. */
export const DISCOVERABLE = { username: 'fixture', name: 'discoverable' };

/** Records every `event` of `kite` in a list. */
export function record(kite, event) {
  const seen = [];
  kite.on(event, (...args) => seen.push(args.length <= 1 ? args[0] : args));
  return seen;
}

/**
 * A GET or POST to the control server (with `body`, sent as JSON, if given); resolves with the
 * body (text), failing on a non-2xx.
 */
export async function control(method, pathAndQuery, body) {
  const init = body === undefined ? { method } : { method, body: JSON.stringify(body) };
  const res = await fetch(fx.control + pathAndQuery, init);
  const text = await res.text();
  if (!res.ok) throw new Error(`${method} ${pathAndQuery}: ${res.status} ${text}`);
  return text;
}

/** A token for the auth kite valid for `ttl` seconds (negative: expired). */
export const token = (ttl) => control('GET', `/token?ttl=${ttl}`);

/** A kite key for the Kontrol. */
export const kiteKey = () => control('GET', '/kite-key');

/** Disconnects every kite given (ignoring nulls). */
export function disconnectAll(...kites) {
  for (const k of kites.flat()) {
    if (k) k.disconnect();
  }
}
