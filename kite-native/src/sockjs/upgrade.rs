//! The websocket handshake of the server's websocket endpoints, done here rather than by axum's
//! `WebSocketUpgrade`, so that tungstenite runs over a socket of ours ([`BurstIo`]).
//!
//! [`WsUpgrade`] checks a request as axum's extractor did, and refuses it with the same status
//! and text: `405 Request method must be \`GET\``, `400 Connection header did not include
//! 'upgrade'`, `` 400 `Upgrade` header did not include 'websocket' ``, `` 400
//! `Sec-WebSocket-Version` header did not include '13' ``, `` 400 `Sec-WebSocket-Key` header
//! missing `` and `426` for a connection that cannot be upgraded. No subprotocol is offered
//! (nor was it): `Sec-WebSocket-Protocol` is ignored.

use std::future::Future;

use axum::http::header::{self, HeaderMap, HeaderName, HeaderValue};
use axum::http::{Method, StatusCode, Version, request::Parts};
use axum::response::{IntoResponse, Response};
use hyper::upgrade::{OnUpgrade, Upgraded};
use hyper_util::rt::TokioIo;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_tungstenite::tungstenite::protocol::{Role, WebSocketConfig};
use tracing::debug;

use super::burst_io::{BurstIo, FRAME_BUFFER};

/// A server websocket, over the upgraded connection.
pub(crate) type Socket = WebSocketStream<BurstIo<TokioIo<Upgraded>>>;

/// Why an upgrade request is refused; each answers as axum's `WebSocketUpgrade` did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub(crate) enum UpgradeRefused {
    /// HTTP/1.1 with a method other than `GET`.
    #[error("Request method must be `GET`")]
    MethodNotGet,
    /// HTTP/2 with a method other than `CONNECT`.
    #[error("Request method must be `CONNECT`")]
    MethodNotConnect,
    /// `Connection` does not name `upgrade`.
    #[error("Connection header did not include 'upgrade'")]
    Connection,
    /// `Upgrade` is not `websocket`.
    #[error("`Upgrade` header did not include 'websocket'")]
    Upgrade,
    /// `Sec-WebSocket-Version` is not `13`.
    #[error("`Sec-WebSocket-Version` header did not include '13'")]
    Version,
    /// No `Sec-WebSocket-Key`.
    #[error("`Sec-WebSocket-Key` header missing")]
    KeyMissing,
    /// The server gave the request no way to take over its connection.
    #[error("WebSocket request couldn't be upgraded since no upgrade state was present")]
    NotUpgradable,
}

impl UpgradeRefused {
    fn status(self) -> StatusCode {
        match self {
            UpgradeRefused::MethodNotGet | UpgradeRefused::MethodNotConnect => {
                StatusCode::METHOD_NOT_ALLOWED
            }
            UpgradeRefused::NotUpgradable => StatusCode::UPGRADE_REQUIRED,
            _ => StatusCode::BAD_REQUEST,
        }
    }
}

impl IntoResponse for UpgradeRefused {
    fn into_response(self) -> Response {
        (self.status(), self.to_string()).into_response()
    }
}

/// A websocket upgrade request that passed the handshake's checks.
pub(crate) struct WsUpgrade {
    /// `None` over HTTP/2 (extended CONNECT has no key).
    key: Option<HeaderValue>,
    on_upgrade: OnUpgrade,
}

impl<S: Send + Sync> axum::extract::FromRequestParts<S> for WsUpgrade {
    type Rejection = UpgradeRefused;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        let key = if parts.version <= Version::HTTP_11 {
            if parts.method != Method::GET {
                return Err(UpgradeRefused::MethodNotGet);
            }
            if !header_contains(&parts.headers, header::CONNECTION, "upgrade") {
                return Err(UpgradeRefused::Connection);
            }
            if !header_is(&parts.headers, header::UPGRADE, "websocket") {
                return Err(UpgradeRefused::Upgrade);
            }
            Some(
                parts
                    .headers
                    .get(header::SEC_WEBSOCKET_KEY)
                    .ok_or(UpgradeRefused::KeyMissing)?
                    .clone(),
            )
        } else {
            if parts.method != Method::CONNECT {
                return Err(UpgradeRefused::MethodNotConnect);
            }
            None
        };
        if !header_is(&parts.headers, header::SEC_WEBSOCKET_VERSION, "13") {
            return Err(UpgradeRefused::Version);
        }
        let on_upgrade = parts
            .extensions
            .remove::<OnUpgrade>()
            .ok_or(UpgradeRefused::NotUpgradable)?;
        Ok(WsUpgrade { key, on_upgrade })
    }
}

/// How a websocket reads and what it accepts.
#[derive(Debug, Clone, Copy)]
pub(crate) struct SocketOptions {
    /// The largest message and frame accepted.
    pub(crate) max_size: usize,
    /// The most bytes one read of the socket takes (`SockJsOptions::read_buffer_size`).
    pub(crate) read_chunk: usize,
}

impl SocketOptions {
    fn config(self) -> WebSocketConfig {
        WebSocketConfig::default()
            .max_message_size(Some(self.max_size))
            .max_frame_size(Some(self.max_size))
            .read_buffer_size(self.read_chunk.min(FRAME_BUFFER))
    }
}

impl WsUpgrade {
    /// Answers the handshake (101) and runs `serve` on the websocket once the connection is
    /// handed over, in a task of its own.
    pub(crate) fn on_upgrade<F, Fut>(self, options: SocketOptions, serve: F) -> Response
    where
        F: FnOnce(Socket) -> Fut + Send + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        let on_upgrade = self.on_upgrade;
        tokio::spawn(async move {
            let upgraded = match on_upgrade.await {
                Ok(u) => u,
                Err(e) => {
                    debug!(error = %e, "websocket upgrade failed");
                    return;
                }
            };
            let io = BurstIo::new(TokioIo::new(upgraded), options.read_chunk);
            let socket =
                WebSocketStream::from_raw_socket(io, Role::Server, Some(options.config())).await;
            serve(socket).await;
        });
        let Some(key) = self.key else {
            // HTTP/2 (RFC 8441): a 2xx with no body accepts.
            return StatusCode::OK.into_response();
        };
        let accept = HeaderValue::from_str(&derive_accept_key(key.as_bytes()))
            .unwrap_or_else(|_| HeaderValue::from_static(""));
        (
            StatusCode::SWITCHING_PROTOCOLS,
            [
                (header::CONNECTION, HeaderValue::from_static("upgrade")),
                (header::UPGRADE, HeaderValue::from_static("websocket")),
                (header::SEC_WEBSOCKET_ACCEPT, accept),
            ],
        )
            .into_response()
    }
}

/// Whether `key`'s value is `value`, ignoring ASCII case.
fn header_is(headers: &HeaderMap, key: HeaderName, value: &str) -> bool {
    headers
        .get(&key)
        .is_some_and(|h| h.as_bytes().eq_ignore_ascii_case(value.as_bytes()))
}

/// Whether `key`'s value contains `value` (lower case), ignoring ASCII case.
fn header_contains(headers: &HeaderMap, key: HeaderName, value: &str) -> bool {
    headers
        .get(&key)
        .and_then(|h| std::str::from_utf8(h.as_bytes()).ok())
        .is_some_and(|h| h.to_ascii_lowercase().contains(value))
}
