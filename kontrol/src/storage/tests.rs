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

/// Registers, finds, refreshes, expires and deletes through `s`.
pub(crate) async fn behaves(s: &dyn Storage) {
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
    assert!(!s.refresh("k6", now_ms() + 60_000).await.unwrap());
    assert!(s.purge_expired().await.unwrap() >= 1);

    // Refresh pushes the expiry of a live one.
    let later = now_ms() + 7_200_000;
    assert!(s.refresh("k1", later).await.unwrap());
    let k1 = s
        .get(&matcher("/alice/prod/math/1.0.0/eu/h1/k1"))
        .await
        .unwrap();
    assert_eq!(k1[0].expires_at_ms, later);
    assert!(!s.refresh("nope", later).await.unwrap());

    assert!(s.delete("k1").await.unwrap());
    assert!(!s.delete("k1").await.unwrap());
    assert_eq!(
        ids(s.get(&matcher("/alice/prod/math")).await.unwrap()),
        ["k2", "k3"]
    );
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
