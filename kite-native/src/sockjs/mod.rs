//! A SockJS server (protocol 0.3): websocket, raw websocket, xhr-polling and xhr-streaming.
//!
//! [`router`] returns an axum router to nest under a prefix (a kite nests it at `/kite`). Every
//! new session, whatever its transport, is handed to the callback as a [`Session`], so the SockJS
//! layer works for anything, not only kites.
//!
//! ```no_run
//! # async fn demo() {
//! use kite_native::sockjs::{router, SockJsOptions};
//! let echo = |mut s: kite_native::session::Session| {
//!     tokio::spawn(async move {
//!         while let Some(msg) = s.rx.recv().await {
//!             let _ = s.tx.send(msg);
//!         }
//!     });
//! };
//! let app = axum::Router::new().nest("/echo", router(SockJsOptions::default(), echo));
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:8081").await.unwrap();
//! axum::serve(listener, app).await.unwrap();
//! # }
//! ```

mod http;

pub use http::{NoDelayListener, PeerAddr};
mod websocket;
mod xhr;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::routing::{get, post};

use crate::session::Session;

/// Options of a SockJS server.
#[derive(Debug, Clone)]
pub struct SockJsOptions {
    /// Interval of `h` frames on an idle session (Go kite: 10 s).
    pub heartbeat_delay: Duration,
    /// How long an XHR session without a receiver stays alive (Go kite: 10 s).
    pub disconnect_delay: Duration,
    /// Bytes after which an xhr-streaming response ends so the client opens a new one (128 KiB).
    pub response_limit: usize,
    /// Largest incoming message (a websocket message or an `xhr_send` body); larger ones end
    /// the session (1 MiB).
    pub max_message_size: usize,
    /// Whether the SockJS websocket transport is offered.
    pub websocket: bool,
    /// Whether the raw websocket endpoint (`/websocket`, no SockJS framing) is offered.
    pub raw_websocket: bool,
    /// Whether xhr-streaming is offered.
    pub xhr_streaming: bool,
    /// Bytes a websocket reads from its socket at a time (8 KiB). The buffer lives as long as
    /// the connection, so it is most of an idle connection's memory (about 13 KiB in all);
    /// tungstenite's default of 128 KiB would also be zeroed on every read. Larger buffers
    /// take fewer system calls for large messages and batches.
    pub read_buffer_size: usize,
}

impl Default for SockJsOptions {
    fn default() -> Self {
        SockJsOptions {
            heartbeat_delay: Duration::from_secs(10),
            disconnect_delay: Duration::from_secs(10),
            response_limit: 128 * 1024,
            max_message_size: 1 << 20,
            websocket: true,
            raw_websocket: true,
            xhr_streaming: true,
            read_buffer_size: 8 * 1024,
        }
    }
}

type OnSession = Arc<dyn Fn(Session) + Send + Sync>;

pub(crate) struct ServerState {
    pub(crate) options: SockJsOptions,
    pub(crate) on_session: OnSession,
    pub(crate) sessions: Mutex<HashMap<String, Arc<xhr::XhrSession>>>,
}

pub(crate) type State = Arc<ServerState>;

/// The SockJS routes, relative to where the router is nested.
pub fn router<F>(options: SockJsOptions, on_session: F) -> Router
where
    F: Fn(Session) + Clone + Send + Sync + 'static,
{
    let state: State = Arc::new(ServerState {
        options,
        on_session: Arc::new(on_session),
        sessions: Mutex::default(),
    });
    Router::new()
        .route("/", get(http::welcome))
        .route("/info", get(http::info).options(http::info_options))
        .route("/websocket", get(websocket::raw))
        .route("/{server}/{session}/websocket", get(websocket::sockjs))
        .route(
            "/{server}/{session}/xhr",
            post(xhr::poll).options(http::xhr_options),
        )
        .route(
            "/{server}/{session}/xhr_send",
            post(xhr::send).options(http::xhr_options),
        )
        .route(
            "/{server}/{session}/xhr_streaming",
            post(xhr::streaming).options(http::xhr_options),
        )
        .layer(axum::middleware::from_fn(http::cors))
        .with_state(state)
}

/// A server or session id segment is valid when it is non-empty and has no `.`.
pub(crate) fn valid_segment(s: &str) -> bool {
    !s.is_empty() && !s.contains('.')
}
