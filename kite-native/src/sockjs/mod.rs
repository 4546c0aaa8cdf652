//! A SockJS server (protocol 0.3.3): every transport sockjs-client knows.
//!
//! [`SockJsServer`] serves the SockJS endpoints as an axum router to nest under a prefix (a kite
//! nests it at `/kite`): `/info`, the iframe page, SockJS websocket, raw websocket, xhr-polling,
//! xhr-streaming, eventsource, htmlfile and JSONP polling, with `xhr_send` and `jsonp_send`.
//! Every new session, whatever its transport, is handed to the callback as a [`Session`], so the
//! SockJS layer works for anything, not only kites (see the `sockjs_echo` example).
//!
//! ```no_run
//! # async fn demo() {
//! use kite_native::sockjs::{SockJsOptions, SockJsServer};
//! let echo = |mut s: kite_native::session::Session| {
//!     tokio::spawn(async move {
//!         while let Some(msg) = s.rx.recv().await {
//!             let _ = s.tx.send(msg);
//!         }
//!     });
//! };
//! let server = SockJsServer::new(SockJsOptions::default(), echo);
//! let app = server.router_at("/echo");
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:8081").await.unwrap();
//! // kite_native::server gives the SockJS server the peers' addresses it budgets by.
//! let options = kite_native::server::ServeOptions::default();
//! kite_native::server::serve(listener, app, options, std::future::pending())
//!     .await
//!     .unwrap();
//! # }
//! ```
//!
//! Sessions of the HTTP transports live in the server between requests: messages for the
//! client queue until a receiving request takes them, in order, none lost or duplicated; a
//! receiver is detached before its answer is handed back, so a client that polls again the
//! instant an answer arrives is always accepted (only a genuinely concurrent second receiver
//! gets `c[2010,"Another connection still open"]`, after waiting 250 ms for the first to go, so
//! that a client asking again right after it dropped a request is not refused); a session with
//! no receiver for [`SockJsOptions::disconnect_delay`] ends; a receiving request cut off by the
//! network ends its session with `c[1002,"Connection interrupted"]`.
//!
//! # Budgets
//!
//! Every resource a peer can make the server hold has a budget in [`SockJsOptions`]; the counts
//! are an [`Occupancy`] (shareable between servers):
//!
//! * **Sessions** of the HTTP transports, in total and per remote address
//!   ([`SockJsOptions::max_sessions`], [`SockJsOptions::max_sessions_per_ip`]), and
//!   **websockets**, SockJS and raw, likewise ([`SockJsOptions::max_websockets`],
//!   [`SockJsOptions::max_websockets_per_ip`]). A request that would open one more past a budget
//!   is answered `503 Service Unavailable` (`Too many sessions.` / `Too many websockets.`) and
//!   nothing is set up for it. A session's place is given back when it expires, a websocket's
//!   when it closes. Remote addresses come from the connect info of the server serving the
//!   router ([`crate::server`] provides it); without it only the totals apply.
//! * **Bytes queued** for one session and not yet taken by its peer
//!   ([`SockJsOptions::max_queued_bytes`]): past it the session is closed with
//!   [`crate::session::QUEUE_OVERFLOW`] (`c[1008,"Too much output queued: the peer does not
//!   read"]`; a websocket also gets close code 1008), what was queued is dropped, and the
//!   runtime's later sends fail with [`crate::session::SessionClosed`]. Meanwhile the bytes
//!   held for peers that fall behind show in [`Occupancy::backlog_bytes`].
//! * **Incoming bytes** of an HTTP session: one `xhr_send` / `jsonp_send` body is read and
//!   delivered at a time per session (concurrent ones wait their turn), and the messages
//!   waiting for the runtime hold at most [`SockJsOptions::max_message_size`] bytes (a send
//!   waits for room, which pushes back on the peer; see
//!   [`crate::session::channel_within`]). A websocket is read only as fast as the runtime takes
//!   its messages.

mod budget;
mod burst_io;
mod http;
mod receive;
mod send;
mod session;
mod upgrade;
mod websocket;

pub use budget::Occupancy;
pub use http::{NoDelayListener, PeerAddr};

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::routing::{MethodRouter, any, get};

use crate::session::Session;

/// Options of a SockJS server. Build them from the defaults:
/// `SockJsOptions { websocket: false, ..SockJsOptions::default() }`.
#[derive(Debug, Clone)]
pub struct SockJsOptions {
    /// Interval of `h` frames while a receiver waits with nothing to send (Go kite: 10 s;
    /// sockjs-node: 25 s).
    pub heartbeat_delay: Duration,
    /// How long a session of the HTTP transports lives without a receiver (Go kite: 10 s;
    /// sockjs-node: 5 s).
    pub disconnect_delay: Duration,
    /// Bytes after which a streaming response (xhr-streaming, eventsource, htmlfile) ends so the
    /// client opens a new one and the browser can free the old (128 KiB).
    pub response_limit: usize,
    /// Largest incoming message (in a websocket frame, an `xhr_send` or `jsonp_send` body);
    /// larger ones end the session or are refused (1 MiB).
    pub max_message_size: usize,
    /// Whether the SockJS websocket transport is offered (`/info` says so too).
    pub websocket: bool,
    /// Whether the raw websocket endpoint (`/websocket`, no SockJS framing) is offered.
    pub raw_websocket: bool,
    /// Whether xhr-polling is offered.
    pub xhr_polling: bool,
    /// Whether xhr-streaming is offered.
    pub xhr_streaming: bool,
    /// Whether eventsource is offered.
    pub eventsource: bool,
    /// Whether htmlfile is offered.
    pub htmlfile: bool,
    /// Whether JSONP polling (`jsonp` and `jsonp_send`) is offered.
    pub jsonp: bool,
    /// Sticky sessions for load balancers: `/info` says `cookie_needed`, and every session
    /// request gets a `JSESSIONID` cookie (the client's own, else `dummy`) with path `/`.
    pub cookie_needed: bool,
    /// The SockJS client script the iframe page loads (the iframe-based transports need it).
    pub sockjs_url: String,
    /// The most bytes a websocket reads from its socket in one system call (64 KiB). Input
    /// that streams in (a read filled tungstenite's 1 KiB frame buffer) is read ahead into a
    /// buffer of this size, allocated then and freed once drained, so an idle websocket holds
    /// at most 1 KiB for its input whatever this is (below 1 KiB, this is also tungstenite's
    /// buffer, and nothing is read ahead). Larger values take fewer system calls for large
    /// messages and batches; each byte read ahead is copied once more.
    pub read_buffer_size: usize,
    /// Bytes of messages queued for one session that its peer has not taken yet (16 MiB); past
    /// it the session is closed with [`crate::session::QUEUE_OVERFLOW`] and the queue dropped
    /// (see the [module docs](self#budgets)). One message larger than this still goes when
    /// nothing else is queued.
    pub max_queued_bytes: usize,
    /// Sessions of the HTTP transports alive at once (16,384); a new one past it is refused
    /// with 503.
    pub max_sessions: usize,
    /// Sessions of the HTTP transports from one remote address (2,048); a new one past it is
    /// refused with 503.
    pub max_sessions_per_ip: usize,
    /// Websockets (SockJS and raw) open at once (16,384); an upgrade past it is refused with
    /// 503.
    pub max_websockets: usize,
    /// Websockets from one remote address (4,096); an upgrade past it is refused with 503.
    pub max_websockets_per_ip: usize,
}

impl Default for SockJsOptions {
    /// Go kite's settings: heartbeats and disconnect delay 10 s, 128 KiB responses, every
    /// transport on, no cookie; the budgets of [`crate::Limits::default`].
    fn default() -> Self {
        let limits = crate::Limits::default();
        SockJsOptions {
            heartbeat_delay: Duration::from_secs(10),
            disconnect_delay: Duration::from_secs(10),
            response_limit: 128 * 1024,
            max_message_size: 1 << 20,
            websocket: true,
            raw_websocket: true,
            xhr_polling: true,
            xhr_streaming: true,
            eventsource: true,
            htmlfile: true,
            jsonp: true,
            cookie_needed: false,
            sockjs_url: kite_core::sockjs::DEFAULT_SOCKJS_URL.to_owned(),
            read_buffer_size: 64 * 1024,
            max_queued_bytes: limits.max_queued_bytes,
            max_sessions: limits.max_sessions,
            max_sessions_per_ip: limits.max_sessions_per_ip,
            max_websockets: limits.max_websockets,
            max_websockets_per_ip: limits.max_websockets_per_ip,
        }
    }
}

type OnSession = Arc<dyn Fn(Session) + Send + Sync>;

pub(crate) struct ServerState {
    pub(crate) options: SockJsOptions,
    pub(crate) on_session: OnSession,
    /// Sessions of the HTTP transports, by session id.
    pub(crate) sessions: Mutex<HashMap<String, Arc<session::HttpSession>>>,
    /// Websocket sessions of this server open now.
    pub(crate) websockets: AtomicUsize,
    /// What peers hold, against the budgets (maybe shared with other servers).
    pub(crate) occupancy: Occupancy,
}

pub(crate) type State = Arc<ServerState>;

/// A SockJS server: its options, its sessions, and the router that serves them.
#[derive(Clone)]
pub struct SockJsServer {
    state: State,
}

impl std::fmt::Debug for SockJsServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SockJsServer")
            .field("options", &self.state.options)
            .field("live_sessions", &self.live_sessions())
            .finish()
    }
}

impl SockJsServer {
    /// A server that hands every new session to `on_session`.
    pub fn new<F>(options: SockJsOptions, on_session: F) -> Self
    where
        F: Fn(Session) + Send + Sync + 'static,
    {
        Self::with_occupancy(options, Occupancy::new(), on_session)
    }

    /// A server whose peers are counted in `occupancy` (maybe shared with other servers)
    /// against this server's budgets; it hands every new session to `on_session`.
    pub fn with_occupancy<F>(options: SockJsOptions, occupancy: Occupancy, on_session: F) -> Self
    where
        F: Fn(Session) + Send + Sync + 'static,
    {
        SockJsServer {
            state: Arc::new(ServerState {
                options,
                on_session: Arc::new(on_session),
                sessions: Mutex::default(),
                websockets: AtomicUsize::new(0),
                occupancy,
            }),
        }
    }

    /// The server's options.
    pub fn options(&self) -> &SockJsOptions {
        &self.state.options
    }

    /// What the server's peers hold now (sessions, websockets, queued bytes), with whatever
    /// other servers share the counts.
    pub fn occupancy(&self) -> &Occupancy {
        &self.state.occupancy
    }

    /// Sessions alive now: open websockets, and sessions of the HTTP transports that have not
    /// yet expired (a closed one stays until its close frame has been served for
    /// [`SockJsOptions::disconnect_delay`]).
    pub fn live_sessions(&self) -> usize {
        let http = self
            .state
            .sessions
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .len();
        http + self.state.websockets.load(Ordering::Relaxed)
    }

    /// The SockJS routes at `prefix` (such as `/echo`): [`SockJsServer::router`] nested there,
    /// plus the welcome at `prefix/`, which a nested router does not see.
    pub fn router_at(&self, prefix: &str) -> Router {
        Router::new()
            .nest(prefix, self.router())
            .route(&format!("{prefix}/"), get(http::welcome))
    }

    /// The SockJS routes, relative to where the router is nested. A transport that is off
    /// answers 404; a known path asked with the wrong method answers 405 with `Allow`.
    pub fn router(&self) -> Router {
        let opts = &self.state.options;
        // `{server}/{session}` endpoints: the handler when `on`, else 404 for every method.
        let session_route = |on: bool, route: MethodRouter<State>, allow: &'static str| {
            if on {
                route.fallback(move |req| http::session_method_not_allowed(req, allow))
            } else {
                any(http::not_found)
            }
        };
        let polling_options = || axum::routing::options(http::xhr_options);
        Router::new()
            .route("/", get(http::welcome))
            .route(
                "/info",
                get(http::info)
                    .options(http::info_options)
                    .fallback(|| http::method_not_allowed("OPTIONS, GET")),
            )
            .route(
                "/websocket",
                if opts.raw_websocket {
                    get(websocket::raw).fallback(|| http::method_not_allowed("GET"))
                } else {
                    any(http::not_found)
                },
            )
            .route(
                "/{server}/{session}/websocket",
                session_route(opts.websocket, get(websocket::sockjs), "GET"),
            )
            .route(
                "/{server}/{session}/xhr",
                session_route(
                    opts.xhr_polling,
                    polling_options().post(receive::xhr_polling),
                    "OPTIONS, POST",
                ),
            )
            .route(
                "/{server}/{session}/xhr_send",
                session_route(
                    opts.xhr_polling || opts.xhr_streaming,
                    polling_options().post(send::xhr_send),
                    "OPTIONS, POST",
                ),
            )
            .route(
                "/{server}/{session}/xhr_streaming",
                session_route(
                    opts.xhr_streaming,
                    polling_options().post(receive::xhr_streaming),
                    "OPTIONS, POST",
                ),
            )
            .route(
                "/{server}/{session}/eventsource",
                session_route(opts.eventsource, get(receive::eventsource), "GET"),
            )
            .route(
                "/{server}/{session}/htmlfile",
                session_route(opts.htmlfile, get(receive::htmlfile), "GET"),
            )
            .route(
                "/{server}/{session}/jsonp",
                session_route(opts.jsonp, get(receive::jsonp), "GET"),
            )
            .route(
                "/{server}/{session}/jsonp_send",
                session_route(opts.jsonp, axum::routing::post(send::jsonp_send), "POST"),
            )
            // The iframe page (`/iframe.html`, `/iframe-<version>.html`) and 404s.
            .fallback(http::iframe_or_not_found)
            .layer(axum::middleware::from_fn_with_state(
                self.state.clone(),
                http::cors,
            ))
            .with_state(self.state.clone())
    }
}

/// The SockJS routes of a server with these options, relative to where the router is nested
/// (shorthand for [`SockJsServer::new`] and [`SockJsServer::router`]).
pub fn router<F>(options: SockJsOptions, on_session: F) -> Router
where
    F: Fn(Session) + Send + Sync + 'static,
{
    SockJsServer::new(options, on_session).router()
}

/// A server or session id segment is valid when it is non-empty and has no `.`.
pub(crate) fn valid_segment(s: &str) -> bool {
    !s.is_empty() && !s.contains('.')
}

/// The session id of a `/<server>/<session>/<endpoint>` request; a path whose server or
/// session segment is invalid does not exist (404).
pub(crate) struct SessionId(pub(crate) String);

impl<S: Send + Sync> axum::extract::FromRequestParts<S> for SessionId {
    type Rejection = axum::http::StatusCode;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        state: &S,
    ) -> Result<Self, Self::Rejection> {
        let axum::extract::Path((server, session)) =
            axum::extract::Path::<(String, String)>::from_request_parts(parts, state)
                .await
                .map_err(|_| axum::http::StatusCode::NOT_FOUND)?;
        if valid_segment(&server) && valid_segment(&session) {
            Ok(SessionId(session))
        } else {
            Err(axum::http::StatusCode::NOT_FOUND)
        }
    }
}
