//! Watch events shared between Kontrols on one storage: a Kontrol that registers or
//! deregisters a kite publishes a [`Change`] through the storage, and every Kontrol subscribed
//! to it tells its own watchers (so a watcher on Kontrol A hears a kite that registered on
//! Kontrol B). PostgreSQL carries them with `NOTIFY`, etcd with short-lived keys it watches,
//! and the in-process stores with a channel (Kontrols sharing one storage object).
//!
//! What arrives is read as untrusted: anything with access to the database can send a
//! notification, so [`Change::decode`] takes only a well-formed, bounded payload with a valid
//! kite, and a Kontrol hands it only to the watchers whose query matches that kite.

use kite_native::core::Kite;
use serde::{Deserialize, Serialize};
use tokio::sync::broadcast;

/// The largest encoded change read (PostgreSQL's `NOTIFY` payload limit is 8000 bytes).
pub const MAX_CHANGE_BYTES: usize = 7_999;

/// How many changes a subscriber may fall behind before it misses some (it is told how many).
pub(crate) const CHANNEL_CAPACITY: usize = 4_096;

/// What happened to a kite.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Action {
    /// It registered (`REGISTER` to watchers).
    #[serde(rename = "REGISTER")]
    Register,
    /// It went (`DEREGISTER`).
    #[serde(rename = "DEREGISTER")]
    Deregister,
}

impl Action {
    /// The watch event's `action`.
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Register => "REGISTER",
            Action::Deregister => "DEREGISTER",
        }
    }
}

/// A registration or deregistration, as one Kontrol tells the others.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Change {
    /// What happened.
    pub action: Action,
    /// The kite.
    pub kite: Kite,
    /// Its URL (empty for a deregistration).
    #[serde(default)]
    pub url: String,
    /// The id of the key pair its registration names (tokens for it are signed with that pair
    /// while it is live); empty for a deregistration.
    #[serde(default)]
    pub key_id: String,
    /// The kite id of the Kontrol that published it (which has told its own watchers).
    pub origin: String,
}

impl Change {
    /// The change as the text a storage carries.
    pub fn encode(&self) -> String {
        serde_json::to_string(self).unwrap_or_default()
    }

    /// A change read back from `text`; `None` for anything too long, malformed, or naming an
    /// invalid kite.
    pub fn decode(text: &str) -> Option<Change> {
        if text.len() > MAX_CHANGE_BYTES {
            return None;
        }
        let change: Change = serde_json::from_str(text).ok()?;
        change.kite.validate().ok()?;
        Some(change)
    }
}

/// Changes in one process: what the in-process storages publish to and subscribe from (its
/// clones share one channel).
#[derive(Debug, Clone)]
pub(crate) struct Bus {
    sender: broadcast::Sender<Change>,
}

impl Default for Bus {
    fn default() -> Bus {
        Bus {
            sender: broadcast::channel(CHANNEL_CAPACITY).0,
        }
    }
}

impl Bus {
    /// Hands `change` to every subscriber (none listening is fine).
    pub(crate) fn publish(&self, change: Change) {
        let _ = self.sender.send(change);
    }

    /// A new subscriber.
    pub(crate) fn subscribe(&self) -> broadcast::Receiver<Change> {
        self.sender.subscribe()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn changes_round_trip_and_bad_ones_are_dropped() {
        let kite: Kite = "/alice/prod/math/1.0.0/eu/h/k1".parse().unwrap();
        let change = Change {
            action: Action::Register,
            kite,
            url: "http://x/kite".into(),
            key_id: "kp1".into(),
            origin: "kontrol-1".into(),
        };
        let text = change.encode();
        assert!(text.contains(r#""action":"REGISTER""#), "{text}");
        assert_eq!(Change::decode(&text), Some(change));
        for bad in [
            "",
            "null",
            "{}",
            r#"{"action":"HELLO","kite":{},"origin":""}"#,
            r#"{"action":"REGISTER","kite":{"username":"","environment":"","name":"","version":"","region":"","hostname":"","id":""},"origin":""}"#,
        ] {
            assert_eq!(Change::decode(bad), None, "{bad}");
        }
        assert_eq!(Change::decode(&" ".repeat(MAX_CHANGE_BYTES + 1)), None);
    }
}
