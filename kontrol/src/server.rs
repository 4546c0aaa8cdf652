//! The Kontrol kite: `register`, `getKites`, `getToken` and `getKey` over any [`Storage`].
//!
//! ```no_run
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! use std::sync::Arc;
//! use kontrol::server::{Kontrol, KontrolOptions};
//! use kontrol::storage::EmbeddedStorage;
//!
//! let key = kite_native::auth::KeyPair::generate(2048)?;
//! let storage = Arc::new(EmbeddedStorage::open("/var/lib/kontrol/kontrol.db")?);
//! let kontrol = Kontrol::new(
//!     kite_native::Config::default(),
//!     KontrolOptions::new("kontrol", key, "http://127.0.0.1:4000/kite"),
//!     storage,
//! )?;
//! kontrol.kite().run().await?;
//! # Ok(()) }
//! ```

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use kite_native::auth::KeyPair;
use kite_native::core::Kite as KiteIdentity;
use kite_native::core::auth::Claims;
use kite_native::core::kontrol::{
    GetKitesArgs, GetKitesResult, GetTokenArgs, KiteWithToken, RegisterArgs, RegisterResult,
    WatchEvent,
};
use kite_native::{Args, Callback, Config, ErrorKind, Kite, KiteError, Request};
use rand::seq::SliceRandom;
use tracing::{debug, info, warn};

use crate::query::{Matcher, audience};
use crate::storage::{Registration, Storage, expires_in, millis, now_ms};

/// How a Kontrol runs: who it is, the key pair it signs with, and its timings.
#[derive(Clone)]
#[non_exhaustive]
pub struct KontrolOptions {
    /// The Kontrol's username: the issuer (`iss`) of its kite keys and tokens.
    pub username: String,
    /// The URL kites reach this Kontrol at (written into kite keys as `kontrolURL`).
    pub kontrol_url: String,
    /// The key pair kite keys and tokens are signed with.
    pub key: KeyPair,
    /// The id stored with registrations signed by `key`.
    pub key_id: String,
    /// Public keys (PEM) of key pairs rotated out: kite keys they signed are still accepted by
    /// `register`, which answers with a new kite key signed by `key` (and the new public key),
    /// so their holders move to the new pair; nothing else trusts them.
    pub retired_keys: Vec<String>,
    /// How long a token is valid (Go: 48 h).
    pub token_ttl: Duration,
    /// Clock skew allowed: tokens start this much in the past and end this much later (Go:
    /// 5 min).
    pub token_leeway: Duration,
    /// How long a registration lives after the last heartbeat (Go: 90 s).
    pub registration_ttl: Duration,
    /// How often registered kites are asked to ping back (Go: 10 s).
    pub heartbeat_interval: Duration,
    /// Decides who may get a kite key through `registerMachine` (what `kitectl register`
    /// calls); `None` (the default, as Go) turns the method off.
    pub machine_authenticator: Option<MachineAuthenticator>,
}

/// Checks a `registerMachine` request: `Ok(())` to issue a kite key for the caller-declared
/// username, `Err(reason)` to refuse.
pub type MachineAuthenticator = Arc<dyn Fn(&Request) -> Result<(), String> + Send + Sync>;

impl std::fmt::Debug for KontrolOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KontrolOptions")
            .field("username", &self.username)
            .field("kontrol_url", &self.kontrol_url)
            .field("key", &self.key)
            .field("registration_ttl", &self.registration_ttl)
            .finish_non_exhaustive()
    }
}

impl KontrolOptions {
    /// Go's timings for a Kontrol named `username`, signing with `key`, reached at
    /// `kontrol_url`.
    pub fn new(username: &str, key: KeyPair, kontrol_url: &str) -> KontrolOptions {
        KontrolOptions {
            username: username.to_owned(),
            kontrol_url: kontrol_url.to_owned(),
            key,
            key_id: "default".to_owned(),
            retired_keys: Vec::new(),
            token_ttl: Duration::from_secs(48 * 3600),
            token_leeway: Duration::from_secs(300),
            registration_ttl: Duration::from_secs(90),
            heartbeat_interval: Duration::from_secs(10),
            machine_authenticator: None,
        }
    }
}

/// Why a Kontrol could not be made.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The kite could not be made (identity, key).
    #[error(transparent)]
    Kite(#[from] kite_native::Error),
}

/// A Kontrol: the registry kite.
#[derive(Clone)]
pub struct Kontrol {
    kite: Kite,
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Kontrol {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Kontrol")
            .field("username", &self.inner.options.username)
            .field("storage", &self.inner.storage)
            .finish()
    }
}

struct Inner {
    options: KontrolOptions,
    storage: Arc<dyn Storage>,
    /// `getKites` callers watching for kites to come and go.
    watchers: Mutex<Vec<Watcher>>,
    /// The last heartbeat of each kite registered through this Kontrol, for `DEREGISTER`.
    last_seen: Mutex<HashMap<String, u64>>,
    /// The last HTTP heartbeat of each kite registered over HTTP.
    http_seen: crate::http::HttpSeen,
    /// Tokens by (audience, username, key id), with when they stop being handed out.
    tokens: Mutex<HashMap<TokenKey, (String, u64)>>,
}

/// A `getKites` caller watching a query.
struct Watcher {
    id: u64,
    matcher: Matcher,
    username: String,
    callback: Callback,
}

/// A cached token's key: audience, username, key pair id.
type TokenKey = (String, String, String);

fn internal(what: &str, e: impl std::fmt::Display) -> KiteError {
    warn!(error = %e, "{what}");
    KiteError::generic(format!("internal error - {what}"))
}

impl Kontrol {
    /// A Kontrol kite configured by `config` (address, port, TLS, ...; its identity, Kontrol
    /// user and key are set from `options`, authentication is on and `kite.prompt` and
    /// `kite.getPass` are not served), keeping registrations in `storage`.
    pub fn new(
        mut config: Config,
        options: KontrolOptions,
        storage: Arc<dyn Storage>,
    ) -> Result<Kontrol, Error> {
        config.username.clone_from(&options.username);
        config.kontrol_user.clone_from(&options.username);
        config.kontrol_key = options.key.public_pem.trim().to_owned();
        config.kontrol_url.clone_from(&options.kontrol_url);
        config.disable_authentication = false;
        // Nobody types at a Kontrol's terminal: `kite.prompt` and `kite.getPass` are not served.
        config.serve_prompts = false;
        let kite = Kite::with_config("kontrol", env!("CARGO_PKG_VERSION"), config)?;
        // Kite keys of the retired pairs are accepted too, so that `register` can re-key them.
        let trusted: Vec<String> = std::iter::once(&options.key.public_pem)
            .chain(&options.retired_keys)
            .map(|k| k.trim().to_owned())
            .collect();
        kite.set_kite_key_verifier(
            kite_native::auth::KiteKeyVerifier::with_trust(Arc::new(move |key: &str| {
                if trusted.iter().any(|t| t == key) {
                    Ok(())
                } else {
                    Err("kontrol key is not trusted".into())
                }
            }))
            .with_ttl(kite.config().verify_ttl),
        );
        let inner = Arc::new(Inner {
            options,
            storage,
            tokens: Mutex::default(),
            watchers: Mutex::default(),
            last_seen: Mutex::default(),
            http_seen: crate::http::HttpSeen::default(),
        });
        let k = Kontrol { kite, inner };
        k.install();
        k.install_http();
        Ok(k)
    }

    /// The kite serving Kontrol's methods (run it with [`Kite::run`]).
    pub fn kite(&self) -> &Kite {
        &self.kite
    }

    /// The storage.
    pub fn storage(&self) -> &Arc<dyn Storage> {
        &self.inner.storage
    }

    /// The options.
    pub fn options(&self) -> &KontrolOptions {
        &self.inner.options
    }

    pub(crate) fn seen_over_http(&self, id: &str) {
        lock(&self.inner.http_seen).insert(id.to_owned(), now_ms());
    }

    pub(crate) fn http_seen_within(&self, id: &str, ttl: Duration) -> bool {
        let ttl_ms = millis(ttl);
        lock(&self.inner.http_seen)
            .get(id)
            .is_some_and(|t| now_ms().saturating_sub(*t) < ttl_ms)
    }

    /// Signs a kite key for `username` (what `registerMachine` and `kontrol --initial` hand
    /// out): no expiry, the Kontrol's URL and public key inside.
    pub fn kite_key_for(&self, username: &str) -> Result<String, KiteError> {
        let o = &self.inner.options;
        let now = unix_now();
        let claims = Claims {
            iss: o.username.clone(),
            sub: username.to_owned(),
            iat: Some(now - to_secs(o.token_leeway)),
            jti: uuid::Uuid::new_v4().to_string(),
            kontrol_url: o.kontrol_url.clone(),
            kontrol_key: o.key.public_pem.trim().to_owned(),
            ..Claims::default()
        };
        o.key
            .sign(&claims)
            .map_err(|e| internal("sign kite key", e))
    }

    /// `registerMachine`: a kite key for the caller-declared username, if the machine
    /// authenticator accepts the request.
    fn register_machine(&self, req: &Request) -> Result<String, KiteError> {
        let Some(check) = &self.inner.options.machine_authenticator else {
            return Err(KiteError::new(
                ErrorKind::Authentication,
                "registerMachine is disabled on this Kontrol",
            ));
        };
        check(req).map_err(|e| {
            KiteError::new(
                ErrorKind::Authentication,
                format!("cannot authenticate user: {e}"),
            )
        })?;
        if req.caller.username.is_empty() {
            return Err(KiteError::argument("no username"));
        }
        info!(username = %req.caller.username, "issuing a kite key");
        self.kite_key_for(&req.caller.username)
    }

    fn install(&self) {
        let inner = self.inner.clone();
        self.kite.handle("register", move |req: Request| {
            let inner = inner.clone();
            async move { inner.register(req).await }
        });
        let inner = self.inner.clone();
        self.kite.handle("getKites", move |req: Request| {
            let inner = inner.clone();
            async move { inner.get_kites(req).await }
        });
        let inner = self.inner.clone();
        self.kite.handle("getToken", move |req: Request| {
            let inner = inner.clone();
            async move { inner.get_token(req).await }
        });
        let k = self.clone();
        self.kite
            .handle("registerMachine", move |req: Request| {
                let k = k.clone();
                async move { k.register_machine(&req) }
            })
            .disable_authentication();
        let inner = self.inner.clone();
        self.kite.handle("getKey", move |req: Request| {
            let inner = inner.clone();
            async move { inner.get_key(&req) }
        });
        // Expired registrations are invisible already; this keeps the store small.
        let inner = Arc::downgrade(&self.inner);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(60));
            loop {
                tick.tick().await;
                let Some(inner) = inner.upgrade() else { return };
                if let Err(e) = inner.storage.purge_expired().await {
                    debug!(error = %e, "purging expired registrations failed");
                }
            }
        });
    }
}

fn unix_now() -> i64 {
    i64::try_from(now_ms() / 1000).unwrap_or(i64::MAX)
}

fn to_secs(d: Duration) -> i64 {
    i64::try_from(d.as_secs()).unwrap_or(i64::MAX)
}

impl Inner {
    fn require_kite_key(req: &Request) -> Result<(), KiteError> {
        match req.auth.as_deref() {
            Some(a) if a.kind == "kiteKey" => Ok(()),
            Some(a) => Err(KiteError::new(
                ErrorKind::Authentication,
                format!("Unexpected authentication type: {}", a.kind),
            )),
            None => Err(KiteError::new(
                ErrorKind::Authentication,
                "No authentication information is provided",
            )),
        }
    }

    async fn register(self: Arc<Self>, req: Request) -> Result<RegisterResult, KiteError> {
        Self::require_kite_key(&req)?;
        let args: RegisterArgs = req.arg()?;
        let url = args.url.trim().to_owned();
        if url.is_empty() {
            return Err(KiteError::argument("empty url"));
        }
        kite_native::transport::parse_base_url(&url)
            .map_err(|e| KiteError::argument(format!("invalid register URL: {e}")))?;
        let kite = (*req.caller).clone();
        kite.validate()
            .map_err(|e| KiteError::argument(format!("invalid kite: {e}")))?;
        let o = &self.options;
        // A kite key signed by a retired pair: the same claims, signed by the current pair.
        let (kite_key, public_key) = self.rekey(&req)?;
        let registration = Registration::new(kite.clone(), &url, &o.key_id, o.registration_ttl);
        self.storage
            .upsert(&registration)
            .await
            .map_err(|e| internal("register", e))?;
        info!(kite = %kite, %url, "registered");
        self.clone().keep_alive(&req, kite.clone());
        self.notify("REGISTER", &kite, &url);
        Ok(RegisterResult {
            url,
            heartbeat_interval: 0,
            kite_key,
            public_key,
        })
    }

    /// For a caller whose kite key names a retired Kontrol key: a new kite key with the same
    /// claims signed by the current pair, and the current public key; else (the current key,
    /// or another key the Kontrol's verifier trusts) two empty strings.
    fn rekey(&self, req: &Request) -> Result<(String, String), KiteError> {
        let Some(auth) = req.auth.as_deref() else {
            return Ok((String::new(), String::new()));
        };
        let mut claims = jsonwebtoken::dangerous::insecure_decode::<Claims>(&auth.key)
            .map_err(|e| KiteError::argument(format!("kite key: {e}")))?
            .claims;
        let current = self.options.key.public_pem.trim();
        let retired = self
            .options
            .retired_keys
            .iter()
            .any(|k| k.trim() == claims.kontrol_key.trim());
        if !retired {
            return Ok((String::new(), String::new()));
        }
        claims.kontrol_key = current.to_owned();
        let key = self
            .options
            .key
            .sign(&claims)
            .map_err(|e| internal("re-sign kite key", e))?;
        info!(username = %claims.sub, "kite key re-signed with the current key pair");
        Ok((key, current.to_owned()))
    }

    /// Asks the kite to ping back every heartbeat interval; each ping pushes its expiry. When
    /// the pings stop for the registration's lifetime, watchers hear `DEREGISTER`.
    fn keep_alive(self: Arc<Self>, req: &Request, kite: KiteIdentity) {
        let weak = Arc::downgrade(&self);
        let ttl = self.options.registration_ttl;
        let id = kite.id.clone();
        lock(&self.last_seen).insert(id.clone(), now_ms());
        let ping_id = id.clone();
        let ping = Callback::new(move |_args: Args| {
            let Some(inner) = weak.upgrade() else { return };
            lock(&inner.last_seen).insert(ping_id.clone(), now_ms());
            let id = ping_id.clone();
            tokio::spawn(async move {
                match inner.storage.refresh(&id, expires_in(ttl)).await {
                    Ok(true) => {}
                    Ok(false) => debug!(%id, "heartbeat from a kite no longer registered"),
                    Err(e) => warn!(%id, error = %e, "refreshing a registration failed"),
                }
            });
        });
        let client = req.client.clone();
        let interval = self.options.heartbeat_interval.as_secs_f64();
        tokio::spawn(async move {
            if let Err(e) = client
                .tell_with_timeout("kite.heartbeat", (interval, ping), Duration::from_secs(4))
                .await
            {
                warn!(error = %e, "the kite did not accept heartbeats");
            }
        });
        let weak = Arc::downgrade(&self);
        tokio::spawn(async move {
            let ttl_ms = millis(ttl);
            loop {
                tokio::time::sleep(ttl / 2).await;
                let Some(inner) = weak.upgrade() else { return };
                let last = lock(&inner.last_seen).get(&id).copied();
                match last {
                    // Registered again meanwhile, by another keep-alive: that one watches.
                    None => return,
                    Some(t) if now_ms().saturating_sub(t) >= ttl_ms => {
                        lock(&inner.last_seen).remove(&id);
                        info!(kite = %kite, "no heartbeats: deregistered");
                        inner.notify("DEREGISTER", &kite, "");
                        return;
                    }
                    Some(_) => {}
                }
            }
        });
    }

    /// Tells the watchers whose query matches `kite` that it registered or went away.
    fn notify(&self, action: &str, kite: &KiteIdentity, url: &str) {
        let watchers: Vec<(u64, String, Callback, String)> = lock(&self.watchers)
            .iter()
            .filter(|w| w.matcher.matches(kite))
            .map(|w| {
                (
                    w.id,
                    audience(w.matcher.query(), kite),
                    w.callback.clone(),
                    w.username.clone(),
                )
            })
            .collect();
        let mut gone = Vec::new();
        for (id, aud, callback, username) in watchers {
            let token = if action == "REGISTER" {
                self.token(&aud, &username, false).unwrap_or_default()
            } else {
                String::new()
            };
            let event = WatchEvent {
                action: action.to_owned(),
                kite: kite.clone(),
                url: url.to_owned(),
                token,
            };
            if callback
                .call((serde_json::json!({ "result": event }),))
                .is_err()
            {
                gone.push(id);
            }
        }
        if !gone.is_empty() {
            lock(&self.watchers).retain(|w| !gone.contains(&w.id));
        }
    }

    fn token(&self, aud: &str, username: &str, force: bool) -> Result<String, KiteError> {
        let o = &self.options;
        let key = (aud.to_owned(), username.to_owned(), o.key_id.clone());
        let now = now_ms();
        if !force
            && let Some((token, until)) = lock(&self.tokens).get(&key)
            && now < *until
        {
            return Ok(token.clone());
        }
        let secs = unix_now();
        let leeway = to_secs(o.token_leeway);
        let claims = Claims {
            iss: o.username.clone(),
            sub: username.to_owned(),
            aud: aud.to_owned(),
            exp: Some(secs + to_secs(o.token_ttl) + leeway),
            iat: Some(secs - leeway),
            nbf: Some(secs - leeway),
            jti: uuid::Uuid::new_v4().to_string(),
            ..Claims::default()
        };
        let token = o.key.sign(&claims).map_err(|e| internal("sign token", e))?;
        let reuse_for = o.token_ttl.saturating_sub(o.token_leeway);
        let mut tokens = lock(&self.tokens);
        if tokens.len() > 100_000 {
            tokens.retain(|_, (_, until)| now < *until);
        }
        tokens.insert(key, (token.clone(), expires_in(reuse_for)));
        Ok(token)
    }

    async fn get_kites(self: Arc<Self>, req: Request) -> Result<GetKitesResult, KiteError> {
        let args: GetKitesArgs = req.arg()?;
        let query = args
            .query
            .ok_or_else(|| KiteError::argument("query is missing"))?;
        let matcher =
            Matcher::new(&query).map_err(|e| KiteError::argument(format!("invalid query: {e}")))?;
        if let Some(callback) = args.watch_callback {
            static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);
            let id = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            lock(&self.watchers).push(Watcher {
                id,
                matcher: matcher.clone(),
                username: req.username.clone(),
                callback,
            });
            // The watch ends with the caller's connection.
            let client = req.client.clone();
            let weak = Arc::downgrade(&self);
            tokio::spawn(async move {
                client.disconnected().await;
                if let Some(inner) = weak.upgrade() {
                    lock(&inner.watchers).retain(|w| w.id != id);
                }
            });
        }
        let mut found = self
            .storage
            .get(&matcher)
            .await
            .map_err(|e| internal("getKites", e))?;
        found.shuffle(&mut rand::rng());
        let kites = found
            .into_iter()
            .map(|r| {
                let token = self.token(&audience(&query, &r.kite), &req.username, false)?;
                Ok(KiteWithToken {
                    kite: r.kite,
                    url: r.url,
                    key_id: r.key_id,
                    token,
                })
            })
            .collect::<Result<Vec<_>, KiteError>>()?;
        Ok(GetKitesResult { kites })
    }

    async fn get_token(self: Arc<Self>, req: Request) -> Result<String, KiteError> {
        let args: GetTokenArgs = req.arg()?;
        let matcher = Matcher::new(&args.query)
            .map_err(|e| KiteError::argument(format!("invalid query: {e}")))?;
        let found = self
            .storage
            .get(&matcher)
            .await
            .map_err(|e| internal("getToken", e))?;
        match found.as_slice() {
            [] => Err(KiteError::generic("no kites found")),
            [r] => self.token(&audience(&args.query, &r.kite), &req.username, args.force),
            _ => Err(KiteError::generic("query matches more than one kite")),
        }
    }

    fn get_key(&self, req: &Request) -> Result<String, KiteError> {
        Self::require_kite_key(req)?;
        Ok(self.options.key.public_pem.trim().to_owned())
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}
