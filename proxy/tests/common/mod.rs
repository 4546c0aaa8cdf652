//! What the proxy tests share: deadlines, a Kontrol on memory storage, and kite configurations
//! holding its kite keys.

use kite_native::Config;
use kite_native::auth::KeyPair;
use kite_test_kit::kontrol::TestKontrol;

/// Message limit of every kite here: room for 1 MiB payloads and their envelopes.
pub const LIMIT: usize = 4 << 20;

/// `f`, or a panic naming `what` after 20 s.
pub use kite_test_kit::within;

/// A kite listening on 127.0.0.1 at any port, with the [`LIMIT`].
pub fn local_config() -> Config {
    let mut c = Config::default();
    c.ip = [127, 0, 0, 1].into();
    c.port = 0;
    c.max_message_size = LIMIT;
    c
}

/// A running Kontrol and its URL.
pub type Env = TestKontrol;

/// A Kontrol (memory storage) signing with `key`, serving on 127.0.0.1.
pub async fn kontrol(key: KeyPair) -> Env {
    TestKontrol::in_memory(local_config(), key).await
}

/// The config `Config::get` gives a kite of `username` (environment `test`) holding a kite key
/// from `env`'s Kontrol.
pub fn config_for(env: &Env, username: &str) -> Config {
    env.config_for(local_config(), username)
}
