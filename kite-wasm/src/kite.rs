//! [`Kite`]: a connection to one kite, with calls, callbacks both ways, the page's own
//! methods, reconnection and token renewal.

use futures_channel::oneshot;
use gloo_timers::callback::{Interval, Timeout};
use js_sys::{Array, Function, Object, Promise};
use kite_core::tree::{Head, TreeConnection, TreeIncoming};
use kite_core::{Auth, ErrorKind, KiteError};
use std::cell::{Cell, RefCell};
use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::pin::Pin;
use std::rc::{Rc, Weak};
use wasm_bindgen::prelude::*;
use wasm_bindgen_futures::{future_to_promise, spawn_local};

use crate::api::Api;
use crate::convert::{self, Js, Wire};
use crate::error;
use crate::events::Events;
use crate::options::{self, Options};
use crate::token;
use crate::transport::{self, Event, Handler, Transport, TransportKind};

/// Kite.js's state numbers.
pub(crate) const NOTREADY: u8 = 0;
pub(crate) const READY: u8 = 1;
pub(crate) const CLOSED: u8 = 3;
pub(crate) const CONNECTING: u8 = 5;

/// How many given-up calls a connection remembers (see `Inner::cancelled`).
const CANCELLED_KEPT: usize = 256;

/// Renews a token: what a `Kontrol` installs on the kites it returns.
pub(crate) type Renewer = Rc<dyn Fn() -> Pin<Box<dyn Future<Output = Result<String, KiteError>>>>>;

thread_local! {
    /// Live kites by key, for the peer's callbacks (JavaScript functions that must not keep
    /// their kite alive).
    static KITES: RefCell<HashMap<u64, Weak<Inner>>> = RefCell::new(HashMap::new());
    static NEXT_KITE: Cell<u64> = const { Cell::new(0) };
}

/// A call made and not answered yet.
struct Call {
    method: String,
    /// The arguments, kept to send again after a token renewal (token auth only).
    args: Option<Wire>,
    /// Its response callback on the current connection, once sent: (generation, id).
    sent: Option<(u64, u64)>,
    /// Already sent again once after `token is expired`.
    retried: bool,
    /// Fails the call when it fires; cleared (clearTimeout) when the call ends, so a finished
    /// call leaves no timer behind (in Node a pending timer keeps the process alive).
    timer: Option<Timeout>,
    done: oneshot::Sender<Result<JsValue, KiteError>>,
}

/// The state behind a `Kite` object.
pub(crate) struct Inner {
    key: u64,
    pub(crate) options: Options,
    pub(crate) identity: kite_core::Kite,
    /// The remote kite's identity, for kites found through Kontrol.
    pub(crate) remote: RefCell<Option<kite_core::Kite>>,
    auth: RefCell<Option<Auth>>,
    head: RefCell<Head<Js>>,
    auto_reconnect: Cell<bool>,
    state: Cell<u8>,
    /// Bumped for every connection attempt; events of older ones are ignored.
    generation: Cell<u64>,
    transport: RefCell<Option<Rc<Transport>>>,
    /// The protocol state of the current connection; the functions the peer may call live
    /// in it and go with it.
    conn: RefCell<TreeConnection<u64, Function>>,
    /// Messages that arrived while the session was being set up.
    early: RefCell<Vec<JsValue>>,
    calls: RefCell<HashMap<u64, Call>>,
    next_call: Cell<u64>,
    /// Calls waiting to be sent, in order.
    queue: RefCell<VecDeque<u64>>,
    /// Calls answered `token is expired`, waiting for a new token.
    awaiting_token: RefCell<Vec<(u64, KiteError)>>,
    token_wait: RefCell<Option<Timeout>>,
    token_timer: RefCell<Option<Timeout>>,
    reconnect_timer: RefCell<Option<Timeout>>,
    /// Checks that a SockJS session still hears from the server (see `start_watchdog`).
    watchdog: RefCell<Option<Interval>>,
    /// Pings for the peer's `kite.heartbeat` (one at a time, as in Go).
    pub(crate) heartbeat: RefCell<Option<Interval>>,
    attempts: Cell<u32>,
    /// Response callback ids of calls given up on (timeouts) on this connection: a late answer
    /// to one is expected, not an error of the peer. The most recent [`CANCELLED_KEPT`].
    cancelled: RefCell<VecDeque<u64>>,
    last_seen: Cell<f64>,
    ready_waiters: RefCell<Vec<oneshot::Sender<()>>>,
    pub(crate) renewer: RefCell<Option<Renewer>>,
    renewing: Cell<bool>,
    pub(crate) events: Events,
    pub(crate) api: Api,
}

impl Drop for Inner {
    fn drop(&mut self) {
        let _ = KITES.try_with(|k| k.borrow_mut().remove(&self.key));
        if let Some(t) = self.transport.get_mut().take() {
            t.close();
        }
    }
}

fn now_ms() -> f64 {
    js_sys::Date::now()
}

impl Inner {
    pub(crate) fn new(options: Options) -> Result<Rc<Inner>, JsValue> {
        let key = NEXT_KITE.with(|n| {
            let k = n.get();
            n.set(k + 1);
            k
        });
        let api = Api::from_options(&options.api, options.authenticate.clone())?;
        let identity = options.identity.clone();
        let auth = options.auth.clone();
        let inner = Rc::new(Inner {
            key,
            head: RefCell::new(Head::new(&identity, auth.as_ref())),
            auth: RefCell::new(auth),
            identity,
            remote: RefCell::new(None),
            auto_reconnect: Cell::new(options.auto_reconnect),
            state: Cell::new(NOTREADY),
            generation: Cell::new(0),
            transport: RefCell::new(None),
            conn: RefCell::new(TreeConnection::new()),
            early: RefCell::new(Vec::new()),
            calls: RefCell::new(HashMap::new()),
            next_call: Cell::new(0),
            queue: RefCell::new(VecDeque::new()),
            awaiting_token: RefCell::new(Vec::new()),
            token_wait: RefCell::new(None),
            token_timer: RefCell::new(None),
            reconnect_timer: RefCell::new(None),
            watchdog: RefCell::new(None),
            heartbeat: RefCell::new(None),
            attempts: Cell::new(0),
            cancelled: RefCell::new(VecDeque::new()),
            last_seen: Cell::new(0.0),
            ready_waiters: RefCell::new(Vec::new()),
            renewer: RefCell::new(None),
            renewing: Cell::new(false),
            events: Events::default(),
            api,
            options,
        });
        KITES.with(|k| k.borrow_mut().insert(key, Rc::downgrade(&inner)));
        // The token timer is armed by connect(): a kite never connected (one of many found
        // through Kontrol, say) holds no timer.
        Ok(inner)
    }

    /// The live kite with this key.
    pub(crate) fn by_key(key: u64) -> Option<Rc<Inner>> {
        KITES.with(|k| k.borrow().get(&key).and_then(Weak::upgrade))
    }

    /// Functions of this page held for peers, over all live kites: on their connections, and
    /// in calls waiting to be sent.
    pub(crate) fn live_functions() -> usize {
        KITES.with(|k| {
            k.borrow()
                .values()
                .filter_map(Weak::upgrade)
                .map(|inner| {
                    let queued: usize = inner
                        .calls
                        .borrow()
                        .values()
                        .filter(|c| c.sent.is_none())
                        .filter_map(|c| c.args.as_ref())
                        .map(|a| a.functions.len())
                        .sum();
                    inner.conn.borrow().functions_len() + queued
                })
                .sum()
        })
    }

    pub(crate) fn key(&self) -> u64 {
        self.key
    }

    pub(crate) fn state(&self) -> u8 {
        self.state.get()
    }

    pub(crate) fn transport_kind(&self) -> Option<TransportKind> {
        self.transport.borrow().as_ref().map(|t| t.kind())
    }

    pub(crate) fn auth(&self) -> Option<Auth> {
        self.auth.borrow().clone()
    }

    fn emit_error(&self, e: &KiteError) {
        self.events.emit("error", &[error::to_js(e)]);
    }

    // ---- connecting ----

    /// Starts connecting unless connected or connecting.
    pub(crate) fn connect(self: &Rc<Self>) {
        if matches!(self.state.get(), READY | CONNECTING) {
            return;
        }
        self.reconnect_timer.borrow_mut().take();
        if self.token_timer.borrow().is_none() {
            self.schedule_token_expiry();
        }
        self.state.set(CONNECTING);
        let generation = self.generation.get() + 1;
        self.generation.set(generation);
        let weak = Rc::downgrade(self);
        let handler: Handler = Rc::new(move |event| {
            if let Some(inner) = weak.upgrade() {
                inner.on_event(generation, event);
            }
        });
        let weak = Rc::downgrade(self);
        let url = self.options.url.clone();
        let kinds = self.options.transports.clone();
        let timeout = self.options.connect_timeout_ms;
        spawn_local(async move {
            let result = transport::establish(&url, &kinds, handler, timeout).await;
            let Some(inner) = weak.upgrade() else { return };
            if inner.generation.get() != generation {
                return; // superseded by disconnect(): dropping the transport closes it
            }
            match result {
                Ok(t) => inner.opened(generation, t),
                Err(e) => {
                    inner.emit_error(&e);
                    inner.end_session(1006, &e.message);
                }
            }
        });
    }

    fn opened(self: &Rc<Self>, generation: u64, t: Transport) {
        *self.transport.borrow_mut() = Some(Rc::new(t));
        *self.conn.borrow_mut() = TreeConnection::new();
        self.cancelled.borrow_mut().clear();
        self.state.set(READY);
        self.attempts.set(0);
        self.last_seen.set(now_ms());
        self.start_watchdog(generation);
        self.flush_queue();
        let early = std::mem::take(&mut *self.early.borrow_mut());
        self.on_messages(generation, early);
        for w in self.ready_waiters.borrow_mut().drain(..) {
            let _ = w.send(());
        }
        self.events.emit("open", &[]);
    }

    fn on_event(self: &Rc<Self>, generation: u64, event: Event) {
        if self.generation.get() != generation {
            return;
        }
        self.last_seen.set(now_ms());
        match event {
            Event::Messages(msgs) if self.state.get() == READY => {
                self.on_messages(generation, msgs)
            }
            Event::Messages(msgs) => self.early.borrow_mut().extend(msgs),
            Event::Heartbeat => {}
            Event::Broken(reason) => self.emit_error(&KiteError::generic(format!(
                "skipped a broken frame: {reason}"
            ))),
            Event::Closed { code, reason } => {
                self.transport.borrow_mut().take();
                self.end_session(code, &reason);
            }
        }
    }

    /// The session is over (or the attempt failed): fails its calls, tells listeners,
    /// reconnects if it should.
    fn end_session(self: &Rc<Self>, code: u16, reason: &str) {
        let was_open = self.state.get() == READY;
        if let Some(t) = self.transport.borrow_mut().take() {
            t.close();
        }
        self.generation.set(self.generation.get() + 1);
        self.state.set(CLOSED);
        self.watchdog.borrow_mut().take();
        self.heartbeat.borrow_mut().take();
        self.early.borrow_mut().clear();
        let pending = self.conn.borrow_mut().drain_pending();
        // Dropping the connection frees the functions the peer could call.
        *self.conn.borrow_mut() = TreeConnection::new();
        for id in pending {
            self.finish(id, Err(KiteError::disconnect()));
        }
        if was_open {
            let info = Object::new();
            error::set(&info, "code", &JsValue::from(code));
            error::set(&info, "reason", &JsValue::from_str(reason));
            self.events.emit("close", &[info.into()]);
        }
        if self.auto_reconnect.get() {
            self.schedule_reconnect();
        } else {
            self.fail_queued(KiteError::disconnect());
        }
    }

    fn schedule_reconnect(self: &Rc<Self>) {
        if self.state.get() == READY || self.reconnect_timer.borrow().is_some() {
            return;
        }
        let n = self.attempts.get() + 1;
        let Some(delay) = self.options.backoff.delay(n, js_sys::Math::random()) else {
            self.events.emit("backOffFailed", &[]);
            self.fail_queued(KiteError::new(
                ErrorKind::Disconnect,
                format!("could not reconnect after {} attempts", n - 1),
            ));
            return;
        };
        self.attempts.set(n);
        let weak = Rc::downgrade(self);
        // setTimeout holds at most 2^31-1 ms.
        let delay_ms =
            u32::try_from(delay.as_millis()).map_or(2_000_000_000, |d| d.min(2_000_000_000));
        let timer = Timeout::new(delay_ms, move || {
            if let Some(inner) = weak.upgrade() {
                inner.reconnect_timer.borrow_mut().take();
                if inner.auto_reconnect.get() {
                    inner.connect();
                }
            }
        });
        *self.reconnect_timer.borrow_mut() = Some(timer);
    }

    /// Closes the connection; with `reconnect`, connects again right after.
    pub(crate) fn disconnect(self: &Rc<Self>, reconnect: bool) {
        self.auto_reconnect.set(reconnect);
        self.reconnect_timer.borrow_mut().take();
        self.attempts.set(0);
        if matches!(self.state.get(), READY | CONNECTING) {
            self.end_session(1000, "disconnected");
        } else if reconnect {
            // Closed between reconnection attempts (or never connected): connect now.
            self.connect();
        } else {
            self.fail_queued(KiteError::disconnect());
        }
    }

    /// Ends a SockJS session the server has been silent on for too long.
    fn start_watchdog(self: &Rc<Self>, generation: u64) {
        let limit = self.options.heartbeat_timeout_ms;
        if limit == 0 || self.transport_kind() == Some(TransportKind::RawWebSocket) {
            return;
        }
        let weak = Rc::downgrade(self);
        let every = Interval::new((limit / 4).max(100), move || {
            let Some(inner) = weak.upgrade() else { return };
            if inner.generation.get() != generation || inner.state.get() != READY {
                return;
            }
            if now_ms() - inner.last_seen.get() > f64::from(limit) {
                let e = KiteError::new(
                    ErrorKind::Disconnect,
                    format!("no heartbeat from the server for {limit} ms"),
                );
                inner.emit_error(&e);
                inner.end_session(1006, &e.message);
            }
        });
        *self.watchdog.borrow_mut() = Some(every);
    }

    /// Resolves once the kite is connected.
    pub(crate) fn ready(&self) -> impl Future<Output = ()> + 'static {
        let (tx, rx) = oneshot::channel();
        if self.state.get() == READY {
            let _ = tx.send(());
        } else {
            self.ready_waiters.borrow_mut().push(tx);
        }
        async move {
            let _ = rx.await;
        }
    }

    // ---- calls ----

    /// Calls `method` with `args` (a list); `timeout_ms` 0 waits forever.
    pub(crate) fn call(
        self: &Rc<Self>,
        method: &str,
        args: Wire,
        timeout_ms: u32,
    ) -> impl Future<Output = Result<JsValue, KiteError>> + 'static {
        let (tx, rx) = oneshot::channel();
        let id = self.next_call.get();
        self.next_call.set(id + 1);
        let keep = self
            .auth
            .borrow()
            .as_ref()
            .is_some_and(|a| a.kind == "token");
        self.calls.borrow_mut().insert(
            id,
            Call {
                method: method.to_owned(),
                args: Some(args),
                sent: None,
                retried: !keep,
                timer: None,
                done: tx,
            },
        );
        self.queue.borrow_mut().push_back(id);
        if timeout_ms > 0 {
            let weak = Rc::downgrade(self);
            let method = method.to_owned();
            let timer = Timeout::new(timeout_ms, move || {
                if let Some(inner) = weak.upgrade() {
                    inner.finish(
                        id,
                        Err(KiteError::new(
                            ErrorKind::Timeout,
                            format!("No response to \"{method}\" arrived in {timeout_ms} ms"),
                        )),
                    );
                }
            });
            if let Some(call) = self.calls.borrow_mut().get_mut(&id) {
                call.timer = Some(timer);
            }
        }
        if self.state.get() == READY {
            self.flush_queue();
        }
        async move { rx.await.unwrap_or_else(|_| Err(KiteError::disconnect())) }
    }

    /// Sends the queued calls if connected.
    fn flush_queue(self: &Rc<Self>) {
        if self.state.get() != READY {
            return;
        }
        let Some(transport) = self.transport.borrow().clone() else {
            return;
        };
        let generation = self.generation.get();
        let mut texts = Vec::new();
        let mut refused = Vec::new();
        {
            let head = self.head.borrow();
            let mut calls = self.calls.borrow_mut();
            let mut conn = self.conn.borrow_mut();
            for id in self.queue.borrow_mut().drain(..) {
                let Some(call) = calls.get_mut(&id) else {
                    continue; // timed out while queued
                };
                let args = if call.retried {
                    call.args.take()
                } else {
                    call.args.clone()
                };
                let args = args.unwrap_or_else(|| Wire::plain(Js(Array::new().into())));
                match conn.request(&call.method, &head, args, id) {
                    Ok((response, message)) => {
                        call.sent = Some((generation, response));
                        texts.push(message.text());
                    }
                    // More functions than the connection keeps: this call fails alone.
                    Err(e) => refused.push((id, e)),
                }
            }
        }
        for (id, e) in refused {
            self.finish(id, Err(e));
        }
        if !texts.is_empty() {
            transport.send(texts);
        }
    }

    /// Settles call `id` (once).
    fn finish(&self, id: u64, result: Result<JsValue, KiteError>) {
        let Some(call) = self.calls.borrow_mut().remove(&id) else {
            return;
        };
        if let Some((generation, response)) = call.sent
            && generation == self.generation.get()
        {
            self.conn.borrow_mut().cancel(response);
            let mut cancelled = self.cancelled.borrow_mut();
            if cancelled.len() == CANCELLED_KEPT {
                cancelled.pop_front();
            }
            cancelled.push_back(response);
        }
        let _ = call.done.send(result);
    }

    /// Fails every call not answered yet, and stops the token timers: nothing is left to
    /// renew for until `connect()` arms them again (in Node a pending timer would also keep the
    /// process alive).
    fn fail_queued(&self, e: KiteError) {
        self.token_timer.borrow_mut().take();
        self.token_wait.borrow_mut().take();
        let ids: Vec<u64> = self.calls.borrow().keys().copied().collect();
        self.queue.borrow_mut().clear();
        self.awaiting_token.borrow_mut().clear();
        for id in ids {
            self.finish(id, Err(e.clone()));
        }
    }

    /// A response arrived for call `id`.
    fn answered(self: &Rc<Self>, id: u64, result: Result<JsValue, KiteError>) {
        if let Err(e) = &result
            && token::is_expired_error(e)
        {
            let retry = {
                let mut calls = self.calls.borrow_mut();
                match calls.get_mut(&id) {
                    Some(call) if !call.retried && call.args.is_some() => {
                        call.retried = true;
                        call.sent = None;
                        true
                    }
                    _ => false,
                }
            };
            if retry && (self.events.has("tokenExpired") || self.renewer.borrow().is_some()) {
                self.awaiting_token.borrow_mut().push((id, e.clone()));
                self.token_expired();
                return;
            }
        }
        if let Some(call) = self.calls.borrow_mut().remove(&id) {
            let _ = call.done.send(result);
        }
    }

    // ---- incoming messages ----

    fn on_messages(self: &Rc<Self>, generation: u64, msgs: Vec<JsValue>) {
        for msg in msgs {
            if self.generation.get() != generation {
                return;
            }
            let Ok(message) = Js::parse(&msg) else {
                self.emit_error(&KiteError::generic(
                    "skipped a message that is not dnode: it is not JSON".to_owned(),
                ));
                continue;
            };
            let incoming = self.conn.borrow_mut().receive(&message);
            match incoming {
                Err(e) => self.emit_error(&KiteError::generic(format!(
                    "skipped a message that is not dnode: {e}"
                ))),
                Ok(TreeIncoming::Response { pending, result }) => {
                    let result = result.map(|r| convert::from_wire(r, self.key, generation));
                    self.answered(pending, result)
                }
                Ok(TreeIncoming::Callback { function, args }) => {
                    let args = convert::args_from_wire(args, self.key, generation);
                    if let Err(e) = function.apply(&JsValue::NULL, &args) {
                        web_sys::console::error_2(&"kite: a callback threw".into(), &e);
                    }
                }
                Ok(TreeIncoming::Request(request)) => {
                    crate::api::handle(self, generation, *request)
                }
                Ok(TreeIncoming::InvalidRequest { response, error }) => {
                    if let Some(id) = response {
                        self.respond(generation, id, Err(error));
                    }
                }
                Ok(TreeIncoming::UnknownCallback(id)) if self.cancelled.borrow().contains(&id) => {}
                Ok(TreeIncoming::UnknownCallback(id)) => self.emit_error(&KiteError::generic(
                    format!("the peer called callback {id}, which is unknown or already answered"),
                )),
            }
        }
    }

    /// Sends an invocation of the peer's callback `id`.
    pub(crate) fn send_invocation(
        &self,
        generation: u64,
        id: u64,
        args: Wire,
    ) -> Result<(), KiteError> {
        if generation != self.generation.get() || self.state.get() != READY {
            return Err(KiteError::disconnect());
        }
        let transport = self.transport.borrow().clone();
        let Some(transport) = transport else {
            return Err(KiteError::disconnect());
        };
        let message = self.conn.borrow_mut().invoke(id, args)?;
        transport.send(vec![message.text()]);
        Ok(())
    }

    /// Answers a request of the peer whose response callback is `id`.
    pub(crate) fn respond(&self, generation: u64, id: u64, result: Result<Wire, KiteError>) {
        if generation != self.generation.get() {
            return;
        }
        let transport = self.transport.borrow().clone();
        if let Some(transport) = transport {
            let message = self.conn.borrow_mut().respond(id, result);
            transport.send(vec![message.text()]);
        }
    }

    pub(crate) fn generation(&self) -> u64 {
        self.generation.get()
    }

    // ---- tokens ----

    /// Replaces the token and sends the calls that waited for it.
    pub(crate) fn set_token(self: &Rc<Self>, token: String) {
        let auth = Auth::new("token", token.clone());
        *self.head.borrow_mut() = Head::new(&self.identity, Some(&auth));
        *self.auth.borrow_mut() = Some(auth);
        self.token_wait.borrow_mut().take();
        self.schedule_token_expiry();
        let waiting: Vec<u64> = self
            .awaiting_token
            .borrow_mut()
            .drain(..)
            .map(|(id, _)| id)
            .collect();
        {
            let mut queue = self.queue.borrow_mut();
            for id in waiting.into_iter().rev() {
                queue.push_front(id);
            }
        }
        self.events.emit("tokenSet", &[JsValue::from_str(&token)]);
        self.flush_queue();
    }

    /// Arms `tokenExpired` for `renewBefore` ms before the token's `exp`.
    fn schedule_token_expiry(self: &Rc<Self>) {
        self.token_timer.borrow_mut().take();
        let Some(exp) = self
            .auth
            .borrow()
            .as_ref()
            .filter(|a| a.kind == "token")
            .and_then(|a| token::expiry(&a.key))
        else {
            return;
        };
        let delay = (exp * 1000.0 - self.options.renew_before_ms - now_ms()).max(0.0);
        // setTimeout holds at most 2^31-1 ms; later expiries are re-armed when that fires.
        let capped = delay.min(2_000_000_000.0) as u32;
        let weak = Rc::downgrade(self);
        let timer = Timeout::new(capped, move || {
            if let Some(inner) = weak.upgrade() {
                inner.token_timer.borrow_mut().take();
                if f64::from(capped) < delay {
                    inner.schedule_token_expiry();
                } else {
                    inner.token_expired();
                }
            }
        });
        *self.token_timer.borrow_mut() = Some(timer);
    }

    /// The token expires (or a call was refused with `token is expired`): tells listeners,
    /// asks the renewer, and fails waiting calls if no token comes in time.
    fn token_expired(self: &Rc<Self>) {
        self.events.emit("tokenExpired", &[]);
        let renewer = self.renewer.borrow().clone();
        if let Some(renew) = renewer
            && !self.renewing.replace(true)
        {
            let weak = Rc::downgrade(self);
            spawn_local(async move {
                let result = renew().await;
                let Some(inner) = weak.upgrade() else { return };
                inner.renewing.set(false);
                match result {
                    Ok(token) => inner.set_token(token),
                    Err(e) => inner.emit_error(&e),
                }
            });
        }
        if !self.awaiting_token.borrow().is_empty() && self.token_wait.borrow().is_none() {
            let weak = Rc::downgrade(self);
            let timer = Timeout::new(self.options.token_wait_ms, move || {
                if let Some(inner) = weak.upgrade() {
                    inner.token_wait.borrow_mut().take();
                    let waiting = std::mem::take(&mut *inner.awaiting_token.borrow_mut());
                    for (id, e) in waiting {
                        inner.finish(id, Err(e));
                    }
                }
            });
            *self.token_wait.borrow_mut() = Some(timer);
        }
    }
}

#[wasm_bindgen(inline_js = "export function defineTell(proto) {
  if (!Object.prototype.hasOwnProperty.call(proto, 'tell')) {
    Object.defineProperty(proto, 'tell', {
      value: function tell(method, ...args) { return this.request(method, args); },
      writable: true, configurable: true,
    });
  }
}")]
extern "C" {
    fn defineTell(proto: &JsValue);
}

#[wasm_bindgen(typescript_custom_section)]
const TELL_TS: &str = r#"
export interface Kite {
  /** Calls `method` on the remote kite with any number of arguments (sent as `withArgs`).
   *  Functions among the arguments become callbacks the remote may call many times.
   *  Resolves with the result; rejects with a `KiteError` (`type`, `message`, `code`, `id`). */
  tell(method: string, ...args: any[]): Promise<any>;
}
"#;

/// A kite reached over the network, and the page's side of that connection.
///
/// ```js
/// const kite = new Kite({ url: 'http://localhost:6000/kite', api: { hello: name => `hi ${name}` } });
/// console.log(await kite.tell('square', 4)); // 16
/// ```
#[wasm_bindgen]
pub struct Kite {
    pub(crate) inner: Rc<Inner>,
}

impl std::fmt::Debug for Kite {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Kite")
            .field("url", &self.inner.options.url)
            .field("state", &self.inner.state())
            .finish_non_exhaustive()
    }
}

impl Kite {
    pub(crate) fn from_inner(inner: Rc<Inner>) -> Kite {
        Kite { inner }
    }

    /// Puts `tell(method, ...args)` on `Kite.prototype` (exported methods cannot take rest
    /// parameters, so it is defined in JavaScript over [`Kite::request`]).
    pub(crate) fn install_tell() {
        thread_local!(static DONE: Cell<bool> = const { Cell::new(false) });
        if DONE.with(|d| d.replace(true)) {
            return;
        }
        if let Ok(options) = Options::from_js(&JsValue::from_str("http://127.0.0.1/")) {
            let mut options = options;
            options.auto_connect = false;
            if let Ok(inner) = Inner::new(options) {
                let sample = JsValue::from(Kite { inner });
                defineTell(&Object::get_prototype_of(&sample));
                if let Ok(free) = js_sys::Reflect::get(&sample, &"free".into())
                    && let Some(free) = free.dyn_ref::<Function>()
                {
                    let _ = free.call0(&sample);
                }
            }
        }
    }
}

#[wasm_bindgen]
impl Kite {
    /// `new Kite(url)` or `new Kite({url, ...options})`. Options: identity fields (`name`,
    /// `username`, `environment`, `version`, `region`, `hostname`, `id`), `auth`
    /// (`{type, key}`), `autoConnect` (true), `autoReconnect` (true), `backoff`
    /// (`{initialDelayMs, multiplyFactor, maxDelayMs, maxReconnectAttempts}`), `transports`
    /// (`['websocket', 'xhr-streaming', 'xhr-polling']` or `['raw-websocket']`), `timeout`
    /// (ms per call, 0 = none), `connectTimeout`, `heartbeatTimeout`, `renewBefore`, `api`
    /// (methods the remote may call) and `authenticate`.
    #[wasm_bindgen(constructor)]
    pub fn new(options: JsValue) -> Result<Kite, JsValue> {
        Kite::install_tell();
        let options = Options::from_js(&options)?;
        let auto = options.auto_connect;
        let inner = Inner::new(options)?;
        if auto {
            inner.connect();
        }
        Ok(Kite { inner })
    }

    /// Connects (nothing happens if connected or connecting).
    pub fn connect(&self) {
        self.inner.connect();
    }

    /// Closes the connection; calls in flight fail with `disconnect`. With `reconnect` true
    /// it connects again.
    pub fn disconnect(&self, reconnect: Option<bool>) {
        self.inner.disconnect(reconnect.unwrap_or(false));
    }

    /// Calls `method` with the list `args`; `options.timeout` (ms) overrides the kite's.
    /// `tell(method, ...args)` is the short form.
    pub fn request(&self, method: String, args: Option<Array>, options: JsValue) -> Promise {
        let timeout = options::get(&options, "timeout")
            .and_then(|t| t.as_f64())
            .map_or(self.inner.options.timeout_ms, |t| t.max(0.0) as u32);
        let scrubbed = match args {
            Some(args) => convert::list_to_wire(args.iter()),
            None => Ok(Wire::plain(Js(Array::new().into()))),
        };
        let scrubbed = match scrubbed {
            Ok(s) => s,
            Err(e) => return Promise::reject(&error::to_js(&e)),
        };
        let call = self.inner.call(&method, scrubbed, timeout);
        future_to_promise(async move { call.await.map_err(|e| error::to_js(&e)) })
    }

    /// `kite.ping` on the remote kite: resolves with `"pong"`.
    pub fn ping(&self) -> Promise {
        self.request("kite.ping".into(), None, JsValue::UNDEFINED)
    }

    /// Resolves when connected (at once if connected now); calls `callback` too, if given.
    pub fn ready(&self, callback: Option<Function>) -> Promise {
        let ready = self.inner.ready();
        future_to_promise(async move {
            ready.await;
            if let Some(cb) = callback {
                let _ = cb.call0(&JsValue::NULL);
            }
            Ok(JsValue::UNDEFINED)
        })
    }

    /// Listens to an event: `open`, `close` (`{code, reason}`), `error` (a `KiteError`),
    /// `info` (a message from the remote's `kite.log`), `tokenExpired`, `tokenSet` (the token),
    /// `backOffFailed`.
    pub fn on(&self, event: String, listener: Function) {
        self.inner.events.on(&event, listener, false);
    }

    /// Listens to the next `event` only.
    pub fn once(&self, event: String, listener: Function) {
        self.inner.events.on(&event, listener, true);
    }

    /// Stops listening.
    pub fn off(&self, event: String, listener: Function) {
        self.inner.events.off(&event, &listener);
    }

    /// Adds (or replaces) a method the remote may call. `auth`: `false` (default), `true` (the
    /// `authenticate` option decides) or a function `(authentication, kite) => boolean`.
    pub fn handle(&self, method: String, func: Function, auth: JsValue) -> Result<(), JsValue> {
        self.inner.api.set(&method, func, &auth)
    }

    /// Uses `token` from now on (token authentication) and sends the calls that waited for it.
    #[wasm_bindgen(js_name = setToken)]
    pub fn set_token(&self, token: String) {
        self.inner.set_token(token);
    }

    /// The current token, if the kite uses token authentication.
    #[wasm_bindgen(js_name = getToken)]
    pub fn get_token(&self) -> Option<String> {
        self.inner
            .auth()
            .filter(|a| a.kind == "token")
            .map(|a| a.key)
    }

    /// Kite.js's state: 0 not ready, 1 ready, 3 closed, 5 connecting.
    #[wasm_bindgen(getter)]
    pub fn state(&self) -> u8 {
        self.inner.state()
    }

    /// The transport in use (`websocket`, `xhr-streaming`, `xhr-polling`, `raw-websocket`),
    /// or `undefined` when not connected.
    #[wasm_bindgen(getter)]
    pub fn transport(&self) -> Option<String> {
        self.inner.transport_kind().map(|k| k.name().to_owned())
    }

    /// The URL dialed.
    #[wasm_bindgen(getter)]
    pub fn url(&self) -> String {
        self.inner.options.url.clone()
    }

    /// The identity of the kite found through Kontrol (`null` for a kite made by hand).
    #[wasm_bindgen(getter)]
    pub fn remote(&self) -> JsValue {
        match &*self.inner.remote.borrow() {
            Some(k) => k.to_tree::<Js>().0,
            None => JsValue::NULL,
        }
    }

    /// This side's identity, as sent with every call.
    #[wasm_bindgen(js_name = getKiteInfo)]
    pub fn kite_info(&self) -> JsValue {
        self.inner.identity.to_tree::<Js>().0
    }

    /// Functions of this page held for peers: on open connections and in calls waiting to be
    /// sent (freed when the call fails or the connection that carried them ends).
    #[wasm_bindgen(js_name = liveCallbacks)]
    pub fn live_callbacks() -> usize {
        Inner::live_functions()
    }
}
