//! Token authentication for the `auth` group: the bench kite trusts the repository's test
//! Kontrol key (`testdata/keys`), and the client sends a token signed with it, as a kite
//! calling another through Kontrol does.

use std::sync::Arc;

use jsonwebtoken::{Algorithm, EncodingKey, Header};
use kite_native::Kite;
use kite_native::auth::TokenVerifier;

/// The issuer of the bench's tokens.
const ISSUER: &str = "kite-bench-kontrol";

/// The key pair that signs tokens for the bench kite.
#[derive(Debug, Clone)]
pub struct TestKeys {
    /// The public key, PEM: what the served kite trusts.
    pub public_pem: String,
    private_pem: String,
}

impl TestKeys {
    /// The test key pair of the repository (public, for tests and benchmarks only).
    pub fn generate() -> Result<TestKeys, String> {
        Ok(TestKeys {
            public_pem: include_str!("../../testdata/keys/kontrol.pub.pem").to_owned(),
            private_pem: include_str!("../../testdata/keys/kontrol.pem").to_owned(),
        })
    }

    /// A token for calling the bench kite for an hour, as Kontrol's `getToken` makes one.
    pub fn token_for_bench_kite(&self) -> Result<String, String> {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_err(|e| e.to_string())?
            .as_secs();
        let claims = serde_json::json!({
            "iss": ISSUER,
            // Kontrol issues tokens to the requester: `sub` is the caller's own username.
            "sub": "unknown",
            "aud": "/unknown/unknown/bench",
            "iat": now - 300,
            "nbf": now - 300,
            "exp": now + 3600,
            "jti": "kite-bench-token",
        });
        let key =
            EncodingKey::from_rsa_pem(self.private_pem.as_bytes()).map_err(|e| e.to_string())?;
        jsonwebtoken::encode(&Header::new(Algorithm::RS256), &claims, &key)
            .map_err(|e| e.to_string())
    }
}

/// Makes `kite` accept tokens verified with `public_pem` (its methods require them).
pub fn install(kite: &Kite, public_pem: &str) -> Result<(), Box<dyn std::error::Error>> {
    let verifier = TokenVerifier::new(ISSUER, public_pem, Arc::new(kite.identity().clone()))?;
    kite.set_token_verifier(verifier);
    Ok(())
}
