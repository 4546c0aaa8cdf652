//! The kite request envelope `{kite, authentication, responseCallback, withArgs}` and the response
//! `{error, result}`.

use std::sync::Arc;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::dnode::{Args, Callback, Scrubbed, Segment};
use crate::error::{ErrorKind, KiteError};
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
#[derive(Debug, Clone)]
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
    pub args: Args,
    /// Where the answer goes; `None` when the caller sent no response callback.
    pub response: Option<Callback>,
}

/// Builds the single argument of a response: `[{"error": ..., "result": ...}]`, with any
/// callbacks inside the result kept (at `[0, "result", ...]`).
pub fn response_args(result: Result<Scrubbed, KiteError>) -> Scrubbed {
    let (error, result) = match result {
        Ok(s) => (Value::Null, s),
        Err(e) => (
            serde_json::to_value(&e).unwrap_or(Value::Null),
            Scrubbed::plain(Value::Null),
        ),
    };
    let mut obj = serde_json::Map::new();
    obj.insert("error".into(), error);
    obj.insert("result".into(), result.value);
    let callbacks = result
        .callbacks
        .into_iter()
        .map(|(mut path, cb)| {
            path.splice(0..0, [Segment::Index(0), Segment::Key("result".into())]);
            (path, cb)
        })
        .collect();
    Scrubbed {
        value: Value::Array(vec![Value::Object(obj)]),
        callbacks,
    }
}

/// Interprets the arguments of a response callback invocation, as Go's client does: exactly one
/// object with `error` and/or `result`. Kite.js browser kites answer node-style `[error, result]`;
/// that is accepted too. Anything else is `invalidResponse`.
pub fn parse_response(args: Args) -> Result<Args, KiteError> {
    let invalid = |msg: String| KiteError::new(ErrorKind::InvalidResponse, msg);
    let scrubbed = args.into_scrubbed();
    let Value::Array(items) = &scrubbed.value else {
        return Err(invalid("Server has sent invalid response arguments".into()));
    };
    let (error, result_index, result_prefix): (Option<&Value>, usize, Vec<Segment>) =
        match items.as_slice() {
            [Value::Object(obj)] => {
                if !obj.contains_key("error") && !obj.contains_key("result") {
                    return Err(invalid("Server has sent invalid response arguments".into()));
                }
                (
                    obj.get("error"),
                    0,
                    vec![Segment::Index(0), Segment::Key("result".into())],
                )
            }
            [error, _result] => (Some(error), 1, vec![Segment::Index(1)]),
            [_] => return Err(invalid("Server has sent invalid response arguments".into())),
            other => {
                return Err(invalid(format!(
                    "Invalid response arguments length: {}",
                    other.len()
                )));
            }
        };
    if let Some(err) = error.filter(|e| !e.is_null()) {
        let e: KiteError = match err {
            Value::String(s) => KiteError::generic(s.clone()),
            other => serde_json::from_value(other.clone())
                .map_err(|e| invalid(format!("malformed error in response: {e}")))?,
        };
        return Err(e);
    }
    let _ = result_index;
    // Keep only the result subtree and the callbacks under it.
    let Scrubbed {
        mut value,
        callbacks,
    } = scrubbed;
    let result = crate::dnode::path::get_mut(&mut value, &result_prefix)
        .map(Value::take)
        .unwrap_or(Value::Null);
    let callbacks = callbacks
        .into_iter()
        .filter_map(|(path, cb)| {
            crate::dnode::path::strip_prefix(&path, &result_prefix).map(|rest| (rest.to_vec(), cb))
        })
        .collect();
    Ok(Scrubbed {
        value: result,
        callbacks,
    }
    .into_args())
}
