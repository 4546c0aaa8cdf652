// Types of `kite-wasm/webrtc` (kite-wasm/js/webrtc.js, installed as pkg/web/webrtc.js).

import type { Kite, KiteApi, KiteCommonOptions } from './kite.js';

/** The options of `new KiteWebRTC(options)`. */
export interface KiteWebRTCOptions {
  /** A `Kite` connected to a signalling relay (a kite serving `kite.handleWebRTC`, such as a
   *  native kite with `use_webrtc` or a Go kite with `UseWebRTC`). Its `kite.handleWebRTC`
   *  method is taken over. */
  relay: Kite;
  /** Methods the peers may call (over each connection, as a `Kite`'s `api`). */
  api?: KiteApi;
  /** Options of the peers' kites beside `connection` and `api` (default: the relay kite's
   *  identity, so a peer sees the kite id the relay gives as `src`; never its credentials). */
  peerOptions?: Omit<KiteCommonOptions, 'api'>;
  /** ICE servers for `RTCPeerConnection` (default none: host candidates only). */
  iceServers?: RTCIceServer[];
  /** ms a connection may take to open (default 15,000). */
  timeout?: number;
  /** Connections at once, offered and accepted (default 16); more are refused with
   *  `requestLimitError`. */
  maxPeers?: number;
  /** The longest SDP taken from a peer, in characters (default 65,536). */
  maxSignalBytes?: number;
  /** ICE candidates kept per connection before its description is set (default 64). */
  maxCandidates?: number;
  /** Relayed messages held ahead of their turn per connection (default 1,024); a peer further
   *  ahead is disconnected. */
  maxEarly?: number;
  /** Fall back to sending the dnode messages through the relay when no data channel can be
   *  made (default true). */
  fallback?: boolean;
  /** Try a data channel at all (default true; `false` relays every connection). */
  direct?: boolean;
  /** Decides whether to accept an offer from the kite `id` (default: accept every offer). */
  accept?: (id: string) => boolean;
  /** The `RTCPeerConnection` class (default the global one; `null`: none, always relayed). */
  RTCPeerConnection?: typeof RTCPeerConnection | null;
}

/** A connection to one peer (made by `KiteWebRTC`). */
export interface WebRTCPeer {
  /** The peer's kite id (as the relay gave it). */
  readonly id: string;
  /** The connection's id (chosen by the side that offered it). */
  readonly connectionId: string;
  /** `true` over a data channel, `false` through the relay. */
  readonly direct: boolean;
  /** Whether this side offered the connection. */
  readonly initiator: boolean;
  /** The `Kite` for calling the peer; it serves the peer this side's `api`. */
  readonly kite: Kite;
  /** Ends the connection (on both sides). */
  close(): void;
}

/** Listeners by event name. */
export interface KiteWebRTCEvents {
  /** A peer connected to this side. */
  peer: (peer: WebRTCPeer) => void;
  /** A connection that was up ended. */
  close: (peer: WebRTCPeer) => void;
  /** Announcing this side to the relay again (after the relay connection came back) failed. */
  error: (error: Error) => void;
}

/** WebRTC connections between kites, signalled through a relay kite. */
export declare class KiteWebRTC {
  constructor(options: KiteWebRTCOptions);
  /** This side's kite id: what peers `connect` to. */
  readonly id: string;
  /** The relay kite. */
  readonly relay: Kite;
  /** The peers connected now. */
  readonly peers: WebRTCPeer[];
  /** Resolves once the relay can reach this side. */
  ready(): Promise<void>;
  /** Connects to the kite `id`: resolves once its kite can be called. */
  connect(id: string, options?: { timeout?: number }): Promise<WebRTCPeer>;
  /** Ends every connection and refuses new ones. */
  close(): void;
  on<E extends keyof KiteWebRTCEvents>(event: E, listener: KiteWebRTCEvents[E]): void;
  off<E extends keyof KiteWebRTCEvents>(event: E, listener: KiteWebRTCEvents[E]): void;
}
