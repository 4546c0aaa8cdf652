//! [`ServerCore`]: a kite server for Node, compiled into the package's `kite-wasm/server` build
//! only (cargo feature `server`), so browsers do not pay for it.
//!
//! The protocol is decided here and in kite-core, never in JavaScript: the SockJS server side
//! (`kite_core::sockjs::server`, sans-IO) answers every HTTP request and websocket frame, each
//! session it opens becomes a kite connection (the same [`Inner`] a client uses, accepted
//! instead of dialed, with kite-core's dnode state), and requests are authenticated by
//! [`auth::Verifier`] (kite-core's rules; signatures checked with Node's `crypto`). The
//! JavaScript driver (`server.js` in the package) only moves bytes: it owns Node's `http`
//! server and the `ws` sockets, hands each request, upgrade, frame and close to the core, and
//! does what the core tells it through the [`Driver`] it was created with (write a response,
//! send a frame, arm the one timer).

pub(crate) mod auth;

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::rc::{Rc, Weak};
use std::time::Duration;

use js_sys::{Array, Function, Object};
use kite_core::connection::Limits;
use kite_core::session::Time;
use kite_core::sockjs::server::{
    HttpRequest, Output, Refusal, ResponseId, Server, ServerConfig, SessionId, SocketId,
    TransportKind as SockJsKind,
};
use wasm_bindgen::prelude::*;

use crate::api::Api;
use crate::error;
use crate::kite::{Inner, Kite};
use crate::options::{Options, get, type_error};
use crate::transport::{Transport, TransportKind};

#[wasm_bindgen]
extern "C" {
    /// What the JavaScript driver does for the core: each method moves bytes or time, and
    /// none calls back into the core before it returns.
    pub type Driver;
    /// Starts (and with `end`, finishes) the answer to request `id`; `headers` is
    /// `[name, value, name, value, ...]`. `body` is a view into the module's memory: copy it.
    #[wasm_bindgen(method)]
    fn respond(this: &Driver, id: f64, status: u16, headers: Array, body: &[u8], end: bool);
    /// More of an open answer (one chunk). `body` is a view: copy it.
    #[wasm_bindgen(method)]
    fn write(this: &Driver, id: f64, body: &[u8]);
    /// Ends an open answer.
    #[wasm_bindgen(method)]
    fn end(this: &Driver, id: f64);
    /// Sends a text frame on websocket `id`.
    #[wasm_bindgen(method, js_name = wsSend)]
    fn ws_send(this: &Driver, id: f64, text: &str);
    /// Closes websocket `id`.
    #[wasm_bindgen(method, js_name = wsClose)]
    fn ws_close(this: &Driver, id: f64, code: u16, reason: &str);
    /// Calls `timeout()` in `ms` milliseconds, replacing the timer armed before; `-1`: none.
    #[wasm_bindgen(method)]
    fn arm(this: &Driver, ms: f64);
    /// Whether `signature` signs `signed` for the RSA public key `pem` with hash `hash`
    /// (`sha256`, `sha384`, `sha512`): Node's `crypto.verify`.
    #[wasm_bindgen(method)]
    fn verify(this: &Driver, hash: &str, pem: &str, signed: &str, signature: &[u8]) -> bool;
    /// Emits a server event (`connection`, `disconnect`, `error`, `info`).
    #[wasm_bindgen(method)]
    fn emit(this: &Driver, event: &str, arg: &JsValue);
}

/// Now, on the clock the core runs on.
fn now() -> Time {
    Time::from_millis(js_sys::Date::now().max(0.0) as u64)
}

/// The state of one server, shared by its connections' transports.
pub(crate) struct Shared {
    core: RefCell<Server>,
    driver: Driver,
    /// What every connection is made with: this kite's identity and call settings.
    template: Options,
    api: Rc<Api>,
    limits: Limits,
    peers: RefCell<HashMap<SessionId, Rc<Inner>>>,
    /// The deadline the driver's timer is armed for.
    armed: Cell<Option<Time>>,
}

impl Shared {
    /// Does what the core says until it says nothing, then arms the timer for its next
    /// deadline. Re-entered safely: a method that answers at once sends from inside it.
    fn drain(self: &Rc<Self>) {
        loop {
            let output = self.core.borrow_mut().poll_output();
            let Some(output) = output else { break };
            match output {
                Output::Respond {
                    response,
                    status,
                    headers,
                    body,
                    end,
                } => {
                    self.driver.respond(
                        raw(response.as_u64()),
                        status,
                        header_list(headers),
                        &body,
                        end,
                    );
                }
                Output::Write { response, body } => {
                    self.driver.write(raw(response.as_u64()), &body)
                }
                Output::End { response } => self.driver.end(raw(response.as_u64())),
                Output::SocketSend { socket, text } => {
                    self.driver.ws_send(raw(socket.as_u64()), &text)
                }
                Output::SocketClose {
                    socket,
                    code,
                    reason,
                } => self.driver.ws_close(raw(socket.as_u64()), code, &reason),
                Output::Opened { session, kind } => self.opened(session, kind),
                Output::Messages { session, messages } => {
                    let peer = self.peers.borrow().get(&session).cloned();
                    if let Some(peer) = peer {
                        peer.deliver(messages.iter().map(|m| JsValue::from_str(m)).collect());
                    }
                }
                Output::Closed {
                    session,
                    code,
                    reason,
                } => {
                    let peer = self.peers.borrow_mut().remove(&session);
                    if let Some(peer) = peer {
                        peer.ended(code, reason);
                        self.driver
                            .emit("disconnect", &JsValue::from(Kite::from_inner(peer)));
                    }
                }
            }
        }
        self.arm();
    }

    fn arm(&self) {
        let next = self.core.borrow().poll_timeout();
        if next == self.armed.get() {
            return;
        }
        // A timer armed for sooner stays: every frame on a SockJS websocket puts its
        // heartbeat off by the time since the last, and re-arming Node's timer for each cost
        // more than the early `timeout()` does (it finds nothing due and arms for the next).
        if let (Some(armed), Some(next)) = (self.armed.get(), next)
            && armed <= next
        {
            return;
        }
        self.armed.set(next);
        let ms = next.map_or(-1.0, |at| {
            at.as_millis().saturating_sub(now().as_millis()) as f64
        });
        self.driver.arm(ms);
    }

    fn opened(self: &Rc<Self>, session: SessionId, kind: SockJsKind) {
        let kind = match kind {
            SockJsKind::WebSocket => TransportKind::WebSocket,
            SockJsKind::RawWebSocket => TransportKind::RawWebSocket,
            SockJsKind::XhrPolling => TransportKind::XhrPolling,
            SockJsKind::XhrStreaming => TransportKind::XhrStreaming,
        };
        let link = Link {
            kind,
            session,
            server: Rc::downgrade(self),
        };
        let peer = Inner::accepted(
            self.template.clone(),
            self.api.clone(),
            self.limits,
            Transport::Accepted(link),
        );
        self.peers.borrow_mut().insert(session, peer.clone());
        self.driver
            .emit("connection", &JsValue::from(Kite::from_inner(peer)));
    }
}

/// Headers as the driver takes them: `[name, value, name, value, ...]`.
fn header_list(headers: Vec<(&'static str, String)>) -> Array {
    let list = Array::new();
    for (name, value) in headers {
        list.push(&JsValue::from_str(name));
        list.push(&JsValue::from_str(&value));
    }
    list
}

/// An id as the driver holds it (ids stay far below 2^53).
fn raw(id: u64) -> f64 {
    id as f64
}

fn id(raw: f64) -> u64 {
    raw.max(0.0) as u64
}

/// One accepted session, as its kite connection sends on it.
pub(crate) struct Link {
    kind: TransportKind,
    session: SessionId,
    server: Weak<Shared>,
}

impl Link {
    pub(crate) fn kind(&self) -> TransportKind {
        self.kind
    }

    pub(crate) fn send(&self, msgs: Vec<JsValue>) {
        let Some(server) = self.server.upgrade() else {
            return;
        };
        let t = now();
        {
            let mut core = server.core.borrow_mut();
            for m in msgs {
                let text = m.as_string().unwrap_or_default();
                // A session closed meanwhile (or by its queue budget) reports its end itself.
                if core.send(t, self.session, &text).is_err() {
                    break;
                }
            }
        }
        server.drain();
    }

    /// The method's side closes the caller (`peer.disconnect()`): `c[3000,"Go away!"]`, as a
    /// Go kite closes a session (`r.Client.Close()`).
    pub(crate) fn close(&self) {
        let Some(server) = self.server.upgrade() else {
            return;
        };
        server
            .core
            .borrow_mut()
            .close(now(), self.session, 3000, "Go away!");
        server.drain();
    }
}

/// Reads the server's options (the package's `KiteServer` passes them on after filling in
/// the identity's defaults).
fn config(options: &JsValue) -> Result<(ServerConfig, Limits), JsValue> {
    let mut sockjs = ServerConfig::default();
    let mut limits = Limits::default();
    let ms = |v: &JsValue, key: &str| get(v, key).and_then(|x| x.as_f64());
    let count = |v: &JsValue, key: &str| {
        get(v, key)
            .and_then(|x| x.as_f64())
            .filter(|x| *x >= 1.0)
            .map(|x| x as usize)
    };
    if let Some(x) = ms(options, "heartbeat") {
        sockjs.heartbeat = Duration::from_millis(x.max(1.0) as u64);
    }
    if let Some(x) = ms(options, "disconnectDelay") {
        sockjs.disconnect_delay = Duration::from_millis(x.max(1.0) as u64);
    }
    if let Some(x) = get(options, "websocket").and_then(|x| x.as_bool()) {
        sockjs.websocket = x;
    }
    if let Some(l) = get(options, "limits") {
        if !l.is_object() {
            return Err(type_error("limits must be an object"));
        }
        if let Some(x) = count(&l, "maxMessageBytes") {
            sockjs.max_message_bytes = x;
        }
        if let Some(x) = count(&l, "maxQueuedBytes") {
            sockjs.max_queued_bytes = x;
        }
        if let Some(x) = count(&l, "maxSessions") {
            sockjs.max_sessions = x;
        }
        if let Some(x) = count(&l, "maxSessionsPerAddress") {
            sockjs.max_sessions_per_peer = x;
        }
        if let Some(x) = count(&l, "maxWebSockets") {
            sockjs.max_websockets = x;
        }
        if let Some(x) = count(&l, "maxWebSocketsPerAddress") {
            sockjs.max_websockets_per_peer = x;
        }
        if let Some(x) = count(&l, "maxCallsInFlight") {
            limits.max_calls_in_flight = x;
        }
        if let Some(x) = count(&l, "maxCallbacks") {
            limits.max_functions = x;
        }
    }
    Ok((sockjs, limits))
}

/// The protocol side of a kite server; the package's `KiteServer` (Node's `http` and `ws`)
/// drives it. Not meant to be used directly: see `kite-wasm/server`.
#[wasm_bindgen]
pub struct ServerCore {
    shared: Rc<Shared>,
}

impl std::fmt::Debug for ServerCore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerCore")
            .field("name", &self.shared.template.identity.name)
            .field("connections", &self.shared.peers.borrow().len())
            .finish_non_exhaustive()
    }
}

#[wasm_bindgen]
impl ServerCore {
    /// A server for `options` (identity, `api`, `requireAuth`, `auth`, `limits`, `heartbeat`,
    /// `disconnectDelay`, `websocket`), driven by `driver`.
    #[wasm_bindgen(constructor)]
    pub fn new(options: JsValue, driver: Driver) -> Result<ServerCore, JsValue> {
        Kite::install_tell();
        if !options.is_object() {
            return Err(type_error("new KiteServer() needs an options object"));
        }
        let (sockjs, limits) = config(&options)?;
        // The connections' kite options: identity and call settings as a client's; the URL is
        // the peer's, which an accepted connection never dials.
        let copy = Object::assign(&Object::new(), options.unchecked_ref());
        error::set(&copy, "url", &JsValue::from_str("http://peer.invalid/"));
        error::set(&copy, "autoConnect", &JsValue::FALSE);
        error::set(&copy, "autoReconnect", &JsValue::FALSE);
        // Calls to a peer carry no credentials: the kite key is a bearer credential, and
        // whoever connects is not trusted with it (Go's `r.Client` has none either).
        error::set(&copy, "auth", &JsValue::UNDEFINED);
        let mut template = Options::from_js(&copy)?;
        template.api = JsValue::UNDEFINED;
        // `requireAuth: false` (the driver's reading of Kite.js's `auth: false`): methods given
        // without `auth` are open.
        let required = get(&options, "requireAuth").and_then(|v| v.as_bool()) != Some(false);
        let mut api = Api::from_options(&get(&options, "api").unwrap_or_default(), None, required)?;
        let verifier = auth::Verifier::from_options(
            &get(&options, "auth").unwrap_or_default(),
            template.identity.clone(),
            JsValue::clone(&driver).unchecked_into(),
        )?;
        api.verifier = Some(Rc::new(verifier));
        let seed = (js_sys::Math::random() * 9_007_199_254_740_992.0) as u64;
        let shared = Rc::new(Shared {
            core: RefCell::new(Server::new(sockjs, seed)),
            driver,
            template,
            api: Rc::new(api),
            limits,
            peers: RefCell::new(HashMap::new()),
            armed: Cell::new(None),
        });
        Ok(ServerCore { shared })
    }

    /// An HTTP request under the prefix (`path`: what follows it, with the query). Returns
    /// the id its answer is given under.
    #[allow(clippy::too_many_arguments)]
    pub fn http(
        &self,
        peer: &str,
        method: &str,
        path: &str,
        origin: Option<String>,
        request_headers: Option<String>,
        cookie: Option<String>,
        body: &[u8],
    ) -> f64 {
        let request = HttpRequest {
            peer,
            method,
            path,
            origin: origin.as_deref(),
            request_headers: request_headers.as_deref(),
            cookie: cookie.as_deref(),
            body,
        };
        let id = self.shared.core.borrow_mut().http(now(), request);
        self.shared.drain();
        raw(id.as_u64())
    }

    /// The client of answer `id` went away before it ended.
    #[wasm_bindgen(js_name = responseGone)]
    pub fn response_gone(&self, id: f64) {
        self.shared
            .core
            .borrow_mut()
            .response_gone(now(), ResponseId::from_u64(self::id(id)));
        self.shared.drain();
    }

    /// A websocket upgrade for `path` (after the prefix): the socket's id (a number) to
    /// accept, or `{status, headers, body}` to refuse it with (`headers` as in
    /// `Driver::respond`, `body` bytes).
    pub fn upgrade(&self, peer: &str, path: &str) -> JsValue {
        let result = self.shared.core.borrow_mut().websocket(now(), peer, path);
        self.shared.drain();
        match result {
            Ok(socket) => JsValue::from_f64(raw(socket.as_u64())),
            Err(Refusal {
                status,
                headers,
                body,
            }) => {
                let o = Object::new();
                error::set(&o, "status", &JsValue::from(status));
                error::set(&o, "headers", &header_list(headers));
                error::set(&o, "body", &js_sys::Uint8Array::from(body.as_slice()));
                o.into()
            }
        }
    }

    /// Websocket `id` (accepted by [`ServerCore::upgrade`]) is open.
    #[wasm_bindgen(js_name = wsOpen)]
    pub fn ws_open(&self, id: f64) {
        self.shared
            .core
            .borrow_mut()
            .websocket_open(now(), SocketId::from_u64(self::id(id)));
        self.shared.drain();
    }

    /// A text frame arrived on websocket `id`.
    #[wasm_bindgen(js_name = wsText)]
    pub fn ws_text(&self, id: f64, text: &str) {
        self.shared
            .core
            .borrow_mut()
            .websocket_text(now(), SocketId::from_u64(self::id(id)), text);
        self.shared.drain();
    }

    /// Websocket `id` closed.
    #[wasm_bindgen(js_name = wsClosed)]
    pub fn ws_closed(&self, id: f64) {
        self.shared
            .core
            .borrow_mut()
            .websocket_closed(now(), SocketId::from_u64(self::id(id)));
        self.shared.drain();
    }

    /// The driver's timer fired.
    pub fn timeout(&self) {
        self.shared.armed.set(None);
        self.shared.core.borrow_mut().handle_timeout(now());
        self.shared.drain();
    }

    /// Ends every connection (`close()` of the server): 1001 "Going away".
    #[wasm_bindgen(js_name = closeAll)]
    pub fn close_all(&self) {
        let sessions: Vec<SessionId> = self.shared.peers.borrow().keys().copied().collect();
        let t = now();
        for s in sessions {
            self.shared
                .core
                .borrow_mut()
                .close(t, s, 1001, "Going away");
        }
        self.shared.drain();
    }

    /// Adds (or replaces) a method. `auth`: `true` or absent (authentication required),
    /// `false` (open) or a function `(authentication, kite) => boolean | username`.
    pub fn handle(&self, method: String, func: Function, auth: JsValue) -> Result<(), JsValue> {
        self.shared.api.set(&method, func, &auth)
    }

    /// The largest request body or websocket message the driver should read (larger ones are
    /// refused before they reach the core: 413, or `ws`'s `maxPayload`).
    #[wasm_bindgen(js_name = bodyLimit)]
    pub fn body_limit(&self) -> f64 {
        self.shared.core.borrow().config().body_limit() as f64
    }

    /// This kite's identity (the seven fields).
    pub fn identity(&self) -> JsValue {
        self.shared
            .template
            .identity
            .to_tree::<crate::convert::Js>()
            .0
    }

    /// What the server holds now: `{connections, sessions, websockets, queuedBytes,
    /// verifications}`.
    pub fn stats(&self) -> JsValue {
        let o = Object::new();
        let core = self.shared.core.borrow();
        let n = |x: usize| JsValue::from_f64(x as f64);
        error::set(&o, "connections", &n(self.shared.peers.borrow().len()));
        error::set(&o, "sessions", &n(core.sessions()));
        error::set(&o, "websockets", &n(core.websockets()));
        error::set(&o, "queuedBytes", &n(core.queued_bytes()));
        if let Some(v) = &self.shared.api.verifier {
            error::set(
                &o,
                "verifications",
                &JsValue::from_f64(v.verifications() as f64),
            );
        }
        o.into()
    }
}
