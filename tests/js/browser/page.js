// The page side of page.test.mjs: loads the browser build of the kite-wasm package and runs
// checks the test asks for through window.kiteTests, showing each result in the page.

import init, { Kite, Kontrol } from '/pkg/web/kite.js';

const status = document.getElementById('status');
const rows = document.getElementById('results');

/** Kites made by the checks, disconnected by `cleanup`. */
const open = [];

function track(kite) {
  open.push(kite);
  return kite;
}

/** What a rejection says, as plain data. */
function errorData(e) {
  return {
    isError: e instanceof Error,
    name: e && e.name,
    type: e && e.type,
    message: e && e.message,
    code: e && e.code,
  };
}

function show(name, ok, detail) {
  const tr = document.createElement('tr');
  const cells = [
    [name, ''],
    [ok ? '✔ pass' : '✖ fail', ok ? 'ok' : 'fail'],
    [typeof detail === 'string' ? detail : JSON.stringify(detail), 'detail'],
  ];
  for (const [text, cls] of cells) {
    const td = document.createElement('td');
    td.textContent = text;
    if (cls) td.className = cls;
    tr.appendChild(td);
  }
  rows.appendChild(tr);
}

/** How each check is named in the page. */
const labels = {
  square: (transport) => `square over ${transport}`,
  count: () => 'callbacks both ways (count)',
  callPage: () => "the kite calls the page's methods (callPage)",
  fallback: () => 'fallback without websocket (noWebsocket kite)',
  kontrol: () => 'Kontrol: fetchKites, connect, square',
  fail: () => 'an error rejects with a KiteError (fail)',
};

/** The checks: each resolves with plain data for the test to assert on. */
const checks = {
  async square(fx, transport) {
    const kite = track(new Kite({ url: fx.math, transports: [transport], timeout: 10_000 }));
    const result = await kite.tell('square', 4);
    return { result, transport: kite.transport, state: kite.state };
  },

  async count(fx) {
    const kite = track(new Kite({ url: fx.math, timeout: 10_000 }));
    const seen = [];
    const result = await kite.tell('count', 3, (i) => seen.push(i));
    return { result, seen };
  },

  async callPage(fx) {
    const kite = track(
      new Kite({
        url: fx.math,
        timeout: 10_000,
        api: {
          hello: (name) => `hi ${name} from ${navigator.userAgent.includes('Chrome') ? 'Chromium' : 'a browser'}`,
          later: (n) => new Promise((resolve) => setTimeout(() => resolve(n * 2), 10)),
        },
      }),
    );
    return {
      hello: await kite.tell('callPage', 'hello', 'kite'),
      later: await kite.tell('callPage', 'later', 21),
    };
  },

  async fallback(fx) {
    const kite = track(new Kite({ url: fx.noWebsocket, timeout: 10_000 }));
    const result = await kite.tell('square', 6);
    return { result, transport: kite.transport };
  },

  async kontrol(fx) {
    const res = await fetch(`${fx.control}/kite-key`);
    if (!res.ok) throw new Error(`kite-key: HTTP ${res.status}`);
    const key = await res.text();
    const kontrol = new Kontrol({ url: fx.kontrol, auth: { type: 'kiteKey', key }, timeout: 10_000 });
    track(kontrol.kite);
    const kites = await kontrol.fetchKites({ query: { username: 'fixture', name: 'discoverable' } });
    kites.forEach(track);
    const [kite] = kites;
    kite.connect();
    const result = await kite.tell('square', 7);
    return { found: kites.length, name: kite.remote.name, username: kite.remote.username, result };
  },

  async fail(fx) {
    const kite = track(new Kite({ url: fx.math, timeout: 10_000 }));
    let v;
    try {
      v = await kite.tell('fail', 'boom');
    } catch (e) {
      return errorData(e);
    }
    throw new Error(`fail resolved with ${JSON.stringify(v)} instead of rejecting`);
  },
};

window.kiteTests = {
  /** Runs check `name` with the fixture URLs; resolves with {ok, value} or {ok: false, error}. */
  async run(name, fx, ...args) {
    const label = labels[name] ? labels[name](...args) : name;
    try {
      const value = await checks[name](fx, ...args);
      show(label, true, value);
      return { ok: true, value };
    } catch (e) {
      const error = errorData(e);
      show(label, false, error);
      return { ok: false, error };
    }
  },

  /** Disconnects every kite the checks made. */
  cleanup() {
    for (const kite of open.splice(0)) kite.disconnect();
    status.textContent += ' — all kites disconnected';
  },
};

try {
  await init();
  status.textContent = `module loaded (${navigator.userAgent.match(/Chrom\w*\/[\d.]+/)?.[0] ?? 'browser'})`;
  window.kiteReady = true;
} catch (e) {
  status.textContent = `loading failed: ${e}`;
  window.kiteReady = false;
  window.kiteLoadError = String(e && e.stack ? e.stack : e);
}
