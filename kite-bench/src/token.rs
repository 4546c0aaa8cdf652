//! Token authentication for the `auth` group: the bench kite trusts the repository's test
//! Kontrol key (`testdata/keys`), and the client sends a token signed with it, as a kite
//! calling another through Kontrol does.

use std::sync::Arc;

use jsonwebtoken::{Algorithm, EncodingKey, Header};
use kite_native::Kite;
use kite_native::auth::{KeyPair, TokenVerifier};
use kite_native::core::auth::Claims;

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

impl TestKeys {
    /// The pair as kite-native's [`KeyPair`]: what the bench's Kontrol signs with.
    pub fn key_pair(&self) -> KeyPair {
        KeyPair {
            private_pem: self.private_pem.clone(),
            public_pem: self.public_pem.clone(),
        }
    }

    /// A kite key for `username` from Kontrol `issuer` at `kontrol_url`, with the claims
    /// `Kontrol::kite_key_for` gives one (no expiry, a fresh `jti`, the Kontrol's URL and
    /// public key), so the bench's kites register without asking the Kontrol for keys.
    pub fn kite_key(
        &self,
        issuer: &str,
        username: &str,
        kontrol_url: &str,
    ) -> Result<String, String> {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_err(|e| e.to_string())?
            .as_secs();
        let claims = Claims {
            iss: issuer.to_owned(),
            sub: username.to_owned(),
            iat: i64::try_from(now).ok().map(|n| n - 300),
            jti: uuid::Uuid::new_v4().to_string(),
            kontrol_url: kontrol_url.to_owned(),
            kontrol_key: self.public_pem.trim().to_owned(),
            ..Claims::default()
        };
        self.key_pair().sign(&claims).map_err(|e| e.to_string())
    }
}

/// Makes `kite` accept tokens verified with `public_pem` (its methods require them).
pub fn install(kite: &Kite, public_pem: &str) -> Result<(), Box<dyn std::error::Error>> {
    let verifier = TokenVerifier::new(ISSUER, public_pem, Arc::new(kite.identity().clone()))?;
    kite.set_token_verifier(verifier);
    Ok(())
}
