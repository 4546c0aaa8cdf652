// The WebRTC page of the demo: a kite of this page on the `first` kite (found through Kontrol;
// it relays WebRTC signals), wrapped in kite-wasm/webrtc's KiteWebRTC, serving `square` to the
// pages that connect to it and calling theirs.

import init, { Kontrol } from '/pkg/web/kite.js';
import { KiteWebRTC } from '/pkg/web/webrtc.js';

const $ = (id) => document.getElementById(id);
const PAGE = { name: 'webrtc-page', username: 'browser', environment: 'browser' };

function log(text) {
  const li = document.createElement('li');
  li.textContent = `${new Date().toLocaleTimeString()} ${text}`;
  $('rtc-log').append(li);
}

function status(state, text) {
  $('rtc-status').dataset.state = state;
  $('rtc-status-text').textContent = text;
}

function fail(title, e) {
  status('error', title);
  $('error-banner-title').textContent = title;
  $('error-banner-text').textContent = ` ${e && e.message ? e.message : e}`;
  $('error-banner').hidden = false;
}

let rtc;

async function callPeer(id) {
  $('rtc-connect').disabled = true;
  $('rtc-route').textContent = 'connecting…';
  try {
    const peer = await rtc.connect(id);
    const route = peer.direct ? 'data channel' : 'relayed';
    $('rtc-route').textContent = route;
    $('rtc-route').dataset.route = route;
    log(`connected to ${id} (${route})`);
    const result = await peer.kite.tell('square', 7, (text) => {
      $('rtc-callback').textContent = text;
      log(`the other page called back: ${text}`);
    });
    $('rtc-result').textContent = String(result);
    log(`square(7) = ${result}`);
  } catch (e) {
    $('rtc-route').textContent = 'failed';
    fail('Could not call the other page', e);
  } finally {
    $('rtc-connect').disabled = false;
  }
}

async function main() {
  await init();
  const config = await (await fetch('/config.json', { cache: 'no-store' })).json();
  const kontrol = new Kontrol({ url: config.kontrol, auth: { type: 'kiteKey', key: config.kiteKey }, ...PAGE });
  status('connecting', 'Finding the relay through Kontrol…');
  const relay = await kontrol.fetchKite({ query: { username: 'demo', name: 'first' } });
  relay.connect();
  await relay.ready();
  rtc = new KiteWebRTC({
    relay,
    api: {
      square: (n, report) => {
        if (typeof report === 'function') report(`${rtc.id.slice(0, 8)} squared ${n}`);
        log(`the other page called square(${n})`);
        return n * n;
      },
    },
  });
  rtc.on('peer', (peer) => log(`${peer.id} connected (${peer.direct ? 'data channel' : 'relayed'})`));
  rtc.on('close', (peer) => log(`${peer.id} left`));
  await rtc.ready();
  $('rtc-id').textContent = rtc.id;
  $('rtc-id').dataset.state = 'ready';
  $('rtc-link').href = `${location.pathname}?peer=${encodeURIComponent(rtc.id)}`;
  status('ok', `On the relay ${relay.url}`);
  log('ready: reachable through the relay');
  const peer = new URLSearchParams(location.search).get('peer');
  if (peer) {
    $('rtc-peer').value = peer;
    await callPeer(peer);
  }
}

$('rtc-form').addEventListener('submit', (e) => {
  e.preventDefault();
  const id = $('rtc-peer').value.trim();
  if (id && rtc) callPeer(id);
});

main().catch((e) => fail('The page failed to start', e));
