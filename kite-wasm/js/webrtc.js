// `kite-wasm/webrtc`: kites of two pages calling each other over an RTCDataChannel, set up
// through a signalling relay kite (Go's `kite.handleWebRTC`, a kite with `use_webrtc`).
//
// Each side has a `KiteWebRTC` around its `Kite` connected to the relay. `connect(id)` offers a
// connection to the kite `id` (its kite id, as the relay knows it); the offer, the answer and
// the ICE candidates travel as Go's signalling messages (`{type, src, dst, payload}`, payload
// fields as Go's `Payload`: `sdp`, `candidate`, `connectionId`, `label`). Once the data channel
// opens, each side gets a `Kite` over it (the `connection` option: one dnode message per
// message, as on a raw websocket) serving its `api`, so calls and callbacks go both ways
// with no server on the path. When no data channel can be made (no `RTCPeerConnection`, as in
// Node, or ICE fails or times out) the two sides fall back to sending the same dnode messages
// through the relay as signalling messages of type `data` (`payload: {connectionId, seq,
// msg}`), which relays forward like any other (Go's does not look at the type).
//
// A separate module (pkg/web/webrtc.js): the browser build pays nothing for it unless a page
// imports it. It needs nothing but the relay `Kite` it is given.

const HANDLER = 'kite.handleWebRTC';
/** Ends a connection (a method only this module can name). */
const END = Symbol('end');
const READY_STATE = { connecting: 0, open: 1, closing: 2, closed: 3 };

/** The identity a peer's kite takes from the relay kite (never its credentials or URL): the
 *  peer sees the same kite id the relay gave it as `src`. */
const PEER_OPTIONS = ['name', 'username', 'environment', 'version', 'region', 'hostname', 'id'];

const DEFAULTS = {
  iceServers: [],
  timeout: 15_000,
  maxPeers: 16,
  maxSignalBytes: 65_536,
  maxCandidates: 64,
  maxEarly: 1024,
  fallback: true,
  direct: true,
};

/** A random connection id (the offering side picks it). */
function randomId() {
  const bytes = new Uint8Array(12);
  globalThis.crypto.getRandomValues(bytes);
  return Array.from(bytes, (b) => b.toString(16).padStart(2, '0')).join('');
}

const isText = (v, max) => typeof v === 'string' && v.length > 0 && v.length <= max;

/**
 * Something that looks enough like a WebSocket to be a `Kite`'s `connection`: `readyState`,
 * `send`, `close`, `onopen`/`onmessage`/`onclose`. `transmit(text)` sends, `hangUp()` ends the
 * underlying channel; `deliver(text)` and `ended(reason)` are called by the owner.
 */
function socketLike(url, transmit, hangUp) {
  let state = READY_STATE.open;
  let onmessage = null;
  // What came before the kite listened (it attaches its handlers a moment after it is made).
  const queued = [];
  const flush = () => {
    while (onmessage && queued.length && state === READY_STATE.open) onmessage({ data: queued.shift() });
  };
  const socket = {
    url,
    onopen: null,
    onclose: null,
    get onmessage() {
      return onmessage;
    },
    set onmessage(f) {
      onmessage = f;
      // Not from inside the setter: the kite is still setting itself up.
      if (f && queued.length) queueMicrotask(flush);
    },
    get readyState() {
      return state;
    },
    send(text) {
      if (state !== READY_STATE.open) throw new Error('the peer connection is closed');
      transmit(text);
    },
    close() {
      if (state === READY_STATE.closed) return;
      state = READY_STATE.closed;
      hangUp();
    },
    deliver(text) {
      if (state !== READY_STATE.open) return;
      if (onmessage && !queued.length) onmessage({ data: text });
      else queued.push(text);
    },
    ended(reason) {
      if (state === READY_STATE.closed) return;
      state = READY_STATE.closed;
      queued.length = 0;
      if (socket.onclose) socket.onclose({ code: 1000, reason });
    },
  };
  return socket;
}

/** A connection to one peer, while it is made and once it is up. */
class Link {
  constructor(peerId, connectionId, initiator) {
    this.peerId = peerId;
    this.connectionId = connectionId;
    this.initiator = initiator;
    this.mode = 'negotiating'; // 'direct' | 'relayed' | 'closed'
    this.pc = null;
    this.channel = null;
    this.remoteSet = false;
    this.remoteCandidates = [];
    this.localCandidates = [];
    this.offerDelivered = false;
    this.timer = null;
    this.socket = null;
    this.kite = null;
    this.sendSeq = 0;
    this.recvSeq = 0;
    this.early = new Map(); // relayed messages that came before their turn, by seq
    this.settle = null; // the initiator's connect() promise: { resolve, reject }
  }
}

/** A peer kite reached over a data channel (or through the relay). */
class WebRTCPeer {
  #link;
  #owner;
  constructor(link, owner) {
    this.#link = link;
    this.#owner = owner;
  }
  /** The peer's kite id. */
  get id() {
    return this.#link.peerId;
  }
  /** The connection's id (chosen by the side that offered it). */
  get connectionId() {
    return this.#link.connectionId;
  }
  /** `true` over a data channel, `false` through the relay. */
  get direct() {
    return this.#link.mode === 'direct';
  }
  /** Whether this side offered the connection. */
  get initiator() {
    return this.#link.initiator;
  }
  /** The `Kite` for calling the peer (and serving it this side's `api`). */
  get kite() {
    return this.#link.kite;
  }
  /** Ends the connection (the peer's side ends too). */
  close() {
    this.#owner[END](this.#link, 'closed by this side', true);
  }
}

/** WebRTC connections between kites, signalled through a relay kite. */
export class KiteWebRTC {
  #relay;
  #Kite;
  #KiteError;
  #api;
  #options;
  #peerOptions;
  #links = new Map(); // `${peerId}\n${connectionId}` -> Link: the peer's id is the relay's `src`
  #listeners = new Map();
  #announced = null;
  #closed = false;
  #onOpen;

  constructor(options) {
    const { relay, api = {}, accept, peerOptions = {}, RTCPeerConnection, ...rest } = options ?? {};
    if (!relay || typeof relay.sendWebRTCRequest !== 'function' || typeof relay.handle !== 'function') {
      throw new TypeError('KiteWebRTC: `relay` must be a Kite connected to a signalling relay');
    }
    for (const key of Object.keys(rest)) {
      if (!(key in DEFAULTS)) throw new TypeError(`KiteWebRTC: unknown option ${key}`);
    }
    this.#relay = relay;
    // The peers' kites are made by the relay kite's own class: this module imports nothing, so
    // it works with whichever entry point (web, node) created the relay kite.
    this.#Kite = relay.constructor;
    this.#KiteError = relay.constructor.Error;
    this.#api = api;
    this.#options = { ...DEFAULTS, ...rest, accept, PeerConnection: RTCPeerConnection === undefined ? globalThis.RTCPeerConnection : RTCPeerConnection };
    const info = relay.getKiteInfo();
    this.#peerOptions = {};
    for (const key of PEER_OPTIONS) {
      if (key in info) this.#peerOptions[key] = info[key];
    }
    Object.assign(this.#peerOptions, peerOptions);
    relay.handle(HANDLER, (message) => this.#signal(message));
    // The relay forgets a peer whose connection ends: be reachable again once it is back.
    this.#onOpen = () => {
      this.#announced = null;
      if (!this.#closed) this.ready().catch((e) => this.#emit('error', e));
    };
    relay.on('open', this.#onOpen);
  }

  /** This side's kite id: what peers `connect` to. */
  get id() {
    return this.#relay.getKiteInfo().id;
  }

  /** The relay kite. */
  get relay() {
    return this.#relay;
  }

  /** The peers connected now. */
  get peers() {
    return [...this.#links.values()].filter((l) => l.kite).map((l) => l.handle);
  }

  /** Resolves once the relay can reach this side (it learns of a peer when the peer first
   *  signals: this sends it a `leave` for nobody, which it answers with Go's `dst not set`). */
  ready() {
    if (this.#closed) return Promise.reject(new this.#KiteError('KiteWebRTC is closed', 'disconnect'));
    this.#announced ??= this.#relay.sendWebRTCRequest({ type: 'leave' }).then(
      () => undefined,
      (e) => {
        if (e && e.message === 'dst not set') return undefined;
        this.#announced = null;
        throw e;
      },
    );
    return this.#announced;
  }

  /** Connects to the kite `id` through the relay: resolves with a `WebRTCPeer` once its kite
   *  can be called (over a data channel, or through the relay when none could be made). */
  async connect(id, { timeout } = {}) {
    if (!isText(id, 256)) throw new TypeError('KiteWebRTC#connect: a kite id is required');
    await this.ready();
    this.#checkRoom();
    const wait = timeout ?? this.#options.timeout;
    const { PeerConnection } = this.#options;
    if (this.#options.direct && typeof PeerConnection === 'function') {
      try {
        return await this.#offerDirect(id, wait);
      } catch (e) {
        if (!this.#options.fallback || !e || !e.fallback) throw e;
      }
    } else if (!this.#options.fallback) {
      throw new this.#KiteError('no RTCPeerConnection here, and fallback is off', 'genericError');
    }
    return this.#offerRelayed(id, wait);
  }

  /** Ends every connection and stops answering signals. */
  close() {
    if (this.#closed) return;
    this.#closed = true;
    this.#relay.off('open', this.#onOpen);
    for (const link of [...this.#links.values()]) this[END](link, 'closed by this side', true);
  }

  on(event, listener) {
    if (!this.#listeners.has(event)) this.#listeners.set(event, new Set());
    this.#listeners.get(event).add(listener);
  }

  off(event, listener) {
    this.#listeners.get(event)?.delete(listener);
  }

  #emit(event, value) {
    for (const listener of [...(this.#listeners.get(event) ?? [])]) {
      try {
        listener(value);
      } catch (e) {
        console.error(`KiteWebRTC: a ${event} listener threw`, e);
      }
    }
  }

  #checkRoom() {
    if (this.#links.size >= this.#options.maxPeers) {
      throw new this.#KiteError(`already ${this.#links.size} WebRTC peers (maxPeers)`, 'requestLimitError');
    }
  }

  #send(link, type, payload) {
    return this.#relay.sendWebRTCRequest({ type, dst: link.peerId, payload: { connectionId: link.connectionId, ...payload } });
  }

  #add(link) {
    this.#links.set(`${link.peerId}\n${link.connectionId}`, link);
    link.handle = new WebRTCPeer(link, this);
    link.timer = setTimeout(() => this.#timedOut(link), this.#options.timeout);
  }

  #timedOut(link) {
    if (link.mode !== 'negotiating') return;
    const e = new this.#KiteError(`no data channel to ${link.peerId} within ${this.#options.timeout} ms`, 'timeout');
    e.fallback = true;
    this[END](link, e.message, true, e);
  }

  // ---- the offering side ----

  #offerDirect(id, wait) {
    const link = new Link(id, randomId(), true);
    const promise = new Promise((resolve, reject) => (link.settle = { resolve, reject }));
    this.#add(link);
    clearTimeout(link.timer);
    link.timer = setTimeout(() => this.#timedOut(link), wait);
    try {
      const pc = this.#peerConnection(link);
      const channel = pc.createDataChannel('kite', { ordered: true });
      this.#watchChannel(link, channel);
      (async () => {
        const offer = await pc.createOffer();
        await pc.setLocalDescription(offer);
        await this.#send(link, 'offer', { sdp: { type: offer.type, sdp: offer.sdp }, label: 'kite', serialization: 'dnode' });
        // The peer has the offer (the relay answered with its handler's answer): candidates may
        // follow without overtaking it.
        link.offerDelivered = true;
        for (const candidate of link.localCandidates.splice(0)) this.#send(link, 'candidate', { candidate }).catch(() => {});
      })().catch((e) => {
        // A peer without WebRTC says so; fall back. Refusals and unknown peers end here.
        if (e && e.type === 'webrtcUnavailable') e.fallback = true;
        this[END](link, `offer failed: ${e && e.message}`, false, e);
      });
    } catch (e) {
      const failure = new this.#KiteError(`cannot make an RTCPeerConnection: ${e && e.message}`, 'genericError');
      failure.fallback = true;
      this[END](link, failure.message, false, failure);
    }
    return promise;
  }

  async #offerRelayed(id, wait) {
    this.#checkRoom();
    const link = new Link(id, randomId(), true);
    const promise = new Promise((resolve, reject) => (link.settle = { resolve, reject }));
    this.#add(link);
    clearTimeout(link.timer);
    link.timer = setTimeout(() => this.#timedOut(link), wait);
    this.#send(link, 'offer', { relayed: true, serialization: 'dnode' }).catch((e) =>
      this[END](link, `offer failed: ${e && e.message}`, false, e),
    );
    return promise;
  }

  // ---- both sides ----

  #peerConnection(link) {
    const pc = new this.#options.PeerConnection({ iceServers: this.#options.iceServers });
    link.pc = pc;
    pc.onicecandidate = (e) => {
      if (!e.candidate || link.mode === 'closed') return;
      const candidate = e.candidate.toJSON ? e.candidate.toJSON() : e.candidate;
      const c = { candidate: candidate.candidate, sdpMid: candidate.sdpMid, sdpMLineIndex: candidate.sdpMLineIndex };
      if (link.initiator && !link.offerDelivered) link.localCandidates.push(c);
      else this.#send(link, 'candidate', { candidate: c }).catch(() => {});
    };
    pc.onconnectionstatechange = () => {
      if (pc.connectionState === 'failed' && link.mode === 'negotiating') {
        const e = new this.#KiteError(`ICE failed with ${link.peerId}`, 'genericError');
        e.fallback = true;
        this[END](link, e.message, true, e);
      }
    };
    return pc;
  }

  #watchChannel(link, channel) {
    link.channel = channel;
    channel.onopen = () => {
      if (link.mode !== 'negotiating') return;
      link.mode = 'direct';
      this.#up(link, `ws://webrtc.invalid/${encodeURIComponent(link.peerId)}`, (text) => channel.send(text));
    };
    channel.onmessage = (e) => {
      if (typeof e.data === 'string') link.socket?.deliver(e.data);
    };
    channel.onclose = () => this[END](link, 'data channel closed', false);
  }

  /** The connection is up: a Kite over it. */
  #up(link, url, transmit) {
    clearTimeout(link.timer);
    link.socket = socketLike(url, transmit, () => this[END](link, 'closed by this side', true));
    try {
      link.kite = new this.#Kite({ ...this.#peerOptions, connection: link.socket, api: this.#api });
    } catch (e) {
      // A bad `peerOptions` entry, say.
      this[END](link, `cannot make the peer's kite: ${e && e.message}`, true, e);
      return;
    }
    link.kite.on('close', () => this[END](link, 'the kite closed', true));
    this.#drain(link);
    if (link.settle) link.settle.resolve(link.handle);
    else this.#emit('peer', link.handle);
  }

  /** Ends `link`: `tell` the peer too (a `leave`), and fail a `connect` still waiting. */
  [END](link, reason, tell, error) {
    if (link.mode === 'closed') return;
    const wasUp = Boolean(link.kite);
    link.mode = 'closed';
    clearTimeout(link.timer);
    this.#links.delete(`${link.peerId}\n${link.connectionId}`);
    if (tell) this.#send(link, 'leave', {}).catch(() => {});
    if (link.channel) {
      link.channel.onopen = link.channel.onmessage = link.channel.onclose = null;
      try {
        link.channel.close();
      } catch {}
    }
    if (link.pc) {
      link.pc.onicecandidate = link.pc.onconnectionstatechange = null;
      try {
        link.pc.close();
      } catch {}
    }
    link.early.clear();
    if (link.socket) link.socket.ended(reason);
    if (link.settle && !wasUp) {
      link.settle.reject(error ?? new this.#KiteError(reason, 'disconnect'));
    }
    if (wasUp) this.#emit('close', link.handle);
  }

  // ---- signals from the relay ----

  /** `kite.handleWebRTC`: answers at once (the relay waits for it); what the message starts
   *  goes on afterwards. Throws (the sender's `sendWebRTCRequest` rejects) to refuse. */
  #signal(message) {
    if (this.#closed) throw new this.#KiteError('not accepting WebRTC connections', 'webrtcRefused');
    if (!message || typeof message !== 'object') throw new this.#KiteError('a signalling message is required', 'argumentError');
    const { src, payload } = message;
    const type = typeof message.type === 'string' ? message.type.toLowerCase() : '';
    if (!isText(src, 256) || !payload || typeof payload !== 'object' || !isText(payload.connectionId, 128)) {
      return undefined; // not one of ours (Go's other signalling, or noise): nothing to do
    }
    const link = this.#links.get(`${src}\n${payload.connectionId}`);
    switch (type) {
      case 'offer':
        if (!link) this.#offered(src, payload);
        return undefined;
      case 'answer':
        if (link && link.initiator && link.mode === 'negotiating') this.#answered(link, payload);
        return undefined;
      case 'candidate':
        if (link && link.pc) this.#candidate(link, payload.candidate);
        return undefined;
      case 'data':
        if (link && link.mode === 'relayed') this.#relayedData(link, payload);
        return undefined;
      case 'leave':
        if (link) this[END](link, 'the peer left', false, new this.#KiteError('the peer left', 'disconnect'));
        return undefined;
      default:
        return undefined;
    }
  }

  #offered(src, payload) {
    const { accept, PeerConnection, maxSignalBytes } = this.#options;
    if (accept && !accept(src)) throw new this.#KiteError('the peer refused the connection', 'webrtcRefused');
    this.#checkRoom();
    const link = new Link(src, payload.connectionId, false);
    if (payload.relayed === true) {
      this.#add(link);
      link.mode = 'relayed';
      this.#send(link, 'answer', { relayed: true }).then(
        () => this.#upRelayed(link),
        () => this[END](link, 'answer failed', false),
      );
      return;
    }
    const sdp = payload.sdp;
    if (!sdp || sdp.type !== 'offer' || !isText(sdp.sdp, maxSignalBytes)) {
      throw new this.#KiteError('an offer needs sdp: {type: "offer", sdp}', 'argumentError');
    }
    if (!this.#options.direct || typeof PeerConnection !== 'function') {
      throw new this.#KiteError('no WebRTC here: offer a relayed connection', 'webrtcUnavailable');
    }
    this.#add(link);
    const pc = this.#peerConnection(link);
    pc.ondatachannel = (e) => {
      if (!link.channel && e.channel.label === 'kite') this.#watchChannel(link, e.channel);
    };
    (async () => {
      await pc.setRemoteDescription({ type: 'offer', sdp: sdp.sdp });
      this.#remoteSet(link);
      const answer = await pc.createAnswer();
      await pc.setLocalDescription(answer);
      await this.#send(link, 'answer', { sdp: { type: answer.type, sdp: answer.sdp } });
    })().catch((e) => this[END](link, `answering failed: ${e && e.message}`, true));
  }

  #answered(link, payload) {
    if (payload.relayed === true) {
      if (link.pc) return; // a relayed answer to a direct offer: not ours
      link.mode = 'relayed';
      this.#upRelayed(link);
      return;
    }
    const sdp = payload.sdp;
    if (!link.pc || link.remoteSet || !sdp || sdp.type !== 'answer' || !isText(sdp.sdp, this.#options.maxSignalBytes)) return;
    link.remoteSet = true; // at most one answer is taken
    link.pc
      .setRemoteDescription({ type: 'answer', sdp: sdp.sdp })
      .then(() => this.#remoteSet(link))
      .catch((e) => this[END](link, `bad answer: ${e && e.message}`, true));
  }

  #remoteSet(link) {
    link.remoteSet = true;
    for (const c of link.remoteCandidates.splice(0)) link.pc.addIceCandidate(c).catch(() => {});
  }

  #candidate(link, c) {
    if (!c || typeof c !== 'object' || typeof c.candidate !== 'string' || c.candidate.length > 4096) return;
    const candidate = { candidate: c.candidate, sdpMid: typeof c.sdpMid === 'string' ? c.sdpMid : null, sdpMLineIndex: Number.isInteger(c.sdpMLineIndex) ? c.sdpMLineIndex : null };
    if (link.remoteSet && link.pc.remoteDescription) {
      link.pc.addIceCandidate(candidate).catch(() => {});
    } else if (link.remoteCandidates.length < this.#options.maxCandidates) {
      link.remoteCandidates.push(candidate);
    }
  }

  // ---- relayed connections ----

  #upRelayed(link) {
    if (link.mode !== 'relayed' || link.kite) return;
    this.#up(link, `ws://relayed.invalid/${encodeURIComponent(link.peerId)}`, (msg) => {
      const seq = link.sendSeq++;
      this.#send(link, 'data', { seq, msg }).catch((e) => this[END](link, `relaying failed: ${e && e.message}`, false));
    });
  }

  /** A dnode message through the relay: delivered in the sender's order (the relay may handle
   *  the requests carrying them concurrently). */
  #relayedData(link, payload) {
    const { seq, msg } = payload;
    if (!Number.isInteger(seq) || seq < link.recvSeq || typeof msg !== 'string') return;
    if (seq - link.recvSeq >= this.#options.maxEarly) {
      this[END](link, 'the peer sent too far ahead', true);
      return;
    }
    link.early.set(seq, msg);
    this.#drain(link);
  }

  /** Hands the relayed messages that are next in order to the peer's kite, once it has one. */
  #drain(link) {
    if (!link.socket) return;
    while (link.early.has(link.recvSeq)) {
      const next = link.early.get(link.recvSeq);
      link.early.delete(link.recvSeq);
      link.recvSeq++;
      link.socket.deliver(next);
    }
  }
}
