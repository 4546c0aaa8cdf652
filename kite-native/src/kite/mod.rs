//! [`Kite`]: a process that serves methods and calls other kites.

mod auth;
mod chain;
mod connections;
#[cfg(feature = "server")]
mod serve;

use std::collections::HashMap;
#[cfg(feature = "server")]
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, RwLock, RwLockReadGuard, RwLockWriteGuard};

use kite_core::Kite as KiteIdentity;
#[cfg(feature = "server")]
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::auth::{KiteKeyVerifier, TokenVerifier};
#[cfg(feature = "client")]
use crate::client::Client;
use crate::config::{Config, ConfigError};
use crate::method::Method;

pub use auth::Authenticator;
use auth::Credentials;
use chain::Chain;
use connections::KiteHooks;
pub(crate) use connections::Live;
pub(crate) use connections::{Hook, run_hook};
#[cfg(feature = "server")]
pub use serve::{LISTEN_BACKLOG, listen};

/// What the program registers on a kite, any time but mostly while setting it up, and every
/// request (methods, chain, authenticators) or connection (hooks) reads.
#[derive(Default)]
struct Registry {
    methods: HashMap<String, Method>,
    chain: Chain,
    authenticators: HashMap<String, Authenticator>,
    hooks: KiteHooks,
    /// The routes served beside `/kite`.
    #[cfg(feature = "server")]
    routes: axum::Router,
}

pub(crate) struct KiteInner {
    pub(crate) identity: Arc<KiteIdentity>,
    /// The request head of this kite's calls without credentials, shared by its clients.
    pub(crate) head: Arc<kite_core::RequestHead>,
    pub(crate) config: Config,
    /// Locked: methods, hooks and routes may be registered while requests and connections read.
    registry: RwLock<Registry>,
    /// Locked: verifiers and keys are replaced (key rotations) while requests are checked.
    credentials: RwLock<Credentials>,
    /// Locked: connections open, close and are dialed at run time; one lock as `close` takes all.
    pub(crate) live: Mutex<Live>,
    pub(crate) shutdown: CancellationToken,
    /// The address the server listens on: a channel (a lock inside) so `ready` can wait for it.
    #[cfg(feature = "server")]
    local_addr: watch::Sender<Option<SocketAddr>>,
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

/// Reads `l`, also after a panic while it was held (as [`lock`]).
fn read<T>(l: &RwLock<T>) -> RwLockReadGuard<'_, T> {
    l.read().unwrap_or_else(|e| e.into_inner())
}

/// Writes `l`, also after a panic while it was held (as [`lock`]).
fn write<T>(l: &RwLock<T>) -> RwLockWriteGuard<'_, T> {
    l.write().unwrap_or_else(|e| e.into_inner())
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
            credentials: RwLock::new(Credentials {
                token,
                kite_key_verifier: kite_key,
                kite_key: config.kite_key.clone(),
                kontrol_key: config.kontrol_key.trim().to_owned(),
                audience_check: None,
            }),
            config,
            registry: RwLock::default(),
            live: Mutex::default(),
            shutdown: CancellationToken::new(),
            #[cfg(feature = "server")]
            local_addr: watch::channel(None).0,
            #[cfg(feature = "server")]
            occupancy: crate::sockjs::Occupancy::new(),
        }));
        crate::builtins::register(&kite);
        if kite.0.config.use_webrtc {
            crate::webrtc::serve_relay(&kite, kite.0.config.max_webrtc_peers);
        }
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

    #[cfg(feature = "client")]
    /// A client for the kite at `url` (its SockJS base URL, e.g. `http://host:6000/kite`).
    /// Nothing is dialed until [`Client::dial`] or [`Client::dial_forever`].
    pub fn new_client(&self, url: &str) -> Client {
        Client::new(self.0.clone(), url.to_owned(), false)
    }
}
