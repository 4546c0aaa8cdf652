// Discovery through Kontrol: fetchKites, fetchKite, getToken and watchKites.

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';

import {
  fx,
  Kite,
  Kontrol,
  DISCOVERABLE,
  control,
  kiteKey,
  rejection,
  disconnectAll,
  within,
  TEST_TIMEOUT,
} from './fixtures.mjs';

let kontrol;
const fetched = [];

before(async () => {
  kontrol = new Kontrol({ url: fx.kontrol, auth: { type: 'kiteKey', key: await kiteKey() }, timeout: 15_000 });
});

after(() => {
  disconnectAll(fetched);
  kontrol.disconnect();
});

test('fetchKites finds the discoverable kite; connect() and call it', { timeout: TEST_TIMEOUT }, async () => {
  const kites = await kontrol.fetchKites({ query: DISCOVERABLE });
  fetched.push(...kites);
  assert.ok(Array.isArray(kites));
  assert.equal(kites.length, 1);
  const [kite] = kites;
  assert.ok(kite instanceof Kite);
  assert.equal(kite.remote.name, 'discoverable');
  assert.equal(kite.remote.username, 'fixture');
  assert.equal(typeof kite.remote.id, 'string');
  assert.match(kite.url, /^http:\/\/127\.0\.0\.1:\d+\/kite$/);
  // Unconnected until asked.
  assert.equal(kite.state, 0);
  assert.equal(kite.getToken().split('.').length, 3, 'a JWT');
  kite.connect();
  assert.equal(await kite.tell('square', 7), 49);
  assert.equal(kite.state, 1);
  // The token names the owner of the kite key the Kontrol connection used (the control
  // server's /kite-key makes keys for user "browser").
  const who = await kite.tell('whoami');
  assert.equal(who.username, 'browser');
});

test('fetchKite resolves with the first kite found', { timeout: TEST_TIMEOUT }, async () => {
  const kite = await kontrol.fetchKite({ query: DISCOVERABLE });
  fetched.push(kite);
  assert.equal(kite.remote.name, 'discoverable');
  kite.connect();
  assert.equal(await kite.tell('square', 8), 64);
});

test('fetchKite of a name nobody registered rejects', { timeout: TEST_TIMEOUT }, async () => {
  const e = await rejection(kontrol.fetchKite({ query: { username: 'fixture', name: 'no-such-kite' } }));
  assert.equal(e.name, 'KiteError');
  assert.match(e.message, /No kite found/);
  assert.match(e.message, /no-such-kite/);
});

test('getToken for a fetched kite gives a token it can call with', { timeout: TEST_TIMEOUT }, async () => {
  const [kite] = await kontrol.fetchKites({ query: DISCOVERABLE });
  fetched.push(kite);
  const t = await kontrol.getToken(kite);
  assert.equal(typeof t, 'string');
  assert.equal(t.split('.').length, 3, 'a JWT');
  const direct = new Kite({ url: kite.url, auth: { type: 'token', key: t } });
  fetched.push(direct);
  assert.equal(await direct.tell('square', 9), 81);
});

test('watchKites hears REGISTER for a kite spawned after the watch started', { timeout: TEST_TIMEOUT }, async () => {
  const name = `watched-${process.pid}-${Date.now()}`;
  const events = [];
  let heard;
  const registered = new Promise((resolve) => {
    heard = resolve;
  });
  const initial = await kontrol.watchKites({ query: { username: 'fixture', name } }, (event) => {
    events.push(event);
    if (event.action === 'REGISTER') heard(event);
  });
  // Nothing registered under that name yet; the list carries the watch's id (Kite.js's).
  assert.deepEqual([...initial], []);
  assert.equal(typeof initial.watcherID, 'string');
  assert.deepEqual(events, []);
  const spawned = JSON.parse(await control('POST', `/kontrol/spawn?name=${name}`));
  try {
    const event = await within(registered, 15_000, 'the REGISTER event');
    assert.equal(event.action, 'REGISTER');
    assert.equal(event.kite.name, name);
    assert.equal(event.kite.id, spawned.id);
    assert.equal(event.url, spawned.url);
    assert.equal(typeof event.token, 'string');
    assert.ok(event.remote instanceof Kite, 'event.remote is a Kite');
    fetched.push(event.remote);
    event.remote.connect();
    assert.equal(await event.remote.tell('square', 10), 100);
  } finally {
    await control('POST', `/kontrol/kill?id=${encodeURIComponent(spawned.id)}`);
  }
});

test('the Kontrol connection itself is a kite', { timeout: TEST_TIMEOUT }, async () => {
  assert.ok(kontrol.kite instanceof Kite);
  assert.equal(kontrol.kite.state, 1);
  assert.equal(kontrol.kite.url, fx.kontrol);
});
