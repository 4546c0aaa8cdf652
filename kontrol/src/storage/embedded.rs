//! [`EmbeddedStorage`]: registrations in one file on disk (redb), Kontrol's default store.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use redb::{Database, ReadableTable, ReadableTableMetadata, TableDefinition};

use super::{Registration, Storage, StorageError, now_ms};
use crate::query::Matcher;

/// Registrations by kite id, as JSON.
const KITES: TableDefinition<&str, &[u8]> = TableDefinition::new("kites");

/// Registrations in a single redb file. A Kontrol restarted on the same file finds every
/// registration that has not expired. One process opens a file at a time.
#[derive(Clone)]
pub struct EmbeddedStorage {
    db: Arc<Database>,
    path: PathBuf,
}

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
        tx.open_table(KITES).map_err(unavailable)?;
        tx.commit().map_err(unavailable)?;
        Ok(EmbeddedStorage {
            db: Arc::new(db),
            path,
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
        let db = self.db.clone();
        tokio::task::spawn_blocking(move || f(&db))
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

#[async_trait::async_trait]
impl Storage for EmbeddedStorage {
    async fn upsert(&self, registration: &Registration) -> Result<(), StorageError> {
        let r = registration.clone();
        self.blocking(move |db| {
            // The check and the write are one write transaction: redb runs one at a time.
            let tx = db.begin_write().map_err(unavailable)?;
            {
                let mut t = tx.open_table(KITES).map_err(unavailable)?;
                let current = t
                    .get(r.kite.id.as_str())
                    .map_err(unavailable)?
                    .map(|v| decode(v.value()));
                // An unreadable entry belongs to nobody: it is replaced.
                if let Some(Ok(current)) = current
                    && !current.yields_to(r.owner(), now_ms())
                {
                    drop(t);
                    tx.abort().map_err(unavailable)?;
                    return Err(StorageError::owned_by_another(&r.kite.id));
                }
                t.insert(r.kite.id.as_str(), encode(&r).as_slice())
                    .map_err(unavailable)?;
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
        let (id, owner) = (id.to_owned(), owner.to_owned());
        self.blocking(move |db| {
            let tx = db.begin_write().map_err(unavailable)?;
            let found = {
                let mut t = tx.open_table(KITES).map_err(unavailable)?;
                let current = match t.get(id.as_str()).map_err(unavailable)? {
                    Some(v) => Some(decode(v.value())?),
                    None => None,
                };
                match current {
                    Some(r) if !r.expired(now_ms()) && r.owner() != owner => {
                        drop(t);
                        tx.abort().map_err(unavailable)?;
                        return Err(StorageError::owned_by_another(&id));
                    }
                    Some(mut r) if !r.expired(now_ms()) => {
                        r.expires_at_ms = expires_at_ms;
                        t.insert(id.as_str(), encode(&r).as_slice())
                            .map_err(unavailable)?;
                        true
                    }
                    _ => false,
                }
            };
            tx.commit().map_err(unavailable)?;
            Ok(found)
        })
        .await
    }

    async fn delete(&self, id: &str, owner: &str) -> Result<bool, StorageError> {
        let (id, owner) = (id.to_owned(), owner.to_owned());
        self.blocking(move |db| {
            let tx = db.begin_write().map_err(unavailable)?;
            let removed = {
                let mut t = tx.open_table(KITES).map_err(unavailable)?;
                let current = t
                    .get(id.as_str())
                    .map_err(unavailable)?
                    .map(|v| decode(v.value()));
                if let Some(Ok(r)) = current
                    && !r.yields_to(&owner, now_ms())
                {
                    drop(t);
                    tx.abort().map_err(unavailable)?;
                    return Err(StorageError::owned_by_another(&id));
                }
                t.remove(id.as_str()).map_err(unavailable)?.is_some()
            };
            tx.commit().map_err(unavailable)?;
            Ok(removed)
        })
        .await
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
            let mut out = Vec::new();
            for entry in t.iter().map_err(unavailable)? {
                let (_, v) = entry.map_err(unavailable)?;
                let r = decode(v.value())?;
                if !r.expired(now) && matcher.matches(&r.kite) {
                    out.push(r);
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
                let before = t.len().map_err(unavailable)?;
                t.retain(|_, v| decode(v).is_ok_and(|r| !r.expired(now)))
                    .map_err(unavailable)?;
                before - t.len().map_err(unavailable)?
            };
            tx.commit().map_err(unavailable)?;
            Ok(usize::try_from(n).unwrap_or(usize::MAX))
        })
        .await
    }
}
