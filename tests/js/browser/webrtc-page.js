// The page side of webrtc.test.mjs: kites of this page (each a KiteWebRTC around a kite on the
// relay) that connect to kites of another page, driven through window.rtcTest.

import init, { Kite } from '/pkg/web/kite.js';
import { KiteWebRTC } from '/pkg/web/webrtc.js';

const log = document.getElementById('log');
const say = (line) => (log.textContent += `${line}\n`);

/** A RTCPeerConnection that drops every candidate the peer sends: with both sides using it,
 *  ICE cannot succeed, and the connection falls back to the relay after its timeout. */
class DeafPeerConnection extends RTCPeerConnection {
  addIceCandidate() {
    return Promise.resolve();
  }
}

/** This page's sides by name: {rtc, peers (accepted and made), names heard}. */
const sides = new Map();

function side(name) {
  const s = sides.get(name);
  if (!s) throw new Error(`no side ${name}`);
  return s;
}

function describe(peer) {
  return { id: peer.id, direct: peer.direct, initiator: peer.initiator, connectionId: peer.connectionId };
}

window.rtcTest = {
  /** Starts side `name` on the relay; resolves with its kite id once the relay can reach it. */
  async start(name, relayUrl, options = {}) {
    const relay = new Kite({ url: relayUrl, id: `${name}-${crypto.randomUUID()}`, logLevel: 'none' });
    const { deaf, ...rest } = options;
    const rtc = new KiteWebRTC({
      relay,
      ...rest,
      ...(deaf ? { RTCPeerConnection: DeafPeerConnection } : {}),
      api: {
        // Answers, and calls back the caller's function first (a callback over the channel).
        square: (n, report) => {
          if (typeof report === 'function') report(`${name} squared ${n}`);
          return n * n;
        },
        echo: (text) => text,
        'page.name': () => name,
      },
    });
    const s = { rtc, peers: [], accepted: [] };
    rtc.on('peer', (peer) => {
      s.accepted.push(peer);
      say(`${name}: ${peer.id} connected (${peer.direct ? 'data channel' : 'relayed'})`);
    });
    sides.set(name, s);
    await rtc.ready();
    return rtc.id;
  },

  /** Side `name` connects to the kite `id`. */
  async connect(name, id) {
    const s = side(name);
    const peer = await s.rtc.connect(id);
    s.peers.push(peer);
    say(`${name}: connected to ${id} (${peer.direct ? 'data channel' : 'relayed'})`);
    return describe(peer);
  },

  /** The peers that connected to side `name`. */
  accepted(name) {
    return side(name).accepted.map(describe);
  },

  /** Side `name` calls `square` on its last peer `times` times, with a callback each. */
  async squares(name, times) {
    const peer = side(name).peers.at(-1);
    const heard = [];
    const results = [];
    for (let i = 0; i < times; i++) {
      results.push(await peer.kite.tell('square', i, (text) => heard.push(text)));
    }
    // The callbacks are called before each answer is sent, on the same ordered channel.
    return { results, heard };
  },

  /** Side `name` calls `method` on its last peer. */
  async call(name, method, ...args) {
    return side(name).peers.at(-1).kite.tell(method, ...args);
  },

  /** Side `name` calls `method` on the peer that connected to it last (the other way). */
  async callBack(name, method, ...args) {
    return side(name).accepted.at(-1).kite.tell(method, ...args);
  },

  /** Closes side `name`'s connections and its relay kite. */
  close(name) {
    const s = side(name);
    s.rtc.close();
    s.rtc.relay.disconnect();
  },
};

init()
  .then(() => {
    window.rtcReady = true;
  })
  .catch((e) => {
    window.rtcReady = false;
    window.rtcLoadError = String(e);
  });
