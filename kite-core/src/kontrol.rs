//! The messages of Kontrol's methods, shared by Kontrol, its native client and the browser
//! client. Field names are Go's.

use serde::{Deserialize, Serialize};

use crate::identity::{Kite, KontrolQuery};

/// `register`'s argument.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RegisterArgs {
    /// The URL the kite serves at (`http://host:port/kite`).
    #[serde(default)]
    pub url: String,
}

/// `register`'s answer.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RegisterResult {
    /// The URL registered.
    #[serde(default)]
    pub url: String,
    /// Seconds between HTTP heartbeats (Go sends 0 over dnode, where Kontrol asks for
    /// `kite.heartbeat` itself).
    #[serde(rename = "heartbeatInterval", default)]
    pub heartbeat_interval: u64,
    /// A new kite key, when the caller's was signed by a rotated-out key pair.
    #[serde(rename = "kiteKey", default, skip_serializing_if = "String::is_empty")]
    pub kite_key: String,
    /// The public key to trust from now on, when it changed.
    #[serde(
        rename = "publicKey",
        default,
        skip_serializing_if = "String::is_empty"
    )]
    pub public_key: String,
}

/// `getKites`'s argument: its data. A watcher also sends a function, called with a
/// [`WatchEvent`] (as `{"result": event}`) each time a kite matching the query registers or
/// goes away, until it disconnects; functions are not data, so it goes beside the query, under
/// [`WATCH_CALLBACK`] (Go clients send `null` there): `value!([{"query": q, "watchCallback":
/// f}])`, read by Kontrol with `args.callback_at(&[0, "watchCallback"])`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct GetKitesArgs {
    /// Which kites.
    #[serde(default)]
    pub query: Option<KontrolQuery>,
}

/// The key of `getKites`' watch function, Go's `watchCallback`.
pub const WATCH_CALLBACK: &str = "watchCallback";

/// What a `getKites` watcher is told.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WatchEvent {
    /// `REGISTER` or `DEREGISTER`.
    pub action: String,
    /// The kite.
    pub kite: Kite,
    /// Where to reach it (registrations only).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub url: String,
    /// A token for calling it (registrations only).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub token: String,
}

/// One kite found by `getKites`, with a token to call it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KiteWithToken {
    /// The kite.
    pub kite: Kite,
    /// Where to reach it.
    pub url: String,
    /// The key pair its token is signed with.
    #[serde(rename = "keyId", default, skip_serializing_if = "String::is_empty")]
    pub key_id: String,
    /// A token for calling it.
    #[serde(default)]
    pub token: String,
}

/// `getKites`'s answer.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct GetKitesResult {
    /// The kites found, in random order.
    #[serde(default)]
    pub kites: Vec<KiteWithToken>,
    /// For a `getKites` with a `watchCallback`: the watch's id, which `cancelWatcher` takes
    /// (Kite.js's `watcherID`; absent otherwise, and from Go Kontrol).
    #[serde(rename = "watcherID", default, skip_serializing_if = "Option::is_none")]
    pub watcher_id: Option<String>,
}

/// `getToken`'s argument: the query's fields, flattened, and `force`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct GetTokenArgs {
    /// Which kite (it must match exactly one).
    #[serde(flatten)]
    pub query: KontrolQuery,
    /// Mint a new token instead of the cached one.
    #[serde(default)]
    pub force: bool,
}
