//! What the client reads from its token without verifying it: when it expires.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;

/// The `exp` claim of a JWT (seconds since the epoch), if it has one.
pub(crate) fn expiry(token: &str) -> Option<f64> {
    let payload = token.split('.').nth(1)?;
    let bytes = URL_SAFE_NO_PAD.decode(payload.trim_end_matches('=')).ok()?;
    let claims: serde_json::Value = serde_json::from_slice(&bytes).ok()?;
    claims.get("exp")?.as_f64()
}

/// Whether an error answers a call made with an expired token (Go's wording).
pub(crate) fn is_expired_error(e: &kite_core::KiteError) -> bool {
    e.kind == kite_core::ErrorKind::Authentication && e.message.contains("token is expired")
}
