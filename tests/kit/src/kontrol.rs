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
