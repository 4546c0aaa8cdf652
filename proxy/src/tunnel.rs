//! The tunnel proxy (Go's `tunnelproxy`): kites that cannot be dialed (behind NAT, a firewall,
//! no open port) serve public clients through it.
//!
//! A private kite keeps a connection to the proxy's kite (`/kite`) and calls `register` on it
//! ([`kite_native::Kite::register_to_tunnel`] does all of this): the proxy remembers that
//! connection by the caller's kite ID and answers the kite's public URL,
//! `http://<publicHost>/proxy/<kiteID>`, which the kite registers with Kontrol.
//!
//! That URL is a SockJS base URL, served with every SockJS transport (websocket, xhr-polling,
//! xhr-streaming, eventsource, ... and the raw websocket at `<base>/websocket`). For each new
//! public session the proxy signs a short-lived RS256 token `{sub: kiteID, seq, iat, nbf, exp}`
//! with its own key pair, calls the private kite's `kite.tunnel` with
//! `{"url":"ws://<publicHost>/tunnel/<kiteID>/<seq>/websocket?token=<jwt>"}` over the kite's
//! connection, and waits (at most [`TunnelProxyOptions::open_timeout`]) for the kite to dial that
//! SockJS websocket. The token is checked before the upgrade (signature, times, and that it
//! names a tunnel still waiting, once), then messages are relayed whole between the public
//! session and the tunnel, in both directions, up to [`TunnelProxyOptions::message_limit`].
//! Either side ending closes the other. The private kite authenticates the public caller's
//! requests itself, as it would on a direct connection.
//!
//! Differences from Go's proxy:
//! * The public URL is `/proxy/<kiteID>`, not `/proxy?kiteID=<kiteID>`: a query string is lost
//!   by SockJS clients that build their URLs by concatenation (Go's xhr client). Go's form is
//!   still accepted: `/proxy/<server>/<session>/<transport>?kiteID=<id>` is served as
//!   `/proxy/<id>/<server>/<session>/<transport>`.
//! * Every SockJS transport, not only websocket.
//! * Messages of any size up to the limit (Go's relay corrupts messages over 32 KiB).
//! * Tunnel tokens live [`TunnelProxyOptions::token_ttl`] (Go: an hour), are single-use, and a
//!   token for an unknown tunnel is refused (Go dereferences nil).
//! * A public session the kite opens no tunnel for is closed with `c[4001,"tunnel: ..."]`
//!   saying why; one whose kite leaves the proxy with [`KITE_LEFT`].
//! * A kite ID registered by one user cannot be taken over by another.
//!
//! Budgets: every SockJS endpoint of the proxy (its kite's `/kite`, the public endpoints, the
//! tunnels) counts its sessions and websockets in the kite's [`Kite::occupancy`], against the
//! kite's `Config::limits`, so a remote address has one budget across them all. The relay holds
//! no buffer of its own: what it moves waits in the other side's queue, which closes that side
//! (`c[1008,...]`) past `max_queued_bytes` when its peer does not read, and the relay then ends
//! the other side too.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::extract::{ConnectInfo, Request as HttpRequest};
use axum::http::{StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::any;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use kite_native::auth::KeyPair;
use kite_native::core::sockjs::GO_AWAY;
use kite_native::session::{Session, SessionReceiver, SessionSender};
use kite_native::sockjs::{Occupancy, PeerAddr, SockJsOptions, SockJsServer};
use kite_native::{Client, Config, ErrorKind, Kite, KiteError, Request};
use serde::{Deserialize, Serialize};
use tokio::sync::{oneshot, watch};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tower::ServiceExt;
use tracing::{debug, info, warn};

/// Go's default port.
pub const DEFAULT_PORT: u16 = 3999;

/// Largest message relayed by default (16 MiB).
pub const DEFAULT_MESSAGE_LIMIT: usize = 16 << 20;

/// Close code of a public session for which no tunnel could be opened; the reason says why.
pub const TUNNEL_FAILED: u16 = 4001;

/// How a public session ends when its kite's connection to the proxy goes.
pub const KITE_LEFT: (u16, &str) = (4000, "tunnel: the kite left the tunnel proxy");

/// How long a relay keeps reading after closing, for the close to get through.
const CLOSE_GRACE: Duration = Duration::from_secs(5);

/// Settings of a [`TunnelProxy`].
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct TunnelProxyOptions {
    /// `host:port` at which clients and private kites reach the proxy, written into public
    /// URLs and tunnel URLs. `None`: `127.0.0.1:<the port it listens on>`.
    pub public_host: Option<String>,
    /// The key pair tunnel tokens are signed and checked with.
    pub key: KeyPair,
    /// Largest message relayed (in either direction); larger ones end the session.
    pub message_limit: usize,
    /// How long a public session waits for its kite to open the tunnel (10 s).
    pub open_timeout: Duration,
    /// How long a tunnel token is valid (60 s).
    pub token_ttl: Duration,
}

impl TunnelProxyOptions {
    /// The defaults, signing tunnel tokens with `key`.
    pub fn new(key: KeyPair) -> TunnelProxyOptions {
        TunnelProxyOptions {
            public_host: None,
            key,
            message_limit: DEFAULT_MESSAGE_LIMIT,
            open_timeout: Duration::from_secs(10),
            token_ttl: Duration::from_secs(60),
        }
    }
}

/// Why a tunnel proxy could not be made.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The kite could not be made (identity, configuration, Kontrol key).
    #[error(transparent)]
    Kite(#[from] kite_native::Error),
    /// The tunnel key pair cannot be used, or its halves do not match.
    #[error("tunnel key pair: {0}")]
    Key(String),
}

/// The claims of a tunnel token.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TunnelClaims {
    /// The private kite's ID.
    pub sub: String,
    /// The tunnel's number (per kite).
    pub seq: u64,
    /// Issued at (Unix seconds).
    pub iat: i64,
    /// Not before.
    pub nbf: i64,
    /// Expiry.
    pub exp: i64,
}

/// The tunnel proxy: a kite named `tunnelproxy` with `register`, the public SockJS endpoints at
/// `/proxy/<kiteID>` and the tunnel endpoint at `/tunnel/`. See the [module docs](self).
///
/// Cloning is cheap; clones are the same proxy.
#[derive(Clone)]
pub struct TunnelProxy {
    kite: Kite,
    inner: Arc<Inner>,
}

impl std::fmt::Debug for TunnelProxy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TunnelProxy")
            .field("kite", &self.kite)
            .field("kites", &lock(&self.inner.kites).len())
            .finish()
    }
}

struct Inner {
    options: TunnelProxyOptions,
    /// The SockJS heartbeat and disconnect delays (the kite's configuration).
    delays: (Duration, Duration),
    /// The budgets of the kite's configuration, for every SockJS endpoint of the proxy.
    limits: kite_native::Limits,
    /// Where the peers of every SockJS endpoint of the proxy are counted: its kite's, so that
    /// a remote address has one budget across the kite, the public endpoints and the tunnels.
    occupancy: Occupancy,
    scheme_secure: bool,
    /// The port the kite listens on, for a default public host.
    port: Mutex<Option<u16>>,
    encoding: EncodingKey,
    decoding: DecodingKey,
    kites: Mutex<HashMap<String, Arc<PrivateKite>>>,
    /// Bumped whenever a kite registers or leaves.
    changed: watch::Sender<u64>,
    generation: AtomicU64,
    open_tunnels: AtomicUsize,
    shutdown: CancellationToken,
}

/// A kite registered with the proxy.
struct PrivateKite {
    id: String,
    username: String,
    generation: u64,
    /// Its connection to the proxy, which `kite.tunnel` is called on.
    client: Client,
    /// Its public SockJS endpoints, at `/proxy/<id>`.
    router: axum::Router,
    seq: AtomicU64,
    /// Tunnels waiting for the kite to dial them, by number.
    pending: Mutex<HashMap<u64, oneshot::Sender<Session>>>,
    /// Cancelled when the kite leaves (or registers again from another connection).
    gone: CancellationToken,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

/// Kite IDs go into URL paths: non-empty, at most 128 of `[A-Za-z0-9_-]` (Go's are UUIDs).
fn valid_kite_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 128
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

fn refuse(status: StatusCode, why: impl Into<String>) -> Response {
    (status, why.into()).into_response()
}

/// `req` with its path replaced (query kept).
fn with_path(mut req: HttpRequest, path: &str) -> Option<HttpRequest> {
    let pq = match req.uri().query() {
        Some(q) => format!("{path}?{q}"),
        None => path.to_owned(),
    };
    let mut parts = req.uri().clone().into_parts();
    parts.path_and_query = Some(pq.parse().ok()?);
    *req.uri_mut() = Uri::from_parts(parts).ok()?;
    Some(req)
}

/// `req` as a fresh request to hand to another router: only the extensions the SockJS server
/// needs (the websocket upgrade, the peer address). Those axum added while routing it here
/// (the path parameters above all) would confuse the next router's extractors.
fn forwardable(req: HttpRequest) -> HttpRequest {
    let (mut parts, body) = req.into_parts();
    let mut extensions = axum::http::Extensions::new();
    if let Some(upgrade) = parts.extensions.remove::<hyper::upgrade::OnUpgrade>() {
        extensions.insert(upgrade);
    }
    if let Some(peer) = parts.extensions.remove::<ConnectInfo<PeerAddr>>() {
        extensions.insert(peer);
    }
    if let Some(peer) = parts
        .extensions
        .remove::<ConnectInfo<std::net::SocketAddr>>()
    {
        extensions.insert(peer);
    }
    parts.extensions = extensions;
    HttpRequest::from_parts(parts, body)
}

/// The value of `name` in the query of `uri`.
fn query_param(uri: &Uri, name: &str) -> Option<String> {
    form_urlencoded::parse(uri.query()?.as_bytes())
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.into_owned())
}

impl TunnelProxy {
    /// A tunnel proxy kite named `tunnelproxy` at `version`, configured by `config` (address,
    /// port, TLS, Kontrol and credentials: `register` is authenticated as any method is).
    pub fn new(
        config: Config,
        version: &str,
        options: TunnelProxyOptions,
    ) -> Result<TunnelProxy, Error> {
        let encoding = EncodingKey::from_rsa_pem(options.key.private_pem.trim().as_bytes())
            .map_err(|e| Error::Key(format!("private key: {e}")))?;
        let decoding = DecodingKey::from_rsa_pem(options.key.public_pem.trim().as_bytes())
            .map_err(|e| Error::Key(format!("public key: {e}")))?;
        let scheme_secure = config.tls.is_some();
        let delays = (config.heartbeat_delay, config.disconnect_delay);
        let kite = Kite::with_config("tunnelproxy", version, config)?;
        let inner = Arc::new(Inner {
            options,
            delays,
            limits: kite.config().limits.clone(),
            occupancy: kite.occupancy().clone(),
            scheme_secure,
            port: Mutex::default(),
            encoding,
            decoding,
            kites: Mutex::default(),
            changed: watch::channel(0).0,
            generation: AtomicU64::new(0),
            open_tunnels: AtomicUsize::new(0),
            shutdown: CancellationToken::new(),
        });
        // The halves must match, or no tunnel would ever open.
        let probe = inner.sign("probe", 0)?;
        inner.verify(&probe).map_err(|e| {
            Error::Key(format!(
                "the public key does not match the private key: {e}"
            ))
        })?;
        let proxy = TunnelProxy { kite, inner };
        proxy.install();
        Ok(proxy)
    }

    fn install(&self) {
        let weak = Arc::downgrade(&self.inner);
        let w = weak.clone();
        self.kite.handle("register", move |req: Request| {
            let w = w.clone();
            async move {
                let inner = w
                    .upgrade()
                    .ok_or_else(|| KiteError::generic("the tunnel proxy is closed"))?;
                inner.register(&req)
            }
        });
        for path in ["/proxy", "/proxy/", "/proxy/{*rest}"] {
            let w = weak.clone();
            self.kite.route(
                path,
                any(move |req: HttpRequest| proxy_endpoint(w.clone(), req)),
            );
        }
        let w = weak.clone();
        self.kite.route(
            "/tunnel/{*rest}",
            any(move |req: HttpRequest| tunnel_endpoint(w.clone(), req)),
        );
    }

    /// The proxy's kite (its `register` method, hooks, configuration).
    pub fn kite(&self) -> &Kite {
        &self.kite
    }

    /// Binds `Config::ip:Config::port` and serves until [`TunnelProxy::close`].
    pub async fn run(&self) -> Result<(), kite_native::Error> {
        let listener = kite_native::listen(std::net::SocketAddr::new(
            self.kite.config().ip,
            self.kite.config().port,
        ))?;
        self.serve(listener).await
    }

    /// Serves on an already bound listener until [`TunnelProxy::close`].
    pub async fn serve(&self, listener: tokio::net::TcpListener) -> Result<(), kite_native::Error> {
        *lock(&self.inner.port) = Some(listener.local_addr()?.port());
        self.kite.serve(listener).await
    }

    /// Resolves when the proxy is listening, with its address.
    pub async fn ready(&self) -> std::net::SocketAddr {
        self.kite.ready().await
    }

    /// `host:port` at which the proxy is reached (see [`TunnelProxyOptions::public_host`]).
    pub fn public_host(&self) -> String {
        self.inner.public_host()
    }

    /// The URL of the proxy's kite, `http(s)://<publicHost>/kite`: what private kites dial and
    /// what the proxy registers with Kontrol.
    pub fn kite_url(&self) -> String {
        format!("{}://{}/kite", self.inner.http_scheme(), self.public_host())
    }

    /// The public URL of the kite `kite_id`: `http(s)://<publicHost>/proxy/<kiteID>`.
    pub fn public_url(&self, kite_id: &str) -> String {
        self.inner.public_url(kite_id)
    }

    /// The IDs of the kites registered now.
    pub fn registered_kites(&self) -> Vec<String> {
        lock(&self.inner.kites).keys().cloned().collect()
    }

    /// Resolves once the kite `kite_id` is registered.
    pub async fn registered(&self, kite_id: &str) {
        self.wait_until(|kites| kites.contains_key(kite_id)).await;
    }

    /// Resolves once the kite `kite_id` is not registered (it left, or never came).
    pub async fn left(&self, kite_id: &str) {
        self.wait_until(|kites| !kites.contains_key(kite_id)).await;
    }

    async fn wait_until(&self, done: impl Fn(&HashMap<String, Arc<PrivateKite>>) -> bool) {
        let mut rx = self.inner.changed.subscribe();
        loop {
            if done(&lock(&self.inner.kites)) {
                return;
            }
            if rx.changed().await.is_err() {
                return std::future::pending().await;
            }
        }
    }

    /// Tunnels relaying now.
    pub fn open_tunnels(&self) -> usize {
        self.inner.open_tunnels.load(Ordering::SeqCst)
    }

    /// Stops the proxy: every public session and tunnel is closed with `c[3000,"Go away!"]`,
    /// the kites' connections too, and [`TunnelProxy::run`] returns.
    pub fn close(&self) {
        self.inner.shutdown.cancel();
        let kites: Vec<Arc<PrivateKite>> =
            lock(&self.inner.kites).drain().map(|(_, k)| k).collect();
        for k in kites {
            k.gone.cancel();
        }
        self.inner.changed.send_modify(|v| *v += 1);
        self.kite.close();
    }
}

impl Inner {
    fn http_scheme(&self) -> &'static str {
        if self.scheme_secure { "https" } else { "http" }
    }

    fn public_host(&self) -> String {
        match &self.options.public_host {
            Some(h) => h.clone(),
            None => format!("127.0.0.1:{}", lock(&self.port).unwrap_or(DEFAULT_PORT)),
        }
    }

    fn public_url(&self, kite_id: &str) -> String {
        format!(
            "{}://{}/proxy/{kite_id}",
            self.http_scheme(),
            self.public_host()
        )
    }

    fn sign(&self, kite_id: &str, seq: u64) -> Result<String, Error> {
        let now = unix_now();
        let ttl = i64::try_from(self.options.token_ttl.as_secs()).unwrap_or(i64::MAX);
        let claims = TunnelClaims {
            sub: kite_id.to_owned(),
            seq,
            iat: now,
            nbf: now,
            exp: now.saturating_add(ttl.max(1)),
        };
        jsonwebtoken::encode(&Header::new(Algorithm::RS256), &claims, &self.encoding)
            .map_err(|e| Error::Key(format!("cannot sign a tunnel token: {e}")))
    }

    fn verify(&self, token: &str) -> Result<TunnelClaims, String> {
        let mut validation = Validation::new(Algorithm::RS256);
        validation.leeway = 5;
        validation.validate_nbf = true;
        validation.set_required_spec_claims(&["exp", "nbf", "sub"]);
        jsonwebtoken::decode::<TunnelClaims>(token, &self.decoding, &validation)
            .map(|t| t.claims)
            .map_err(|e| e.to_string())
    }

    /// `register`: remembers the caller's connection by its kite ID, answers its public URL.
    fn register(self: &Arc<Self>, req: &Request) -> Result<String, KiteError> {
        if self.shutdown.is_cancelled() {
            return Err(KiteError::generic("the tunnel proxy is closed"));
        }
        let id = req.caller.id.clone();
        if !valid_kite_id(&id) {
            return Err(KiteError::argument(format!(
                "kite ID {id:?} cannot be used in a URL (want 1 to 128 of A-Z a-z 0-9 - _)"
            )));
        }
        let username = req.username.clone();
        let generation = self.generation.fetch_add(1, Ordering::SeqCst) + 1;
        let replaced = {
            let mut kites = lock(&self.kites);
            if let Some(existing) = kites.get(&id) {
                if existing.username != username {
                    return Err(KiteError::new(
                        ErrorKind::Authentication,
                        format!("kite ID {id} is registered by another user"),
                    ));
                }
                if existing.client.ptr_eq(&req.client) {
                    // Again on the same connection: nothing changes.
                    return Ok(self.public_url(&id));
                }
            }
            let kite = self.private_kite(&id, &username, generation, req.client.clone());
            kites.insert(id.clone(), kite)
        };
        if let Some(old) = replaced {
            debug!(kite = %id, "registered again from a new connection");
            old.gone.cancel();
        }
        let weak = Arc::downgrade(self);
        let forget_id = id.clone();
        req.client.on_disconnect(move |_| {
            if let Some(inner) = weak.upgrade() {
                inner.forget(&forget_id, generation);
            }
        });
        if !req.client.is_connected() {
            self.forget(&id, generation);
            return Err(KiteError::disconnect());
        }
        self.changed.send_modify(|v| *v += 1);
        let url = self.public_url(&id);
        info!(kite = %req.caller, %url, "kite registered");
        Ok(url)
    }

    fn private_kite(
        self: &Arc<Self>,
        id: &str,
        username: &str,
        generation: u64,
        client: Client,
    ) -> Arc<PrivateKite> {
        let options = self.sockjs_options(true);
        let inner = Arc::downgrade(self);
        Arc::new_cyclic(|me: &Weak<PrivateKite>| {
            let me = me.clone();
            let server = SockJsServer::with_occupancy(
                options,
                self.occupancy.clone(),
                move |session: Session| match (inner.upgrade(), me.upgrade()) {
                    (Some(inner), Some(kite)) => {
                        tokio::spawn(serve_public(inner, kite, session));
                    }
                    _ => session.tx.close(KITE_LEFT.0, KITE_LEFT.1),
                },
            );
            PrivateKite {
                id: id.to_owned(),
                username: username.to_owned(),
                generation,
                client,
                router: server.router_at(&format!("/proxy/{id}")),
                seq: AtomicU64::new(0),
                pending: Mutex::default(),
                gone: CancellationToken::new(),
            }
        })
    }

    /// SockJS options of the public endpoints (`public`: every transport) or of a tunnel
    /// (websocket only), with the budgets of the kite's `Config::limits`.
    fn sockjs_options(&self, public: bool) -> SockJsOptions {
        let base = SockJsOptions::default();
        let limits = &self.limits;
        let mut o = SockJsOptions {
            heartbeat_delay: self.delays.0,
            disconnect_delay: self.delays.1,
            max_message_size: self.options.message_limit,
            max_queued_bytes: limits.max_queued_bytes,
            max_sessions: limits.max_sessions,
            max_sessions_per_ip: limits.max_sessions_per_ip,
            max_websockets: limits.max_websockets,
            max_websockets_per_ip: limits.max_websockets_per_ip,
            ..base
        };
        if !public {
            o.raw_websocket = false;
            o.xhr_polling = false;
            o.xhr_streaming = false;
            o.eventsource = false;
            o.htmlfile = false;
            o.jsonp = false;
        }
        o
    }

    /// Forgets the kite `id` if it is still the registration `generation`; its sessions close.
    fn forget(&self, id: &str, generation: u64) {
        let removed = {
            let mut kites = lock(&self.kites);
            match kites.get(id) {
                Some(k) if k.generation == generation => kites.remove(id),
                _ => None,
            }
        };
        if let Some(k) = removed {
            info!(kite = %k.id, "kite left");
            k.gone.cancel();
            self.changed.send_modify(|v| *v += 1);
        }
    }
}

/// `/proxy/<kiteID>/...` (or Go's `/proxy/...?kiteID=<kiteID>`): the kite's public SockJS
/// endpoints.
async fn proxy_endpoint(inner: Weak<Inner>, req: HttpRequest) -> Response {
    let Some(inner) = inner.upgrade() else {
        return refuse(
            StatusCode::SERVICE_UNAVAILABLE,
            "the tunnel proxy is closed",
        );
    };
    let path = req.uri().path().to_owned();
    let rest = path.strip_prefix("/proxy").unwrap_or_default();
    let (id, rewritten) = match query_param(req.uri(), "kiteID") {
        // Go's form.
        Some(id) => {
            let rewritten = format!("/proxy/{id}{rest}");
            (id, Some(rewritten))
        }
        None => {
            let r = rest.strip_prefix('/').unwrap_or(rest);
            (r.split('/').next().unwrap_or_default().to_owned(), None)
        }
    };
    if !valid_kite_id(&id) {
        return refuse(StatusCode::NOT_FOUND, "tunnel: no kite ID in the URL");
    }
    let Some(kite) = lock(&inner.kites).get(&id).cloned() else {
        return refuse(
            StatusCode::NOT_FOUND,
            format!("tunnel: no kite {id} is registered with this tunnel proxy"),
        );
    };
    let req = match rewritten {
        Some(p) => match with_path(req, &p) {
            Some(r) => r,
            None => return refuse(StatusCode::BAD_REQUEST, "tunnel: bad path"),
        },
        None => req,
    };
    match kite.router.clone().oneshot(forwardable(req)).await {
        Ok(resp) => resp,
        Err(never) => match never {},
    }
}

/// `/tunnel/<kiteID>/<seq>/websocket?token=<jwt>`: a private kite opening a tunnel.
async fn tunnel_endpoint(inner: Weak<Inner>, req: HttpRequest) -> Response {
    let Some(inner) = inner.upgrade() else {
        return refuse(
            StatusCode::SERVICE_UNAVAILABLE,
            "the tunnel proxy is closed",
        );
    };
    let path = req.uri().path().to_owned();
    let Some(req) = with_path(req, path.strip_prefix("/tunnel").unwrap_or(&path)) else {
        return refuse(StatusCode::BAD_REQUEST, "tunnel: bad path");
    };
    let Some(token) = query_param(req.uri(), "token") else {
        return refuse(StatusCode::UNAUTHORIZED, "tunnel: no token");
    };
    let claims = match inner.verify(&token) {
        Ok(c) => c,
        Err(e) => {
            warn!(error = %e, "tunnel refused: invalid token");
            return refuse(
                StatusCode::UNAUTHORIZED,
                format!("tunnel: invalid token: {e}"),
            );
        }
    };
    let Some(kite) = lock(&inner.kites).get(&claims.sub).cloned() else {
        return refuse(
            StatusCode::NOT_FOUND,
            format!("tunnel: kite {} is not registered", claims.sub),
        );
    };
    let Some(waiting) = lock(&kite.pending).remove(&claims.seq) else {
        warn!(kite = %claims.sub, seq = claims.seq, "tunnel refused: no such tunnel waiting");
        return refuse(
            StatusCode::NOT_FOUND,
            format!(
                "tunnel: no tunnel {} is waiting (unknown or used)",
                claims.seq
            ),
        );
    };
    let slot = Mutex::new(Some(waiting));
    let server = SockJsServer::with_occupancy(
        inner.sockjs_options(false),
        inner.occupancy.clone(),
        move |session: Session| match lock(&slot).take() {
            Some(waiting) => {
                if let Err(session) = waiting.send(session) {
                    session
                        .tx
                        .close(TUNNEL_FAILED, "tunnel: nobody waits for it any more");
                }
            }
            None => session.tx.close(TUNNEL_FAILED, "tunnel: already open"),
        },
    );
    match server.router().oneshot(forwardable(req)).await {
        Ok(resp) => resp,
        Err(never) => match never {},
    }
}

/// A public session: asks the kite for a tunnel, then relays.
async fn serve_public(inner: Arc<Inner>, kite: Arc<PrivateKite>, public: Session) {
    let seq = kite.seq.fetch_add(1, Ordering::SeqCst) + 1;
    let (tx, rx) = oneshot::channel();
    lock(&kite.pending).insert(seq, tx);
    let opened = open_tunnel(&inner, &kite, seq, &public.tx, rx).await;
    lock(&kite.pending).remove(&seq);
    match opened {
        Ok(tunnel) => {
            inner.open_tunnels.fetch_add(1, Ordering::SeqCst);
            relay(&inner, &kite, public, tunnel).await;
            inner.open_tunnels.fetch_sub(1, Ordering::SeqCst);
        }
        Err((code, reason)) => {
            if code == TUNNEL_FAILED {
                warn!(kite = %kite.id, seq, %reason, "no tunnel");
            }
            public.tx.close(code, reason);
            drain(public.rx).await;
        }
    }
}

/// Calls the kite's `kite.tunnel` and waits for it to dial the tunnel.
async fn open_tunnel(
    inner: &Inner,
    kite: &PrivateKite,
    seq: u64,
    public: &SessionSender,
    arrived: oneshot::Receiver<Session>,
) -> Result<Session, (u16, String)> {
    let limit = inner.options.open_timeout;
    let deadline = Instant::now() + limit;
    let token = inner
        .sign(&kite.id, seq)
        .map_err(|e| (TUNNEL_FAILED, format!("tunnel: {e}")))?;
    let scheme = if inner.scheme_secure { "wss" } else { "ws" };
    let url = format!(
        "{scheme}://{}/tunnel/{}/{seq}/websocket?token={token}",
        inner.public_host(),
        kite.id
    );
    let wait = async {
        kite.client
            .tell_with_timeout("kite.tunnel", (serde_json::json!({ "url": url }),), limit)
            .await
            .map_err(|e| {
                (
                    TUNNEL_FAILED,
                    format!("tunnel: the kite did not open a tunnel: {e}"),
                )
            })?;
        match tokio::time::timeout_at(deadline, arrived).await {
            Ok(Ok(session)) => Ok(session),
            Ok(Err(_)) => Err((
                TUNNEL_FAILED,
                "tunnel: the tunnel failed to open".to_owned(),
            )),
            Err(_) => Err((
                TUNNEL_FAILED,
                format!("tunnel: the kite did not open a tunnel within {limit:?}"),
            )),
        }
    };
    tokio::select! {
        biased;
        () = inner.shutdown.cancelled() => Err((GO_AWAY.0, GO_AWAY.1.to_owned())),
        () = kite.gone.cancelled() => Err((KITE_LEFT.0, KITE_LEFT.1.to_owned())),
        () = public.closed() => Err((GO_AWAY.0, GO_AWAY.1.to_owned())),
        r = wait => r,
    }
}

/// Why a relay ended.
enum End {
    Public,
    Tunnel,
    KiteLeft,
    Shutdown,
}

/// Relays whole messages both ways until one side ends, then closes the other.
async fn relay(inner: &Inner, kite: &PrivateKite, public: Session, tunnel: Session) {
    let Session {
        rx: mut p_rx,
        tx: p_tx,
        info: p_info,
    } = public;
    let Session {
        rx: mut t_rx,
        tx: t_tx,
        ..
    } = tunnel;
    debug!(kite = %kite.id, session = %p_info.id, transport = %p_info.transport, "tunnel open");
    let end = loop {
        tokio::select! {
            biased;
            () = inner.shutdown.cancelled() => break End::Shutdown,
            () = kite.gone.cancelled() => break End::KiteLeft,
            m = p_rx.recv() => match m {
                Some(m) => if t_tx.send(m).is_err() { break End::Tunnel },
                None => break End::Public,
            },
            m = t_rx.recv() => match m {
                Some(m) => if p_tx.send(m).is_err() { break End::Public },
                None => break End::Tunnel,
            },
        }
    };
    let (go_away, reason) = GO_AWAY;
    match end {
        End::Public => t_tx.close(go_away, reason),
        End::Tunnel => p_tx.close(go_away, reason),
        End::KiteLeft => {
            t_tx.close(go_away, reason);
            p_tx.close(KITE_LEFT.0, KITE_LEFT.1);
        }
        End::Shutdown => {
            t_tx.close(go_away, reason);
            p_tx.close(go_away, reason);
        }
    }
    debug!(kite = %kite.id, session = %p_info.id, "tunnel closed");
    // Keep reading until each side has ended, so that the closes are written out.
    tokio::join!(drain(p_rx), drain(t_rx));
}

/// Reads and drops what still comes until the session ends, or [`CLOSE_GRACE`].
async fn drain(mut rx: SessionReceiver) {
    let _ = tokio::time::timeout(CLOSE_GRACE, async { while rx.recv().await.is_some() {} }).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kite_ids_must_fit_in_a_path() {
        assert!(valid_kite_id("0c3e5b0e-0c9f-4a5d-9f8e-1a2b3c4d5e6f"));
        for bad in ["", "a/b", "a.b", "a?b", "a b", &"x".repeat(129)] {
            assert!(!valid_kite_id(bad), "{bad}");
        }
    }

    #[test]
    fn query_params() {
        let uri: Uri = "/proxy/1/2/websocket?kiteID=abc&x=1".parse().unwrap();
        assert_eq!(query_param(&uri, "kiteID").as_deref(), Some("abc"));
        assert_eq!(query_param(&uri, "token"), None);
    }
}
