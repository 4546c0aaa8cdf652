//! [`EtcdStorage`]: registrations in etcd (v3 API), shared by every Kontrol pointed at the same
//! cluster and key prefix; the layout is described on the type.

use std::borrow::Cow;
use std::future::Future;
use std::hash::{Hash, Hasher};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use etcd_client::{
    Client, Compare, CompareOp, ConnectOptions, GetOptions, KeyValue, PutOptions, Txn, TxnOp,
    TxnOpResponse,
};

use super::{KeyRecord, Registration, Storage, StorageError, now_ms};
use crate::query::Matcher;

/// The endpoint Go Kontrol uses when none is given.
const DEFAULT_ENDPOINT: &str = "http://127.0.0.1:2379";

/// The default key prefix, Go Kontrol's.
const DEFAULT_PREFIX: &str = "/kites";

/// How often a write is tried again when another writer changed the same kite in between.
const MAX_TRIES: u32 = 16;

/// How many locks serialise this process's writes of one kite id (by hash).
const LOCKS: usize = 64;

/// The gRPC status code `UNAVAILABLE`.
const GRPC_UNAVAILABLE: i32 = 14;

/// The longest lease etcd grants, in seconds.
const MAX_LEASE_TTL: i64 = 9_000_000_000;

/// Where etcd is and how long to wait for it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EtcdOptions {
    /// etcd client URLs (`http://127.0.0.1:2379`); a bare `host:port` means `http://host:port`.
    /// Requests go to one of them and move to the next when it cannot be reached (as Go's etcd
    /// client does); the last one that answered is tried first.
    pub endpoints: Vec<String>,
    /// The key prefix of the registrations (default `/kites`); the id index lives under the same
    /// prefix followed by `-by-id` (`/kites-by-id`). Kontrols and tests sharing one etcd keep
    /// apart with different prefixes. A trailing `/` is ignored; an empty prefix means the
    /// default.
    pub prefix: String,
    /// How long connecting to etcd may take (default 2 s).
    pub connect_timeout: Duration,
    /// How long one storage operation may take before it fails with
    /// [`StorageError::Unavailable`] (default 2 s).
    pub request_timeout: Duration,
}

impl Default for EtcdOptions {
    /// Go Kontrol's defaults: `http://127.0.0.1:2379` and the prefix `/kites`.
    fn default() -> EtcdOptions {
        EtcdOptions::new([DEFAULT_ENDPOINT])
    }
}

impl EtcdOptions {
    /// Options for `endpoints`, with the default prefix and timeouts.
    pub fn new<S: Into<String>>(endpoints: impl IntoIterator<Item = S>) -> EtcdOptions {
        EtcdOptions {
            endpoints: endpoints.into_iter().map(Into::into).collect(),
            prefix: DEFAULT_PREFIX.to_owned(),
            connect_timeout: Duration::from_secs(2),
            request_timeout: Duration::from_secs(2),
        }
    }

    /// Options for a comma-separated endpoint list, as Go's `KONTROL_MACHINES` holds
    /// (`http://10.0.0.1:2379,http://10.0.0.2:2379`); blanks are ignored and an empty list means
    /// `http://127.0.0.1:2379`.
    pub fn from_machines(machines: &str) -> EtcdOptions {
        let endpoints: Vec<&str> = machines
            .split(',')
            .map(str::trim)
            .filter(|e| !e.is_empty())
            .collect();
        if endpoints.is_empty() {
            EtcdOptions::default()
        } else {
            EtcdOptions::new(endpoints)
        }
    }

    /// The same options with key prefix `prefix`.
    pub fn with_prefix(mut self, prefix: &str) -> EtcdOptions {
        prefix.clone_into(&mut self.prefix);
        self
    }
}

/// Registrations in etcd (v3 API) under a key prefix, expired by etcd leases. Cloning gives
/// another handle on the same connection.
///
/// Layout, with the default prefix `/kites`:
///
/// - `/kites/<username>/<environment>/<name>/<version>/<region>/<hostname>/<id>` → the
///   [`Registration`] as JSON (the kite, its URL, its key id and `expires_at_ms`);
/// - `/kites-keys/<id>` → one of Kontrol's key pairs ([`KeyRecord`] as JSON), without a lease
///   (a deleted pair stays, marked deleted);
/// - `/kites-by-id/<id>` → the full key above. (Go Kontrol's etcd backend stored the value under
///   `/kites/<id>` and then looked it up as if it were a key, so its id lookup never worked.)
///
/// A `/` or `%` inside a field is written `%2F` or `%25`, so every key has exactly seven segments
/// and no two kites share one.
///
/// Both keys of a registration are attached to one lease whose TTL is the registration's
/// remaining lifetime, rounded up to whole seconds (etcd raises it to its minimum, 2 s with the
/// default election timeout): etcd deletes them itself when no Kontrol refreshes them, even if
/// every Kontrol is gone. [`Storage::refresh`] moves both keys to a new lease with the new
/// expiry and revokes the old one (a keep-alive could only restart the lease's original TTL).
/// Values carry the expiry and every read checks it, so a registration is never returned past
/// its expiry, even in the moments before etcd fires its lease.
///
/// Queries read the candidates under the key prefix the leading exact fields name
/// ([`Matcher::prefix`]), or through the id index for an id-only query (which finds the
/// registration only if the value at the key the index names is that id's, at its own key), and
/// then apply [`Matcher::matches`] and the expiry here, so every backend finds the same kites.
/// Writes are transactions conditioned on the revisions just read (retried on conflict; writes of
/// one id through one `EtcdStorage` take turns), so two Kontrols writing the same kite leave
/// exactly one registration with its index entry.
///
/// Ownership: an upsert, refresh or delete first reads the id index entry and the registration
/// it names, refuses ([`StorageError::OwnedByAnother`]) if that one is live and another user's,
/// and otherwise writes in a transaction that compares both the index entry's and the
/// registration's revisions (or their absence) with what it read; a registration refreshed or
/// replaced in between fails the compare and the operation starts again from the new state.
///
/// Every operation has a deadline ([`EtcdOptions::request_timeout`]): while etcd is down,
/// operations fail with [`StorageError::Unavailable`] within it (at once when its port refuses
/// connections), and the same `EtcdStorage` works again once etcd is back. With several
/// endpoints, one that cannot be reached is skipped.
///
/// [`Storage::purge_expired`] deletes the registrations that have expired while their lease has
/// not fired yet; leases do the rest, so Kontrol need not call it.
#[derive(Clone)]
pub struct EtcdStorage {
    /// One client per endpoint, in the order given.
    clients: Arc<[Client]>,
    /// The endpoint requests go to first: the last one that answered.
    preferred: Arc<AtomicUsize>,
    endpoints: Vec<String>,
    /// `<prefix>/`: the registrations.
    kites: String,
    /// `<prefix>-by-id/`: the id index.
    index: String,
    request_timeout: Duration,
    /// Writes of one kite id through this storage (and its clones) take turns: conditional
    /// transactions then only ever race other Kontrols.
    locks: Arc<[tokio::sync::Mutex<()>]>,
}

impl std::fmt::Debug for EtcdStorage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EtcdStorage")
            .field("endpoints", &self.endpoints)
            .field("prefix", &self.prefix())
            .field("request_timeout", &self.request_timeout)
            .finish()
    }
}

fn unavailable(endpoint: &str, e: etcd_client::Error) -> StorageError {
    StorageError::Unavailable(format!("etcd at {endpoint}: {e}"))
}

/// Whether `e` says the endpoint could not be reached at all, so the request never left and may
/// go to another endpoint.
fn never_sent(e: &etcd_client::Error) -> bool {
    matches!(e, etcd_client::Error::GRpcStatus(status)
        if i32::from(status.code()) == GRPC_UNAVAILABLE
            && (status.message().contains("connect error") || status.message().contains("dns error")))
}

/// `field` with `%` and `/` escaped, so it is one key segment.
fn escape(field: &str) -> Cow<'_, str> {
    if field.contains(['%', '/']) {
        Cow::Owned(field.replace('%', "%25").replace('/', "%2F"))
    } else {
        Cow::Borrowed(field)
    }
}

/// The lease TTL for a registration expiring at `expires_at_ms`: the time left rounded up to
/// whole seconds, at least one (etcd never expires a key before its registration expires).
fn lease_ttl(expires_at_ms: u64) -> i64 {
    let left = expires_at_ms.saturating_sub(now_ms());
    i64::try_from(left.div_ceil(1000))
        .unwrap_or(MAX_LEASE_TTL)
        .clamp(1, MAX_LEASE_TTL)
}

fn encode(r: &Registration) -> Vec<u8> {
    serde_json::to_vec(r).unwrap_or_default()
}

fn decode(kv: &KeyValue) -> Result<Registration, StorageError> {
    serde_json::from_slice(kv.value())
        .map_err(|e| StorageError::Corrupt(format!("{}: {e}", String::from_utf8_lossy(kv.key()))))
}

/// The first key-value the first operation of `resp` read (the `or_else` read of a failed
/// transaction).
fn first_got(resp: etcd_client::TxnResponse) -> Option<KeyValue> {
    match resp.op_responses().into_iter().next() {
        Some(TxnOpResponse::Get(mut got)) => got.take_kvs().into_iter().next(),
        _ => None,
    }
}

/// Waits a random moment before try `attempt` (none before the first), so that writers that
/// collided do not collide again.
async fn backoff(attempt: u32) {
    if attempt > 0 {
        let most = 1u64 << attempt.min(6);
        tokio::time::sleep(Duration::from_millis(rand::random_range(0..=most))).await;
    }
}

/// Revokes `lease` in the background, ignoring failure: a lease left behind holds no key and
/// expires by itself.
fn revoke_later(client: &Client, lease: i64, timeout: Duration) {
    if lease == 0 {
        return;
    }
    let mut client = client.clone();
    tokio::spawn(async move {
        let _ = tokio::time::timeout(timeout, client.lease_revoke(lease)).await;
    });
}

impl EtcdStorage {
    /// Connects to etcd and checks that it answers within `options.connect_timeout`: a Kontrol
    /// pointed at a dead etcd fails at start ([`StorageError::Unavailable`]) rather than at its
    /// first registration.
    pub async fn connect(options: EtcdOptions) -> Result<EtcdStorage, StorageError> {
        let EtcdOptions {
            endpoints,
            prefix,
            connect_timeout,
            request_timeout,
        } = options;
        let prefix = match prefix.trim_end_matches('/') {
            "" => DEFAULT_PREFIX,
            p => p,
        };
        let connect = ConnectOptions::new()
            .with_connect_timeout(connect_timeout)
            .with_timeout(request_timeout)
            .with_keep_alive(Duration::from_secs(10), request_timeout);
        if endpoints.is_empty() {
            return Err(StorageError::Unavailable("no etcd endpoints given".into()));
        }
        let failed = |endpoint: &str, why: String| {
            StorageError::Unavailable(format!("etcd at {endpoint}: {why}"))
        };
        // One client per endpoint (etcd-client's balancing sends requests to dead endpoints
        // too): requests go to one endpoint and move on when it cannot be reached.
        let mut clients = Vec::with_capacity(endpoints.len());
        for endpoint in &endpoints {
            let client = tokio::time::timeout(
                connect_timeout,
                Client::connect([endpoint], Some(connect.clone())),
            )
            .await
            .map_err(|_| {
                failed(
                    endpoint,
                    format!("no connection within {connect_timeout:?}"),
                )
            })?
            .map_err(|e| failed(endpoint, e.to_string()))?;
            clients.push(client);
        }
        let storage = EtcdStorage {
            clients: clients.into(),
            preferred: Arc::new(AtomicUsize::new(0)),
            kites: format!("{prefix}/"),
            index: format!("{prefix}-by-id/"),
            endpoints: endpoints.clone(),
            request_timeout,
            locks: (0..LOCKS).map(|_| tokio::sync::Mutex::new(())).collect(),
        };
        let probe = storage.range(
            &storage.kites,
            GetOptions::new().with_prefix().with_count_only(),
        );
        tokio::time::timeout(connect_timeout, probe)
            .await
            .map_err(|_| {
                failed(
                    &endpoints.join(","),
                    format!("no answer within {connect_timeout:?}"),
                )
            })??;
        Ok(storage)
    }

    /// The key prefix of the registrations (`/kites`).
    pub fn prefix(&self) -> &str {
        self.kites.trim_end_matches('/')
    }

    /// The etcd key of `kite`'s registration.
    fn kite_key(&self, kite: &kite_native::core::Kite) -> String {
        let mut key = self.kites.clone();
        for (i, field) in kite.values().into_iter().enumerate() {
            if i > 0 {
                key.push('/');
            }
            key.push_str(&escape(field));
        }
        key
    }

    /// The etcd key of the id index entry of `id`.
    fn index_key(&self, id: &str) -> String {
        format!("{}{}", self.index, escape(id))
    }

    /// Runs `op` within the request timeout.
    async fn bounded<T>(
        &self,
        what: &str,
        op: impl Future<Output = Result<T, StorageError>>,
    ) -> Result<T, StorageError> {
        tokio::time::timeout(self.request_timeout, op)
            .await
            .unwrap_or_else(|_| {
                Err(StorageError::Unavailable(format!(
                    "etcd at {}: {what} got no answer within {:?}",
                    self.endpoints.join(","),
                    self.request_timeout
                )))
            })
    }

    /// The client of the endpoint requests go to first.
    fn client(&self) -> &Client {
        &self.clients[self.preferred.load(Ordering::Relaxed) % self.clients.len()]
    }

    /// Runs `rpc` against the preferred endpoint, and against the next ones in turn while an
    /// endpoint cannot be reached (the request never left, so sending it again is safe); the
    /// first endpoint that answers becomes the preferred one.
    async fn call<T, F, Fut>(&self, rpc: F) -> Result<T, StorageError>
    where
        F: Fn(Client) -> Fut,
        Fut: Future<Output = Result<T, etcd_client::Error>>,
    {
        let n = self.clients.len();
        let first = self.preferred.load(Ordering::Relaxed);
        let mut failed = None;
        for i in 0..n {
            let at = (first + i) % n;
            match rpc(self.clients[at].clone()).await {
                Ok(answer) => {
                    if i > 0 {
                        self.preferred.store(at, Ordering::Relaxed);
                    }
                    return Ok(answer);
                }
                Err(e) if never_sent(&e) => failed = Some(unavailable(&self.endpoints[at], e)),
                Err(e) => return Err(unavailable(&self.endpoints[at], e)),
            }
        }
        Err(failed.unwrap_or_else(|| StorageError::Unavailable("no etcd endpoints".into())))
    }

    /// The key-values of a read of `key` with `options`.
    async fn range(&self, key: &str, options: GetOptions) -> Result<Vec<KeyValue>, StorageError> {
        self.call(|mut c| {
            let (key, options) = (key.to_owned(), options.clone());
            async move { c.get(key, Some(options)).await }
        })
        .await
        .map(|mut resp| resp.take_kvs())
    }

    /// The key-value of `key`, if it exists.
    async fn get_one(&self, key: &str) -> Result<Option<KeyValue>, StorageError> {
        Ok(self.range(key, GetOptions::new()).await?.into_iter().next())
    }

    /// A new lease lasting until `expires_at_ms` (see [`lease_ttl`]).
    async fn grant(&self, expires_at_ms: u64) -> Result<i64, StorageError> {
        let ttl = lease_ttl(expires_at_ms);
        self.call(|mut c| async move { c.lease_grant(ttl, None).await })
            .await
            .map(|lease| lease.id())
    }

    async fn txn(&self, txn: Txn) -> Result<etcd_client::TxnResponse, StorageError> {
        self.call(|mut c| {
            let txn = txn.clone();
            async move { c.txn(txn).await }
        })
        .await
    }

    /// The lock for writes of kite `id`.
    async fn lock(&self, id: &str) -> tokio::sync::MutexGuard<'_, ()> {
        let mut hasher = std::collections::hash_map::DefaultHasher::new();
        id.hash(&mut hasher);
        let slot = usize::try_from(hasher.finish() % LOCKS as u64).unwrap_or(0);
        self.locks[slot].lock().await
    }

    fn contention(&self, id: &str) -> StorageError {
        StorageError::Unavailable(format!(
            "etcd: kite {id} kept changing under {MAX_TRIES} tries"
        ))
    }

    /// The registration of kite `id` that `kv` (read at the key the id index names) holds, if it
    /// is one: an unreadable value, or one of another id or at another kite's key, holds none.
    fn holder(&self, kv: &KeyValue, id: &str) -> Option<Registration> {
        decode(kv)
            .ok()
            .filter(|r| r.kite.id == id && self.kite_key(&r.kite).as_bytes() == kv.key())
    }

    /// What the id index entry `at` points to, and the compare that it is still the same: the
    /// key-value at the key it names (if any).
    async fn indexed(&self, at: &KeyValue) -> Result<(Option<KeyValue>, Compare), StorageError> {
        let key = String::from_utf8_lossy(at.value()).into_owned();
        let held = self.get_one(&key).await?;
        let same = match &held {
            Some(kv) => Compare::mod_revision(key.as_str(), CompareOp::Equal, kv.mod_revision()),
            None => Compare::create_revision(key.as_str(), CompareOp::Equal, 0),
        };
        Ok((held, same))
    }

    async fn upsert_inner(&self, r: &Registration) -> Result<(), StorageError> {
        let id = r.kite.id.as_str();
        let _one_writer = self.lock(id).await;
        let key = self.kite_key(&r.kite);
        let index = self.index_key(id);
        let value = encode(r);
        let (mut current, lease) =
            tokio::try_join!(self.get_one(&index), self.grant(r.expires_at_ms))?;
        for attempt in 0..MAX_TRIES {
            backoff(attempt).await;
            let mut ops = Vec::with_capacity(3);
            let mut unchanged = Vec::with_capacity(2);
            match &current {
                Some(at) => {
                    // The registration the index names must be ours or expired, and stay as
                    // read until the write: refreshed or replaced meanwhile, go again.
                    let (held, same) = self.indexed(at).await?;
                    if let Some(held) = held.as_ref().and_then(|kv| self.holder(kv, id))
                        && !held.yields_to(r.owner(), now_ms())
                    {
                        revoke_later(self.client(), lease, self.request_timeout);
                        return Err(StorageError::owned_by_another(id));
                    }
                    if at.value() != key.as_bytes() {
                        // Registered elsewhere before (another host or URL path): move it.
                        ops.push(TxnOp::delete(at.value(), None));
                    }
                    unchanged.push(Compare::mod_revision(
                        index.as_str(),
                        CompareOp::Equal,
                        at.mod_revision(),
                    ));
                    unchanged.push(same);
                }
                None => unchanged.push(Compare::create_revision(
                    index.as_str(),
                    CompareOp::Equal,
                    0,
                )),
            }
            let put = || Some(PutOptions::new().with_lease(lease));
            ops.push(TxnOp::put(key.as_str(), value.clone(), put()));
            ops.push(TxnOp::put(index.as_str(), key.as_str(), put()));
            let txn = Txn::new()
                .when(unchanged)
                .and_then(ops)
                .or_else([TxnOp::get(index.as_str(), None)]);
            let resp = self.txn(txn).await?;
            if resp.succeeded() {
                let old = current.map_or(0, |kv| kv.lease());
                if old != lease {
                    revoke_later(self.client(), old, self.request_timeout);
                }
                return Ok(());
            }
            // Another Kontrol wrote the kite meanwhile: go again from what it wrote.
            current = first_got(resp);
        }
        revoke_later(self.client(), lease, self.request_timeout);
        Err(self.contention(id))
    }

    async fn refresh_inner(
        &self,
        id: &str,
        owner: &str,
        expires_at_ms: u64,
    ) -> Result<bool, StorageError> {
        let _one_writer = self.lock(id).await;
        let index = self.index_key(id);
        let (mut entry, lease) = tokio::try_join!(self.get_one(&index), self.grant(expires_at_ms))?;
        let give_up = |found| {
            revoke_later(self.client(), lease, self.request_timeout);
            found
        };
        for attempt in 0..MAX_TRIES {
            backoff(attempt).await;
            let Some(at) = entry.take() else {
                return give_up(Ok(false));
            };
            let key = String::from_utf8_lossy(at.value()).into_owned();
            let Some(kv) = self.get_one(&key).await? else {
                // The key went after the index was read: moved (read the index again) or gone.
                entry = self
                    .get_one(&index)
                    .await?
                    .filter(|now| now.mod_revision() != at.mod_revision());
                continue;
            };
            let Some(mut r) = self.holder(&kv, id).filter(|r| !r.expired(now_ms())) else {
                return give_up(Ok(false));
            };
            if r.owner() != owner {
                return give_up(Err(StorageError::owned_by_another(id)));
            }
            r.expires_at_ms = expires_at_ms;
            let put = || Some(PutOptions::new().with_lease(lease));
            let txn = Txn::new()
                .when([
                    Compare::mod_revision(index.as_str(), CompareOp::Equal, at.mod_revision()),
                    Compare::mod_revision(key.as_str(), CompareOp::Equal, kv.mod_revision()),
                ])
                .and_then([
                    TxnOp::put(key.as_str(), encode(&r), put()),
                    TxnOp::put(index.as_str(), key.as_str(), put()),
                ])
                .or_else([TxnOp::get(index.as_str(), None)]);
            let resp = self.txn(txn).await?;
            if resp.succeeded() {
                revoke_later(self.client(), kv.lease(), self.request_timeout);
                return Ok(true);
            }
            entry = first_got(resp);
        }
        revoke_later(self.client(), lease, self.request_timeout);
        Err(self.contention(id))
    }

    async fn delete_inner(&self, id: &str, owner: &str) -> Result<bool, StorageError> {
        let _one_writer = self.lock(id).await;
        let index = self.index_key(id);
        let mut entry = self.get_one(&index).await?;
        for attempt in 0..MAX_TRIES {
            backoff(attempt).await;
            let Some(at) = entry.take() else {
                return Ok(false);
            };
            let (held, same) = self.indexed(&at).await?;
            if let Some(held) = held.as_ref().and_then(|kv| self.holder(kv, id))
                && !held.yields_to(owner, now_ms())
            {
                return Err(StorageError::owned_by_another(id));
            }
            let txn = Txn::new()
                .when([
                    Compare::mod_revision(index.as_str(), CompareOp::Equal, at.mod_revision()),
                    same,
                ])
                .and_then([
                    TxnOp::delete(at.value(), None),
                    TxnOp::delete(index.as_str(), None),
                ])
                .or_else([TxnOp::get(index.as_str(), None)]);
            let resp = self.txn(txn).await?;
            if resp.succeeded() {
                revoke_later(self.client(), at.lease(), self.request_timeout);
                let deleted = resp
                    .op_responses()
                    .first()
                    .is_some_and(|op| matches!(op, TxnOpResponse::Delete(d) if d.deleted() > 0));
                return Ok(deleted);
            }
            entry = first_got(resp);
        }
        Err(self.contention(id))
    }

    async fn get_inner(&self, matcher: &Matcher) -> Result<Vec<Registration>, StorageError> {
        let kvs = match matcher.id() {
            // The registration the index names, only if it is that id's at its own key: the
            // index and the kite key agree, or nothing is found.
            Some(id) => match self.get_one(&self.index_key(id)).await? {
                Some(entry) => {
                    let key = String::from_utf8_lossy(entry.value()).into_owned();
                    self.get_one(&key)
                        .await?
                        .filter(|kv| self.holder(kv, id).is_some())
                        .into_iter()
                        .collect()
                }
                None => Vec::new(),
            },
            None => {
                let fields = matcher.prefix();
                let mut key = self.kites.clone();
                for field in &fields {
                    key.push_str(&escape(field));
                    key.push('/');
                }
                let options = if fields.len() == 7 {
                    // The whole key: this one kite only (not also ids it is a prefix of).
                    key.pop();
                    GetOptions::new()
                } else {
                    GetOptions::new().with_prefix()
                };
                self.range(&key, options).await?
            }
        };
        let now = now_ms();
        Ok(kvs
            .iter()
            .filter_map(|kv| match decode(kv) {
                Ok(r) => Some(r),
                Err(e) => {
                    tracing::warn!("skipping an unreadable registration: {e}");
                    None
                }
            })
            .filter(|r| !r.expired(now) && matcher.matches(&r.kite))
            .collect())
    }

    async fn purge_inner(&self) -> Result<usize, StorageError> {
        let kvs = self
            .range(&self.kites, GetOptions::new().with_prefix())
            .await?;
        let now = now_ms();
        let mut purged = 0;
        for kv in &kvs {
            let Ok(r) = decode(kv) else { continue };
            if !r.expired(now) {
                continue;
            }
            let same = Compare::mod_revision(kv.key(), CompareOp::Equal, kv.mod_revision());
            let index = self.index_key(&r.kite.id);
            // The key and its index entry, if the index still points at this key...
            let both = Txn::new()
                .when([
                    same.clone(),
                    Compare::value(index.as_str(), CompareOp::Equal, kv.key()),
                ])
                .and_then([
                    TxnOp::delete(kv.key(), None),
                    TxnOp::delete(index.as_str(), None),
                ]);
            // ...else the key alone, if nobody refreshed it meanwhile.
            let alone = || {
                Txn::new()
                    .when([same.clone()])
                    .and_then([TxnOp::delete(kv.key(), None)])
            };
            if self.txn(both).await?.succeeded() || self.txn(alone()).await?.succeeded() {
                purged += 1;
            }
        }
        Ok(purged)
    }
}

/// Kontrol's key pairs, under `<prefix>-keys/<id>` (no lease).
impl EtcdStorage {
    /// `<prefix>-keys/`: the key pairs.
    fn keys_prefix(&self) -> String {
        format!("{}-keys/", self.prefix())
    }

    /// The etcd key of key pair `id`.
    fn key_pair_key(&self, id: &str) -> String {
        format!("{}{}", self.keys_prefix(), escape(id))
    }

    /// Every key pair and the revision they were read at.
    async fn read_keys(&self) -> Result<(Vec<KeyRecord>, i64), StorageError> {
        let prefix = self.keys_prefix();
        let mut resp = self
            .call(|mut c| {
                let prefix = prefix.clone();
                async move { c.get(prefix, Some(GetOptions::new().with_prefix())).await }
            })
            .await?;
        let revision = resp.header().map_or(0, |h| h.revision());
        let keys = resp
            .take_kvs()
            .iter()
            .map(decode_key)
            .collect::<Result<Vec<_>, _>>()?;
        Ok((keys, revision))
    }

    /// Adds `key` if neither its id nor its public key is taken: a transaction that the key
    /// pairs are unchanged since they were read (every key under the prefix older than the
    /// read), tried again when another Kontrol changed them in between.
    async fn add_key_inner(&self, key: &KeyRecord) -> Result<bool, StorageError> {
        let prefix = self.keys_prefix();
        let at = self.key_pair_key(&key.id);
        let value = serde_json::to_vec(key).unwrap_or_default();
        for attempt in 0..MAX_TRIES {
            backoff(attempt).await;
            let (keys, revision) = self.read_keys().await?;
            if keys
                .iter()
                .any(|k| k.id == key.id || k.public_pem == key.public_pem)
            {
                return Ok(false);
            }
            let txn = Txn::new()
                .when([
                    Compare::mod_revision(prefix.as_str(), CompareOp::Less, revision + 1)
                        .with_prefix(),
                    Compare::create_revision(at.as_str(), CompareOp::Equal, 0),
                ])
                .and_then([TxnOp::put(at.as_str(), value.clone(), None)]);
            if self.txn(txn).await?.succeeded() {
                return Ok(true);
            }
        }
        Err(StorageError::Unavailable(format!(
            "etcd: the key pairs kept changing under {MAX_TRIES} tries"
        )))
    }

    /// Marks key pair `id` deleted, if it is live, unless it changed since it was read (then
    /// read again).
    async fn delete_key_inner(&self, id: &str) -> Result<bool, StorageError> {
        let at = self.key_pair_key(id);
        for attempt in 0..MAX_TRIES {
            backoff(attempt).await;
            let Some(kv) = self.get_one(&at).await? else {
                return Ok(false);
            };
            let mut key = decode_key(&kv)?;
            if !key.live() || key.id != id {
                return Ok(false);
            }
            key.deleted_ms = Some(now_ms().max(key.created_ms));
            let txn = Txn::new()
                .when([Compare::mod_revision(
                    at.as_str(),
                    CompareOp::Equal,
                    kv.mod_revision(),
                )])
                .and_then([TxnOp::put(
                    at.as_str(),
                    serde_json::to_vec(&key).unwrap_or_default(),
                    None,
                )]);
            if self.txn(txn).await?.succeeded() {
                return Ok(true);
            }
        }
        Err(StorageError::Unavailable(format!(
            "etcd: key pair {id} kept changing under {MAX_TRIES} tries"
        )))
    }
}

/// A key pair stored at `kv`.
fn decode_key(kv: &KeyValue) -> Result<KeyRecord, StorageError> {
    serde_json::from_slice(kv.value())
        .map_err(|e| StorageError::Corrupt(format!("{}: {e}", String::from_utf8_lossy(kv.key()))))
}

#[async_trait::async_trait]
impl Storage for EtcdStorage {
    async fn upsert(&self, registration: &Registration) -> Result<(), StorageError> {
        self.bounded("upsert", self.upsert_inner(registration))
            .await
    }

    /// Moves the kite's keys to a new lease that ends at `expires_at_ms` and revokes the old one.
    async fn refresh(
        &self,
        id: &str,
        owner: &str,
        expires_at_ms: u64,
    ) -> Result<bool, StorageError> {
        self.bounded("refresh", self.refresh_inner(id, owner, expires_at_ms))
            .await
    }

    async fn delete(&self, id: &str, owner: &str) -> Result<bool, StorageError> {
        self.bounded("delete", self.delete_inner(id, owner)).await
    }

    async fn get(&self, matcher: &Matcher) -> Result<Vec<Registration>, StorageError> {
        self.bounded("get", self.get_inner(matcher)).await
    }

    /// Deletes the registrations that have expired but whose lease etcd has not fired yet
    /// (leases do the rest, so this usually finds nothing; Kontrol need not call it).
    async fn purge_expired(&self) -> Result<usize, StorageError> {
        self.bounded("purge", self.purge_inner()).await
    }

    async fn add_key(&self, key: &KeyRecord) -> Result<bool, StorageError> {
        self.bounded("add key", self.add_key_inner(key)).await
    }

    async fn delete_key(&self, id: &str) -> Result<bool, StorageError> {
        self.bounded("delete key", self.delete_key_inner(id)).await
    }

    async fn keys(&self) -> Result<Vec<KeyRecord>, StorageError> {
        self.bounded("keys", async { Ok(self.read_keys().await?.0) })
            .await
    }
}

#[cfg(test)]
mod tests {
    //! Against a real etcd started for each test (skipped without an `etcd` binary, except
    //! under CI).

    use std::collections::BTreeSet;
    use std::path::PathBuf;
    use std::process::{Child, Command, Stdio};
    use std::time::Instant;

    use etcd_client::{EventType, WatchOptions};
    use kite_native::core::{Kite, KontrolQuery};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::*;
    use crate::storage::tests::{behaves, kite, matcher};

    const HOUR: Duration = Duration::from_secs(3600);

    /// The `etcd` on `PATH`. Without one the test is skipped on a developer machine and fails
    /// under CI (`CI=true`), which must have it: `scripts/setup` installs Debian's
    /// `etcd-server`.
    fn etcd_binary() -> Option<PathBuf> {
        let found = std::env::var_os("PATH").and_then(|paths| {
            std::env::split_paths(&paths)
                .map(|dir| dir.join("etcd"))
                .find(|p| p.is_file())
        });
        if found.is_none() {
            kite_test_kit::skip("no etcd on PATH (scripts/setup installs it: Debian etcd-server)");
        }
        found
    }

    /// A real etcd on 127.0.0.1 (free client and peer ports) with its data in a temporary
    /// directory; killed and the directory removed on drop.
    struct Etcd {
        bin: PathBuf,
        dir: PathBuf,
        client_port: u16,
        peer_port: u16,
        child: Option<Child>,
    }

    impl Etcd {
        /// A running, healthy etcd; `None` when there is no etcd to run.
        async fn start() -> Option<Etcd> {
            let bin = etcd_binary()?;
            let dir = std::env::temp_dir().join(format!("kontrol-etcd-{}", uuid::Uuid::new_v4()));
            std::fs::create_dir_all(&dir).unwrap();
            let client = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            let peer = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            let mut etcd = Etcd {
                bin,
                dir,
                client_port: client.local_addr().unwrap().port(),
                peer_port: peer.local_addr().unwrap().port(),
                child: None,
            };
            drop((client, peer));
            etcd.run().await;
            Some(etcd)
        }

        fn url(&self) -> String {
            format!("http://127.0.0.1:{}", self.client_port)
        }

        /// Starts etcd on this one's ports and data directory, and waits until it is healthy.
        async fn run(&mut self) {
            let log = std::fs::File::options()
                .create(true)
                .append(true)
                .open(self.dir.join("etcd.log"))
                .unwrap();
            let client = self.url();
            let peer = format!("http://127.0.0.1:{}", self.peer_port);
            let cluster = format!("kontrol-test={peer}");
            let data = self.dir.join("data");
            let child = Command::new(&self.bin)
                .args(["--name", "kontrol-test", "--data-dir"])
                .arg(&data)
                .args(["--listen-client-urls", &client])
                .args(["--advertise-client-urls", &client])
                .args(["--listen-peer-urls", &peer])
                .args(["--initial-advertise-peer-urls", &peer])
                .args(["--initial-cluster", &cluster])
                .stdin(Stdio::null())
                .stdout(log.try_clone().unwrap())
                .stderr(log)
                .spawn()
                .unwrap();
            self.child = Some(child);
            let deadline = Instant::now() + Duration::from_secs(15);
            while !self.healthy().await {
                if let Some(status) = self.child.as_mut().and_then(|c| c.try_wait().unwrap()) {
                    panic!("etcd exited ({status}):\n{}", self.log());
                }
                assert!(
                    Instant::now() < deadline,
                    "etcd not healthy within 15 s:\n{}",
                    self.log()
                );
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }

        /// Whether etcd answers `GET /health` with `"health":"true"`.
        async fn healthy(&self) -> bool {
            let probe = async {
                let mut s = tokio::net::TcpStream::connect(("127.0.0.1", self.client_port))
                    .await
                    .ok()?;
                s.write_all(b"GET /health HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n")
                    .await
                    .ok()?;
                let mut answer = String::new();
                s.read_to_string(&mut answer).await.ok()?;
                Some(answer.contains(r#""health":"true""#))
            };
            tokio::time::timeout(Duration::from_secs(1), probe)
                .await
                .ok()
                .flatten()
                .unwrap_or(false)
        }

        fn kill(&mut self) {
            if let Some(mut child) = self.child.take() {
                let _ = child.kill();
                let _ = child.wait();
            }
        }

        /// Sends `SIG<name>` to etcd.
        fn signal(&self, name: &str) {
            let pid = self.child.as_ref().unwrap().id().to_string();
            let status = Command::new("kill")
                .args([&format!("-{name}"), &pid])
                .status()
                .unwrap();
            assert!(status.success(), "kill -{name} {pid}: {status}");
        }

        fn log(&self) -> String {
            let log = std::fs::read_to_string(self.dir.join("etcd.log")).unwrap_or_default();
            let lines: Vec<&str> = log.lines().collect();
            lines[lines.len().saturating_sub(30)..].join("\n")
        }

        fn options(&self) -> EtcdOptions {
            EtcdOptions {
                connect_timeout: Duration::from_secs(1),
                request_timeout: Duration::from_secs(1),
                ..EtcdOptions::new([self.url()])
            }
        }

        async fn raw(&self) -> Client {
            Client::connect([self.url()], None).await.unwrap()
        }
    }

    impl Drop for Etcd {
        fn drop(&mut self) {
            self.kill();
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }

    fn by_id(id: &str) -> Matcher {
        Matcher::new(&KontrolQuery {
            id: id.into(),
            ..Default::default()
        })
        .unwrap()
    }

    fn urls(regs: Vec<Registration>) -> Vec<String> {
        let mut urls: Vec<String> = regs.into_iter().map(|r| r.url).collect();
        urls.sort();
        urls
    }

    /// The etcd key `s` keeps `r` under.
    fn s_key(s: &EtcdStorage, r: &Registration) -> String {
        s.kite_key(&r.kite)
    }

    async fn keys(raw: &mut Client, prefix: &str) -> Vec<String> {
        let resp = raw
            .get(
                prefix,
                Some(GetOptions::new().with_prefix().with_keys_only()),
            )
            .await
            .unwrap();
        resp.kvs()
            .iter()
            .map(|kv| String::from_utf8_lossy(kv.key()).into_owned())
            .collect()
    }

    #[test]
    fn machines_and_escaping() {
        let o = EtcdOptions::from_machines(" http://a:2379, b:2379 ,,");
        assert_eq!(o.endpoints, ["http://a:2379", "b:2379"]);
        assert_eq!(o.prefix, "/kites");
        assert_eq!(EtcdOptions::from_machines("").endpoints, [DEFAULT_ENDPOINT]);
        assert_eq!(escape("plain"), "plain");
        assert_eq!(escape("a/b%c"), "a%2Fb%25c");
    }

    #[tokio::test]
    async fn etcd_storage_behaves_and_keeps_the_layout() {
        let Some(etcd) = Etcd::start().await else {
            return;
        };
        let s = EtcdStorage::connect(etcd.options()).await.unwrap();
        assert_eq!(s.prefix(), "/kites");
        behaves(&s).await;

        // The kite path holds the registration, `/kites-by-id/<id>` the path, both on one lease
        // lasting what is left of the registration.
        let mut raw = etcd.raw().await;
        let path = "/kites/alice/prod/math/1.2.3/eu/h2/k2";
        let kv = raw.get(path, None).await.unwrap().take_kvs().remove(0);
        let r: Registration = serde_json::from_slice(kv.value()).unwrap();
        assert_eq!(
            (r.kite.id.as_str(), r.url.as_str()),
            ("k2", "http:///alice/prod/math/1.2.3/eu/h2/k2")
        );
        let index = raw
            .get("/kites-by-id/k2", None)
            .await
            .unwrap()
            .take_kvs()
            .remove(0);
        assert_eq!(index.value(), path.as_bytes());
        assert!(kv.lease() != 0 && index.lease() == kv.lease());
        let ttl = raw
            .lease_time_to_live(kv.lease(), None)
            .await
            .unwrap()
            .ttl();
        assert!((3590..=3600).contains(&ttl), "{ttl}");
        // What `behaves` left: k2..k5, each with its index entry; k1 (deleted) and k6 (expired,
        // purged) are gone.
        assert_eq!(keys(&mut raw, "/kites/").await.len(), 4);
        assert_eq!(
            keys(&mut raw, "/kites-by-id/").await,
            [
                "/kites-by-id/k2",
                "/kites-by-id/k3",
                "/kites-by-id/k4",
                "/kites-by-id/k5"
            ]
        );

        // Fields holding `/` or `%` stay one segment each.
        let odd = Kite {
            hostname: "rack/7".into(),
            id: "50%/x".into(),
            ..kite("/carol/prod/db/1.0.0/eu/h/i")
        };
        s.upsert(&Registration::new(odd.clone(), "http://odd", "key1", HOUR))
            .await
            .unwrap();
        assert_eq!(
            keys(&mut raw, "/kites/carol/").await,
            ["/kites/carol/prod/db/1.0.0/eu/rack%2F7/50%25%2Fx"]
        );
        assert_eq!(urls(s.get(&by_id("50%/x")).await.unwrap()), ["http://odd"]);
        let exact = Matcher::new(&KontrolQuery {
            username: odd.username.clone(),
            environment: odd.environment.clone(),
            name: odd.name.clone(),
            version: odd.version.clone(),
            region: odd.region.clone(),
            hostname: odd.hostname.clone(),
            id: odd.id.clone(),
        })
        .unwrap();
        assert_eq!(urls(s.get(&exact).await.unwrap()), ["http://odd"]);
        assert!(
            s.refresh("50%/x", "carol", now_ms() + 60_000)
                .await
                .unwrap()
        );
        assert!(s.delete("50%/x", "carol").await.unwrap());
        assert!(keys(&mut raw, "/kites/carol/").await.is_empty());
    }

    #[tokio::test]
    async fn two_storages_on_one_etcd_share_registrations() {
        let Some(etcd) = Etcd::start().await else {
            return;
        };
        let a = EtcdStorage::connect(etcd.options()).await.unwrap();
        let b = EtcdStorage::connect(etcd.options()).await.unwrap();
        let elsewhere = EtcdStorage::connect(etcd.options().with_prefix("/elsewhere/"))
            .await
            .unwrap();
        assert_eq!(elsewhere.prefix(), "/elsewhere");

        let one = Registration::new(
            kite("/alice/prod/math/1.0.0/eu/h1/k1"),
            "http://one",
            "key1",
            HOUR,
        );
        a.upsert(&one).await.unwrap();
        assert_eq!(
            urls(b.get(&matcher("/alice/prod")).await.unwrap()),
            ["http://one"]
        );
        assert_eq!(urls(b.get(&by_id("k1")).await.unwrap()), ["http://one"]);
        // A list of endpoints (Go's KONTROL_MACHINES) with a dead one in it works.
        let dead = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            format!("127.0.0.1:{}", l.local_addr().unwrap().port())
        };
        let listed = EtcdOptions {
            connect_timeout: Duration::from_secs(1),
            request_timeout: Duration::from_secs(1),
            ..EtcdOptions::from_machines(&format!("{dead},{}", etcd.url()))
        };
        let c = EtcdStorage::connect(listed).await.unwrap();
        for _ in 0..5 {
            assert_eq!(urls(c.get(&by_id("k1")).await.unwrap()), ["http://one"]);
        }
        // Another prefix is another registry.
        assert!(elsewhere.get(&matcher("/alice")).await.unwrap().is_empty());
        assert!(elsewhere.get(&by_id("k1")).await.unwrap().is_empty());
        assert!(!elsewhere.delete("k1", "alice").await.unwrap());

        // A refresh through one is seen through the other.
        let later = now_ms() + 7_200_000;
        assert!(b.refresh("k1", "alice", later).await.unwrap());
        assert_eq!(a.get(&by_id("k1")).await.unwrap()[0].expires_at_ms, later);

        // The kite registers again through the other Kontrol from elsewhere: one registration.
        let two = Registration::new(
            kite("/alice/prod/math/1.0.0/us/h9/k1"),
            "http://two",
            "key1",
            HOUR,
        );
        b.upsert(&two).await.unwrap();
        assert_eq!(
            urls(a.get(&matcher("/alice")).await.unwrap()),
            ["http://two"]
        );
        assert!(
            a.get(&matcher("/alice/prod/math/1.0.0/eu"))
                .await
                .unwrap()
                .is_empty()
        );

        // Both write the same kite from many places at once: one registration and its index
        // remain, whoever won.
        let mut tasks = Vec::new();
        for i in 0..12 {
            let s = if i % 2 == 0 { a.clone() } else { b.clone() };
            tasks.push(tokio::spawn(async move {
                let r = Registration::new(
                    kite(&format!("/alice/prod/math/1.0.0/r{i}/h/k1")),
                    &format!("http://r{i}"),
                    "key1",
                    HOUR,
                );
                s.upsert(&r).await.unwrap();
            }));
        }
        for t in tasks {
            t.await.unwrap();
        }
        let all = a.get(&matcher("/alice")).await.unwrap();
        assert_eq!(all.len(), 1, "{all:?}");
        assert_eq!(b.get(&by_id("k1")).await.unwrap(), all);
        let mut raw = etcd.raw().await;
        assert_eq!(keys(&mut raw, "/kites/").await.len(), 1);

        // Two users race for one free id through both Kontrols: one owner wins, every write of
        // the other is refused, and the id index and the kite key agree on the winner.
        let mut tasks = Vec::new();
        for i in 0..12 {
            let s = if i % 2 == 0 { a.clone() } else { b.clone() };
            let user = if i % 3 == 0 { "mallory" } else { "alice" };
            tasks.push(tokio::spawn(async move {
                let r = Registration::new(
                    kite(&format!("/{user}/prod/math/1.0.0/r{i}/h/race")),
                    &format!("http://{user}-{i}"),
                    "key1",
                    HOUR,
                );
                (user, s.upsert(&r).await)
            }));
        }
        let mut results = Vec::new();
        for t in tasks {
            results.push(t.await.unwrap());
        }
        let found = a.get(&by_id("race")).await.unwrap();
        assert_eq!(found.len(), 1, "{found:?}");
        let winner = found[0].owner().to_owned();
        for (user, result) in results {
            match result {
                Ok(()) => assert_eq!(user, winner),
                Err(StorageError::OwnedByAnother { id }) => {
                    assert_ne!(user, winner);
                    assert_eq!(id, "race");
                }
                Err(e) => panic!("{user}: {e}"),
            }
        }
        let race_keys: Vec<String> = keys(&mut raw, "/kites/")
            .await
            .into_iter()
            .filter(|k| k.ends_with("/race"))
            .collect();
        assert_eq!(race_keys, [s_key(&a, &found[0])]);
        let index = raw
            .get("/kites-by-id/race", None)
            .await
            .unwrap()
            .take_kvs()
            .remove(0);
        assert_eq!(index.value(), race_keys[0].as_bytes());
        // The loser can neither refresh nor delete it through either Kontrol.
        let loser = if winner == "alice" {
            "mallory"
        } else {
            "alice"
        };
        for s in [&a, &b] {
            assert!(matches!(
                s.refresh("race", loser, now_ms() + 60_000).await,
                Err(StorageError::OwnedByAnother { .. })
            ));
            assert!(matches!(
                s.delete("race", loser).await,
                Err(StorageError::OwnedByAnother { .. })
            ));
        }
        assert_eq!(b.get(&by_id("race")).await.unwrap(), found);
        assert!(b.delete("race", &winner).await.unwrap());

        assert!(a.delete("k1", "alice").await.unwrap());
        assert!(b.get(&by_id("k1")).await.unwrap().is_empty());
        assert!(!b.delete("k1", "alice").await.unwrap());
        assert!(keys(&mut raw, "/kites").await.is_empty());
    }

    #[tokio::test]
    async fn etcd_expires_registrations_by_itself() {
        let Some(etcd) = Etcd::start().await else {
            return;
        };
        let s = EtcdStorage::connect(etcd.options()).await.unwrap();
        let mut raw = etcd.raw().await;
        let mut watch = raw
            .watch("/kites", Some(WatchOptions::new().with_prefix()))
            .await
            .unwrap();

        // Already expired: etcd still holds it (its lease has not fired), yet nothing finds it.
        let mut stale = Registration::new(
            kite("/alice/prod/math/1.0.0/eu/h1/old"),
            "http://old",
            "key1",
            HOUR,
        );
        stale.expires_at_ms = now_ms() - 1;
        s.upsert(&stale).await.unwrap();
        assert_eq!(keys(&mut raw, "/kites/").await.len(), 1);
        assert!(s.get(&matcher("/alice")).await.unwrap().is_empty());
        assert!(s.get(&by_id("old")).await.unwrap().is_empty());
        assert!(!s.refresh("old", "alice", now_ms() + 60_000).await.unwrap());

        // One second of life, and no purge: etcd deletes both keys of both registrations itself.
        let started = Instant::now();
        let short = Registration::new(
            kite("/alice/prod/math/1.0.0/eu/h1/short"),
            "http://short",
            "key1",
            Duration::from_secs(1),
        );
        s.upsert(&short).await.unwrap();
        assert_eq!(
            urls(s.get(&by_id("short")).await.unwrap()),
            ["http://short"]
        );
        let mut deleted = BTreeSet::new();
        tokio::time::timeout(Duration::from_secs(10), async {
            while deleted.len() < 4 {
                let resp = watch.message().await.unwrap().expect("watch ended");
                for event in resp.events() {
                    if event.event_type() == EventType::Delete {
                        let kv = event.kv().unwrap();
                        deleted.insert(String::from_utf8_lossy(kv.key()).into_owned());
                    }
                }
            }
        })
        .await
        .unwrap_or_else(|_| panic!("etcd deleted only {deleted:?} within 10 s"));
        let took = started.elapsed();
        eprintln!("etcd expired a 1 s registration after {took:?}");
        assert!(took >= Duration::from_secs(1), "{took:?}");
        assert_eq!(
            deleted.into_iter().collect::<Vec<_>>(),
            [
                "/kites-by-id/old",
                "/kites-by-id/short",
                "/kites/alice/prod/math/1.0.0/eu/h1/old",
                "/kites/alice/prod/math/1.0.0/eu/h1/short",
            ]
        );
        assert!(s.get(&by_id("short")).await.unwrap().is_empty());
        assert!(keys(&mut raw, "/kites").await.is_empty());
    }

    #[tokio::test]
    async fn etcd_down_then_back() {
        let Some(mut etcd) = Etcd::start().await else {
            return;
        };
        let s = EtcdStorage::connect(etcd.options()).await.unwrap();
        let one = Registration::new(
            kite("/alice/prod/math/1.0.0/eu/h1/k1"),
            "http://one",
            "key1",
            HOUR,
        );
        s.upsert(&one).await.unwrap();

        etcd.kill();
        let bound = Duration::from_millis(1500);
        let two = Registration::new(
            kite("/alice/prod/math/1.0.0/eu/h1/k2"),
            "http://two",
            "key1",
            HOUR,
        );
        macro_rules! unavailable_quickly {
            ($op:expr) => {{
                let started = Instant::now();
                let result = $op.await;
                let took = started.elapsed();
                assert!(
                    matches!(result, Err(StorageError::Unavailable(_))),
                    "{}: {result:?}",
                    stringify!($op)
                );
                assert!(took < bound, "{} took {took:?}", stringify!($op));
                eprintln!("{}: unavailable after {took:?}", stringify!($op));
            }};
        }
        unavailable_quickly!(s.get(&matcher("/alice")));
        unavailable_quickly!(s.get(&by_id("k1")));
        unavailable_quickly!(s.upsert(&two));
        unavailable_quickly!(s.refresh("k1", "alice", now_ms() + 60_000));
        unavailable_quickly!(s.delete("k1", "alice"));
        unavailable_quickly!(s.purge_expired());
        unavailable_quickly!(EtcdStorage::connect(etcd.options()));

        // Back on the same ports and data: the same storage works again and lost nothing.
        etcd.run().await;
        assert_eq!(urls(s.get(&by_id("k1")).await.unwrap()), ["http://one"]);
        s.upsert(&two).await.unwrap();
        assert_eq!(
            urls(s.get(&matcher("/alice/prod/math")).await.unwrap()),
            ["http://one", "http://two"]
        );
        assert!(s.refresh("k1", "alice", now_ms() + 60_000).await.unwrap());
        assert!(s.delete("k2", "alice").await.unwrap());
        assert_eq!(s.purge_expired().await.unwrap(), 0);

        // Frozen rather than gone (connections open, no answers): the deadline ends each
        // operation, and the storage works again once etcd thaws.
        etcd.signal("STOP");
        unavailable_quickly!(s.get(&by_id("k1")));
        unavailable_quickly!(s.upsert(&two));
        etcd.signal("CONT");
        assert_eq!(urls(s.get(&by_id("k1")).await.unwrap()), ["http://one"]);
        s.upsert(&two).await.unwrap();
    }
}
