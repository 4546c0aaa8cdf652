// The rest of Kite.js's public API: KiteError and its codeIs/codeIsnt guards, Kite.Error, the
// logLevel and logger options, Kontrol#register, Kontrol#cancelWatcher and stoppable watches.
// Over real sockets, against the fixtures' kites and Kontrol and a Node KiteServer.

import { test, after } from 'node:test';
import assert from 'node:assert/strict';

import {
  fx,
  Kite,
  Kontrol,
  KiteError,
  LogLevel,
  DISCOVERABLE,
  control,
  kiteKey,
  rejection,
  disconnectAll,
  within,
  until,
  nextEvent,
  TEST_TIMEOUT,
} from './fixtures.mjs';
import { KiteServer, server as serverEntry } from './server-kit.mjs';

const opened = [];
after(() => disconnectAll(opened));

/** A logger that keeps every line: `[sink, ...args]`; `first(test)` resolves with the first line
 *  that passes `test`. */
function recorder() {
  const lines = [];
  const waiting = [];
  const keep = (sink) => (...args) => {
    const line = [sink, ...args];
    lines.push(line);
    for (const w of waiting.splice(0)) {
      if (w.test(line)) w.resolve(line);
      else waiting.push(w);
    }
  };
  const first = (test) => {
    const found = lines.find(test);
    if (found) return Promise.resolve(found);
    return new Promise((resolve) => waiting.push({ test, resolve }));
  };
  return { lines, first, logger: { error: keep('error'), warn: keep('warn'), info: keep('info'), debug: keep('debug') } };
}

test('every rejection is a KiteError; codeIs/codeIsnt pick errors by code', { timeout: TEST_TIMEOUT }, async () => {
  const kite = new Kite({ url: fx.math, logLevel: 'none' });
  opened.push(kite);
  const e = await rejection(kite.tell('fail', 'boom'));
  assert.ok(e instanceof KiteError, 'instanceof the exported KiteError');
  assert.ok(e instanceof Error);
  assert.equal(e.name, 'KiteError');
  assert.equal(e.code, 'E42');
  assert.equal(KiteError.codeIs('E42')(e), true);
  assert.equal(KiteError.codeIs('E43')(e), false);
  assert.equal(KiteError.codeIsnt('E42')(e), false);
  assert.equal(KiteError.codeIsnt('E43')(e), true);
  // Null-safe, unlike Kite.js's.
  assert.equal(KiteError.codeIs('E42')(null), false);
  assert.equal(KiteError.codeIsnt('E42')(undefined), true);
  // As a catch guard: only the matching code is recovered.
  const guarded = (code) =>
    kite.tell('fail', 'again').catch((err) => {
      if (KiteError.codeIs(code)(err)) return 'recovered';
      throw err;
    });
  assert.equal(await guarded('E42'), 'recovered');
  assert.ok((await rejection(guarded('nope'))) instanceof KiteError);
  // Kite.js's Kite.Error and makeProperError.
  assert.equal(Kite.Error, KiteError);
  const made = KiteError.makeProperError({ type: 'x', message: 'm', code: 'c' });
  assert.ok(made instanceof KiteError);
  assert.deepEqual([made.type, made.message, made.code], ['x', 'm', 'c']);
  // The server entry exports the same class its clients reject with.
  assert.equal(typeof serverEntry.KiteError, 'function');
  assert.deepEqual(serverEntry.LogLevel, LogLevel);
});

test('logLevel and logger: lines at or above the level, Kite.js-shaped, to the given sink', { timeout: TEST_TIMEOUT }, async () => {
  assert.deepEqual(
    { ...LogLevel },
    { NONE: -1, CRITICAL: 0, ERROR: 1, WARNING: 2, NOTICE: 3, INFO: 4, DEBUG: 5 },
  );
  const notice = recorder();
  const kite = new Kite({ url: fx.math, name: 'logged', logLevel: LogLevel.NOTICE, logger: notice.logger });
  opened.push(kite);
  assert.equal(await kite.tell('square', 3), 9);
  kite.disconnect();
  const texts = notice.lines.map((l) => l.slice(1).join(' '));
  assert.ok(texts.includes(`[logged] NOTICE Connected to Kite: ${fx.math}`), texts.join('\n'));
  assert.ok(texts.includes(`[logged] NOTICE Disconnecting from ${fx.math}`), texts.join('\n'));
  // INFO and DEBUG are below NOTICE.
  assert.ok(!texts.some((t) => /\] (INFO|DEBUG) /.test(t)), texts.join('\n'));
  assert.ok(notice.lines.every(([sink]) => sink === 'info'));

  const debug = recorder();
  const chatty = new Kite({ url: fx.math, name: 'chatty', logLevel: 'debug', logger: debug.logger });
  opened.push(chatty);
  assert.equal(await chatty.tell('square', 4), 16);
  chatty.disconnect();
  const sent = debug.lines.filter(([sink, , level, what]) => sink === 'debug' && level === 'DEBUG' && what === 'Sending:');
  assert.ok(sent.some((l) => String(l[4]).includes('"square"')), 'the call was logged as sent');
  const received = debug.lines.filter((l) => l[3] === 'Received:');
  assert.ok(received.length > 0, 'answers were logged as received');
  assert.ok(debug.lines.some((l) => l[2] === 'INFO' && /Trying to connect to/.test(l[3])));

  // At the default level (ERROR), an error nobody listens to goes to the logger; with a
  // listener, it goes to the listener only.
  const nowhere = 'http://127.0.0.1:9/kite';
  const unheard = recorder();
  const lonely = new Kite({ url: nowhere, transports: ['websocket'], logger: unheard.logger, autoReconnect: false });
  opened.push(lonely);
  const [sink, , category, , err] = await within(
    unheard.first(([, , level]) => level === 'ERROR'),
    15_000,
    'an ERROR line for the failed connection',
  );
  lonely.disconnect();
  assert.equal(sink, 'error');
  assert.equal(category, 'ERROR');
  assert.ok(err instanceof KiteError, 'the error itself is logged');
  assert.ok(unheard.lines.every(([, , level]) => level === 'ERROR'), JSON.stringify(unheard.lines));
  const heard = recorder();
  const listened = new Kite({ url: nowhere, transports: ['websocket'], logger: heard.logger, autoReconnect: false });
  opened.push(listened);
  const [error] = await nextEvent(listened, 'error', 15_000);
  listened.disconnect();
  assert.ok(error instanceof KiteError);
  assert.deepEqual(heard.lines, [], 'a listened-to error is not logged');
  const none = recorder();
  const silent = new Kite({ url: fx.math, logLevel: 'none', logger: none.logger });
  opened.push(silent);
  assert.equal(await silent.tell('square', 5), 25);
  silent.disconnect();
  assert.deepEqual(none.lines, [], 'logLevel none writes nothing');
});

test('a logger that throws loses its line, not the call', { timeout: TEST_TIMEOUT }, async () => {
  const kite = new Kite({
    url: fx.math,
    logLevel: 'debug',
    logger: { info() { throw new Error('sink down'); }, debug() { throw new Error('sink down'); } },
  });
  opened.push(kite);
  assert.equal(await kite.tell('square', 6), 36);
  kite.disconnect();
});

test("KiteServer's auth: false (Kite.js's) opens the methods given without auth", { timeout: TEST_TIMEOUT }, async () => {
  const server = new KiteServer({
    name: 'open-by-default',
    kiteKey: false,
    auth: false,
    logLevel: 'none',
    api: { open: () => 'open', closed: { func: () => 'closed', auth: true } },
  });
  const { url } = await server.listen(0);
  const kite = new Kite({ url, logLevel: 'none' });
  opened.push(kite);
  try {
    assert.equal(await kite.tell('open'), 'open');
    const e = await rejection(kite.tell('closed'));
    assert.ok(e instanceof KiteError);
    assert.equal(e.type, 'authenticationError');
  } finally {
    kite.disconnect();
    await server.close();
  }
});

test('Kontrol#register: a Node kite registered by URL is found and called by another client', { timeout: TEST_TIMEOUT }, async () => {
  const name = `registered-js-${process.pid}`;
  const server = new KiteServer({ name, auth: false, logLevel: 'none', api: { square: (n) => n * n } });
  const { url } = await server.listen(0);
  const key = await kiteKey();
  const registrar = new Kontrol({ url: fx.kontrol, name, auth: { type: 'kiteKey', key }, logLevel: 'none' });
  const finder = new Kontrol({ url: fx.kontrol, auth: { type: 'kiteKey', key }, logLevel: 'none' });
  opened.push(registrar.kite, finder.kite);
  try {
    await assert.rejects(registrar.register(''), TypeError);
    const result = await registrar.register(url);
    assert.equal(result.url, url);
    const [found] = await finder.fetchKites({ query: { username: 'browser', name } });
    opened.push(found);
    assert.equal(found.url, url);
    found.connect();
    assert.equal(await found.tell('square', 12), 144);
  } finally {
    registrar.disconnect();
    finder.disconnect();
    await server.close();
  }
});

test('Kontrol#register again: one re-registration, at the latest URL, when Kontrol comes back', { timeout: TEST_TIMEOUT }, async () => {
  const name = `reregistered-js-${process.pid}`;
  const key = await kiteKey();
  const registrar = new Kontrol({ url: fx.kontrol, name, auth: { type: 'kiteKey', key }, logLevel: 'none' });
  const finder = new Kontrol({ url: fx.kontrol, auth: { type: 'kiteKey', key }, logLevel: 'none' });
  opened.push(registrar.kite, finder.kite);
  const first = [];
  const second = [];
  await registrar.register('http://127.0.0.1:9/first', { onRegister: (r) => first.push(r.url) });
  await registrar.register('http://127.0.0.1:9/second', { onRegister: (r) => second.push(r.url) });
  registrar.kite.disconnect(true);
  await until(() => second.length === 1, 10_000, 'registered again');
  await registrar.kite.ping();
  assert.deepEqual(second, ['http://127.0.0.1:9/second']);
  assert.deepEqual(first, [], 'the first registration was not repeated');
  const found = await finder.fetchKites({ query: { username: 'browser', name } });
  assert.deepEqual(found.map((k) => k.url), ['http://127.0.0.1:9/second']);
  registrar.disconnect();
  finder.disconnect();
});

test('watch(): a cancelled watch hears nothing more; cancelWatcher ends it on Kontrol', { timeout: TEST_TIMEOUT }, async () => {
  const key = await kiteKey();
  const kontrol = new Kontrol({ url: fx.kontrol, auth: { type: 'kiteKey', key }, timeout: 15_000, logLevel: 'none' });
  opened.push(kontrol.kite);
  const name = `watched-cancel-${process.pid}`;
  const query = { query: { username: 'fixture', name } };
  const cancelled = [];
  const stopped = await kontrol.watch(query, (event) => cancelled.push(event));
  assert.deepEqual([...stopped.kites], []);
  // Our Kontrol answers a watcherID (as Kite.js's did; Go's answers none): cancel() stops
  // delivery here and ends the watch on Kontrol, once.
  assert.equal(typeof stopped.watcherID, 'string');
  await stopped.cancel();
  await stopped.cancel();
  const again = await rejection(kontrol.cancelWatcher(stopped.watcherID));
  assert.ok(again instanceof KiteError);
  assert.equal(again.message, 'watcher does not exist');
  let heard;
  const witness = new Promise((resolve) => {
    heard = resolve;
  });
  const live = await kontrol.watch(query, (event) => {
    if (event.action === 'REGISTER') heard(event);
  });
  const spawned = JSON.parse(await control('POST', `/kontrol/spawn?name=${name}`));
  try {
    const event = await within(witness, 15_000, 'the live watch hearing REGISTER');
    assert.equal(event.kite.id, spawned.id);
    // Both watches' events come over the one connection, in order: after a round trip the
    // cancelled one would have heard it too.
    await kontrol.kite.ping();
    assert.deepEqual(cancelled, [], 'the cancelled watch heard nothing');
  } finally {
    await control('POST', `/kontrol/kill?id=${encodeURIComponent(spawned.id)}`);
    await live.cancel();
  }
  // cancelWatcher is Kite.js's call of that name on Kontrol; an id this connection did not
  // start is no watcher.
  const e = await rejection(kontrol.cancelWatcher('some-id'));
  assert.ok(e instanceof KiteError);
  assert.equal(e.type, 'genericError');
  assert.equal(e.message, 'watcher does not exist');
  kontrol.disconnect();
});

test('watchKites still resolves with the kites found now', { timeout: TEST_TIMEOUT }, async () => {
  const kontrol = new Kontrol({ url: fx.kontrol, auth: { type: 'kiteKey', key: await kiteKey() }, logLevel: 'none' });
  opened.push(kontrol.kite);
  const kites = await kontrol.watchKites({ query: DISCOVERABLE }, () => {});
  opened.push(...kites);
  assert.equal(kites.length, 1);
  assert.ok(kites[0] instanceof Kite);
  kontrol.disconnect();
});
