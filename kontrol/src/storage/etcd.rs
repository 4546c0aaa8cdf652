//! [`EtcdStorage`]: registrations in etcd (v3 API), shared by every Kontrol pointed at the same
//! cluster and key prefix; the layout is described on the type.

use std::borrow::Cow;
use std::collections::BTreeSet;
use std::future::Future;
use std::hash::{Hash, Hasher};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use etcd_client::{
    Client, Compare, CompareOp, ConnectOptions, EventType, GetOptions, KeyValue, PutOptions, Txn,
    TxnOp, TxnOpResponse, WatchOptions,
};
use tracing::debug;

use super::events::{Bus, Change, MAX_CHANGE_BYTES};
use super::{KeyRecord, Registration, Storage, StorageError, now_ms};
use crate::query::Matcher;

/// How long a watch event stays in etcd (seconds): long enough for every watching Kontrol to
/// have been told, short enough that they do not pile up.
const EVENT_TTL: i64 = 10;

/// How long one event lease takes new events: the first half of its life, so that every event
/// stays at least `EVENT_TTL / 2` seconds.
const EVENT_LEASE_REUSE: Duration = Duration::from_secs(EVENT_TTL.unsigned_abs() / 2);

/// The lease the watch events of the moment are put on, and when it was granted: one grant
/// serves every event of [`EVENT_LEASE_REUSE`], not one per event.
#[derive(Debug, Default)]
struct EventLease(tokio::sync::Mutex<Option<(i64, tokio::time::Instant)>>);

/// The task watching for watch events; aborted when the last storage clone holding it goes.
#[derive(Debug, Default)]
struct Listener(std::sync::Mutex<Option<tokio::task::JoinHandle<()>>>);

impl Drop for Listener {
    fn drop(&mut self) {
        if let Some(task) = self.0.get_mut().ok().and_then(Option::take) {
            task.abort();
        }
    }
}

/// Watches `prefix` for new watch events, on each endpoint in turn while one fails (every
/// second), and hands each well-formed one to `bus`. Events put while no watch is open are
/// missed.
async fn listen(clients: Arc<[Client]>, prefix: String, bus: Bus) {
    for at in (0..clients.len()).cycle() {
        let mut client = clients[at].clone();
        match client
            .watch(prefix.as_str(), Some(WatchOptions::new().with_prefix()))
            .await
        {
            Ok(mut stream) => loop {
                match stream.message().await {
                    Ok(Some(response)) => {
                        for event in response.events() {
                            if event.event_type() != EventType::Put {
                                continue;
                            }
                            if let Some(change) = event
                                .kv()
                                .and_then(|kv| kv.value_str().ok())
                                .and_then(Change::decode)
                            {
                                bus.publish(change);
                            }
                        }
                    }
                    Ok(None) => break,
                    Err(e) => {
                        debug!(error = %e, "the watch for watch events ended");
                        break;
                    }
                }
            },
            Err(e) => debug!(error = %e, "watching for watch events failed"),
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

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

/// The most operations etcd takes in one transaction (its `--max-txn-ops` default).
const MAX_TXN_OPS: usize = 128;

/// How many registrations building the field index on connect reads at a time.
const INDEX_PAGE: i64 = 512;

/// How many registrations one transaction of the index build indexes (each in a nested
/// transaction of its own).
const INDEX_BATCH: usize = 64;

/// Where etcd is and how long to wait for it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EtcdOptions {
    /// etcd client URLs (`http://127.0.0.1:2379`); a bare `host:port` means `http://host:port`.
    /// Requests go to one of them and move to the next when it cannot be reached (as Go's etcd
    /// client does); the last one that answered is tried first.
    pub endpoints: Vec<String>,
    /// The key prefix of the registrations (default `/kites`); the id index, the field index and
    /// the marker that the field index is built live under the same prefix followed by `-by-id`,
    /// `-by-field` and `-meta` (`/kites-by-id`, ...). Kontrols and tests sharing one etcd keep
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
/// - `/kites-by-field/<field>/<username>/<value>/<id>` → the full key above, for each of the
///   fields 1 `environment`, 2 `name`, 3 `version`, 4 `region` and 5 `hostname` (numbered by
///   their place in the key; the username needs no entry, `/kites/<username>/` is its range):
///   the field index, so that a query finds the kites with one field's value without reading
///   every kite of the user.
/// - `/kites-meta/index` → `1` once every registration has its field index entries (see below).
///
/// A `/` or `%` inside a field is written `%2F` or `%25`, so every key has exactly seven segments
/// and no two kites share one (and the index keys exactly five).
///
/// All seven keys of a registration are attached to one lease whose TTL is the registration's
/// remaining lifetime, rounded up to whole seconds (etcd raises it to its minimum, 2 s with the
/// default election timeout): etcd deletes them itself when no Kontrol refreshes them, even if
/// every Kontrol is gone. [`Storage::refresh`] moves all of them to a new lease with the new
/// expiry (a keep-alive could only restart the lease's original TTL);
/// [`Storage::refresh_many`] moves every kite of the batch to one lease granted for it, so a
/// refresh costs no lease of its own. Leases are therefore shared, and none that once held a
/// registration is revoked: a lease left without keys expires by itself (a revoke would delete
/// the other kites still on it). Only leases granted and never used are revoked.
/// Values carry the expiry and every read checks it, so a registration is never returned past
/// its expiry, even in the moments before etcd fires its lease. Every write of a registration
/// writes its index entries in the same transaction: a kite that registers again under other
/// fields loses the entries of its old ones there too.
///
/// Queries: an id-only query, or one that names an id, reads through the id index (which finds
/// the registration only if the value at the key the index names is that id's, at its own key);
/// a query of all seven fields reads that one key; a query whose exact fields
/// ([`Matcher::exact`]) are all leading ones reads their key prefix ([`Matcher::prefix`]). Any
/// other query counts, in one transaction, the key prefix of its leading fields (unless that is
/// the username alone, every kite of the user) and the field index range of each further exact
/// field, and reads the smallest: the prefix at once, or the index entries and then the
/// registrations they name (up to 128 a transaction). Whatever is read goes through
/// [`Matcher::matches`] and the expiry here, so every backend finds the same kites.
///
/// Writes are transactions conditioned on the revisions just read (retried on conflict; writes of
/// one id through one `EtcdStorage` take turns), so two Kontrols writing the same kite leave
/// exactly one registration with its index entries.
///
/// Data from before the field index (an older Kontrol's): [`EtcdStorage::connect`] finds no
/// `/kites-meta/index`, writes the index entries of every registration there is (on its lease,
/// if it has not changed since read) and then the marker; a failed build fails the connect and
/// is done again by the next one. Registrations an older Kontrol still writes after that (while
/// Kontrols sharing the prefix are upgraded one by one) lack entries, or lose them when it
/// moves them to a new lease: they are found by username, leading fields and id, but not by
/// the other fields, until their next refresh or registration through a newer Kontrol writes
/// the entries again.
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
    /// `<prefix>-by-field/`: the field index.
    by_field: String,
    /// `<prefix>-meta/index`: there once the field index holds every registration.
    indexed_marker: String,
    /// `<prefix>-events/`: watch events between Kontrols, each a key of its own on a short
    /// lease ([`EVENT_TTL`]), which every subscribed storage watches.
    events: String,
    /// The events heard, for this storage's subscribers.
    changes: Bus,
    /// The task watching `events`, once there is a subscriber; ended with the last clone.
    listener: Arc<Listener>,
    /// The lease this storage puts its watch events on.
    event_lease: Arc<EventLease>,
    request_timeout: Duration,
    /// Writes of one kite id through this storage (and its clones) take turns: conditional
    /// transactions then only ever race other Kontrols.
    locks: Arc<[tokio::sync::Mutex<()>]>,
    /// How many keys with values this storage has read (for the tests' check that a query reads
    /// only its candidates).
    #[cfg(test)]
    keys_read: Arc<AtomicUsize>,
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

/// Where a query's candidates are read from.
enum Source {
    /// Every registration under this key prefix.
    Prefix(String),
    /// The registrations the field index entries under this key prefix name.
    Index(String),
}

impl Source {
    /// The key prefix it reads.
    fn range(&self) -> &str {
        match self {
            Source::Prefix(range) | Source::Index(range) => range,
        }
    }
}

impl EtcdStorage {
    /// Connects to etcd and checks that it answers within `options.connect_timeout`: a Kontrol
    /// pointed at a dead etcd fails at start ([`StorageError::Unavailable`]) rather than at its
    /// first registration. Then, once per prefix, writes the field index entries of the
    /// registrations an older Kontrol wrote without them (see the type's docs).
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
            by_field: format!("{prefix}-by-field/"),
            indexed_marker: format!("{prefix}-meta/index"),
            events: format!("{prefix}-events/"),
            changes: Bus::default(),
            listener: Arc::default(),
            event_lease: Arc::default(),
            endpoints: endpoints.clone(),
            request_timeout,
            locks: (0..LOCKS).map(|_| tokio::sync::Mutex::new(())).collect(),
            #[cfg(test)]
            keys_read: Arc::default(),
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
        storage.build_index().await?;
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

    /// The key prefix of the field index entries of `field` (1 to 5: environment, name, version,
    /// region, hostname) with `value` among `username`'s kites; both already escaped.
    fn field_range(&self, field: usize, username: &str, value: &str) -> String {
        format!("{}{field}/{username}/{value}/", self.by_field)
    }

    /// The field index keys of the registration at `kite_key` (fields 1 to 5 in order); none if
    /// `kite_key` is not a registration key of this prefix.
    fn field_keys(&self, kite_key: &[u8]) -> Vec<String> {
        let Some(path) = std::str::from_utf8(kite_key)
            .ok()
            .and_then(|key| key.strip_prefix(self.kites.as_str()))
        else {
            return Vec::new();
        };
        let segments: Vec<&str> = path.split('/').collect();
        let [username, environment, name, version, region, hostname, id] = segments[..] else {
            return Vec::new();
        };
        [environment, name, version, region, hostname]
            .into_iter()
            .zip(1..)
            .map(|(value, field)| format!("{}{id}", self.field_range(field, username, value)))
            .collect()
    }

    /// Puts of the field index keys `fields`, each naming `kite_key`, on `lease`.
    fn field_puts(fields: &[String], kite_key: &[u8], lease: i64) -> Vec<TxnOp> {
        fields
            .iter()
            .map(|field| {
                let on_lease = PutOptions::new().with_lease(lease);
                TxnOp::put(field.as_str(), kite_key, Some(on_lease))
            })
            .collect()
    }

    /// Counts `n` keys read with their values (in tests; nothing otherwise).
    fn note_read(&self, n: usize) {
        #[cfg(test)]
        self.keys_read.fetch_add(n, Ordering::Relaxed);
        #[cfg(not(test))]
        let _ = n;
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
    async fn range(
        &self,
        key: impl AsRef<[u8]>,
        options: GetOptions,
    ) -> Result<Vec<KeyValue>, StorageError> {
        let key = key.as_ref();
        let kvs = self
            .call(|mut c| {
                let (key, options) = (key.to_vec(), options.clone());
                async move { c.get(key, Some(options)).await }
            })
            .await
            .map(|mut resp| resp.take_kvs())?;
        self.note_read(kvs.len());
        Ok(kvs)
    }

    /// The key-value of `key`, if it exists.
    async fn get_one(&self, key: &str) -> Result<Option<KeyValue>, StorageError> {
        Ok(self.range(key, GetOptions::new()).await?.into_iter().next())
    }

    /// The lease to put a watch event on: the one granted less than [`EVENT_LEASE_REUSE`] ago,
    /// or (then, or when `fresh`) a new one of [`EVENT_TTL`].
    async fn event_lease(&self, fresh: bool) -> Result<i64, StorageError> {
        let mut current = self.event_lease.0.lock().await;
        if let Some((lease, granted)) = *current
            && !fresh
            && granted.elapsed() < EVENT_LEASE_REUSE
        {
            return Ok(lease);
        }
        let granted = tokio::time::Instant::now();
        let lease = self
            .call(|mut c| async move { c.lease_grant(EVENT_TTL, None).await })
            .await?
            .id();
        *current = Some((lease, granted));
        Ok(lease)
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
        let fields = self.field_keys(key.as_bytes());
        let value = encode(r);
        let (mut current, lease) =
            tokio::try_join!(self.get_one(&index), self.grant(r.expires_at_ms))?;
        for attempt in 0..MAX_TRIES {
            backoff(attempt).await;
            let mut ops = Vec::with_capacity(8 + 2 * fields.len());
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
                        // Registered elsewhere before (another host or URL path): move it, with
                        // the index entries of the fields that changed (the others are put
                        // again below).
                        ops.push(TxnOp::delete(at.value(), None));
                        for old in self.field_keys(at.value()) {
                            if !fields.contains(&old) {
                                ops.push(TxnOp::delete(old, None));
                            }
                        }
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
            ops.extend(Self::field_puts(&fields, key.as_bytes(), lease));
            let txn = Txn::new()
                .when(unchanged)
                .and_then(ops)
                .or_else([TxnOp::get(index.as_str(), None)]);
            let resp = self.txn(txn).await?;
            if resp.succeeded() {
                // The old lease is left to expire: other kites may share it.
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
        let lease = self.grant(expires_at_ms).await?;
        let done = self.refresh_on(id, owner, expires_at_ms, lease).await;
        if !matches!(done, Ok(true)) {
            revoke_later(self.client(), lease, self.request_timeout);
        }
        done
    }

    /// Moves the live registration of `id` (which `owner` holds) to `lease`, which ends at
    /// `expires_at_ms`; whether there was one. Revokes nothing: the caller owns `lease`, and
    /// the old lease may hold other kites.
    async fn refresh_on(
        &self,
        id: &str,
        owner: &str,
        expires_at_ms: u64,
        lease: i64,
    ) -> Result<bool, StorageError> {
        let _one_writer = self.lock(id).await;
        let index = self.index_key(id);
        let mut entry = self.get_one(&index).await?;
        for attempt in 0..MAX_TRIES {
            backoff(attempt).await;
            let Some(at) = entry.take() else {
                return Ok(false);
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
                return Ok(false);
            };
            if r.owner() != owner {
                return Err(StorageError::owned_by_another(id));
            }
            r.expires_at_ms = expires_at_ms;
            let put = || Some(PutOptions::new().with_lease(lease));
            // Every key of the registration moves to the new lease.
            let mut ops = vec![
                TxnOp::put(key.as_str(), encode(&r), put()),
                TxnOp::put(index.as_str(), key.as_str(), put()),
            ];
            ops.extend(Self::field_puts(
                &self.field_keys(key.as_bytes()),
                key.as_bytes(),
                lease,
            ));
            let txn = Txn::new()
                .when([
                    Compare::mod_revision(index.as_str(), CompareOp::Equal, at.mod_revision()),
                    Compare::mod_revision(key.as_str(), CompareOp::Equal, kv.mod_revision()),
                ])
                .and_then(ops)
                .or_else([TxnOp::get(index.as_str(), None)]);
            let resp = self.txn(txn).await?;
            if resp.succeeded() {
                return Ok(true);
            }
            entry = first_got(resp);
        }
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
            // The registration first: its answer says whether there was one.
            let mut ops = vec![
                TxnOp::delete(at.value(), None),
                TxnOp::delete(index.as_str(), None),
            ];
            ops.extend(
                self.field_keys(at.value())
                    .into_iter()
                    .map(|field| TxnOp::delete(field, None)),
            );
            let txn = Txn::new()
                .when([
                    Compare::mod_revision(index.as_str(), CompareOp::Equal, at.mod_revision()),
                    same,
                ])
                .and_then(ops)
                .or_else([TxnOp::get(index.as_str(), None)]);
            let resp = self.txn(txn).await?;
            if resp.succeeded() {
                // The lease is left to expire: other kites may share it.
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

    /// The registration the id index names for `id`, only if it is that id's at its own key: the
    /// index and the kite key agree, or nothing is found.
    async fn by_id(&self, id: &str) -> Result<Vec<KeyValue>, StorageError> {
        let Some(entry) = self.get_one(&self.index_key(id)).await? else {
            return Ok(Vec::new());
        };
        let key = String::from_utf8_lossy(entry.value()).into_owned();
        Ok(self
            .get_one(&key)
            .await?
            .filter(|kv| self.holder(kv, id).is_some())
            .into_iter()
            .collect())
    }

    /// The candidates of a query that is not id-only, read from the fewest keys its exact
    /// fields allow (see the type's docs).
    async fn candidates(&self, matcher: &Matcher) -> Result<Vec<KeyValue>, StorageError> {
        let leading = matcher.prefix();
        let mut prefix = self.kites.clone();
        for field in &leading {
            prefix.push_str(&escape(field));
            prefix.push('/');
        }
        if leading.len() == 7 {
            // The whole key: this one kite only (not also ids it is a prefix of).
            prefix.pop();
            return self.range(&prefix, GetOptions::new()).await;
        }
        let exact = matcher.exact();
        if let Some(id) = exact[6] {
            return self.by_id(id).await;
        }
        let Some(username) = exact[0] else {
            // Not a query Matcher::new lets through.
            return Ok(Vec::new());
        };
        // The index ranges of the exact fields after the leading ones (those of the leading
        // ones hold no fewer kites than the leading prefix)...
        let username = escape(username);
        let mut sources: Vec<Source> = (leading.len().max(1)..6)
            .filter_map(|field| {
                let value = escape(exact[field]?);
                Some(Source::Index(self.field_range(field, &username, &value)))
            })
            .collect();
        // ...and the leading prefix, first (it wins a tie: one read), unless it is the username
        // alone: every kite of the user, no fewer than any index range.
        if leading.len() > 1 || sources.is_empty() {
            sources.insert(0, Source::Prefix(prefix.clone()));
        }
        let all = || GetOptions::new().with_prefix();
        match self.smallest(sources).await? {
            None => Ok(Vec::new()),
            Some(Source::Prefix(prefix)) => self.range(&prefix, all()).await,
            Some(Source::Index(range)) => {
                let entries = self.range(&range, all()).await?;
                let keys = entries
                    .iter()
                    .map(KeyValue::value)
                    .filter(|key| key.starts_with(self.kites.as_bytes()))
                    .map(<[u8]>::to_vec)
                    .collect();
                self.fetch(keys).await
            }
        }
    }

    /// Of `sources`, the one with the fewest keys (the first of those), counted in one
    /// transaction when there are several; `None` if it has none or there are no sources.
    async fn smallest(&self, mut sources: Vec<Source>) -> Result<Option<Source>, StorageError> {
        if sources.len() < 2 {
            return Ok(sources.pop());
        }
        let count = || GetOptions::new().with_prefix().with_count_only();
        let counts: Vec<TxnOp> = sources
            .iter()
            .map(|source| TxnOp::get(source.range(), Some(count())))
            .collect();
        let resp = self.txn(Txn::new().and_then(counts)).await?;
        let counts: Vec<i64> = resp
            .op_responses()
            .iter()
            .map(|op| match op {
                TxnOpResponse::Get(got) => got.count(),
                _ => i64::MAX,
            })
            .collect();
        let Some((best, &fewest)) = counts
            .iter()
            .enumerate()
            .min_by_key(|&(i, count)| (*count, i))
        else {
            return Ok(sources.into_iter().next());
        };
        Ok((fewest > 0).then(|| sources.swap_remove(best)))
    }

    /// The key-values at `keys` that exist, read in transactions of up to [`MAX_TXN_OPS`] reads.
    async fn fetch(&self, keys: BTreeSet<Vec<u8>>) -> Result<Vec<KeyValue>, StorageError> {
        let keys: Vec<Vec<u8>> = keys.into_iter().collect();
        let mut out = Vec::with_capacity(keys.len());
        for batch in keys.chunks(MAX_TXN_OPS) {
            let reads: Vec<TxnOp> = batch
                .iter()
                .map(|key| TxnOp::get(key.as_slice(), None))
                .collect();
            let resp = self.txn(Txn::new().and_then(reads)).await?;
            for op in resp.op_responses() {
                if let TxnOpResponse::Get(mut got) = op {
                    out.extend(got.take_kvs());
                }
            }
        }
        self.note_read(out.len());
        Ok(out)
    }

    async fn get_inner(&self, matcher: &Matcher) -> Result<Vec<Registration>, StorageError> {
        let kvs = match matcher.id() {
            Some(id) => self.by_id(id).await?,
            None => self.candidates(matcher).await?,
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
            let fields = self.field_keys(kv.key());
            // The key and its index entries, if the id index still points at this key...
            let mut ops = vec![
                TxnOp::delete(kv.key(), None),
                TxnOp::delete(index.as_str(), None),
            ];
            ops.extend(fields.iter().map(|f| TxnOp::delete(f.as_str(), None)));
            let both = Txn::new()
                .when([
                    same.clone(),
                    Compare::value(index.as_str(), CompareOp::Equal, kv.key()),
                ])
                .and_then(ops);
            // ...else the key alone, if nobody refreshed it meanwhile, with those of its field
            // index entries that still name it (the id may be registered again elsewhere).
            let alone = || {
                let mut ops = vec![TxnOp::delete(kv.key(), None)];
                ops.extend(fields.iter().map(|f| {
                    TxnOp::txn(
                        Txn::new()
                            .when([Compare::value(f.as_str(), CompareOp::Equal, kv.key())])
                            .and_then([TxnOp::delete(f.as_str(), None)]),
                    )
                }));
                Txn::new().when([same.clone()]).and_then(ops)
            };
            if self.txn(both).await?.succeeded() || self.txn(alone()).await?.succeeded() {
                purged += 1;
            }
        }
        Ok(purged)
    }

    /// Writes the field index entries of registrations written before it (by an older
    /// Kontrol), unless the marker says it is done: every registration's entries on its lease,
    /// each only if the registration is as read, and then the marker.
    async fn build_index(&self) -> Result<(), StorageError> {
        if self.get_one(&self.indexed_marker).await?.is_some() {
            return Ok(());
        }
        // `<prefix>/` up to `<prefix>0`: every registration key and nothing else.
        let mut end = self.kites.clone().into_bytes();
        if let Some(last) = end.last_mut() {
            *last += 1;
        }
        let mut from = self.kites.clone().into_bytes();
        loop {
            let page = GetOptions::new()
                .with_range(end.clone())
                .with_limit(INDEX_PAGE);
            let kvs = self.range(&from, page).await?;
            for batch in kvs.chunks(INDEX_BATCH) {
                let each: Vec<TxnOp> = batch
                    .iter()
                    .map(|kv| TxnOp::txn(self.index_one(kv)))
                    .collect();
                self.txn(Txn::new().and_then(each)).await?;
            }
            match kvs.last() {
                Some(last) if kvs.len() == usize::try_from(INDEX_PAGE).unwrap_or(0) => {
                    from = last.key().to_vec();
                    from.push(0);
                }
                _ => break,
            }
        }
        self.txn(Txn::new().and_then([TxnOp::put(self.indexed_marker.as_str(), "1", None)]))
            .await?;
        Ok(())
    }

    /// A transaction that puts the field index entries of the registration `kv` on its lease,
    /// if it is still as read (else whoever changed it wrote them, or it is gone).
    fn index_one(&self, kv: &KeyValue) -> Txn {
        Txn::new()
            .when([Compare::mod_revision(
                kv.key(),
                CompareOp::Equal,
                kv.mod_revision(),
            )])
            .and_then(Self::field_puts(
                &self.field_keys(kv.key()),
                kv.key(),
                kv.lease(),
            ))
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
    /// Puts the change under `<prefix>-events/<uuid>` on a lease of ten seconds that the
    /// events of five seconds share.
    async fn publish(&self, change: &Change) -> Result<(), StorageError> {
        let payload = change.encode();
        if payload.len() > MAX_CHANGE_BYTES {
            return Err(StorageError::Corrupt(format!(
                "a watch event of {} bytes is too long",
                payload.len()
            )));
        }
        let key = format!("{}{}", self.events, uuid::Uuid::new_v4().simple());
        // The lease of the moment, or a new one; once more with a new one if etcd no longer
        // knows the lease (it restarted, or the clock jumped).
        for fresh in [false, true] {
            let lease = self.event_lease(fresh).await?;
            let put = self
                .call(|mut c| {
                    let (key, payload) = (key.clone(), payload.clone());
                    async move {
                        c.put(key, payload, Some(PutOptions::new().with_lease(lease)))
                            .await
                    }
                })
                .await;
            match put {
                Ok(_) => return Ok(()),
                Err(e) if fresh => return Err(e),
                Err(_) => {}
            }
        }
        Ok(())
    }

    /// Starts watching `<prefix>-events/` with the first subscriber.
    fn subscribe(&self) -> Option<tokio::sync::broadcast::Receiver<Change>> {
        let receiver = self.changes.subscribe();
        let mut task = self.listener.0.lock().unwrap_or_else(|e| e.into_inner());
        if task.is_none() {
            let (clients, prefix, bus) = (
                self.clients.clone(),
                self.events.clone(),
                self.changes.clone(),
            );
            *task = Some(tokio::spawn(listen(clients, prefix, bus)));
        }
        Some(receiver)
    }

    async fn upsert(&self, registration: &Registration) -> Result<(), StorageError> {
        self.bounded("upsert", self.upsert_inner(registration))
            .await
    }

    /// Moves the kite's keys to a new lease that ends at `expires_at_ms`.
    async fn refresh(
        &self,
        id: &str,
        owner: &str,
        expires_at_ms: u64,
    ) -> Result<bool, StorageError> {
        self.bounded("refresh", self.refresh_inner(id, owner, expires_at_ms))
            .await
    }

    /// Moves the keys of every kite of the batch to one new lease that ends at `expires_at_ms`
    /// (one grant for the batch), [`REFRESH_CONCURRENCY`](super::REFRESH_CONCURRENCY) kites at a
    /// time.
    async fn refresh_many(
        &self,
        items: &[(String, String)],
        expires_at_ms: u64,
    ) -> Vec<Result<bool, StorageError>> {
        let lease = match self.bounded("refresh", self.grant(expires_at_ms)).await {
            Ok(lease) => lease,
            Err(e) => return items.iter().map(|_| Err(e.clone())).collect(),
        };
        let out = super::in_chunks(items, |id, owner| {
            self.bounded("refresh", self.refresh_on(id, owner, expires_at_ms, lease))
        })
        .await;
        if !out.iter().any(|done| matches!(done, Ok(true))) {
            revoke_later(self.client(), lease, self.request_timeout);
        }
        out
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
    use std::time::Instant;

    use etcd_client::DeleteOptions;
    use futures_util::StreamExt;
    use kite_native::core::{Kite, KontrolQuery};
    use kite_test_kit::servers::Etcd;

    use super::*;
    use crate::storage::tests::{behaves, ids, kite, matcher};

    const HOUR: Duration = Duration::from_secs(3600);

    /// What these tests ask of the kit's etcd beyond running it.
    trait EtcdExt {
        /// Options for a storage on it, with short timeouts.
        fn options(&self) -> EtcdOptions;
        /// A plain client, to look at the keys.
        async fn raw(&self) -> Client;
    }

    impl EtcdExt for Etcd {
        /// Generous deadlines: on a loaded machine (CI runs the tests two at a time on two
        /// cores) a healthy etcd can take more than a second to answer.
        fn options(&self) -> EtcdOptions {
            EtcdOptions {
                connect_timeout: Duration::from_secs(5),
                request_timeout: Duration::from_secs(5),
                ..EtcdOptions::new([self.url()])
            }
        }

        async fn raw(&self) -> Client {
            Client::connect([self.url()], None).await.unwrap()
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

    /// Every key under `prefix` with its value and lease.
    async fn entries(raw: &mut Client, prefix: &str) -> Vec<(String, String, i64)> {
        let resp = raw
            .get(prefix, Some(GetOptions::new().with_prefix()))
            .await
            .unwrap();
        resp.kvs()
            .iter()
            .map(|kv| {
                let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
                (text(kv.key()), text(kv.value()), kv.lease())
            })
            .collect()
    }

    /// The value at `key`, if there is one.
    async fn get_value(raw: &mut Client, key: &str) -> Option<String> {
        let resp = raw.get(key, None).await.unwrap();
        resp.kvs()
            .first()
            .map(|kv| String::from_utf8_lossy(kv.value()).into_owned())
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
        // Its field index entries name the kite path, on the same lease.
        let fields = entries(&mut raw, "/kites-by-field/").await;
        let k2: Vec<&(String, String, i64)> =
            fields.iter().filter(|(k, ..)| k.ends_with("/k2")).collect();
        assert_eq!(
            k2.iter().map(|(k, ..)| k.as_str()).collect::<Vec<_>>(),
            [
                "/kites-by-field/1/alice/prod/k2",
                "/kites-by-field/2/alice/math/k2",
                "/kites-by-field/3/alice/1.2.3/k2",
                "/kites-by-field/4/alice/eu/k2",
                "/kites-by-field/5/alice/h2/k2",
            ]
        );
        assert!(k2.iter().all(|(_, v, l)| v == path && *l == kv.lease()));
        // What `behaves` left: k2..k5, each with its index entries (k4 under its last fields
        // only); k1 (deleted) and k6 (expired, purged) are gone.
        assert_eq!(fields.len(), 4 * 5, "{fields:?}");
        assert!(
            fields
                .iter()
                .any(|(k, ..)| k == "/kites-by-field/5/alice/h1/k4")
        );
        assert_eq!(
            get_value(&mut raw, "/kites-meta/index").await.as_deref(),
            Some("1")
        );
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
        let odd_path = "/kites/carol/prod/db/1.0.0/eu/rack%2F7/50%25%2Fx";
        let odd_fields = |fields: Vec<(String, String, i64)>| -> Vec<(String, String, i64)> {
            fields
                .into_iter()
                .filter(|(k, ..)| k.contains("/carol/"))
                .collect()
        };
        let before = odd_fields(entries(&mut raw, "/kites-by-field/").await);
        assert_eq!(before[4].0, "/kites-by-field/5/carol/rack%2F7/50%25%2Fx");
        let host = Matcher::new(&KontrolQuery {
            username: "carol".into(),
            hostname: "rack/7".into(),
            ..Default::default()
        })
        .unwrap();
        assert_eq!(urls(s.get(&host).await.unwrap()), ["http://odd"]);
        // A refresh moves the field index entries to the new lease with the registration.
        assert!(
            s.refresh("50%/x", "carol", now_ms() + 60_000)
                .await
                .unwrap()
        );
        let lease = raw.get(odd_path, None).await.unwrap().kvs()[0].lease();
        let after = odd_fields(entries(&mut raw, "/kites-by-field/").await);
        assert_eq!(after.len(), 5);
        assert!(
            after
                .iter()
                .zip(&before)
                .all(|(a, b)| a.0 == b.0 && a.1 == odd_path && a.2 == lease && b.2 != lease),
            "{before:?} then {after:?}"
        );
        assert_eq!(urls(s.get(&host).await.unwrap()), ["http://odd"]);
        assert!(s.delete("50%/x", "carol").await.unwrap());
        assert!(keys(&mut raw, "/kites/carol/").await.is_empty());
        assert!(odd_fields(entries(&mut raw, "/kites-by-field/").await).is_empty());
    }

    /// Among 2,000 kites of one user, a query by username and name reads the name's 5 index
    /// entries and their 5 registrations, not the user's 2,000; a field after the leading ones
    /// reads the smaller of its index range and the leading prefix.
    #[tokio::test]
    async fn a_query_by_name_reads_its_kites_not_every_kite_of_the_user() {
        let Some(etcd) = Etcd::start().await else {
            return;
        };
        let options = EtcdOptions {
            request_timeout: Duration::from_secs(10),
            ..etcd.options()
        };
        let s = EtcdStorage::connect(options).await.unwrap();
        let paths: Vec<String> = (0..2000)
            .map(|i| {
                let name = if i % 400 == 7 { "needle" } else { "hay" };
                format!("/alice/prod/{name}/1.0.0/eu/h{}/k{i}", i % 3)
            })
            .collect();
        futures_util::stream::iter(&paths)
            .for_each_concurrent(16, |path| {
                let s = &s;
                async move {
                    let r = Registration::new(kite(path), "http://x", "key1", HOUR);
                    s.upsert(&r).await.unwrap();
                }
            })
            .await;
        // What a query found and how many keys it read with their values.
        let get = |q: &'static str| {
            let s = &s;
            async move {
                let before = s.keys_read.load(Ordering::Relaxed);
                let found = s.get(&matcher(q)).await.unwrap();
                (ids(found), s.keys_read.load(Ordering::Relaxed) - before)
            }
        };
        let needles = ["k1207", "k1607", "k407", "k7", "k807"];
        assert_eq!(
            get("/alice//needle").await,
            (needles.map(String::from).into(), 10)
        );
        // The leading fields name them all: their prefix alone.
        assert_eq!(
            get("/alice/prod/needle").await,
            (needles.map(String::from).into(), 5)
        );
        // The leading prefix (5) is smaller than the region's index range (2,000).
        assert_eq!(get("/alice/prod/needle//eu").await.1, 5);
        // The host's index range (667) is smaller than the leading prefix (2,000) and the
        // version's range (2,000): its entries and registrations, fetched in batches.
        let (found, read) = get("/alice/prod//1.0.0//h1").await;
        assert_eq!((found.len(), read), (667, 2 * 667));
        assert_eq!(get("/alice//none").await, (Vec::new(), 0));
        assert_eq!(get("/alice").await.1, 2000);

        // The same kites unindexed (as an older Kontrol left them): indexed on connect, page by
        // page.
        let mut raw = etcd.raw().await;
        let prefix = || Some(DeleteOptions::new().with_prefix());
        raw.delete("/kites-by-field/", prefix()).await.unwrap();
        raw.delete("/kites-meta/", prefix()).await.unwrap();
        let s = EtcdStorage::connect(etcd.options()).await.unwrap();
        assert_eq!(
            keys(&mut raw, "/kites-by-field/").await.len(),
            5 * paths.len()
        );
        let found = s.get(&matcher("/alice//needle")).await.unwrap();
        assert_eq!(ids(found), needles);
    }

    /// Purging an expired registration the id index no longer names (its id registered again
    /// elsewhere) takes its own field index entries, not those that name the other key.
    #[tokio::test]
    async fn purge_leaves_the_index_entries_of_another_key() {
        let Some(etcd) = Etcd::start().await else {
            return;
        };
        let s = EtcdStorage::connect(etcd.options()).await.unwrap();
        let mut stale = Registration::new(
            kite("/alice/prod/math/1.0.0/eu/h1/k9"),
            "http://old",
            "key1",
            HOUR,
        );
        stale.expires_at_ms = now_ms() - 1;
        s.upsert(&stale).await.unwrap();
        // As if k9 were registered again on host h2 without this key being deleted.
        let mut raw = etcd.raw().await;
        let other = "/kites/alice/prod/math/1.0.0/eu/h2/k9";
        raw.put("/kites-by-id/k9", other, None).await.unwrap();
        raw.put("/kites-by-field/1/alice/prod/k9", other, None)
            .await
            .unwrap();
        assert_eq!(s.purge_expired().await.unwrap(), 1);
        assert!(keys(&mut raw, "/kites/").await.is_empty());
        assert_eq!(
            entries(&mut raw, "/kites-by-field/").await,
            [(
                "/kites-by-field/1/alice/prod/k9".to_owned(),
                other.to_owned(),
                0
            )]
        );
    }

    /// Registrations an older Kontrol wrote (no field index entries, no marker) are indexed
    /// when a Kontrol connects, each entry on its registration's lease, and only once; one an
    /// older Kontrol writes afterwards is found by its other fields once a newer Kontrol
    /// refreshes it.
    #[tokio::test]
    async fn an_etcd_from_before_the_index_is_indexed_on_connect() {
        let Some(etcd) = Etcd::start().await else {
            return;
        };
        let old = EtcdStorage::connect(etcd.options()).await.unwrap();
        for path in [
            "/alice/prod/math/1.0.0/eu/h1/k1",
            "/alice/dev/db/1.0.0/eu/h2/k2",
        ] {
            let r = Registration::new(kite(path), "http://x", "key1", HOUR);
            old.upsert(&r).await.unwrap();
        }
        let mut raw = etcd.raw().await;
        let prefix = || Some(DeleteOptions::new().with_prefix());
        raw.delete("/kites-by-field/", prefix()).await.unwrap();
        raw.delete("/kites-meta/", prefix()).await.unwrap();
        // Unindexed, only the username, the leading fields and the id find them.
        assert!(old.get(&matcher("/alice//math")).await.unwrap().is_empty());
        assert_eq!(ids(old.get(&matcher("/alice/prod")).await.unwrap()), ["k1"]);

        let s = EtcdStorage::connect(etcd.options()).await.unwrap();
        assert_eq!(ids(s.get(&matcher("/alice")).await.unwrap()), ["k1", "k2"]);
        assert_eq!(ids(s.get(&matcher("/alice//math")).await.unwrap()), ["k1"]);
        assert_eq!(ids(s.get(&matcher("/alice/////h2")).await.unwrap()), ["k2"]);
        let fields = entries(&mut raw, "/kites-by-field/").await;
        assert_eq!(fields.len(), 10, "{fields:?}");
        for (key, path, lease) in &fields {
            let kv = raw.get(path.as_str(), None).await.unwrap().kvs()[0].clone();
            assert!(*lease != 0 && *lease == kv.lease(), "{key}");
            let id = path.rsplit('/').next().unwrap();
            assert!(key.ends_with(&format!("/{id}")), "{key}: {path}");
        }
        assert_eq!(
            get_value(&mut raw, "/kites-meta/index").await.as_deref(),
            Some("1")
        );
        // Connecting again writes nothing: the marker says it is done.
        let revision = |raw: &mut Client| {
            let mut raw = raw.clone();
            async move {
                let resp = raw.get("/kites-meta/index", None).await.unwrap();
                resp.header().unwrap().revision()
            }
        };
        let before = revision(&mut raw).await;
        drop(EtcdStorage::connect(etcd.options()).await.unwrap());
        assert_eq!(revision(&mut raw).await, before);

        // An older Kontrol registers k3 meanwhile (no entries): found by the user, not by name,
        // until a newer Kontrol refreshes it.
        let k3 = Registration::new(
            kite("/alice/prod/math/1.0.0/eu/h3/k3"),
            "http://x",
            "key1",
            HOUR,
        );
        s.upsert(&k3).await.unwrap();
        for (key, ..) in entries(&mut raw, "/kites-by-field/").await {
            if key.ends_with("/k3") {
                raw.delete(key, None).await.unwrap();
            }
        }
        assert_eq!(
            ids(s.get(&matcher("/alice")).await.unwrap()),
            ["k1", "k2", "k3"]
        );
        assert_eq!(ids(s.get(&matcher("/alice//math")).await.unwrap()), ["k1"]);
        assert!(s.refresh("k3", "alice", now_ms() + 60_000).await.unwrap());
        assert_eq!(
            ids(s.get(&matcher("/alice//math")).await.unwrap()),
            ["k1", "k3"]
        );
    }

    #[tokio::test]
    async fn a_batch_of_refreshes_shares_one_lease_that_outlives_its_first_kite() {
        let Some(etcd) = Etcd::start().await else {
            return;
        };
        let s = EtcdStorage::connect(etcd.options()).await.unwrap();
        let mut raw = etcd.raw().await;
        for id in ["k1", "k2"] {
            let path = format!("/alice/prod/math/1.0.0/eu/h1/{id}");
            let r = Registration::new(kite(&path), "http://one", "key1", HOUR);
            s.upsert(&r).await.unwrap();
        }
        let later = now_ms() + 7_200_000;
        let batch = [
            ("k1".to_owned(), "alice".to_owned()),
            ("k2".to_owned(), "alice".to_owned()),
        ];
        let done = s.refresh_many(&batch, later).await;
        assert!(done.iter().all(|d| matches!(d, Ok(true))), "{done:?}");
        // Every key of both kites is on one lease, granted for the batch.
        let keys = [
            entries(&mut raw, "/kites/").await,
            entries(&mut raw, "/kites-by-").await,
        ];
        let leases: BTreeSet<i64> = keys.iter().flatten().map(|(_, _, lease)| *lease).collect();
        assert_eq!(leases.len(), 1, "{keys:?}");
        let lease = *leases.first().unwrap();

        // k1 goes, registers again, is refreshed alone and goes again: k2 keeps the lease (a
        // revoke of the old lease would take k2 with it).
        assert!(s.delete("k1", "alice").await.unwrap());
        let again = Registration::new(
            kite("/alice/prod/math/1.0.0/eu/h1/k1"),
            "http://one",
            "key1",
            HOUR,
        );
        s.upsert(&again).await.unwrap();
        assert!(s.refresh("k1", "alice", later).await.unwrap());
        assert!(s.delete("k1", "alice").await.unwrap());
        // A request after each of those has been answered: etcd has seen any revoke by now.
        s.get(&by_id("k2")).await.unwrap();
        let ttl = raw.lease_time_to_live(lease, None).await.unwrap().ttl();
        assert!(ttl > 0, "the batch's lease is gone: {ttl}");
        assert_eq!(urls(s.get(&by_id("k2")).await.unwrap()), ["http://one"]);
        assert_eq!(
            s.get(&matcher("/alice")).await.unwrap().len(),
            1,
            "k2 alone is left"
        );
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
        // Its field index entries: five, all naming the winner's key (the moves took the rest).
        let fields = entries(&mut raw, "/kites-by-field/").await;
        assert_eq!(fields.len(), 5, "{fields:?}");
        assert!(fields.iter().all(|(_, v, _)| *v == s_key(&a, &all[0])));

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
        assert_eq!(keys(&mut raw, "/kites").await, ["/kites-meta/index"]);
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

        // One second of life, and no purge: etcd deletes every key of both registrations itself.
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
            while deleted.len() < 14 {
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
        let mut want = BTreeSet::new();
        for id in ["old", "short"] {
            want.insert(format!("/kites-by-id/{id}"));
            want.insert(format!("/kites/alice/prod/math/1.0.0/eu/h1/{id}"));
            for (field, value) in (1..).zip(["prod", "math", "1.0.0", "eu", "h1"]) {
                want.insert(format!("/kites-by-field/{field}/alice/{value}/{id}"));
            }
        }
        assert_eq!(deleted, want);
        assert!(s.get(&by_id("short")).await.unwrap().is_empty());
        assert_eq!(keys(&mut raw, "/kites").await, ["/kites-meta/index"]);
    }

    #[tokio::test]
    async fn etcd_down_then_back() {
        let Some(mut etcd) = Etcd::start().await else {
            return;
        };
        // Deadlines of a second; an operation is cut by one when it ends well before the
        // operation could have ended by itself (never, for a frozen etcd), whatever the load.
        let deadline = Duration::from_secs(1);
        let options = EtcdOptions {
            connect_timeout: deadline,
            request_timeout: deadline,
            ..etcd.options()
        };
        let s = EtcdStorage::connect(options.clone()).await.unwrap();
        let one = Registration::new(
            kite("/alice/prod/math/1.0.0/eu/h1/k1"),
            "http://one",
            "key1",
            HOUR,
        );
        s.upsert(&one).await.unwrap();

        etcd.kill();
        let bound = deadline * 8;
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
        unavailable_quickly!(EtcdStorage::connect(options.clone()));

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
