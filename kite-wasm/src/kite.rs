//! [`Kite`]: a connection to one kite, with calls, callbacks both ways, the page's own
//! methods, reconnection and token renewal.

use futures_channel::oneshot;
use gloo_timers::callback::{Interval, Timeout};
use js_sys::{Array, Function, Object, Promise};
use kite_core::session::{
    Answer, CallId, ClientSession, Credentials, Event as SessionEvent, Output, SessionConfig,
    State, Time,
};
use kite_core::tree::{Head, TreeConnection, TreeIncoming};
use kite_core::{Auth, ErrorKind, KiteError};
use std::cell::{Cell, RefCell};
use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::pin::Pin;
use std::rc::{Rc, Weak};
use std::time::Duration;
use wasm_bindgen::prelude::*;
use wasm_bindgen_futures::spawn_local;

use crate::api::Api;
use crate::convert::{self, Js, Wire};
use crate::error;
use crate::events::Events;
use crate::extras::{self, level};
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

/// A call made and not settled yet: what the driver keeps of it. When it is sent, fails,
/// times out or waits for a token is the session's to decide (`kite_core::session`).
struct Call {
    method: String,
    /// The arguments, until the call is sent for the last time (a call made with a token may
    /// be sent again once after `token is expired`).
    args: Option<Wire>,
    /// Its response callback on the current connection, once sent.
    response: Option<u64>,
    done: Done,
}

/// Who hears how a call ended.
enum Done {
    /// A future of the module's own (Kontrol's calls, `ping`).
    Future(Option<oneshot::Sender<Result<JsValue, KiteError>>>),
    /// The promise `Kite#request` returned ([`extras::new_call`]), settled directly.
    Promise(Option<Promise>),
}

impl Done {
    fn settle(mut self, result: Result<JsValue, KiteError>) {
        match &mut self {
            Done::Future(tx) => {
                if let Some(tx) = tx.take() {
                    let _ = tx.send(result);
                }
            }
            Done::Promise(promise) => {
                if let Some(promise) = promise.take() {
                    match result {
                        Ok(value) => extras::settle_call(&promise, true, &value),
                        Err(e) => extras::settle_call(&promise, false, &error::to_js(&e)),
                    }
                }
            }
        }
    }
}

impl Drop for Done {
    /// A call dropped unsettled (its kite freed) fails with `disconnect`, as its future did.
    fn drop(&mut self) {
        if let Done::Promise(Some(promise)) = self {
            extras::settle_call(promise, false, &error::to_js(&KiteError::disconnect()));
        }
    }
}

/// The state behind a `Kite` object: the session (kite-core's, which decides), the transport
/// and the protocol state of the current connection, the calls' arguments and promises, and
/// one timer for the session's next deadline.
pub(crate) struct Inner {
    key: u64,
    pub(crate) options: Options,
    pub(crate) identity: kite_core::Kite,
    /// The remote kite's identity, for kites found through Kontrol.
    pub(crate) remote: RefCell<Option<kite_core::Kite>>,
    auth: RefCell<Option<Auth>>,
    head: RefCell<Head<Js>>,
    session: RefCell<ClientSession>,
    /// `connect()` was called at least once (Kite.js's NOTREADY until then).
    started: Cell<bool>,
    /// Bumped for every connection attempt; events of older ones are ignored.
    generation: Cell<u64>,
    transport: RefCell<Option<Rc<Transport>>>,
    /// The protocol state of the current connection; the functions the peer may call live
    /// in it and go with it.
    conn: RefCell<TreeConnection<u64, Function>>,
    /// Messages that arrived while the session was being set up.
    early: RefCell<Vec<JsValue>>,
    calls: RefCell<HashMap<u64, Call>>,
    /// The session's next deadline, and the timer armed for it.
    timer: RefCell<Option<(Time, Timeout)>>,
    /// Pings for the peer's `kite.heartbeat` (one at a time, as in Go).
    pub(crate) heartbeat: RefCell<Option<Interval>>,
    /// Response callback ids of calls given up on (timeouts) on this connection: a late answer
    /// to one is expected, not an error of the peer. The most recent [`CANCELLED_KEPT`].
    cancelled: RefCell<VecDeque<u64>>,
    ready_waiters: RefCell<Vec<oneshot::Sender<()>>>,
    pub(crate) renewer: RefCell<Option<Renewer>>,
    pub(crate) events: Events,
    pub(crate) api: Rc<Api>,
    /// A server's side of an accepted connection: never dials, and its methods are told who
    /// called (`peer`).
    pub(crate) accepted: bool,
}

impl Drop for Inner {
    fn drop(&mut self) {
        let _ = KITES.try_with(|k| k.borrow_mut().remove(&self.key));
        if let Some(t) = self.transport.get_mut().take() {
            t.close();
        }
    }
}

/// Now, on the clock the session is driven with.
fn now() -> Time {
    Time::from_millis(js_sys::Date::now().max(0.0) as u64)
}

/// When to renew a token whose `exp` (seconds since the epoch) is `exp`: `renew_before_ms`
/// before it, which Kite.js lets be negative (after it). The session is configured with no
/// `renew_before` of its own, and this is handed to it as the time left.
fn renew_in(exp: f64, renew_before_ms: f64) -> Option<Duration> {
    // `as` saturates, and reads NaN as 0.
    Some(Duration::from_millis(
        (exp * 1000.0 - renew_before_ms - js_sys::Date::now()) as u64,
    ))
}

impl Inner {
    pub(crate) fn new(options: Options) -> Result<Rc<Inner>, JsValue> {
        let api = Rc::new(Api::from_options(
            &options.api,
            options.authenticate.clone(),
            false,
        )?);
        let config = Self::session_config(&options);
        let mut session = ClientSession::new(config);
        // A token's expiry is scheduled by connect(): a kite never connected (one of many found
        // through Kontrol, say) holds no timer.
        if options.auth.as_ref().is_some_and(|a| a.kind == "token") {
            session.set_credentials(Time::ZERO, Credentials::Token { expires_in: None });
        }
        Ok(Self::build(
            options,
            api,
            session,
            TreeConnection::new(),
            None,
        ))
    }

    /// A server's side of a connection it accepted over `transport`: open from the start,
    /// serving `api` (shared by the server's connections) within `limits`; it never dials.
    #[cfg(feature = "server")]
    pub(crate) fn accepted(
        options: Options,
        api: Rc<Api>,
        limits: kite_core::connection::Limits,
        transport: Transport,
    ) -> Rc<Inner> {
        let mut config = Self::session_config(&options);
        config.silence_timeout = None;
        let session = ClientSession::accepted(config, now(), false);
        let inner = Self::build(
            options,
            api,
            session,
            TreeConnection::with_limits(limits),
            Some(Rc::new(transport)),
        );
        inner.started.set(true);
        inner
    }

    /// Messages of the peer, for a connection the driver owns (a server's).
    #[cfg(feature = "server")]
    pub(crate) fn deliver(self: &Rc<Self>, msgs: Vec<JsValue>) {
        self.on_event(self.generation.get(), Event::Messages(msgs));
    }

    /// The connection the driver owns ended.
    #[cfg(feature = "server")]
    pub(crate) fn ended(self: &Rc<Self>, code: u16, reason: String) {
        self.on_event(self.generation.get(), Event::Closed { code, reason });
    }

    fn session_config(options: &Options) -> SessionConfig {
        SessionConfig {
            reconnect: options.auto_reconnect.then(|| options.backoff.clone()),
            silence_timeout: (options.heartbeat_timeout_ms > 0)
                .then(|| Duration::from_millis(options.heartbeat_timeout_ms.into())),
            // Counted into the time left instead (see `renew_in`): it may be negative.
            renew_before: Duration::ZERO,
            token_wait: Duration::from_millis(options.token_wait_ms.into()),
            seed: (js_sys::Math::random() * 9_007_199_254_740_992.0) as u64,
            ..SessionConfig::default()
        }
    }

    fn build(
        options: Options,
        api: Rc<Api>,
        session: ClientSession,
        conn: TreeConnection<u64, Function>,
        transport: Option<Rc<Transport>>,
    ) -> Rc<Inner> {
        let key = NEXT_KITE.with(|n| {
            let k = n.get();
            n.set(k + 1);
            k
        });
        let identity = options.identity.clone();
        let auth = options.auth.clone();
        let inner = Rc::new(Inner {
            accepted: transport.is_some(),
            key,
            head: RefCell::new(Head::new(&identity, auth.as_ref())),
            auth: RefCell::new(auth),
            identity,
            remote: RefCell::new(None),
            session: RefCell::new(session),
            started: Cell::new(false),
            generation: Cell::new(0),
            transport: RefCell::new(transport),
            conn: RefCell::new(conn),
            early: RefCell::new(Vec::new()),
            calls: RefCell::new(HashMap::new()),
            timer: RefCell::new(None),
            heartbeat: RefCell::new(None),
            cancelled: RefCell::new(VecDeque::new()),
            ready_waiters: RefCell::new(Vec::new()),
            renewer: RefCell::new(None),
            events: Events::new(options.log.clone()),
            api,
            options,
        });
        KITES.with(|k| k.borrow_mut().insert(key, Rc::downgrade(&inner)));
        inner
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
                        .filter(|c| c.response.is_none())
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

    /// Kite.js's state number.
    pub(crate) fn state(&self) -> u8 {
        match self.session.borrow().state() {
            State::Open => READY,
            State::Connecting => CONNECTING,
            State::Idle if !self.started.get() => NOTREADY,
            _ => CLOSED,
        }
    }

    fn is_open(&self) -> bool {
        self.session.borrow().state() == State::Open
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

    // ---- driving the session ----

    /// Does what the session says, then arms the timer for its next deadline.
    fn drive(self: &Rc<Self>) {
        let mut texts = Vec::new();
        loop {
            let output = self.session.borrow_mut().poll_output();
            let Some(output) = output else { break };
            match output {
                Output::Send(id) => {
                    if let Some(text) = self.encode_call(id) {
                        texts.push(text);
                    }
                }
                Output::Dial => {
                    self.flush(&mut texts);
                    self.dial();
                }
                Output::Close { code, reason } => {
                    self.flush(&mut texts);
                    if code == 1006 {
                        self.emit_error(&KiteError::new(ErrorKind::Disconnect, reason));
                    }
                    self.end_transport();
                }
                Output::Fail { call, error, sent } => self.settle(call, Err(error), sent),
                Output::Event(event) => self.on_session_event(event),
            }
        }
        self.flush(&mut texts);
        self.arm_timer();
    }

    fn flush(&self, texts: &mut Vec<JsValue>) {
        if texts.is_empty() {
            return;
        }
        if self.options.log.enabled(level::DEBUG) {
            for text in texts.iter() {
                self.options
                    .log
                    .at(level::DEBUG, || "Sending:".to_owned(), text);
            }
        }
        let transport = self.transport.borrow().clone();
        if let Some(t) = transport {
            t.send(std::mem::take(texts));
        } else {
            texts.clear();
        }
    }

    /// One timer, for the session's next deadline; none when it has none (in Node a pending
    /// timer keeps the process alive).
    fn arm_timer(self: &Rc<Self>) {
        let next = self.session.borrow().poll_timeout();
        let mut timer = self.timer.borrow_mut();
        // A timer due no later than the deadline stays: when it fires early, the session does
        // nothing yet and the timer is armed again. (The silence deadline moves with every
        // message; re-arming each time would cost a setTimeout per message.)
        if let (Some((at, _)), Some(next)) = (timer.as_ref(), next)
            && *at <= next
        {
            return;
        }
        *timer = next.map(|at| {
            let delay = at.as_millis().saturating_sub(now().as_millis());
            // setTimeout holds at most 2^31-1 ms; a later deadline is re-armed when it fires.
            let delay = u32::try_from(delay).map_or(2_000_000_000, |d| d.min(2_000_000_000));
            let weak = Rc::downgrade(self);
            let t = Timeout::new(delay, move || {
                if let Some(inner) = weak.upgrade() {
                    inner.timer.borrow_mut().take();
                    let renewable = inner.renewable();
                    let mut session = inner.session.borrow_mut();
                    session.set_renewable(renewable);
                    session.handle_timeout(now());
                    drop(session);
                    inner.drive();
                }
            });
            (at, t)
        });
    }

    fn on_session_event(self: &Rc<Self>, event: SessionEvent) {
        match event {
            SessionEvent::Opened => {
                for w in self.ready_waiters.borrow_mut().drain(..) {
                    let _ = w.send(());
                }
                let url = &self.options.url;
                self.options.log.at(
                    level::NOTICE,
                    || format!("Connected to Kite: {url}"),
                    &JsValue::UNDEFINED,
                );
                self.events.emit("open", &[]);
            }
            SessionEvent::Closed { code, reason } => {
                let url = &self.options.url;
                self.options.log.at(
                    level::INFO,
                    || format!("Disconnected from {url}: {code} {reason}"),
                    &JsValue::UNDEFINED,
                );
                let info = Object::new();
                error::set(&info, "code", &JsValue::from(code));
                error::set(&info, "reason", &JsValue::from_str(&reason));
                self.events.emit("close", &[info.into()]);
            }
            SessionEvent::Reconnecting { .. } => {}
            SessionEvent::GaveUp { .. } => self.events.emit("backOffFailed", &[]),
            SessionEvent::TokenExpired => self.token_expired(),
        }
    }

    // ---- connecting ----

    /// Starts connecting unless connected or connecting.
    pub(crate) fn connect(self: &Rc<Self>) {
        if matches!(self.state(), READY | CONNECTING) {
            return;
        }
        self.started.set(true);
        let t = now();
        let expiry = self.token_expiry();
        {
            let mut session = self.session.borrow_mut();
            if let Some(expires_in) = expiry {
                session.set_credentials(t, Credentials::Token { expires_in });
            }
            session.connect(t);
        }
        let url = &self.options.url;
        self.options.log.at(
            level::INFO,
            || format!("Trying to connect to {url}"),
            &JsValue::UNDEFINED,
        );
        self.drive();
    }

    /// When the current token is to be renewed, if the credentials are a token.
    fn token_expiry(&self) -> Option<Option<Duration>> {
        let auth = self.auth.borrow();
        let auth = auth.as_ref().filter(|a| a.kind == "token")?;
        let renew_before = self.options.renew_before_ms;
        Some(token::expiry(&auth.key).and_then(|exp| renew_in(exp, renew_before)))
    }

    /// Opens a transport (the session said so).
    fn dial(self: &Rc<Self>) {
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
        let connection = self.options.connection.clone();
        spawn_local(async move {
            let result = match connection {
                Some(ws) => transport::adopt(ws, handler, timeout).await,
                None => transport::establish(&url, &kinds, handler, timeout).await,
            };
            let Some(inner) = weak.upgrade() else { return };
            if inner.generation.get() != generation {
                return; // superseded by disconnect(): dropping the transport closes it
            }
            match result {
                Ok(t) => inner.opened(generation, t),
                Err(e) => {
                    inner.emit_error(&e);
                    inner.session.borrow_mut().dial_failed(now());
                    inner.drive();
                }
            }
        });
    }

    fn opened(self: &Rc<Self>, generation: u64, t: Transport) {
        let watch = t.kind() != TransportKind::RawWebSocket;
        *self.transport.borrow_mut() = Some(Rc::new(t));
        *self.conn.borrow_mut() = TreeConnection::new();
        self.cancelled.borrow_mut().clear();
        self.session.borrow_mut().opened(now(), watch);
        self.drive();
        let early = std::mem::take(&mut *self.early.borrow_mut());
        self.on_messages(generation, early);
    }

    fn on_event(self: &Rc<Self>, generation: u64, event: Event) {
        if self.generation.get() != generation {
            return;
        }
        self.session.borrow_mut().heard(now());
        match event {
            Event::Messages(msgs) if self.is_open() => self.on_messages(generation, msgs),
            Event::Messages(msgs) => self.early.borrow_mut().extend(msgs),
            Event::Heartbeat => {}
            Event::Broken(reason) => self.emit_error(&KiteError::generic(format!(
                "skipped a broken frame: {reason}"
            ))),
            Event::Closed { code, reason } => {
                self.transport.borrow_mut().take();
                self.end_transport();
                self.session.borrow_mut().closed(now(), code, &reason);
                self.drive();
            }
        }
    }

    /// The transport is gone (or being closed): what belonged to it goes. Its calls are failed
    /// by the session.
    fn end_transport(&self) {
        // Taken and counted as gone before it is closed: an accepted connection (the Node
        // server's) reports its end from inside `close()`, and that report must find the
        // transport free and its generation past.
        let transport = self.transport.borrow_mut().take();
        self.generation.set(self.generation.get() + 1);
        if let Some(t) = transport {
            t.close();
        }
        self.heartbeat.borrow_mut().take();
        self.early.borrow_mut().clear();
        // Dropping the connection frees the functions the peer could call.
        *self.conn.borrow_mut() = TreeConnection::new();
        for call in self.calls.borrow_mut().values_mut() {
            call.response = None;
        }
    }

    /// Closes the connection; with `reconnect`, connects again (after the policy's first
    /// delay when it was open).
    pub(crate) fn disconnect(self: &Rc<Self>, reconnect: bool) {
        let url = &self.options.url;
        self.options.log.at(
            level::NOTICE,
            || format!("Disconnecting from {url}"),
            &JsValue::UNDEFINED,
        );
        let t = now();
        let was = self.state();
        {
            let mut session = self.session.borrow_mut();
            session.set_reconnect(reconnect.then(|| self.options.backoff.clone()));
        }
        if !reconnect {
            self.session.borrow_mut().close(t, 1000, "disconnected");
        } else if matches!(was, READY | CONNECTING) {
            self.end_transport();
            self.session.borrow_mut().closed(t, 1000, "disconnected");
        } else {
            // Closed between reconnection attempts (or never connected): connect now.
            self.started.set(true);
            self.session.borrow_mut().connect(t);
        }
        self.drive();
    }

    /// Resolves once the kite is connected.
    pub(crate) fn ready(&self) -> impl Future<Output = ()> + 'static {
        let (tx, rx) = oneshot::channel();
        if self.is_open() {
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
        self.start_call(method, args, timeout_ms, Done::Future(Some(tx)));
        async move { rx.await.unwrap_or_else(|_| Err(KiteError::disconnect())) }
    }

    /// Calls `method` as [`Inner::call`] does, for `Kite#request`: the promise it returns is
    /// settled directly when the call ends.
    pub(crate) fn call_promise(
        self: &Rc<Self>,
        method: &str,
        args: Wire,
        timeout_ms: u32,
    ) -> Promise {
        let promise = extras::new_call();
        self.start_call(
            method,
            args,
            timeout_ms,
            Done::Promise(Some(promise.clone())),
        );
        promise
    }

    fn start_call(self: &Rc<Self>, method: &str, args: Wire, timeout_ms: u32, done: Done) {
        let timeout = (timeout_ms > 0).then(|| Duration::from_millis(timeout_ms.into()));
        let id = self.session.borrow_mut().call(now(), method, timeout);
        self.calls.borrow_mut().insert(
            id.0,
            Call {
                method: method.to_owned(),
                args: Some(args),
                response: None,
                done,
            },
        );
        self.drive();
    }

    /// The message of call `id`, which the session sends now; `None` when the connection
    /// refuses it (more functions than it keeps), and the call then fails alone.
    fn encode_call(&self, id: CallId) -> Option<JsValue> {
        let resend = self.session.borrow().may_resend(id);
        let encoded = {
            let mut calls = self.calls.borrow_mut();
            let call = calls.get_mut(&id.0)?;
            let args = if resend {
                call.args.clone()
            } else {
                call.args.take()
            };
            let args = args.unwrap_or_else(|| Wire::plain(Js(Array::new().into())));
            let head = self.head.borrow();
            match self
                .conn
                .borrow_mut()
                .request(&call.method, &head, args, id.0)
            {
                Ok((response, message)) => {
                    call.response = Some(response);
                    Ok(message.text())
                }
                Err(e) => Err(e),
            }
        };
        match encoded {
            Ok(text) => Some(text),
            Err(e) => {
                self.session.borrow_mut().refused(id, e);
                None
            }
        }
    }

    /// Settles call `id` (once); with `sent`, its response callback is forgotten.
    fn settle(&self, id: CallId, result: Result<JsValue, KiteError>, sent: bool) {
        let Some(call) = self.calls.borrow_mut().remove(&id.0) else {
            return;
        };
        if sent && let Some(response) = call.response {
            self.conn.borrow_mut().cancel(response);
            let mut cancelled = self.cancelled.borrow_mut();
            if cancelled.len() == CANCELLED_KEPT {
                cancelled.pop_front();
            }
            cancelled.push_back(response);
        }
        call.done.settle(result);
    }

    /// Whether something can renew the token: a renewer, or a `tokenExpired` listener.
    fn renewable(&self) -> bool {
        self.events.has("tokenExpired") || self.renewer.borrow().is_some()
    }

    /// A response arrived for call `id`.
    fn answered(self: &Rc<Self>, id: CallId, result: Result<JsValue, KiteError>) {
        let renewable = self.renewable();
        let answer = {
            let mut session = self.session.borrow_mut();
            session.set_renewable(renewable);
            session.answered(now(), id, result.as_ref().err())
        };
        match answer {
            Answer::Deliver => self.settle(id, result, false),
            Answer::Retry => {
                if let Some(call) = self.calls.borrow_mut().get_mut(&id.0) {
                    call.response = None;
                }
            }
            Answer::Unknown => {}
        }
        self.drive();
    }

    // ---- incoming messages ----

    fn on_messages(self: &Rc<Self>, generation: u64, msgs: Vec<JsValue>) {
        for msg in msgs {
            if self.generation.get() != generation {
                return;
            }
            self.options
                .log
                .at(level::DEBUG, || "Received:".to_owned(), &msg);
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
                    self.answered(CallId(pending), result)
                }
                Ok(TreeIncoming::Callback { function, args }) => {
                    let args = convert::args_from_wire(args, self.key, generation);
                    if let Err(e) = function.apply(&JsValue::NULL, &args) {
                        self.options
                            .log
                            .at(level::ERROR, || "a callback threw".to_owned(), &e);
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
        if generation != self.generation.get() || !self.is_open() {
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
        // As a Go kite (and kite-native) answers: an error carries the request's id, except
        // `methodNotFound`, whose id Go leaves empty.
        let result = result.map_err(|mut e| {
            if e.id.is_empty() && e.kind != ErrorKind::MethodNotFound {
                e.id = request_id();
            }
            e
        });
        let transport = self.transport.borrow().clone();
        if let Some(transport) = transport {
            let message = self.conn.borrow_mut().respond(id, result);
            transport.send(vec![message.text()]);
        }
    }

    pub(crate) fn generation(&self) -> u64 {
        self.generation.get()
    }

    /// Replaces the token and sends the calls that waited for it.
    pub(crate) fn set_token(self: &Rc<Self>, token: String) {
        let auth = Auth::new("token", token.clone());
        *self.head.borrow_mut() = Head::new(&self.identity, Some(&auth));
        *self.auth.borrow_mut() = Some(auth);
        let expires_in = self.token_expiry().flatten();
        self.session
            .borrow_mut()
            .set_credentials(now(), Credentials::Token { expires_in });
        self.events.emit("tokenSet", &[JsValue::from_str(&token)]);
        self.drive();
    }

    /// The token expires (or a call was refused with `token is expired`): tells listeners and
    /// asks the renewer; a failed renewal fails the calls that waited for it.
    fn token_expired(self: &Rc<Self>) {
        self.events.emit("tokenExpired", &[]);
        let renewer = self.renewer.borrow().clone();
        if let Some(renew) = renewer {
            let weak = Rc::downgrade(self);
            spawn_local(async move {
                let result = renew().await;
                let Some(inner) = weak.upgrade() else { return };
                match result {
                    Ok(token) => inner.set_token(token),
                    Err(e) => {
                        inner.emit_error(&e);
                        inner.session.borrow_mut().token_failed(now(), false);
                        inner.drive();
                    }
                }
            });
        }
    }
}

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

    /// Puts the methods written in JavaScript on the prototypes of `Kite` and `Kontrol`
    /// (kite-wasm/js/kite-extras.js: `tell(method, ...args)`, which an exported method cannot
    /// be as it takes rest parameters, `Kite.Error`, and Kontrol's `register`, `cancelWatcher`
    /// and `watch`), once, from a sample of each.
    pub(crate) fn install_tell() {
        thread_local!(static DONE: Cell<bool> = const { Cell::new(false) });
        if DONE.with(|d| d.replace(true)) {
            return;
        }
        let Ok(mut options) = Options::from_js(&JsValue::from_str("http://127.0.0.1/")) else {
            return;
        };
        options.auto_connect = false;
        let Ok(inner) = Inner::new(options) else {
            return;
        };
        let kite = JsValue::from(Kite {
            inner: inner.clone(),
        });
        let kontrol = JsValue::from(crate::Kontrol { kite: inner });
        extras::define_extras(
            &Object::get_prototype_of(&kite),
            &Object::get_prototype_of(&kontrol),
        );
        for sample in [kite, kontrol] {
            if let Ok(free) = js_sys::Reflect::get(&sample, &"free".into())
                && let Some(free) = free.dyn_ref::<Function>()
            {
                let _ = free.call0(&sample);
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
        self.inner.call_promise(&method, scrubbed, timeout)
    }

    /// `kite.ping` on the remote kite: resolves with `"pong"`.
    pub fn ping(&self) -> Promise {
        self.request("kite.ping".into(), None, JsValue::UNDEFINED)
    }

    /// Resolves when connected (at once if connected now); calls `callback` too, if given.
    pub fn ready(&self, callback: Option<Function>) -> Promise {
        let ready = self.inner.ready();
        crate::promise(async move {
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

/// 16 random lowercase hex characters, like the request ids of Go's errors.
fn request_id() -> String {
    (0..2)
        .map(|_| format!("{:08x}", (js_sys::Math::random() * 4_294_967_296.0) as u32))
        .collect()
}
