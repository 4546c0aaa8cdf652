//! The introduction's discovery example end to end on 127.0.0.1: a Kontrol on the embedded
//! store, `first` registering itself with a kite key, `second` finding it with `get_kites` and
//! calling `square` with the token Kontrol gave it; then `first` going away.

use std::sync::Arc;
use std::time::Duration;

use kite_native::Kite;
use kite_native::auth::KeyPair;
use kite_native::core::KontrolQuery;
use kite_test_kit::kites::{add_square, local_config, serve as start};
use kite_test_kit::within;
use kontrol::server::{Kontrol, KontrolOptions};
use kontrol::storage::{EmbeddedStorage, Storage};

struct Setup {
    kontrol: Kontrol,
    url: String,
    dir: std::path::PathBuf,
}

async fn kontrol(options: impl Fn(&mut KontrolOptions)) -> Setup {
    let dir = std::env::temp_dir().join(format!("kontrol-e2e-{}", uuid::Uuid::new_v4()));
    let storage: Arc<dyn Storage> =
        Arc::new(EmbeddedStorage::open(dir.join("kontrol.db")).unwrap());
    // A fixed port is not needed: the Kontrol URL goes into kite keys after it listens.
    let key = KeyPair::generate(2048).unwrap();
    let mut opts = KontrolOptions::new("kontrol", key, "");
    options(&mut opts);
    let k = Kontrol::new(local_config(), opts, storage.clone()).unwrap();
    let addr = start(k.kite()).await;
    let url = format!("http://{addr}/kite");
    Setup {
        kontrol: k,
        url,
        dir,
    }
}

/// A kite of `username` with a kite key from `kontrol`, configured as `Config::get` would from
/// its kite.key.
fn kite_for(s: &Setup, name: &str, username: &str) -> Kite {
    let key = s.kontrol.kite_key_for(username).unwrap();
    let mut cfg = local_config();
    cfg.apply_kite_key(&kite_native::kitekey::parse(&key).unwrap());
    cfg.kontrol_url.clone_from(&s.url);
    cfg.environment = "test".into();
    Kite::with_config(name, "1.0.0", cfg).unwrap()
}

#[tokio::test]
async fn first_registers_second_finds_it_and_calls_square() {
    let s = kontrol(|_| {}).await;
    let first = kite_for(&s, "first", "alice");
    add_square(&first);
    let addr = start(&first).await;
    let result = within("register", first.register(&format!("http://{addr}/kite")))
        .await
        .unwrap();
    assert_eq!(result.url, format!("http://{addr}/kite"));

    let second = kite_for(&s, "second", "alice");
    let query = KontrolQuery {
        username: "alice".into(),
        environment: "test".into(),
        name: "first".into(),
        ..Default::default()
    };
    let mut found = within("getKites", second.get_kites(&query)).await.unwrap();
    assert_eq!(found.len(), 1);
    let first_client = found.remove(0);
    assert_eq!(first_client.remote().name, "first");
    within("dial first", first_client.dial()).await.unwrap();
    let n: f64 = within("square", first_client.call("square", (4,)))
        .await
        .unwrap();
    assert_eq!(n, 16.0);

    // A query of another user, or of a kite nobody registered, finds nothing; a broken query
    // is an argument error.
    for q in [
        KontrolQuery {
            username: "bob".into(),
            ..Default::default()
        },
        KontrolQuery {
            username: "alice".into(),
            environment: "test".into(),
            name: "db".into(),
            ..Default::default()
        },
    ] {
        assert!(
            within("getKites", second.get_kites(&q))
                .await
                .unwrap()
                .is_empty()
        );
    }
    // Go's own client asks for username and name only: the environment is a wildcard, and
    // the token's audience says so, as Go's does.
    let go_style = KontrolQuery {
        username: "alice".into(),
        name: "first".into(),
        ..Default::default()
    };
    let found = within("go-style query", second.get_kites(&go_style))
        .await
        .unwrap();
    assert_eq!(found.len(), 1);
    within("dial", found[0].dial()).await.unwrap();
    let n: f64 = within("square", found[0].call("square", (5,)))
        .await
        .unwrap();
    assert_eq!(n, 25.0);
    found[0].close();
    let bad = KontrolQuery {
        environment: "test".into(),
        ..Default::default()
    };
    let err = within("bad query", second.get_kites(&bad))
        .await
        .unwrap_err();
    assert!(err.message.contains("Empty username field"), "{err}");

    // A token for first, by id: its audience is first's own, not the root.
    let token = within(
        "getToken",
        second.get_token(&KontrolQuery {
            id: first.identity().id.clone(),
            ..Default::default()
        }),
    )
    .await
    .unwrap();
    let claims =
        jsonwebtoken::dangerous::insecure_decode::<kite_native::core::auth::Claims>(&token)
            .unwrap()
            .claims;
    assert_eq!(claims.aud, "/alice/test/first");
    assert_eq!(claims.sub, "alice");
    let key = within("getKey", second.get_key()).await.unwrap();
    assert_eq!(key, s.kontrol.kite().kontrol_key());

    first_client.close();
    first.close();
    second.close();
    s.kontrol.kite().close();
    let _ = std::fs::remove_dir_all(&s.dir);
}

// Two workers, and a TTL ten heartbeats long: on a loaded machine one thread running Kontrol,
// both kites and the test could fall a whole TTL behind and lose a live kite.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kite_that_stops_heartbeating_disappears() {
    let ttl = Duration::from_secs(2);
    let s = kontrol(|o| {
        o.registration_ttl = ttl;
        o.heartbeat_interval = ttl / 10;
    })
    .await;
    // `second` watches before `first` exists.
    let second = kite_for(&s, "second", "alice");
    let query = KontrolQuery {
        username: "alice".into(),
        environment: "test".into(),
        name: "first".into(),
        ..Default::default()
    };
    let (events_tx, mut events) = tokio::sync::mpsc::unbounded_channel();
    let initial = within(
        "watch",
        second.watch_kites(&query, move |e| {
            let _ = events_tx.send(e);
        }),
    )
    .await
    .unwrap();
    assert!(initial.is_empty());

    let first = kite_for(&s, "first", "alice");
    let addr = start(&first).await;
    within("register", first.register(&format!("http://{addr}/kite")))
        .await
        .unwrap();
    let registered = within("REGISTER event", events.recv()).await.unwrap();
    assert_eq!(registered.action, "REGISTER");
    assert_eq!(registered.kite.name, "first");
    assert_eq!(registered.url, format!("http://{addr}/kite"));
    assert!(!registered.token.is_empty());
    // Heartbeats keep it registered well past its TTL.
    let alive_until = std::time::Instant::now() + ttl * 3 / 2;
    while std::time::Instant::now() < alive_until {
        assert_eq!(
            within("getKites", second.get_kites(&query))
                .await
                .unwrap()
                .len(),
            1
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // Gone: no more heartbeats, and it expires; the watcher hears it.
    first.close();
    let gone = within("DEREGISTER event", events.recv()).await.unwrap();
    assert_eq!(
        (gone.action.as_str(), gone.kite.name.as_str()),
        ("DEREGISTER", "first")
    );
    within("expiry", async {
        while !second.get_kites(&query).await.unwrap().is_empty() {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await;
    second.close();
    s.kontrol.kite().close();
    let _ = std::fs::remove_dir_all(&s.dir);
}

#[tokio::test]
async fn kites_register_over_http_and_bad_register_input_gets_clear_errors() {
    let s = kontrol(|o| o.heartbeat_interval = Duration::from_secs(1)).await;
    let base = s.url.trim_end_matches("/kite").to_owned();
    let first = kite_for(&s, "first", "alice");
    add_square(&first);
    let addr = start(&first).await;
    let result = within(
        "HTTP register",
        first.register_http(&format!("http://{addr}/kite")),
    )
    .await
    .unwrap();
    assert_eq!(result.heartbeat_interval, 1);
    let second = kite_for(&s, "second", "alice");
    let query = KontrolQuery {
        username: "alice".into(),
        environment: "test".into(),
        name: "first".into(),
        ..Default::default()
    };
    let found = within("getKites", second.get_kites(&query)).await.unwrap();
    assert_eq!(found.len(), 1);
    within("dial", found[0].dial()).await.unwrap();
    let n: f64 = within("square", found[0].call("square", (3,)))
        .await
        .unwrap();
    assert_eq!(n, 9.0);

    let http = reqwest::Client::new();
    let id = first.identity().id.clone();
    let hb = |id: &str| {
        let http = http.clone();
        let url = format!("{base}/heartbeat?id={id}");
        async move { http.get(url).send().await.unwrap().text().await.unwrap() }
    };
    assert_eq!(hb(&id).await, "pong");
    assert_eq!(hb("unknown-id").await, "registeragain");
    let empty = http.get(format!("{base}/heartbeat")).send().await.unwrap();
    assert_eq!(empty.status(), 400);
    assert!(empty.text().await.unwrap().contains("query id is empty"));

    let key = s.kontrol.kite_key_for("alice").unwrap();
    let kite = serde_json::to_value(first.identity()).unwrap();
    for (body, status, message) in [
        ("{not json".to_owned(), 400, "wrong register input"),
        (serde_json::json!({"url": "http://x:1/kite", "kite": kite}).to_string(), 400, "auth is missing"),
        (serde_json::json!({"url": "http://x:1/kite", "auth": {"type": "kiteKey", "key": key}}).to_string(), 400, "kite is missing"),
        (serde_json::json!({"url": "", "kite": kite, "auth": {"type": "kiteKey", "key": key}}).to_string(), 400, "empty URL"),
        (serde_json::json!({"url": "http://x:1/kite", "kite": kite, "auth": {"type": "token", "key": key}}).to_string(), 400, "unexpected authentication type: token"),
        (serde_json::json!({"url": "http://x:1/kite", "kite": kite, "auth": {"type": "kiteKey", "key": "junk"}}).to_string(), 401, "malformed"),
    ] {
        let r = http.post(format!("{base}/register")).body(body.clone()).send().await.unwrap();
        assert_eq!(r.status().as_u16(), status, "{body}");
        let text = r.text().await.unwrap();
        assert!(text.contains(message), "{body}: {text}");
    }
    // Bad input over dnode too: a register without a URL, or with a token.
    let kontrol = within("kontrol", second.kontrol()).await.unwrap();
    let err = within(
        "register",
        kontrol.call::<serde_json::Value>("register", (serde_json::json!({}),)),
    )
    .await
    .unwrap_err();
    assert!(err.to_string().contains("empty url"), "{err}");

    found[0].close();
    first.close();
    second.close();
    s.kontrol.kite().close();
    let _ = std::fs::remove_dir_all(&s.dir);
}

#[tokio::test]
async fn a_kite_key_of_a_retired_pair_is_rekeyed_on_register() {
    // The old Kontrol pair signed alice's kite key; the Kontrol now signs with a new pair.
    let old = KeyPair::generate(2048).unwrap();
    let dir = std::env::temp_dir().join(format!("kontrol-rotate-{}", uuid::Uuid::new_v4()));
    let storage: Arc<dyn Storage> =
        Arc::new(EmbeddedStorage::open(dir.join("kontrol.db")).unwrap());
    let mut opts = KontrolOptions::new("kontrol", KeyPair::generate(2048).unwrap(), "");
    opts.retired_keys = vec![old.public_pem.clone()];
    let k = Kontrol::new(local_config(), opts, storage).unwrap();
    let addr = start(k.kite()).await;
    let url = format!("http://{addr}/kite");
    let old_key = old
        .sign(&kite_native::core::auth::Claims {
            iss: "kontrol".into(),
            sub: "alice".into(),
            jti: "j1".into(),
            kontrol_key: old.public_pem.trim().into(),
            kontrol_url: url.clone(),
            ..Default::default()
        })
        .unwrap();
    let config_for = |key: &str| {
        let mut cfg = local_config();
        cfg.apply_kite_key(&kite_native::kitekey::parse(key).unwrap());
        cfg.environment = "test".into();
        cfg
    };
    let first = Kite::with_config("first", "1.0.0", config_for(&old_key)).unwrap();
    add_square(&first);
    let first_addr = start(&first).await;
    let result = within(
        "register",
        first.register(&format!("http://{first_addr}/kite")),
    )
    .await
    .unwrap();
    // A new kite key, signed by the current pair, and the current public key.
    let current = k.kite().kontrol_key();
    assert_eq!(result.public_key, current);
    let new_key = kite_native::kitekey::parse(&result.kite_key).unwrap();
    assert_eq!(new_key.claims.sub, "alice");
    assert_eq!(new_key.claims.kontrol_key, current);
    // Applied by the kite: it presents the new key and trusts the new Kontrol key.
    assert_eq!(first.kite_key(), result.kite_key);
    assert_eq!(first.kontrol_key(), current);

    // Tokens minted now (by the current pair) are accepted by first.
    let second = Kite::with_config("second", "1.0.0", config_for(&result.kite_key)).unwrap();
    let query = KontrolQuery {
        username: "alice".into(),
        environment: "test".into(),
        name: "first".into(),
        ..Default::default()
    };
    let found = within("getKites", second.get_kites(&query)).await.unwrap();
    within("dial", found[0].dial()).await.unwrap();
    let n: f64 = within("square", found[0].call("square", (6,)))
        .await
        .unwrap();
    assert_eq!(n, 36.0);

    // A key from a pair Kontrol never had is refused.
    let stranger = KeyPair::generate(2048).unwrap();
    let foreign = stranger
        .sign(&kite_native::core::auth::Claims {
            iss: "kontrol".into(),
            sub: "mallory".into(),
            kontrol_key: stranger.public_pem.trim().into(),
            ..Default::default()
        })
        .unwrap();
    let mallory = Kite::with_config("m", "1.0.0", config_for(&foreign)).unwrap();
    let mut cfg = mallory.config().clone();
    cfg.kontrol_url.clone_from(&url);
    let mallory = Kite::with_config("m", "1.0.0", cfg).unwrap();
    let err = within(
        "foreign register",
        mallory.register("http://127.0.0.1:1/kite"),
    )
    .await
    .unwrap_err();
    assert!(err.message.contains("not trusted"), "{err}");

    found[0].close();
    first.close();
    second.close();
    mallory.close();
    k.kite().close();
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn two_kontrols_on_one_storage_serve_one_registry() {
    // Two Kontrol processes share a backend and a key pair (as behind a load balancer).
    let storage: Arc<dyn Storage> = Arc::new(kontrol::storage::MemoryStorage::new());
    let key = KeyPair::generate(2048).unwrap();
    let mut urls = Vec::new();
    let mut kontrols = Vec::new();
    for _ in 0..2 {
        let k = Kontrol::new(
            local_config(),
            KontrolOptions::new("kontrol", key.clone(), ""),
            storage.clone(),
        )
        .unwrap();
        let addr = start(k.kite()).await;
        urls.push(format!("http://{addr}/kite"));
        kontrols.push(k);
    }
    let kite_for_url = |name: &str, url: &str| {
        let key = kontrols[0].kite_key_for("alice").unwrap();
        let mut cfg = local_config();
        cfg.apply_kite_key(&kite_native::kitekey::parse(&key).unwrap());
        cfg.kontrol_url = url.to_owned();
        cfg.environment = "test".into();
        Kite::with_config(name, "1.0.0", cfg).unwrap()
    };
    // Registered through the first, found and called through the second.
    let first = kite_for_url("first", &urls[0]);
    add_square(&first);
    let addr = start(&first).await;
    within("register", first.register(&format!("http://{addr}/kite")))
        .await
        .unwrap();
    let second = kite_for_url("second", &urls[1]);
    let query = KontrolQuery {
        username: "alice".into(),
        name: "first".into(),
        ..Default::default()
    };
    let found = within("getKites", second.get_kites(&query)).await.unwrap();
    assert_eq!(found.len(), 1);
    within("dial", found[0].dial()).await.unwrap();
    let n: f64 = within("square", found[0].call("square", (7,)))
        .await
        .unwrap();
    assert_eq!(n, 49.0);
    found[0].close();
    first.close();
    second.close();
    for k in kontrols {
        k.kite().close();
    }
}

#[tokio::test]
async fn register_forever_waits_for_a_kontrol_that_is_not_up_yet() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let url = format!("http://127.0.0.1:{port}/kite");
    let key = KeyPair::generate(2048).unwrap();
    let kite_key = key
        .sign(&kite_native::core::auth::Claims {
            iss: "kontrol".into(),
            sub: "alice".into(),
            kontrol_key: key.public_pem.trim().into(),
            kontrol_url: url.clone(),
            ..Default::default()
        })
        .unwrap();
    let mut cfg = local_config();
    cfg.apply_kite_key(&kite_native::kitekey::parse(&kite_key).unwrap());
    let first = Kite::with_config("first", "1.0.0", cfg).unwrap();
    let registering = {
        let first = first.clone();
        tokio::spawn(async move { first.register_forever("http://127.0.0.1:1/kite").await })
    };
    // Kontrol comes up later, on the port the kite key names.
    let mut config = local_config();
    config.port = port;
    let k = Kontrol::new(
        config,
        KontrolOptions::new("kontrol", key, &url),
        Arc::new(kontrol::storage::MemoryStorage::new()),
    )
    .unwrap();
    let kite = k.kite().clone();
    tokio::spawn(async move { kite.run().await.unwrap() });
    let result = within("registered once Kontrol is up", registering)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(result.url, "http://127.0.0.1:1/kite");
    first.close();
    k.kite().close();
}

#[tokio::test]
async fn a_kite_registers_again_when_kontrol_restarts() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let url = format!("http://127.0.0.1:{port}/kite");
    let key = KeyPair::generate(2048).unwrap();
    // A Kontrol on `port` with a registry of its own (a restart that lost everything).
    let kontrol_on_port = |key: KeyPair| {
        let mut config = local_config();
        config.port = port;
        Kontrol::new(
            config,
            KontrolOptions::new("kontrol", key, &url),
            Arc::new(kontrol::storage::MemoryStorage::new()),
        )
        .unwrap()
    };
    let first_kontrol = kontrol_on_port(key.clone());
    start(first_kontrol.kite()).await;
    let kite_key = first_kontrol.kite_key_for("alice").unwrap();
    let mut cfg = local_config();
    cfg.apply_kite_key(&kite_native::kitekey::parse(&kite_key).unwrap());
    let first = Kite::with_config("first", "1.0.0", cfg.clone()).unwrap();
    let addr = start(&first).await;
    within("register", first.register(&format!("http://{addr}/kite")))
        .await
        .unwrap();

    first_kontrol.kite().close();
    // The new Kontrol's registry is empty until `first` comes back by itself.
    let second_kontrol = within("port free again", async {
        loop {
            if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
                break kontrol_on_port(key.clone());
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await;
    start(second_kontrol.kite()).await;
    let second = Kite::with_config("second", "1.0.0", cfg).unwrap();
    let query = KontrolQuery {
        username: "alice".into(),
        name: "first".into(),
        ..Default::default()
    };
    within("registered again", async {
        while second.get_kites(&query).await.unwrap().is_empty() {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await;
    first.close();
    second.close();
    second_kontrol.kite().close();
}
