//! Client transports: dial a kite over SockJS websocket, xhr-polling or a raw websocket.
//!
//! Every dial ends in a [`Session`], the same type the server hands the runtime, so a
//! [`crate::Client`] runs unchanged over any transport.

mod websocket;
mod xhr;

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use crate::session::Session;

pub use websocket::{dial_raw_websocket, dial_websocket, sockjs_websocket_url};
pub use xhr::dial_xhr;

/// Which transport a client uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Transport {
    /// SockJS websocket, falling back to xhr-polling when the websocket handshake is refused
    /// (Go's default).
    #[default]
    Auto,
    /// SockJS over websocket.
    WebSocket,
    /// SockJS xhr-polling.
    XhrPolling,
    /// A plain websocket with no SockJS framing (Kite.js servers); the URL is used verbatim.
    RawWebSocket,
}

/// The error for an unknown transport name.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown transport {0:?} (want WebSocket, XHRPolling, auto or raw-websocket)")]
pub struct UnknownTransport(String);

impl FromStr for Transport {
    type Err = UnknownTransport;

    /// Accepts Go's `KITE_TRANSPORT` values (`WebSocket`, `XHRPolling`, `auto`) and the SockJS
    /// names (`websocket`, `xhr-polling`), plus `raw-websocket`.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "auto" | "Auto" => Ok(Transport::Auto),
            "WebSocket" | "websocket" => Ok(Transport::WebSocket),
            "XHRPolling" | "xhr-polling" | "xhr_polling" => Ok(Transport::XhrPolling),
            "raw-websocket" | "RawWebSocket" => Ok(Transport::RawWebSocket),
            other => Err(UnknownTransport(other.to_owned())),
        }
    }
}

impl fmt::Display for Transport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Transport::Auto => "auto",
            Transport::WebSocket => "WebSocket",
            Transport::XhrPolling => "XHRPolling",
            Transport::RawWebSocket => "raw-websocket",
        })
    }
}

/// How to dial.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct DialOptions {
    /// The transport (default [`Transport::Auto`]).
    pub transport: Transport,
    /// Websocket handshake limit, including the SockJS `o` frame (15 s, as Go).
    pub handshake_timeout: Duration,
    /// XHR: a poll with no answer in this long is abandoned and re-issued; also the limit of
    /// the opening request (15 s, as Go; keep it above the server's 10 s heartbeat).
    pub timeout: Duration,
    /// Largest incoming message; a larger one ends the session (1 MiB).
    pub max_message_size: usize,
    /// Extra HTTP headers sent with the handshake and every XHR request.
    pub headers: Vec<(String, String)>,
    /// Extra trusted root certificates (PEM) for `https`/`wss`, beside the web PKI roots:
    /// for private CAs and self-signed servers.
    pub root_certificates: Vec<String>,
}

impl Default for DialOptions {
    fn default() -> Self {
        DialOptions {
            transport: Transport::Auto,
            handshake_timeout: Duration::from_secs(15),
            timeout: Duration::from_secs(15),
            max_message_size: 1 << 20,
            headers: Vec::new(),
            root_certificates: Vec::new(),
        }
    }
}

/// Why a dial failed.
#[derive(Debug, Clone, thiserror::Error)]
pub enum DialError {
    /// The URL cannot be used.
    #[error("invalid URL {0}")]
    InvalidUrl(String),
    /// The server refused the handshake (HTTP status, or no `o` frame).
    #[error("handshake failed: {0}")]
    Handshake(String),
    /// No answer in time.
    #[error("timed out")]
    Timeout,
    /// The connection failed.
    #[error("{0}")]
    Io(String),
}

/// Dials `url` (a kite's SockJS base URL such as `http://127.0.0.1:6000/kite`) with the
/// transport of `opts`. `Auto` tries websocket and falls back to xhr-polling only when the
/// websocket handshake is refused (as Go's client does).
pub async fn dial(url: &str, opts: &DialOptions) -> Result<Session, DialError> {
    match opts.transport {
        Transport::WebSocket => dial_websocket(url, opts).await,
        Transport::XhrPolling => dial_xhr(url, opts).await,
        Transport::RawWebSocket => dial_raw_websocket(url, opts).await,
        Transport::Auto => match dial_websocket(url, opts).await {
            Err(DialError::Handshake(why)) => {
                tracing::debug!(%url, %why, "websocket refused, falling back to xhr-polling");
                dial_xhr(url, opts).await
            }
            other => other,
        },
    }
}

/// Random SockJS server id (3 digits) and session id (20 hex chars), as Go's client makes.
pub(crate) fn sockjs_ids() -> (String, String) {
    let server = rand::random_range(100..1000u32).to_string();
    let session = hex::encode(rand::random::<[u8; 10]>());
    (server, session)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transport_names() {
        assert_eq!("WebSocket".parse(), Ok(Transport::WebSocket));
        assert_eq!("XHRPolling".parse(), Ok(Transport::XhrPolling));
        assert_eq!("auto".parse(), Ok(Transport::Auto));
        assert_eq!("xhr-polling".parse(), Ok(Transport::XhrPolling));
        assert!("pigeon".parse::<Transport>().is_err());
    }

    #[test]
    fn websocket_urls_like_go() {
        assert_eq!(
            sockjs_websocket_url("http://example.com/kite", "123", "abc").unwrap(),
            "ws://example.com:80/kite/123/abc/websocket"
        );
        assert_eq!(
            sockjs_websocket_url("https://example.com:8443/kite/?x=1", "1", "s").unwrap(),
            "wss://example.com:8443/kite/1/s/websocket?x=1"
        );
        assert_eq!(
            sockjs_websocket_url("ws://[::1]:6000/kite", "1", "s").unwrap(),
            "ws://[::1]:6000/kite/1/s/websocket"
        );
        assert!(sockjs_websocket_url("not a url", "1", "s").is_err());
    }
}
