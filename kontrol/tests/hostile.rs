//! Hostile peers against a real Kontrol on 127.0.0.1, over real sockets. Mallory holds a valid
//! kite key of her own, signed by the same Kontrol, and tries to take alice's kite id (over
//! dnode and over HTTP, and through heartbeats), and to make the Kontrol hold unbounded
//! registrations, keep-alive tasks and watchers (one key, one user, one connection).
//!
//! The floods speak dnode by hand on a SockJS websocket ([`RawPeer`]): a peer picks its kite
//! identity per message and need not answer Kontrol's `kite.heartbeat`.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use kite_native::auth::KeyPair;
use kite_native::core::KontrolQuery;
use kite_native::{ErrorKind, Kite};
use kite_test_kit::kites::{local_config, serve as start};
use kite_test_kit::raw::{RawPeer, identity};
use kite_test_kit::within;
use kontrol::query::Matcher;
use kontrol::server::{Kontrol, KontrolOptions};
use kontrol::storage::{EmbeddedStorage, MemoryStorage, Storage};
use serde_json::{Value, json};

/// The budgets per user and per kite key these tests set.
fn budgets(o: &mut KontrolOptions, per_user: usize, per_key: usize) {
    o.max_registrations_per_user = per_user;
    o.max_registrations_per_key = per_key;
}

struct Setup {
    kontrol: Kontrol,
    addr: SocketAddr,
    /// `http://127.0.0.1:port/kite`.
    url: String,
    /// `http://127.0.0.1:port`: where `/register` and `/heartbeat` are.
    base: String,
    dir: std::path::PathBuf,
}

impl Drop for Setup {
    fn drop(&mut self) {
        self.kontrol.kite().close();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A Kontrol on the embedded store (the default, where the hijack was first seen) or in memory.
async fn kontrol(embedded: bool, options: impl FnOnce(&mut KontrolOptions)) -> Setup {
    let dir = std::env::temp_dir().join(format!("kontrol-hostile-{}", uuid::Uuid::new_v4()));
    let storage: Arc<dyn Storage> = if embedded {
        Arc::new(EmbeddedStorage::open(dir.join("kontrol.db")).unwrap())
    } else {
        Arc::new(MemoryStorage::new())
    };
    let mut opts = KontrolOptions::new("kontrol", KeyPair::generate(2048).unwrap(), "");
    options(&mut opts);
    let kontrol = Kontrol::new(local_config(), opts, storage).unwrap();
    let addr = start(kontrol.kite()).await;
    Setup {
        kontrol,
        addr,
        url: format!("http://{addr}/kite"),
        base: format!("http://{addr}"),
        dir,
    }
}

/// A kite `name` of `username` with a kite key from the Kontrol; with `id`, that kite id.
fn kite_for(s: &Setup, name: &str, username: &str, id: Option<&str>) -> Kite {
    let key = s.kontrol.kite_key_for(username).unwrap();
    let mut cfg = local_config();
    cfg.apply_kite_key(&kite_native::kitekey::parse(&key).unwrap());
    cfg.kontrol_url.clone_from(&s.url);
    cfg.environment = "test".into();
    if let Some(id) = id {
        cfg.id = id.to_owned();
    }
    Kite::with_config(name, "1.0.0", cfg).unwrap()
}

fn by_id(id: &str) -> KontrolQuery {
    KontrolQuery {
        id: id.into(),
        ..Default::default()
    }
}

/// The live tasks of this test's runtime (the Kontrol runs in it).
fn alive_tasks() -> usize {
    tokio::runtime::Handle::current()
        .metrics()
        .num_alive_tasks()
}

/// Waits (at most 10 s) until at most `most` tasks are alive; panics with the count otherwise.
async fn tasks_settle_to(most: usize, what: &str) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let n = alive_tasks();
        if n <= most {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{what}: {n} tasks alive after 10 s, want at most {most}"
        );
        // Task counts announce nothing: poll, bounded.
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Whether `answer` is a success.
fn ok(answer: &Value) -> bool {
    answer["error"].is_null()
}

/// The error type and message of `answer`.
fn error_of(answer: &Value) -> (String, String) {
    (
        answer["error"]["type"]
            .as_str()
            .unwrap_or_default()
            .to_owned(),
        answer["error"]["message"]
            .as_str()
            .unwrap_or_default()
            .to_owned(),
    )
}

#[tokio::test]
async fn mallory_cannot_take_alices_kite_id_over_dnode() {
    let s = kontrol(true, |o| {
        o.registration_ttl = Duration::from_secs(2);
        o.heartbeat_interval = Duration::from_millis(200);
    })
    .await;
    let alice = kite_for(&s, "math", "alice", None);
    let alice_url = format!("http://{}/kite", start(&alice).await);
    within("alice registers", alice.register(&alice_url))
        .await
        .unwrap();
    let id = alice.identity().id.clone();

    // Bob watches the id.
    let bob = kite_for(&s, "watcher", "bob", None);
    let (events_tx, mut events) = tokio::sync::mpsc::unbounded_channel();
    let initial = within(
        "watch",
        bob.watch_kites(&by_id(&id), move |e| {
            let _ = events_tx.send(e);
        }),
    )
    .await
    .unwrap();
    assert_eq!(initial.len(), 1);

    // Mallory, her own kite key, alice's kite id: refused, without alice's URL in the answer.
    let mallory = kite_for(&s, "math", "mallory", Some(&id));
    let mallory_url = "http://127.0.0.1:9/mallory";
    let err = within("mallory registers", mallory.register(mallory_url))
        .await
        .unwrap_err();
    assert_eq!(err.kind, ErrorKind::Authentication, "{err}");
    assert!(
        err.message.contains(&id) && err.message.contains("registered by another user"),
        "{err}"
    );
    assert!(!err.message.contains(&alice_url), "{err}");
    // Writing alice's username into her kite identity changes nothing: the key says who she is.
    let mut raw = RawPeer::connect(s.addr).await;
    let call = raw
        .register(&identity("alice", "math", &id), &mallory.kite_key())
        .await;
    let answer = raw.answer(call).await;
    let (kind, message) = error_of(&answer);
    assert_eq!(kind, "authenticationError", "{answer}");
    assert!(message.contains("registered by another user"), "{answer}");
    raw.close().await;

    // The same over HTTP: 403 with Go's error body; her heartbeat for the id is told to
    // register again (nothing of alice's is refreshed through it).
    let http = reqwest::Client::new();
    let body = json!({"url": mallory_url, "kite": mallory.identity(),
                      "auth": {"type": "kiteKey", "key": mallory.kite_key()}});
    let r = http
        .post(format!("{}/register", s.base))
        .body(body.to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    let text = r.text().await.unwrap();
    let err: Value = serde_json::from_str(&text).unwrap();
    let message = err["err"].as_str().unwrap();
    assert!(message.contains("registered by another user"), "{text}");
    assert!(!message.contains(&alice_url), "{text}");
    let hb = http
        .get(format!("{}/heartbeat?id={id}", s.base))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert_eq!(hb, "registeragain");

    // Alice's registration is whole: by her query and by id, with her URL and username.
    let query = KontrolQuery {
        username: "alice".into(),
        name: "math".into(),
        ..Default::default()
    };
    for q in [query.clone(), by_id(&id)] {
        let found = within("getKites", bob.get_kites(&q)).await.unwrap();
        assert_eq!(found.len(), 1, "{q:?}");
        assert_eq!(found[0].url(), alice_url, "{q:?}");
        assert_eq!(found[0].remote().username, "alice", "{q:?}");
    }
    // The next event the watcher hears is alice registering again, not mallory.
    within("alice again", alice.register(&alice_url))
        .await
        .unwrap();
    let e = within("event", events.recv()).await.unwrap();
    assert_eq!(
        (e.action.as_str(), e.kite.username.as_str(), e.url.as_str()),
        ("REGISTER", "alice", alice_url.as_str())
    );

    // Alice goes; once her registration has expired, the id is free for mallory.
    alice.close();
    let e = within("DEREGISTER", events.recv()).await.unwrap();
    assert_eq!(
        (e.action.as_str(), e.kite.username.as_str()),
        ("DEREGISTER", "alice")
    );
    within("mallory registers later", mallory.register(mallory_url))
        .await
        .unwrap();
    let found = within("getKites", bob.get_kites(&by_id(&id)))
        .await
        .unwrap();
    assert_eq!(found.len(), 1);
    assert_eq!(found[0].url(), mallory_url);
    assert_eq!(found[0].remote().username, "mallory");
    assert!(
        within("getKites", bob.get_kites(&query))
            .await
            .unwrap()
            .is_empty()
    );
    mallory.close();
    bob.close();
}

#[tokio::test]
async fn mallory_cannot_take_or_keep_alive_alices_kite_id_over_http() {
    let s = kontrol(true, |o| {
        o.registration_ttl = Duration::from_millis(1500);
        o.heartbeat_interval = Duration::from_millis(100);
    })
    .await;
    let id = uuid::Uuid::new_v4().to_string();
    let register = |user: &str, url: &str| {
        json!({"url": url, "kite": identity(user, "math", &id),
               "auth": {"type": "kiteKey", "key": s.kontrol.kite_key_for(user).unwrap()}})
        .to_string()
    };
    let alice_url = "http://127.0.0.1:9/alice";
    // Alice registers over HTTP from 127.0.0.1 (and sends heartbeats by hand below).
    let alice = reqwest::Client::new();
    let r = alice
        .post(format!("{}/register", s.base))
        .body(register("alice", alice_url))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "{}", r.text().await.unwrap());
    let storage = s.kontrol.storage().clone();
    let stored = || {
        let storage = storage.clone();
        let q = Matcher::new(&by_id(&id)).unwrap();
        async move { storage.get(&q).await.unwrap() }
    };
    let before = stored().await;
    assert_eq!((before.len(), before[0].url.as_str()), (1, alice_url));

    // Mallory, from another address (127.0.0.2), with her own key: refused over HTTP...
    let mallory = reqwest::Client::builder()
        .local_address(IpAddr::from([127, 0, 0, 2]))
        .build()
        .unwrap();
    let mallory_url = "http://127.0.0.1:9/mallory";
    let r = mallory
        .post(format!("{}/register", s.base))
        .body(register("mallory", mallory_url))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    assert!(
        r.text()
            .await
            .unwrap()
            .contains("is registered by another user")
    );
    // ...and over dnode.
    let m = kite_for(&s, "math", "mallory", Some(&id));
    let err = within("mallory over dnode", m.register(mallory_url))
        .await
        .unwrap_err();
    assert_eq!(err.kind, ErrorKind::Authentication, "{err}");
    // Her heartbeats for alice's id refresh nothing.
    for _ in 0..3 {
        let hb = mallory
            .get(format!("{}/heartbeat?id={id}", s.base))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        assert_eq!(hb, "registeragain");
    }
    assert_eq!(
        stored().await,
        before,
        "mallory's heartbeats moved the expiry"
    );

    // Alice's own heartbeats (from her address) do push it.
    within("alice's heartbeat refreshes", async {
        loop {
            let hb = alice
                .get(format!("{}/heartbeat?id={id}", s.base))
                .send()
                .await
                .unwrap()
                .text()
                .await
                .unwrap();
            assert_eq!(hb, "pong");
            if stored().await[0].expires_at_ms > before[0].expires_at_ms {
                break;
            }
            // A refresh is due at most every half heartbeat interval.
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;

    // No more heartbeats: once it has expired, mallory may take the id (refused until then).
    within("the id is free after expiry", async {
        loop {
            let r = mallory
                .post(format!("{}/register", s.base))
                .body(register("mallory", mallory_url))
                .send()
                .await
                .unwrap();
            match r.status().as_u16() {
                200 => break,
                403 => {}
                other => panic!("{other}: {}", r.text().await.unwrap()),
            }
            // Expiry announces nothing over HTTP: poll, bounded.
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await;
    let now = stored().await;
    assert_eq!(
        (
            now.len(),
            now[0].url.as_str(),
            now[0].kite.username.as_str()
        ),
        (1, mallory_url, "mallory")
    );
    m.close();
}

#[tokio::test]
async fn a_registration_flood_on_one_connection_stops_at_its_budget() {
    // The default budgets: 16 kite ids per connection.
    let s = kontrol(false, |_| {}).await;
    let key = s.kontrol.kite_key_for("mallory").unwrap();
    let mut raw = RawPeer::connect(s.addr).await;
    for i in 0..16 {
        let call = raw
            .register(&identity("mallory", "flood", &format!("f{i}")), &key)
            .await;
        let answer = raw.answer(call).await;
        assert!(ok(&answer), "{i}: {answer}");
    }
    // Settled: what the 16 hold.
    tasks_settle_to(alive_tasks(), "after 16").await;
    let base = alive_tasks();

    let mut calls = Vec::new();
    for i in 16..216 {
        calls.push(
            raw.register(&identity("mallory", "flood", &format!("f{i}")), &key)
                .await,
        );
    }
    let mut answers = Vec::new();
    for call in calls {
        answers.push(raw.answer(call).await);
    }
    // Nothing is kept for refused registrations: no task per kite.
    tasks_settle_to(base + 8, "200 registrations past the budget").await;
    for (i, answer) in answers.iter().enumerate() {
        let (kind, message) = error_of(answer);
        assert_eq!(kind, "requestLimitError", "{}: {answer}", i + 16);
        assert!(
            message.contains("max_registrations_per_connection"),
            "{message}"
        );
    }
    let bob = kite_for(&s, "bob", "bob", None);
    let found = within(
        "getKites",
        bob.get_kites(&KontrolQuery {
            username: "mallory".into(),
            ..Default::default()
        }),
    )
    .await
    .unwrap();
    assert_eq!(found.len(), 16);
    // Another connection has a budget of its own.
    let mut other = RawPeer::connect(s.addr).await;
    let call = other
        .register(&identity("mallory", "flood", "g0"), &key)
        .await;
    assert!(ok(&other.answer(call).await));
    bob.close();
    raw.close().await;
    other.close().await;
}

#[tokio::test]
async fn a_registration_flood_with_one_key_or_one_user_stops_at_its_budget() {
    let s = kontrol(false, |o| {
        budgets(o, 25, 20);
        // Long enough for the floods below to finish before anything goes stale.
        o.registration_ttl = Duration::from_secs(4);
    })
    .await;
    let (key1, key2) = (
        s.kontrol.kite_key_for("mallory").unwrap(),
        s.kontrol.kite_key_for("mallory").unwrap(),
    );
    // One key over three connections, 10 ids each (within the per-connection budget).
    let mut conns = Vec::new();
    let mut calls = Vec::new();
    for c in 0..3 {
        let mut raw = RawPeer::connect(s.addr).await;
        for i in 0..10 {
            let kite = identity("mallory", "flood", &format!("k1-{c}-{i}"));
            calls.push((c, raw.register(&kite, &key1).await));
        }
        conns.push(raw);
    }
    let mut refused = Vec::new();
    let mut taken = 0;
    for (c, call) in calls {
        let answer = conns[c].answer(call).await;
        if ok(&answer) {
            taken += 1;
        } else {
            refused.push(error_of(&answer));
        }
    }
    assert_eq!((taken, refused.len()), (20, 10), "{refused:?}");
    for (kind, message) in &refused {
        assert_eq!(kind, "requestLimitError");
        assert!(message.contains("max_registrations_per_key"), "{message}");
    }
    // Over HTTP too (the budgets count every way in): 429 with Go's error body.
    let r = reqwest::Client::new()
        .post(format!("{}/register", s.base))
        .body(
            json!({"url": "http://127.0.0.1:9/h", "kite": identity("mallory", "flood", "h1"),
                   "auth": {"type": "kiteKey", "key": key1}})
            .to_string(),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 429);
    let body: Value = serde_json::from_str(&r.text().await.unwrap()).unwrap();
    assert!(
        body["err"]
            .as_str()
            .unwrap()
            .contains("max_registrations_per_key"),
        "{body}"
    );
    // Another key of the same user: only up to the user's budget.
    let mut fourth = RawPeer::connect(s.addr).await;
    let mut calls = Vec::new();
    for i in 0..10 {
        let kite = identity("mallory", "flood", &format!("k2-{i}"));
        calls.push(fourth.register(&kite, &key2).await);
    }
    let mut taken = 0;
    for call in calls {
        let answer = fourth.answer(call).await;
        if ok(&answer) {
            taken += 1;
        } else {
            let (kind, message) = error_of(&answer);
            assert_eq!(kind, "requestLimitError");
            assert!(message.contains("max_registrations_per_user"), "{message}");
        }
    }
    assert_eq!(taken, 5);
    // Another user is not held back.
    let carol = s.kontrol.kite_key_for("carol").unwrap();
    let call = fourth
        .register(&identity("carol", "math", "c1"), &carol)
        .await;
    assert!(ok(&fourth.answer(call).await));

    // Nobody answers the heartbeats: the registrations go stale, and their slots come back.
    for raw in conns {
        raw.close().await;
    }
    fourth.close().await;
    let mut raw = RawPeer::connect(s.addr).await;
    within("the key's budget comes back", async {
        for i in 0.. {
            let kite = identity("mallory", "flood", &format!("again-{i}"));
            let call = raw.register(&kite, &key1).await;
            let answer = raw.answer(call).await;
            if ok(&answer) {
                break;
            }
            assert_eq!(error_of(&answer).0, "requestLimitError");
            // Going stale announces nothing to this peer: poll, bounded.
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await;
    raw.close().await;
}

#[tokio::test]
async fn a_watcher_flood_on_one_connection_stops_at_its_budget() {
    // The default budget: 100 watchers per connection.
    let s = kontrol(false, |_| {}).await;
    let key = s.kontrol.kite_key_for("mallory").unwrap();
    let me = identity("mallory", "watcher", "w");
    let mut raw = RawPeer::connect(s.addr).await;
    let mut calls = Vec::new();
    for _ in 0..120 {
        calls.push(raw.watch(&me, &key, json!({"username": "alice"})).await);
    }
    let mut watching = Vec::new();
    for (call, watch) in calls {
        let answer = raw.answer(call).await;
        if ok(&answer) {
            watching.push(watch);
        } else {
            let (kind, message) = error_of(&answer);
            assert_eq!(kind, "requestLimitError", "{answer}");
            assert!(message.contains("max_watchers_per_connection"), "{message}");
        }
    }
    assert_eq!(watching.len(), 100);

    // Alice registers: exactly the accepted watchers hear it (the answer to a later call comes
    // after every event Kontrol sent before it).
    let alice = kite_for(&s, "math", "alice", None);
    within(
        "alice registers",
        alice.register("http://127.0.0.1:9/alice"),
    )
    .await
    .unwrap();
    let call = raw
        .send(
            "getKites",
            &me,
            &key,
            json!([{"query": {"username": "alice"}}]),
            &[],
        )
        .await;
    raw.answer(call).await;
    let mut heard: Vec<u64> = raw.called.keys().copied().collect();
    heard.sort_unstable();
    assert_eq!(heard, watching);
    // Another connection has a budget of its own.
    let mut other = RawPeer::connect(s.addr).await;
    let (call, _) = other.watch(&me, &key, json!({"username": "alice"})).await;
    assert!(ok(&other.answer(call).await));
    alice.close();
    raw.close().await;
    other.close().await;
}

#[tokio::test]
async fn what_kontrol_holds_for_a_peer_is_bounded_and_returned() {
    let s = kontrol(false, |o| {
        // Long enough for the counts below to be read before the registration goes stale.
        o.registration_ttl = Duration::from_secs(2);
        o.heartbeat_interval = Duration::from_millis(100);
    })
    .await;
    let key = s.kontrol.kite_key_for("mallory").unwrap();
    let me = identity("mallory", "math", "same");
    let mut raw = RawPeer::connect(s.addr).await;
    let call = raw.register(&me, &key).await;
    assert!(ok(&raw.answer(call).await));
    tasks_settle_to(alive_tasks(), "after one").await;
    let base = alive_tasks();
    // The same id again and again on the same connection: one registration, one keep-alive.
    for _ in 0..50 {
        let call = raw.register(&me, &key).await;
        assert!(ok(&raw.answer(call).await));
    }
    for _ in 0..5 {
        let (call, _) = raw.watch(&me, &key, json!({"username": "alice"})).await;
        assert!(ok(&raw.answer(call).await));
    }
    tasks_settle_to(base + 8, "51 registrations of one id").await;
    assert_eq!(raw.heartbeats, 1, "kite.heartbeat requests");
    let stats = s.kontrol.stats();
    assert_eq!(
        (
            stats.registrations,
            stats.users,
            stats.keys,
            stats.connections,
            stats.watchers
        ),
        (1, 1, 1, 1, 5)
    );
    // The connection ends and nobody heartbeats: everything goes.
    raw.close().await;
    within("the ledger empties", async {
        while s.kontrol.stats() != kontrol::server::KontrolStats::default() {
            // Going stale announces nothing: poll, bounded.
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await;
}

#[tokio::test]
async fn a_watch_is_cancelled_by_its_own_connection_only() {
    let s = kontrol(false, |_| {}).await;
    let key = s.kontrol.kite_key_for("bob").unwrap();
    let me = identity("bob", "watcher", "w");
    let mut raw = RawPeer::connect(s.addr).await;
    let (call, watch) = raw.watch(&me, &key, json!({"username": "alice"})).await;
    let answer = raw.answer(call).await;
    assert!(ok(&answer), "{answer}");
    let id = answer["result"]["watcherID"]
        .as_str()
        .expect("a watcherID")
        .to_owned();

    // Mallory, on her own connection, names bob's watcher: it does not exist for her.
    let mut mallory = RawPeer::connect(s.addr).await;
    let mkey = s.kontrol.kite_key_for("mallory").unwrap();
    let call = mallory
        .send(
            "cancelWatcher",
            &identity("mallory", "x", "m"),
            &mkey,
            json!([id]),
            &[],
        )
        .await;
    let (kind, message) = error_of(&mallory.answer(call).await);
    assert_eq!(
        (kind.as_str(), message.as_str()),
        ("genericError", "watcher does not exist")
    );
    assert_eq!(s.kontrol.stats().watchers, 1);

    // Bob cancels it (once), and hears nothing of alice's registration.
    for (id, want) in [
        (id.as_str(), None),
        (
            id.as_str(),
            Some(("genericError", "watcher does not exist")),
        ),
        ("", Some(("argumentError", "watcherID is not passed"))),
    ] {
        let call = raw.send("cancelWatcher", &me, &key, json!([id]), &[]).await;
        let answer = raw.answer(call).await;
        match want {
            None => assert!(ok(&answer), "{answer}"),
            Some((kind, message)) => {
                assert_eq!(error_of(&answer), (kind.to_owned(), message.to_owned()))
            }
        }
    }
    assert_eq!(s.kontrol.stats().watchers, 0);
    let alice = kite_for(&s, "math", "alice", None);
    within("alice registers", alice.register("http://127.0.0.1:9/a"))
        .await
        .unwrap();
    // The answer to a later call comes after every event Kontrol sent before it.
    let call = raw
        .send(
            "getKites",
            &me,
            &key,
            json!([{"query": {"username": "alice"}}]),
            &[],
        )
        .await;
    raw.answer(call).await;
    assert!(
        !raw.called.contains_key(&watch),
        "a cancelled watch was called"
    );
    mallory.close().await;
    raw.close().await;
}
