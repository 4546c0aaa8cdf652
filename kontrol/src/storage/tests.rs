//! The same behaviour asked of every backend.

use std::time::Duration;

use kite_native::core::{Kite, KontrolQuery};

use super::*;
use crate::query::Matcher;

pub(crate) fn kite(path: &str) -> Kite {
    path.parse().unwrap()
}

/// The query written as a kite path (`/alice/prod/math`; empty fields are wildcards).
pub(crate) fn matcher(path: &str) -> Matcher {
    Matcher::new(&kite(path).query()).unwrap()
}

pub(crate) fn ids(mut regs: Vec<Registration>) -> Vec<String> {
    regs.sort_by(|a, b| a.kite.id.cmp(&b.kite.id));
    regs.into_iter().map(|r| r.kite.id).collect()
}

/// Registers, finds, refreshes, expires and deletes through `s`, and keeps key pairs.
pub(crate) async fn behaves(s: &dyn Storage) {
    registrations(s).await;
    key_pairs(s).await;
}

/// [`behaves`] without the key pairs: registrations only (every id and key id as given).
pub(crate) async fn registrations(s: &dyn Storage) {
    let hour = Duration::from_secs(3600);
    for path in [
        "/alice/prod/math/1.0.0/eu/h1/k1",
        "/alice/prod/math/1.2.3/eu/h2/k2",
        "/alice/prod/math/2.0.0/us/h3/k3",
        "/alice/dev/math/1.2.3/eu/h1/k4",
        "/bob/prod/math/1.2.3/eu/h1/k5",
    ] {
        s.upsert(&Registration::new(
            kite(path),
            &format!("http://{path}"),
            "key1",
            hour,
        ))
        .await
        .unwrap();
    }
    assert_eq!(
        ids(s.get(&matcher("/alice")).await.unwrap()),
        ["k1", "k2", "k3", "k4"]
    );
    assert_eq!(
        ids(s.get(&matcher("/alice/prod/math")).await.unwrap()),
        ["k1", "k2", "k3"]
    );
    assert_eq!(
        ids(s.get(&matcher("/alice/prod/math/~> 1.1")).await.unwrap()),
        ["k2"]
    );
    assert_eq!(
        ids(s
            .get(&matcher("/alice/prod/math/>= 1.0, < 2/eu"))
            .await
            .unwrap()),
        ["k1", "k2"]
    );
    assert_eq!(
        ids(s
            .get(&matcher("/alice/prod/math/2.0.0/us/h3/k3"))
            .await
            .unwrap()),
        ["k3"]
    );
    assert!(s.get(&matcher("/carol")).await.unwrap().is_empty());
    gaps(s).await;
    let by_id = Matcher::new(&KontrolQuery {
        id: "k5".into(),
        ..Default::default()
    })
    .unwrap();
    let found = s.get(&by_id).await.unwrap();
    assert_eq!(ids(found.clone()), ["k5"]);
    assert_eq!(found[0].url, "http:///bob/prod/math/1.2.3/eu/h1/k5");

    // Re-registering replaces (a new URL); ids are unique.
    s.upsert(&Registration::new(
        kite("/bob/prod/math/1.2.3/eu/h1/k5"),
        "http://new",
        "key2",
        hour,
    ))
    .await
    .unwrap();
    let found = s.get(&by_id).await.unwrap();
    assert_eq!(
        (found.len(), found[0].url.as_str(), found[0].key_id.as_str()),
        (1, "http://new", "key2")
    );

    // Expiry: an expired registration is invisible, cannot be refreshed, and is purged.
    let mut gone = Registration::new(
        kite("/alice/prod/db/1.0.0/eu/h1/k6"),
        "http://db",
        "key1",
        hour,
    );
    gone.expires_at_ms = now_ms().saturating_sub(1);
    s.upsert(&gone).await.unwrap();
    assert!(s.get(&matcher("/alice/prod/db")).await.unwrap().is_empty());
    assert!(!s.refresh("k6", "alice", now_ms() + 60_000).await.unwrap());
    assert!(s.purge_expired().await.unwrap() >= 1);

    // Refresh pushes the expiry of a live one.
    let later = now_ms() + 7_200_000;
    assert!(s.refresh("k1", "alice", later).await.unwrap());
    let k1 = s
        .get(&matcher("/alice/prod/math/1.0.0/eu/h1/k1"))
        .await
        .unwrap();
    assert_eq!(k1[0].expires_at_ms, later);
    assert!(!s.refresh("nope", "alice", later).await.unwrap());

    assert!(s.delete("k1", "alice").await.unwrap());
    assert!(!s.delete("k1", "alice").await.unwrap());
    assert_eq!(
        ids(s.get(&matcher("/alice/prod/math")).await.unwrap()),
        ["k2", "k3"]
    );

    written(s).await;
    owned(s).await;
}

/// A key record of made-up PEMs (the storage never parses them).
fn key_record(id: &str, created_ms: u64, signing: bool) -> KeyRecord {
    KeyRecord {
        id: id.to_owned(),
        public_pem: format!("-----BEGIN PUBLIC KEY-----\n{id}\n-----END PUBLIC KEY-----"),
        private_pem: format!("-----BEGIN PRIVATE KEY-----\n{id}\n-----END PRIVATE KEY-----"),
        created_ms,
        deleted_ms: None,
        signing,
    }
}

fn sorted_keys(mut keys: Vec<KeyRecord>) -> Vec<KeyRecord> {
    keys.sort_by(|a, b| a.id.cmp(&b.id));
    keys
}

/// Key pairs: added once per id and per public key, listed with every field as written,
/// soft-deleted once (the record stays, with its deletion time), and nothing else changes.
async fn key_pairs(s: &dyn Storage) {
    let created = now_ms() - 1_000;
    let first = key_record("pair-1", created, true);
    let second = key_record("pair/2", created + 1, false);
    assert!(s.keys().await.unwrap().is_empty(), "no pairs to begin with");
    assert!(s.add_key(&first).await.unwrap());
    assert!(s.add_key(&second).await.unwrap());
    assert_eq!(
        sorted_keys(s.keys().await.unwrap()),
        [first.clone(), second.clone()]
    );
    // The id or the public key taken: refused, nothing changed.
    let same_id = KeyRecord {
        public_pem: "another public".into(),
        private_pem: "another private".into(),
        ..first.clone()
    };
    assert!(!s.add_key(&same_id).await.unwrap());
    let same_public = KeyRecord {
        id: "pair-3".into(),
        private_pem: "another private".into(),
        ..first.clone()
    };
    assert!(!s.add_key(&same_public).await.unwrap());
    assert_eq!(s.keys().await.unwrap().len(), 2);

    // A soft delete: the record stays, deleted now (not before it was created).
    let before = now_ms();
    assert!(s.delete_key("pair-1").await.unwrap());
    let after = now_ms();
    let keys = sorted_keys(s.keys().await.unwrap());
    assert_eq!(keys.len(), 2);
    let deleted = keys[0].deleted_ms.expect("pair-1 is marked deleted");
    assert!(
        (before..=after).contains(&deleted),
        "{before} <= {deleted} <= {after}"
    );
    assert!(!keys[0].live() && keys[1].live());
    assert_eq!(
        KeyRecord {
            deleted_ms: None,
            ..keys[0].clone()
        },
        first
    );
    assert_eq!(keys[1], second);
    // Deleted already, or never there: nothing to do.
    assert!(!s.delete_key("pair-1").await.unwrap());
    assert!(!s.delete_key("nope").await.unwrap());
    // A deleted pair's id and public key stay taken.
    assert!(!s.add_key(&first).await.unwrap());
    // Registrations are not key pairs, and the other way round.
    assert!(s.get(&matcher("/pair-1")).await.unwrap().is_empty());
    // A record may be stored deleted, as given.
    let old = KeyRecord {
        deleted_ms: Some(created + 5),
        ..key_record("pair-0", created, true)
    };
    assert!(s.add_key(&old).await.unwrap());
    assert!(sorted_keys(s.keys().await.unwrap()).contains(&old));
}

/// `refresh_many` and `delete_written`, what Kontrol's heartbeats and deregistrations use:
/// one result per item, and a delete that leaves a registration written since alone. Leaves
/// nothing behind.
async fn written(s: &dyn Storage) {
    let hour = Duration::from_secs(3600);
    let reg = |path: &str| Registration::new(kite(path), "http://w", "key1", hour);
    let (a, b) = (
        reg("/alice/prod/w/1.0.0/eu/h1/w1"),
        reg("/alice/prod/w/1.0.0/eu/h1/w2"),
    );
    s.upsert(&a).await.unwrap();
    s.upsert(&b).await.unwrap();
    s.upsert(&reg("/bob/prod/w/1.0.0/eu/h1/w3")).await.unwrap();
    let later = now_ms() + 7_200_000;
    let items: Vec<(String, String)> = [
        ("w1", "alice"),
        ("nope", "alice"),
        ("w3", "alice"),
        ("w2", "alice"),
    ]
    .iter()
    .map(|(i, o)| ((*i).to_owned(), (*o).to_owned()))
    .collect();
    let out = s.refresh_many(&items, later).await;
    assert_eq!(out.len(), 4);
    assert!(matches!(out[0], Ok(true)), "{:?}", out[0]);
    assert!(matches!(out[1], Ok(false)), "{:?}", out[1]);
    assert!(
        matches!(&out[2], Err(StorageError::OwnedByAnother { id }) if id == "w3"),
        "{:?}",
        out[2]
    );
    assert!(matches!(out[3], Ok(true)), "{:?}", out[3]);
    assert!(s.refresh_many(&[], later).await.is_empty());
    let w = |id: &'static str| async move { s.get(&by_id(id)).await.unwrap() };
    assert_eq!(w("w1").await[0].expires_at_ms, later);
    assert_ne!(
        w("w3").await[0].expires_at_ms,
        later,
        "bob's is not alice's to refresh"
    );

    // Deleted only as last written: not with the expiry before the refresh, not by another
    // user, yes with the expiry now stored.
    assert!(
        !s.delete_written("w1", "alice", a.expires_at_ms)
            .await
            .unwrap()
    );
    assert!(!s.delete_written("w1", "bob", later).await.unwrap());
    assert!(!s.delete_written("nope", "alice", later).await.unwrap());
    assert_eq!(w("w1").await.len(), 1);
    assert!(s.delete_written("w1", "alice", later).await.unwrap());
    assert!(w("w1").await.is_empty());
    assert!(!s.delete_written("w1", "alice", later).await.unwrap());
    assert!(s.delete("w2", "alice").await.unwrap());
    assert!(s.delete("w3", "bob").await.unwrap());
}

/// Queries with empty fields between set ones (Go's clients ask for username and name only),
/// which storages answer through their indexes: the same kites as the rule says, and a kite that
/// moves to another name, host or version is found under the new ones only. Leaves the five
/// kites of [`behaves`] as they were.
async fn gaps(s: &dyn Storage) {
    let hour = Duration::from_secs(3600);
    let found = |q: &'static str| async move { ids(s.get(&matcher(q)).await.unwrap()) };
    assert_eq!(found("/alice//math").await, ["k1", "k2", "k3", "k4"]);
    assert_eq!(found("/alice//math/1.2.3").await, ["k2", "k4"]);
    assert_eq!(found("/alice////eu").await, ["k1", "k2", "k4"]);
    assert_eq!(found("/alice/////h1").await, ["k1", "k4"]);
    assert_eq!(found("/alice//math//eu/h1").await, ["k1", "k4"]);
    assert_eq!(found("/alice///1.2.3").await, ["k2", "k4"]);
    assert_eq!(found("/alice//math/~> 1.1//h2").await, ["k2"]);
    assert_eq!(found("/alice//math//us/h1").await, Vec::<String>::new());
    assert_eq!(found("/alice//db").await, Vec::<String>::new());
    assert_eq!(found("/bob//math").await, ["k5"]);
    assert_eq!(found("/alice//math/1.2.3//h1/k4").await, ["k4"]);
    // The username is part of every lookup: bob's kites are not alice's.
    assert_eq!(found("/alice/////h1/k5").await, Vec::<String>::new());

    // k4 moves (same id, new name, version and host): only its new fields find it.
    let moved = |path: &str| Registration::new(kite(path), "http://moved", "key1", hour);
    s.upsert(&moved("/alice/dev/db/3.0.0/eu/h9/k4"))
        .await
        .unwrap();
    assert_eq!(found("/alice//math").await, ["k1", "k2", "k3"]);
    assert_eq!(found("/alice/////h1").await, ["k1"]);
    assert_eq!(found("/alice//db/3.0.0").await, ["k4"]);
    assert_eq!(found("/alice/////h9").await, ["k4"]);
    s.upsert(&moved("/alice/dev/math/1.2.3/eu/h1/k4"))
        .await
        .unwrap();
    assert_eq!(found("/alice//math/1.2.3//h1").await, ["k4"]);
    assert_eq!(found("/alice//db").await, Vec::<String>::new());
}

/// `Err(OwnedByAnother)` for `id`, else a panic naming `what`.
fn refused<T: std::fmt::Debug>(what: &str, id: &str, r: Result<T, StorageError>) {
    match r {
        Err(StorageError::OwnedByAnother { id: got }) if got == id => {}
        other => panic!("{what}: want OwnedByAnother({id}), got {other:?}"),
    }
}

fn by_id(id: &str) -> Matcher {
    Matcher::new(&KontrolQuery {
        id: id.into(),
        ..Default::default()
    })
    .unwrap()
}

/// Registrations belong to their owner: another user can neither replace, refresh nor delete a
/// live one, and may take the id once it has expired. Leaves the store as it found it.
pub(crate) async fn owned(s: &dyn Storage) {
    let hour = Duration::from_secs(3600);
    let alice = Registration::new(
        kite("/alice/prod/math/1.0.0/eu/h1/x1"),
        "http://alice",
        "key1",
        hour,
    );
    s.upsert(&alice).await.unwrap();
    let before = s.get(&by_id("x1")).await.unwrap();

    // Mallory, with the same id from another kite path (and one with alice's path but her own
    // username): refused, and nothing of hers is stored or found.
    for path in [
        "/mallory/prod/math/1.0.0/eu/h9/x1",
        "/mallory/prod/math/1.0.0/eu/h1/x1",
    ] {
        let mallory = Registration::new(kite(path), "http://mallory", "key1", hour);
        refused("another user's upsert", "x1", s.upsert(&mallory).await);
    }
    refused(
        "another user's refresh",
        "x1",
        s.refresh("x1", "mallory", now_ms() + 7_200_000).await,
    );
    refused(
        "another user's delete",
        "x1",
        s.delete("x1", "mallory").await,
    );
    let found = s.get(&by_id("x1")).await.unwrap();
    assert_eq!(found, before, "by id after mallory's attempts");
    assert_eq!(
        (found[0].owner(), found[0].url.as_str()),
        ("alice", "http://alice")
    );
    assert_eq!(
        ids(s
            .get(&matcher("/alice/prod/math/1.0.0/eu/h1/x1"))
            .await
            .unwrap()),
        ["x1"]
    );
    assert!(s.get(&matcher("/mallory")).await.unwrap().is_empty());

    // The owner re-registers from elsewhere (other fields, other URL): one registration.
    let moved = Registration::new(
        kite("/alice/dev/math/1.1.0/us/h2/x1"),
        "http://alice-2",
        "key2",
        hour,
    );
    s.upsert(&moved).await.unwrap();
    assert_eq!(
        s.get(&by_id("x1")).await.unwrap(),
        std::slice::from_ref(&moved)
    );
    assert!(
        s.get(&matcher("/alice/prod/math/1.0.0/eu/h1/x1"))
            .await
            .unwrap()
            .is_empty()
    );
    assert!(s.refresh("x1", "alice", now_ms() + 60_000).await.unwrap());

    // Expired: the id is free. Another user may refresh nothing, then take or delete it.
    let mut stale = Registration::new(
        kite("/alice/prod/math/1.0.0/eu/h1/x2"),
        "http://alice",
        "key1",
        hour,
    );
    stale.expires_at_ms = now_ms().saturating_sub(1);
    s.upsert(&stale).await.unwrap();
    assert!(!s.refresh("x2", "mallory", now_ms() + 60_000).await.unwrap());
    let taken = Registration::new(
        kite("/mallory/prod/math/1.0.0/eu/h9/x2"),
        "http://mallory",
        "key1",
        hour,
    );
    s.upsert(&taken).await.unwrap();
    assert_eq!(
        s.get(&by_id("x2")).await.unwrap(),
        std::slice::from_ref(&taken)
    );
    assert!(
        s.get(&matcher("/alice/prod/math/1.0.0/eu/h1/x2"))
            .await
            .unwrap()
            .is_empty()
    );
    // Now it is mallory's, and alice is the other user.
    refused("alice's upsert", "x2", s.upsert(&stale).await);
    refused(
        "alice's refresh",
        "x2",
        s.refresh("x2", "alice", now_ms() + 60_000).await,
    );
    refused("alice's delete", "x2", s.delete("x2", "alice").await);
    let mut gone = stale.clone();
    gone.kite.id = "x3".into();
    s.upsert(&gone).await.unwrap();
    assert!(s.delete("x3", "mallory").await.unwrap());
    assert!(s.get(&by_id("x3")).await.unwrap().is_empty());

    // Two users racing for a free id: one wins, every success is the winner's, and what is
    // found by id and by path is the winner's registration alone.
    let racers: Vec<Registration> = (0..8)
        .map(|i| {
            let user = if i % 2 == 0 { "alice" } else { "mallory" };
            Registration::new(
                kite(&format!("/{user}/prod/math/1.0.0/r{i}/h/x4")),
                &format!("http://{user}-{i}"),
                "key1",
                hour,
            )
        })
        .collect();
    let results = futures_util::future::join_all(racers.iter().map(|r| s.upsert(r))).await;
    let found = s.get(&by_id("x4")).await.unwrap();
    assert_eq!(found.len(), 1, "{found:?}");
    let winner = found[0].owner().to_owned();
    for (r, result) in racers.iter().zip(results) {
        if r.owner() == winner {
            result.unwrap();
        } else {
            refused("the race's loser", "x4", result);
        }
    }
    let by_user = s
        .get(&matcher(&format!("/{winner}/prod/math")))
        .await
        .unwrap();
    assert_eq!(
        by_user
            .iter()
            .filter(|r| r.kite.id == "x4")
            .collect::<Vec<_>>(),
        [&found[0]]
    );
    let loser = if winner == "alice" {
        "mallory"
    } else {
        "alice"
    };
    assert!(
        s.get(&matcher(&format!("/{loser}/prod/math/1.0.0")))
            .await
            .unwrap()
            .iter()
            .all(|r| r.kite.id != "x4")
    );

    // Cleaned up by the owners.
    assert!(s.delete("x1", "alice").await.unwrap());
    assert!(s.delete("x2", "mallory").await.unwrap());
    assert!(s.delete("x4", &winner).await.unwrap());
    for id in ["x1", "x2", "x4"] {
        assert!(s.get(&by_id(id)).await.unwrap().is_empty());
    }
}

#[tokio::test]
async fn memory_storage_behaves() {
    behaves(&MemoryStorage::new()).await;
}

fn temp_file() -> std::path::PathBuf {
    std::env::temp_dir()
        .join(format!("kontrol-test-{}", uuid::Uuid::new_v4()))
        .join("kontrol.db")
}

#[tokio::test]
async fn embedded_storage_behaves_and_a_restart_loses_nothing() {
    let path = temp_file();
    {
        let s = EmbeddedStorage::open(&path).unwrap();
        behaves(&s).await;
    }
    // Reopened (as a restarted Kontrol would): the live registrations are all there.
    let s = EmbeddedStorage::open(&path).unwrap();
    assert_eq!(
        ids(s.get(&matcher("/alice")).await.unwrap()),
        ["k2", "k3", "k4"]
    );
    assert_eq!(ids(s.get(&matcher("/bob")).await.unwrap()), ["k5"]);
    drop(s);
    std::fs::remove_dir_all(path.parent().unwrap()).unwrap();
}

#[tokio::test]
async fn an_embedded_file_in_use_or_unwritable_is_a_clear_error() {
    let path = temp_file();
    let open = EmbeddedStorage::open(&path).unwrap();
    let err = EmbeddedStorage::open(&path).unwrap_err();
    assert!(err.to_string().contains("kontrol.db"), "{err}");
    drop(open);
    let err = EmbeddedStorage::open("/proc/definitely/not/here.db").unwrap_err();
    assert!(matches!(err, StorageError::Unavailable(_)), "{err}");
    std::fs::remove_dir_all(path.parent().unwrap()).unwrap();
}
