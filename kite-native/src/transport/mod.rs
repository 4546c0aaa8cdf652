//! Client transports: dial a kite over SockJS websocket, xhr-streaming, xhr-polling or a raw
//! websocket.
//!
//! Every dial ends in a [`Session`], the same type the server hands the runtime, so a
//! [`crate::Client`] runs unchanged over any transport. On the wire the clients behave like Go's
//! `sockjsclient`: the same URLs, ids, `Origin` header and framing, except that messages queued
//! together are sent together as one client frame (`["m1","m2"]`), which every SockJS server
//! accepts, and that a silent server (no frame, not even a heartbeat, for
//! [`DialOptions::heartbeat_timeout`]) ends the session, so a client notices a dead peer and
//! reconnects.
//!
//! ```no_run
//! use kite_native::transport::{self, DialOptions};
//!
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! let mut session = transport::dial("http://127.0.0.1:6000/kite", &DialOptions::default()).await?;
//! session.tx.send("{\"method\":\"kite.ping\",\"arguments\":[],\"callbacks\":{}}".into())?;
//! let reply = session.rx.recv().await;
//! # Ok(()) }
//! ```

#[cfg(feature = "client")]
pub(crate) mod url;
#[cfg(feature = "client")]
mod websocket;
#[cfg(feature = "client")]
mod xhr;
#[cfg(feature = "client")]
mod xhr_streaming;

// The fake servers are axum apps.
#[cfg(all(test, feature = "client", feature = "server"))]
mod fake;
#[cfg(all(test, feature = "client", feature = "server"))]
mod tests;

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

#[cfg(feature = "client")]
use kite_core::sockjs::Frame;

#[cfg(feature = "client")]
use crate::session::Session;

#[cfg(feature = "client")]
pub use self::url::{parse_base_url, sockjs_websocket_url};
#[cfg(feature = "client")]
pub use websocket::{dial_raw_websocket, dial_websocket, dial_websocket_at};
#[cfg(feature = "client")]
pub use xhr::dial_xhr;
#[cfg(feature = "client")]
pub use xhr_streaming::dial_xhr_streaming;

/// Which transport a client uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Transport {
    /// SockJS websocket; when the websocket handshake is refused, xhr-streaming; when that is
    /// refused or does not open in time (a buffering proxy), xhr-polling. Go's default tries
    /// websocket then xhr-polling.
    #[default]
    Auto,
    /// SockJS over websocket.
    WebSocket,
    /// SockJS xhr-streaming: one long response carries the frames, `xhr_send` the messages.
    XhrStreaming,
    /// SockJS xhr-polling.
    XhrPolling,
    /// A plain websocket with no SockJS framing (Kite.js servers); the URL is used verbatim.
    RawWebSocket,
}

/// The error for an unknown transport name.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "unknown transport {0:?} (want WebSocket, XHRStreaming, XHRPolling, auto or raw-websocket)"
)]
pub struct UnknownTransport(String);

impl FromStr for Transport {
    type Err = UnknownTransport;

    /// Accepts Go's `KITE_TRANSPORT` values (`WebSocket`, `XHRPolling`, `auto`) and the SockJS
    /// names (`websocket`, `xhr-streaming`, `xhr-polling`), plus `XHRStreaming` and
    /// `raw-websocket`, in any letter case.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim().to_ascii_lowercase().as_str() {
            "auto" => Ok(Transport::Auto),
            "websocket" => Ok(Transport::WebSocket),
            "xhrpolling" | "xhr-polling" | "xhr_polling" => Ok(Transport::XhrPolling),
            "xhrstreaming" | "xhr-streaming" | "xhr_streaming" => Ok(Transport::XhrStreaming),
            "rawwebsocket" | "raw-websocket" | "raw_websocket" => Ok(Transport::RawWebSocket),
            _ => Err(UnknownTransport(s.to_owned())),
        }
    }
}

impl fmt::Display for Transport {
    /// Go's spelling (`auto`, `WebSocket`, `XHRPolling`), `XHRStreaming` and `raw-websocket`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Transport::Auto => "auto",
            Transport::WebSocket => "WebSocket",
            Transport::XhrStreaming => "XHRStreaming",
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
    /// Websocket limit for connecting, the HTTP upgrade and the SockJS `o` frame together
    /// (15 s, as Go).
    pub handshake_timeout: Duration,
    /// XHR: the limit of the opening request (for xhr-streaming, until its `o` frame), and the
    /// first-byte wait of every poll; a poll with no answer in this long is abandoned and
    /// re-issued (15 s, as Go; keep it above the server's 10 s heartbeat). An xhr-streaming
    /// request re-opened after the server's response limit must answer within it too.
    pub timeout: Duration,
    /// Largest incoming message; a larger one ends the session (1 MiB).
    pub max_message_size: usize,
    /// Extra HTTP headers (cookies, ...) sent with the websocket handshake and with every XHR
    /// request. Names or values that are not valid HTTP are skipped with a warning.
    pub headers: Vec<(String, String)>,
    /// Bytes a websocket reads from its socket at a time (16 KiB; tungstenite's default of
    /// 128 KiB is zeroed on every read).
    pub read_buffer_size: usize,
    /// Extra trusted root certificates (PEM) for `https`/`wss`, beside the web PKI roots:
    /// for private CAs and self-signed servers.
    pub root_certificates: Vec<String>,
    /// SockJS transports: end the session when nothing at all (no frame, not even a heartbeat)
    /// has come from the server for this long, so that a dead peer is noticed and a
    /// reconnecting client dials again. Servers send heartbeats every 10 s (Go) or 25 s
    /// (sockjs-node) when idle; default 45 s. `None` waits forever, as Go's client does.
    pub heartbeat_timeout: Option<Duration>,
    /// A bound on the whole dial (connecting, TLS, the handshake and, for [`Transport::Auto`],
    /// every fallback together); past it the dial fails with [`DialError::Timeout`]. `None`
    /// (the default) leaves only the per-step limits above. Go's `Client.DialTimeout` takes
    /// such a bound (and ignores it); here it holds.
    pub dial_timeout: Option<Duration>,
}

impl Default for DialOptions {
    fn default() -> Self {
        DialOptions {
            transport: Transport::Auto,
            handshake_timeout: Duration::from_secs(15),
            timeout: Duration::from_secs(15),
            max_message_size: 1 << 20,
            read_buffer_size: 16 * 1024,
            headers: Vec::new(),
            root_certificates: Vec::new(),
            heartbeat_timeout: Some(Duration::from_secs(45)),
            dial_timeout: None,
        }
    }
}

/// Why a dial failed.
#[derive(Debug, Clone, thiserror::Error)]
pub enum DialError {
    /// The URL (or the TLS roots) cannot be used.
    #[error("invalid URL {0}")]
    InvalidUrl(String),
    /// The server refused the handshake: an HTTP status other than the expected one (101 for
    /// websocket, 200 for the xhr open), or a refused websocket upgrade. [`Transport::Auto`]
    /// falls back to xhr-polling on this error only.
    #[error("handshake failed: {0}")]
    Handshake(String),
    /// No answer in time.
    #[error("timed out")]
    Timeout,
    /// The connection failed (refused, reset, TLS, ...).
    #[error("{0}")]
    Io(String),
    /// The server answered, but not with SockJS: no `o` frame first, or a close frame.
    #[error("protocol error: {0}")]
    Protocol(String),
}

#[cfg(feature = "client")]
/// Dials `url` (a kite's SockJS base URL such as `http://127.0.0.1:6000/kite`; `ws`, `wss`,
/// `http` and `https` accepted) with the transport of `opts` and returns the open session.
///
/// [`Transport::Auto`] tries websocket; when its handshake is refused ([`DialError::Handshake`],
/// e.g. a 404 from a server with websockets off) xhr-streaming; and when that is refused or
/// does not open in time, xhr-polling. Any other error, such as a refused connection, is
/// returned as is. All of it takes at most [`DialOptions::dial_timeout`], if set.
pub async fn dial(url: &str, opts: &DialOptions) -> Result<Session, DialError> {
    match opts.dial_timeout {
        Some(limit) => tokio::time::timeout(limit, dial_unbounded(url, opts))
            .await
            .unwrap_or(Err(DialError::Timeout)),
        None => dial_unbounded(url, opts).await,
    }
}

#[cfg(feature = "client")]
async fn dial_unbounded(url: &str, opts: &DialOptions) -> Result<Session, DialError> {
    match opts.transport {
        Transport::WebSocket => dial_websocket(url, opts).await,
        Transport::XhrStreaming => dial_xhr_streaming(url, opts).await,
        Transport::XhrPolling => dial_xhr(url, opts).await,
        Transport::RawWebSocket => dial_raw_websocket(url, opts).await,
        Transport::Auto => {
            let why = match dial_websocket(url, opts).await {
                Err(DialError::Handshake(why)) => why,
                other => return other,
            };
            tracing::debug!(%url, %why, "websocket refused, trying xhr-streaming");
            match dial_xhr_streaming(url, opts).await {
                Err(
                    e @ (DialError::Handshake(_) | DialError::Protocol(_) | DialError::Timeout),
                ) => {
                    tracing::debug!(%url, error = %e, "xhr-streaming failed, using xhr-polling");
                    dial_xhr(url, opts).await
                }
                other => other,
            }
        }
    }
}

#[cfg(feature = "client")]
/// Notices a silent server: [`Silence::heard`] on everything that arrives, and
/// [`Silence::expired`] resolves once nothing has for the limit.
///
/// The timer is armed once and re-armed only when it fires, so a busy session pays a clock
/// read per arrival rather than a timer registration per wait.
struct Silence {
    limit: Option<Duration>,
    last_heard: tokio::time::Instant,
    timer: Option<std::pin::Pin<Box<tokio::time::Sleep>>>,
}

#[cfg(feature = "client")]
impl Silence {
    /// Starts counting now; `None` never expires.
    fn new(limit: Option<Duration>) -> Self {
        Silence {
            limit,
            last_heard: tokio::time::Instant::now(),
            timer: None,
        }
    }

    /// Something arrived from the server.
    fn heard(&mut self) {
        if self.limit.is_some() {
            self.last_heard = tokio::time::Instant::now();
        }
    }

    /// Resolves (with a warning logged) once nothing has been heard for the limit; never
    /// without one. Cancel-safe: the timer outlives the future.
    async fn expired(&mut self) {
        let Some(limit) = self.limit else {
            return std::future::pending().await;
        };
        let last_heard = self.last_heard;
        let timer = self
            .timer
            .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(last_heard + limit)));
        loop {
            timer.as_mut().await;
            let due = self.last_heard + limit;
            if tokio::time::Instant::now() >= due {
                tracing::warn!(
                    silence = ?limit,
                    "the server has sent nothing, not even a heartbeat, for too long: \
                     closing the session"
                );
                return;
            }
            timer.as_mut().reset(due);
        }
    }
}

#[cfg(feature = "client")]
/// What a reader does with one incoming SockJS frame.
#[derive(Debug, PartialEq, Eq)]
enum Step {
    /// Hand these messages to the runtime.
    Deliver(Vec<String>),
    /// Nothing to deliver (`h`).
    Skip,
    /// End the session (`c[...]`, an `o` after the first, a broken frame, an oversized
    /// message).
    End,
}

#[cfg(feature = "client")]
/// Decodes one server → client frame (a websocket message or one line of an xhr body).
fn decode_frame(text: &str, max_message_size: usize) -> Step {
    let msgs = match Frame::decode(text) {
        Ok(Frame::Messages(msgs)) => msgs,
        Ok(Frame::Message(msg)) => vec![msg],
        Ok(Frame::Heartbeat) => return Step::Skip,
        Ok(Frame::Open) => {
            // Servers send `o` only when they create a session: this one forgot ours (expired
            // or restarted), and whatever it held for us is lost.
            tracing::warn!("the server opened a new session in place of ours, closing");
            return Step::End;
        }
        Ok(Frame::Close { code, reason }) => {
            tracing::debug!(code, %reason, "server closed the session");
            return Step::End;
        }
        Err(e) => {
            tracing::warn!(error = %e, "broken SockJS frame from the server, closing");
            return Step::End;
        }
    };
    if let Some(big) = msgs.iter().find(|m| m.len() > max_message_size) {
        tracing::warn!(
            size = big.len(),
            limit = max_message_size,
            "message over the size limit, closing"
        );
        return Step::End;
    }
    Step::Deliver(msgs)
}

#[cfg(feature = "client")]
/// Largest SockJS frame accepted from a server: one frame may batch several messages, and JSON
/// escaping can make a message up to six times longer on the wire (Go writes `<` as `\u003c`).
/// Each message is then held to `max_message_size`.
fn frame_limit(max_message_size: usize) -> usize {
    max_message_size.saturating_mul(8).saturating_add(64 * 1024)
}

#[cfg(feature = "client")]
/// The pairs of `headers` that are valid HTTP, each invalid one skipped with a warning.
fn valid_headers(
    headers: &[(String, String)],
) -> Vec<(reqwest::header::HeaderName, reqwest::header::HeaderValue)> {
    headers
        .iter()
        .filter_map(|(k, v)| {
            match (
                reqwest::header::HeaderName::from_bytes(k.as_bytes()),
                reqwest::header::HeaderValue::from_str(v),
            ) {
                (Ok(name), Ok(value)) => Some((name, value)),
                _ => {
                    tracing::warn!(header = %k, "skipping an invalid HTTP header");
                    None
                }
            }
        })
        .collect()
}
