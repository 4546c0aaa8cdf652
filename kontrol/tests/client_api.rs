//! kite-native's Kontrol client API against a real Kontrol on 127.0.0.1 (kite-native cannot
//! depend on the kontrol crate, so these live here): `on_register`, `get_token_forced`, the
//! Kontrol key renewer and `register_http_forever`.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use kite_native::Kite;
use kite_native::auth::KeyPair;
use kite_native::core::{Auth, KontrolQuery};
use kite_test_kit::kites::{add_square, local_config, serve};
use kite_test_kit::kontrol::TestKontrol;
use kite_test_kit::{free_port, within};
use kontrol::server::{Kontrol, KontrolOptions};
use kontrol::storage::MemoryStorage;

/// The query for alice's kite `name` in environment `test`.
fn query(name: &str) -> KontrolQuery {
    KontrolQuery {
        username: "alice".into(),
        environment: "test".into(),
        name: name.into(),
        ..Default::default()
    }
}

/// The URLs `kite`'s `on_register` hooks hear, in order.
fn record_registrations(kite: &Kite) -> Arc<Mutex<Vec<String>>> {
    let heard = Arc::new(Mutex::new(Vec::new()));
    let h = heard.clone();
    kite.on_register(move |r| h.lock().unwrap().push(r.url.clone()));
    heard
}

/// A Kontrol on `port` signing with `key`, on a registry of its own, not yet serving.
fn kontrol_on(port: u16, key: KeyPair) -> Kontrol {
    let mut config = local_config();
    config.port = port;
    let url = format!("http://127.0.0.1:{port}/kite");
    Kontrol::new(
        config,
        KontrolOptions::new("kontrol", key, &url),
        Arc::new(MemoryStorage::new()),
    )
    .unwrap()
}

#[tokio::test]
async fn on_register_hears_the_first_registration_and_each_one_after_kontrol_restarts() {
    let port = free_port();
    let key = KeyPair::generate(2048).unwrap();
    let first_kontrol = kontrol_on(port, key.clone());
    serve(first_kontrol.kite()).await;
    let kite_key = first_kontrol.kite_key_for("alice").unwrap();
    let mut cfg = local_config();
    cfg.apply_kite_key(&kite_native::kitekey::parse(&kite_key).unwrap());
    let first = Kite::with_config("first", "1.0.0", cfg).unwrap();
    let heard = record_registrations(&first);
    // A panicking hook is caught: the others still run, the registration still counts.
    first.on_register(|_| panic!("a hook that panics"));
    let url = format!("http://{}/kite", serve(&first).await);
    let result = within("register", first.register(&url)).await.unwrap();
    assert_eq!(result.url, url);
    assert_eq!(heard.lock().unwrap().as_slice(), std::slice::from_ref(&url));

    first_kontrol.kite().close();
    let second_kontrol = within("port free again", async {
        loop {
            if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
                break kontrol_on(port, key.clone());
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await;
    serve(second_kontrol.kite()).await;
    within("registered again, and heard", async {
        while heard.lock().unwrap().len() < 2 {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await;
    assert_eq!(*heard.lock().unwrap(), [url.clone(), url]);
    first.close();
    second_kontrol.kite().close();
}

#[tokio::test]
async fn get_token_forced_is_always_a_new_token_that_works() {
    let k = TestKontrol::in_memory(local_config(), KeyPair::generate(2048).unwrap()).await;
    let first = k.kite_for(local_config(), "first", "alice");
    add_square(&first);
    let url = format!("http://{}/kite", serve(&first).await);
    within("register", first.register(&url)).await.unwrap();
    let second = k.kite_for(local_config(), "second", "alice");
    let by_id = KontrolQuery {
        id: first.identity().id.clone(),
        ..Default::default()
    };

    let kept = within("getToken", second.get_token(&by_id)).await.unwrap();
    let again = within("getToken", second.get_token(&by_id)).await.unwrap();
    assert_eq!(kept, again, "Kontrol hands out the token it kept");
    let forced = within("getToken force", second.get_token_forced(&by_id))
        .await
        .unwrap();
    assert_ne!(forced, kept);
    let forced_again = within("getToken force", second.get_token_forced(&by_id))
        .await
        .unwrap();
    assert_ne!(forced_again, forced);
    // The new one is what Kontrol keeps from then on.
    let after = within("getToken", second.get_token(&by_id)).await.unwrap();
    assert_eq!(after, forced_again);

    let client = second.new_client(&url);
    client.set_auth(Some(Auth::new("token", forced)));
    within("dial", client.dial()).await.unwrap();
    let n: f64 = within("square", client.call("square", (6,))).await.unwrap();
    assert_eq!(n, 36.0);
    client.close();
    first.close();
    second.close();
    k.kontrol.kite().close();
}

#[tokio::test]
async fn the_key_renewer_installs_the_key_kontrol_signs_with() {
    let k = TestKontrol::in_memory(local_config(), KeyPair::generate(2048).unwrap()).await;
    let current = k.kontrol.kite().kontrol_key();
    // `first` trusts a key Kontrol has rotated away from (a kite.key of before the rotation).
    let old = KeyPair::generate(2048).unwrap();
    let mut cfg = k.config_for(local_config(), "alice");
    cfg.kontrol_key.clone_from(&old.public_pem);
    let first = Kite::with_config("first", "1.0.0", cfg).unwrap();
    assert_eq!(first.kontrol_key(), old.public_pem.trim());
    add_square(&first);
    let url = format!("http://{}/kite", serve(&first).await);
    within("register", first.register(&url)).await.unwrap();

    // Tokens Kontrol signs now are refused by `first` until it renews the key.
    let second = k.kite_for(local_config(), "second", "alice");
    let caller = within("getKites", second.get_kites(&query("first")))
        .await
        .unwrap()
        .remove(0);
    within("dial", caller.dial()).await.unwrap();
    let err = within(
        "square with the old key",
        caller.call::<f64>("square", (2,)),
    )
    .await
    .unwrap_err();
    assert!(err.to_string().contains("token"), "{err}");

    let renewer = first.renew_kontrol_key_every(Duration::from_millis(100));
    within("key renewed", async {
        while first.kontrol_key() != current {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    let n: f64 = within("square with the new key", caller.call("square", (3,)))
        .await
        .unwrap();
    assert_eq!(n, 9.0);
    assert!(!renewer.is_finished());

    // The renewal ends with the kite.
    first.close();
    within("renewer stopped", async {
        while !renewer.is_finished() {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    caller.close();
    second.close();
    k.kontrol.kite().close();
}

#[tokio::test]
async fn register_http_forever_waits_for_a_kontrol_that_is_not_up_yet() {
    let port = free_port();
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
    cfg.environment = "test".into();
    let first = Kite::with_config("first", "1.0.0", cfg.clone()).unwrap();
    add_square(&first);
    let heard = record_registrations(&first);
    let first_url = format!("http://{}/kite", serve(&first).await);
    let registering = {
        let (first, first_url) = (first.clone(), first_url.clone());
        tokio::spawn(async move { first.register_http_forever(&first_url).await })
    };
    // The first attempt fails: nothing listens yet.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!registering.is_finished());
    assert!(heard.lock().unwrap().is_empty());

    let mut config = local_config();
    config.port = port;
    let kontrol = Kontrol::new(
        config,
        KontrolOptions::new("kontrol", key, &url),
        Arc::new(MemoryStorage::new()),
    )
    .unwrap();
    let kite = kontrol.kite().clone();
    tokio::spawn(async move { kite.run().await.unwrap() });
    let result = within("registered once Kontrol is up", registering)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(result.url, first_url);
    assert_eq!(*heard.lock().unwrap(), [first_url]);

    let second = Kite::with_config("second", "1.0.0", cfg).unwrap();
    let found = within("getKites", second.get_kites(&query("first")))
        .await
        .unwrap();
    assert_eq!(found.len(), 1);
    within("dial", found[0].dial()).await.unwrap();
    let n: f64 = within("square", found[0].call("square", (7,)))
        .await
        .unwrap();
    assert_eq!(n, 49.0);

    // Without a Kontrol URL there is nothing to wait for.
    let lonely = Kite::with_config("lonely", "1.0.0", local_config()).unwrap();
    let err = within(
        "no Kontrol",
        lonely.register_http_forever("http://x:1/kite"),
    )
    .await
    .unwrap_err();
    assert!(err.to_string().contains("no Kontrol URL"), "{err}");

    found[0].close();
    first.close();
    second.close();
    kontrol.kite().close();
}
