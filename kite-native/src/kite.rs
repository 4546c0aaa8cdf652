//! [`Kite`]: a process that serves methods and calls other kites.

use std::collections::HashMap;
use std::future::Future;
#[cfg(feature = "server")]
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, RwLock};

use futures_util::FutureExt;
use kite_core::dnode::{IntoValue, Value};
use kite_core::envelope::response_args;
use kite_core::{ErrorKind, Kite as KiteIdentity, KiteError};
#[cfg(feature = "server")]
use tokio::net::TcpListener;
#[cfg(feature = "server")]
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
#[cfg(feature = "server")]
use tracing::info;
use tracing::{debug, warn};

use crate::auth::{KiteKeyVerifier, TokenVerifier};
use crate::client::Client;
use crate::config::{Config, ConfigError};
use crate::link::{Dispatch, Link};
use crate::method::{BoxFuture, DynHandler, FinalFn, Method, MethodHandling, Plan, into_handler};
use crate::request::Request;
#[cfg(feature = "server")]
use crate::server::{ServeOptions, Server};
use crate::session::Session;
#[cfg(feature = "server")]
use crate::sockjs::{SockJsOptions, SockJsServer};

/// Checks credentials of one type and returns the authenticated username.
pub type Authenticator = Arc<dyn Fn(Request) -> BoxFuture<Result<String, KiteError>> + Send + Sync>;

pub(crate) type Hook = Arc<dyn Fn(&Client) + Send + Sync>;

#[derive(Default)]
struct KiteHooks {
    connect: Vec<Hook>,
    first_request: Vec<Hook>,
    disconnect: Vec<Hook>,
}

#[derive(Default)]
struct Chain {
    pre: Vec<DynHandler>,
    post: Vec<DynHandler>,
    finals: Vec<FinalFn>,
    handling: MethodHandling,
}

/// The credentials a kite holds, which a key rotation replaces.
struct Keys {
    kite_key: String,
    kontrol_key: String,
}

pub(crate) struct KiteInner {
    pub(crate) identity: Arc<KiteIdentity>,
    /// The request head of this kite's calls without credentials, shared by its clients.
    pub(crate) head: Arc<kite_core::RequestHead>,
    pub(crate) config: Config,
    methods: RwLock<HashMap<String, Method>>,
    chain: RwLock<Chain>,
    authenticators: RwLock<HashMap<String, Authenticator>>,
    token: RwLock<Option<Arc<TokenVerifier>>>,
    kite_key: RwLock<Option<Arc<KiteKeyVerifier>>>,
    /// The kite key this kite presents and the Kontrol key it trusts, after rotations.
    keys: RwLock<Keys>,
    /// The connection to Kontrol, once used.
    pub(crate) kontrol: Mutex<Option<Client>>,
    /// The URL this kite registered with Kontrol, registered again on reconnects.
    #[cfg(feature = "client")]
    pub(crate) registered_url: Mutex<Option<String>>,
    hooks: Mutex<KiteHooks>,
    #[cfg(feature = "server")]
    routes: Mutex<axum::Router>,
    pub(crate) shutdown: CancellationToken,
    #[cfg(feature = "server")]
    local_addr: watch::Sender<Option<SocketAddr>>,
    accepted: Mutex<HashMap<usize, Client>>,
    pub(crate) heartbeat: Mutex<Option<tokio::task::JoinHandle<()>>>,
    /// Connections to the reverse and tunnel proxies this kite registered with.
    pub(crate) proxies: Mutex<Vec<Client>>,
    /// What the peers of this kite's SockJS servers hold, against `Config::limits`.
    #[cfg(feature = "server")]
    occupancy: crate::sockjs::Occupancy,
}

/// Errors creating or running a kite.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The name or version is not valid.
    #[error("invalid kite identity: {0}")]
    Identity(#[from] kite_core::identity::IdentityError),
    /// A `KITE_*` variable is invalid.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// Binding or serving failed.
    #[error("server: {0}")]
    Io(#[from] std::io::Error),
    /// `Config::kontrol_key` is not a usable public key.
    #[error(transparent)]
    KontrolKey(#[from] crate::auth::KeyError),
    /// A kite key could not be parsed or written.
    #[error(transparent)]
    KiteKey(#[from] crate::kitekey::KiteKeyError),
}

/// A kite: serves methods over SockJS at `/kite` and dials other kites.
///
/// ```no_run
/// # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
/// use kite_native::{Kite, Request};
///
/// let kite = Kite::new("math", "1.0.0")?;
/// kite.handle("square", |req: Request| async move {
///     let n: f64 = req.arg()?;
///     Ok::<_, kite_native::KiteError>(n * n)
/// })
/// .disable_authentication();
/// kite.run().await?;
/// # Ok(()) }
/// ```
///
/// Cloning is cheap; clones are the same kite.
#[derive(Clone)]
pub struct Kite(pub(crate) Arc<KiteInner>);

impl std::fmt::Debug for Kite {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Kite")
            .field("identity", &self.0.identity.to_string())
            .finish()
    }
}

pub(crate) fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// 16 random lowercase hex characters, like Go's request ids.
pub(crate) fn request_id() -> String {
    hex::encode(rand::random::<[u8; 8]>())
}

fn hostname() -> String {
    sysinfo::System::host_name().unwrap_or_else(|| "localhost".into())
}

impl Kite {
    /// A kite named `name` at `version` (three dot-separated parts), configured from the
    /// defaults and `KITE_*` environment variables ([`Config::from_env`]).
    pub fn new(name: &str, version: &str) -> Result<Kite, Error> {
        Self::with_config(name, version, Config::from_env()?)
    }

    /// A kite with an explicit configuration.
    pub fn with_config(name: &str, version: &str, config: Config) -> Result<Kite, Error> {
        if name.is_empty() {
            return Err(kite_core::identity::IdentityError::EmptyField("name").into());
        }
        kite_core::identity::validate_version(version)?;
        let identity = KiteIdentity {
            name: name.to_owned(),
            username: config.username.clone(),
            id: if config.id.is_empty() {
                uuid::Uuid::new_v4().to_string()
            } else {
                config.id.clone()
            },
            environment: config.environment.clone(),
            region: config.region.clone(),
            version: version.to_owned(),
            hostname: hostname(),
        };
        let identity = Arc::new(identity);
        let token = if config.kontrol_key.is_empty() {
            None
        } else {
            Some(Arc::new(TokenVerifier::new(
                &config.kontrol_user,
                &config.kontrol_key,
                identity.clone(),
            )?))
        };
        let kite_key = (!config.kontrol_key.is_empty()).then(|| {
            Arc::new(KiteKeyVerifier::trusting(&config.kontrol_key).with_ttl(config.verify_ttl))
        });
        let kite = Kite(Arc::new(KiteInner {
            head: Arc::new(kite_core::RequestHead::new(&identity, None)),
            identity,
            token: RwLock::new(token),
            kite_key: RwLock::new(kite_key),
            kontrol: Mutex::default(),
            #[cfg(feature = "client")]
            registered_url: Mutex::default(),
            keys: RwLock::new(Keys {
                kite_key: config.kite_key.clone(),
                kontrol_key: config.kontrol_key.trim().to_owned(),
            }),
            config,
            methods: RwLock::default(),
            chain: RwLock::default(),
            authenticators: RwLock::default(),
            hooks: Mutex::default(),
            #[cfg(feature = "server")]
            routes: Mutex::new(axum::Router::new()),
            shutdown: CancellationToken::new(),
            #[cfg(feature = "server")]
            local_addr: watch::channel(None).0,
            accepted: Mutex::default(),
            heartbeat: Mutex::default(),
            proxies: Mutex::default(),
            #[cfg(feature = "server")]
            occupancy: crate::sockjs::Occupancy::new(),
        }));
        crate::builtins::register(&kite);
        Ok(kite)
    }

    /// This kite's identity.
    pub fn identity(&self) -> &KiteIdentity {
        &self.0.identity
    }

    /// This kite's configuration.
    pub fn config(&self) -> &Config {
        &self.0.config
    }

    /// Serves `name` with an async handler. Re-registering a name replaces it. The returned
    /// [`Method`] sets options: authentication, throttling, pre/post/final handlers.
    /// Methods require authentication unless `Config::disable_authentication` is set or
    /// [`Method::disable_authentication`] is called ([`Method::require_authentication`] overrides
    /// both).
    pub fn handle<F, Fut, T, E>(&self, name: &str, f: F) -> Method
    where
        F: Fn(Request) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<T, E>> + Send + 'static,
        T: IntoValue + 'static,
        E: Into<KiteError> + 'static,
    {
        let method = Method::new(name, into_handler(f), self.0.config.disable_authentication);
        self.0
            .methods
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .insert(name.to_owned(), method.clone());
        method
    }

    /// The method registered as `name`.
    pub fn method(&self, name: &str) -> Option<Method> {
        self.0
            .methods
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(name)
            .cloned()
    }

    /// Runs `f` before every method's handler (after the method's own pre handlers).
    pub fn pre_handle<F, Fut, T, E>(&self, f: F)
    where
        F: Fn(Request) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<T, E>> + Send + 'static,
        T: IntoValue + 'static,
        E: Into<KiteError> + 'static,
    {
        self.0
            .chain
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .pre
            .push(into_handler(f));
    }

    /// Runs `f` after every method's handler (after the method's own post handlers).
    pub fn post_handle<F, Fut, T, E>(&self, f: F)
    where
        F: Fn(Request) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<T, E>> + Send + 'static,
        T: IntoValue + 'static,
        E: Into<KiteError> + 'static,
    {
        self.0
            .chain
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .post
            .push(into_handler(f));
    }

    /// Runs `f` last for every method, after the method's own final functions.
    pub fn final_func<F>(&self, f: F)
    where
        F: Fn(&Request, Result<Value, KiteError>) -> Result<Value, KiteError>
            + Send
            + Sync
            + 'static,
    {
        self.0
            .chain
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .finals
            .push(Arc::new(f));
    }

    /// Chooses which result a chain returns (default [`MethodHandling::ReturnMethod`]).
    pub fn set_method_handling(&self, handling: MethodHandling) {
        self.0
            .chain
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .handling = handling;
    }

    /// Accepts credentials whose `authentication.type` is `kind`: `f` returns the
    /// authenticated username or an error.
    pub fn authenticator<F, Fut>(&self, kind: &str, f: F)
    where
        F: Fn(Request) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<String, KiteError>> + Send + 'static,
    {
        let a: Authenticator = Arc::new(move |r| Box::pin(f(r)));
        self.0
            .authenticators
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .insert(kind.to_owned(), a);
    }

    /// Checks `token` credentials with `verifier` from now on (replacing the one made from
    /// `Config::kontrol_key`, e.g. after a key rotation, or to change its leeway).
    pub fn set_token_verifier(&self, verifier: TokenVerifier) {
        *self.0.token.write().unwrap_or_else(|e| e.into_inner()) = Some(Arc::new(verifier));
    }

    /// Checks `kiteKey` credentials with `verifier` from now on (replacing the one made from
    /// `Config::kontrol_key`): for example one whose [`crate::auth::TrustFn`] trusts several
    /// Kontrol keys.
    pub fn set_kite_key_verifier(&self, verifier: KiteKeyVerifier) {
        *self.0.kite_key.write().unwrap_or_else(|e| e.into_inner()) = Some(Arc::new(verifier));
    }

    /// The verifier of `kiteKey` credentials, if the kite trusts a Kontrol key.
    pub fn kite_key_verifier(&self) -> Option<Arc<KiteKeyVerifier>> {
        self.0
            .kite_key
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// The kite key this kite presents (`Config::kite_key`, or the one a rotation installed).
    pub fn kite_key(&self) -> String {
        self.0
            .keys
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .kite_key
            .clone()
    }

    /// The Kontrol public key this kite trusts (`Config::kontrol_key`, or a rotated one).
    pub fn kontrol_key(&self) -> String {
        self.0
            .keys
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .kontrol_key
            .clone()
    }

    /// Applies a key rotation announced by Kontrol (`RegisterResult.kiteKey` and
    /// `publicKey`): a new kite key replaces the one this kite presents, and is written to
    /// `write_to` (normally [`crate::kitekey::kite_key_path`]) unlike Go, which forgets it on
    /// restart; the new Kontrol public key (given, or the new kite key's `kontrolKey`) becomes the
    /// one `token` and `kiteKey` credentials are checked against.
    pub fn rotate_keys(
        &self,
        kite_key: Option<&str>,
        public_key: Option<&str>,
        write_to: Option<&std::path::Path>,
    ) -> Result<(), Error> {
        let parsed = kite_key.map(crate::kitekey::parse).transpose()?;
        let public = public_key
            .map(|p| p.trim().to_owned())
            .filter(|p| !p.is_empty())
            .or_else(|| {
                parsed
                    .as_ref()
                    .map(|k| k.claims.kontrol_key.trim().to_owned())
            })
            .filter(|p| !p.is_empty());
        if let Some(public) = &public {
            let token =
                TokenVerifier::new(&self.0.config.kontrol_user, public, self.0.identity.clone())?;
            self.set_token_verifier(token);
            self.set_kite_key_verifier(
                KiteKeyVerifier::trusting(public).with_ttl(self.0.config.verify_ttl),
            );
        }
        if let (Some(key), Some(path)) = (&parsed, write_to) {
            crate::kitekey::write_to(path, &key.token)?;
        }
        let mut keys = self.0.keys.write().unwrap_or_else(|e| e.into_inner());
        if let Some(key) = parsed {
            keys.kite_key = key.token;
        }
        if let Some(public) = public {
            keys.kontrol_key = public;
        }
        Ok(())
    }

    /// The verifier of `token` credentials, if the kite trusts a Kontrol key.
    pub fn token_verifier(&self) -> Option<Arc<TokenVerifier>> {
        self.0
            .token
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Runs `f` for every accepted connection, when it opens.
    pub fn on_connect(&self, f: impl Fn(&Client) + Send + Sync + 'static) {
        lock(&self.0.hooks).connect.push(Arc::new(f));
    }

    /// Runs `f` once per accepted connection, before its first request is handled (the
    /// client's remote identity is set by then).
    pub fn on_first_request(&self, f: impl Fn(&Client) + Send + Sync + 'static) {
        lock(&self.0.hooks).first_request.push(Arc::new(f));
    }

    /// Runs `f` when an accepted connection ends.
    pub fn on_disconnect(&self, f: impl Fn(&Client) + Send + Sync + 'static) {
        lock(&self.0.hooks).disconnect.push(Arc::new(f));
    }

    #[cfg(feature = "server")]
    /// Mounts extra HTTP routes beside `/kite` (merged into the server's router). Call before
    /// [`Kite::run`].
    pub fn route(&self, path: &str, route: axum::routing::MethodRouter) {
        let mut routes = lock(&self.0.routes);
        *routes = std::mem::take(&mut *routes).route(path, route);
    }

    #[cfg(feature = "server")]
    /// The HTTP router of this kite: SockJS at `/kite` plus extra routes. Mount it in another
    /// server to serve the kite there (serve it with [`crate::server`], or with connect info
    /// [`crate::sockjs::PeerAddr`], for peer addresses and the per-address budgets).
    ///
    /// Its SockJS server takes the session, websocket and queue budgets of `Config::limits`,
    /// counted in [`Kite::occupancy`] (shared by every router of this kite).
    pub fn router(&self) -> axum::Router {
        let inner = Arc::downgrade(&self.0);
        let limits = &self.0.config.limits;
        let options = SockJsOptions {
            heartbeat_delay: self.0.config.heartbeat_delay,
            disconnect_delay: self.0.config.disconnect_delay,
            max_message_size: self.0.config.max_message_size,
            websocket: self.0.config.websocket,
            max_queued_bytes: limits.max_queued_bytes,
            max_sessions: limits.max_sessions,
            max_sessions_per_ip: limits.max_sessions_per_ip,
            max_websockets: limits.max_websockets,
            max_websockets_per_ip: limits.max_websockets_per_ip,
            ..self.0.config.sockjs.clone()
        };
        let on_session = move |session: Session| {
            if let Some(inner) = inner.upgrade() {
                Kite(inner).accept(session);
            }
        };
        // Go serves the SockJS welcome at both `/kite` and `/kite/`.
        let server = SockJsServer::with_occupancy(options, self.0.occupancy.clone(), on_session);
        lock(&self.0.routes)
            .clone()
            .merge(server.router_at("/kite"))
    }

    #[cfg(feature = "server")]
    /// What the peers of this kite hold now: HTTP sessions, websockets, and bytes queued for
    /// peers that have fallen behind (see [`crate::sockjs::Occupancy`]). Servers of other
    /// SockJS endpoints (a tunnel proxy's) may share it
    /// ([`SockJsServer::with_occupancy`]), to count their peers against the same budgets.
    pub fn occupancy(&self) -> &crate::sockjs::Occupancy {
        &self.0.occupancy
    }

    pub(crate) fn accept(&self, session: Session) {
        if self.0.shutdown.is_cancelled() {
            let (code, reason) = kite_core::sockjs::GO_AWAY;
            session.tx.close(code, reason);
            return;
        }
        let client = Client::new(self.0.clone(), String::new(), true);
        debug!(session = %session.info.id, transport = %session.info.transport, "new session");
        lock(&self.0.accepted).insert(Arc::as_ptr(&client.0) as usize, client.clone());
        let hooks = lock(&self.0.hooks).connect.clone();
        for h in hooks {
            run_hook(&h, &client);
        }
        client.attach(session);
    }

    #[cfg(feature = "server")]
    /// Binds `Config::ip:Config::port` and serves until [`Kite::close`].
    pub async fn run(&self) -> Result<(), Error> {
        let listener = listen(SocketAddr::new(self.0.config.ip, self.0.config.port))?;
        self.serve(listener).await
    }

    #[cfg(feature = "server")]
    /// Serves on an already bound listener until [`Kite::close`], with [`crate::server`]: the
    /// connection budgets and timeouts of `Config::limits`, TLS when `Config::tls` is set.
    /// Long-lived connections get about 2 s after [`Kite::close`] before this returns.
    pub async fn serve(&self, listener: TcpListener) -> Result<(), Error> {
        let addr = listener.local_addr()?;
        let router = self.router();
        let options = ServeOptions::from_limits(&self.0.config.limits);
        let (options, scheme) = match &self.0.config.tls {
            #[cfg(feature = "tls")]
            Some(tls) => (options.with_tls(crate::tls::server_config(tls)?), "https"),
            #[cfg(not(feature = "tls"))]
            Some(_) => {
                return Err(Error::Io(std::io::Error::new(
                    std::io::ErrorKind::Unsupported,
                    "Config::tls needs kite-native's feature tls",
                )));
            }
            None => (options, "http"),
        };
        let server = Server::new(router, options);
        let _ = self.0.local_addr.send_replace(Some(addr));
        info!(kite = %self.0.identity, %addr, "serving at {scheme}://{addr}/kite");
        let served = server
            .serve(listener, self.0.shutdown.clone().cancelled_owned())
            .await;
        let _ = self.0.local_addr.send_replace(None);
        served?;
        Ok(())
    }

    #[cfg(feature = "server")]
    /// Resolves when the server is listening, with its address.
    pub async fn ready(&self) -> SocketAddr {
        let mut rx = self.0.local_addr.subscribe();
        loop {
            if let Some(addr) = *rx.borrow_and_update() {
                return addr;
            }
            if rx.changed().await.is_err() {
                std::future::pending::<()>().await;
            }
        }
    }

    #[cfg(feature = "server")]
    /// The port the server listens on, once it does.
    pub fn port(&self) -> Option<u16> {
        self.0.local_addr.borrow().map(|a| a.port())
    }

    #[cfg(feature = "server")]
    /// The base URL of this kite's server (`http(s)://127.0.0.1:<port>/kite` for loopback or
    /// wildcard binds), once it listens.
    pub fn url(&self) -> Option<String> {
        let addr = (*self.0.local_addr.borrow())?;
        let ip = if addr.ip().is_unspecified() {
            std::net::IpAddr::from([127, 0, 0, 1])
        } else {
            addr.ip()
        };
        let scheme = if self.0.config.tls.is_some() {
            "https"
        } else {
            "http"
        };
        Some(format!(
            "{scheme}://{}/kite",
            SocketAddr::new(ip, addr.port())
        ))
    }

    /// Stops the server: closes every accepted session with `c[3000,"Go away!"]` and makes
    /// [`Kite::run`] return.
    pub fn close(&self) {
        self.0.shutdown.cancel();
        let clients: Vec<Client> = lock(&self.0.accepted).drain().map(|(_, c)| c).collect();
        for c in clients {
            c.close();
        }
        if let Some(k) = lock(&self.0.kontrol).take() {
            k.close();
        }
        let proxies: Vec<Client> = lock(&self.0.proxies).drain(..).collect();
        for p in proxies {
            p.close();
        }
        if let Some(h) = lock(&self.0.heartbeat).take() {
            h.abort();
        }
    }

    #[cfg(feature = "client")]
    /// A client for the kite at `url` (its SockJS base URL, e.g. `http://host:6000/kite`).
    /// Nothing is dialed until [`Client::dial`] or [`Client::dial_forever`].
    pub fn new_client(&self, url: &str) -> Client {
        Client::new(self.0.clone(), url.to_owned(), false)
    }

    /// Number of accepted connections currently open.
    pub fn connections(&self) -> usize {
        lock(&self.0.accepted).len()
    }
}

impl KiteInner {
    pub(crate) fn disconnected(&self, client: &Client) {
        lock(&self.accepted).remove(&(Arc::as_ptr(&client.0) as usize));
        let hooks = lock(&self.hooks).disconnect.clone();
        for h in hooks {
            run_hook(&h, client);
        }
    }

    /// The authenticated username of a request: a user-supplied authenticator for its
    /// `authentication.type` if there is one, else the built-in `token` check.
    async fn authenticate(&self, req: &Request) -> Result<String, KiteError> {
        let auth_error = |m: String| KiteError::new(ErrorKind::Authentication, m);
        let auth = req
            .auth
            .as_ref()
            .ok_or_else(|| auth_error("No authentication information is provided".into()))?;
        let custom = self
            .authenticators
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(&auth.kind)
            .cloned();
        match custom {
            Some(authenticator) => authenticator(req.clone())
                .await
                .map_err(|e| auth_error(format!("{}: {}", auth.kind, e.message))),
            None if auth.kind == "token" => {
                let verifier = self.token.read().unwrap_or_else(|e| e.into_inner()).clone();
                let Some(verifier) = verifier else {
                    return Err(auth_error("token: kontrol key is not set in config".into()));
                };
                // The peer repeats its credentials with every call: the connection remembers
                // the last token verified (by the same verifier) until it expires.
                let now = crate::auth::unix_now();
                let mut memo = lock(&req.client.0.verified_token);
                if let Some(m) = memo.as_ref()
                    && Arc::ptr_eq(&m.auth, auth)
                    && Arc::ptr_eq(&m.verifier, &verifier)
                    && now <= m.until
                {
                    return Ok(m.username.clone());
                }
                let (username, until) = verifier
                    .verify_until(&auth.key)
                    .map_err(|m| auth_error(format!("token: {m}")))?;
                *memo = Some(crate::client::VerifiedToken {
                    verifier,
                    auth: auth.clone(),
                    username: username.clone(),
                    until,
                });
                Ok(username)
            }
            None if auth.kind == "kiteKey" => {
                let verifier = self
                    .kite_key
                    .read()
                    .unwrap_or_else(|e| e.into_inner())
                    .clone();
                let Some(verifier) = verifier else {
                    return Err(auth_error(
                        "kiteKey: kontrol key is not set in config".into(),
                    ));
                };
                verifier
                    .verify(&auth.key)
                    .map_err(|m| auth_error(format!("kiteKey: {m}")))
            }
            None => Err(auth_error(format!(
                "Unknown authentication type: {}",
                auth.kind
            ))),
        }
    }

    async fn run_method(
        self: &Arc<Self>,
        client: &Client,
        link: &Arc<Link>,
        request: kite_core::Request,
        id: &str,
    ) -> Result<Value, KiteError> {
        let Some(method) = self
            .methods
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(&request.method)
            .cloned()
        else {
            return Err(KiteError::method_not_found(&request.method));
        };
        let plan = method.plan();
        let mut req = Request::new(
            request.method,
            id.to_owned(),
            request.args,
            request.kite,
            request.auth,
            client.clone(),
            link.context.clone(),
            self.identity.clone(),
        );
        let skip = plan.auth_disabled || self.config.disable_authentication || client.is_trusted();
        if plan.auth_required || !skip {
            let username = self.authenticate(&req).await?;
            if req.caller.username != username {
                Arc::make_mut(&mut req.caller)
                    .username
                    .clone_from(&username);
            }
            req.username = username;
        }
        if plan.throttled && !method.admit() {
            return Err(KiteError::request_limit());
        }
        self.run_chain(&method, plan, req, id).await
    }

    async fn run_chain(
        &self,
        method: &Method,
        plan: Plan,
        req: Request,
        id: &str,
    ) -> Result<Value, KiteError> {
        let (pre, post, finals, handling) = {
            let kite = self.chain.read().unwrap_or_else(|e| e.into_inner());
            let cat = |mut a: Vec<DynHandler>, b: &[DynHandler]| -> Vec<DynHandler> {
                a.extend(b.iter().cloned());
                a
            };
            let mut finals = plan.finals;
            finals.extend(kite.finals.iter().cloned());
            (
                cat(plan.pre, &kite.pre),
                cat(plan.post, &kite.post),
                finals,
                kite.handling,
            )
        };
        let caught = |panic: Box<dyn std::any::Any + Send>| {
            let msg = panic
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "handler panicked".to_owned());
            warn!(method = %method.name(), %id, panic = %msg, "handler panicked");
            Err(KiteError::generic(msg))
        };
        if pre.is_empty() && post.is_empty() && finals.is_empty() {
            // The usual case: the handler alone, which takes the request as it is.
            let outcome = std::panic::AssertUnwindSafe((method.handler)(req));
            return outcome.catch_unwind().await.unwrap_or_else(caught);
        }
        let outcome = async {
            let mut first: Option<Value> = None;
            let mut note = |v: &Value| {
                if first.is_none() && !v.is_null() {
                    first = Some(v.clone());
                }
            };
            for h in &pre {
                note(&h(req.clone()).await?);
            }
            let main = (method.handler)(req.clone()).await?;
            note(&main);
            let mut latest = None;
            for h in &post {
                let v = h(req.clone()).await?;
                note(&v);
                latest = Some(v);
            }
            Ok(match handling {
                MethodHandling::ReturnMethod => main,
                MethodHandling::ReturnFirst => first.unwrap_or(main),
                MethodHandling::ReturnLatest => latest.unwrap_or(main),
            })
        };
        let result = std::panic::AssertUnwindSafe(outcome)
            .catch_unwind()
            .await
            .unwrap_or_else(caught);
        finals.iter().fold(result, |r, f| f(&req, r))
    }

    async fn serve_request(
        self: Arc<Self>,
        client: Client,
        link: Arc<Link>,
        mut request: kite_core::Request,
    ) {
        if client.0.accepted
            && !client.0.first_request_seen.load(Ordering::Relaxed)
            && !client.0.first_request_seen.swap(true, Ordering::SeqCst)
        {
            client.set_remote((*request.kite).clone());
            let hooks = lock(&self.hooks).first_request.clone();
            for h in hooks {
                run_hook(&h, &client);
            }
        }
        let response = request.response.take();
        // The call's slot among the connection's calls in flight, held until it is answered.
        let _in_flight = request.in_flight.take();
        let method = request.method.clone();
        let id = request_id();
        let result = self
            .run_method(&client, &link, request, &id)
            .await
            .map_err(|mut e| {
                if e.id.is_empty() && e.kind != ErrorKind::MethodNotFound {
                    e.id.clone_from(&id);
                }
                e
            });
        if let Err(e) = &result {
            debug!(%method, error = %e, "request failed");
        }
        let Some(response) = response else {
            return;
        };
        let sent = match response.remote_id() {
            Some(rid) => link.respond(rid, result),
            None => response.call_with(response_args(result)),
        };
        if let Err(e) = sent {
            debug!(%method, error = %e, "could not send the response");
        }
    }
}

impl Dispatch for Client {
    fn dispatch(&self, link: &Arc<Link>, request: Box<kite_core::Request>) -> BoxFuture<()> {
        let inner = self.0.kite.clone();
        Box::pin(inner.serve_request(self.clone(), link.clone(), *request))
    }

    fn answered(&self, call: kite_core::session::CallId, result: Result<Value, KiteError>) {
        Client::answered(self, call, result);
    }
}

#[cfg(feature = "server")]
/// Connections waiting to be accepted, at most: a burst of clients (a thousand XHR sessions
/// opening their second connection at once) must not overflow it, or their SYNs are dropped and
/// retried a second later. The kernel caps it at `net.core.somaxconn`, as for Go's listeners.
pub const LISTEN_BACKLOG: u32 = 4096;

#[cfg(feature = "server")]
/// Binds `addr` for serving, with address reuse (a restarted kite gets its port back at once)
/// and a [`LISTEN_BACKLOG`]-deep accept queue.
pub fn listen(addr: SocketAddr) -> std::io::Result<TcpListener> {
    let socket = if addr.is_ipv4() {
        tokio::net::TcpSocket::new_v4()?
    } else {
        tokio::net::TcpSocket::new_v6()?
    };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(LISTEN_BACKLOG)
}

/// Runs a connection hook; a panicking hook is logged and ignored.
pub(crate) fn run_hook(h: &Hook, client: &Client) {
    if std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| h(client))).is_err() {
        warn!("a connection hook panicked");
    }
}
