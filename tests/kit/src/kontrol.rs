//! A Kontrol to test against, and kites holding its kite keys (feature `kontrol`; for
//! integration tests only, see the crate's docs).

use std::net::SocketAddr;
use std::sync::Arc;

use kite_native::auth::KeyPair;
use kite_native::{Config, Kite};
use kontrol::server::{Kontrol, KontrolOptions};
use kontrol::storage::{MemoryStorage, Storage};

use crate::kites::serve;

/// A running Kontrol of the test's runtime and where it listens.
#[derive(Debug)]
pub struct TestKontrol {
    /// The Kontrol.
    pub kontrol: Kontrol,
    /// Its address on 127.0.0.1.
    pub addr: SocketAddr,
    /// `http://<addr>/kite`, the Kontrol URL kites are given.
    pub url: String,
}

impl TestKontrol {
    /// A Kontrol with `config`, `options` and `storage`, serving; returns once it listens.
    pub async fn start(
        config: Config,
        options: KontrolOptions,
        storage: Arc<dyn Storage>,
    ) -> TestKontrol {
        let kontrol = Kontrol::new(config, options, storage).unwrap();
        let addr = serve(kontrol.kite()).await;
        TestKontrol {
            kontrol,
            addr,
            url: format!("http://{addr}/kite"),
        }
    }

    /// A Kontrol with `config` on memory storage, signing with `key`.
    pub async fn in_memory(config: Config, key: KeyPair) -> TestKontrol {
        let options = KontrolOptions::new("kontrol", key, "");
        Self::start(config, options, Arc::new(MemoryStorage::new())).await
    }

    /// `base` as `Config::get` makes it for a kite of `username` (environment `test`) from a
    /// kite.key this Kontrol issued.
    pub fn config_for(&self, mut base: Config, username: &str) -> Config {
        let key = self.kontrol.kite_key_for(username).unwrap();
        base.apply_kite_key(&kite_native::kitekey::parse(&key).unwrap());
        base.kontrol_url.clone_from(&self.url);
        base.environment = "test".into();
        base
    }

    /// A kite `name` (version 1.0.0) of `username` configured by [`TestKontrol::config_for`].
    pub fn kite_for(&self, base: Config, name: &str, username: &str) -> Kite {
        Kite::with_config(name, "1.0.0", self.config_for(base, username)).unwrap()
    }
}

/// One registry backend for Kontrol tests: storages for `replicas` Kontrols sharing it (each
/// its own connection where the backend has connections), and what keeps it running (a real
/// etcd or PostgreSQL server, a temporary directory) until it is dropped. Feature `backends`.
#[cfg(feature = "backends")]
#[derive(Debug)]
pub struct Backend {
    /// `memory`, `embedded`, `etcd` or `postgres`.
    pub name: &'static str,
    /// One storage per Kontrol; the in-process stores hand every Kontrol the same one.
    pub storages: Vec<Arc<dyn Storage>>,
    _etcd: Option<crate::servers::Etcd>,
    _pg: Option<crate::servers::Postgres>,
    dir: Option<std::path::PathBuf>,
}

#[cfg(feature = "backends")]
impl Drop for Backend {
    fn drop(&mut self) {
        if let Some(dir) = &self.dir {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}

/// Every backend this machine has, each with storages for `replicas` Kontrols: memory,
/// embedded (a file in a new temporary directory), and real etcd and PostgreSQL servers
/// started for the caller. etcd and PostgreSQL are skipped, saying so, where they are not
/// installed; under `CI=true` that fails (see [`crate::skip()`]). Feature `backends`.
#[cfg(feature = "backends")]
pub async fn backends(replicas: usize) -> Vec<Backend> {
    use kontrol::storage::{
        EmbeddedStorage, EtcdOptions, EtcdStorage, PostgresConfig, PostgresStorage,
    };

    let shared = |s: Arc<dyn Storage>| vec![s; replicas];
    let mut out = vec![Backend {
        name: "memory",
        storages: shared(Arc::new(MemoryStorage::new())),
        _etcd: None,
        _pg: None,
        dir: None,
    }];
    let dir = crate::net::temp_dir("kontrol-backend");
    let embedded = EmbeddedStorage::open(dir.join("kontrol.db")).unwrap();
    out.push(Backend {
        name: "embedded",
        storages: shared(Arc::new(embedded)),
        _etcd: None,
        _pg: None,
        dir: Some(dir),
    });
    if let Some(etcd) = crate::servers::Etcd::start().await {
        let mut storages: Vec<Arc<dyn Storage>> = Vec::with_capacity(replicas);
        for _ in 0..replicas {
            let s = EtcdStorage::connect(EtcdOptions::new([etcd.url()]))
                .await
                .unwrap();
            storages.push(Arc::new(s));
        }
        out.push(Backend {
            name: "etcd",
            storages,
            _etcd: Some(etcd),
            _pg: None,
            dir: None,
        });
    }
    if let Some(pg) = crate::servers::Postgres::start() {
        pg.create_database("kontrol");
        let config = PostgresConfig {
            host: "127.0.0.1".into(),
            port: pg.port(),
            user: "postgres".into(),
            dbname: "kontrol".into(),
            ..PostgresConfig::default()
        };
        let mut storages: Vec<Arc<dyn Storage>> = Vec::with_capacity(replicas);
        for _ in 0..replicas {
            let s = PostgresStorage::connect(config.clone()).await.unwrap();
            storages.push(Arc::new(s));
        }
        out.push(Backend {
            name: "postgres",
            storages,
            _etcd: None,
            _pg: Some(pg),
            dir: None,
        });
    }
    out
}
