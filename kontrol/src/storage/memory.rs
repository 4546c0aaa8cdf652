//! [`MemoryStorage`]: registrations in a map, gone with the process.

use std::collections::HashMap;
use std::sync::Mutex;

use super::{Registration, Storage, StorageError, now_ms};
use crate::query::Matcher;

/// Registrations held in memory.
#[derive(Debug, Default)]
pub struct MemoryStorage {
    kites: Mutex<HashMap<String, Registration>>,
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
        self.lock()
            .insert(registration.kite.id.clone(), registration.clone());
        Ok(())
    }

    async fn refresh(&self, id: &str, expires_at_ms: u64) -> Result<bool, StorageError> {
        let now = now_ms();
        Ok(match self.lock().get_mut(id) {
            Some(r) if !r.expired(now) => {
                r.expires_at_ms = expires_at_ms;
                true
            }
            _ => false,
        })
    }

    async fn delete(&self, id: &str) -> Result<bool, StorageError> {
        Ok(self.lock().remove(id).is_some())
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
}
