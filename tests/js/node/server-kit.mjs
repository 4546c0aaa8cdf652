// Helpers of the tests of the Node kite server (kite-wasm/server): the package's server entry
// and client, loaded without the fixture kites, and JWTs signed with Node's crypto.

import path from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { generateKeyPairSync, sign } from 'node:crypto';
import { createRequire } from 'node:module';

const here = path.dirname(fileURLToPath(import.meta.url));
export const repoRoot = path.resolve(here, '../../..');
export const pkgDir = path.resolve(process.env.KITE_WASM_PKG || path.join(repoRoot, 'kite-wasm/pkg'));

if (typeof globalThis.WebSocket !== 'function') {
  globalThis.WebSocket = (await import('ws')).WebSocket;
}

const load = async (entry) => {
  try {
    return await import(pathToFileURL(path.join(pkgDir, entry)).href);
  } catch (e) {
    throw new Error(`cannot load ${entry} from ${pkgDir} (run scripts/build-wasm): ${e.message}`);
  }
};

export const server = await load('server/index.js');
export const client = await load('node/index.js');
export const { KiteServer, DEFAULT_LIMITS } = server;
export const { Kite } = client;

/** An RSA key pair in PEM (SPKI public, PKCS#8 private), as Kontrol signs with. */
export function keyPair() {
  return generateKeyPairSync('rsa', {
    modulusLength: 2048,
    publicKeyEncoding: { type: 'spki', format: 'pem' },
    privateKeyEncoding: { type: 'pkcs8', format: 'pem' },
  });
}

const b64 = (x) => Buffer.from(typeof x === 'string' ? x : JSON.stringify(x)).toString('base64url');

/** A JWT of `claims` with header `header`, signed with `privateKey` by `hash` (RSA). */
export function jwt(claims, privateKey, { alg = 'RS256', hash = 'sha256', header } = {}) {
  const signed = `${b64(header ?? { alg, typ: 'JWT' })}.${b64(claims)}`;
  const signature = privateKey ? sign(hash, Buffer.from(signed), privateKey) : Buffer.from('');
  return `${signed}.${signature.toString('base64url')}`;
}

export const now = () => Math.floor(Date.now() / 1000);

export { nextEvent as next, within, until, rejection } from './waiting.mjs';

/** A method's own arguments: what precedes the Node-style callback and the context. */
export function split(args) {
  const ctx = args.pop();
  args.pop(); // the Node-style callback: answered by the return value instead
  return { args, ctx };
}

// ---- interoperability: the real Kite.js and sockjs-client of tests/interop ----

const interopRequire = createRequire(path.join(repoRoot, 'tests/interop/package.json'));
const requireInterop = (name) => {
  try {
    return interopRequire(name);
  } catch (e) {
    throw new Error(`cannot load ${name} from tests/interop (run npm ci there): ${e.message}`);
  }
};
/** Kite.js 1.0.13's `Kite` (CommonJS, from tests/interop/node_modules). */
export const KiteJS = requireInterop('kite.js').Kite;
/** sockjs-client 1.6.1. */
export const SockJS = requireInterop('sockjs-client');

/** What the interop tests' methods throw for a bad argument. */
const argumentError = (message) => Object.assign(new Error(message), { type: 'argumentError' });

/**
 * The methods every interop test calls, open to all unless `auth` says otherwise; `whoami`
 * always wants credentials:
 * - `square(x)`: x²; anything but a number is an `argumentError`;
 * - `callback({value, times, cb})`: calls `cb(value)` `times` times, then answers `value`;
 * - `ask(hello)`: calls the caller's `hello('node', reply)` and answers
 *   `client said: <what reply got>`;
 * - `askPeer()`: calls the caller's own method `client.hello('node')` through `ctx.peer` and
 *   answers `client said: <its answer>`;
 * - `fail()`: throws `{type: 'genericError', message: 'node says no', code: 'N1'}`;
 * - `whoami()`: the authenticated user.
 */
export function interopApi({ auth = false } = {}) {
  const method = (func, a = auth) => ({ func: (...x) => func(split(x)), auth: a });
  return {
    square: method(({ args: [x] }) => {
      if (typeof x !== 'number') throw argumentError(`square: not a number: ${JSON.stringify(x)}`);
      return x * x;
    }),
    callback: method(({ args: [{ value, times, cb }] }) => {
      for (let i = 0; i < times; i++) cb(value);
      return value;
    }),
    ask: method(
      ({ args: [hello] }) =>
        new Promise((resolve) => hello('node', (answer) => resolve(`client said: ${answer}`))),
    ),
    askPeer: method(async ({ ctx }) => `client said: ${await ctx.peer.tell('client.hello', 'node')}`),
    fail: method(() => {
      throw Object.assign(new Error('node says no'), { type: 'genericError', code: 'N1' });
    }),
    whoami: method(({ ctx }) => ctx.username, true),
  };
}
