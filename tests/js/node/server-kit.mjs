// Helpers of the tests of the Node kite server (kite-wasm/server): the package's server entry
// and client, loaded without the fixture kites, and JWTs signed with Node's crypto.

import path from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { generateKeyPairSync, sign } from 'node:crypto';

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

/** Resolves with the rejection of `promise`, failing if it resolves. */
export async function rejection(promise, what = 'the call') {
  let value;
  try {
    value = await promise;
  } catch (e) {
    return e;
  }
  throw new Error(`${what} resolved (${JSON.stringify(value)}) instead of rejecting`);
}

/** Resolves with the first `event` of `emitter`, failing after `ms`. */
export function next(emitter, event, ms = 10_000) {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`no '${event}' within ${ms} ms`)), ms);
    emitter.once(event, (...args) => {
      clearTimeout(timer);
      resolve(args);
    });
  });
}

/** Polls `check` until truthy (returned), failing after `ms`. */
export async function until(check, ms, what) {
  const deadline = Date.now() + ms;
  for (;;) {
    const v = await check();
    if (v) return v;
    if (Date.now() > deadline) throw new Error(`${what}: not true within ${ms} ms`);
    await new Promise((r) => setTimeout(r, 20));
  }
}
