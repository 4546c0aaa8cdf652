//! kite-core's WebRTC signalling messages (`webrtc::SignalMessage::parse_bytes`, `payload`,
//! `operation`) and the relay's routing (`webrtc::Relay`) on arbitrary input.
//!
//! Mode `R` (the first byte) drives a relay: each following byte picks a connection (of four),
//! the kite id it declares (of three, or none) and an action — signal a peer (or none), or
//! disconnect — and the relay's answer is checked against a model (an id belongs to the first
//! connection signalling under it until that one disconnects, `src` is always the caller's id,
//! `dst not set` / `dst not registered` / taken / no id / the peer budget as the model says). Any other input is
//! a message: what parses has one of the four operations (any case), reserializes to JSON that
//! parses back equal, and its payload reads as a `Payload` or is refused, without panicking.
#![no_main]

use std::collections::BTreeMap;

use kite_core::webrtc::{Relay, RelayError, SignalError, SignalMessage};
use libfuzzer_sys::fuzz_target;

const MAX_PEERS: usize = 3;

/// Four connections (`c0`..`c3`), each declaring one of three kite ids as it likes.
fn relay(data: &[u8]) {
    let mut relay: Relay<u8> = Relay::new(MAX_PEERS);
    // Kite id -> the connection that owns it.
    let mut model: BTreeMap<String, u8> = BTreeMap::new();
    for byte in data {
        let conn = byte % 4;
        let conn_key = format!("c{conn}");
        let id = match (byte >> 2) % 4 {
            3 => String::new(),
            n => format!("k{n}"),
        };
        match (byte >> 4) % 5 {
            0 => {
                let owned = model.get(&id) == Some(&conn);
                assert_eq!(relay.remove(&id, &conn_key).is_some(), owned);
                if owned {
                    model.remove(&id);
                }
            }
            action => {
                let dst = match action {
                    1 => String::new(),
                    n => format!("k{}", n - 2),
                };
                let message = SignalMessage {
                    kind: "offer".into(),
                    src: "forged".into(),
                    dst: dst.clone(),
                    payload: Some(serde_json::json!({ "n": byte })),
                };
                let got = relay.route(&id, &conn_key, conn, message);
                if id.is_empty() {
                    assert_eq!(got.unwrap_err(), RelayError::NoId);
                    continue;
                }
                match model.get(&id) {
                    Some(owner) if *owner != conn => {
                        assert_eq!(got.unwrap_err(), RelayError::Taken(id.clone()));
                        continue;
                    }
                    None if model.len() >= MAX_PEERS => {
                        assert_eq!(got.unwrap_err(), RelayError::Full(MAX_PEERS));
                        continue;
                    }
                    _ => {
                        model.insert(id.clone(), conn);
                    }
                }
                match got {
                    Ok((to, forwarded)) => {
                        assert_eq!(forwarded.src, id, "src is the caller's id");
                        assert_eq!(model.get(&dst), Some(&to), "forwarded to dst's connection");
                    }
                    Err(RelayError::DstNotSet) => assert!(dst.is_empty()),
                    Err(RelayError::DstNotRegistered) => {
                        assert!(!dst.is_empty());
                        assert!(!model.contains_key(&dst));
                    }
                    Err(e) => panic!("{e}"),
                }
            }
        }
        assert_eq!(relay.len(), model.len());
    }
}

fn message(data: &[u8]) {
    let Ok(m) = SignalMessage::parse_bytes(data) else {
        if let Err(SignalError::InvalidChars) = SignalMessage::parse_bytes(data) {
            assert!(std::str::from_utf8(data).is_err());
        }
        return;
    };
    assert!(
        ["OFFER", "ANSWER", "CANDIDATE", "LEAVE"].contains(&m.kind.to_ascii_uppercase().as_str())
    );
    m.operation().expect("a parsed message has an operation");
    let text = serde_json::to_string(&m).expect("serializes");
    assert_eq!(SignalMessage::parse(&text).expect("reparses"), m);
    let _ = m.payload();
}

fuzz_target!(|data: &[u8]| {
    match data.split_first() {
        Some((b'R', rest)) => relay(rest),
        _ => message(data),
    }
});
