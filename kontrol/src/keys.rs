//! Kontrol's key ring: the key pairs of its storage ([`KeyRecord`]), which one signs, and the
//! answers of the key management methods.
//!
//! # Which pair signs
//!
//! The signing pair is decided from the stored records alone, so every Kontrol sharing a
//! backend signs with the same one once it has read them: the live pair added to sign
//! ([`KeyRecord::signing`]) most recently (by `created_ms`, then by id). When there is none, the
//! newest live pair signs; when there is no live pair at all (or the storage cannot be read),
//! the configured pair ([`crate::server::KontrolOptions::key`]) does.
//!
//! The configured pair is stored under its configured id, or under a new UUID when that id names
//! another stored pair or the storage refuses it (Go's PostgreSQL schema takes UUIDs only).
//!
//! # Keeping up with other Kontrols
//!
//! The ring is read from the storage when the Kontrol starts (after adding the configured pair
//! if it is not stored yet), every [`crate::server::KontrolOptions::key_reload_interval`], after
//! each change made through this Kontrol, and whenever a kite key names a public key the ring
//! does not know, before that key is refused. Reloads take turns, and a request waiting for one
//! is answered by the first reload that began after it arrived, so a burst of unknown keys
//! costs one storage read at a time.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, RwLock};

use jsonwebtoken::DecodingKey;

use kite_native::auth::{KeyError, KeyPair, SigningKey, TokenVerifier};
use kite_native::core::auth::Claims;
use serde::{Deserialize, Serialize};
use tracing::warn;

use crate::storage::{KeyRecord, Storage, StorageError, now_ms};

/// A key pair as the key management methods (`listKeyPairs`, `addKeyPair`, `deleteKeyPair`)
/// describe it: everything but the private key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
#[non_exhaustive]
pub struct KeyPairInfo {
    /// The pair's id (registrations' `keyId`, the `kid` of the JWTs it signs).
    pub id: String,
    /// The public key (PEM).
    pub public_key: String,
    /// When it was added, in milliseconds since the Unix epoch.
    pub created_ms: u64,
    /// When it was deleted, in milliseconds since the Unix epoch; absent while it is live.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deleted_ms: Option<u64>,
    /// Whether it was added to sign ([`KeyRecord::signing`]).
    pub signing: bool,
    /// Whether it is the pair that signs now (see the module docs).
    pub current: bool,
}

/// `addKeyPair`'s argument. Without PEMs a new 2048-bit pair is made; without an id, a UUID is
/// given.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
#[non_exhaustive]
pub struct AddKeyPairArgs {
    /// The new pair's id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    /// The public key (PEM), given together with `private_key`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub public_key: Option<String>,
    /// The private key (PEM, PKCS#1 or PKCS#8), given together with `public_key`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub private_key: Option<String>,
    /// Whether the pair signs from now on (on every Kontrol of the backend once they have read
    /// it).
    #[serde(default)]
    pub current: bool,
}

impl AddKeyPairArgs {
    /// The arguments for a new generated pair, made the signing one if `current`.
    pub fn generated(current: bool) -> AddKeyPairArgs {
        AddKeyPairArgs {
            current,
            ..AddKeyPairArgs::default()
        }
    }

    /// The arguments for `pair` under `id` (a UUID if `None`), made the signing one if
    /// `current`.
    pub fn with_pair(id: Option<&str>, pair: &KeyPair, current: bool) -> AddKeyPairArgs {
        AddKeyPairArgs {
            id: id.map(str::to_owned),
            public_key: Some(pair.public_pem.clone()),
            private_key: Some(pair.private_pem.clone()),
            current,
        }
    }
}

/// `deleteKeyPair`'s argument.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct DeleteKeyPairArgs {
    /// The id of the pair to delete.
    pub id: String,
}

impl DeleteKeyPairArgs {
    /// Deletes pair `id`.
    pub fn new(id: &str) -> DeleteKeyPairArgs {
        DeleteKeyPairArgs { id: id.to_owned() }
    }
}

/// What the ring knows of a Kontrol public key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Standing<'a> {
    /// A live pair's.
    Live(&'a KeyRecord),
    /// A deleted pair's, or a retired key of the options: its kite keys are re-keyed.
    Gone,
    /// Not a key of this Kontrol.
    Unknown,
}

/// The key pairs as last read, and the one that signs.
#[derive(Debug)]
pub(crate) struct RingState {
    /// Every pair (the configured one included, stored or not).
    pub(crate) records: Vec<KeyRecord>,
    /// The pair that signs (see the module docs).
    pub(crate) signer: KeyRecord,
    /// Public keys of the options' retired pairs.
    retired: Arc<[String]>,
    /// The live pairs' public keys, ready to verify signatures: by pair id, and the newest
    /// [`KEYS_TRIED_WITHOUT_KID`] (the signer first) for tokens naming no pair.
    verifying: HashMap<String, DecodingKey>,
    unnamed: Vec<DecodingKey>,
    /// The live pairs' private keys, read once to sign: by pair id, with the public key.
    signing: HashMap<String, (String, Arc<SigningKey>)>,
}

/// How many live pairs a token whose header names no pair (`kid`; Go Kontrol's tokens, or ours
/// from before pairs had ids) is checked against, newest first: each is an RSA verification
/// that a peer sending such tokens makes Kontrol do.
pub const KEYS_TRIED_WITHOUT_KID: usize = 4;

impl RingState {
    fn build(mut records: Vec<KeyRecord>, configured: &KeyRecord, retired: Arc<[String]>) -> Self {
        if !records
            .iter()
            .any(|r| r.public_pem == configured.public_pem)
        {
            records.push(configured.clone());
        }
        let newest = |candidates: Vec<&KeyRecord>| {
            candidates
                .into_iter()
                .reduce(|a, b| if b.signs_before(a) { b } else { a })
                .cloned()
        };
        let signer = newest(records.iter().filter(|r| r.live() && r.signing).collect())
            .or_else(|| newest(records.iter().filter(|r| r.live()).collect()))
            .unwrap_or_else(|| configured.clone());
        let decoding = |r: &KeyRecord| DecodingKey::from_rsa_pem(r.public_pem.as_bytes()).ok();
        let mut live: Vec<&KeyRecord> = records.iter().filter(|r| r.live()).collect();
        live.sort_by(|a, b| {
            let signer_first = (b.id == signer.id).cmp(&(a.id == signer.id));
            signer_first.then_with(|| (b.created_ms, &b.id).cmp(&(a.created_ms, &a.id)))
        });
        let verifying = live
            .iter()
            .filter_map(|r| Some((r.id.clone(), decoding(r)?)))
            .collect();
        let unnamed = live
            .iter()
            .filter_map(|r| decoding(r))
            .take(KEYS_TRIED_WITHOUT_KID)
            .collect();
        let signing = live
            .iter()
            .filter_map(|r| {
                let key = SigningKey::from_pem(&r.private_pem).ok()?;
                Some((r.id.clone(), (r.public_pem.clone(), Arc::new(key))))
            })
            .collect();
        RingState {
            records,
            signer,
            retired,
            verifying,
            unnamed,
            signing,
        }
    }

    /// `claims` signed by `pair` (RS256, its id in the header's `kid`), with the private key read
    /// when the pairs were, if `pair` is a live one of them.
    pub(crate) fn sign(&self, pair: &KeyRecord, claims: &Claims) -> Result<String, KeyError> {
        match self.signing.get(&pair.id) {
            Some((public_pem, key)) if *public_pem == pair.public_pem => {
                key.sign(claims, Some(&pair.id))
            }
            _ => SigningKey::from_pem(&pair.private_pem)?.sign(claims, Some(&pair.id)),
        }
    }

    /// The keys a token naming pair `kid` in its header is checked with: that pair's if it is
    /// live, none if it is deleted or unknown (the token is refused as expired, Go's answer to a
    /// token of a key Kontrol no longer has, which makes clients fetch a new one); the newest
    /// live pairs' when it names none (see [`KEYS_TRIED_WITHOUT_KID`]).
    pub(crate) fn verifying_keys(&self, kid: Option<&str>) -> Vec<DecodingKey> {
        match kid {
            Some(kid) => self.verifying.get(kid).cloned().into_iter().collect(),
            None => self.unnamed.clone(),
        }
    }

    /// What `public_pem` (trimmed) is to this Kontrol.
    pub(crate) fn standing(&self, public_pem: &str) -> Standing<'_> {
        let pem = public_pem.trim();
        match self.records.iter().find(|r| r.public_pem == pem) {
            Some(r) if r.live() => Standing::Live(r),
            Some(_) => Standing::Gone,
            None if self.retired.iter().any(|k| k == pem) => Standing::Gone,
            None => Standing::Unknown,
        }
    }

    /// The live pairs' ids and public keys, in a stable order.
    fn live_keys(&self) -> Vec<(&str, &str)> {
        let mut keys: Vec<(&str, &str)> = self
            .records
            .iter()
            .filter(|r| r.live())
            .map(|r| (r.id.as_str(), r.public_pem.as_str()))
            .collect();
        keys.sort_unstable();
        keys
    }

    /// The live pair `id`.
    pub(crate) fn live(&self, id: &str) -> Option<&KeyRecord> {
        self.records.iter().find(|r| r.id == id && r.live())
    }

    /// The pair `id`, live or deleted.
    pub(crate) fn find(&self, id: &str) -> Option<&KeyRecord> {
        self.records.iter().find(|r| r.id == id)
    }

    /// `record` as the management methods describe it.
    pub(crate) fn info(&self, record: &KeyRecord) -> KeyPairInfo {
        KeyPairInfo {
            id: record.id.clone(),
            public_key: record.public_pem.clone(),
            created_ms: record.created_ms,
            deleted_ms: record.deleted_ms,
            signing: record.signing,
            current: record.id == self.signer.id && record.public_pem == self.signer.public_pem,
        }
    }

    /// Every pair, oldest first.
    pub(crate) fn list(&self) -> Vec<KeyPairInfo> {
        let mut records: Vec<&KeyRecord> = self.records.iter().collect();
        records.sort_by(|a, b| (a.created_ms, &a.id).cmp(&(b.created_ms, &b.id)));
        records.into_iter().map(|r| self.info(r)).collect()
    }
}

/// The key pairs a Kontrol signs and trusts with, read from its storage.
#[derive(Debug)]
pub(crate) struct KeyRing {
    /// The options' pair under the options' id, signing, as stored when it is not yet.
    configured: KeyRecord,
    retired: Arc<[String]>,
    state: RwLock<Arc<RingState>>,
    /// Held by the reload under way.
    reloading: tokio::sync::Mutex<()>,
    /// How many reloads have begun.
    begun: AtomicU64,
    /// Whether the configured pair is known to be stored.
    stored: AtomicBool,
    /// Set once the first reload has been tried.
    first: tokio::sync::OnceCell<()>,
    /// Told to forget the tokens it verified when a read finds the live pairs changed.
    tokens: std::sync::OnceLock<Arc<TokenVerifier>>,
}

impl KeyRing {
    /// A ring holding only the configured pair (`key` under `key_id`) until it is read.
    pub(crate) fn new(key: &KeyPair, key_id: &str, retired: &[String]) -> KeyRing {
        let configured = KeyRecord::new(key_id, key, true);
        let retired: Arc<[String]> = retired.iter().map(|k| k.trim().to_owned()).collect();
        let state = RingState::build(Vec::new(), &configured, retired.clone());
        KeyRing {
            configured,
            retired,
            state: RwLock::new(Arc::new(state)),
            reloading: tokio::sync::Mutex::new(()),
            begun: AtomicU64::new(0),
            stored: AtomicBool::new(false),
            first: tokio::sync::OnceCell::new(),
            tokens: std::sync::OnceLock::new(),
        }
    }

    /// Makes `verifier` (whose keys are the ring's) forget the tokens it verified whenever a
    /// read of the storage finds the live pairs changed: a token of a deleted pair is refused
    /// from then on, not only once it is no longer remembered.
    pub(crate) fn forget_tokens_on_change(&self, verifier: Arc<TokenVerifier>) {
        let _ = self.tokens.set(verifier);
    }

    /// The pairs as last read.
    pub(crate) fn state(&self) -> Arc<RingState> {
        self.state.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Waits for the first read of the storage to have been tried (it is tried once; a
    /// failure leaves the configured pair signing until a later reload succeeds).
    pub(crate) async fn ready(&self, storage: &dyn Storage) {
        self.first
            .get_or_init(|| async {
                if let Err(e) = self.reload(storage).await {
                    warn!(error = %e, "reading the key pairs failed; signing with the configured pair");
                }
            })
            .await;
    }

    /// Reads the pairs from `storage` (adding the configured pair first if it is not stored),
    /// unless a reload that began after this call was made has finished meanwhile.
    pub(crate) async fn reload(&self, storage: &dyn Storage) -> Result<(), StorageError> {
        let arrived = self.begun.load(Ordering::SeqCst);
        let _turn = self.reloading.lock().await;
        if self.begun.load(Ordering::SeqCst) != arrived {
            return Ok(());
        }
        self.begun.fetch_add(1, Ordering::SeqCst);
        let mut records = storage.keys().await?;
        if !self.stored.load(Ordering::SeqCst) {
            let has = |records: &[KeyRecord]| {
                records
                    .iter()
                    .any(|r| r.public_pem == self.configured.public_pem)
            };
            if !has(&records) {
                let mut record = KeyRecord {
                    created_ms: now_ms(),
                    ..self.configured.clone()
                };
                if records.iter().any(|r| r.id == record.id) {
                    record.id = uuid::Uuid::new_v4().to_string();
                    warn!(
                        configured = %self.configured.id,
                        id = %record.id,
                        "the configured key pair's id names another stored pair: storing it under a new id"
                    );
                }
                match storage.add_key(&record).await {
                    // A storage that takes UUIDs only (Go's PostgreSQL schema): a new one.
                    Err(StorageError::Rejected(why))
                        if uuid::Uuid::try_parse(&record.id).is_err() =>
                    {
                        record.id = uuid::Uuid::new_v4().to_string();
                        warn!(
                            configured = %self.configured.id,
                            id = %record.id,
                            %why,
                            "the storage refuses the configured key pair's id: storing it under a new id"
                        );
                        storage.add_key(&record).await?;
                    }
                    other => {
                        other?;
                    }
                }
                records = storage.keys().await?;
            }
            self.stored.store(has(&records), Ordering::SeqCst);
        }
        let state = Arc::new(RingState::build(
            records,
            &self.configured,
            self.retired.clone(),
        ));
        let before = std::mem::replace(
            &mut *self.state.write().unwrap_or_else(|e| e.into_inner()),
            state.clone(),
        );
        // After the swap, so that a verification that began before the forgetting used the old
        // pairs and is not remembered, and one after it uses the new pairs.
        if before.live_keys() != state.live_keys()
            && let Some(tokens) = self.tokens.get()
        {
            tokens.forget_all();
        }
        Ok(())
    }
}

/// Checks that `pair`'s halves belong together: a JWT its private key signs verifies with its
/// public key.
pub(crate) fn check_pair(pair: &KeyPair) -> Result<(), String> {
    let claims = kite_native::core::auth::Claims {
        sub: "key check".into(),
        ..Default::default()
    };
    let token = pair
        .sign(&claims)
        .map_err(|e| format!("private key: {e}"))?;
    let public = jsonwebtoken::DecodingKey::from_rsa_pem(pair.public_pem.trim().as_bytes())
        .map_err(|e| format!("public key: {e}"))?;
    let mut validation = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::RS256);
    validation.required_spec_claims.clear();
    validation.validate_exp = false;
    validation.validate_aud = false;
    jsonwebtoken::decode::<serde::de::IgnoredAny>(&token, &public, &validation)
        .map(|_| ())
        .map_err(|_| "the public key is not the private key's".to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(id: &str, created_ms: u64, signing: bool, deleted: bool) -> KeyRecord {
        KeyRecord {
            id: id.into(),
            public_pem: format!("pub-{id}"),
            private_pem: format!("priv-{id}"),
            created_ms,
            deleted_ms: deleted.then_some(created_ms + 1),
            signing,
        }
    }

    #[test]
    fn the_newest_live_signing_pair_signs() {
        let configured = record("conf", 1, true, false);
        let retired: Arc<[String]> = Arc::from(vec!["pub-old".to_owned()]);
        let build = |records: Vec<KeyRecord>| {
            RingState::build(records, &configured, retired.clone())
                .signer
                .id
        };
        // Nothing stored: the configured pair (added to the ring).
        assert_eq!(build(vec![]), "conf");
        // The newest live signing pair, whatever the order read.
        let a = record("a", 10, true, false);
        let b = record("b", 20, true, false);
        let c = record("c", 30, false, false);
        let d = record("d", 40, true, true);
        assert_eq!(build(vec![d.clone(), c.clone(), b.clone(), a.clone()]), "b");
        assert_eq!(build(vec![a.clone(), b.clone(), c.clone(), d.clone()]), "b");
        // Same time: the greater id.
        let b2 = record("b2", 20, true, false);
        assert_eq!(build(vec![b2, b.clone(), a.clone()]), "b2");
        // No signing pair live: the newest live one; none live at all: the configured.
        let conf_gone = KeyRecord {
            deleted_ms: Some(2),
            ..configured.clone()
        };
        assert_eq!(build(vec![c.clone(), d.clone(), conf_gone.clone()]), "c");
        assert_eq!(build(vec![d.clone(), conf_gone]), "conf");

        let state = RingState::build(vec![a.clone(), d.clone()], &configured, retired.clone());
        assert_eq!(state.standing(" pub-a\n"), Standing::Live(&a));
        assert_eq!(state.standing("pub-d"), Standing::Gone);
        assert_eq!(state.standing("pub-old"), Standing::Gone);
        assert_eq!(state.standing("pub-x"), Standing::Unknown);
        assert!(state.live("d").is_none() && state.find("d").is_some());
        let list = state.list();
        let ids: Vec<&str> = list.iter().map(|i| i.id.as_str()).collect();
        assert_eq!(ids, ["conf", "a", "d"]);
        assert!(list[1].current && !list[0].current && !list[2].current);
    }

    #[test]
    fn a_pair_must_belong_together() {
        let a = KeyPair::generate(1024).unwrap();
        let b = KeyPair::generate(1024).unwrap();
        check_pair(&a).unwrap();
        let mixed = KeyPair {
            private_pem: a.private_pem.clone(),
            public_pem: b.public_pem.clone(),
        };
        assert!(
            check_pair(&mixed)
                .unwrap_err()
                .contains("not the private key")
        );
        let broken = KeyPair {
            private_pem: "nonsense".into(),
            public_pem: b.public_pem,
        };
        assert!(check_pair(&broken).unwrap_err().starts_with("private key"));
    }
}
