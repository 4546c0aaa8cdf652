//! Token authentication for the `auth` group (filled in with the token authenticator).

use kite_native::Kite;

/// A key pair that signs tokens for the bench kite.
#[derive(Debug, Clone)]
pub struct TestKeys {
    /// The public key, PEM.
    pub public_pem: String,
}

impl TestKeys {
    /// A fresh key pair.
    pub fn generate() -> Result<TestKeys, String> {
        Err("token authentication is not available yet".into())
    }

    /// A token for calling the bench kite.
    pub fn token_for_bench_kite(&self) -> Result<String, String> {
        Err("token authentication is not available yet".into())
    }
}

/// Makes `kite` accept tokens verified with `public_pem`.
pub fn install(_kite: &Kite, _public_pem: &str) -> Result<(), Box<dyn std::error::Error>> {
    Err("token authentication is not available yet".into())
}
