// The browser demo: a kite client (kite-wasm) that finds the demo's kites through Kontrol,
// calls them, receives their callbacks and serves a method they call back.
//
// No framework and no build step: plain DOM code over the kite-wasm ES module at /pkg/web.

// The kites listed: those of one user (Kontrol's queries need a username); `?username=` changes it.
const QUERY = { username: new URLSearchParams(location.search).get('username') || 'demo' };
const QUESTION = 'What is the answer?';
const CONNECT_WAIT_MS = 20_000; // how long a call waits for its connection to open
const CALL_TIMEOUT_MS = 15_000; // how long a call waits for its answer
const TICKS_KEPT = 5;
const HISTORY_KEPT = 6;
const TRANSPORTS = {
  auto: ['websocket', 'xhr-streaming', 'xhr-polling'],
  websocket: ['websocket'],
  'xhr-streaming': ['xhr-streaming'],
  'xhr-polling': ['xhr-polling'],
};
const IDENTITY_FIELDS = ['username', 'environment', 'name', 'version', 'region', 'hostname', 'id'];
// What the call panel proposes for each demo kite.
const PRESETS = {
  first: { method: 'square', args: '[4]' },
  clock: { method: 'now', args: '[]' },
  greeter: { method: 'askPage', args: JSON.stringify([QUESTION]) },
};
// This page's identity, sent with every call.
const PAGE = { name: 'demo-page', username: 'browser', environment: 'browser' };

const $ = (id) => document.getElementById(id);

// ---------------------------------------------------------------------------------------------
// Small helpers

function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (v === undefined || v === null || v === false) continue;
    if (k === 'class') node.className = v;
    else if (k === 'text') node.textContent = v;
    else if (k.startsWith('data') || k === 'title' || k === 'role' || k === 'tabindex' || k.startsWith('aria')) {
      node.setAttribute(k.replace(/[A-Z]/g, (c) => '-' + c.toLowerCase()), v);
    } else node[k] = v;
  }
  for (const c of children.flat()) {
    if (c === null || c === undefined || c === false) continue;
    node.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return node;
}

/** The local time of day, HH:MM:SS. */
function timeOfDay() {
  return new Date().toLocaleTimeString('en-GB', { hour12: false });
}

/** An id short enough for a table cell (the full one goes in a title). */
function shortId(id) {
  return id && id.length > 10 ? `${id.slice(0, 8)}…` : id || '';
}

/** Pretty JSON for display (functions and undefined shown readably). */
function pretty(value) {
  if (value === undefined) return 'undefined';
  try {
    return JSON.stringify(value, (_k, v) => (typeof v === 'function' ? '[function]' : v), 2) ?? String(value);
  } catch {
    return String(value);
  }
}

/** The parts of a rejection worth showing: a KiteError's type, message and code. */
function describeError(e) {
  if (e && typeof e === 'object') {
    return {
      type: e.type || e.name || 'Error',
      message: e.message || String(e),
      code: e.code === undefined || e.code === null || e.code === '' ? '' : String(e.code),
    };
  }
  return { type: 'Error', message: String(e), code: '' };
}

function timeout(promise, ms, what) {
  let timer;
  return Promise.race([
    promise,
    new Promise((_, reject) => {
      timer = setTimeout(() => reject(Object.assign(new Error(what), { type: 'timeout' })), ms);
    }),
  ]).finally(() => clearTimeout(timer));
}

const STATES = { 0: 'not ready', 1: 'connected', 3: 'closed', 5: 'connecting' };

function stateName(kite) {
  if (!kite) return '–';
  try {
    return STATES[kite.state] ?? `state ${kite.state}`;
  } catch {
    return 'closed';
  }
}

function transportOf(kite) {
  try {
    return (kite && kite.transport) || null;
  } catch {
    return null;
  }
}

// ---------------------------------------------------------------------------------------------
// Page-wide errors: never a blank page

/** Shows the error banner; `key` names the problem so that its cure can hide it again. */
function showBanner(title, text, key = 'other') {
  $('error-banner-title').textContent = title;
  $('error-banner-text').textContent = text;
  $('error-banner').dataset.key = key;
  $('error-banner').hidden = false;
}

function hideBanner(key) {
  if ($('error-banner').dataset.key === key) $('error-banner').hidden = true;
}

function setKontrolStatus(state, text) {
  const box = $('kontrol-status');
  box.dataset.state = state;
  $('kontrol-status-text').textContent = text;
}

window.addEventListener('error', (ev) => {
  showBanner('Unexpected error', ev.message || String(ev.error));
});
window.addEventListener('unhandledrejection', (ev) => {
  const e = describeError(ev.reason);
  showBanner('Unexpected error', `${e.type}: ${e.message}`);
});

// ---------------------------------------------------------------------------------------------
// State

let Kite; // the kite-wasm classes, once loaded
let Kontrol;
let kontrol = null;
/** Kites Kontrol knows, by id: {identity, url, token, row}. */
const kites = new Map();
let selectedId = null;
let callKite = null; // the call panel's connection
let callKiteId = null; // which kite it is connected to
let streamKite = null;
let greeterKite = null;
let greeterKiteId = null;

/** A connection to a kite found through Kontrol, with this page's identity and `api`. */
function connect(entry, { transports = TRANSPORTS.auto, api, autoReconnect = true } = {}) {
  const kite = new Kite({
    url: entry.url,
    auth: { type: 'token', key: entry.token },
    transports,
    autoReconnect,
    connectTimeout: 8000,
    timeout: CALL_TIMEOUT_MS,
    api,
    ...PAGE,
  });
  // Tokens from Kontrol expire: ask it for a fresh one (the kite waits for setToken).
  kite.on('tokenExpired', () => {
    setTimeout(async () => {
      try {
        const token = await kontrol.getToken(entry.identity);
        entry.token = token;
        kite.setToken(token);
      } catch (e) {
        const err = describeError(e);
        showBanner(`Cannot renew the token for ${entry.identity.name}`, `${err.type}: ${err.message}`, 'token');
      }
    }, 0);
  });
  return kite;
}

/** Frees a kite-wasm object we only read data from (outside any kite-wasm callback). */
function release(kite) {
  if (!kite || typeof kite.free !== 'function') return;
  setTimeout(() => {
    try {
      kite.free();
    } catch {
      // already freed
    }
  }, 0);
}

/** Resolves once `kite` is connected, or rejects readably after a while. */
function opened(kite, what) {
  if (kite.state === 1) return Promise.resolve();
  return timeout(kite.ready(), CONNECT_WAIT_MS, `could not connect to ${what} within ${CONNECT_WAIT_MS / 1000} s`);
}

function findByName(name) {
  for (const entry of kites.values()) {
    if (entry.identity.name === name) return entry;
  }
  return null;
}

// ---------------------------------------------------------------------------------------------
// 1. Kites

function renderCount() {
  const n = kites.size;
  $('kites-count').textContent = `${n} kite${n === 1 ? '' : 's'}`;
  const body = $('kites-body');
  const placeholder = body.querySelector('tr.placeholder');
  if (n === 0 && !placeholder) {
    body.append(el('tr', { class: 'placeholder' }, el('td', { colSpan: 8, text: 'No kites registered right now.' })));
  } else if (n > 0 && placeholder) {
    placeholder.remove();
  }
}

function kiteRow(identity, url) {
  const cells = IDENTITY_FIELDS.map((field) => {
    const value = identity[field] ?? '';
    if (field === 'id') {
      return el('td', { class: 'mono id', dataField: 'id', title: value, dataValue: value }, shortId(value));
    }
    if (field === 'name') {
      return el('td', { class: 'name', dataField: field, dataValue: value }, el('strong', {}, value));
    }
    return el('td', { dataField: field, dataValue: value, class: field === 'hostname' ? 'mono' : undefined }, value);
  });
  cells.push(el('td', { class: 'mono url', dataField: 'url', dataValue: url, title: url }, url));
  const row = el(
    'tr',
    {
      class: 'kite-row',
      dataTestid: 'kite-row',
      dataName: identity.name,
      dataKiteId: identity.id,
      tabindex: '0',
      title: `Select ${identity.name} for the call panel`,
    },
    cells,
  );
  row.addEventListener('click', () => select(identity.id));
  row.addEventListener('keydown', (ev) => {
    if (ev.key === 'Enter' || ev.key === ' ') {
      ev.preventDefault();
      select(identity.id);
    }
  });
  return row;
}

function flash(row, cls) {
  row.classList.remove('added', 'removed');
  void row.offsetWidth; // restart the animation
  row.classList.add(cls);
}

/** Adds (or refreshes) a kite; `highlight` marks rows that arrived through the watch. */
function upsertKite(identity, url, token, highlight) {
  if (!identity || !identity.id) return;
  const old = kites.get(identity.id);
  if (old && !old.removing) {
    old.identity = identity;
    old.url = url || old.url;
    old.token = token || old.token;
    return;
  }
  if (old && old.removing) {
    clearTimeout(old.removing);
    old.row.remove();
  }
  const row = kiteRow(identity, url);
  const entry = { identity, url, token, row, removing: null };
  kites.set(identity.id, entry);
  // Keep the table sorted by name, then id.
  const body = $('kites-body');
  const key = `${identity.name}\u0000${identity.id}`;
  const after = [...body.querySelectorAll('tr.kite-row:not(.removed)')].find(
    (r) => `${r.dataset.name}\u0000${r.dataset.kiteId}` > key,
  );
  body.insertBefore(row, after || null);
  if (identity.id === selectedId) row.classList.add('selected');
  if (highlight) flash(row, 'added');
  renderCount();
}

function removeKite(identity) {
  const entry = identity && kites.get(identity.id);
  if (!entry || entry.removing) return;
  flash(entry.row, 'removed');
  entry.row.dataset.testid = 'kite-row-removed';
  entry.removing = setTimeout(() => {
    entry.row.remove();
    if (kites.get(identity.id) === entry) kites.delete(identity.id);
    renderCount();
  }, 1600);
  if (identity.id === selectedId) {
    renderSelected(`${identity.name} went away (DEREGISTER).`);
  }
  renderCount();
}

function onWatchEvent(ev) {
  const identity = ev && ev.kite;
  const action = ev && ev.action;
  if (!identity) return;
  // This page makes its own connections (with its transports and `api`): it only needs the
  // event's data.
  release(ev.remote);
  if (action === 'REGISTER') {
    upsertKite(identity, ev.url, ev.token, true);
  } else if (action === 'DEREGISTER') {
    removeKite(identity);
  }
  $('watch-last').textContent = `${timeOfDay()} · ${action} ${identity.name} (${shortId(identity.id)})`;
  $('watch-last').dataset.action = action;
}

let loading = null;

/**
 * Lists the kites and watches for changes; run each time the Kontrol connection opens (a watch
 * ends with the connection that asked for it), so it also re-syncs the table after a reconnect.
 */
function loadKites() {
  loading ??= syncKites().finally(() => {
    loading = null;
  });
  return loading;
}

async function syncKites() {
  const watch = $('watch-status');
  watch.textContent = 'watch: starting';
  watch.dataset.state = '';
  let found;
  try {
    found = await kontrol.watchKites({ query: QUERY }, onWatchEvent);
  } catch (e) {
    const err = describeError(e);
    // Kontrol answers "no kites" with an error; it only means none are registered yet.
    if (/no kite found/i.test(err.message)) {
      found = [];
    } else {
      watch.textContent = 'watch: failed';
      watch.dataset.state = 'error';
      if (kites.size === 0) {
        $('kites-body').replaceChildren(
          el('tr', { class: 'placeholder error' }, el('td', { colSpan: 8, text: `Kontrol did not answer getKites: ${err.type}: ${err.message}` })),
        );
      }
      showBanner('Cannot list kites', `${err.type}: ${err.message}`, 'kites');
      return;
    }
  }
  hideBanner('kites');
  $('kites-body').querySelector('tr.placeholder.error')?.remove();
  const now = new Set(found.map((k) => k.remote && k.remote.id));
  for (const [id, entry] of kites) {
    if (!now.has(id)) removeKite(entry.identity);
  }
  for (const k of found) {
    upsertKite(k.remote, k.url, k.getToken(), false);
    release(k);
  }
  renderCount();
  watch.textContent = 'watch: live';
  watch.dataset.state = 'live';
}

// ---------------------------------------------------------------------------------------------
// 2. Call a method (and 3. its transport)

function renderSelected(note) {
  const box = $('selected-kite');
  const entry = selectedId && kites.get(selectedId);
  if (!entry) {
    box.dataset.name = '';
    box.replaceChildren(el('span', { class: 'muted' }, note || 'No kite selected — click a row in the table above.'));
    $('call-button').disabled = true;
    return;
  }
  const id = entry.identity;
  box.dataset.name = id.name;
  const parts = [
    el('span', { class: 'label' }, 'Selected'),
    el('strong', { class: 'sel-name', dataTestid: 'selected-name' }, id.name),
    el('span', { class: 'mono muted' }, `${id.username}/${id.environment}/${id.name}/${id.version}`),
    el('span', { class: 'mono muted url' }, entry.url),
  ];
  if (note) parts.push(el('span', { class: 'warn' }, note));
  box.replaceChildren(...parts);
  $('call-button').disabled = false;
}

function select(id) {
  const entry = kites.get(id);
  if (!entry || entry.removing) return;
  selectedId = id;
  for (const row of document.querySelectorAll('#kites-body tr.kite-row')) {
    row.classList.toggle('selected', row.dataset.kiteId === id);
  }
  const preset = PRESETS[entry.identity.name];
  if (preset) {
    $('method-input').value = preset.method;
    $('args-input').value = preset.args;
  }
  $('args-error').hidden = true;
  renderSelected();
  ensureCallKite();
}

function chosenTransports() {
  return TRANSPORTS[$('transport-select').value] || TRANSPORTS.auto;
}

/** The call panel's connection to the selected kite, made with the chosen transport. */
function ensureCallKite({ force = false } = {}) {
  const entry = selectedId && kites.get(selectedId);
  if (!entry) return null;
  if (callKite && callKiteId === selectedId && !force) return callKite;
  dropCallKite();
  const kite = connect(entry, {
    transports: chosenTransports(),
    api: { answer: (question) => pageAnswer(question, 'call panel') },
  });
  kite.on('open', renderTransport);
  kite.on('close', renderTransport);
  kite.on('error', (e) => {
    const err = describeError(e);
    $('transport-state').textContent = `${err.type}: ${err.message}`;
    $('transport-state').dataset.state = 'error';
  });
  kite.on('info', (message) => noteOutcome(`kite.log from ${entry.identity.name}: ${message}`));
  callKite = kite;
  callKiteId = selectedId;
  renderTransport();
  return kite;
}

function dropCallKite() {
  if (!callKite) return;
  const old = callKite;
  callKite = null;
  callKiteId = null;
  try {
    old.disconnect();
  } catch {
    // already closed
  }
}

function renderTransport() {
  const t = transportOf(callKite);
  const now = $('transport-current');
  now.textContent = t || (callKite ? 'connecting…' : 'not connected');
  now.dataset.transport = t || '';
  const state = $('transport-state');
  state.textContent = callKite ? stateName(callKite) : 'select a kite to connect';
  state.dataset.state = callKite ? String(callKite.state) : 'none';
  renderConnections();
}

function renderConnections() {
  const rows = { kontrol: kontrol && kontrol.kite, call: callKite, stream: streamKite, greeter: greeterKite };
  for (const [name, kite] of Object.entries(rows)) {
    const row = document.querySelector(`#connections tr[data-conn="${name}"]`);
    if (!row) continue;
    row.querySelector('.t').textContent = transportOf(kite) || '–';
    row.querySelector('.s').textContent = kite ? stateName(kite) : '–';
    row.dataset.state = kite ? String(kite.state) : 'none';
  }
}

function parseArgs(text) {
  const trimmed = text.trim();
  if (trimmed === '') return { args: [] };
  let value;
  try {
    value = JSON.parse(trimmed);
  } catch (e) {
    return { error: `Arguments are not valid JSON: ${e.message}` };
  }
  if (!Array.isArray(value)) {
    return { error: `Arguments must be a JSON array (its items become the arguments), e.g. [${trimmed}]` };
  }
  return { args: value };
}

/** What happened on the call connection during the current call (kite.log, calls to the page). */
let callNotes = [];

function setOutcome(state, ...children) {
  const box = $('call-outcome');
  box.dataset.state = state;
  box.replaceChildren(...children);
  if (callNotes.length) {
    box.append(el('ul', { class: 'notes', dataTestid: 'call-notes' }, callNotes.map((n) => el('li', {}, n))));
  }
}

function noteOutcome(text) {
  callNotes.push(text);
  const box = $('call-outcome');
  let notes = box.querySelector('.notes');
  if (!notes) {
    notes = el('ul', { class: 'notes', dataTestid: 'call-notes' });
    box.append(notes);
  }
  notes.append(el('li', {}, text));
}

function transportBadge(t, testid) {
  return el('span', { class: 'badge transport', dataTestid: testid, dataTransport: t || '' }, t || 'unknown');
}

function addHistory(method, args, ok, summary, ms, transport) {
  const list = $('call-history');
  list.querySelector('.empty')?.remove();
  const call = `${method}(${args.map((a) => JSON.stringify(a)).join(', ')})`;
  list.prepend(
    el(
      'li',
      { class: ok ? 'ok' : 'err', dataTestid: 'history-item' },
      el('code', { class: 'call' }, call),
      el('span', { class: 'arrow' }, '→'),
      el('code', { class: 'res' }, summary),
      el('span', { class: 'meta' }, `${ms} ms`),
      transportBadge(transport, 'history-transport'),
    ),
  );
  while (list.children.length > HISTORY_KEPT) list.lastElementChild.remove();
}

let callSeq = 0;

async function doCall(ev) {
  ev.preventDefault();
  const argsError = $('args-error');
  const method = $('method-input').value.trim();
  if (!method) {
    argsError.textContent = 'Enter a method name, e.g. square.';
    argsError.hidden = false;
    $('method-input').focus();
    return;
  }
  const parsed = parseArgs($('args-input').value);
  if (parsed.error) {
    argsError.textContent = parsed.error;
    argsError.hidden = false;
    $('args-input').setAttribute('aria-invalid', 'true');
    $('args-input').focus();
    return;
  }
  argsError.hidden = true;
  $('args-input').removeAttribute('aria-invalid');
  const kite = ensureCallKite();
  if (!kite) return;
  const name = kites.get(callKiteId)?.identity.name ?? '?';
  const seq = ++callSeq;
  callNotes = [];
  const button = $('call-button');
  button.disabled = true;
  setOutcome('pending', el('div', { class: 'muted' }, `Calling ${name}.${method}…`));
  let t0 = performance.now();
  let result;
  let failure;
  let phase = 'call';
  try {
    if (kite.state !== 1) {
      phase = 'connect';
      setOutcome('pending', el('div', { class: 'muted' }, `Connecting to ${name}…`));
      await opened(kite, name);
      phase = 'call';
      t0 = performance.now();
    }
    result = await kite.tell(method, ...parsed.args);
  } catch (e) {
    failure = describeError(e);
  }
  const ms = Math.max(0, Math.round(performance.now() - t0));
  if (seq !== callSeq) return; // a newer call owns the panel
  button.disabled = !selectedId;
  const transport = transportOf(kite);
  renderTransport();
  const meta = el(
    'div',
    { class: 'outcome-meta' },
    el('span', { class: 'rtt', dataTestid: 'call-rtt', id: 'call-rtt', dataMs: String(ms) }, `${ms} ms`),
    el('span', { class: 'muted' }, 'round trip over'),
    transportBadge(transport, 'call-transport'),
    el('span', { class: 'muted' }, `· ${name}.${method}`),
  );
  meta.querySelector('.badge').id = 'call-transport';
  if (failure) {
    setOutcome(
      'error',
      el(
        'div',
        { class: 'error-box', id: 'call-error', dataTestid: 'call-error' },
        el('div', { class: 'error-head' }, phase === 'connect' ? `Could not connect to ${name}` : 'The call failed'),
        el(
          'dl',
          {},
          el('dt', {}, 'type'),
          el('dd', { id: 'call-error-type', dataTestid: 'call-error-type' }, failure.type),
          el('dt', {}, 'message'),
          el('dd', { id: 'call-error-message', dataTestid: 'call-error-message' }, failure.message),
          el('dt', {}, 'code'),
          el('dd', { id: 'call-error-code', dataTestid: 'call-error-code' }, failure.code || '—'),
        ),
      ),
      meta,
    );
    addHistory(method, parsed.args, false, failure.type, ms, transport);
  } else {
    setOutcome(
      'ok',
      el('div', { class: 'result-label' }, 'Result'),
      el('pre', { class: 'result', id: 'call-result', dataTestid: 'call-result' }, pretty(result)),
      meta,
    );
    const summary = pretty(result).replace(/\s+/g, ' ');
    addHistory(method, parsed.args, true, summary.length > 40 ? `${summary.slice(0, 39)}…` : summary, ms, transport);
  }
}

function renderSnippet() {
  const list = chosenTransports().map((t) => `'${t}'`).join(', ');
  $('transport-snippet').textContent = `new Kite({ url, auth, transports: [${list}] })`;
}

function onTransportChange() {
  renderSnippet();
  if (callKite) {
    ensureCallKite({ force: true });
    callNotes = [];
    const t = $('transport-select').value;
    noteOutcome(`Reconnecting with ${t === 'auto' ? 'automatic transport choice' : t}…`);
  }
  renderTransport();
}

// ---------------------------------------------------------------------------------------------
// 4. Callback stream

let ticks = [];

function setStreamStatus(state, text) {
  const s = $('stream-status');
  s.dataset.state = state;
  s.textContent = text;
}

function stopStream(reason) {
  const kite = streamKite;
  streamKite = null;
  $('stream-start').disabled = false;
  $('stream-stop').disabled = true;
  if (kite) {
    try {
      kite.disconnect();
    } catch {
      // already closed
    }
  }
  if (reason) setStreamStatus('stopped', reason);
  renderConnections();
}

async function startStream() {
  const entry = findByName('clock');
  if (!entry) {
    setStreamStatus('error', 'The clock kite is not registered with Kontrol right now.');
    return;
  }
  stopStream();
  ticks = [];
  $('stream-list').replaceChildren();
  $('stream-tick').textContent = '–';
  $('stream-time').textContent = '–';
  $('stream-tick').dataset.tick = '0';
  $('stream-start').disabled = true;
  $('stream-stop').disabled = false;
  const kite = connect(entry, { autoReconnect: false });
  streamKite = kite;
  kite.on('open', renderConnections);
  kite.on('close', () => {
    renderConnections();
    if (streamKite === kite) stopStream('The connection to clock closed; the stream ended.');
  });
  setStreamStatus('connecting', 'Connecting to clock…');
  try {
    await opened(kite, 'clock');
    if (streamKite !== kite) return;
    renderConnections();
    const reply = await kite.tell('subscribe', (event) => {
      if (streamKite !== kite) return;
      onTick(event);
    });
    if (streamKite !== kite) return;
    setStreamStatus('running', `Streaming over ${transportOf(kite) || 'SockJS'} — clock said “${reply}”.`);
  } catch (e) {
    if (streamKite !== kite) return;
    const err = describeError(e);
    stopStream(`Could not subscribe: ${err.type}: ${err.message}`);
    $('stream-status').dataset.state = 'error';
  }
}

function onTick(event) {
  const tick = Number(event && event.tick);
  const time = (event && event.time) || '';
  $('stream-tick').textContent = String(tick);
  $('stream-tick').dataset.tick = String(tick);
  $('stream-time').textContent = time;
  const tickEl = $('stream-tick');
  tickEl.classList.remove('bump');
  void tickEl.offsetWidth;
  tickEl.classList.add('bump');
  ticks.unshift({ tick, time, at: timeOfDay() });
  ticks = ticks.slice(0, TICKS_KEPT);
  $('stream-list').replaceChildren(
    ...ticks.map((t) =>
      el('li', { dataTick: String(t.tick) }, el('span', { class: 'n' }, `#${t.tick}`), el('span', { class: 'mono' }, t.time)),
    ),
  );
}

// ---------------------------------------------------------------------------------------------
// 5. The page serves methods

/** The page's `answer(question)`, served to whichever kite asks. */
function pageAnswer(question, via) {
  const answer = `42, said the page at ${timeOfDay()}`;
  if (via === 'greeter') {
    const box = $('greeter-answer-call');
    box.replaceChildren(
      el('code', {}, `answer(${JSON.stringify(question)})`),
      el('span', { class: 'arrow' }, '→'),
      el('code', { class: 'ok' }, JSON.stringify(answer)),
    );
    box.dataset.question = String(question);
    box.dataset.answer = answer;
    markStep('answer', 'done');
  } else {
    noteOutcome(`The kite called the page's answer(${JSON.stringify(question)}) → ${JSON.stringify(answer)}`);
  }
  return answer;
}

function markStep(step, state) {
  const item = document.querySelector(`#greeter-steps [data-step="${step}"]`);
  if (item) item.dataset.state = state;
}

function greeterConnection(entry) {
  if (greeterKite && greeterKiteId === entry.identity.id && greeterKite.state !== 3) return greeterKite;
  if (greeterKite) {
    try {
      greeterKite.disconnect();
    } catch {
      // already closed
    }
  }
  const kite = connect(entry, { api: { answer: (question) => pageAnswer(question, 'greeter') } });
  kite.on('info', (message) => {
    const text = typeof message === 'string' ? message : pretty(message);
    $('greeter-log').textContent = text;
    $('greeter-log').dataset.message = text;
    markStep('log', 'done');
  });
  kite.on('open', renderConnections);
  kite.on('close', renderConnections);
  greeterKite = kite;
  greeterKiteId = entry.identity.id;
  return kite;
}

async function askGreeter() {
  const entry = findByName('greeter');
  const result = $('greeter-result');
  for (const step of ['ask', 'log', 'answer', 'result']) markStep(step, '');
  $('greeter-log').textContent = '…';
  $('greeter-answer-call').textContent = '…';
  result.textContent = '…';
  result.dataset.state = 'pending';
  if (!entry) {
    result.textContent = 'The greeter kite is not registered with Kontrol right now.';
    result.dataset.state = 'error';
    return;
  }
  const button = $('ask-greeter');
  button.disabled = true;
  $('greeter-ask').textContent = `asked at ${timeOfDay()}`;
  markStep('ask', 'active');
  try {
    const kite = greeterConnection(entry);
    await opened(kite, 'greeter');
    renderConnections();
    const t0 = performance.now();
    const answer = await kite.tell('askPage', QUESTION);
    const ms = Math.round(performance.now() - t0);
    markStep('ask', 'done');
    markStep('result', 'done');
    result.dataset.state = 'ok';
    result.replaceChildren(
      el('code', { class: 'ok', dataTestid: 'greeter-result-text' }, JSON.stringify(answer)),
      el(
        'span',
        { class: 'meta-line' },
        el('span', {}, `${ms} ms round trip over`),
        transportBadge(transportOf(kite), 'greeter-transport'),
      ),
    );
    result.dataset.result = String(answer);
  } catch (e) {
    const err = describeError(e);
    markStep('result', 'error');
    result.dataset.state = 'error';
    result.textContent = `${err.type}: ${err.message}${err.code ? ` (code ${err.code})` : ''}`;
  } finally {
    button.disabled = false;
  }
}

// ---------------------------------------------------------------------------------------------
// Start

async function main() {
  setKontrolStatus('connecting', 'Loading kite-wasm…');
  try {
    const mod = await import('/pkg/web/kite.js');
    await mod.default();
    ({ Kite, Kontrol } = mod);
  } catch (e) {
    setKontrolStatus('error', 'kite-wasm failed to load');
    showBanner(
      'Could not load the kite-wasm package',
      `/pkg/web/kite.js: ${e && e.message ? e.message : e}. Build it with scripts/build-wasm and restart kite-demo.`,
    );
    $('kites-body').replaceChildren(el('tr', { class: 'placeholder error' }, el('td', { colSpan: 8, text: 'kite-wasm is not loaded.' })));
    return;
  }

  let config;
  try {
    const res = await fetch('/config.json', { cache: 'no-store' });
    if (!res.ok) throw new Error(`HTTP ${res.status} ${res.statusText}`);
    config = await res.json();
    if (!config.kontrol || !config.kiteKey) throw new Error('it has no "kontrol" URL or "kiteKey"');
  } catch (e) {
    setKontrolStatus('error', 'no configuration');
    showBanner('Could not read /config.json', `${e.message}. Is the page served by kite-demo?`);
    $('kites-body').replaceChildren(el('tr', { class: 'placeholder error' }, el('td', { colSpan: 8, text: 'No Kontrol to ask.' })));
    return;
  }
  $('kontrol-url').textContent = config.kontrol;

  setKontrolStatus('connecting', 'Connecting to Kontrol…');
  try {
    kontrol = new Kontrol({ url: config.kontrol, auth: { type: 'kiteKey', key: config.kiteKey }, ...PAGE });
  } catch (e) {
    const err = describeError(e);
    setKontrolStatus('error', 'Kontrol: bad options');
    showBanner('Cannot create the Kontrol client', `${err.type}: ${err.message}`);
    return;
  }
  const k = kontrol.kite;
  const onOpen = () => {
    setKontrolStatus('ok', `Kontrol connected · ${transportOf(k) || 'SockJS'}`);
    hideBanner('kontrol');
    renderConnections();
    // Out of the event's dispatch: the watch is a call on this very connection.
    setTimeout(loadKites, 0);
  };
  k.on('open', onOpen);
  k.on('close', () => {
    setKontrolStatus('error', 'Kontrol disconnected — reconnecting…');
    $('watch-status').textContent = 'watch: lost';
    $('watch-status').dataset.state = 'error';
    renderConnections();
  });
  k.on('error', (e) => {
    if (k.state === 1) return;
    const err = describeError(e);
    setKontrolStatus('error', 'Kontrol unreachable — retrying');
    showBanner(`Cannot reach Kontrol at ${config.kontrol}`, `${err.message} — retrying. Is kite-demo running?`, 'kontrol');
    if (kites.size === 0) {
      $('kites-body').replaceChildren(el('tr', { class: 'placeholder error' }, el('td', { colSpan: 8, text: 'Kontrol is unreachable.' })));
    }
  });
  k.on('backOffFailed', () => {
    setKontrolStatus('error', 'Kontrol unreachable');
    showBanner('Kontrol is unreachable', `Gave up reconnecting to ${config.kontrol}. Is kite-demo still running? Reload the page to try again.`, 'kontrol');
  });
  if (k.state === 1) onOpen();
}

$('query-username').textContent = `username = ${QUERY.username}`;
renderSnippet();
$('call-form').addEventListener('submit', doCall);
$('args-input').addEventListener('input', () => {
  $('args-error').hidden = true;
  $('args-input').removeAttribute('aria-invalid');
});
$('transport-select').addEventListener('change', onTransportChange);
$('stream-start').addEventListener('click', startStream);
$('stream-stop').addEventListener('click', () => stopStream('Stopped: the connection to clock was closed.'));
$('ask-greeter').addEventListener('click', askGreeter);
// Transports change underneath (fallbacks, reconnects): keep the labels honest.
setInterval(() => {
  renderConnections();
  if (callKite) {
    const t = transportOf(callKite) || '';
    if ($('transport-current').dataset.transport !== t || $('transport-state').dataset.state !== String(callKite.state)) {
      renderTransport();
    }
  }
}, 1000);

main().catch((e) => {
  const err = describeError(e);
  showBanner('The demo failed to start', `${err.type}: ${err.message}`);
});
