//! The kite error object `{type, message, code, id}` and decoding errors.

use std::borrow::Cow;
use std::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// The `type` of a [`KiteError`]: the standard names, or any other string.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum ErrorKind {
    /// `genericError`: any handler error without a type of its own.
    Generic,
    /// `argumentError`: arguments of the wrong shape or type.
    Argument,
    /// `authenticationError`: missing or rejected credentials.
    Authentication,
    /// `methodNotFound`: no handler for the method.
    MethodNotFound,
    /// `requestLimitError`: the method is throttled.
    RequestLimit,
    /// `sendError`: the request could not be sent (client-local).
    Send,
    /// `timeout`: no response in time (client-local).
    Timeout,
    /// `disconnect`: the connection dropped before the response (client-local).
    Disconnect,
    /// `invalidResponse`: the response was malformed (client-local).
    InvalidResponse,
    /// Any other type name, sent verbatim.
    Other(String),
}

impl ErrorKind {
    /// The wire name of this kind.
    pub fn as_str(&self) -> &str {
        match self {
            ErrorKind::Generic => "genericError",
            ErrorKind::Argument => "argumentError",
            ErrorKind::Authentication => "authenticationError",
            ErrorKind::MethodNotFound => "methodNotFound",
            ErrorKind::RequestLimit => "requestLimitError",
            ErrorKind::Send => "sendError",
            ErrorKind::Timeout => "timeout",
            ErrorKind::Disconnect => "disconnect",
            ErrorKind::InvalidResponse => "invalidResponse",
            ErrorKind::Other(s) => s,
        }
    }

    /// Parses a wire name.
    pub fn from_name(name: &str) -> ErrorKind {
        match name {
            "genericError" => ErrorKind::Generic,
            "argumentError" => ErrorKind::Argument,
            "authenticationError" => ErrorKind::Authentication,
            "methodNotFound" => ErrorKind::MethodNotFound,
            "requestLimitError" => ErrorKind::RequestLimit,
            "sendError" => ErrorKind::Send,
            "timeout" => ErrorKind::Timeout,
            "disconnect" => ErrorKind::Disconnect,
            "invalidResponse" => ErrorKind::InvalidResponse,
            other => ErrorKind::Other(other.to_owned()),
        }
    }
}

impl fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Serialize for ErrorKind {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for ErrorKind {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s: Cow<'de, str> = Deserialize::deserialize(d)?;
        Ok(ErrorKind::from_name(&s))
    }
}

/// The error object of the kite protocol: `{"type","message","code","id"}`, all keys always
/// present, as Go's `kite.Error`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KiteError {
    /// The error type (`genericError`, `argumentError`, ... or a custom name).
    #[serde(rename = "type", default = "generic")]
    pub kind: ErrorKind,
    /// Human readable message.
    #[serde(default)]
    pub message: String,
    /// Free-form code (Go's `CodeVal`).
    #[serde(default, deserialize_with = "string_or_any")]
    pub code: String,
    /// The id of the request that failed (16 hex chars), or empty.
    #[serde(default)]
    pub id: String,
}

fn generic() -> ErrorKind {
    ErrorKind::Generic
}

/// Kite.js peers may send numeric codes; keep them as their JSON text.
fn string_or_any<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    let v = serde_json::Value::deserialize(d)?;
    Ok(match v {
        serde_json::Value::String(s) => s,
        serde_json::Value::Null => String::new(),
        other => other.to_string(),
    })
}

impl KiteError {
    /// Creates an error of `kind` with `message`, empty code and id.
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        KiteError {
            kind,
            message: message.into(),
            code: String::new(),
            id: String::new(),
        }
    }

    /// A `genericError`.
    pub fn generic(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Generic, message)
    }

    /// An `argumentError`.
    pub fn argument(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Argument, message)
    }

    /// `methodNotFound` with Go's message `Method not found: <name>`.
    pub fn method_not_found(method: &str) -> Self {
        Self::new(
            ErrorKind::MethodNotFound,
            format!("Method not found: {method}"),
        )
    }

    /// `requestLimitError` with Go's message.
    pub fn request_limit() -> Self {
        Self::new(
            ErrorKind::RequestLimit,
            "The maximum request rate is exceeded.",
        )
    }

    /// `disconnect` with Go's message.
    pub fn disconnect() -> Self {
        Self::new(ErrorKind::Disconnect, "Remote kite has disconnected")
    }

    /// Sets the code.
    pub fn with_code(mut self, code: impl Into<String>) -> Self {
        self.code = code.into();
        self
    }

    /// Sets the request id.
    pub fn with_id(mut self, id: impl Into<String>) -> Self {
        self.id = id.into();
        self
    }
}

impl fmt::Display for KiteError {
    /// Formats like Go's `Error()`: `message` for generic errors, else `type: message`, then
    /// ` (id)` when the id is set.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.kind {
            ErrorKind::Generic => f.write_str(&self.message)?,
            ErrorKind::Other(ref s) if s.is_empty() => f.write_str(&self.message)?,
            ref kind => write!(f, "{kind}: {}", self.message)?,
        }
        if !self.id.is_empty() {
            write!(f, " ({})", self.id)?;
        }
        Ok(())
    }
}

impl std::error::Error for KiteError {}

impl From<String> for KiteError {
    /// A `genericError` with this message.
    fn from(message: String) -> Self {
        KiteError::generic(message)
    }
}

impl From<&str> for KiteError {
    /// A `genericError` with this message.
    fn from(message: &str) -> Self {
        KiteError::generic(message)
    }
}

/// Why an incoming dnode message could not be understood.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProtocolError {
    /// The text is not JSON, or not a JSON object of the dnode shape.
    #[error("invalid dnode message: {0}")]
    InvalidMessage(String),
    /// `method` is neither a string nor a non-negative integer.
    #[error("Method is not string or integer")]
    InvalidMethod,
    /// A `callbacks` entry is malformed.
    #[error("invalid callbacks: {0}")]
    InvalidCallbacks(String),
    /// A request whose `arguments` is not a one-element array (the Go original crashes here).
    #[error("a kite request must have exactly one argument, got {0}")]
    InvalidRequest(String),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn serializes_all_keys_in_go_order() {
        let e = KiteError::generic("boom").with_id("69c9a35b7da2a0ac");
        assert_eq!(
            crate::json::to_string(&e).unwrap(),
            r#"{"type":"genericError","message":"boom","code":"","id":"69c9a35b7da2a0ac"}"#
        );
    }

    #[test]
    fn displays_like_go() {
        assert_eq!(
            KiteError::generic("boom")
                .with_id("69c9a35b7da2a0ac")
                .to_string(),
            "boom (69c9a35b7da2a0ac)"
        );
        let custom =
            KiteError::new(ErrorKind::Other("myType".into()), "custom").with_id("6a153b9f7fc7d476");
        assert_eq!(custom.to_string(), "myType: custom (6a153b9f7fc7d476)");
        assert_eq!(
            KiteError::method_not_found("x").to_string(),
            "methodNotFound: Method not found: x"
        );
    }

    #[test]
    fn parses_custom_and_partial_errors() {
        let e: KiteError =
            serde_json::from_str(r#"{"type":"myType","message":"m","code":42}"#).unwrap();
        assert_eq!(e.kind, ErrorKind::Other("myType".into()));
        assert_eq!(e.code, "42");
        let e: KiteError = serde_json::from_str(r#"{"message":"m"}"#).unwrap();
        assert_eq!(e.kind, ErrorKind::Generic);
    }
}
