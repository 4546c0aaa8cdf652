// `kite-wasm/webrtc` as a TypeScript program uses it, checked by tsc --strict (never run). Lines
// after `@ts-expect-error` must be rejected: tsc fails if one is accepted.

import { Kite } from 'kite-wasm';
import { KiteWebRTC, type KiteWebRTCOptions, type WebRTCPeer } from 'kite-wasm/webrtc';

const relay = new Kite({ url: 'http://127.0.0.1:4000/kite', id: 'page-a' });
const options: KiteWebRTCOptions = {
  relay,
  api: { square: (n: number, report: (text: string) => void) => (report(`squared ${n}`), n * n) },
  iceServers: [{ urls: 'stun:stun.example.org' }],
  timeout: 5_000,
  maxPeers: 4,
  accept: (id) => id.startsWith('page-'),
  peerOptions: { name: 'page', logLevel: 'warning' },
};
const rtc = new KiteWebRTC(options);
const mine: string = rtc.id;
const peers: WebRTCPeer[] = rtc.peers;

async function use(): Promise<number> {
  await rtc.ready();
  const peer = await rtc.connect('page-b', { timeout: 1_000 });
  const direct: boolean = peer.direct;
  const id: string = peer.id;
  void [direct, id, mine, peers];
  return peer.kite.tell<number>('square', 7, (text: string) => text.length);
}
void use;

rtc.on('peer', (peer) => peer.kite.tell('hello'));
rtc.on('close', (peer) => peer.connectionId);
rtc.on('error', (e) => e.message);
rtc.close();
new KiteWebRTC({ relay, RTCPeerConnection: null, direct: false, fallback: true });

// @ts-expect-error: no relay
new KiteWebRTC({ api: {} });
// @ts-expect-error: a relay that is not a Kite
new KiteWebRTC({ relay: 'http://127.0.0.1:4000/kite' });
// @ts-expect-error: a misspelt option
new KiteWebRTC({ relay, maxpeers: 3 });
// @ts-expect-error: a number as the peer's id
rtc.connect(42);
// @ts-expect-error: a misspelt event
rtc.on('peers', () => {});
// @ts-expect-error: the wrong listener for `peer`
rtc.on('peer', (peer: string) => peer);
// @ts-expect-error: the peer's kite cannot be replaced
rtc.peers[0].kite = relay;
