//! The kite request envelope `{kite, authentication, responseCallback, withArgs}` and the response
//! `{error, result}`.

use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::connection::InFlight;
use crate::dnode::{Callback, Value};
use crate::error::KiteError;
use crate::identity::Kite;

/// Credentials sent with a request: `{"type": "kiteKey" | "token" | ..., "key": "..."}`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Auth {
    /// The authentication type (`kiteKey`, `token`, `sessionID`, ...).
    #[serde(rename = "type")]
    pub kind: String,
    /// The credential itself.
    pub key: String,
}

impl Auth {
    /// Credentials of `kind` with `key`.
    pub fn new(kind: impl Into<String>, key: impl Into<String>) -> Self {
        Auth {
            kind: kind.into(),
            key: key.into(),
        }
    }
}

/// The start of every request one client sends, which only depends on who calls with which
/// credentials: `{"kite":{..},"authentication":..,"responseCallback":"[Function]","withArgs":`.
///
/// A client encodes it once (again when its credentials change) and hands it to
/// [`crate::Connection::request_with_head`] for every call, instead of encoding its identity and
/// credentials per call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestHead {
    bytes: Vec<u8>,
    /// `bytes` escaped as the contents of a JSON string (no quotes): how the head appears
    /// inside a SockJS frame.
    quoted: Vec<u8>,
}

impl RequestHead {
    /// Encodes the head for calls made by `kite` with `auth` (Go's key order and escaping).
    pub fn new(kite: &Kite, auth: Option<&Auth>) -> Self {
        let mut bytes = Vec::with_capacity(256);
        bytes.extend_from_slice(b"{\"kite\":");
        // Serializing plain data cannot fail.
        let _ = crate::json::write_into(&mut bytes, kite);
        bytes.extend_from_slice(b",\"authentication\":");
        let _ = crate::json::write_into(&mut bytes, &auth);
        bytes.extend_from_slice(b",\"responseCallback\":\"[Function]\",\"withArgs\":");
        let quoted = crate::json::escape_contents(&bytes);
        RequestHead { bytes, quoted }
    }

    /// The encoded head.
    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes
    }

    /// The encoded head escaped as JSON string contents (see [`crate::json::escape_contents`]).
    pub fn quoted_bytes(&self) -> &[u8] {
        &self.quoted
    }
}

/// A request received from a peer.
#[derive(Debug)]
pub struct Request {
    /// The method to run.
    pub method: String,
    /// The caller's declared identity (not trusted, except the username after authentication).
    /// Shared: a connection decodes its caller's identity once and hands it to every request.
    pub kite: Arc<Kite>,
    /// The caller's credentials, if any. Shared: a connection decodes the credentials its
    /// peer repeats with every request once.
    pub auth: Option<Arc<Auth>>,
    /// The method's arguments (`withArgs`), always a list: `null` or missing became `[]`, and a
    /// scalar (as Kite.js sends) became `[x]`.
    pub args: Value,
    /// Where the answer goes; `None` when the caller sent no response callback.
    pub response: Option<Callback>,
    /// This request's slot among the connection's calls in flight
    /// ([`crate::connection::Limits::max_calls_in_flight`]): keep it until the answer is sent.
    pub in_flight: Option<InFlight>,
}

impl Request {
    /// The peer's id of the response callback, if the caller wants an answer.
    pub fn response_id(&self) -> Option<u64> {
        self.response.as_ref().and_then(Callback::remote_id)
    }
}

/// The single argument of a response: `[{"error": ..., "result": ...}]`, with any functions
/// inside the result kept (at `[0, "result", ...]`). [`crate::Connection::respond`] writes the
/// same message directly; this is for answering through a [`Callback`].
pub fn response_args(result: Result<Value, KiteError>) -> Value {
    let (error, result) = match result {
        Ok(v) => (Value::null(), v),
        Err(e) => (Value::from_serialize(&e).unwrap_or_default(), Value::null()),
    };
    Value::list([Value::object([("error", error), ("result", result)])])
}
