//! [`Client`]: a connection to another kite, dialed by us or accepted by our server.

mod error;

pub use error::ClientError;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use kite_core::dnode::{FromValue, IntoArgs, Value};
use kite_core::session::{
    Answer, CallId, ClientSession, Credentials, Event, Output, SessionConfig, Time,
};
#[cfg(feature = "client")]
use kite_core::session::{ReconnectPolicy, State};
use kite_core::{Auth, Kite as KiteIdentity, KiteError, RequestHead};
use tokio::sync::{oneshot, watch};
use tracing::{debug, info};

use crate::kite::{KiteInner, lock, run_hook};
use crate::link::{Link, read_loop, send_error};
use crate::session::{Session, SessionInfo};
#[cfg(feature = "client")]
use crate::transport;
use crate::transport::{DialOptions, Transport};

use crate::kite::Hook;

#[derive(Default)]
struct Hooks {
    connect: Vec<Hook>,
    disconnect: Vec<Hook>,
    token_expired: Vec<Hook>,
    token_renewed: Vec<TokenHook>,
}

/// A hook run with each new token.
type TokenHook = Arc<dyn Fn(&Client, &str) + Send + Sync>;

/// Fetches a fresh token for a client (from Kontrol's `getToken`).
type TokenSource = Arc<
    dyn Fn() -> std::pin::Pin<Box<dyn Future<Output = Result<String, KiteError>> + Send>>
        + Send
        + Sync,
>;

/// The driver's half of kite-core's [`ClientSession`]: the session decides what happens to
/// the connection and its calls over time; this holds what is ours — each call's arguments and
/// the sender of its answer, the clock the session's [`Time`] counts on, and the one timer.
struct Driver {
    session: ClientSession,
    /// The origin of the session's clock.
    epoch: Instant,
    calls: HashMap<CallId, Slot>,
    /// The deadline the timer task sleeps until, if one does.
    armed: Option<Time>,
    timer: Option<tokio::task::AbortHandle>,
}

/// A call the session has not settled yet.
struct Slot {
    method: Arc<str>,
    /// Kept until the call is sent for the last time (once more after `token is expired`).
    args: Option<Value>,
    /// Its time limit, if any (for [`ClientError::Timeout`]).
    timeout: Option<Duration>,
    reply: oneshot::Sender<Result<Value, ClientError>>,
    /// The link it went out on and its response callback's id there, once sent.
    sent: Option<(Weak<Link>, u64)>,
}

impl Driver {
    fn now(&self) -> Time {
        Time::from_millis(kite_core::session::millis(self.epoch.elapsed()))
    }
}

/// What the session asked for that runs after its lock is released.
enum Deferred {
    /// Encode and send a call.
    Send {
        call: CallId,
        method: Arc<str>,
        args: Value,
        timed: bool,
    },
    Dial,
    Event(Event),
}

pub(crate) struct ClientInner {
    pub(crate) kite: Arc<KiteInner>,
    url: String,
    /// This connection's id (a UUIDv4, as Go's `Client.ID`).
    id: String,
    remote: Mutex<KiteIdentity>,
    auth: Mutex<Option<Auth>>,
    /// This kite's identity and `auth`, encoded once for every call.
    head: Mutex<Arc<RequestHead>>,
    link: Mutex<Option<Arc<Link>>>,
    /// `true` while a link is attached.
    state: watch::Sender<bool>,
    /// The session and the calls; never held while awaiting or running user code.
    driver: Mutex<Driver>,
    /// How many dials the session asked for have finished, and the last one's error; made by
    /// the first dial (a watch channel is about 400 bytes, and accepted connections never dial).
    #[cfg(feature = "client")]
    dials: std::sync::OnceLock<watch::Sender<(u64, Option<ClientError>)>>,
    options: Mutex<DialOptions>,
    hooks: Mutex<Hooks>,
    token_source: Mutex<Option<TokenSource>>,
    pub(crate) accepted: bool,
    /// Requests from the peer of a connection this kite dialed run without authentication.
    pub(crate) trusted: AtomicBool,
    /// This kite dialed this connection to a tunnel proxy it registers with
    /// ([`crate::Kite::register_to_tunnel`]): the only peer whose `kite.tunnel` it obeys.
    #[cfg(feature = "client")]
    pub(crate) tunnel_proxy: AtomicBool,
    pub(crate) first_request_seen: AtomicBool,
    /// The last token this connection's peer sent that was verified, so that the next calls
    /// carrying the same credentials skip even the verifier's cache.
    pub(crate) verified_token: Mutex<Option<VerifiedToken>>,
}

/// A verified token remembered by one connection.
pub(crate) struct VerifiedToken {
    pub(crate) verifier: Arc<crate::auth::TokenVerifier>,
    /// The verifier's [`crate::auth::TokenVerifier::generation`] when it was verified.
    pub(crate) generation: u64,
    pub(crate) auth: Arc<Auth>,
    pub(crate) username: String,
    pub(crate) until: i64,
}

/// A connection to another kite.
///
/// Made by [`crate::Kite::new_client`] (then [`Client::dial`] or [`Client::dial_forever`]), or
/// handed to handlers as [`crate::Request::client`] for the connection a call came on. Calls go
/// both ways: the peer can call this kite's methods over the same connection. Cloning is cheap.
#[derive(Clone)]
pub struct Client(pub(crate) Arc<ClientInner>);

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("url", &self.0.url)
            .field(
                "remote",
                &*self.0.remote.lock().unwrap_or_else(|e| e.into_inner()),
            )
            .finish()
    }
}

impl Client {
    pub(crate) fn new(kite: Arc<KiteInner>, url: String, accepted: bool) -> Client {
        let options = DialOptions {
            transport: kite.config.transport,
            handshake_timeout: kite.config.handshake_timeout,
            timeout: kite.config.timeout,
            max_message_size: kite.config.max_message_size,
            dial_timeout: kite.config.dial_timeout,
            ..DialOptions::default()
        };
        let head = kite.head.clone();
        let config = SessionConfig {
            // Go's `Dial` dials once; `dial_forever` turns reconnection on.
            reconnect: None,
            // The native transports notice a silent SockJS server themselves, where they see
            // its heartbeats (`DialOptions::heartbeat_timeout`), and end the session.
            silence_timeout: None,
            seed: rand::random(),
            ..SessionConfig::default()
        };
        let session = if accepted {
            ClientSession::accepted(config, Time::ZERO, false)
        } else {
            ClientSession::new(config)
        };
        Client(Arc::new(ClientInner {
            kite,
            url,
            id: uuid::Uuid::new_v4().to_string(),
            remote: Mutex::default(),
            auth: Mutex::default(),
            head: Mutex::new(head),
            link: Mutex::default(),
            state: watch::channel(false).0,
            driver: Mutex::new(Driver {
                session,
                epoch: Instant::now(),
                calls: HashMap::new(),
                armed: None,
                timer: None,
            }),
            #[cfg(feature = "client")]
            dials: std::sync::OnceLock::new(),
            options: Mutex::new(options),
            hooks: Mutex::default(),
            token_source: Mutex::default(),
            accepted,
            trusted: AtomicBool::new(false),
            #[cfg(feature = "client")]
            tunnel_proxy: AtomicBool::new(false),
            first_request_seen: AtomicBool::new(false),
            verified_token: Mutex::new(None),
        }))
    }

    /// Whether `self` and `other` are the same connection (clones of one client).
    pub fn ptr_eq(&self, other: &Client) -> bool {
        Arc::ptr_eq(&self.0, &other.0)
    }

    /// This connection's id, a UUIDv4 made with it (Go's `Client.ID`): what a signalling relay
    /// knows the peer by ([`crate::Config::use_webrtc`]).
    pub fn id(&self) -> &str {
        &self.0.id
    }

    /// The time limit of this kite's calls (`Config::timeout`).
    pub(crate) fn config_timeout(&self) -> Duration {
        self.0.kite.config.timeout
    }

    /// The URL this client dials (empty for accepted connections).
    pub fn url(&self) -> &str {
        &self.0.url
    }

    /// The peer's identity: set from the first request on accepted connections, or by the
    /// creator (e.g. from Kontrol's `getKites`).
    pub fn remote(&self) -> KiteIdentity {
        lock(&self.0.remote).clone()
    }

    /// Sets the peer's identity.
    pub fn set_remote(&self, kite: KiteIdentity) {
        *lock(&self.0.remote) = kite;
    }

    /// Sets the credentials sent with every call. A `token` is renewed
    /// [`SessionConfig::renew_before`] its expiry when a renewer is set
    /// ([`Client::set_token_renewer`]).
    pub fn set_auth(&self, auth: Option<Auth>) {
        let credentials = credentials(auth.as_ref());
        {
            let mut slot = lock(&self.0.auth);
            *lock(&self.0.head) = Arc::new(RequestHead::new(&self.0.kite.identity, auth.as_ref()));
            *slot = auth;
        }
        self.drive(|d, now| d.session.set_credentials(now, credentials));
    }

    /// The credentials sent with every call.
    pub fn auth(&self) -> Option<Auth> {
        lock(&self.0.auth).clone()
    }

    /// Trusts the peer of this connection: its requests to this kite run without
    /// authentication (their `username` is the one the caller declares). Only for connections
    /// this kite dials itself, to a peer it knows — the Kontrol it registers with, which calls
    /// `kite.heartbeat` back, is trusted this way. Go kite trusts every connection it dialed;
    /// here it is off unless asked for, and has no effect on accepted connections.
    pub fn set_trusted(&self, trusted: bool) {
        self.0.trusted.store(trusted, Ordering::SeqCst);
    }

    /// Whether requests from this connection's peer skip authentication (see
    /// [`Client::set_trusted`]).
    pub fn is_trusted(&self) -> bool {
        !self.0.accepted && self.0.trusted.load(Ordering::SeqCst)
    }

    /// Chooses the transport for the next dial (default: the kite's `Config::transport`).
    pub fn set_transport(&self, transport: Transport) {
        lock(&self.0.options).transport = transport;
    }

    /// Changes the dial options used by the next dial.
    pub fn set_dial_options(&self, options: DialOptions) {
        *lock(&self.0.options) = options;
    }

    /// The transport of the current session, if connected.
    pub fn transport(&self) -> Option<crate::session::TransportKind> {
        self.link().map(|l| l.info.transport)
    }

    /// Information about the current session, if connected.
    pub fn session_info(&self) -> Option<SessionInfo> {
        self.link().map(|l| l.info.clone())
    }

    /// Whether a session is open.
    pub fn is_connected(&self) -> bool {
        self.link().is_some_and(|l| !l.is_closed())
    }

    pub(crate) fn link(&self) -> Option<Arc<Link>> {
        lock(&self.0.link).clone()
    }

    /// Runs `f` each time a session opens.
    pub fn on_connect(&self, f: impl Fn(&Client) + Send + Sync + 'static) {
        lock(&self.0.hooks).connect.push(Arc::new(f));
    }

    /// Runs `f` each time a session ends.
    pub fn on_disconnect(&self, f: impl Fn(&Client) + Send + Sync + 'static) {
        lock(&self.0.hooks).disconnect.push(Arc::new(f));
    }

    /// Dials the URL once, and resolves when the session is open, or with the dial's error
    /// ([`ClientError::Dial`], which keeps the transport's [`transport::DialError`];
    /// [`ClientError::Local`] for a client with no URL, such as an accepted one).
    /// Calls made before (or while it dials) wait for it and go out in order once it opens;
    /// if it fails they fail with [`ClientError::Disconnected`], unless
    /// [`Client::dial_forever`] turned reconnection on. A client that is connected already
    /// stays as it is.
    #[cfg(feature = "client")]
    pub async fn dial(&self) -> Result<(), ClientError> {
        if self.0.url.is_empty() {
            return Err(ClientError::Local(send_error(
                "this client has no URL to dial",
            )));
        }
        let mut dials = self.dials().subscribe();
        let before = dials.borrow_and_update().0;
        let state = self.drive(|d, now| {
            d.session.connect(now);
            d.session.state()
        });
        if state == State::Open {
            return Ok(());
        }
        match dials.wait_for(|(n, _)| *n > before).await {
            Ok(outcome) => match &outcome.1 {
                None => Ok(()),
                Some(e) => Err(e.clone()),
            },
            Err(_) => Err(ClientError::Local(send_error(
                "can't send, client is closed",
            ))),
        }
    }

    /// Like [`Client::dial`], failing with [`ClientError::Dial`] holding
    /// [`transport::DialError::Timeout`] if the dial (every transport it tries included) has
    /// not opened a session within `limit` (Go's `Client.DialTimeout`, whose bound Go never
    /// applies). The bound stays for this client's later dials, reconnections included
    /// ([`crate::transport::DialOptions::dial_timeout`]).
    #[cfg(feature = "client")]
    pub async fn dial_timeout(&self, limit: Duration) -> Result<(), ClientError> {
        lock(&self.0.options).dial_timeout = Some(limit);
        self.dial().await
    }

    /// Dials until it succeeds, and dials again whenever the session drops, by kite-core's
    /// [`ReconnectPolicy::go`] (500 ms, ×1.5, ±50 % jitter, at most 60 s, forever; kite-wasm's
    /// `Kite` has the same default). Resolves after the first successful dial; reconnecting
    /// goes on in the background until [`Client::close`]. Calls made while it is not
    /// connected wait for the connection.
    #[cfg(feature = "client")]
    pub async fn dial_forever(&self) {
        self.dial_forever_with(ReconnectPolicy::go()).await;
    }

    /// Like [`Client::dial_forever`], with another reconnection policy (such as
    /// [`ReconnectPolicy::kite_js`], which gives up after 50 attempts; calls then fail).
    #[cfg(feature = "client")]
    pub async fn dial_forever_with(&self, policy: ReconnectPolicy) {
        let mut connected = self.0.state.subscribe();
        self.drive(|d, now| {
            d.session.set_reconnect(Some(policy));
            d.session.connect(now);
        });
        let _ = connected.wait_for(|c| *c).await;
    }

    /// How many dials have finished, and the last one's error.
    #[cfg(feature = "client")]
    fn dials(&self) -> &watch::Sender<(u64, Option<ClientError>)> {
        self.0.dials.get_or_init(|| watch::channel((0, None)).0)
    }

    /// One dial the session asked for.
    #[cfg(feature = "client")]
    async fn dial_once(self) {
        let options = lock(&self.0.options).clone();
        let outcome = match transport::dial(&self.0.url, &options).await {
            Ok(session) => {
                if !self.attach_with(session, |s, now| s.opened(now, false)) {
                    debug!(url = %self.0.url, "a dial finished after the session stopped waiting for it");
                }
                None
            }
            Err(e) => {
                let e = ClientError::Dial {
                    url: self.0.url.clone(),
                    source: Arc::new(e),
                };
                debug!(url = %self.0.url, error = %e, "dial failed");
                self.drive(|d, now| d.session.dial_failed(now));
                Some(e)
            }
        };
        self.dials().send_modify(|(n, last)| {
            *n += 1;
            *last = outcome;
        });
    }

    /// Wires a connection our server accepted to this client and starts its read loop.
    pub(crate) fn attach(&self, session: Session) {
        self.attach_with(session, |_, _| true);
    }

    /// Wires a fresh session to this client if `open` (the session's say) agrees, and starts
    /// its read loop; otherwise closes it.
    fn attach_with(
        &self,
        session: Session,
        open: impl FnOnce(&mut ClientSession, Time) -> bool,
    ) -> bool {
        let Session { rx, tx, info } = session;
        let link = Link::new(tx, info, self.0.kite.config.limits.connection());
        let (code, reason) = kite_core::sockjs::GO_AWAY;
        let taken = self.drive(|d, now| {
            // The link is in place before the session sends the calls that waited.
            let taken = open(&mut d.session, now);
            if taken && let Some(old) = lock(&self.0.link).replace(link.clone()) {
                old.tx.close(code, reason);
                old.shut();
            }
            taken
        });
        if !taken {
            link.tx.close(code, reason);
            link.shut();
            return false;
        }
        let _ = self.0.state.send_replace(true);
        debug!(url = %self.0.url, transport = %link.info.transport, session = %link.info.id, "connected");
        let hooks = lock(&self.0.hooks).connect.clone();
        for h in hooks {
            run_hook(&h, self);
        }
        let client = self.clone();
        let dispatch: Arc<dyn crate::link::Dispatch> = Arc::new(client.clone());
        tokio::spawn(async move {
            read_loop(link.clone(), rx, dispatch).await;
            client.detached(&link);
        });
        true
    }

    fn detached(&self, link: &Arc<Link>) {
        let current = {
            let mut slot = lock(&self.0.link);
            if slot.as_ref().is_some_and(|l| Arc::ptr_eq(l, link)) {
                slot.take();
                true
            } else {
                false
            }
        };
        if !current {
            return;
        }
        debug!(url = %self.0.url, session = %link.info.id, "disconnected");
        // The calls it carried fail with `disconnect`; the session may dial again. The session
        // learns it before anyone waiting in `disconnected()` is woken: a `dial()` made then
        // must not find the session still open and return at once without a connection.
        self.drive(|d, now| d.session.closed(now, 1006, "connection lost"));
        // Unless a new link came in the meantime.
        let connected = lock(&self.0.link).is_some();
        self.0
            .state
            .send_if_modified(|up| std::mem::replace(up, connected) != connected);
        let hooks = lock(&self.0.hooks).disconnect.clone();
        for h in hooks {
            run_hook(&h, self);
        }
        if self.0.accepted {
            self.0.kite.disconnected(self);
        }
    }

    /// Calls `method` on the peer and waits for the answer, with no time limit (Go's `Tell`).
    ///
    /// `args` is the argument list: a tuple (`(4,)`, `("a", 2)`, `(4, callback)`), `()` for
    /// none, or a list built with [`kite_core::value!`] (`value!([{"onProgress": callback}])`):
    /// [`kite_core::Callback`]s anywhere inside are sent as functions the peer can call.
    /// A call made while the client is dialing or waiting to reconnect waits for the
    /// connection (so does one made before the first dial, and after [`Client::close`], until
    /// the next dial); one made on a connection that ended for good fails at once.
    ///
    /// Errors are [`ClientError`]s: the peer's own ([`ClientError::Remote`], or
    /// [`ClientError::Authentication`] when it refused our credentials),
    /// [`ClientError::Disconnected`] when the connection ended before the answer (or had
    /// ended for good, or reconnection gave up), [`ClientError::Protocol`] for an invalid
    /// response, and [`ClientError::Local`] when the call could not be sent: `sendError`,
    /// arguments that could not be encoded, or `requestLimitError` when the connection
    /// already keeps as many functions for its peer as [`crate::Limits::max_callbacks`]
    /// allows. [`ClientError::kite_error`] is the wire error to forward.
    pub async fn tell(&self, method: &str, args: impl IntoArgs) -> Result<Value, ClientError> {
        let args = args.into_args().map_err(ClientError::Local)?;
        self.call_inner(method, args, None).await
    }

    /// Like [`Client::tell`], failing with [`ClientError::Timeout`] after `timeout` (waiting
    /// for the connection included).
    pub async fn tell_with_timeout(
        &self,
        method: &str,
        args: impl IntoArgs,
        timeout: Duration,
    ) -> Result<Value, ClientError> {
        let args = args.into_args().map_err(ClientError::Local)?;
        self.call_inner(method, args, Some(timeout)).await
    }

    /// Like [`Client::tell`], decoding the result into `T`: any serde type, a
    /// [`kite_core::Callback`] (a function the peer answered with), or a [`Value`]. A result
    /// that does not decode into `T` is a [`ClientError::Protocol`] error.
    pub async fn call<T: FromValue>(
        &self,
        method: &str,
        args: impl IntoArgs,
    ) -> Result<T, ClientError> {
        let value = self.tell(method, args).await?;
        T::from_value(value).map_err(ClientError::Protocol)
    }

    /// Renews this client's `token` credentials with `source` (typically Kontrol's
    /// `getToken`): [`SessionConfig::renew_before`] (30 s) before the token expires, and when
    /// the peer answers a call with `token is expired` (the call is then sent again once with
    /// the new token, if one comes within [`SessionConfig::token_wait`]). A failed renewal is
    /// tried again after [`SessionConfig::renew_retry`], except when the kite is gone from
    /// Kontrol (`no kites found`). Hooks: [`Client::on_token_expired`],
    /// [`Client::on_token_renewed`].
    pub fn set_token_renewer<F, Fut>(&self, source: F)
    where
        F: Fn() -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<String, KiteError>> + Send + 'static,
    {
        let source: TokenSource = Arc::new(move || Box::pin(source()));
        *lock(&self.0.token_source) = Some(source);
        self.drive(|d, _| d.session.set_renewable(true));
    }

    /// Runs `f` when the token is about to expire or a peer said it has.
    pub fn on_token_expired(&self, f: impl Fn(&Client) + Send + Sync + 'static) {
        lock(&self.0.hooks).token_expired.push(Arc::new(f));
    }

    /// Runs `f` with each new token once it is in use.
    pub fn on_token_renewed(&self, f: impl Fn(&Client, &str) + Send + Sync + 'static) {
        lock(&self.0.hooks).token_renewed.push(Arc::new(f));
    }

    /// The session asked for a new token: fetch it with the renewer, if there is one.
    async fn renew_token(self) {
        let Some(source) = lock(&self.0.token_source).clone() else {
            return;
        };
        match source().await {
            Ok(token) => {
                self.set_auth(Some(Auth::new("token", token.clone())));
                let hooks = lock(&self.0.hooks).token_renewed.clone();
                for h in hooks {
                    h(&self, &token);
                }
            }
            Err(e) => {
                let retry = !e.message.contains("no kites found");
                info!(url = %self.0.url, error = %e, retry, "token renewal failed");
                self.drive(|d, now| d.session.token_failed(now, retry));
            }
        }
    }

    async fn call_inner(
        &self,
        method: &str,
        args: Value,
        timeout: Option<Duration>,
    ) -> Result<Value, ClientError> {
        let (reply, answer) = oneshot::channel();
        self.drive(|d, now| {
            let id = d.session.call(now, method, timeout);
            d.calls.insert(
                id,
                Slot {
                    method: method.into(),
                    args: Some(args),
                    timeout,
                    reply,
                    sent: None,
                },
            );
        });
        answer
            .await
            .unwrap_or_else(|_| Err(ClientError::Disconnected(KiteError::disconnect())))
    }

    /// An answer to `call` came from the peer.
    pub(crate) fn answered(&self, call: CallId, result: Result<Value, KiteError>) {
        let slot =
            self.drive(
                |d, now| match d.session.answered(now, call, result.as_ref().err()) {
                    Answer::Deliver => d.calls.remove(&call),
                    Answer::Retry | Answer::Unknown => None,
                },
            );
        if let Some(slot) = slot {
            let result =
                result.map_err(|e| ClientError::of_call(e, &slot.method, slot.timeout, true));
            let _ = slot.reply.send(result);
        }
    }

    /// Closes the session (with `c[3000,"Go away!"]`) and stops reconnecting. Calls in flight
    /// fail with [`ClientError::Disconnected`]; calls made afterwards wait for the next dial
    /// (on an accepted connection, which is never dialed again, they fail).
    pub fn close(&self) {
        let (code, reason) = kite_core::sockjs::GO_AWAY;
        self.drive(|d, now| {
            d.session.set_reconnect(None);
            d.session.close(now, code, reason);
        });
        // A link the session did not count as open (it was being replaced) goes too.
        if let Some(link) = self.link() {
            link.tx.close(code, reason);
            link.shut();
        }
    }

    /// Resolves when the current session (if any) has ended.
    pub async fn disconnected(&self) {
        let mut state = self.0.state.subscribe();
        let _ = state.wait_for(|c| !*c).await;
    }

    /// Tells the session something (`input`, with the current time), does what it says, and
    /// arms the timer for its next deadline. What runs user code or spawns (hooks, dials,
    /// token renewal) runs after the lock is released.
    fn drive<R>(&self, input: impl FnOnce(&mut Driver, Time) -> R) -> R {
        let mut deferred = Vec::new();
        let result = {
            let mut d = lock(&self.0.driver);
            let now = d.now();
            let result = input(&mut d, now);
            self.perform(&mut d, &mut deferred);
            self.arm(&mut d);
            result
        };
        for action in deferred {
            match action {
                Deferred::Send {
                    call,
                    method,
                    args,
                    timed,
                } => self.send(call, &method, args, timed),
                Deferred::Dial => self.start_dial(),
                Deferred::Event(event) => self.event(event),
            }
        }
        result
    }

    /// Does what the session says, until it says nothing more.
    fn perform(&self, d: &mut Driver, deferred: &mut Vec<Deferred>) {
        while let Some(output) = d.session.poll_output() {
            match output {
                Output::Send(call) => {
                    if let Some(send) = self.take_for_sending(d, call) {
                        deferred.push(send);
                    }
                }
                Output::Fail { call, error, sent } => {
                    if let Some(slot) = d.calls.remove(&call) {
                        if sent && let Some((link, id)) = &slot.sent {
                            // A late answer to it is expected, not the peer's fault.
                            if let Some(link) = link.upgrade() {
                                link.conn().cancel(*id);
                            }
                        }
                        let error = ClientError::of_call(error, &slot.method, slot.timeout, false);
                        let _ = slot.reply.send(Err(error));
                    }
                }
                Output::Close { code, reason } => {
                    if let Some(link) = self.link() {
                        link.tx.close(code, &reason);
                        link.shut();
                    }
                }
                Output::Dial => deferred.push(Deferred::Dial),
                Output::Event(event) => deferred.push(Deferred::Event(event)),
            }
        }
    }

    /// What it takes to send `call`: its arguments (a copy while it may be sent again after
    /// `token is expired`). Encoding and sending happen after the session's lock is released,
    /// so that callers and the read loop do not wait for each other's encoding.
    fn take_for_sending(&self, d: &mut Driver, call: CallId) -> Option<Deferred> {
        let resend = d.session.may_resend(call);
        let slot = d.calls.get_mut(&call)?;
        let args = if resend {
            slot.args.clone()
        } else {
            slot.args.take()
        };
        Some(Deferred::Send {
            call,
            method: slot.method.clone(),
            args: args.unwrap_or_default(),
            timed: slot.timeout.is_some(),
        })
    }

    /// Encodes and sends `call` on the current link. A call with a time limit remembers its
    /// response callback, so that the session can drop it when the limit passes first.
    fn send(&self, call: CallId, method: &str, args: Value, timed: bool) {
        let Some(link) = self.link() else {
            self.drive(|d, _| {
                d.session
                    .refused(call, send_error("can't send, client is closed"))
            });
            return;
        };
        let head = lock(&self.0.head).clone();
        match link.request(method, &head, args, call) {
            Ok(id) if timed => {
                let mut d = lock(&self.0.driver);
                match d.calls.get_mut(&call) {
                    Some(slot) => slot.sent = Some((Arc::downgrade(&link), id)),
                    // Settled while it was being sent (its limit passed): nothing waits.
                    None => drop(link.conn().cancel(id)),
                }
            }
            Ok(_) => {}
            Err(e) => self.drive(|d, _| d.session.refused(call, e)),
        }
    }

    /// Arms the one timer for the session's next deadline, unless it is armed for that time or
    /// sooner (then it wakes, finds nothing due, and arms again).
    fn arm(&self, d: &mut Driver) {
        let Some(at) = d.session.poll_timeout() else {
            return;
        };
        if d.armed.is_some_and(|armed| armed <= at) {
            return;
        }
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        if let Some(timer) = d.timer.take() {
            timer.abort();
        }
        let when = tokio::time::Instant::from_std(d.epoch + Duration::from_millis(at.as_millis()));
        let client = Arc::downgrade(&self.0);
        d.armed = Some(at);
        let task = runtime.spawn(async move {
            tokio::time::sleep_until(when).await;
            if let Some(inner) = client.upgrade() {
                Client(inner).drive(|d, now| {
                    d.armed = None;
                    d.timer = None;
                    d.session.handle_timeout(now);
                });
            }
        });
        d.timer = Some(task.abort_handle());
    }

    fn start_dial(&self) {
        #[cfg(feature = "client")]
        if !self.0.url.is_empty() {
            tokio::spawn(self.clone().dial_once());
            return;
        }
        // Nothing to dial with: the attempt fails at once.
        self.drive(|d, now| d.session.dial_failed(now));
    }

    /// What the session tells the user.
    fn event(&self, event: Event) {
        match event {
            Event::Reconnecting { attempt, delay } => {
                info!(url = %self.0.url, attempt, ?delay, "connection lost or dial failed, dialing again");
            }
            Event::GaveUp { attempts } => {
                info!(url = %self.0.url, attempts, "no more reconnection attempts");
            }
            Event::TokenExpired => {
                let hooks = lock(&self.0.hooks).token_expired.clone();
                for h in hooks {
                    run_hook(&h, self);
                }
                if lock(&self.0.token_source).is_some() {
                    tokio::spawn(self.clone().renew_token());
                }
            }
            // The connect and disconnect hooks run where the link is attached and detached.
            Event::Opened | Event::Closed { .. } => {}
        }
    }
}

/// How the session times `auth`: a `token` expires at its `exp` claim (read, not verified:
/// only its issuer can verify it).
fn credentials(auth: Option<&Auth>) -> Credentials {
    match auth {
        Some(a) if a.kind == "token" => {
            let exp = jsonwebtoken::dangerous::insecure_decode::<kite_core::auth::Claims>(&a.key)
                .ok()
                .and_then(|t| t.claims.exp);
            let now = crate::auth::unix_now();
            Credentials::Token {
                expires_in: exp
                    .map(|exp| Duration::from_secs(u64::try_from(exp - now).unwrap_or(0))),
            }
        }
        _ => Credentials::Lasting,
    }
}

/// The delays between dials: kite-core's [`ReconnectPolicy`] with Go's parameters (500 ms,
/// ×1.5, ±50 %, at most 60 s, forever), counting attempts.
#[cfg(feature = "client")]
#[derive(Debug, Default)]
pub(crate) struct Backoff {
    policy: ReconnectPolicy,
    attempt: u32,
}

#[cfg(feature = "client")]
impl Backoff {
    pub(crate) fn next(&mut self) -> Duration {
        self.attempt = self.attempt.saturating_add(1);
        // Go's policy has no attempt limit; were one set, the longest delay is kept.
        self.policy
            .delay(self.attempt, rand::random_range(0.0..1.0))
            .unwrap_or(self.policy.max_delay)
    }
}
