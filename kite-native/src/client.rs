//! [`Client`]: a connection to another kite, dialed by us or accepted by our server.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use kite_core::dnode::{FromValue, IntoArgs, Value};
#[cfg(feature = "client")]
use kite_core::session::ReconnectPolicy;
use kite_core::{Auth, ErrorKind, Kite as KiteIdentity, KiteError, RequestHead};
use tokio::sync::watch;
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

/// How long before a token's expiry it is renewed (Go's token renewer: 30 s).
const RENEW_BEFORE: Duration = Duration::from_secs(30);

pub(crate) struct ClientInner {
    pub(crate) kite: Arc<KiteInner>,
    url: String,
    remote: Mutex<KiteIdentity>,
    auth: Mutex<Option<Auth>>,
    /// This kite's identity and `auth`, encoded once for every call.
    head: Mutex<Arc<RequestHead>>,
    link: Mutex<Option<Arc<Link>>>,
    /// Bumped on every connect; `Some(true)` while connected.
    state: watch::Sender<bool>,
    reconnect: AtomicBool,
    /// A redial loop is running: callers of `dial_forever` that arrive meanwhile wait for it
    /// instead of starting their own (their sessions would replace each other).
    #[cfg(feature = "client")]
    redialing: AtomicBool,
    closed: AtomicBool,
    options: Mutex<DialOptions>,
    hooks: Mutex<Hooks>,
    token_source: Mutex<Option<TokenSource>>,
    /// The scheduled renewal of the current token.
    renewal: Mutex<Option<tokio::task::AbortHandle>>,
    /// Serialises renewals: a burst of `token is expired` answers renews once.
    renewing: tokio::sync::Mutex<()>,
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
            ..DialOptions::default()
        };
        let head = kite.head.clone();
        Client(Arc::new(ClientInner {
            kite,
            url,
            remote: Mutex::default(),
            auth: Mutex::default(),
            head: Mutex::new(head),
            link: Mutex::default(),
            state: watch::channel(false).0,
            reconnect: AtomicBool::new(false),
            #[cfg(feature = "client")]
            redialing: AtomicBool::new(false),
            closed: AtomicBool::new(false),
            options: Mutex::new(options),
            hooks: Mutex::default(),
            token_source: Mutex::default(),
            renewal: Mutex::default(),
            renewing: tokio::sync::Mutex::new(()),
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

    /// Sets the credentials sent with every call.
    pub fn set_auth(&self, auth: Option<Auth>) {
        {
            let mut slot = lock(&self.0.auth);
            *lock(&self.0.head) = Arc::new(RequestHead::new(&self.0.kite.identity, auth.as_ref()));
            *slot = auth;
        }
        // A new token expires at its own time.
        self.schedule_renewal();
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

    /// Dials the URL once.
    #[cfg(feature = "client")]
    pub async fn dial(&self) -> Result<(), KiteError> {
        if self.0.url.is_empty() {
            return Err(send_error("this client has no URL to dial"));
        }
        self.0.closed.store(false, Ordering::SeqCst);
        let options = lock(&self.0.options).clone();
        let session = transport::dial(&self.0.url, &options)
            .await
            .map_err(|e| send_error(format!("dial {}: {e}", self.0.url)))?;
        self.attach(session);
        Ok(())
    }

    /// Dials until it succeeds, and dials again whenever the session drops, with exponential
    /// backoff (500 ms, ×1.5, ±50 % jitter, at most 60 s). Resolves after the first successful
    /// dial; reconnecting goes on in the background until [`Client::close`].
    #[cfg(feature = "client")]
    pub async fn dial_forever(&self) {
        self.0.reconnect.store(true, Ordering::SeqCst);
        self.0.closed.store(false, Ordering::SeqCst);
        let mut connected = self.0.state.subscribe();
        if !self.is_connected() {
            tokio::spawn(self.clone().redial());
        }
        let _ = connected.wait_for(|c| *c).await;
    }

    #[cfg(feature = "client")]
    async fn redial(self) {
        if self.0.redialing.swap(true, Ordering::SeqCst) {
            return; // another loop is dialing
        }
        struct Done<'a>(&'a AtomicBool);
        impl Drop for Done<'_> {
            fn drop(&mut self) {
                self.0.store(false, Ordering::SeqCst);
            }
        }
        let _done = Done(&self.0.redialing);
        let mut backoff = Backoff::default();
        loop {
            if self.0.closed.load(Ordering::SeqCst) || !self.0.reconnect.load(Ordering::SeqCst) {
                return;
            }
            if self.is_connected() {
                return;
            }
            match self.dial().await {
                Ok(()) => return,
                Err(e) => {
                    let wait = backoff.next();
                    debug!(url = %self.0.url, error = %e, ?wait, "dial failed, retrying");
                    tokio::time::sleep(wait).await;
                }
            }
        }
    }

    /// Wires a fresh session to this client and starts its read loop.
    pub(crate) fn attach(&self, session: Session) {
        let Session { rx, tx, info } = session;
        let link = Link::new(tx, info, self.0.kite.config.limits.connection());
        if let Some(old) = lock(&self.0.link).replace(link.clone()) {
            old.tx
                .close(kite_core::sockjs::GO_AWAY.0, kite_core::sockjs::GO_AWAY.1);
            old.shut();
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
        let _ = self.0.state.send_replace(false);
        debug!(url = %self.0.url, session = %link.info.id, "disconnected");
        let hooks = lock(&self.0.hooks).disconnect.clone();
        for h in hooks {
            run_hook(&h, self);
        }
        if self.0.accepted {
            self.0.kite.disconnected(self);
        }
        #[cfg(feature = "client")]
        if self.0.reconnect.load(Ordering::SeqCst) && !self.0.closed.load(Ordering::SeqCst) {
            info!(url = %self.0.url, "connection lost, reconnecting");
            tokio::spawn(self.clone().redial());
        }
    }

    /// Calls `method` on the peer and waits for the answer, with no time limit (Go's `Tell`).
    ///
    /// `args` is the argument list: a tuple (`(4,)`, `("a", 2)`, `(4, callback)`), `()` for
    /// none, or a list built with [`kite_core::value!`] (`value!([{"onProgress": callback}])`):
    /// [`kite_core::Callback`]s anywhere inside are sent as functions the peer can call.
    /// Errors are [`KiteError`]s: the peer's own, or
    /// `sendError`, `disconnect`, `invalidResponse`, and `requestLimitError` when the
    /// connection already keeps as many functions for its peer as
    /// [`crate::Limits::max_callbacks`] allows.
    pub async fn tell(&self, method: &str, args: impl IntoArgs) -> Result<Value, KiteError> {
        self.call_inner(method, args.into_args()?, None).await
    }

    /// Like [`Client::tell`], failing with a `timeout` error after `timeout`.
    pub async fn tell_with_timeout(
        &self,
        method: &str,
        args: impl IntoArgs,
        timeout: Duration,
    ) -> Result<Value, KiteError> {
        self.call_inner(method, args.into_args()?, Some(timeout))
            .await
    }

    /// Like [`Client::tell`], decoding the result into `T`: any serde type, a
    /// [`kite_core::Callback`] (a function the peer answered with), or a [`Value`].
    pub async fn call<T: FromValue>(
        &self,
        method: &str,
        args: impl IntoArgs,
    ) -> Result<T, KiteError> {
        T::from_value(self.call_inner(method, args.into_args()?, None).await?)
    }

    /// Renews this client's `token` credentials with `source` (typically Kontrol's
    /// `getToken`): 30 s before the token expires, and when the peer answers a call with
    /// `token is expired` (the call is then sent again once with the new token). Hooks:
    /// [`Client::on_token_expired`], [`Client::on_token_renewed`].
    pub fn set_token_renewer<F, Fut>(&self, source: F)
    where
        F: Fn() -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<String, KiteError>> + Send + 'static,
    {
        let source: TokenSource = Arc::new(move || Box::pin(source()));
        *lock(&self.0.token_source) = Some(source);
        self.schedule_renewal();
    }

    /// Runs `f` when the token is about to expire or a peer said it has.
    pub fn on_token_expired(&self, f: impl Fn(&Client) + Send + Sync + 'static) {
        lock(&self.0.hooks).token_expired.push(Arc::new(f));
    }

    /// Runs `f` with each new token once it is in use.
    pub fn on_token_renewed(&self, f: impl Fn(&Client, &str) + Send + Sync + 'static) {
        lock(&self.0.hooks).token_renewed.push(Arc::new(f));
    }

    /// Schedules the renewal of the current token `RENEW_BEFORE` its expiry (replacing any).
    fn schedule_renewal(&self) {
        if let Some(old) = lock(&self.0.renewal).take() {
            old.abort();
        }
        if lock(&self.0.token_source).is_none() {
            return;
        }
        let Some(exp) = self.auth().filter(|a| a.kind == "token").and_then(|a| {
            jsonwebtoken::dangerous::insecure_decode::<kite_core::auth::Claims>(&a.key)
                .ok()
                .and_then(|t| t.claims.exp)
        }) else {
            return;
        };
        let now = crate::auth::unix_now();
        let wait =
            Duration::from_secs(u64::try_from(exp - now).unwrap_or(0)).saturating_sub(RENEW_BEFORE);
        let weak = Arc::downgrade(&self.0);
        let task = tokio::spawn(async move {
            tokio::time::sleep(wait).await;
            if let Some(inner) = weak.upgrade() {
                let client = Client(inner);
                // The renewal schedules the next one; the handle of this task is replaced.
                lock(&client.0.renewal).take();
                client.renew_token(None).await;
            }
        });
        *lock(&self.0.renewal) = Some(task.abort_handle());
    }

    /// Fetches and installs a new token, unless the token changed since `stale` was in use
    /// (another call renewed it already). Retries every 10 s on errors, except when the kite is
    /// gone from Kontrol (`no kites found`). `true` once a new token is in use.
    async fn renew_token(&self, stale: Option<&str>) -> bool {
        let _one = self.0.renewing.lock().await;
        let current = self.auth().map(|a| a.key);
        if stale.is_some() && current.as_deref() != stale {
            return true;
        }
        let hooks = lock(&self.0.hooks).token_expired.clone();
        for h in hooks {
            run_hook(&h, self);
        }
        loop {
            if self.0.closed.load(Ordering::SeqCst) {
                return false;
            }
            let Some(source) = lock(&self.0.token_source).clone() else {
                return false;
            };
            match source().await {
                Ok(token) => {
                    self.set_auth(Some(Auth::new("token", token.clone())));
                    let hooks = lock(&self.0.hooks).token_renewed.clone();
                    for h in hooks {
                        h(self, &token);
                    }
                    return true;
                }
                Err(e) if e.message.contains("no kites found") => {
                    info!(url = %self.0.url, error = %e, "token renewal stopped");
                    return false;
                }
                Err(e) => {
                    info!(url = %self.0.url, error = %e, "token renewal failed, retrying in 10 s");
                    if stale.is_some() {
                        // A call is waiting: let it fail now rather than in 10 s.
                        return false;
                    }
                    tokio::time::sleep(Duration::from_secs(10)).await;
                }
            }
        }
    }

    async fn call_inner(
        &self,
        method: &str,
        args: Value,
        timeout: Option<Duration>,
    ) -> Result<Value, KiteError> {
        let sent_with = self.auth().map(|a| a.key);
        match self.call_once(method, args.clone(), timeout).await {
            Err(e)
                if e.kind == ErrorKind::Authentication
                    && e.message.contains("token is expired")
                    && lock(&self.0.token_source).is_some() =>
            {
                if self.renew_token(sent_with.as_deref()).await {
                    self.call_once(method, args, timeout).await
                } else {
                    Err(e)
                }
            }
            other => other,
        }
    }

    async fn call_once(
        &self,
        method: &str,
        args: Value,
        timeout: Option<Duration>,
    ) -> Result<Value, KiteError> {
        let link = self
            .link()
            .ok_or_else(|| send_error("can't send, session is not established yet"))?;
        let head = lock(&self.0.head).clone();
        let (id, rx) = link.request(method, &head, args)?;
        let answer = match timeout {
            None => rx.await,
            Some(t) => match tokio::time::timeout(t, rx).await {
                Ok(a) => a,
                Err(_) => {
                    link.conn().cancel(id);
                    return Err(KiteError::new(
                        ErrorKind::Timeout,
                        format!("No response to {method:?} method in {t:?}"),
                    ));
                }
            },
        };
        answer.unwrap_or_else(|_| Err(KiteError::disconnect()))
    }

    /// Closes the session (with `c[3000,"Go away!"]`) and stops reconnecting. Calls in flight
    /// fail with `disconnect`.
    pub fn close(&self) {
        self.0.closed.store(true, Ordering::SeqCst);
        if let Some(renewal) = lock(&self.0.renewal).take() {
            renewal.abort();
        }
        self.0.reconnect.store(false, Ordering::SeqCst);
        if let Some(link) = self.link() {
            let (code, reason) = kite_core::sockjs::GO_AWAY;
            link.tx.close(code, reason);
            link.shut();
        }
    }

    /// Resolves when the current session (if any) has ended.
    pub async fn disconnected(&self) {
        let mut state = self.0.state.subscribe();
        let _ = state.wait_for(|c| !*c).await;
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
