//! How registrations live and go, on every backend (memory, embedded, and real etcd and
//! PostgreSQL servers started here): heartbeats that write the storage only every refresh
//! interval, in batches, while no live kite ever expires; a kite whose connection ends,
//! deregistered at once (its watchers hear it, a second Kontrol on the same backend no longer
//! finds it); a kite that stops heartbeating, deleted by its Kontrol after the TTL; and the
//! Kontrol registering itself.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use kite_native::Kite;
use kite_native::auth::KeyPair;
use kite_native::core::KontrolQuery;
use kite_test_kit::kites::{local_config, serve};
use kite_test_kit::kontrol::backends;
use kite_test_kit::raw::{RawPeer, identity};
use kite_test_kit::within;
use kontrol::query::Matcher;
use kontrol::server::{Kontrol, KontrolOptions};
use kontrol::storage::{KeyRecord, MemoryStorage, Registration, Storage, StorageError};

/// A storage that counts the writes Kontrol makes through it and reports deletes.
#[derive(Debug)]
struct Counting {
    inner: Arc<dyn Storage>,
    counts: Mutex<Counts>,
    deleted: tokio::sync::mpsc::UnboundedSender<(String, bool)>,
}

#[derive(Debug, Default, Clone, Copy)]
struct Counts {
    /// `refresh` calls.
    single: usize,
    /// `refresh_many` calls, and the items in them.
    batches: usize,
    items: usize,
}

impl Counting {
    fn new(
        inner: Arc<dyn Storage>,
    ) -> (
        Arc<Counting>,
        tokio::sync::mpsc::UnboundedReceiver<(String, bool)>,
    ) {
        let (deleted, rx) = tokio::sync::mpsc::unbounded_channel();
        let c = Counting {
            inner,
            counts: Mutex::default(),
            deleted,
        };
        (Arc::new(c), rx)
    }

    fn counts(&self) -> Counts {
        *self.counts.lock().unwrap()
    }
}

#[async_trait::async_trait]
impl Storage for Counting {
    async fn upsert(&self, r: &Registration) -> Result<(), StorageError> {
        self.inner.upsert(r).await
    }

    async fn refresh(&self, id: &str, owner: &str, at: u64) -> Result<bool, StorageError> {
        self.counts.lock().unwrap().single += 1;
        self.inner.refresh(id, owner, at).await
    }

    async fn refresh_many(
        &self,
        items: &[(String, String)],
        at: u64,
    ) -> Vec<Result<bool, StorageError>> {
        {
            let mut c = self.counts.lock().unwrap();
            c.batches += 1;
            c.items += items.len();
        }
        self.inner.refresh_many(items, at).await
    }

    async fn delete(&self, id: &str, owner: &str) -> Result<bool, StorageError> {
        self.inner.delete(id, owner).await
    }

    async fn delete_written(&self, id: &str, owner: &str, at: u64) -> Result<bool, StorageError> {
        let done = self.inner.delete_written(id, owner, at).await;
        let _ = self.deleted.send((id.to_owned(), matches!(done, Ok(true))));
        done
    }

    async fn get(&self, m: &Matcher) -> Result<Vec<Registration>, StorageError> {
        self.inner.get(m).await
    }

    async fn purge_expired(&self) -> Result<usize, StorageError> {
        self.inner.purge_expired().await
    }

    async fn add_key(&self, key: &KeyRecord) -> Result<bool, StorageError> {
        self.inner.add_key(key).await
    }

    async fn delete_key(&self, id: &str) -> Result<bool, StorageError> {
        self.inner.delete_key(id).await
    }

    async fn keys(&self) -> Result<Vec<KeyRecord>, StorageError> {
        self.inner.keys().await
    }
}

/// A Kontrol on `storage` with `options` changed by `set`, serving on 127.0.0.1.
async fn kontrol(
    key: &KeyPair,
    storage: Arc<dyn Storage>,
    set: impl FnOnce(&mut KontrolOptions),
) -> (Kontrol, std::net::SocketAddr) {
    let mut o = KontrolOptions::new("kontrol", key.clone(), "");
    set(&mut o);
    let k = Kontrol::new(local_config(), o, storage).unwrap();
    let addr = serve(k.kite()).await;
    (k, addr)
}

/// A kite `name` of `username` with a kite key from `k`, whose Kontrol is at `addr`.
fn kite_of(k: &Kontrol, addr: std::net::SocketAddr, name: &str, username: &str) -> Kite {
    let key = k.kite_key_for(username).unwrap();
    let mut cfg = local_config();
    cfg.apply_kite_key(&kite_native::kitekey::parse(&key).unwrap());
    cfg.kontrol_url = format!("http://{addr}/kite");
    cfg.environment = "test".into();
    Kite::with_config(name, "1.0.0", cfg).unwrap()
}

fn query(username: &str, name: &str) -> KontrolQuery {
    KontrolQuery {
        username: username.into(),
        name: name.into(),
        ..Default::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kite_whose_connection_ends_is_deregistered_at_once_on_every_backend() {
    let key = KeyPair::generate(2048).unwrap();
    for b in backends(2).await {
        let what = b.name;
        // A TTL far longer than the test: only the closed connection can remove the kite.
        let long = |o: &mut KontrolOptions| o.registration_ttl = Duration::from_secs(600);
        let (a, a_addr) = kontrol(&key, b.storages[0].clone(), long).await;
        let (other, other_addr) = kontrol(&key, b.storages[1].clone(), long).await;
        let name = format!("gone-{what}");
        let watcher = kite_of(&a, a_addr, "watcher", "bob");
        let (events_tx, mut events) = tokio::sync::mpsc::unbounded_channel();
        within(
            "watch",
            watcher.watch_kites(&query("alice", &name), move |e| {
                let _ = events_tx.send(e);
            }),
        )
        .await
        .unwrap();
        let first = kite_of(&a, a_addr, &name, "alice");
        within("register", first.register("http://127.0.0.1:9/first"))
            .await
            .unwrap();
        let e = within("REGISTER", events.recv()).await.unwrap();
        assert_eq!(e.action, "REGISTER", "{what}");
        // The second Kontrol finds it through the shared backend.
        let finder = kite_of(&other, other_addr, "finder", "carol");
        let found = within("getKites", finder.get_kites(&query("alice", &name)))
            .await
            .unwrap();
        assert_eq!(found.len(), 1, "{what}");

        first.close();
        let e = within("DEREGISTER", events.recv()).await.unwrap();
        assert_eq!(
            (e.action.as_str(), e.kite.name.as_str()),
            ("DEREGISTER", name.as_str()),
            "{what}"
        );
        // Deleted before the watchers were told: gone for the second Kontrol too.
        let found = within("getKites", finder.get_kites(&query("alice", &name)))
            .await
            .unwrap();
        assert!(found.is_empty(), "{what}: {found:?}");
        for k in [watcher, finder] {
            k.close();
        }
        a.kite().close();
        other.kite().close();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn heartbeats_write_rarely_and_no_live_kite_ever_expires_on_every_backend() {
    const KITES: usize = 30;
    let ttl = Duration::from_secs(1);
    let run = Duration::from_secs(6);
    let key = KeyPair::generate(2048).unwrap();
    for b in backends(2).await {
        let what = b.name;
        let (storage, mut deleted) = Counting::new(b.storages[0].clone());
        let (k, addr) = kontrol(&key, storage.clone(), |o| {
            o.registration_ttl = ttl;
            o.heartbeat_interval = Duration::from_millis(100);
            o.storage_refresh_interval = Duration::from_millis(500);
        })
        .await;
        let name = format!("live-{what}");
        let mut kites = Vec::new();
        for i in 0..KITES {
            let kite = kite_of(&k, addr, &name, "alice");
            within(
                "register",
                kite.register(&format!("http://127.0.0.1:9/{i}")),
            )
            .await
            .unwrap();
            kites.push(kite);
        }
        // Six TTLs of heartbeats: every kite is found every time we look (straight from the
        // backend, as another Kontrol would see it).
        let everyone = Matcher::new(&query("alice", &name)).unwrap();
        let until = Instant::now() + run;
        let mut looks = 0;
        while Instant::now() < until {
            let n = b.storages[1].get(&everyone).await.unwrap().len();
            assert_eq!(
                n, KITES,
                "{what}: a live kite went missing after {looks} looks"
            );
            looks += 1;
            // Sampling the registry over time is what this test is for.
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        // Heartbeats came 10 times a second per kite (about 60 each); each kite's registration
        // was written about once per refresh interval (12 times in 6 s).
        let c = storage.counts();
        let most = KITES * (run.as_millis() / 500 + 2) as usize;
        assert_eq!(c.single, 0, "{what}: dnode heartbeats refresh in batches");
        assert!(
            c.items > 0 && c.items <= most,
            "{what}: {} refreshes written for {KITES} kites in {run:?} (at most {most})",
            c.items
        );
        // Refreshes that came due together were written together (how many share a batch
        // depends on how the kites' heartbeats fall; at least some do).
        assert!(
            c.batches < c.items,
            "{what}: {} batches for {} refreshes",
            c.batches,
            c.items
        );

        // A peer that registers and never heartbeats: deleted by its Kontrol after the TTL.
        let mut raw = RawPeer::connect(addr).await;
        let key_of_mallory = k.kite_key_for("mallory").unwrap();
        let id = uuid::Uuid::new_v4().to_string();
        let call = raw
            .register(&identity("mallory", "silent", &id), &key_of_mallory)
            .await;
        assert!(raw.answer(call).await["error"].is_null());
        let by_id = Matcher::by_id(&id);
        assert_eq!(b.storages[1].get(&by_id).await.unwrap().len(), 1, "{what}");
        within("the silent kite deleted", async {
            loop {
                let (gone, removed) = deleted.recv().await.unwrap();
                if gone == id {
                    assert!(removed, "{what}: the delete found it as written");
                    break;
                }
            }
        })
        .await;
        assert!(
            b.storages[1].get(&by_id).await.unwrap().is_empty(),
            "{what}"
        );
        raw.close().await;
        for kite in kites {
            kite.close();
        }
        k.kite().close();
    }
}

#[tokio::test]
async fn kontrol_registers_itself() {
    let port = kite_test_kit::free_port();
    let url = format!("http://127.0.0.1:{port}/kite");
    let key = KeyPair::generate(2048).unwrap();
    let storage: Arc<dyn Storage> = Arc::new(MemoryStorage::new());
    let mut config = local_config();
    config.port = port;
    let k = Kontrol::new(
        config,
        KontrolOptions::new("kontrol", key.clone(), &url),
        storage.clone(),
    )
    .unwrap();
    let addr = serve(k.kite()).await;
    let asker = kite_of(&k, addr, "asker", "alice");
    let found = within("registered itself", async {
        loop {
            let found = asker.get_kites(&query("kontrol", "kontrol")).await.unwrap();
            if !found.is_empty() {
                break found;
            }
            // The registration is written by a task of its own as the Kontrol starts.
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    assert_eq!(found.len(), 1);
    assert_eq!(found[0].remote().id, k.kite().identity().id);
    assert_eq!(found[0].url(), url);

    asker.close();
    k.kite().close();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_watcher_on_one_kontrol_hears_kites_of_another_on_every_backend() {
    let key = KeyPair::generate(2048).unwrap();
    for b in backends(2).await {
        let what = b.name;
        let (a, a_addr) = kontrol(&key, b.storages[0].clone(), |_| {}).await;
        let (other, other_addr) = kontrol(&key, b.storages[1].clone(), |_| {}).await;
        let name = format!("elsewhere-{what}");
        let watcher = kite_of(&a, a_addr, "watcher", "bob");
        let (events_tx, mut events) = tokio::sync::mpsc::unbounded_channel();
        within(
            "watch",
            watcher.watch_kites(&query("alice", &name), move |e| {
                let _ = events_tx.send(e);
            }),
        )
        .await
        .unwrap();
        // The second Kontrol's kite registers there; the watcher on the first hears it. (A
        // Kontrol that has just started may not be listening yet: register again until the
        // first event arrives.)
        let far = kite_of(&other, other_addr, &name, "alice");
        let heard = within("REGISTER from the other Kontrol", async {
            loop {
                far.register("http://127.0.0.1:9/far").await.unwrap();
                let wait = tokio::time::timeout(Duration::from_millis(500), events.recv());
                if let Ok(Some(e)) = wait.await {
                    break e;
                }
            }
        })
        .await;
        assert_eq!(
            (
                heard.action.as_str(),
                heard.kite.id.as_str(),
                heard.url.as_str()
            ),
            (
                "REGISTER",
                far.identity().id.as_str(),
                "http://127.0.0.1:9/far"
            ),
            "{what}"
        );
        assert!(!heard.token.is_empty(), "{what}: the first Kontrol's token");
        // Its connection ends: the other Kontrol deregisters it, the watcher here hears that.
        far.close();
        let gone = within("DEREGISTER from the other Kontrol", async {
            loop {
                let e = events.recv().await.unwrap();
                if e.action == "DEREGISTER" {
                    break e;
                }
            }
        })
        .await;
        assert_eq!(gone.kite.id, far.identity().id, "{what}");
        // A kite of another name is nobody's business here.
        let stranger = kite_of(&other, other_addr, "stranger", "alice");
        within("register", stranger.register("http://127.0.0.1:9/s"))
            .await
            .unwrap();
        let mine = kite_of(&other, other_addr, &name, "alice");
        within("register", mine.register("http://127.0.0.1:9/mine"))
            .await
            .unwrap();
        let next = within("the next event", async {
            loop {
                let e = events.recv().await.unwrap();
                if e.action == "REGISTER" && e.kite.id != far.identity().id {
                    break e;
                }
            }
        })
        .await;
        assert_eq!(
            next.kite.id,
            mine.identity().id,
            "{what}: only matching kites"
        );
        for k in [watcher, stranger, mine] {
            k.close();
        }
        a.kite().close();
        other.kite().close();
    }
}
