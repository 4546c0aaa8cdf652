//! WebRTC signalling as Go kite does it (`protocol.WebRTCSignalMessage`, `kite.handleWebRTC`):
//! the messages two peers exchange through a relay kite to set up a direct connection, and the
//! relay's routing rules ([`Relay`]), written once for every driver.
//!
//! A peer calls `kite.handleWebRTC` on the relay with a [`SignalMessage`] naming the peer it is
//! for (`dst`); the relay sets `src` to the caller's id — its kite id, Go's `r.Client.ID`,
//! whatever the caller put in `src` — makes the caller reachable under that id until its
//! connection ends, and calls `kite.handleWebRTC` with the message on the connection registered
//! as `dst`. Peers find each other's ids as kite ids (through Kontrol, say). Go's errors:
//! `dst not set`, `dst not registered`.
//!
//! Go's relay lets any caller take over an id (the last connection to signal as a kite id gets
//! that kite's messages). Here an id belongs to the first connection that signals under it,
//! until that connection ends; another connection claiming it is refused
//! ([`RelayError::Taken`]), so a peer cannot receive the signals meant for another by declaring
//! its kite id.
//!
//! ```
//! use kite_core::webrtc::{Relay, RelayError, SignalMessage};
//!
//! let mut relay: Relay<&str> = Relay::new(16);
//! let offer = SignalMessage::parse(r#"{"type":"offer","dst":"kite-b","payload":{"sdp":{"type":"offer","sdp":"v=0"}}}"#).unwrap();
//! // Nobody signals as `kite-b` yet.
//! assert_eq!(relay.route("kite-a", "conn 1", "peer a", offer.clone()).unwrap_err(), RelayError::DstNotRegistered);
//! let hello = SignalMessage { kind: "leave".into(), dst: "kite-a".into(), ..Default::default() };
//! relay.route("kite-b", "conn 2", "peer b", hello).unwrap();
//! let (to, forwarded) = relay.route("kite-a", "conn 1", "peer a", offer).unwrap();
//! assert_eq!((to, forwarded.src.as_str()), ("peer b", "kite-a"));
//! assert_eq!(forwarded.payload().unwrap().sdp.unwrap().sdp.as_deref(), Some("v=0"));
//! ```

use std::collections::HashMap;

use serde::{Deserialize, Serialize};

/// The method a relay serves and a peer receives signals on.
pub const HANDLER_NAME: &str = "kite.handleWebRTC";

/// How many peers a [`Relay`] keeps reachable by default.
pub const DEFAULT_MAX_PEERS: usize = 16_384;

/// A signalling message (Go's `WebRTCSignalMessage`): `type`, `src`, `dst`, `payload`, each left
/// out of the JSON when empty.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct SignalMessage {
    /// `offer`, `answer`, `candidate` or `leave` (any case; see [`SignalMessage::operation`]).
    #[serde(rename = "type", default, skip_serializing_if = "String::is_empty")]
    pub kind: String,
    /// The sender's connection id on the relay (set by the relay).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub src: String,
    /// The connection id of the peer the message is for.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub dst: String,
    /// What the peers exchange (see [`Payload`]), carried as it came.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub payload: Option<serde_json::Value>,
}

/// What a signalling message does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Operation {
    /// An SDP offer.
    Offer,
    /// An SDP answer.
    Answer,
    /// An ICE candidate.
    Candidate,
    /// The peer goes away.
    Leave,
}

/// Why a signalling message is refused (Go's messages).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SignalError {
    /// Not UTF-8 (only for bytes).
    #[error("message contains invalid chars")]
    InvalidChars,
    /// `type` is none of the four operations.
    #[error("invalid start operation")]
    InvalidOperation,
    /// Not a signalling message, or a payload of the wrong shape.
    #[error("{0}")]
    Json(String),
}

/// The content of a message's `payload` (Go's `Payload`): every field optional.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Payload {
    /// A text message.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub msg: Option<String>,
    /// A session description.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sdp: Option<SessionDescription>,
    /// The payload's own type.
    #[serde(rename = "type", default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    /// The data channel's label.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub label: Option<String>,
    /// The connection the message belongs to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub connection_id: Option<String>,
    /// Whether the channel is reliable.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reliable: Option<bool>,
    /// How the channel's data is serialized.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub serialization: Option<String>,
    /// The sender's browser.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub browser: Option<String>,
    /// An ICE candidate.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub candidate: Option<IceCandidate>,
}

/// An SDP offer or answer (`RTCSessionDescriptionInit`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct SessionDescription {
    /// `offer`, `answer`, ...
    #[serde(rename = "type", default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    /// The SDP text.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sdp: Option<String>,
}

/// An ICE candidate (`RTCIceCandidateInit`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct IceCandidate {
    /// The candidate line.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub candidate: Option<String>,
    /// The media stream id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sdp_mid: Option<String>,
    /// The m-line index.
    #[serde(
        rename = "sdpMLineIndex",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub sdp_m_line_index: Option<i64>,
}

impl SignalMessage {
    /// Reads a message sent as text (Go's `ParseWebRTCSignalMessage`): JSON of this shape whose
    /// `type` is one of the four operations.
    pub fn parse(text: &str) -> Result<SignalMessage, SignalError> {
        let message: SignalMessage =
            serde_json::from_str(text).map_err(|e| SignalError::Json(e.to_string()))?;
        message.operation()?;
        Ok(message)
    }

    /// [`SignalMessage::parse`] of bytes, which must be UTF-8.
    pub fn parse_bytes(bytes: &[u8]) -> Result<SignalMessage, SignalError> {
        let text = std::str::from_utf8(bytes).map_err(|_| SignalError::InvalidChars)?;
        SignalMessage::parse(text)
    }

    /// The operation `type` names, in any case.
    pub fn operation(&self) -> Result<Operation, SignalError> {
        match self.kind.to_ascii_uppercase().as_str() {
            "OFFER" => Ok(Operation::Offer),
            "ANSWER" => Ok(Operation::Answer),
            "CANDIDATE" => Ok(Operation::Candidate),
            "LEAVE" => Ok(Operation::Leave),
            _ => Err(SignalError::InvalidOperation),
        }
    }

    /// The payload read as a [`Payload`] (Go's `ParsePayload`); an absent payload is an empty
    /// one.
    pub fn payload(&self) -> Result<Payload, SignalError> {
        match &self.payload {
            None => Ok(Payload::default()),
            Some(v) => Payload::deserialize(v).map_err(|e| SignalError::Json(e.to_string())),
        }
    }
}

/// Why a relay does not forward a message (Go's messages, and the refusals Go lacks).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RelayError {
    /// The message names no `dst`.
    #[error("dst not set")]
    DstNotSet,
    /// No connection is registered as `dst`.
    #[error("dst not registered")]
    DstNotRegistered,
    /// The caller has no kite id to be reached by.
    #[error("the caller has no kite id")]
    NoId,
    /// Another live connection signals under the caller's id.
    #[error("another connection signals as {0}")]
    Taken(String),
    /// The caller is new and the relay already keeps its most peers reachable.
    #[error("the signalling relay keeps {0} peers already")]
    Full(usize),
}

/// A signalling relay's routing table: the connections that signalled through it, by the id
/// they signal under (their kite id), each until its connection ends ([`Relay::remove`]). `P`
/// is how the driver reaches a connection (a client handle); connections are told apart by a
/// key of the driver's (`conn`), which no peer chooses.
#[derive(Debug)]
pub struct Relay<P> {
    peers: HashMap<String, (String, P)>,
    max_peers: usize,
}

impl<P: Clone> Relay<P> {
    /// An empty relay keeping at most `max_peers` peers reachable.
    pub fn new(max_peers: usize) -> Relay<P> {
        Relay {
            peers: HashMap::new(),
            max_peers,
        }
    }

    /// A message from the connection `conn` (reached by `src`) of the kite `src_id`: registers
    /// it under `src_id` unless another connection has that id, sets the message's `src`, and
    /// says where to forward it (`dst`'s connection).
    pub fn route(
        &mut self,
        src_id: &str,
        conn: &str,
        src: P,
        mut message: SignalMessage,
    ) -> Result<(P, SignalMessage), RelayError> {
        if src_id.is_empty() {
            return Err(RelayError::NoId);
        }
        match self.peers.get(src_id) {
            Some((owner, _)) if owner != conn => return Err(RelayError::Taken(src_id.to_owned())),
            Some(_) => {}
            None if self.peers.len() >= self.max_peers => {
                return Err(RelayError::Full(self.max_peers));
            }
            None => {
                self.peers.insert(src_id.to_owned(), (conn.to_owned(), src));
            }
        }
        message.src = src_id.to_owned();
        if message.dst.is_empty() {
            return Err(RelayError::DstNotSet);
        }
        let (_, dst) = self
            .peers
            .get(&message.dst)
            .ok_or(RelayError::DstNotRegistered)?;
        Ok((dst.clone(), message))
    }

    /// The connection `conn` ended: the id it signalled under (`id`) is free again. Another
    /// connection's registration under `id` is left alone.
    pub fn remove(&mut self, id: &str, conn: &str) -> Option<P> {
        match self.peers.get(id) {
            Some((owner, _)) if owner == conn => self.peers.remove(id).map(|(_, p)| p),
            _ => None,
        }
    }

    /// Whether `id` is reachable.
    pub fn contains(&self, id: &str) -> bool {
        self.peers.contains_key(id)
    }

    /// How many peers are reachable.
    pub fn len(&self) -> usize {
        self.peers.len()
    }

    /// Whether no peer is reachable.
    pub fn is_empty(&self) -> bool {
        self.peers.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_go_shaped_messages() {
        let m = SignalMessage::parse(
            r#"{"type":"CANDIDATE","src":"forged","dst":"b","payload":{"candidate":{"candidate":"candidate:1 1 udp 1 127.0.0.1 5000 typ host","sdpMid":"0","sdpMLineIndex":0},"connectionId":"c1","reliable":true}}"#,
        )
        .unwrap();
        assert_eq!(m.operation().unwrap(), Operation::Candidate);
        let p = m.payload().unwrap();
        assert_eq!(p.connection_id.as_deref(), Some("c1"));
        assert_eq!(p.reliable, Some(true));
        let c = p.candidate.unwrap();
        assert_eq!(c.sdp_mid.as_deref(), Some("0"));
        assert_eq!(c.sdp_m_line_index, Some(0));
        // Written back as Go writes it: empty fields left out, the payload as it came.
        let back = serde_json::to_string(&SignalMessage {
            src: String::new(),
            ..m
        })
        .unwrap();
        assert_eq!(
            back,
            r#"{"type":"CANDIDATE","dst":"b","payload":{"candidate":{"candidate":"candidate:1 1 udp 1 127.0.0.1 5000 typ host","sdpMid":"0","sdpMLineIndex":0},"connectionId":"c1","reliable":true}}"#
        );
    }

    #[test]
    fn refuses_what_go_refuses() {
        assert_eq!(
            SignalMessage::parse(r#"{"type":"hello","dst":"b"}"#).unwrap_err(),
            SignalError::InvalidOperation
        );
        assert_eq!(
            SignalMessage::parse(r#"{"dst":"b"}"#).unwrap_err(),
            SignalError::InvalidOperation
        );
        assert!(matches!(
            SignalMessage::parse("[1]").unwrap_err(),
            SignalError::Json(_)
        ));
        assert_eq!(
            SignalMessage::parse_bytes(b"{\"type\":\"offer\xff\"}").unwrap_err(),
            SignalError::InvalidChars
        );
        let m = SignalMessage {
            kind: "offer".into(),
            payload: Some(serde_json::json!({"sdp": "not an object"})),
            ..SignalMessage::default()
        };
        assert!(matches!(m.payload().unwrap_err(), SignalError::Json(_)));
    }

    #[test]
    fn relay_sets_src_and_routes_by_kite_id() {
        let mut relay = Relay::new(2);
        let m = |dst: &str| SignalMessage {
            kind: "offer".into(),
            src: "somebody else".into(),
            dst: dst.into(),
            ..SignalMessage::default()
        };
        assert_eq!(
            relay.route("a", "c1", 1, m("")).unwrap_err(),
            RelayError::DstNotSet
        );
        // The caller is reachable even when its own message could not go anywhere.
        assert!(relay.contains("a"));
        assert_eq!(
            relay.route("a", "c1", 1, m("b")).unwrap_err(),
            RelayError::DstNotRegistered
        );
        assert_eq!(
            relay.route("b", "c2", 2, m("a")).unwrap(),
            (
                1,
                SignalMessage {
                    src: "b".into(),
                    ..m("a")
                }
            )
        );
        let (to, forwarded) = relay.route("a", "c1", 1, m("b")).unwrap();
        assert_eq!((to, forwarded.src.as_str()), (2, "a"));
        // Another connection declaring kite a's id is refused, and a keeps its signals.
        assert_eq!(
            relay.route("a", "c3", 3, m("b")).unwrap_err(),
            RelayError::Taken("a".into())
        );
        assert_eq!(relay.route("b", "c2", 2, m("a")).unwrap().0, 1);
        assert_eq!(relay.remove("a", "c3"), None);
        assert!(relay.contains("a"));
        assert_eq!(
            relay.route("", "c3", 3, m("a")).unwrap_err(),
            RelayError::NoId
        );
        // Budget: a third peer is refused, the known ones still route.
        assert_eq!(
            relay.route("c", "c3", 3, m("a")).unwrap_err(),
            RelayError::Full(2)
        );
        assert!(!relay.contains("c"));
        // A peer whose connection ended is gone, and its id free for another connection.
        assert_eq!(relay.remove("b", "c2"), Some(2));
        assert_eq!(
            relay.route("a", "c1", 1, m("b")).unwrap_err(),
            RelayError::DstNotRegistered
        );
        assert_eq!(relay.len(), 1);
        assert!(relay.route("b", "c4", 4, m("a")).is_ok());
    }
}
