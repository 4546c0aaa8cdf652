//! [`MemoryStorage`]: registrations and key pairs in maps, gone with the process.

use std::collections::HashMap;
use std::sync::Mutex;

use super::events::{Bus, Change};
use super::{KeyRecord, Registration, Storage, StorageError, now_ms};
use crate::query::Matcher;

/// Registrations and key pairs held in memory.
#[derive(Debug, Default)]
pub struct MemoryStorage {
    kites: Mutex<HashMap<String, Registration>>,
    /// Watch events between the Kontrols sharing this storage object.
    changes: Bus,
    /// The key pairs.
    keys: Mutex<Vec<KeyRecord>>,
}

impl MemoryStorage {
    /// An empty registry.
    pub fn new() -> MemoryStorage {
        MemoryStorage::default()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Registration>> {
        self.kites.lock().unwrap_or_else(|e| e.into_inner())
    }
}

#[async_trait::async_trait]
impl Storage for MemoryStorage {
    async fn upsert(&self, registration: &Registration) -> Result<(), StorageError> {
        let id = &registration.kite.id;
        let mut kites = self.lock();
        if let Some(current) = kites.get(id)
            && !current.yields_to(registration.owner(), now_ms())
        {
            return Err(StorageError::owned_by_another(id));
        }
        kites.insert(id.clone(), registration.clone());
        Ok(())
    }

    async fn refresh(
        &self,
        id: &str,
        owner: &str,
        expires_at_ms: u64,
    ) -> Result<bool, StorageError> {
        let now = now_ms();
        match self.lock().get_mut(id) {
            Some(r) if !r.expired(now) => {
                if r.owner() != owner {
                    return Err(StorageError::owned_by_another(id));
                }
                r.expires_at_ms = expires_at_ms;
                Ok(true)
            }
            _ => Ok(false),
        }
    }

    async fn delete(&self, id: &str, owner: &str) -> Result<bool, StorageError> {
        let mut kites = self.lock();
        match kites.get(id) {
            None => Ok(false),
            Some(r) if !r.yields_to(owner, now_ms()) => Err(StorageError::owned_by_another(id)),
            Some(_) => Ok(kites.remove(id).is_some()),
        }
    }

    async fn delete_written(
        &self,
        id: &str,
        owner: &str,
        expires_at_ms: u64,
    ) -> Result<bool, StorageError> {
        let mut kites = self.lock();
        let written = kites
            .get(id)
            .is_some_and(|r| r.owner() == owner && r.expires_at_ms == expires_at_ms);
        Ok(written && kites.remove(id).is_some())
    }

    async fn get(&self, matcher: &Matcher) -> Result<Vec<Registration>, StorageError> {
        let now = now_ms();
        let kites = self.lock();
        Ok(match matcher.id() {
            Some(id) => kites
                .get(id)
                .filter(|r| !r.expired(now))
                .cloned()
                .into_iter()
                .collect(),
            None => kites
                .values()
                .filter(|r| !r.expired(now) && matcher.matches(&r.kite))
                .cloned()
                .collect(),
        })
    }

    async fn purge_expired(&self) -> Result<usize, StorageError> {
        let now = now_ms();
        let mut kites = self.lock();
        let before = kites.len();
        kites.retain(|_, r| !r.expired(now));
        Ok(before - kites.len())
    }

    async fn publish(&self, change: &Change) -> Result<(), StorageError> {
        self.changes.publish(change.clone());
        Ok(())
    }

    fn subscribe(&self) -> Option<tokio::sync::broadcast::Receiver<Change>> {
        Some(self.changes.subscribe())
    }

    async fn add_key(&self, key: &KeyRecord) -> Result<bool, StorageError> {
        let mut keys = self.keys.lock().unwrap_or_else(|e| e.into_inner());
        if keys
            .iter()
            .any(|k| k.id == key.id || k.public_pem == key.public_pem)
        {
            return Ok(false);
        }
        keys.push(key.clone());
        Ok(true)
    }

    async fn delete_key(&self, id: &str) -> Result<bool, StorageError> {
        let mut keys = self.keys.lock().unwrap_or_else(|e| e.into_inner());
        match keys.iter_mut().find(|k| k.id == id && k.live()) {
            Some(k) => {
                k.deleted_ms = Some(now_ms().max(k.created_ms));
                Ok(true)
            }
            None => Ok(false),
        }
    }

    async fn keys(&self) -> Result<Vec<KeyRecord>, StorageError> {
        Ok(self.keys.lock().unwrap_or_else(|e| e.into_inner()).clone())
    }
}
