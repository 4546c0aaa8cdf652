//! [`EmbeddedStorage`]: registrations in one file on disk (redb), Kontrol's default store.
//!
//! Besides the registrations by id, the file holds an index (a redb multimap table) from each
//! `(field, username, value)` to the ids of the kites with that value: the username alone, and
//! the username with each of environment, name, version, region and hostname. A query reads the
//! smallest id set among its exact fields (its length is known without reading it) and checks
//! each of those kites against the [`Matcher`], so finding one kite among 100,000 reads a handful
//! of entries, not the table. Index entries are written in the transaction that writes the
//! registration; a stale one (a kite re-registered under other fields) only costs a lookup.
//!
//! Kontrol's key pairs are a table of their own (`keys`, by id, as JSON), created when a file is
//! opened, so files written before it open as they did.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use kite_native::core::Kite;
use redb::{Database, MultimapTable, MultimapTableDefinition, ReadableTable, TableDefinition};

use super::events::{Bus, Change};
use super::{KeyRecord, Registration, Storage, StorageError, now_ms};
use crate::query::Matcher;

/// Registrations by kite id, as JSON.
const KITES: TableDefinition<&str, &[u8]> = TableDefinition::new("kites");

/// Kite ids by `(field, username, value)`: field 0 (value empty) is every kite of the user,
/// fields 1 to 5 are environment, name, version, region and hostname.
const INDEX: MultimapTableDefinition<(u8, &str, &str), &str> =
    MultimapTableDefinition::new("kites-by-field");

/// Kontrol's key pairs by id, as JSON ([`KeyRecord`]).
const KEYS: TableDefinition<&str, &[u8]> = TableDefinition::new("keys");

/// Facts about the file: `index` (1 once [`INDEX`] holds every registration).
const META: TableDefinition<&str, u64> = TableDefinition::new("meta");

/// The index keys of `kite`.
fn index_keys(kite: &Kite) -> [(u8, &str, &str); 6] {
    let u = kite.username.as_str();
    [
        (0, u, ""),
        (1, u, kite.environment.as_str()),
        (2, u, kite.name.as_str()),
        (3, u, kite.version.as_str()),
        (4, u, kite.region.as_str()),
        (5, u, kite.hostname.as_str()),
    ]
}

/// Adds `r`'s index entries.
fn index_add(
    index: &mut MultimapTable<(u8, &str, &str), &str>,
    kite: &Kite,
) -> Result<(), StorageError> {
    for key in index_keys(kite) {
        index.insert(key, kite.id.as_str()).map_err(unavailable)?;
    }
    Ok(())
}

/// Removes `kite`'s index entries.
fn index_remove(
    index: &mut MultimapTable<(u8, &str, &str), &str>,
    kite: &Kite,
) -> Result<(), StorageError> {
    for key in index_keys(kite) {
        index.remove(key, kite.id.as_str()).map_err(unavailable)?;
    }
    Ok(())
}

/// Registrations in a single redb file. A Kontrol restarted on the same file finds every
/// registration that has not expired. One process opens a file at a time.
#[derive(Clone)]
pub struct EmbeddedStorage {
    db: Arc<Database>,
    path: PathBuf,
    /// Watch events between the Kontrols sharing this storage object (the file is one
    /// process's).
    changes: Bus,
    /// One permit per operation running on a blocking thread ([`EMBEDDED_BLOCKING_OPERATIONS`]).
    running: Arc<tokio::sync::Semaphore>,
}

/// The most operations of one store running at once, each on a blocking thread; the others wait
/// their turn (in order) without a thread. redb runs one write at a time anyway: without this
/// limit a burst of registers held one of tokio's blocking threads each (up to 512), every one
/// with its stack and allocator cache.
pub const EMBEDDED_BLOCKING_OPERATIONS: usize = 8;

impl std::fmt::Debug for EmbeddedStorage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EmbeddedStorage")
            .field("path", &self.path)
            .finish()
    }
}

fn unavailable(e: impl std::fmt::Display) -> StorageError {
    StorageError::Unavailable(e.to_string())
}

impl EmbeddedStorage {
    /// Opens the store at `path`, creating the file (and its directory) if needed: a new
    /// directory gets mode 0700 and a new file 0600, since registrations are nobody else's.
    pub fn open(path: impl AsRef<Path>) -> Result<EmbeddedStorage, StorageError> {
        let path = path.as_ref().to_owned();
        let io = |e: std::io::Error| StorageError::Unavailable(format!("{}: {e}", path.display()));
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            let mut builder = std::fs::DirBuilder::new();
            builder.recursive(true);
            #[cfg(unix)]
            std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
            builder.create(dir).map_err(io)?;
        }
        // Created here, empty, with its mode; redb then lays out a new database in it.
        let mut options = std::fs::OpenOptions::new();
        options.write(true).create(true).truncate(false);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
        drop(options.open(&path).map_err(io)?);
        let db = Database::create(&path)
            .map_err(|e| StorageError::Unavailable(format!("{}: {e}", path.display())))?;
        let tx = db.begin_write().map_err(unavailable)?;
        {
            let kites = tx.open_table(KITES).map_err(unavailable)?;
            let mut index = tx.open_multimap_table(INDEX).map_err(unavailable)?;
            let mut meta = tx.open_table(META).map_err(unavailable)?;
            // Created here if the file predates key pairs, so that reads find it.
            tx.open_table(KEYS).map_err(unavailable)?;
            // A file written before the index: index what it holds, once.
            let indexed = meta.get("index").map_err(unavailable)?.map(|v| v.value());
            if indexed != Some(1) {
                for entry in kites.iter().map_err(unavailable)? {
                    let (_, v) = entry.map_err(unavailable)?;
                    if let Ok(r) = decode(v.value()) {
                        index_add(&mut index, &r.kite)?;
                    }
                }
                meta.insert("index", 1).map_err(unavailable)?;
            }
        }
        tx.commit().map_err(unavailable)?;
        Ok(EmbeddedStorage {
            db: Arc::new(db),
            path,
            changes: Bus::default(),
            running: Arc::new(tokio::sync::Semaphore::new(EMBEDDED_BLOCKING_OPERATIONS)),
        })
    }

    /// The file of the store.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Runs `f` on a blocking thread (redb does file I/O).
    async fn blocking<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Database) -> Result<T, StorageError> + Send + 'static,
    ) -> Result<T, StorageError> {
        let permit = self
            .running
            .clone()
            .acquire_owned()
            .await
            .map_err(unavailable)?;
        let db = self.db.clone();
        tokio::task::spawn_blocking(move || {
            let _permit = permit;
            f(&db)
        })
        .await
        .map_err(unavailable)?
    }
}

fn decode(bytes: &[u8]) -> Result<Registration, StorageError> {
    serde_json::from_slice(bytes).map_err(|e| StorageError::Corrupt(e.to_string()))
}

fn encode(r: &Registration) -> Vec<u8> {
    serde_json::to_vec(r).unwrap_or_default()
}

/// Every key pair in `t` (an unreadable entry is an error: it may be a pair Kontrol needs).
fn read_keys(
    t: &impl ReadableTable<&'static str, &'static [u8]>,
) -> Result<Vec<KeyRecord>, StorageError> {
    let mut out = Vec::new();
    for entry in t.iter().map_err(unavailable)? {
        let (_, v) = entry.map_err(unavailable)?;
        out.push(
            serde_json::from_slice(v.value()).map_err(|e| StorageError::Corrupt(e.to_string()))?,
        );
    }
    Ok(out)
}

#[async_trait::async_trait]
impl Storage for EmbeddedStorage {
    async fn upsert(&self, registration: &Registration) -> Result<(), StorageError> {
        let r = registration.clone();
        self.blocking(move |db| {
            // The check and the write are one write transaction: redb runs one at a time.
            let tx = db.begin_write().map_err(unavailable)?;
            {
                let mut t = tx.open_table(KITES).map_err(unavailable)?;
                let mut index = tx.open_multimap_table(INDEX).map_err(unavailable)?;
                let current = t
                    .get(r.kite.id.as_str())
                    .map_err(unavailable)?
                    .map(|v| decode(v.value()));
                // An unreadable entry belongs to nobody: it is replaced.
                if let Some(Ok(current)) = &current
                    && !current.yields_to(r.owner(), now_ms())
                {
                    drop((t, index));
                    tx.abort().map_err(unavailable)?;
                    return Err(StorageError::owned_by_another(&r.kite.id));
                }
                t.insert(r.kite.id.as_str(), encode(&r).as_slice())
                    .map_err(unavailable)?;
                // The index changes only when the kite's fields do (a new URL or key keeps it).
                match &current {
                    Some(Ok(current)) if current.kite == r.kite => {}
                    Some(Ok(current)) => {
                        index_remove(&mut index, &current.kite)?;
                        index_add(&mut index, &r.kite)?;
                    }
                    _ => index_add(&mut index, &r.kite)?,
                }
            }
            tx.commit().map_err(unavailable)
        })
        .await
    }

    async fn refresh(
        &self,
        id: &str,
        owner: &str,
        expires_at_ms: u64,
    ) -> Result<bool, StorageError> {
        // One refresh is a batch of one: the same transaction and the same owner check.
        let items = [(id.to_owned(), owner.to_owned())];
        self.refresh_many(&items, expires_at_ms)
            .await
            .pop()
            .unwrap_or(Ok(false))
    }

    async fn delete(&self, id: &str, owner: &str) -> Result<bool, StorageError> {
        let (id, owner) = (id.to_owned(), owner.to_owned());
        self.blocking(move |db| {
            let tx = db.begin_write().map_err(unavailable)?;
            let removed = {
                let mut t = tx.open_table(KITES).map_err(unavailable)?;
                let mut index = tx.open_multimap_table(INDEX).map_err(unavailable)?;
                let current = t
                    .get(id.as_str())
                    .map_err(unavailable)?
                    .map(|v| decode(v.value()));
                if let Some(Ok(r)) = &current {
                    if !r.yields_to(&owner, now_ms()) {
                        drop((t, index));
                        tx.abort().map_err(unavailable)?;
                        return Err(StorageError::owned_by_another(&id));
                    }
                    index_remove(&mut index, &r.kite)?;
                }
                t.remove(id.as_str()).map_err(unavailable)?.is_some()
            };
            tx.commit().map_err(unavailable)?;
            Ok(removed)
        })
        .await
    }

    async fn delete_written(
        &self,
        id: &str,
        owner: &str,
        expires_at_ms: u64,
    ) -> Result<bool, StorageError> {
        let (id, owner) = (id.to_owned(), owner.to_owned());
        self.blocking(move |db| {
            let tx = db.begin_write().map_err(unavailable)?;
            let removed = {
                let mut t = tx.open_table(KITES).map_err(unavailable)?;
                let current = match t.get(id.as_str()).map_err(unavailable)? {
                    Some(v) => Some(decode(v.value())?),
                    None => None,
                };
                match current {
                    Some(r) if r.owner() == owner && r.expires_at_ms == expires_at_ms => {
                        let mut index = tx.open_multimap_table(INDEX).map_err(unavailable)?;
                        index_remove(&mut index, &r.kite)?;
                        t.remove(id.as_str()).map_err(unavailable)?;
                        true
                    }
                    _ => false,
                }
            };
            tx.commit().map_err(unavailable)?;
            Ok(removed)
        })
        .await
    }

    /// One write transaction (one sync to disk) for all of them.
    async fn refresh_many(
        &self,
        items: &[(String, String)],
        expires_at_ms: u64,
    ) -> Vec<Result<bool, StorageError>> {
        let n = items.len();
        let items = items.to_vec();
        let done = self
            .blocking(move |db| {
                let tx = db.begin_write().map_err(unavailable)?;
                let mut out = Vec::with_capacity(items.len());
                {
                    let mut t = tx.open_table(KITES).map_err(unavailable)?;
                    let now = now_ms();
                    for (id, owner) in &items {
                        let current = match t.get(id.as_str()).map_err(unavailable)? {
                            Some(v) => decode(v.value()).map(Some),
                            None => Ok(None),
                        };
                        out.push(match current {
                            Err(e) => Err(e),
                            Ok(Some(r)) if !r.expired(now) && r.owner() != owner => {
                                Err(StorageError::owned_by_another(id))
                            }
                            Ok(Some(mut r)) if !r.expired(now) => {
                                r.expires_at_ms = expires_at_ms;
                                t.insert(id.as_str(), encode(&r).as_slice())
                                    .map_err(unavailable)?;
                                Ok(true)
                            }
                            Ok(_) => Ok(false),
                        });
                    }
                }
                tx.commit().map_err(unavailable)?;
                Ok(out)
            })
            .await;
        match done {
            Ok(out) => out,
            Err(e) => {
                let message = e.to_string();
                (0..n)
                    .map(|_| Err(StorageError::Unavailable(message.clone())))
                    .collect()
            }
        }
    }

    async fn get(&self, matcher: &Matcher) -> Result<Vec<Registration>, StorageError> {
        let matcher = matcher.clone();
        self.blocking(move |db| {
            let now = now_ms();
            let tx = db.begin_read().map_err(unavailable)?;
            let t = tx.open_table(KITES).map_err(unavailable)?;
            if let Some(id) = matcher.id() {
                return Ok(match t.get(id).map_err(unavailable)? {
                    Some(v) => Some(decode(v.value())?)
                        .filter(|r| !r.expired(now))
                        .into_iter()
                        .collect(),
                    None => Vec::new(),
                });
            }
            let exact = matcher.exact();
            let Some(username) = exact[0] else {
                // Not a query Matcher::new lets through.
                return Ok(Vec::new());
            };
            let mut out = Vec::new();
            let mut check = |id: &str| -> Result<(), StorageError> {
                if let Some(v) = t.get(id).map_err(unavailable)? {
                    let r = decode(v.value())?;
                    if !r.expired(now) && matcher.matches(&r.kite) {
                        out.push(r);
                    }
                }
                Ok(())
            };
            if let Some(id) = exact[6] {
                check(id)?;
            } else {
                let index = tx.open_multimap_table(INDEX).map_err(unavailable)?;
                // The smallest id set among the exact fields (the user's kites at worst).
                let mut ids = index.get((0, username, "")).map_err(unavailable)?;
                for (field, value) in (1u8..=5).zip(&exact[1..6]) {
                    if let Some(value) = value {
                        let these = index.get((field, username, *value)).map_err(unavailable)?;
                        if these.len() < ids.len() {
                            ids = these;
                        }
                    }
                }
                for id in ids {
                    check(id.map_err(unavailable)?.value())?;
                }
            }
            Ok(out)
        })
        .await
    }

    async fn purge_expired(&self) -> Result<usize, StorageError> {
        self.blocking(|db| {
            let now = now_ms();
            let tx = db.begin_write().map_err(unavailable)?;
            let n = {
                let mut t = tx.open_table(KITES).map_err(unavailable)?;
                let mut index = tx.open_multimap_table(INDEX).map_err(unavailable)?;
                let mut gone = Vec::new();
                for entry in t.iter().map_err(unavailable)? {
                    let (k, v) = entry.map_err(unavailable)?;
                    match decode(v.value()) {
                        Ok(r) if !r.expired(now) => {}
                        Ok(r) => gone.push((k.value().to_owned(), Some(r.kite))),
                        Err(_) => gone.push((k.value().to_owned(), None)),
                    }
                }
                for (id, kite) in &gone {
                    t.remove(id.as_str()).map_err(unavailable)?;
                    if let Some(kite) = kite {
                        index_remove(&mut index, kite)?;
                    }
                }
                gone.len()
            };
            tx.commit().map_err(unavailable)?;
            Ok(n)
        })
        .await
    }

    async fn publish(&self, change: &Change) -> Result<(), StorageError> {
        self.changes.publish(change.clone());
        Ok(())
    }

    fn subscribe(&self) -> Option<tokio::sync::broadcast::Receiver<Change>> {
        Some(self.changes.subscribe())
    }

    async fn add_key(&self, key: &KeyRecord) -> Result<bool, StorageError> {
        let key = key.clone();
        self.blocking(move |db| {
            // The check and the write are one write transaction.
            let tx = db.begin_write().map_err(unavailable)?;
            let added = {
                let mut t = tx.open_table(KEYS).map_err(unavailable)?;
                let taken = read_keys(&t)?
                    .iter()
                    .any(|k| k.id == key.id || k.public_pem == key.public_pem);
                if !taken {
                    let bytes = serde_json::to_vec(&key).unwrap_or_default();
                    t.insert(key.id.as_str(), bytes.as_slice())
                        .map_err(unavailable)?;
                }
                !taken
            };
            tx.commit().map_err(unavailable)?;
            Ok(added)
        })
        .await
    }

    async fn delete_key(&self, id: &str) -> Result<bool, StorageError> {
        let id = id.to_owned();
        self.blocking(move |db| {
            let tx = db.begin_write().map_err(unavailable)?;
            let deleted = {
                let mut t = tx.open_table(KEYS).map_err(unavailable)?;
                let current: Option<KeyRecord> = match t.get(id.as_str()).map_err(unavailable)? {
                    Some(v) => Some(
                        serde_json::from_slice(v.value())
                            .map_err(|e| StorageError::Corrupt(e.to_string()))?,
                    ),
                    None => None,
                };
                match current {
                    Some(mut k) if k.live() => {
                        k.deleted_ms = Some(now_ms().max(k.created_ms));
                        let bytes = serde_json::to_vec(&k).unwrap_or_default();
                        t.insert(id.as_str(), bytes.as_slice())
                            .map_err(unavailable)?;
                        true
                    }
                    _ => false,
                }
            };
            tx.commit().map_err(unavailable)?;
            Ok(deleted)
        })
        .await
    }

    async fn keys(&self) -> Result<Vec<KeyRecord>, StorageError> {
        self.blocking(|db| {
            let tx = db.begin_read().map_err(unavailable)?;
            let t = tx.open_table(KEYS).map_err(unavailable)?;
            read_keys(&t)
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::storage::tests::{ids, kite, matcher};

    /// A file written before the index (registrations only) is indexed when opened, so its kites
    /// are found by every query, and only once; it gets the key pair table too.
    #[tokio::test]
    async fn a_file_from_before_the_index_is_indexed_on_open() {
        let dir = std::env::temp_dir().join(format!("kontrol-test-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("kontrol.db");
        {
            let db = Database::create(&path).unwrap();
            let tx = db.begin_write().unwrap();
            {
                let mut t = tx.open_table(KITES).unwrap();
                for path in [
                    "/alice/prod/math/1.0.0/eu/h1/k1",
                    "/alice/dev/db/1.0.0/eu/h2/k2",
                ] {
                    let r =
                        Registration::new(kite(path), "http://x", "key1", Duration::from_secs(60));
                    t.insert(r.kite.id.as_str(), encode(&r).as_slice()).unwrap();
                }
            }
            tx.commit().unwrap();
        }
        let s = EmbeddedStorage::open(&path).unwrap();
        // A file from before key pairs: none stored, and they can be added.
        assert!(s.keys().await.unwrap().is_empty());
        let pair = kite_native::auth::KeyPair {
            private_pem: "private".into(),
            public_pem: "public".into(),
        };
        assert!(s.add_key(&KeyRecord::new("k", &pair, true)).await.unwrap());
        assert_eq!(s.keys().await.unwrap().len(), 1);
        assert_eq!(ids(s.get(&matcher("/alice")).await.unwrap()), ["k1", "k2"]);
        assert_eq!(ids(s.get(&matcher("/alice//math")).await.unwrap()), ["k1"]);
        assert_eq!(ids(s.get(&matcher("/alice/////h2")).await.unwrap()), ["k2"]);
        drop(s);
        // Opened again: indexed once (each id once under the user).
        let s = EmbeddedStorage::open(&path).unwrap();
        let tx = s.db.begin_read().unwrap();
        let index = tx.open_multimap_table(INDEX).unwrap();
        assert_eq!(index.get((0, "alice", "")).unwrap().len(), 2);
        drop((index, tx, s));
        std::fs::remove_dir_all(dir).unwrap();
    }

    /// However many operations come at once, at most [`EMBEDDED_BLOCKING_OPERATIONS`] hold a blocking
    /// thread; the rest wait for a permit, and all of them run.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_burst_of_operations_holds_a_bounded_number_of_threads() {
        use std::sync::atomic::{AtomicUsize, Ordering};
        let dir = std::env::temp_dir().join(format!("kontrol-test-{}", uuid::Uuid::new_v4()));
        let s = EmbeddedStorage::open(dir.join("kontrol.db")).unwrap();
        let (now, most) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
        let ops = (0..EMBEDDED_BLOCKING_OPERATIONS * 8).map(|_| {
            let (s, now, most) = (s.clone(), now.clone(), most.clone());
            tokio::spawn(async move {
                s.blocking(move |_| {
                    let running = now.fetch_add(1, Ordering::SeqCst) + 1;
                    most.fetch_max(running, Ordering::SeqCst);
                    // Work that takes a while, so that the burst overlaps.
                    std::thread::sleep(Duration::from_millis(5));
                    now.fetch_sub(1, Ordering::SeqCst);
                    Ok(())
                })
                .await
            })
        });
        for op in futures_util::future::join_all(ops).await {
            op.unwrap().unwrap();
        }
        let most = most.load(Ordering::SeqCst);
        assert!(
            (1..=EMBEDDED_BLOCKING_OPERATIONS).contains(&most),
            "{most} operations ran at once"
        );
        drop(s);
        std::fs::remove_dir_all(dir).unwrap();
    }
}
