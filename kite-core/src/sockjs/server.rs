//! A SockJS server as a sans-IO state machine: the SockJS websocket, raw websocket,
//! xhr-polling and xhr-streaming transports, with kite-native's budgets.
//!
//! # The model
//!
//! [`Server`] owns every session and decides every byte; it reads no clock, opens no socket
//! and spawns nothing. A *driver* (a Node `http` + `ws` program over the wasm build, or a tokio
//! server) feeds it what happens and carries out what it says:
//!
//! * An HTTP request under the SockJS prefix, read whole, goes to [`Server::http`], which
//!   returns the [`ResponseId`] the driver keeps with the response. The answer comes out of
//!   [`Server::poll_output`]: one [`Output::Respond`] (status, headers, first body bytes), and,
//!   for a response left open (`end: false`: a held poll is answered later, a stream keeps
//!   going), later [`Output::Write`] chunks and one [`Output::End`]. A client that goes away
//!   before the end is reported with [`Server::response_gone`].
//! * A websocket upgrade asks [`Server::websocket`] first; once the driver has completed it,
//!   [`Server::websocket_open`], then every text message [`Server::websocket_text`], and the
//!   end [`Server::websocket_closed`]. What to write comes out as [`Output::SocketSend`] and
//!   [`Output::SocketClose`].
//! * Time: after every call, the driver arms one timer for [`Server::poll_timeout`] and calls
//!   [`Server::handle_timeout`] when it fires (heartbeats, held polls, the handover wait,
//!   disconnect delays). A `now` earlier than a previous one is taken as that one.
//! * The application sees sessions through the same queue: [`Output::Opened`],
//!   [`Output::Messages`] (in order) and exactly one [`Output::Closed`] per session, and talks
//!   back with [`Server::send`] and [`Server::close`].
//!
//! Outputs come in the order they were decided; within one session or one response that is
//! the order they must reach the wire.
//!
//! # Sessions of the HTTP transports
//!
//! They behave as in kite-native (`kite_native::sockjs`): a session is created by the first
//! receiving request (`xhr`, `xhr_streaming`) for an unknown session string, which answers
//! `o`. Messages for the client queue in the session until a receiver takes them, in order,
//! none lost or duplicated: a poll is answered at once with everything queued as one `a[...]`
//! frame (at most [`BATCH_BUDGET`] bytes of messages; a larger message goes alone), else held
//! until a message is sent or the heartbeat is due (`h`); a stream writes the 2,049-byte
//! prelude, then each frame as a chunk of its own, and ends once [`ServerConfig::response_limit`]
//! bytes of frames have been written (the client then opens another). One receiver is attached
//! at a time and it is detached as soon as its last bytes are decided, so that a client asking
//! again at once is accepted; a second receiver that finds one attached waits [`HANDOVER`] for it
//! to go, then is answered `c[2010,"Another connection still open"]` (only one waits: a third is
//! answered so at once). A receiver cut off before its end ([`Server::response_gone`])
//! interrupts the session: what was queued is dropped and it is closed with
//! `c[1002,"Connection interrupted"]`, since the client cannot know what it missed. A closed
//! session answers its close frame to every receiver until it is forgotten; a session is
//! forgotten once it has had no receiver for [`ServerConfig::disconnect_delay`] (an open one
//! then ends for the application with [`CONNECTION_INTERRUPTED`]).
//!
//! `xhr_send` bodies are decoded whole (the driver reads the body first; one call delivers one
//! body, so one is handled at a time per session by construction): 404 for an unknown session,
//! 500 `Payload expected.` for an empty body, 500 `Broken JSON encoding.` for anything but a JSON
//! array of strings (or one string), 413 `Message too big.` for a body over
//! [`ServerConfig::body_limit`] or a message over [`ServerConfig::max_message_bytes`] (which
//! also closes the session with `c[1009,"Message too big"]`), else 204. A closed session that is
//! not forgotten yet takes messages and drops them.
//!
//! # Who reaches a session
//!
//! The session string in a path only ever selects the HTTP session created for that string,
//! as in kite-native and sockjs-go: it is the client's secret (sockjs-client draws it at random),
//! and whoever knows it may poll and send on it, from any address (a client may come through
//! several proxies). The server segment of the path is not part of the key. Nothing else is
//! derived from it: [`SessionId`]s are our own counter, and websocket sessions ignore the
//! string altogether (one new session per socket, never in the table), so a websocket cannot
//! reach an HTTP session nor the other way round. Guessing a live session string is as hard as
//! the client made it.
//!
//! # Budgets
//!
//! As in kite-native, every resource a peer can make the server hold has a budget in
//! [`ServerConfig`]: HTTP sessions in total and per peer address and websockets likewise (past
//! them a new one is refused `503`, `Too many sessions.` / `Too many websockets.`, and nothing is
//! set up; a session's place is given back when it is forgotten, a websocket's at
//! [`Server::websocket_closed`]); bytes queued for one HTTP session (past
//! [`ServerConfig::max_queued_bytes`] it is closed with [`QUEUE_OVERFLOW`] and the queue dropped;
//! one message larger than the budget still goes when nothing else is queued); incoming
//! messages ([`ServerConfig::max_message_bytes`]). A websocket's output is handed to the driver
//! at once, so its buffer (`ws`'s `bufferedAmount`) is the driver's to watch.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::time::Duration;

use super::{
    ANOTHER_CONNECTION_OPEN, BROKEN_FRAME, CONNECTION_INTERRUPTED, MESSAGE_TOO_BIG,
    decode_client_frame, encode_close_into, encode_messages_into, info_body, xhr_streaming_prelude,
};
use crate::session::Time;

mod http;
#[cfg(test)]
mod tests;

use http::{Endpoint, Route};

/// Close code and reason of a session whose peer lets more than
/// [`ServerConfig::max_queued_bytes`] of output queue up (the same as kite-native's).
pub const QUEUE_OVERFLOW: (u16, &str) = (1008, "Too much output queued: the peer does not read");

/// How long a receiving request that finds another attached to its session waits for it to go
/// before it is answered `c[2010,...]` (kite-native's): a client that drops a request and asks
/// again at once is usually faster than the driver at noticing the dropped connection.
pub const HANDOVER: Duration = Duration::from_millis(250);

/// Bytes of messages one `a[...]` frame of an HTTP receiver holds at most (a larger message
/// goes alone; the rest waits for the next frame), as kite-native's batches.
pub const BATCH_BUDGET: usize = 128 * 1024;

/// Options of a [`Server`]. Build them from the defaults:
/// `ServerConfig { websocket: false, ..ServerConfig::default() }`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerConfig {
    /// Interval of `h` frames while a receiver (or a SockJS websocket) has had nothing to send
    /// (10 s, as Go kite). At least a millisecond is used.
    pub heartbeat: Duration,
    /// How long an HTTP session lives without a receiver (5 s, sockjs-node's; Go kite and
    /// kite-native use 10 s).
    pub disconnect_delay: Duration,
    /// Whether websockets are offered (true): off, `/info` says `"websocket":false` and every
    /// upgrade, SockJS or raw, is refused with 404.
    pub websocket: bool,
    /// Sticky sessions for load balancers (false): `/info` says `cookie_needed`, and every
    /// session request gets a `JSESSIONID` cookie (the client's own, else `dummy`) with path `/`.
    pub cookie_needed: bool,
    /// HTTP-transport sessions alive at once (16,384, kite-native's); a new one past it is
    /// refused with 503.
    pub max_sessions: usize,
    /// HTTP-transport sessions from one peer address (2,048); a new one past it is refused
    /// with 503.
    pub max_sessions_per_peer: usize,
    /// Websockets (SockJS and raw) accepted at once (16,384); an upgrade past it is refused with
    /// 503.
    pub max_websockets: usize,
    /// Websockets from one peer address (4,096); an upgrade past it is refused with 503.
    pub max_websockets_per_peer: usize,
    /// Bytes of messages queued for one HTTP session and not yet taken by its peer (16 MiB);
    /// past it the session is closed with [`QUEUE_OVERFLOW`] and the queue dropped.
    pub max_queued_bytes: usize,
    /// Largest incoming message, in a websocket message or an `xhr_send` body (1 MiB); a larger
    /// one closes the session with [`MESSAGE_TOO_BIG`].
    pub max_message_bytes: usize,
    /// Bytes of frames an `xhr_streaming` response carries before it is ended so that the client
    /// opens a new one and the browser frees the old (128 KiB, SockJS's).
    pub response_limit: usize,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            heartbeat: Duration::from_secs(10),
            disconnect_delay: Duration::from_secs(5),
            websocket: true,
            cookie_needed: false,
            max_sessions: 16_384,
            max_sessions_per_peer: 2_048,
            max_websockets: 16_384,
            max_websockets_per_peer: 4_096,
            max_queued_bytes: 16 << 20,
            max_message_bytes: 1 << 20,
            response_limit: 128 * 1024,
        }
    }
}

impl ServerConfig {
    /// The largest `xhr_send` body and SockJS websocket message taken: one message of
    /// [`ServerConfig::max_message_bytes`] may come JSON-escaped (up to twice as long) or with
    /// a batch of smaller ones. A driver stops reading a body past it and passes what it read
    /// (more than this many bytes is answered 413); a websocket library gets it as its largest
    /// message (`ws`'s `maxPayload`; for the raw websocket, `max_message_bytes` suffices).
    pub fn body_limit(&self) -> usize {
        self.max_message_bytes
            .saturating_mul(2)
            .saturating_add(BATCH_BUDGET)
    }
}

/// One HTTP request under the SockJS prefix, read whole.
#[derive(Debug, Clone, Copy, Default)]
pub struct HttpRequest<'a> {
    /// The peer's address, as the per-peer budgets count it (the IP address, without the port).
    pub peer: &'a str,
    /// The method (`GET`, `POST`, `OPTIONS`, ...).
    pub method: &'a str,
    /// What follows the prefix, maybe with `?query`: `""` or `/` (the greeting), `/info`,
    /// `/<server>/<session>/xhr`, `.../xhr_send`, `.../xhr_streaming`, ...
    pub path: &'a str,
    /// The `Origin` header, if any (echoed for CORS).
    pub origin: Option<&'a str>,
    /// The `Access-Control-Request-Headers` header, if any (echoed in the answer).
    pub request_headers: Option<&'a str>,
    /// The `Cookie` header, if any (its `JSESSIONID` is echoed when cookies are needed).
    pub cookie: Option<&'a str>,
    /// The body.
    pub body: &'a [u8],
}

macro_rules! id {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Copy, Clone, Eq, PartialEq, Ord, PartialOrd, Hash, Debug)]
        pub struct $name(u64);

        impl $name {
            /// The id as a number (for a driver that keeps it outside Rust, such as JavaScript).
            pub const fn as_u64(self) -> u64 {
                self.0
            }

            /// The id a driver kept as a number ([`Self::as_u64`]); an id the server never gave
            /// out names nothing and is ignored.
            pub const fn from_u64(n: u64) -> Self {
                $name(n)
            }
        }
    };
}

id!(
    /// One session, whatever its transport: our own number, never derived from the session
    /// string of a path.
    SessionId
);
id!(
    /// One HTTP request and its response, held by the driver.
    ResponseId
);
id!(
    /// One websocket accepted by [`Server::websocket`].
    SocketId
);

/// The transport a session was opened with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TransportKind {
    /// SockJS over a websocket (`/<server>/<session>/websocket`).
    WebSocket,
    /// A websocket without SockJS framing (`/websocket`): one message per text message.
    RawWebSocket,
    /// xhr-polling (`.../xhr` with `.../xhr_send`).
    XhrPolling,
    /// xhr-streaming (`.../xhr_streaming` with `.../xhr_send`).
    XhrStreaming,
}

/// A websocket upgrade the server does not take: answer it with this plain HTTP response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    /// 404 (no such endpoint, or websockets are off) or 503 (past a websocket budget).
    pub status: u16,
    /// The response headers.
    pub headers: Vec<(&'static str, String)>,
    /// The response body.
    pub body: Vec<u8>,
}

/// Why [`Server::send`] took no message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SendError {
    /// The session is closed or forgotten.
    #[error("the SockJS session is closed")]
    Closed,
    /// This message took the session's queue past [`ServerConfig::max_queued_bytes`]: the
    /// session is closed now with [`QUEUE_OVERFLOW`].
    #[error("the SockJS session's peer does not read: closed")]
    QueueOverflow,
}

/// What the driver and the application must do next ([`Server::poll_output`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Output {
    /// Start the response: status line, headers and the first body bytes; `end` says the
    /// response is complete with them (else [`Output::Write`]s and one [`Output::End`]
    /// follow). Exactly one per [`ResponseId`].
    Respond {
        /// The response.
        response: ResponseId,
        /// The status code.
        status: u16,
        /// The headers.
        headers: Vec<(&'static str, String)>,
        /// The first body bytes (maybe empty).
        body: Vec<u8>,
        /// Whether the response is complete.
        end: bool,
    },
    /// More of an open response: one chunk (one xhr-streaming frame), to write as it is.
    Write {
        /// The response.
        response: ResponseId,
        /// The chunk.
        body: Vec<u8>,
    },
    /// End the open response.
    End {
        /// The response.
        response: ResponseId,
    },
    /// Send one text message on the websocket.
    SocketSend {
        /// The websocket.
        socket: SocketId,
        /// The message.
        text: String,
    },
    /// Close the websocket with this code and reason (after what was sent before); then call
    /// [`Server::websocket_closed`] once it is gone.
    SocketClose {
        /// The websocket.
        socket: SocketId,
        /// A close code a websocket may carry (1000, 1008, 1009, 3000-4999).
        code: u16,
        /// The reason.
        reason: String,
    },
    /// A new session, for the application.
    Opened {
        /// The session.
        session: SessionId,
        /// Its transport.
        kind: TransportKind,
    },
    /// Messages the session's peer sent, in order.
    Messages {
        /// The session.
        session: SessionId,
        /// The messages.
        messages: Vec<String>,
    },
    /// The session ended for the application (closed by it, by the peer, by a budget, or
    /// forgotten); nothing more comes from it and [`Server::send`] fails. Exactly one per
    /// [`Output::Opened`].
    Closed {
        /// The session.
        session: SessionId,
        /// The close code (the application's own, 1002, 1008, 1009, 3000, ...).
        code: u16,
        /// The reason.
        reason: String,
    },
}

/// What holds a session's peer.
#[derive(Debug)]
enum Link {
    /// An HTTP session, in the table under `key`.
    Http {
        key: String,
        peer: String,
        /// The attached receiving response.
        receiver: Option<ResponseId>,
        /// The one receiving response waiting for `receiver` to go.
        waiter: Option<ResponseId>,
    },
    /// A websocket session (never in the table).
    Socket { socket: SocketId, framed: bool },
}

#[derive(Debug)]
struct Session {
    link: Link,
    queue: VecDeque<String>,
    /// Bytes of the messages in `queue`.
    queued: usize,
    /// The close frame receivers get; set when the session ended for the application.
    closed: Option<(u16, String)>,
    /// HTTP: when it is forgotten (no receiver); websocket: the next heartbeat.
    timer: Option<Time>,
}

/// What an open response is for.
#[derive(Debug, Clone, Copy)]
enum Role {
    /// A held poll of the session.
    Poll(SessionId),
    /// A stream of the session, with the bytes of frames written.
    Stream(SessionId, usize),
    /// Waiting for the session's receiver to go (a stream when `true`).
    Waiting(SessionId, bool),
}

#[derive(Debug)]
struct Open {
    role: Role,
    /// The headers its `Respond` carries (CORS, cookie), decided with the request.
    headers: Vec<(&'static str, String)>,
    /// The heartbeat (held poll, stream) or the end of the handover wait.
    timer: Option<Time>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum SocketState {
    /// Accepted, the upgrade not completed yet.
    Accepted,
    /// Open, serving `session`.
    Open(SessionId),
    /// Closing or closed: nothing more is read or written.
    Closing,
}

#[derive(Debug)]
struct Socket {
    peer: String,
    framed: bool,
    state: SocketState,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Timer {
    Response(ResponseId),
    Session(SessionId),
}

/// Moves the timer of `key` from `*slot` to `at`.
fn retime(
    timers: &mut BTreeSet<(Time, Timer)>,
    slot: &mut Option<Time>,
    key: Timer,
    at: Option<Time>,
) {
    if let Some(old) = slot.take() {
        timers.remove(&(old, key));
    }
    if let Some(t) = at {
        timers.insert((t, key));
    }
    *slot = at;
}

/// A SockJS server: its sessions, open responses and websockets (see the
/// [module docs](self)).
#[derive(Debug)]
pub struct Server {
    config: ServerConfig,
    rng: u64,
    next_id: u64,
    sessions: BTreeMap<SessionId, Session>,
    /// HTTP sessions by the session string of their path.
    keys: BTreeMap<String, SessionId>,
    responses: BTreeMap<ResponseId, Open>,
    sockets: BTreeMap<SocketId, Socket>,
    sessions_by_peer: BTreeMap<String, usize>,
    websockets_by_peer: BTreeMap<String, usize>,
    http_sessions: usize,
    queued_bytes: usize,
    timers: BTreeSet<(Time, Timer)>,
    outputs: VecDeque<Output>,
    now: Time,
}

/// One more for `peer`.
fn count_up(counts: &mut BTreeMap<String, usize>, peer: &str) {
    *counts.entry(peer.to_owned()).or_default() += 1;
}

/// One less for `peer`.
fn count_down(counts: &mut BTreeMap<String, usize>, peer: &str) {
    if let Some(n) = counts.get_mut(peer) {
        *n -= 1;
        if *n == 0 {
            counts.remove(peer);
        }
    }
}

/// A close code a websocket close frame may carry: 1000-1003, 1007-1014, 3000-4999; else 1000.
fn wire_code(code: u16) -> u16 {
    match code {
        1000..=1003 | 1007..=1014 | 3000..=4999 => code,
        _ => 1000,
    }
}

fn close_frame(code: u16, reason: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(reason.len() + 16);
    encode_close_into(&mut out, code, reason);
    out
}

impl Server {
    /// A server with `config`; `seed` seeds the `/info` entropy (any value; a driver passes
    /// something random, such as `crypto.getRandomValues`).
    pub fn new(mut config: ServerConfig, seed: u64) -> Self {
        config.heartbeat = config.heartbeat.max(Duration::from_millis(1));
        Server {
            config,
            // xorshift needs a non-zero state.
            rng: seed ^ 0x9E37_79B9_7F4A_7C15 | 1,
            next_id: 0,
            sessions: BTreeMap::new(),
            keys: BTreeMap::new(),
            responses: BTreeMap::new(),
            sockets: BTreeMap::new(),
            sessions_by_peer: BTreeMap::new(),
            websockets_by_peer: BTreeMap::new(),
            http_sessions: 0,
            queued_bytes: 0,
            timers: BTreeSet::new(),
            outputs: VecDeque::new(),
            now: Time::ZERO,
        }
    }

    /// The server's options.
    pub fn config(&self) -> &ServerConfig {
        &self.config
    }

    /// Sessions alive now: HTTP sessions not forgotten yet (a closed one answers its close
    /// frame until then) and open websocket sessions.
    pub fn sessions(&self) -> usize {
        self.sessions.len()
    }

    /// Websockets accepted and not yet reported gone ([`Server::websocket_closed`]).
    pub fn websockets(&self) -> usize {
        self.sockets.len()
    }

    /// Bytes of messages queued in HTTP sessions for peers that have not taken them yet.
    pub fn queued_bytes(&self) -> usize {
        self.queued_bytes
    }

    /// HTTP responses the server holds open (held polls, streams, handover waits).
    pub fn open_responses(&self) -> usize {
        self.responses.len()
    }

    /// The next thing to do, in order.
    pub fn poll_output(&mut self) -> Option<Output> {
        self.outputs.pop_front()
    }

    /// When [`Server::handle_timeout`] must be called next, if ever.
    pub fn poll_timeout(&self) -> Option<Time> {
        self.timers.first().map(|(t, _)| *t)
    }

    fn tick(&mut self, now: Time) -> Time {
        self.now = self.now.max(now);
        self.now
    }

    fn id(&mut self) -> u64 {
        self.next_id += 1;
        self.next_id
    }

    fn entropy(&mut self) -> u32 {
        let mut x = self.rng;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.rng = x;
        (x.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 33) as u32
    }

    fn respond(
        &mut self,
        response: ResponseId,
        status: u16,
        headers: Vec<(&'static str, String)>,
        body: Vec<u8>,
        end: bool,
    ) {
        self.outputs.push_back(Output::Respond {
            response,
            status,
            headers,
            body,
            end,
        });
    }

    /// An HTTP request (see [`HttpRequest`]). The answer comes out of
    /// [`Server::poll_output`] as [`Output::Respond`] and, for a response left open, later
    /// [`Output::Write`]s and [`Output::End`].
    pub fn http(&mut self, now: Time, request: HttpRequest<'_>) -> ResponseId {
        let now = self.tick(now);
        let response = ResponseId(self.id());
        let route = http::route(request.path);
        let cors = http::cors(request.origin, request.request_headers);
        let method = request.method;
        match route {
            Route::Welcome => match method {
                "GET" | "HEAD" => self.respond(
                    response,
                    200,
                    vec![("Content-Type", http::TEXT.to_owned())],
                    b"Welcome to SockJS!\n".to_vec(),
                    true,
                ),
                _ => self.respond(response, 405, http::allow("GET"), Vec::new(), true),
            },
            Route::Info => match method {
                "GET" => {
                    let body = info_body(
                        self.config.websocket,
                        self.config.cookie_needed,
                        self.entropy(),
                    );
                    let mut headers = cors;
                    headers.push(("Content-Type", http::JSON.to_owned()));
                    headers.push(("Cache-Control", http::NO_CACHE.to_owned()));
                    self.respond(response, 200, headers, body.into_bytes(), true);
                }
                "OPTIONS" => self.respond(
                    response,
                    204,
                    http::preflight(cors, "OPTIONS, GET"),
                    Vec::new(),
                    true,
                ),
                _ => self.respond(response, 405, http::allow("OPTIONS, GET"), Vec::new(), true),
            },
            Route::RawWebSocket | Route::Session(_, Endpoint::WebSocket) => {
                if !self.config.websocket {
                    self.respond(response, 404, cors, Vec::new(), true);
                } else if method == "GET" {
                    // A plain GET, not an upgrade: Go's answer (no CORS).
                    let headers = vec![("Content-Type", http::TEXT.to_owned())];
                    self.respond(
                        response,
                        400,
                        headers,
                        b"Can \"Upgrade\" only to \"WebSocket\".\n".to_vec(),
                        true,
                    );
                } else {
                    self.respond(response, 405, http::allow("GET"), Vec::new(), true);
                }
            }
            Route::Session(
                key,
                endpoint @ (Endpoint::Xhr | Endpoint::XhrSend | Endpoint::XhrStreaming),
            ) => {
                let mut headers = cors;
                if self.config.cookie_needed {
                    headers.push(("Set-Cookie", http::cookie(request.cookie)));
                }
                match method {
                    "OPTIONS" => self.respond(
                        response,
                        204,
                        http::preflight(headers, "OPTIONS, POST"),
                        Vec::new(),
                        true,
                    ),
                    "POST" => match endpoint {
                        Endpoint::XhrSend => {
                            self.xhr_send(now, response, &key, headers, request.body)
                        }
                        streaming => self.receiving(
                            now,
                            response,
                            key,
                            request.peer,
                            headers,
                            streaming == Endpoint::XhrStreaming,
                        ),
                    },
                    _ => self.respond(
                        response,
                        405,
                        http::allow("OPTIONS, POST"),
                        Vec::new(),
                        true,
                    ),
                }
            }
            // Go's answer: no CORS headers.
            Route::Session(_, Endpoint::Other) | Route::NotFound => {
                self.respond(response, 404, Vec::new(), Vec::new(), true)
            }
        }
        response
    }

    /// A receiving request (`xhr`, `xhr_streaming`) on the session of `key`.
    fn receiving(
        &mut self,
        now: Time,
        response: ResponseId,
        key: String,
        peer: &str,
        mut headers: Vec<(&'static str, String)>,
        streaming: bool,
    ) {
        headers.push(("Content-Type", http::JAVASCRIPT.to_owned()));
        headers.push(("Cache-Control", http::NO_CACHE.to_owned()));
        let Some(&sid) = self.keys.get(&key) else {
            // A new session, within the budgets.
            let from_peer = self.sessions_by_peer.get(peer).copied().unwrap_or(0);
            if self.http_sessions >= self.config.max_sessions
                || from_peer >= self.config.max_sessions_per_peer
            {
                self.respond(
                    response,
                    503,
                    http::refused(headers),
                    b"Too many sessions.".to_vec(),
                    true,
                );
                return;
            }
            let sid = SessionId(self.id());
            count_up(&mut self.sessions_by_peer, peer);
            self.http_sessions += 1;
            self.keys.insert(key.clone(), sid);
            self.sessions.insert(
                sid,
                Session {
                    link: Link::Http {
                        key,
                        peer: peer.to_owned(),
                        receiver: None,
                        waiter: None,
                    },
                    queue: VecDeque::new(),
                    queued: 0,
                    closed: None,
                    timer: None,
                },
            );
            let kind = if streaming {
                TransportKind::XhrStreaming
            } else {
                TransportKind::XhrPolling
            };
            if streaming {
                self.respond(
                    response,
                    200,
                    headers.clone(),
                    xhr_streaming_prelude().into_bytes(),
                    false,
                );
                self.outputs.push_back(Output::Write {
                    response,
                    body: b"o\n".to_vec(),
                });
                self.outputs
                    .push_back(Output::Opened { session: sid, kind });
                self.attach(now, sid, response, headers, true, false);
            } else {
                self.respond(response, 200, headers, b"o\n".to_vec(), true);
                self.outputs
                    .push_back(Output::Opened { session: sid, kind });
                self.detached(now, sid);
            }
            return;
        };
        let Some(Session {
            link: Link::Http {
                receiver, waiter, ..
            },
            ..
        }) = self.sessions.get_mut(&sid)
        else {
            return;
        };
        if receiver.is_none() {
            self.attach(now, sid, response, headers, streaming, true);
        } else if waiter.is_none() {
            *waiter = Some(response);
            let open = self.responses.entry(response).or_insert(Open {
                role: Role::Waiting(sid, streaming),
                headers,
                timer: None,
            });
            retime(
                &mut self.timers,
                &mut open.timer,
                Timer::Response(response),
                Some(now + HANDOVER),
            );
        } else {
            self.another_connection(response, headers, streaming);
        }
    }

    /// Answers a receiver that came while another was attached.
    fn another_connection(
        &mut self,
        response: ResponseId,
        headers: Vec<(&'static str, String)>,
        streaming: bool,
    ) {
        let (code, reason) = ANOTHER_CONNECTION_OPEN;
        let mut frame = close_frame(code, reason);
        frame.push(b'\n');
        if streaming {
            self.respond(
                response,
                200,
                headers,
                xhr_streaming_prelude().into_bytes(),
                false,
            );
            self.outputs.push_back(Output::Write {
                response,
                body: frame,
            });
            self.outputs.push_back(Output::End { response });
        } else {
            self.respond(response, 200, headers, frame, true);
        }
    }

    /// Attaches `response` as the receiver of `sid` (which has none) and gives it what there is.
    /// A stream that is not new starts with its `Respond` (a new one has written it already).
    fn attach(
        &mut self,
        now: Time,
        sid: SessionId,
        response: ResponseId,
        headers: Vec<(&'static str, String)>,
        streaming: bool,
        start: bool,
    ) {
        let Some(session) = self.sessions.get_mut(&sid) else {
            return;
        };
        if let Link::Http { receiver, .. } = &mut session.link {
            *receiver = Some(response);
        }
        retime(
            &mut self.timers,
            &mut session.timer,
            Timer::Session(sid),
            None,
        );
        if streaming && start {
            self.respond(
                response,
                200,
                headers.clone(),
                xhr_streaming_prelude().into_bytes(),
                false,
            );
        }
        let role = if streaming {
            Role::Stream(sid, 0)
        } else {
            Role::Poll(sid)
        };
        self.responses.insert(
            response,
            Open {
                role,
                headers,
                timer: None,
            },
        );
        self.pump(now, sid);
    }

    /// Takes what a receiver of `session` gets next: queued messages (one batch), else the close
    /// frame; `true` with the close frame.
    fn take(session: &mut Session, total: &mut usize) -> Option<(Vec<u8>, bool)> {
        if !session.queue.is_empty() {
            let mut size = 0;
            let mut n = 0;
            for m in &session.queue {
                if n > 0 && size + m.len() > BATCH_BUDGET {
                    break;
                }
                size += m.len();
                n += 1;
            }
            let mut out = Vec::with_capacity(size + 8 * n + 4);
            encode_messages_into(&mut out, session.queue.iter().take(n).map(String::as_str));
            session.queue.drain(..n);
            session.queued -= size;
            *total -= size;
            return Some((out, false));
        }
        session
            .closed
            .as_ref()
            .map(|(code, reason)| (close_frame(*code, reason), true))
    }

    /// Gives the attached receiver of `sid` what there is for it.
    fn pump(&mut self, now: Time, sid: SessionId) {
        let Some(session) = self.sessions.get_mut(&sid) else {
            return;
        };
        let Link::Http {
            receiver: Some(response),
            ..
        } = session.link
        else {
            return;
        };
        let Some(open) = self.responses.get_mut(&response) else {
            return;
        };
        let mut wrote = false;
        loop {
            let taken = Self::take(session, &mut self.queued_bytes);
            match (&mut open.role, taken) {
                (Role::Poll(_), Some((mut frame, _))) => {
                    frame.push(b'\n');
                    let headers = std::mem::take(&mut open.headers);
                    retime(
                        &mut self.timers,
                        &mut open.timer,
                        Timer::Response(response),
                        None,
                    );
                    self.responses.remove(&response);
                    self.respond(response, 200, headers, frame, true);
                    self.detached(now, sid);
                    return;
                }
                (Role::Stream(_, written), Some((mut frame, closing))) => {
                    frame.push(b'\n');
                    *written = written.saturating_add(frame.len());
                    let full = *written >= self.config.response_limit;
                    self.outputs.push_back(Output::Write {
                        response,
                        body: frame,
                    });
                    wrote = true;
                    if closing || full {
                        retime(
                            &mut self.timers,
                            &mut open.timer,
                            Timer::Response(response),
                            None,
                        );
                        self.responses.remove(&response);
                        self.outputs.push_back(Output::End { response });
                        self.detached(now, sid);
                        return;
                    }
                }
                (_, _) => break,
            }
        }
        if wrote || open.timer.is_none() {
            let at = now + self.config.heartbeat;
            retime(
                &mut self.timers,
                &mut open.timer,
                Timer::Response(response),
                Some(at),
            );
        }
    }

    /// The receiver of HTTP session `sid` is gone (its response is out of the table): the
    /// waiting one attaches, else the disconnect delay starts.
    fn detached(&mut self, now: Time, sid: SessionId) {
        let Some(session) = self.sessions.get_mut(&sid) else {
            return;
        };
        let Link::Http {
            receiver, waiter, ..
        } = &mut session.link
        else {
            return;
        };
        *receiver = None;
        if let Some(w) = waiter.take()
            && let Some(mut open) = self.responses.remove(&w)
        {
            retime(&mut self.timers, &mut open.timer, Timer::Response(w), None);
            let streaming = matches!(open.role, Role::Waiting(_, true));
            self.attach(now, sid, w, open.headers, streaming, true);
            return;
        }
        let at = now + self.config.disconnect_delay;
        retime(
            &mut self.timers,
            &mut session.timer,
            Timer::Session(sid),
            Some(at),
        );
    }

    /// `POST .../xhr_send`.
    fn xhr_send(
        &mut self,
        now: Time,
        response: ResponseId,
        key: &str,
        mut headers: Vec<(&'static str, String)>,
        body: &[u8],
    ) {
        headers.push(("Cache-Control", http::NO_CACHE.to_owned()));
        let Some(&sid) = self.keys.get(key) else {
            headers.retain(|(name, _)| *name != "Set-Cookie");
            self.respond(response, 404, headers, Vec::new(), true);
            return;
        };
        headers.push(("Content-Type", http::TEXT.to_owned()));
        if body.len() > self.config.body_limit() {
            self.end_session(now, sid, MESSAGE_TOO_BIG, false);
            self.respond(response, 413, headers, b"Message too big.".to_vec(), true);
            return;
        }
        if body.iter().all(u8::is_ascii_whitespace) {
            self.respond(response, 500, headers, b"Payload expected.".to_vec(), true);
            return;
        }
        let Some(messages) = std::str::from_utf8(body)
            .ok()
            .and_then(|t| decode_client_frame(t).ok())
        else {
            self.respond(
                response,
                500,
                headers,
                b"Broken JSON encoding.".to_vec(),
                true,
            );
            return;
        };
        if messages
            .iter()
            .any(|m| m.len() > self.config.max_message_bytes)
        {
            self.end_session(now, sid, MESSAGE_TOO_BIG, false);
            self.respond(response, 413, headers, b"Message too big.".to_vec(), true);
            return;
        }
        let open = self.sessions.get(&sid).is_some_and(|s| s.closed.is_none());
        if open && !messages.is_empty() {
            self.outputs.push_back(Output::Messages {
                session: sid,
                messages,
            });
        }
        self.respond(response, 204, headers, Vec::new(), true);
    }

    /// Ends session `sid` for the application with `(code, reason)` (unless it has ended
    /// already); `drop_queue` drops what was queued for the peer. An HTTP session then answers
    /// the close frame (at once to an attached receiver); a websocket session sends it and
    /// closes the socket, and is forgotten.
    fn end_session(
        &mut self,
        now: Time,
        sid: SessionId,
        (code, reason): (u16, &str),
        drop_queue: bool,
    ) {
        let Some(session) = self.sessions.get_mut(&sid) else {
            return;
        };
        if drop_queue {
            self.queued_bytes -= session.queued;
            session.queued = 0;
            session.queue = VecDeque::new();
        }
        if session.closed.is_some() {
            return;
        }
        session.closed = Some((code, reason.to_owned()));
        self.outputs.push_back(Output::Closed {
            session: sid,
            code,
            reason: reason.to_owned(),
        });
        match session.link {
            Link::Http { .. } => self.pump(now, sid),
            Link::Socket { socket, framed } => {
                let broken = (code, reason) == BROKEN_FRAME;
                if framed && !broken {
                    let text = String::from_utf8(close_frame(code, reason)).unwrap_or_default();
                    self.outputs.push_back(Output::SocketSend { socket, text });
                }
                let ws_code = if framed && code != QUEUE_OVERFLOW.0 && !broken {
                    1000
                } else {
                    wire_code(code)
                };
                self.outputs.push_back(Output::SocketClose {
                    socket,
                    code: ws_code,
                    reason: reason.to_owned(),
                });
                if let Some(s) = self.sockets.get_mut(&socket) {
                    s.state = SocketState::Closing;
                }
                self.forget(sid);
            }
        }
    }

    /// Removes session `sid` (which has ended for the application) and gives back its place.
    fn forget(&mut self, sid: SessionId) {
        let Some(mut session) = self.sessions.remove(&sid) else {
            return;
        };
        retime(
            &mut self.timers,
            &mut session.timer,
            Timer::Session(sid),
            None,
        );
        self.queued_bytes -= session.queued;
        if let Link::Http { key, peer, .. } = &session.link {
            self.keys.remove(key);
            count_down(&mut self.sessions_by_peer, peer);
            self.http_sessions -= 1;
        }
    }

    /// The client of `response` went away before its end (its connection closed). A receiver
    /// cut off interrupts its session (`c[1002,"Connection interrupted"]`, what was queued is
    /// dropped); a request waiting for its turn is just dropped; an ended or unknown response
    /// is ignored.
    pub fn response_gone(&mut self, now: Time, response: ResponseId) {
        let now = self.tick(now);
        let Some(mut open) = self.responses.remove(&response) else {
            return;
        };
        retime(
            &mut self.timers,
            &mut open.timer,
            Timer::Response(response),
            None,
        );
        match open.role {
            Role::Waiting(sid, _) => {
                if let Some(Session {
                    link: Link::Http { waiter, .. },
                    ..
                }) = self.sessions.get_mut(&sid)
                    && *waiter == Some(response)
                {
                    *waiter = None;
                }
            }
            Role::Poll(sid) | Role::Stream(sid, _) => {
                if let Some(Session {
                    link: Link::Http { receiver, .. },
                    ..
                }) = self.sessions.get_mut(&sid)
                {
                    *receiver = None;
                }
                self.end_session(now, sid, CONNECTION_INTERRUPTED, true);
                self.detached(now, sid);
            }
        }
    }

    /// A websocket upgrade for `path` (after the prefix, maybe with `?query`): `/websocket` is
    /// the raw websocket, `/<server>/<session>/websocket` the SockJS websocket. `Ok`: the driver
    /// completes the upgrade, then calls [`Server::websocket_open`] (or, if it fails,
    /// [`Server::websocket_closed`]); the socket counts in the budgets from now on. `Err`: answer
    /// the request with the refusal (404 for another path or with websockets off, 503 past a
    /// budget).
    pub fn websocket(&mut self, now: Time, peer: &str, path: &str) -> Result<SocketId, Refusal> {
        self.tick(now);
        let framed = match http::route(path) {
            Route::RawWebSocket => false,
            Route::Session(_, Endpoint::WebSocket) => true,
            _ => return Err(http::not_found()),
        };
        if !self.config.websocket {
            return Err(http::not_found());
        }
        let from_peer = self.websockets_by_peer.get(peer).copied().unwrap_or(0);
        if self.sockets.len() >= self.config.max_websockets
            || from_peer >= self.config.max_websockets_per_peer
        {
            let body = "Too many websockets.";
            return Err(Refusal {
                status: 503,
                headers: http::refused(Vec::new()),
                body: body.as_bytes().to_vec(),
            });
        }
        let socket = SocketId(self.id());
        count_up(&mut self.websockets_by_peer, peer);
        self.sockets.insert(
            socket,
            Socket {
                peer: peer.to_owned(),
                framed,
                state: SocketState::Accepted,
            },
        );
        Ok(socket)
    }

    /// The upgrade of `socket` is complete: a new session ([`Output::Opened`]); the SockJS
    /// websocket writes `o` and heartbeats from now on.
    pub fn websocket_open(&mut self, now: Time, socket: SocketId) {
        let now = self.tick(now);
        let sid = SessionId(self.id());
        let Some(s) = self.sockets.get_mut(&socket) else {
            return;
        };
        if s.state != SocketState::Accepted {
            return;
        }
        s.state = SocketState::Open(sid);
        let framed = s.framed;
        let mut session = Session {
            link: Link::Socket { socket, framed },
            queue: VecDeque::new(),
            queued: 0,
            closed: None,
            timer: None,
        };
        if framed {
            self.outputs.push_back(Output::SocketSend {
                socket,
                text: "o".to_owned(),
            });
            let at = now + self.config.heartbeat;
            retime(
                &mut self.timers,
                &mut session.timer,
                Timer::Session(sid),
                Some(at),
            );
        }
        self.sessions.insert(sid, session);
        self.outputs.push_back(Output::Opened {
            session: sid,
            kind: if framed {
                TransportKind::WebSocket
            } else {
                TransportKind::RawWebSocket
            },
        });
    }

    /// A text message from `socket`. SockJS: a JSON array of strings (or one string, as
    /// sockjs-node takes), each a message; an empty one is ignored, anything else closes the
    /// socket with [`BROKEN_FRAME`] (no `c` frame, as sockjs-node). Raw: the text is one message.
    /// A message over [`ServerConfig::max_message_bytes`] (a SockJS message over
    /// [`ServerConfig::body_limit`]) closes the session with [`MESSAGE_TOO_BIG`].
    pub fn websocket_text(&mut self, now: Time, socket: SocketId, text: &str) {
        let now = self.tick(now);
        let Some(s) = self.sockets.get(&socket) else {
            return;
        };
        let SocketState::Open(sid) = s.state else {
            return;
        };
        let messages = if s.framed {
            if text.len() > self.config.body_limit() {
                return self.end_session(now, sid, MESSAGE_TOO_BIG, true);
            }
            match decode_client_frame(text) {
                Ok(m) => m,
                Err(_) => return self.end_session(now, sid, BROKEN_FRAME, true),
            }
        } else {
            vec![text.to_owned()]
        };
        if messages
            .iter()
            .any(|m| m.len() > self.config.max_message_bytes)
        {
            return self.end_session(now, sid, MESSAGE_TOO_BIG, true);
        }
        if !messages.is_empty() {
            self.outputs.push_back(Output::Messages {
                session: sid,
                messages,
            });
        }
    }

    /// `socket` is gone (closed by either side, or its upgrade failed): its place in the
    /// budgets is given back, and a session still open on it ends with
    /// [`CONNECTION_INTERRUPTED`].
    pub fn websocket_closed(&mut self, now: Time, socket: SocketId) {
        self.tick(now);
        let Some(s) = self.sockets.remove(&socket) else {
            return;
        };
        count_down(&mut self.websockets_by_peer, &s.peer);
        if let SocketState::Open(sid) = s.state
            && let Some(session) = self.sessions.get_mut(&sid)
        {
            let (code, reason) = CONNECTION_INTERRUPTED;
            if session.closed.is_none() {
                session.closed = Some((code, reason.to_owned()));
                self.outputs.push_back(Output::Closed {
                    session: sid,
                    code,
                    reason: reason.to_owned(),
                });
            }
            self.forget(sid);
        }
    }

    /// Queues `message` for the peer of `session`: at once on a websocket and to an attached
    /// receiver, else until one comes. `Err` when the session has ended, or when this message
    /// takes its queue past [`ServerConfig::max_queued_bytes`], which closes it with
    /// [`QUEUE_OVERFLOW`] (dropping what was queued).
    pub fn send(&mut self, now: Time, session: SessionId, message: &str) -> Result<(), SendError> {
        let now = self.tick(now);
        let Some(s) = self.sessions.get_mut(&session) else {
            return Err(SendError::Closed);
        };
        if s.closed.is_some() {
            return Err(SendError::Closed);
        }
        match s.link {
            Link::Socket { socket, framed } => {
                let text = if framed {
                    let mut out = Vec::with_capacity(message.len() + 8);
                    encode_messages_into(&mut out, [message]);
                    let at = now + self.config.heartbeat;
                    retime(
                        &mut self.timers,
                        &mut s.timer,
                        Timer::Session(session),
                        Some(at),
                    );
                    String::from_utf8(out).unwrap_or_default()
                } else {
                    message.to_owned()
                };
                self.outputs.push_back(Output::SocketSend { socket, text });
                Ok(())
            }
            Link::Http { receiver, .. } => {
                if s.queued > 0
                    && s.queued.saturating_add(message.len()) > self.config.max_queued_bytes
                {
                    self.end_session(now, session, QUEUE_OVERFLOW, true);
                    return Err(SendError::QueueOverflow);
                }
                s.queued += message.len();
                self.queued_bytes += message.len();
                s.queue.push_back(message.to_owned());
                if receiver.is_some() {
                    self.pump(now, session);
                }
                Ok(())
            }
        }
    }

    /// Closes `session` with `code` and `reason` (Kite's: [`super::GO_AWAY`]): an HTTP session
    /// first delivers what is queued, then answers `c[code,"reason"]` to its receivers until it
    /// is forgotten; a SockJS websocket sends the close frame and closes the socket (code 1000),
    /// a raw one closes the socket with `code` (1000 if a websocket cannot carry it). Ends the
    /// session for the application ([`Output::Closed`]); nothing happens if it has ended.
    pub fn close(&mut self, now: Time, session: SessionId, code: u16, reason: &str) {
        let now = self.tick(now);
        self.end_session(now, session, (code, reason), false);
    }

    /// Time has come to `now`: heartbeats, held polls answered `h`, handover waits answered
    /// `c[2010,...]`, sessions forgotten after the disconnect delay.
    pub fn handle_timeout(&mut self, now: Time) {
        let now = self.tick(now);
        while let Some(&(at, key)) = self.timers.first() {
            if at > now {
                break;
            }
            self.timers.remove(&(at, key));
            match key {
                Timer::Response(response) => self.response_timer(now, response),
                Timer::Session(sid) => self.session_timer(now, sid),
            }
        }
    }

    fn response_timer(&mut self, now: Time, response: ResponseId) {
        let Some(open) = self.responses.get_mut(&response) else {
            return;
        };
        open.timer = None;
        match open.role {
            Role::Poll(sid) => {
                let headers = std::mem::take(&mut open.headers);
                self.responses.remove(&response);
                self.respond(response, 200, headers, b"h\n".to_vec(), true);
                self.detached(now, sid);
            }
            Role::Stream(sid, ref mut written) => {
                *written = written.saturating_add(2);
                let full = *written >= self.config.response_limit;
                self.outputs.push_back(Output::Write {
                    response,
                    body: b"h\n".to_vec(),
                });
                if full {
                    self.responses.remove(&response);
                    self.outputs.push_back(Output::End { response });
                    self.detached(now, sid);
                } else {
                    let at = now + self.config.heartbeat;
                    retime(
                        &mut self.timers,
                        &mut open.timer,
                        Timer::Response(response),
                        Some(at),
                    );
                }
            }
            Role::Waiting(sid, streaming) => {
                let Some(open) = self.responses.remove(&response) else {
                    return;
                };
                if let Some(Session {
                    link: Link::Http { waiter, .. },
                    ..
                }) = self.sessions.get_mut(&sid)
                    && *waiter == Some(response)
                {
                    *waiter = None;
                }
                self.another_connection(response, open.headers, streaming);
            }
        }
    }

    fn session_timer(&mut self, now: Time, sid: SessionId) {
        let Some(session) = self.sessions.get_mut(&sid) else {
            return;
        };
        session.timer = None;
        match session.link {
            Link::Socket { socket, .. } => {
                self.outputs.push_back(Output::SocketSend {
                    socket,
                    text: "h".to_owned(),
                });
                let at = now + self.config.heartbeat;
                retime(
                    &mut self.timers,
                    &mut session.timer,
                    Timer::Session(sid),
                    Some(at),
                );
            }
            Link::Http {
                receiver: None,
                waiter: None,
                ..
            } => {
                if session.closed.is_none() {
                    let (code, reason) = CONNECTION_INTERRUPTED;
                    self.outputs.push_back(Output::Closed {
                        session: sid,
                        code,
                        reason: reason.to_owned(),
                    });
                }
                self.forget(sid);
            }
            // A receiver is attached: the delay starts when it goes.
            Link::Http { .. } => {}
        }
    }
}
