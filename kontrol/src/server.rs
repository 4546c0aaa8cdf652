//! The Kontrol kite: `register`, `getKites` (with watches, and Kite.js's `cancelWatcher`),
//! `getToken` and `getKey` over any [`Storage`].
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
//!
//! # Ownership and budgets
//!
//! A registration belongs to the user whose kite key made it (its `kite.username`): while it is
//! live, `register` (or `POST /register`) of the same kite id by another user is refused with an
//! `authenticationError` (HTTP 403) and changes nothing, and that user's heartbeats cannot keep
//! it alive; once it has expired, the id is anyone's. Each storage decides this atomically (see
//! [`crate::storage`]). Go Kontrol lets any kite key holder overwrite any kite id.
//!
//! What a peer can make this Kontrol hold is bounded by [`KontrolOptions`]'s budgets:
//! registrations per user, per kite key and per connection, and watchers per connection. A
//! register or watch past one is answered with a `requestLimitError` (HTTP 429) naming the
//! budget, and nothing is stored or started. The counts are this Kontrol process's (Kontrols
//! sharing a storage each count what was registered through them) and are kept up to date as
//! registrations come and go, never by scanning the storage. A slot is freed when its
//! registration is replaced, or goes stale (no heartbeat for `registration_ttl`, noticed within
//! a tenth of it more, at most a second), and a connection's slots and watchers when the
//! connection ends.
//!
//! # Liveness
//!
//! A kite registered over dnode is alive while it answers heartbeats. Heartbeats touch this
//! process's memory only; the storage is written once per
//! [`KontrolOptions::storage_refresh_interval`] per kite (batched), with an expiry far enough
//! ahead that no live kite expires between writes. A kite goes, is deleted from the storage and
//! its watchers hear `DEREGISTER`:
//! - at once when the connection it registered over ends (a kite that reconnects registers
//!   again; Go Kontrol waits for the TTL);
//! - `registration_ttl` after its last heartbeat otherwise.
//!
//! The delete is conditional: it removes the registration only as this Kontrol last wrote it,
//! so a kite that has meanwhile registered through another Kontrol sharing the storage stays.
//! The Kontrol also registers itself (Go's `registerSelf`; [`KontrolOptions::register_self`]).
//!
//! # Key pairs
//!
//! The pairs Kontrol signs and trusts with are its storage's ([`crate::keys`] says which one
//! signs and when they are read again). The configured [`KontrolOptions::key`] is stored on
//! start unless it is there. Kite keys of live pairs are accepted as they are; those of deleted
//! pairs (and [`KontrolOptions::retired_keys`]) are accepted too, and `register` answers them
//! with a new kite key of the current pair, `getKey` with the current public key. Tokens for a
//! kite are signed by the pair of its registration while that pair is live, else by the current
//! one; every JWT names its pair in the header's `kid`. Tokens presented to Kontrol itself are
//! checked with the live pair their `kid` names (read from the storage first when the ring does
//! not know that id: another Kontrol may have just added it), or with the newest live pairs when
//! they name none ([`crate::keys::KEYS_TRIED_WITHOUT_KID`]); a deleted pair's are refused as
//! expired, as Go refuses a token of a key it no longer has. `listKeyPairs`, `addKeyPair` and
//! `deleteKeyPair` ([`crate::keys::AddKeyPairArgs`], [`crate::keys::DeleteKeyPairArgs`],
//! answered with [`crate::keys::KeyPairInfo`]) are for the Kontrol's own user
//! ([`KontrolOptions::username`]); anyone else gets an `authenticationError`.

use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use kite_native::auth::{KeyLookup, KeyPair, KiteKeyVerifier, TokenVerifier};
use kite_native::core::Kite as KiteIdentity;
use kite_native::core::auth::Claims;
use kite_native::core::kontrol::{
    GetKitesArgs, GetKitesResult, GetTokenArgs, KiteWithToken, RegisterArgs, RegisterResult,
    WatchEvent,
};
use kite_native::{Args, Callback, Config, ErrorKind, Kite, KiteError, Request};
use rand::seq::SliceRandom;
use tracing::{debug, info, warn};

use crate::keys::{AddKeyPairArgs, DeleteKeyPairArgs, KeyPairInfo, KeyRing, Standing, check_pair};
use crate::ledger::{Budgets, Heard, Ledger, Refusal, Via};
use crate::query::{Matcher, audience};
use crate::storage::events::{Action, Change};
use crate::storage::{KeyRecord, Registration, Storage, StorageError, expires_in, millis, now_ms};

/// How a Kontrol runs: who it is, the key pair it signs with, and its timings.
#[derive(Clone)]
#[non_exhaustive]
pub struct KontrolOptions {
    /// The Kontrol's username: the issuer (`iss`) of its kite keys and tokens.
    pub username: String,
    /// The URL kites reach this Kontrol at (written into kite keys as `kontrolURL`).
    pub kontrol_url: String,
    /// The configured key pair. On start it is added to the storage's key pairs under
    /// `key_id`, to sign ([`crate::storage::KeyRecord::signing`]), unless its public key is
    /// stored already; the pair that signs kite keys and tokens is then the newest live signing
    /// pair of the storage (see [`crate::keys`]), which is this one until another is added to
    /// sign. It signs too while the storage's pairs cannot be read.
    pub key: KeyPair,
    /// The id `key` is stored under (default `default`; if a different pair is stored under
    /// it, `key` is stored under a new UUID).
    pub key_id: String,
    /// Public keys (PEM) of key pairs rotated out that the storage does not hold: kite keys
    /// they signed are accepted as those of a deleted pair are: `register` answers with a new
    /// kite key signed by the current pair (and the new public key), so their holders move to
    /// it, and `getKey` answers the current public key.
    pub retired_keys: Vec<String>,
    /// How often the key pairs are read from the storage again, so that pairs added or deleted
    /// through another Kontrol sharing it are used here (default 5 s). A kite key naming a
    /// public key, or a token naming a pair id (`kid`), this Kontrol does not know makes it read
    /// them at once, before refusing it.
    pub key_reload_interval: Duration,
    /// How long a token is valid (Go: 48 h).
    pub token_ttl: Duration,
    /// Clock skew allowed: tokens start this much in the past and end this much later (Go:
    /// 5 min).
    pub token_leeway: Duration,
    /// How long a registration lives after the last heartbeat (Go: 90 s).
    pub registration_ttl: Duration,
    /// How often registered kites are asked to ping back (Go: 10 s).
    pub heartbeat_interval: Duration,
    /// How often a heartbeating kite's registration is written to the storage (default 45 s,
    /// and at most half of `registration_ttl`; Go's `UpdateInterval` is 60 s). Each write
    /// stores an expiry `registration_ttl` plus this interval ahead, so a live kite never
    /// expires between writes, and heartbeats in between touch only this process's memory.
    /// The writes heartbeats make due are gathered and written together.
    ///
    /// Liveness stays exact: a kite that stops heartbeating (or whose connection ends) is
    /// deleted from the storage by this Kontrol `registration_ttl` after its last heartbeat
    /// (within a second, at once when the connection ends), and its watchers hear
    /// `DEREGISTER`. Only if this Kontrol is gone too does the registration live on in a shared
    /// storage until its stored expiry, at most `registration_ttl` plus this interval after the
    /// last write.
    pub storage_refresh_interval: Duration,
    /// Whether the Kontrol keeps a registration of itself (its own kite, at `kontrol_url`) in the
    /// storage, as Go's `registerSelf` does, so that `getKites` for name `kontrol` finds every
    /// Kontrol serving the registry (default on; a Kontrol without a `kontrol_url` has nothing
    /// to register).
    pub register_self: bool,
    /// Decides who may get a kite key through `registerMachine` (what `kitectl register`
    /// calls); `None` (the default, as Go) turns the method off.
    pub machine_authenticator: Option<MachineAuthenticator>,
    /// Live registrations this Kontrol keeps for one user, over every kite key, connection and
    /// HTTP (default 10,000). A register of a new kite id past it is answered with a
    /// `requestLimitError` (HTTP 429) and stores nothing.
    pub max_registrations_per_user: usize,
    /// Live registrations this Kontrol keeps for one kite key, told apart by its `jti` claim
    /// (else by a hash of the key) (default 1,000); past it as above.
    pub max_registrations_per_key: usize,
    /// Distinct kite ids registered over one dnode connection (default 16); past it as above.
    /// Registering an id again on the same connection takes no new slot (its keep-alive stays
    /// the one it has); the slots are freed when the connection ends.
    pub max_registrations_per_connection: usize,
    /// `getKites` calls with a `watchCallback` one connection may have watching at once
    /// (default 100); one past it is answered with a `requestLimitError` and watches nothing.
    /// The watches end with the connection.
    pub max_watchers_per_connection: usize,
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
            .field(
                "max_registrations_per_user",
                &self.max_registrations_per_user,
            )
            .field("max_registrations_per_key", &self.max_registrations_per_key)
            .field(
                "max_registrations_per_connection",
                &self.max_registrations_per_connection,
            )
            .field(
                "max_watchers_per_connection",
                &self.max_watchers_per_connection,
            )
            .finish_non_exhaustive()
    }
}

impl KontrolOptions {
    /// Go's timings for a Kontrol named `username`, signing with `key`, reached at
    /// `kontrol_url`, with the default budgets.
    pub fn new(username: &str, key: KeyPair, kontrol_url: &str) -> KontrolOptions {
        KontrolOptions {
            username: username.to_owned(),
            kontrol_url: kontrol_url.to_owned(),
            key,
            key_id: "default".to_owned(),
            retired_keys: Vec::new(),
            key_reload_interval: Duration::from_secs(5),
            token_ttl: Duration::from_secs(48 * 3600),
            token_leeway: Duration::from_secs(300),
            registration_ttl: Duration::from_secs(90),
            heartbeat_interval: Duration::from_secs(10),
            storage_refresh_interval: Duration::from_secs(45),
            register_self: true,
            machine_authenticator: None,
            max_registrations_per_user: 10_000,
            max_registrations_per_key: 1_000,
            max_registrations_per_connection: 16,
            max_watchers_per_connection: 100,
        }
    }
}

/// What a Kontrol process holds for its peers right now ([`Kontrol::stats`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct KontrolStats {
    /// Registrations made through this process and kept alive by it (including ones gone
    /// stale that the next sweep drops).
    pub registrations: usize,
    /// Users with at least one of them.
    pub users: usize,
    /// Kite keys with at least one of them.
    pub keys: usize,
    /// Dnode connections that registered or watched and have not ended.
    pub connections: usize,
    /// `getKites` watchers.
    pub watchers: usize,
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

pub(crate) struct Inner {
    options: KontrolOptions,
    storage: Arc<dyn Storage>,
    /// The key pairs, read from the storage.
    pub(crate) keys: Arc<KeyRing>,
    /// Checks kite keys' signatures (trusting the ring's pairs, live or deleted, and the
    /// retired keys) and remembers the keys it accepted.
    verifier: Arc<KiteKeyVerifier>,
    /// Checks tokens presented to this Kontrol against the ring's live pairs, by `kid`.
    token_verifier: Arc<TokenVerifier>,
    /// The registrations made through this Kontrol, its connections and watchers, and the
    /// budgets.
    pub(crate) ledger: Ledger,
    /// Tokens by (audience, username, key id), with when they stop being handed out.
    tokens: Mutex<HashMap<TokenKey, (String, u64)>>,
    /// Storage refreshes heartbeats made due, to be written together: (id, owner, way).
    due: Mutex<Vec<(String, String, Via)>>,
    /// Wakes the writer of `due`.
    due_added: Arc<tokio::sync::Notify>,
    /// This Kontrol's kite id: the origin of the watch events it publishes.
    origin: String,
}

/// The most refreshes written in one storage call. (10,000 was tried: at 100,000 kites on the
/// embedded store it raised Kontrol's RSS after the register burst from about 380 to 440–500 MiB.)
const REFRESH_BATCH: usize = 1_000;

/// The most deletes of registrations that went sent to the storage at once.
const DELETE_BATCH: usize = 256;

/// How long the refresh writer waits after the first due refresh for more to join it.
const REFRESH_GATHER: Duration = Duration::from_millis(100);

/// The interval between storage writes of a heartbeating kite's registration.
fn refresh_gap(o: &KontrolOptions) -> Duration {
    o.storage_refresh_interval.min(o.registration_ttl / 2)
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
        let keys = Arc::new(KeyRing::new(
            &options.key,
            &options.key_id,
            &options.retired_keys,
        ));
        // Kite keys of every pair the ring holds are accepted, deleted and retired ones too, so
        // that `register` can re-key them. (The `kiteKey` authenticator reads the storage again
        // before a key the ring does not know gets here.)
        let ring = keys.clone();
        let verifier = KiteKeyVerifier::with_trust(Arc::new(move |key: &str| {
            match ring.state().standing(key) {
                Standing::Unknown => Err("kontrol key is not trusted".into()),
                _ => Ok(()),
            }
        }))
        .with_ttl(kite.config().verify_ttl);
        let ledger = Ledger::new(
            Budgets {
                per_user: options.max_registrations_per_user,
                per_key: options.max_registrations_per_key,
                per_connection: options.max_registrations_per_connection,
                watchers_per_connection: options.max_watchers_per_connection,
            },
            millis(options.registration_ttl),
            millis(refresh_gap(&options)),
        );
        kite.set_kite_key_verifier(verifier);
        let verifier = kite
            .kite_key_verifier()
            .expect("the kite key verifier was just set");
        // Tokens: checked with the pair their `kid` names, as the ring knows it now.
        let ring = keys.clone();
        let lookup: KeyLookup = Arc::new(move |kid| ring.state().verifying_keys(kid));
        let token_verifier = TokenVerifier::with_key_lookup(
            &options.username,
            lookup,
            Arc::new(kite.identity().clone()),
        );
        kite.set_token_verifier(token_verifier);
        let token_verifier = kite
            .token_verifier()
            .expect("the token verifier was just set");
        keys.forget_tokens_on_change(token_verifier.clone());
        let inner = Arc::new(Inner {
            options,
            storage,
            keys,
            verifier,
            token_verifier,
            tokens: Mutex::default(),
            ledger,
            due: Mutex::default(),
            due_added: Arc::default(),
            origin: kite.identity().id.clone(),
        });
        let k = Kontrol { kite, inner };
        k.install();
        k.install_http();
        Ok(k)
    }

    /// Keeps this Kontrol's own registration (Go's `registerSelf`): written now, and again
    /// every storage refresh interval, retried every second while the storage fails; it goes
    /// when the Kontrol does (stays until its stored expiry).
    fn keep_self_registered(&self) {
        let inner = Arc::downgrade(&self.inner);
        let kite = self.kite.identity().clone();
        tokio::spawn(async move {
            loop {
                let Some(inner) = inner.upgrade() else { return };
                let o = &inner.options;
                inner.keys.ready(&*inner.storage).await;
                let key_id = inner.keys.state().signer.id.clone();
                let registration =
                    Registration::new(kite.clone(), &o.kontrol_url, &key_id, inner.lifetime());
                let wait = match inner.storage.upsert(&registration).await {
                    Ok(()) => refresh_gap(o),
                    Err(e) => {
                        warn!(error = %e, "registering the Kontrol itself failed");
                        Duration::from_secs(1)
                    }
                };
                drop(inner);
                tokio::time::sleep(wait).await;
            }
        });
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

    /// What this process holds for its peers right now: registrations, connections, watchers.
    pub fn stats(&self) -> KontrolStats {
        let c = self.inner.ledger.counts();
        KontrolStats {
            registrations: c.registrations,
            users: c.users,
            keys: c.keys,
            connections: c.connections,
            watchers: c.watchers,
        }
    }

    pub(crate) fn inner(&self) -> &Arc<Inner> {
        &self.inner
    }

    /// Signs a kite key for `username` (what `registerMachine` and `kontrol --initial` hand
    /// out): no expiry, the Kontrol's URL and the current public key inside, the current pair's
    /// id in the header (`kid`). The current pair is the one of the key pairs last read (the
    /// configured pair before they are read).
    pub fn kite_key_for(&self, username: &str) -> Result<String, KiteError> {
        let o = &self.inner.options;
        let now = unix_now();
        let state = self.inner.keys.state();
        let signer = &state.signer;
        let claims = Claims {
            iss: o.username.clone(),
            sub: username.to_owned(),
            iat: Some(now - to_secs(o.token_leeway)),
            jti: uuid::Uuid::new_v4().to_string(),
            kontrol_url: o.kontrol_url.clone(),
            kontrol_key: signer.public_pem.clone(),
            ..Claims::default()
        };
        state
            .sign(signer, &claims)
            .map_err(|e| internal("sign kite key", e))
    }

    /// The key pairs (deleted ones too, oldest first) as last read from the storage, and which
    /// one signs.
    pub async fn key_pairs(&self) -> Vec<KeyPairInfo> {
        let inner = &self.inner;
        inner.keys.ready(&*inner.storage).await;
        inner.keys.state().list()
    }

    /// Reads the key pairs from the storage again now (this Kontrol also does every
    /// [`KontrolOptions::key_reload_interval`]).
    pub async fn reload_key_pairs(&self) -> Result<(), StorageError> {
        let inner = &self.inner;
        inner.keys.ready(&*inner.storage).await;
        inner.keys.reload(&*inner.storage).await
    }

    /// Adds a key pair (Go's `AddKeyPair`): the one given, or a new 2048-bit one, under the id
    /// given or a new UUID; with `current` it becomes the signing pair, here at once and on the
    /// other Kontrols of the storage when they next read it. What `addKeyPair` does for the
    /// Kontrol's user.
    pub async fn add_key_pair(&self, args: AddKeyPairArgs) -> Result<KeyPairInfo, KiteError> {
        self.inner.add_key_pair(args).await
    }

    /// Deletes key pair `id` (Go's `DeleteKeyPair`, a soft delete): kite keys it signed are
    /// re-keyed on `register`, tokens for kites registered with it are signed by the current
    /// pair. The signing pair cannot be deleted (add another with `current` first). What
    /// `deleteKeyPair` does for the Kontrol's user.
    pub async fn delete_key_pair(&self, id: &str) -> Result<KeyPairInfo, KiteError> {
        self.inner.delete_key_pair(id).await
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
        self.kite.handle("cancelWatcher", move |req: Request| {
            let inner = inner.clone();
            async move { inner.cancel_watcher(&req) }
        });
        let inner = self.inner.clone();
        self.kite.handle("getKey", move |req: Request| {
            let inner = inner.clone();
            async move { inner.get_key(&req).await }
        });
        // Kite keys: checked against the ring, read again first when it does not know the key.
        let weak = Arc::downgrade(&self.inner);
        self.kite.authenticator("kiteKey", move |req: Request| {
            let weak = weak.clone();
            async move {
                let Some(inner) = weak.upgrade() else {
                    return Err(KiteError::generic("kontrol is closed"));
                };
                let key = req
                    .auth
                    .as_deref()
                    .map(|a| a.key.clone())
                    .unwrap_or_default();
                inner
                    .verify_kite_key(&key, req.kite_key_verifier())
                    .await
                    .map_err(|m| KiteError::new(ErrorKind::Authentication, m))
            }
        });
        // Tokens: checked by `kid` against the ring, read again first when it does not know it.
        let weak = Arc::downgrade(&self.inner);
        self.kite.authenticator("token", move |req: Request| {
            let weak = weak.clone();
            async move {
                let Some(inner) = weak.upgrade() else {
                    return Err(KiteError::generic("kontrol is closed"));
                };
                let token = req.auth.as_deref().map(|a| a.key.as_str()).unwrap_or("");
                inner
                    .verify_token(token)
                    .await
                    .map_err(|m| KiteError::new(ErrorKind::Authentication, m))
            }
        });
        // Key pair management, for the Kontrol's own user.
        let inner = self.inner.clone();
        self.kite.handle("listKeyPairs", move |req: Request| {
            let inner = inner.clone();
            async move {
                inner.require_owner(&req)?;
                inner.keys.ready(&*inner.storage).await;
                if let Err(e) = inner.keys.reload(&*inner.storage).await {
                    return Err(internal("listKeyPairs", e));
                }
                Ok::<_, KiteError>(inner.keys.state().list())
            }
        });
        let inner = self.inner.clone();
        self.kite.handle("addKeyPair", move |req: Request| {
            let inner = inner.clone();
            async move {
                inner.require_owner(&req)?;
                let given: Vec<serde_json::Value> = req.args()?;
                let args: AddKeyPairArgs = match given.into_iter().next() {
                    None | Some(serde_json::Value::Null) => AddKeyPairArgs::default(),
                    Some(v) => serde_json::from_value(v)
                        .map_err(|e| KiteError::argument(format!("addKeyPair: {e}")))?,
                };
                inner.add_key_pair(args).await
            }
        });
        let inner = self.inner.clone();
        self.kite.handle("deleteKeyPair", move |req: Request| {
            let inner = inner.clone();
            async move {
                inner.require_owner(&req)?;
                let args: DeleteKeyPairArgs = req.arg()?;
                inner.delete_key_pair(&args.id).await
            }
        });
        // The key pairs, read again every reload interval (the first read right away).
        let inner = Arc::downgrade(&self.inner);
        let every = self
            .inner
            .options
            .key_reload_interval
            .max(Duration::from_millis(10));
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            let mut first = true;
            loop {
                tick.tick().await;
                let Some(inner) = inner.upgrade() else { return };
                inner.keys.ready(&*inner.storage).await;
                if !std::mem::take(&mut first)
                    && let Err(e) = inner.keys.reload(&*inner.storage).await
                {
                    debug!(error = %e, "reading the key pairs failed");
                }
            }
        });
        // Registrations whose heartbeats stopped: deleted, their slots go, their watchers hear
        // it.
        let inner = Arc::downgrade(&self.inner);
        let every = (self.inner.options.registration_ttl / 10)
            .clamp(Duration::from_millis(10), Duration::from_secs(1));
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                let Some(inner) = inner.upgrade() else { return };
                let gone = inner.ledger.sweep(now_ms());
                if !gone.is_empty() {
                    info!(count = gone.len(), "no heartbeats: deregistering");
                    inner.deregister(gone).await;
                }
            }
        });
        // The storage refreshes heartbeats made due.
        let inner = Arc::downgrade(&self.inner);
        tokio::spawn(async move {
            loop {
                let Some(strong) = inner.upgrade() else {
                    return;
                };
                let notify = strong.due_added.clone();
                drop(strong);
                // Woken by a due refresh, or every few seconds to notice the Kontrol has gone.
                let added = notify.notified();
                if tokio::time::timeout(Duration::from_secs(5), added)
                    .await
                    .is_err()
                {
                    continue;
                }
                tokio::time::sleep(REFRESH_GATHER).await;
                let Some(inner) = inner.upgrade() else { return };
                inner.write_due().await;
            }
        });
        // What other Kontrols on the storage announce, for the watchers here.
        if let Some(mut changes) = self.inner.storage.subscribe() {
            let inner = Arc::downgrade(&self.inner);
            tokio::spawn(async move {
                loop {
                    let change = match changes.recv().await {
                        Ok(change) => change,
                        Err(tokio::sync::broadcast::error::RecvError::Lagged(n)) => {
                            warn!(missed = n, "watch events from other Kontrols were missed");
                            continue;
                        }
                        Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
                    };
                    let Some(inner) = inner.upgrade() else { return };
                    if change.origin != inner.origin {
                        inner.notify(
                            change.action.as_str(),
                            &change.kite,
                            &change.url,
                            &change.key_id,
                        );
                    }
                }
            });
        }
        if self.inner.options.register_self && !self.inner.options.kontrol_url.is_empty() {
            self.keep_self_registered();
        }
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
        // A kite key of a deleted or retired pair: the same claims, signed by the current pair.
        let auth_key = req
            .auth
            .as_deref()
            .map(|a| a.key.clone())
            .unwrap_or_default();
        let (kite_key, public_key, key_id) = self.key_for_register(&auth_key)?;
        let key = req
            .auth
            .as_deref()
            .map(|a| key_identity(&kite.username, &a.key))
            .unwrap_or_default();
        let conn = self.connection(&req.client);
        let via = Via::Dnode(conn);
        let reservation = self
            .ledger
            .reserve(&kite, &key, via, now_ms())
            .map_err(|r| refusal(&kite.id, r))?;
        let registration = Registration::new(kite.clone(), &url, &key_id, self.lifetime());
        if let Err(e) = self.storage.upsert(&registration).await {
            self.ledger.release(reservation);
            return Err(match e {
                StorageError::OwnedByAnother { .. } => refusal(&kite.id, Refusal::Owned),
                StorageError::Rejected(why) => KiteError::argument(format!("register: {why}")),
                e => internal("register", e),
            });
        }
        let committed = self.ledger.commit(
            reservation,
            kite.clone(),
            via,
            now_ms(),
            registration.expires_at_ms,
        );
        info!(kite = %kite, %url, "registered");
        if let Some(old) = committed.replaced {
            self.announce(Action::Deregister, &old, "", "");
        }
        if !committed.already_kept {
            self.clone().keep_alive(&req, conn, kite.id.clone());
        }
        self.announce(Action::Register, &kite, &url, &key_id);
        Ok(RegisterResult {
            url,
            heartbeat_interval: 0,
            kite_key,
            public_key,
        })
    }

    /// The ledger's serial of `client`'s connection; the first time, its slots and watchers are
    /// set to go when it ends.
    fn connection(self: &Arc<Self>, client: &kite_native::Client) -> u64 {
        let (conn, new) = self.ledger.connection(client);
        if new {
            let client = client.clone();
            let weak = Arc::downgrade(self);
            tokio::spawn(async move {
                client.disconnected().await;
                if let Some(inner) = weak.upgrade() {
                    let gone = inner.ledger.disconnected(conn);
                    if !gone.is_empty() {
                        info!(
                            count = gone.len(),
                            "connection closed: deregistering its kites"
                        );
                        inner.deregister(gone).await;
                    }
                }
            });
        }
        conn
    }

    /// The authenticated username of kite key `key`, or why it is refused (the peer is told
    /// `kiteKey: <why>`, as the built-in check says it), checked by `verifier`, the Kontrol
    /// kite's (this Kontrol's own unless one was set with [`Kite::set_kite_key_verifier`]). A
    /// key naming a public key the ring does not know makes the ring read the storage first
    /// (pairs added through another Kontrol); one it still does not know is refused here when
    /// the verifier is this Kontrol's own (so it never remembers a refusal that a later read
    /// could overturn), and left to a verifier set from outside otherwise.
    pub(crate) async fn verify_kite_key(
        &self,
        key: &str,
        verifier: Option<Arc<KiteKeyVerifier>>,
    ) -> Result<String, String> {
        let verifier = verifier.unwrap_or_else(|| self.verifier.clone());
        let own = Arc::ptr_eq(&verifier, &self.verifier);
        if !own && let Ok(username) = verifier.verify(key) {
            return Ok(username);
        }
        self.keys.ready(&*self.storage).await;
        let named = jsonwebtoken::dangerous::insecure_decode::<Claims>(key)
            .map(|t| t.claims.kontrol_key)
            .unwrap_or_default();
        let named = named.trim();
        if !named.is_empty() && self.keys.state().standing(named) == Standing::Unknown {
            if let Err(e) = self.keys.reload(&*self.storage).await {
                debug!(error = %e, "reading the key pairs for an unknown kite key failed");
            }
            if own && self.keys.state().standing(named) == Standing::Unknown {
                return Err("kontrol key is not trusted".to_owned());
            }
        }
        verifier.verify(key).map_err(|e| e.to_string())
    }

    /// The user a token presented to this Kontrol authenticates, or why it is refused. A token
    /// of this Kontrol's issuer naming a pair the ring does not know (neither live nor deleted)
    /// makes it read the pairs first, as an unknown kite key does; reads take turns, so a flood
    /// of made-up ids costs one storage read at a time.
    pub(crate) async fn verify_token(&self, token: &str) -> Result<String, String> {
        self.keys.ready(&*self.storage).await;
        if let Ok(header) = jsonwebtoken::decode_header(token)
            && let Some(kid) = header.kid
            && self.keys.state().find(&kid).is_none()
            && jsonwebtoken::dangerous::insecure_decode::<Claims>(token)
                .is_ok_and(|t| t.claims.iss == self.options.username)
            && let Err(e) = self.keys.reload(&*self.storage).await
        {
            debug!(error = %e, "reading the key pairs for a token of an unknown pair failed");
        }
        self.token_verifier.verify(token).map_err(|e| e.to_string())
    }

    /// What a kite key (already authenticated) comes to on `register`: for a live pair's, no
    /// new key and that pair's id; for a deleted or retired pair's, a new kite key with the
    /// same claims signed by the current pair, the current public key and the current pair's
    /// id (Go's `getOrUpdateKeyPub`); for another key (one a verifier set from outside
    /// trusts), no new key and the current pair's id.
    pub(crate) fn key_for_register(
        &self,
        key: &str,
    ) -> Result<(String, String, String), KiteError> {
        let mut claims = jsonwebtoken::dangerous::insecure_decode::<Claims>(key)
            .map_err(|e| KiteError::argument(format!("kite key: {e}")))?
            .claims;
        let state = self.keys.state();
        let signer = &state.signer;
        match state.standing(&claims.kontrol_key) {
            Standing::Live(pair) => return Ok((String::new(), String::new(), pair.id.clone())),
            Standing::Unknown => return Ok((String::new(), String::new(), signer.id.clone())),
            Standing::Gone => {}
        }
        claims.kontrol_key.clone_from(&signer.public_pem);
        let new_key = state
            .sign(signer, &claims)
            .map_err(|e| internal("re-sign kite key", e))?;
        info!(username = %claims.sub, key_id = %signer.id, "kite key re-signed with the current key pair");
        Ok((new_key, signer.public_pem.clone(), signer.id.clone()))
    }

    /// Refuses everyone but the Kontrol's own user.
    fn require_owner(&self, req: &Request) -> Result<(), KiteError> {
        if req.username == self.options.username {
            Ok(())
        } else {
            Err(KiteError::new(
                ErrorKind::Authentication,
                format!(
                    "{}: key pairs are managed by the Kontrol's user only",
                    req.method
                ),
            ))
        }
    }

    async fn add_key_pair(&self, args: AddKeyPairArgs) -> Result<KeyPairInfo, KiteError> {
        let pair = match (args.public_key, args.private_key) {
            (Some(public_pem), Some(private_pem)) => {
                let pair = KeyPair {
                    private_pem,
                    public_pem,
                };
                check_pair(&pair)
                    .map_err(|e| KiteError::argument(format!("invalid key pair: {e}")))?;
                pair
            }
            (None, None) => tokio::task::spawn_blocking(|| KeyPair::generate(2048))
                .await
                .map_err(|e| internal("generate a key pair", e))?
                .map_err(|e| internal("generate a key pair", e))?,
            _ => {
                return Err(KiteError::argument(
                    "give both publicKey and privateKey, or neither",
                ));
            }
        };
        let id = args
            .id
            .map(|i| i.trim().to_owned())
            .unwrap_or_else(|| uuid::Uuid::new_v4().to_string());
        if id.is_empty() || id.len() > 256 || id.contains(['\0', '/']) {
            return Err(KiteError::argument(
                "a key pair id is 1 to 256 characters, without '/' or NUL",
            ));
        }
        let record = KeyRecord::new(&id, &pair, args.current);
        self.keys.ready(&*self.storage).await;
        let added = self.storage.add_key(&record).await.map_err(|e| match e {
            StorageError::Rejected(why) => KiteError::argument(format!("addKeyPair: {why}")),
            e => internal("add key pair", e),
        })?;
        if !added {
            return Err(KiteError::generic(format!(
                "a key pair with id {id:?} or with that public key exists"
            )));
        }
        info!(%id, current = args.current, "key pair added");
        if let Err(e) = self.keys.reload(&*self.storage).await {
            warn!(error = %e, "reading the key pairs after adding one failed");
        }
        let state = self.keys.state();
        Ok(state.info(state.find(&id).unwrap_or(&record)))
    }

    async fn delete_key_pair(&self, id: &str) -> Result<KeyPairInfo, KiteError> {
        self.keys.ready(&*self.storage).await;
        // Decided on the pairs as stored now.
        self.keys
            .reload(&*self.storage)
            .await
            .map_err(|e| internal("delete key pair", e))?;
        let state = self.keys.state();
        let Some(record) = state.find(id) else {
            return Err(KiteError::generic(format!("no key pair {id:?}")));
        };
        if !record.live() {
            return Err(KiteError::generic(format!(
                "key pair {id:?} is deleted already"
            )));
        }
        if state.signer.id == id {
            return Err(KiteError::generic(format!(
                "key pair {id:?} is the signing pair and cannot be deleted: add another with \
                 current: true first"
            )));
        }
        let deleted = self
            .storage
            .delete_key(id)
            .await
            .map_err(|e| internal("delete key pair", e))?;
        if !deleted {
            return Err(KiteError::generic(format!(
                "key pair {id:?} is deleted already"
            )));
        }
        info!(%id, "key pair deleted");
        if let Err(e) = self.keys.reload(&*self.storage).await {
            warn!(error = %e, "reading the key pairs after deleting one failed");
        }
        let state = self.keys.state();
        let record = state.find(id).cloned().unwrap_or_else(|| KeyRecord {
            deleted_ms: Some(now_ms()),
            ..record.clone()
        });
        Ok(state.info(&record))
    }

    /// Asks the kite to ping back every heartbeat interval on connection `conn`; each ping
    /// notes the kite alive and (at most every half interval) pushes its expiry in the storage
    /// for its owner. The ledger's sweep notices when the pings stop (watchers then hear
    /// `DEREGISTER`); pings for an id that has since been registered another way change nothing.
    fn keep_alive(self: Arc<Self>, req: &Request, conn: u64, id: String) {
        let weak = Arc::downgrade(&self);
        let ping = Callback::new(move |_args: Args| {
            let Some(inner) = weak.upgrade() else { return };
            inner.heard(&id, Via::Dnode(conn));
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
    }

    /// A heartbeat for kite `id` came `via`: noted, and the storage refreshed when due.
    /// Whether the registration is (still) alive.
    pub(crate) async fn heartbeat(self: &Arc<Self>, id: &str, via: Via) -> bool {
        match self.ledger.heard(id, via, now_ms()) {
            Heard::Unknown => false,
            Heard::Alive => true,
            Heard::Refresh(owner) => self.refresh(id, &owner, via).await,
        }
    }

    /// A ping for kite `id` came over `via`: noted; a due refresh joins the ones the refresh
    /// writer stores together (at most one per registration per storage refresh interval,
    /// however often the peer pings).
    fn heard(self: &Arc<Self>, id: &str, via: Via) {
        if let Heard::Refresh(owner) = self.ledger.heard(id, via, now_ms()) {
            lock(&self.due).push((id.to_owned(), owner, via));
            self.due_added.notify_one();
        }
    }

    /// How long a registration written now lives in the storage.
    pub(crate) fn lifetime(&self) -> Duration {
        self.options.registration_ttl + refresh_gap(&self.options)
    }

    /// Writes the refreshes due, in batches.
    async fn write_due(self: &Arc<Self>) {
        loop {
            let batch: Vec<(String, String, Via)> = {
                let mut due = lock(&self.due);
                let n = due.len().min(REFRESH_BATCH);
                due.drain(..n).collect()
            };
            if batch.is_empty() {
                return;
            }
            let items: Vec<(String, String)> = batch
                .iter()
                .map(|(id, owner, _)| (id.clone(), owner.clone()))
                .collect();
            let expires = expires_in(self.lifetime());
            let results = self.storage.refresh_many(&items, expires).await;
            let mut failed = 0;
            for ((id, owner, via), result) in batch.into_iter().zip(results) {
                if !self.refreshed(&id, &owner, via, expires, result).await {
                    failed += 1;
                }
            }
            if failed > 0 {
                debug!(failed, "registrations not refreshed");
            }
        }
    }

    /// Pushes the expiry of `owner`'s registration of `id` kept `via`; whether it is still
    /// registered.
    async fn refresh(self: &Arc<Self>, id: &str, owner: &str, via: Via) -> bool {
        let expires = expires_in(self.lifetime());
        let result = self.storage.refresh(id, owner, expires).await;
        self.refreshed(id, owner, via, expires, result).await
    }

    /// What a storage refresh of `owner`'s registration of `id` kept `via`, to `expires`, came
    /// to; whether it is still registered. One the storage says is another user's now is
    /// dropped from the ledger; one that failed is tried again on the next heartbeat; one the
    /// ledger let go while the write was on its way is deleted again.
    async fn refreshed(
        self: &Arc<Self>,
        id: &str,
        owner: &str,
        via: Via,
        expires: u64,
        result: Result<bool, StorageError>,
    ) -> bool {
        self.ledger.refresh_settled(id, via);
        match result {
            Ok(true) => {
                if self.ledger.refreshed(id, via, expires) {
                    return true;
                }
                if let Err(e) = self.storage.delete_written(id, owner, expires).await {
                    debug!(%id, error = %e, "deleting a registration that went failed");
                }
                false
            }
            Ok(false) => {
                debug!(%id, "heartbeat from a kite no longer registered");
                false
            }
            Err(StorageError::OwnedByAnother { .. }) => {
                info!(%id, "the kite id is registered by another user now");
                if let Some(kite) = self.ledger.forget(id, via) {
                    self.announce(Action::Deregister, &kite, "", "");
                }
                false
            }
            Err(e) => {
                warn!(%id, error = %e, "refreshing a registration failed");
                self.ledger.refresh_failed(id, via);
                false
            }
        }
    }

    /// Deletes the registrations the ledger let go from the storage (each only if it is still
    /// as this Kontrol last wrote it: the kite may have registered again elsewhere), and tells
    /// the dnode ones' watchers.
    pub(crate) async fn deregister(self: &Arc<Self>, gone: Vec<crate::ledger::Gone>) {
        for chunk in gone.chunks(DELETE_BATCH) {
            let deletes = chunk.iter().map(|g| {
                self.storage
                    .delete_written(&g.kite.id, &g.kite.username, g.written_ms)
            });
            for (g, result) in chunk
                .iter()
                .zip(futures_util::future::join_all(deletes).await)
            {
                if let Err(e) = result {
                    debug!(kite = %g.kite, error = %e, "deleting a registration that went failed");
                }
                if g.announced {
                    self.announce(Action::Deregister, &g.kite, "", "");
                }
            }
        }
    }

    /// Tells this Kontrol's watchers whose query matches `kite` that it registered or went
    /// away, and the other Kontrols on the storage (in a task of its own).
    pub(crate) fn announce(
        self: &Arc<Self>,
        action: Action,
        kite: &KiteIdentity,
        url: &str,
        key_id: &str,
    ) {
        self.notify(action.as_str(), kite, url, key_id);
        let change = Change {
            action,
            kite: kite.clone(),
            url: url.to_owned(),
            key_id: key_id.to_owned(),
            origin: self.origin.clone(),
        };
        let inner = self.clone();
        tokio::spawn(async move {
            if let Err(e) = inner.storage.publish(&change).await {
                debug!(error = %e, "telling the other Kontrols failed");
            }
        });
    }

    /// Tells the watchers whose query matches `kite` that it registered (with key pair
    /// `key_id`) or went away.
    pub(crate) fn notify(&self, action: &str, kite: &KiteIdentity, url: &str, key_id: &str) {
        let watchers = self.ledger.watchers_of(kite);
        let mut gone = Vec::new();
        for (id, aud, callback, username) in watchers {
            let token = if action == "REGISTER" {
                self.token(&aud, &username, key_id, false)
                    .unwrap_or_default()
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
            self.ledger.unwatch(&gone);
        }
    }

    /// A token for `username` to call kites of audience `aud` registered with key pair
    /// `key_id`: signed by that pair if it is live, else by the current one (Go's
    /// `getOrUpdateKeyID`), its id in the header (`kid`); the same token again while it has
    /// more than the leeway to live, unless `force`.
    fn token(
        &self,
        aud: &str,
        username: &str,
        key_id: &str,
        force: bool,
    ) -> Result<String, KiteError> {
        let o = &self.options;
        let state = self.keys.state();
        let pair = state.live(key_id).unwrap_or(&state.signer);
        let key = (aud.to_owned(), username.to_owned(), pair.id.clone());
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
        let token = state
            .sign(pair, &claims)
            .map_err(|e| internal("sign token", e))?;
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
        // The watcher's function, beside the query (Go clients send `null` there).
        let watch = req
            .args
            .callback_at(&[0.into(), kite_native::core::kontrol::WATCH_CALLBACK.into()]);
        let mut watcher_id = None;
        if let Some(callback) = watch {
            // The watch ends with the caller's connection, or `cancelWatcher`.
            let conn = self.connection(&req.client);
            watcher_id = self
                .ledger
                .watch(conn, matcher.clone(), req.username.clone(), callback)
                .map_err(|r| refusal("", r))?
                .map(|id| id.to_string());
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
                let token =
                    self.token(&audience(&query, &r.kite), &req.username, &r.key_id, false)?;
                Ok(KiteWithToken {
                    kite: r.kite,
                    url: r.url,
                    key_id: r.key_id,
                    token,
                })
            })
            .collect::<Result<Vec<_>, KiteError>>()?;
        Ok(GetKitesResult { kites, watcher_id })
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
            [r] => self.token(
                &audience(&args.query, &r.kite),
                &req.username,
                &r.key_id,
                args.force,
            ),
            _ => Err(KiteError::generic("query matches more than one kite")),
        }
    }

    /// `cancelWatcher(id)` (Kite.js's): ends the watch `id` that a `getKites` on the caller's
    /// connection started.
    fn cancel_watcher(self: &Arc<Self>, req: &Request) -> Result<(), KiteError> {
        let id: String = req.arg()?;
        if id.is_empty() {
            return Err(KiteError::argument("watcherID is not passed"));
        }
        let conn = self.connection(&req.client);
        match id.parse::<u64>() {
            Ok(n) if self.ledger.cancel_watch(conn, n) => Ok(()),
            _ => Err(KiteError::generic("watcher does not exist")),
        }
    }

    /// `getKey`: the public key of the caller's kite key if its pair is live, else (a deleted
    /// or retired pair's) the current public key.
    async fn get_key(&self, req: &Request) -> Result<String, KiteError> {
        Self::require_kite_key(req)?;
        self.keys.ready(&*self.storage).await;
        let named = req
            .auth
            .as_deref()
            .and_then(|a| jsonwebtoken::dangerous::insecure_decode::<Claims>(&a.key).ok())
            .map(|t| t.claims.kontrol_key)
            .unwrap_or_default();
        let state = self.keys.state();
        Ok(match state.standing(&named) {
            Standing::Live(pair) => pair.public_pem.clone(),
            _ => state.signer.public_pem.clone(),
        })
    }
}

/// How a kite key is told apart for its budget: its user and `jti` claim, else its user and a
/// hash of the key.
pub(crate) fn key_identity(username: &str, key: &str) -> String {
    let jti = jsonwebtoken::dangerous::insecure_decode::<Claims>(key)
        .map(|d| d.claims.jti)
        .unwrap_or_default();
    if jti.is_empty() {
        let mut h = std::collections::hash_map::DefaultHasher::new();
        key.hash(&mut h);
        format!("{username}\nhash:{:016x}", h.finish())
    } else {
        format!("{username}\njti:{jti}")
    }
}

/// The kite error for a refused register (of kite `id`) or watch.
pub(crate) fn refusal(id: &str, r: Refusal) -> KiteError {
    match r {
        Refusal::Owned => KiteError::new(ErrorKind::Authentication, owned_message(id)),
        Refusal::Limit(m) => KiteError::new(ErrorKind::RequestLimit, m),
    }
}

/// What a user is told when the kite id is another user's.
pub(crate) fn owned_message(id: &str) -> String {
    format!("kite id {id:?} is registered by another user")
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}
