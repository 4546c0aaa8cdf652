// What the Playwright tests of the package share: a static server for the package and a
// test's own page files, and headless Chromium.

import http from 'node:http';
import fs from 'node:fs/promises';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

import { chromium } from 'playwright-core';

export const here = path.dirname(fileURLToPath(import.meta.url));
const repoRoot = path.resolve(here, '../../..');
export const pkgDir = path.resolve(process.env.KITE_WASM_PKG || path.join(repoRoot, 'kite-wasm/pkg'));
export const artifacts = path.join(here, 'artifacts');
const chromiumPath = process.env.CHROMIUM_PATH || '/usr/bin/chromium';

if (!process.env.KITE_FIXTURES) {
  throw new Error(
    'KITE_FIXTURES is not set: this test needs the fixture kites, run scripts/test-wasm ' +
      '(KITE_WASM_ONLY=browser scripts/test-wasm for the browser tests only)',
  );
}
/** The fixture kites' URLs. */
export const fx = JSON.parse(process.env.KITE_FIXTURES);

const TYPES = {
  '.html': 'text/html; charset=utf-8',
  '.js': 'text/javascript; charset=utf-8',
  '.mjs': 'text/javascript; charset=utf-8',
  '.wasm': 'application/wasm',
  '.json': 'application/json',
  '.ts': 'text/plain; charset=utf-8',
  '.md': 'text/plain; charset=utf-8',
};

/** Serves /pkg/* from the package directory and, from this directory, only `pages` (file
 *  names); resolves with the server once it listens on 127.0.0.1. */
export function serveStatic(pages) {
  const roots = [
    ['/pkg/', pkgDir],
    ['/', here],
  ];
  const server = http.createServer(async (req, res) => {
    const url = new URL(req.url, 'http://localhost');
    const pathname = decodeURIComponent(url.pathname);
    for (const [prefix, root] of roots) {
      if (!pathname.startsWith(prefix)) continue;
      const file = path.resolve(root, '.' + pathname.slice(prefix.length - 1));
      if (!file.startsWith(root + path.sep)) break;
      if (root === here && !pages.includes(path.relative(here, file))) break;
      try {
        const body = await fs.readFile(file);
        res.writeHead(200, {
          'Content-Type': TYPES[path.extname(file)] || 'application/octet-stream',
          'Cache-Control': 'no-store',
        });
        res.end(body);
      } catch {
        res.writeHead(404, { 'Content-Type': 'text/plain' }).end(`not found: ${pathname}`);
      }
      return;
    }
    res.writeHead(404, { 'Content-Type': 'text/plain' }).end(`not found: ${pathname}`);
  });
  return new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => resolve(server));
  });
}

/** Headless Chromium (Debian's). */
export function launchChromium() {
  return chromium.launch({
    executablePath: chromiumPath,
    headless: true,
    args: [
      '--headless',
      '--no-sandbox',
      '--disable-gpu',
      '--disable-quic',
      '--no-first-run',
      '--disable-background-networking',
      '--disable-component-update',
      '--disable-sync',
    ],
  });
}
