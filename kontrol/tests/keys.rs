//! Kontrol's key pairs kept in the storage, over real sockets, on every backend (memory,
//! embedded, and real etcd and PostgreSQL servers started here): Kontrols sharing a backend
//! see the pairs one of them adds and deletes (at once for a kite key of a pair they have not
//! read yet, within the reload interval otherwise); kite keys of a deleted pair are re-keyed by
//! `register` and `getKey` answers the current key; every JWT names its pair in `kid`; only the
//! Kontrol's user may manage the pairs, and the signing pair cannot be deleted.

use std::sync::Arc;
use std::time::{Duration, Instant};

use kite_native::auth::KeyPair;
use kite_native::core::KontrolQuery;
use kite_native::{ErrorKind, Kite, KiteError};
use kite_test_kit::kites::{local_config, serve};
use kite_test_kit::kontrol::backends;
use kite_test_kit::within;
use kontrol::keys::{AddKeyPairArgs, DeleteKeyPairArgs, KeyPairInfo};
use kontrol::server::{Kontrol, KontrolOptions};
use kontrol::storage::{MemoryStorage, Storage};

/// A Kontrol on `storage` with the configured pair `key` (id `default`), reading the pairs
/// again every `reload`, serving on 127.0.0.1.
async fn kontrol(
    key: &KeyPair,
    storage: Arc<dyn Storage>,
    reload: Duration,
) -> (Kontrol, std::net::SocketAddr) {
    let mut o = KontrolOptions::new("kontrol", key.clone(), "");
    o.key_reload_interval = reload;
    let k = Kontrol::new(local_config(), o, storage).unwrap();
    let addr = serve(k.kite()).await;
    (k, addr)
}

/// A kite `name` of `username` holding `kite_key`, whose Kontrol is at `addr`.
fn kite_with(kite_key: &str, addr: std::net::SocketAddr, name: &str) -> Kite {
    let mut cfg = local_config();
    cfg.apply_kite_key(&kite_native::kitekey::parse(kite_key).unwrap());
    cfg.kontrol_url = format!("http://{addr}/kite");
    cfg.environment = "test".into();
    Kite::with_config(name, "1.0.0", cfg).unwrap()
}

/// The `kid` of a JWT's header.
fn kid(jwt: &str) -> String {
    jsonwebtoken::decode_header(jwt)
        .unwrap()
        .kid
        .unwrap_or_default()
}

/// The token a client from `getKites` presents.
fn token_of(client: &kite_native::Client) -> String {
    let auth = client.auth().expect("a token");
    assert_eq!(auth.kind, "token");
    auth.key
}

fn query(name: &str) -> KontrolQuery {
    KontrolQuery {
        username: "alice".into(),
        environment: "test".into(),
        name: name.into(),
        ..Default::default()
    }
}

/// `getToken` for alice's kite `name` (a new one if `force`).
async fn get_token(kite: &Kite, name: &str, force: bool) -> String {
    let mut args = serde_json::to_value(query(name)).unwrap();
    args["force"] = force.into();
    let kontrol = within("kontrol", kite.kontrol()).await.unwrap();
    within("getToken", kontrol.call::<String>("getToken", (args,)))
        .await
        .unwrap()
}

async fn call<T: serde::de::DeserializeOwned>(
    kite: &Kite,
    method: &str,
    arg: serde_json::Value,
) -> Result<T, KiteError> {
    let kontrol = within("kontrol", kite.kontrol()).await.unwrap();
    within(method, kontrol.call::<T>(method, (arg,)))
        .await
        .map_err(KiteError::from)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kontrols_sharing_a_backend_share_key_pairs_on_every_backend() {
    let configured = KeyPair::generate(2048).unwrap();
    for b in backends(3).await {
        let what = b.name;
        // A and B read the pairs only when they meet a key they do not know (the interval is
        // longer than the test); C reads them every 200 ms.
        let long = Duration::from_secs(600);
        let (a, a_addr) = kontrol(&configured, b.storages[0].clone(), long).await;
        let (bk, b_addr) = kontrol(&configured, b.storages[1].clone(), long).await;
        let owner = kite_with(&a.kite_key_for("kontrol").unwrap(), a_addr, "owner");

        // The configured pair, stored once though both Kontrols started with it, signs.
        let listed: Vec<KeyPairInfo> = call(&owner, "listKeyPairs", serde_json::Value::Null)
            .await
            .unwrap();
        assert_eq!(listed.len(), 1, "{what}: {listed:?}");
        assert_eq!(
            (listed[0].id.as_str(), listed[0].current),
            ("default", true),
            "{what}"
        );
        assert_eq!(listed[0].public_key, configured.public_pem.trim(), "{what}");
        // Two kite keys of the configured pair (a kite's id is its key's jti).
        let (old_key, stale_key) = (
            a.kite_key_for("alice").unwrap(),
            a.kite_key_for("alice").unwrap(),
        );
        assert_eq!(kid(&old_key), "default", "{what}");
        // A kite registered with the configured pair, and its tokens.
        let early = kite_with(&old_key, b_addr, &format!("early-{what}"));
        within("register early", early.register("http://127.0.0.1:9/early"))
            .await
            .unwrap();
        let finder = kite_with(&bk.kite_key_for("carol").unwrap(), b_addr, "finder");
        let found = within(
            "getKites",
            finder.get_kites(&query(&format!("early-{what}"))),
        )
        .await
        .unwrap();
        assert_eq!(found.len(), 1, "{what}");
        let raw = get_token(&finder, &format!("early-{what}"), false).await;
        assert_eq!(kid(&raw), "default", "{what}");

        // A new pair, added through A to sign.
        let new_id = format!("second-{what}");
        let added: KeyPairInfo = call(
            &owner,
            "addKeyPair",
            serde_json::to_value({
                let mut args = AddKeyPairArgs::generated(true);
                args.id = Some(new_id.clone());
                args
            })
            .unwrap(),
        )
        .await
        .unwrap();
        assert!(added.current && added.signing, "{what}: {added:?}");
        assert!(added.public_key.contains("BEGIN PUBLIC KEY"), "{what}");
        let new_key = a.kite_key_for("alice").unwrap();
        assert_eq!(kid(&new_key), new_id, "{what}: A signs with it at once");
        let claims = kite_native::kitekey::parse(&new_key).unwrap().claims;
        assert_eq!(claims.kontrol_key, added.public_key, "{what}");

        // B has not read it, yet accepts a kite key of it (reading the pairs first), and the
        // kite's tokens are signed by it.
        let later = kite_with(&new_key, b_addr, &format!("later-{what}"));
        let result = within("register later", later.register("http://127.0.0.1:9/later"))
            .await
            .unwrap();
        assert!(
            result.kite_key.is_empty(),
            "{what}: a live pair's key is kept"
        );
        let found = within(
            "getKites",
            finder.get_kites(&query(&format!("later-{what}"))),
        )
        .await
        .unwrap();
        assert_eq!(found.len(), 1, "{what}");
        assert_eq!(kid(&token_of(&found[0])), new_id, "{what}");
        // B signs with the new pair now too.
        assert_eq!(kid(&bk.kite_key_for("x").unwrap()), new_id, "{what}");
        // The early kite registered with the configured pair: its tokens still come from it.
        let raw = get_token(&finder, &format!("early-{what}"), true).await;
        assert_eq!(
            kid(&raw),
            "default",
            "{what}: Go's rule, the kite's own pair"
        );

        // C reads the pairs every 200 ms; A deletes the configured pair.
        let (c, c_addr) = kontrol(
            &configured,
            b.storages[2].clone(),
            Duration::from_millis(200),
        )
        .await;
        let deleted: KeyPairInfo = call(
            &owner,
            "deleteKeyPair",
            serde_json::to_value(DeleteKeyPairArgs::new("default")).unwrap(),
        )
        .await
        .unwrap();
        assert!(deleted.deleted_ms.is_some() && !deleted.current, "{what}");
        let until = Instant::now() + Duration::from_secs(5);
        loop {
            let pairs = c.key_pairs().await;
            if pairs
                .iter()
                .any(|p| p.id == "default" && p.deleted_ms.is_some())
            {
                break;
            }
            assert!(Instant::now() < until, "{what}: C never saw the delete");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        // A kite key of the deleted pair: re-keyed by C with the current pair.
        let stale = kite_with(&stale_key, c_addr, &format!("stale-{what}"));
        let key = within("getKey", stale.get_key()).await.unwrap();
        assert_eq!(
            key, added.public_key,
            "{what}: getKey answers the current key"
        );
        let result = within("register stale", stale.register("http://127.0.0.1:9/stale"))
            .await
            .unwrap();
        assert_eq!(result.public_key, added.public_key, "{what}");
        assert_eq!(kid(&result.kite_key), new_id, "{what}");
        let rekeyed = kite_native::kitekey::parse(&result.kite_key)
            .unwrap()
            .claims;
        let old_claims = kite_native::kitekey::parse(&stale_key).unwrap().claims;
        assert_eq!(rekeyed.kontrol_key, added.public_key, "{what}");
        assert_eq!(
            (rekeyed.sub.as_str(), rekeyed.jti.as_str()),
            (old_claims.sub.as_str(), old_claims.jti.as_str()),
            "{what}: the same claims"
        );
        // A kite key of a live pair keeps its key on getKey.
        assert_eq!(
            within("getKey", later.get_key()).await.unwrap(),
            added.public_key,
            "{what}"
        );
        // The early kite's pair is gone: its tokens come from the current pair now.
        let c_finder = kite_with(&c.kite_key_for("carol").unwrap(), c_addr, "c-finder");
        let found = within(
            "getKites",
            c_finder.get_kites(&query(&format!("early-{what}"))),
        )
        .await
        .unwrap();
        assert_eq!(found.len(), 1, "{what}");
        assert_eq!(kid(&token_of(&found[0])), new_id, "{what}");

        // The signing pair cannot be deleted; a deleted one not again; no such pair is an
        // error; a pair whose halves do not match is refused.
        for (id, says) in [
            (new_id.as_str(), "signing pair"),
            ("default", "deleted already"),
            ("nope", "no key pair"),
        ] {
            let err = call::<KeyPairInfo>(
                &owner,
                "deleteKeyPair",
                serde_json::to_value(DeleteKeyPairArgs::new(id)).unwrap(),
            )
            .await
            .unwrap_err();
            assert!(err.message.contains(says), "{what}: {id}: {err}");
        }
        let mixed = KeyPair {
            public_pem: configured.public_pem.clone(),
            private_pem: KeyPair::generate(1024).unwrap().private_pem,
        };
        let err = call::<KeyPairInfo>(
            &owner,
            "addKeyPair",
            serde_json::to_value(AddKeyPairArgs::with_pair(Some("mixed"), &mixed, false)).unwrap(),
        )
        .await
        .unwrap_err();
        assert!(err.message.contains("invalid key pair"), "{what}: {err}");

        // A Kontrol started later with the old configured pair signs with the storage's.
        let (d, _) = kontrol(&configured, b.storages[2].clone(), long).await;
        assert_eq!(d.key_pairs().await.len(), 2, "{what}");
        assert_eq!(kid(&d.kite_key_for("x").unwrap()), new_id, "{what}");

        // A pair the backend never held is refused.
        let stranger = KeyPair::generate(1024).unwrap();
        let foreign = stranger
            .sign(&kite_native::core::auth::Claims {
                iss: "kontrol".into(),
                sub: "mallory".into(),
                kontrol_key: stranger.public_pem.trim().into(),
                ..Default::default()
            })
            .unwrap();
        let mallory = kite_with(&foreign, b_addr, "mallory");
        let err = within("register foreign", mallory.register("http://127.0.0.1:9/m"))
            .await
            .unwrap_err();
        assert_eq!(err.kind, ErrorKind::Authentication, "{what}: {err}");
        assert!(err.message.contains("not trusted"), "{what}: {err}");

        for k in [owner, early, later, stale, finder, c_finder, mallory] {
            k.close();
        }
        for k in [a, bk, c, d] {
            k.kite().close();
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_the_kontrols_user_manages_key_pairs() {
    let configured = KeyPair::generate(2048).unwrap();
    let (k, addr) = kontrol(
        &configured,
        Arc::new(MemoryStorage::new()),
        Duration::from_secs(5),
    )
    .await;
    let alice = kite_with(&k.kite_key_for("alice").unwrap(), addr, "alice");
    for (method, arg) in [
        ("listKeyPairs", serde_json::Value::Null),
        (
            "addKeyPair",
            serde_json::to_value(AddKeyPairArgs::generated(true)).unwrap(),
        ),
        (
            "deleteKeyPair",
            serde_json::to_value(DeleteKeyPairArgs::new("default")).unwrap(),
        ),
    ] {
        let err = call::<serde_json::Value>(&alice, method, arg)
            .await
            .unwrap_err();
        assert_eq!(err.kind, ErrorKind::Authentication, "{method}: {err}");
        assert!(err.message.contains("Kontrol's user"), "{method}: {err}");
    }
    // Nothing changed.
    let pairs = k.key_pairs().await;
    assert_eq!(pairs.len(), 1);
    assert!(pairs[0].current && pairs[0].deleted_ms.is_none());
    alice.close();
    k.kite().close();
}

/// A token of `username` to call the Kontrol (user `kontrol`), signed with `private_pem` and
/// naming `kid` in its header (none if `None`).
fn kontrol_token(private_pem: &str, kid: Option<&str>) -> String {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    let claims = kite_native::core::auth::Claims {
        iss: "kontrol".into(),
        sub: "alice".into(),
        aud: "/kontrol".into(),
        exp: Some(now + 3600),
        iat: Some(now - 5),
        nbf: Some(now - 5),
        jti: uuid::Uuid::new_v4().to_string(),
        ..Default::default()
    };
    match kid {
        Some(kid) => kite_native::auth::sign_with_kid(private_pem, &claims, kid).unwrap(),
        None => kite_native::auth::sign(private_pem, &claims).unwrap(),
    }
}

/// Calls `getKites` on the Kontrol at `addr` presenting `token`: the caller's username, or the
/// refusal.
async fn with_token(addr: std::net::SocketAddr, token: &str) -> Result<(), KiteError> {
    let caller = Kite::with_config("caller", "1.0.0", local_config()).unwrap();
    let client = caller.new_client(&format!("http://{addr}/kite"));
    client.set_auth(Some(kite_native::core::Auth::new("token", token)));
    within("dial", client.dial()).await.unwrap();
    let query = serde_json::json!({"query": {"username": "alice", "name": "nothing"}});
    let answer = within(
        "getKites",
        client.call::<serde_json::Value>("getKites", (query,)),
    )
    .await
    .map(|_| ())
    .map_err(KiteError::from);
    client.close();
    caller.close();
    answer
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_to_kontrol_are_checked_with_the_pair_their_kid_names_on_every_backend() {
    let configured = KeyPair::generate(2048).unwrap();
    let second = KeyPair::generate(2048).unwrap();
    let stranger = KeyPair::generate(1024).unwrap();
    for b in backends(2).await {
        let what = b.name;
        // Neither Kontrol reads the pairs on its own during the test.
        let long = Duration::from_secs(600);
        let (a, a_addr) = kontrol(&configured, b.storages[0].clone(), long).await;
        let (bk, b_addr) = kontrol(&configured, b.storages[1].clone(), long).await;
        // Both know the configured pair (stored by whichever started first).
        assert_eq!(a.key_pairs().await.len(), 1, "{what}");
        assert_eq!(bk.key_pairs().await.len(), 1, "{what}");
        let default = kontrol_token(&configured.private_pem, Some("default"));
        for addr in [a_addr, b_addr] {
            with_token(addr, &default).await.unwrap();
        }

        // A second pair, added through A only: B has not read it.
        let id = format!("second-{what}");
        a.add_key_pair(AddKeyPairArgs::with_pair(Some(&id), &second, true))
            .await
            .unwrap();
        let by_second = kontrol_token(&second.private_pem, Some(&id));
        with_token(a_addr, &by_second)
            .await
            .unwrap_or_else(|e| panic!("{what}: A refused its own pair's token: {e}"));
        with_token(b_addr, &by_second)
            .await
            .unwrap_or_else(|e| panic!("{what}: B refused a pair it had not read yet: {e}"));
        // A token without a kid (Go Kontrol signs none) is checked against the live pairs.
        for addr in [a_addr, b_addr] {
            with_token(addr, &kontrol_token(&second.private_pem, None))
                .await
                .unwrap_or_else(|e| panic!("{what}: no kid: {e}"));
        }
        // The configured pair is still live, and still accepted.
        for addr in [a_addr, b_addr] {
            with_token(addr, &default).await.unwrap();
        }

        // Signatures that are not the named pair's, or of no pair at all: Go's `token is
        // expired`, which makes a client fetch a new token.
        for (token, case) in [
            (
                kontrol_token(&stranger.private_pem, Some(&id)),
                "another key under a live pair's kid",
            ),
            (
                kontrol_token(&configured.private_pem, Some(&id)),
                "a live pair's key under another live pair's kid",
            ),
            (
                kontrol_token(&stranger.private_pem, Some("nope")),
                "an unknown kid",
            ),
            (kontrol_token(&stranger.private_pem, None), "no kid"),
        ] {
            for addr in [a_addr, b_addr] {
                let err = with_token(addr, &token).await.unwrap_err();
                assert_eq!(err.kind, ErrorKind::Authentication, "{what}: {case}: {err}");
                assert_eq!(err.message, "token: token is expired", "{what}: {case}");
            }
        }

        // The configured pair deleted (through A; B reads it when asked): its tokens are
        // refused as expired, the live pair's still pass.
        a.delete_key_pair("default").await.unwrap();
        bk.reload_key_pairs().await.unwrap();
        for addr in [a_addr, b_addr] {
            let err = with_token(addr, &default).await.unwrap_err();
            assert_eq!(err.message, "token: token is expired", "{what}: deleted");
            let err = with_token(addr, &kontrol_token(&configured.private_pem, None))
                .await
                .unwrap_err();
            assert_eq!(
                err.message, "token: token is expired",
                "{what}: deleted, no kid"
            );
            with_token(addr, &by_second).await.unwrap();
        }
        for k in [a, bk] {
            k.kite().close();
        }
    }
}
