//! What the proxy tests share: deadlines, a Kontrol on memory storage, and kite configurations
//! holding its kite keys.

use std::sync::Arc;
use std::time::Duration;

use kite_native::Config;
use kite_native::auth::KeyPair;
use kontrol::server::{Kontrol, KontrolOptions};
use kontrol::storage::MemoryStorage;

/// Message limit of every kite here: room for 1 MiB payloads and their envelopes.
pub const LIMIT: usize = 4 << 20;

/// `f`, or a panic naming `what` after 20 s.
pub async fn within<F: std::future::Future>(what: &str, f: F) -> F::Output {
    within_secs(20, what, f).await
}

/// `f`, or a panic naming `what` after `secs`.
pub async fn within_secs<F: std::future::Future>(secs: u64, what: &str, f: F) -> F::Output {
    tokio::time::timeout(Duration::from_secs(secs), f)
        .await
        .unwrap_or_else(|_| panic!("timed out: {what}"))
}

/// A kite listening on 127.0.0.1 at any port, with the [`LIMIT`].
pub fn local_config() -> Config {
    let mut c = Config::default();
    c.ip = [127, 0, 0, 1].into();
    c.port = 0;
    c.max_message_size = LIMIT;
    c
}

/// A running Kontrol and its URL.
pub struct Env {
    pub kontrol: Kontrol,
    pub url: String,
}

/// A Kontrol (memory storage) signing with `key`, serving on 127.0.0.1.
pub async fn kontrol(key: KeyPair) -> Env {
    let k = Kontrol::new(
        local_config(),
        KontrolOptions::new("kontrol", key, ""),
        Arc::new(MemoryStorage::new()),
    )
    .unwrap();
    let server = k.kite().clone();
    tokio::spawn(async move { server.run().await.unwrap() });
    let addr = within("kontrol up", k.kite().ready()).await;
    Env {
        kontrol: k,
        url: format!("http://{addr}/kite"),
    }
}

/// The config `Config::get` gives a kite of `username` (environment `test`) holding a kite key
/// from `env`'s Kontrol.
pub fn config_for(env: &Env, username: &str) -> Config {
    let key = env.kontrol.kite_key_for(username).unwrap();
    let mut cfg = local_config();
    cfg.apply_kite_key(&kite_native::kitekey::parse(&key).unwrap());
    cfg.kontrol_url.clone_from(&env.url);
    cfg.environment = "test".into();
    cfg
}
