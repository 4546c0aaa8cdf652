//! Where Kontrol keeps registrations: a [`Storage`] trait with backends that all answer
//! queries through the same [`Matcher`], so every backend finds the same kites.
//!
//! A registration lives until its expiry (Kontrol pushes it forward on every heartbeat, Go's
//! `KeyTTL` is 90 s); expired registrations are never returned and are purged by the backend.
//!
//! A registration belongs to its owner, the authenticated username of the kite that made it
//! ([`Registration::owner`], its `kite.username`). While it is live, no other user can replace,
//! refresh or delete it: every backend refuses with [`StorageError::OwnedByAnother`], deciding
//! atomically (in one lock, write transaction, conditional etcd transaction or SQL statement), so
//! two Kontrols sharing a backend cannot both win. Once it has expired, the id is free for anyone.
//! (Go Kontrol keys registrations by id, or by the kite path, and lets any kite key holder
//! overwrite any id.)
//!
//! - [`MemoryStorage`]: in process, for tests and throwaway Kontrols;
//! - [`EmbeddedStorage`]: one file on disk (redb), the default: a Kontrol restarted on the same
//!   file loses nothing that has not expired.
//! - [`EtcdStorage`]: etcd (v3 API), shared by several Kontrols; etcd leases expire
//!   registrations by themselves, an id index finds a kite by id and a field index by any exact
//!   field of a query.
//! - [`PostgresStorage`]: a PostgreSQL database (tokio-postgres), shared by several Kontrols;
//!   Kontrol creates and migrates its schema itself and reconnects when the server comes back.
//!   With [`PostgresSchema::Go`] it uses Go Kontrol's tables as they are instead, so that a Go
//!   Kontrol and ours serve one registry from one database.

//!
//! Every backend also keeps Kontrol's key pairs ([`KeyRecord`]): added, soft-deleted (the record
//! stays, marked with when it was deleted, as Go's `deleted_at`) and listed, so every Kontrol
//! sharing a backend signs and trusts the same pairs (see [`crate::server`]).
//!
//! The etcd and PostgreSQL backends are the Cargo features `etcd` and `postgres` (both on by
//! default); without them Kontrol builds without etcd-client (and protoc) or tokio-postgres.

mod embedded;
#[cfg(feature = "etcd")]
mod etcd;
pub mod events;
mod memory;
#[cfg(feature = "postgres")]
mod postgres;

pub use embedded::{EMBEDDED_BLOCKING_OPERATIONS, EmbeddedStorage};
#[cfg(feature = "etcd")]
pub use etcd::{EtcdOptions, EtcdStorage};
pub use memory::MemoryStorage;
#[cfg(feature = "postgres")]
pub use postgres::{PostgresConfig, PostgresConfigError, PostgresSchema, PostgresStorage};

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use kite_native::core::Kite;
use serde::{Deserialize, Serialize};

use crate::query::Matcher;

/// How many refreshes [`Storage::refresh_many`]'s default has on their way at once (etcd
/// answers a flood of concurrent requests by closing the connection).
pub const REFRESH_CONCURRENCY: usize = 32;

/// A registered kite: who it is, where to reach it, and which key pair signed its kite key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Registration {
    /// The kite's identity (its username is the authenticated one).
    pub kite: Kite,
    /// The URL the kite registered (`http://host:port/kite`).
    pub url: String,
    /// The id of the Kontrol key pair the kite's key was signed with (tokens for it are signed
    /// with the same pair).
    pub key_id: String,
    /// When the registration expires, in milliseconds since the Unix epoch.
    pub expires_at_ms: u64,
}

impl Registration {
    /// A registration of `kite` at `url` with key pair `key_id`, expiring `ttl` from now.
    pub fn new(kite: Kite, url: &str, key_id: &str, ttl: Duration) -> Registration {
        Registration {
            kite,
            url: url.to_owned(),
            key_id: key_id.to_owned(),
            expires_at_ms: expires_in(ttl),
        }
    }

    /// Whether it has expired at `now_ms`.
    pub fn expired(&self, now_ms: u64) -> bool {
        self.expires_at_ms <= now_ms
    }

    /// Who owns it: the authenticated username of the kite that registered it.
    pub fn owner(&self) -> &str {
        &self.kite.username
    }

    /// Whether `owner` may replace, refresh or delete it at `now_ms`: it is theirs, or it has
    /// expired.
    pub fn yields_to(&self, owner: &str, now_ms: u64) -> bool {
        self.owner() == owner || self.expired(now_ms)
    }
}

/// One of Kontrol's key pairs as the storage keeps it (Go's `KeyPair` and its `kite.key` row).
///
/// A pair is *live* until it is deleted; deleting only sets [`KeyRecord::deleted_ms`], so that
/// Kontrol still recognises kite keys the pair signed (and re-keys them). Which live pair signs
/// is decided from the records alone (see [`KeyRecord::signs_before`]), so Kontrols sharing a
/// backend agree. `Debug` leaves the private key out.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyRecord {
    /// The pair's id: registrations name it (`key_id`), and JWTs it signs carry it in their
    /// header (`kid`).
    pub id: String,
    /// The public key (PEM, trimmed), what kite keys carry as `kontrolKey`.
    pub public_pem: String,
    /// The private key (PEM, trimmed).
    pub private_pem: String,
    /// When the pair was added, in milliseconds since the Unix epoch.
    pub created_ms: u64,
    /// When the pair was deleted, in milliseconds since the Unix epoch; `None` while it is live.
    pub deleted_ms: Option<u64>,
    /// Whether the pair was added to sign: the newest live pair with this set is the one
    /// Kontrol signs kite keys and new tokens with. A pair without it is trusted (its kite keys
    /// are accepted, tokens for kites registered with it are signed by it) but never the
    /// signing pair.
    pub signing: bool,
}

impl std::fmt::Debug for KeyRecord {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyRecord")
            .field("id", &self.id)
            .field("public_pem", &self.public_pem)
            .field("created_ms", &self.created_ms)
            .field("deleted_ms", &self.deleted_ms)
            .field("signing", &self.signing)
            .finish_non_exhaustive()
    }
}

impl KeyRecord {
    /// A live record of `pair` under `id`, added now (the PEMs trimmed).
    pub fn new(id: &str, pair: &kite_native::auth::KeyPair, signing: bool) -> KeyRecord {
        KeyRecord {
            id: id.to_owned(),
            public_pem: pair.public_pem.trim().to_owned(),
            private_pem: pair.private_pem.trim().to_owned(),
            created_ms: now_ms(),
            deleted_ms: None,
            signing,
        }
    }

    /// Whether the pair has not been deleted.
    pub fn live(&self) -> bool {
        self.deleted_ms.is_none()
    }

    /// The pair, to sign with.
    pub fn key_pair(&self) -> kite_native::auth::KeyPair {
        kite_native::auth::KeyPair {
            private_pem: self.private_pem.clone(),
            public_pem: self.public_pem.clone(),
        }
    }

    /// The order that decides the signing pair: `true` if `self` was added later than `other`
    /// (by [`KeyRecord::created_ms`], then by id), so it signs in preference.
    pub fn signs_before(&self, other: &KeyRecord) -> bool {
        (self.created_ms, &self.id) > (other.created_ms, &other.id)
    }
}

/// `d` in milliseconds (saturating).
pub fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// The moment `ttl` from now, in milliseconds since the Unix epoch (an expiry).
pub fn expires_in(ttl: Duration) -> u64 {
    now_ms().saturating_add(millis(ttl))
}

/// Milliseconds since the Unix epoch now.
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// `refresh(id, owner)` of every item, [`REFRESH_CONCURRENCY`] at a time, the answers in the
/// items' order (the default [`Storage::refresh_many`], and etcd's on its batch lease).
pub(crate) async fn in_chunks<'a, F, Fut>(
    items: &'a [(String, String)],
    refresh: F,
) -> Vec<Result<bool, StorageError>>
where
    F: Fn(&'a str, &'a str) -> Fut,
    Fut: std::future::Future<Output = Result<bool, StorageError>>,
{
    let mut out = Vec::with_capacity(items.len());
    for chunk in items.chunks(REFRESH_CONCURRENCY) {
        let refreshes = chunk.iter().map(|(id, owner)| refresh(id, owner));
        out.extend(futures_util::future::join_all(refreshes).await);
    }
    out
}

/// Why a storage operation failed.
#[derive(Debug, Clone, thiserror::Error)]
pub enum StorageError {
    /// The backend is unreachable or failed; the operation may succeed later.
    #[error("storage unavailable: {0}")]
    Unavailable(String),
    /// Stored data could not be read.
    #[error("corrupt storage entry: {0}")]
    Corrupt(String),
    /// The backend cannot hold what was asked, and asking again will not help: a value its
    /// schema does not take, such as a kite id that is not a UUID in Go Kontrol's PostgreSQL
    /// schema. Nothing changed. The message says what and why, for the one who asked.
    #[error("refused by the storage: {0}")]
    Rejected(String),
    /// The kite id has a live registration owned by another user, which was left as it was.
    #[error("kite id {id:?} is registered by another user")]
    OwnedByAnother {
        /// The kite id.
        id: String,
    },
}

impl StorageError {
    pub(crate) fn owned_by_another(id: &str) -> StorageError {
        StorageError::OwnedByAnother { id: id.to_owned() }
    }
}

/// A registry backend. Implementations must be safe to share between tasks, must apply
/// [`Matcher::matches`] (and expiry) to everything they return, and must keep each registration
/// to its owner (see the module docs): the ownership check and the write are one atomic step.
#[async_trait::async_trait]
pub trait Storage: Send + Sync + std::fmt::Debug {
    /// Adds or replaces the registration of `registration.kite.id`, owned by
    /// [`Registration::owner`]. A live registration of that id owned by another user is left as
    /// it was and the call fails with [`StorageError::OwnedByAnother`]; an expired one is
    /// replaced.
    async fn upsert(&self, registration: &Registration) -> Result<(), StorageError>;

    /// Pushes the expiry of the kite `id`, owned by `owner`, to `expires_at_ms`; `false` if it
    /// is not registered (or has expired), [`StorageError::OwnedByAnother`] (and nothing
    /// changed) if its live registration belongs to another user.
    async fn refresh(
        &self,
        id: &str,
        owner: &str,
        expires_at_ms: u64,
    ) -> Result<bool, StorageError>;

    /// Removes the registration of kite `id` if `owner` owns it or it has expired; `false` if
    /// there was none, [`StorageError::OwnedByAnother`] (and nothing removed) if its live
    /// registration belongs to another user.
    async fn delete(&self, id: &str, owner: &str) -> Result<bool, StorageError>;

    /// Removes the registration of kite `id` only if it is still the one `owner` last wrote,
    /// with expiry `expires_at_ms` (see [`Storage::upsert`] and [`Storage::refresh`]); `false`
    /// if it is gone or has been written since (by this Kontrol or another sharing the
    /// backend), which is then left as it is. Kontrol calls it when the kite it keeps alive
    /// goes away, so that a kite that has moved to another Kontrol is never deleted.
    ///
    /// The default reads the registration and then deletes it: a write between the two is
    /// lost. Backends that can decide both in one step override it.
    async fn delete_written(
        &self,
        id: &str,
        owner: &str,
        expires_at_ms: u64,
    ) -> Result<bool, StorageError> {
        let by_id = Matcher::by_id(id);
        let current = self.get(&by_id).await?;
        match current.first() {
            Some(r) if r.owner() == owner && r.expires_at_ms == expires_at_ms => {
                self.delete(id, owner).await
            }
            _ => Ok(false),
        }
    }

    /// [`Storage::refresh`] of several registrations, each `(id, owner)`, to one expiry: one
    /// result per item, in order. Kontrol gathers the refreshes heartbeats make due and writes
    /// them with this. The default runs the refreshes concurrently; backends that can write
    /// them in one step (the embedded store: one transaction; PostgreSQL: one statement)
    /// override it; the default runs [`REFRESH_CONCURRENCY`] at a time.
    async fn refresh_many(
        &self,
        items: &[(String, String)],
        expires_at_ms: u64,
    ) -> Vec<Result<bool, StorageError>> {
        in_chunks(items, |id, owner| self.refresh(id, owner, expires_at_ms)).await
    }

    /// The live registrations `matcher` matches, in no particular order.
    async fn get(&self, matcher: &Matcher) -> Result<Vec<Registration>, StorageError>;

    /// Removes expired registrations; how many went.
    async fn purge_expired(&self) -> Result<usize, StorageError>;

    /// Tells every Kontrol subscribed to this storage about `change` (see [`events`]). The
    /// default, for a storage no other Kontrol can share, does nothing.
    async fn publish(&self, change: &events::Change) -> Result<(), StorageError> {
        let _ = change;
        Ok(())
    }

    /// The changes published through this storage, by every Kontrol on it (this one's own
    /// included: the subscriber skips them by their origin); `None` where there is nothing to
    /// share. A subscriber that falls behind by more than a few thousand misses some.
    fn subscribe(&self) -> Option<tokio::sync::broadcast::Receiver<events::Change>> {
        None
    }

    /// Stores the key pair `key` (as given, [`KeyRecord::deleted_ms`] included), unless a pair
    /// with its id or its public key is stored already (live or deleted): then nothing changes
    /// and the answer is `false`. The check and the write are one atomic step.
    async fn add_key(&self, key: &KeyRecord) -> Result<bool, StorageError>;

    /// Soft-deletes the live key pair `id`: its [`KeyRecord::deleted_ms`] becomes now (never
    /// before its `created_ms`) and the record stays. `false` if there is no such pair or it
    /// was deleted already (nothing changes).
    async fn delete_key(&self, id: &str) -> Result<bool, StorageError>;

    /// Every stored key pair, deleted ones included, in no particular order.
    async fn keys(&self) -> Result<Vec<KeyRecord>, StorageError>;
}

#[cfg(test)]
pub(crate) mod tests;
