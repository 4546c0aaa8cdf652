//! `kite.key`: the long-lived credential a Kontrol issues to a user or machine.
//!
//! The file holds one JWT (RS256) signed by a Kontrol, whose claims name the user (`sub`), the
//! Kontrol (`iss`, `kontrolURL`, `kontrolKey`: its public key) and an id (`jti`). It lives at
//! `$KITE_HOME/kite.key`, or `~/.kite/kite.key` without `KITE_HOME`, in a directory of mode
//! 0700, the file itself 0400, as Go kite keeps it.
//!
//! ```no_run
//! # fn demo() -> Result<(), kite_native::kitekey::KiteKeyError> {
//! let key = kite_native::kitekey::read()?;
//! println!("user {} of Kontrol {}", key.claims.sub, key.claims.kontrol_url);
//! # Ok(()) }
//! ```

use std::path::{Path, PathBuf};

use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use kite_core::auth::Claims;

/// Why a kite key could not be read, parsed or written.
#[derive(Debug, thiserror::Error)]
pub enum KiteKeyError {
    /// The file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// What went wrong.
        source: std::io::Error,
    },
    /// The content is not a kite key: not a JWT, no usable `kontrolKey`, a bad signature.
    #[error("invalid kite key: {0}")]
    Invalid(String),
    /// No home directory to find `~/.kite` in, and no `KITE_HOME`.
    #[error("no home directory and no KITE_HOME")]
    NoHome,
}

/// A parsed kite key: the raw token and its claims.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KiteKey {
    /// The JWT as stored (and as sent in `kiteKey` credentials).
    pub token: String,
    /// Its claims.
    pub claims: Claims,
}

/// The directory of `kite.key`: `$KITE_HOME`, else `~/.kite`.
pub fn kite_home() -> Result<PathBuf, KiteKeyError> {
    if let Some(home) = std::env::var_os("KITE_HOME").filter(|h| !h.is_empty()) {
        return Ok(PathBuf::from(home));
    }
    std::env::var_os("HOME")
        .filter(|h| !h.is_empty())
        .map(|h| PathBuf::from(h).join(".kite"))
        .ok_or(KiteKeyError::NoHome)
}

/// The path of `kite.key` in [`kite_home`].
pub fn kite_key_path() -> Result<PathBuf, KiteKeyError> {
    Ok(kite_home()?.join("kite.key"))
}

/// Reads and parses the kite key at [`kite_key_path`].
pub fn read() -> Result<KiteKey, KiteKeyError> {
    read_from(&kite_key_path()?)
}

/// Reads and parses the kite key in `path` (surrounding whitespace ignored).
pub fn read_from(path: &Path) -> Result<KiteKey, KiteKeyError> {
    let text = std::fs::read_to_string(path).map_err(|source| KiteKeyError::Io {
        path: path.to_owned(),
        source,
    })?;
    parse(&text)
}

/// Parses a kite key, checking that it is signed (RS256/384/512) by the key in its own
/// `kontrolKey` claim, as Go's `kitekey.Parse` does. This proves the key is whole, not that
/// its Kontrol is trusted: servers check that separately (see
/// [`crate::auth::KiteKeyVerifier`]).
pub fn parse(token: &str) -> Result<KiteKey, KiteKeyError> {
    let token = token.trim();
    let invalid = |m: String| KiteKeyError::Invalid(m);
    let unverified = jsonwebtoken::dangerous::insecure_decode::<Claims>(token)
        .map_err(|e| invalid(e.to_string()))?;
    let pem = &unverified.claims.kontrol_key;
    if pem.is_empty() {
        return Err(invalid("no kontrol key found".into()));
    }
    let key = DecodingKey::from_rsa_pem(pem.trim().as_bytes())
        .map_err(|e| invalid(format!("kontrolKey: {e}")))?;
    let claims = jsonwebtoken::decode::<Claims>(token, &key, &rsa_validation())
        .map_err(|e| invalid(e.to_string()))?
        .claims;
    Ok(KiteKey {
        token: token.to_owned(),
        claims,
    })
}

/// Validation of a kite credential's signature only: RSA algorithms, no claim checks (kite
/// keys have no `exp`; tokens are checked by [`kite_core::auth`] with Go's wording).
pub(crate) fn rsa_validation() -> Validation {
    let mut v = Validation::new(Algorithm::RS256);
    v.algorithms = vec![Algorithm::RS256, Algorithm::RS384, Algorithm::RS512];
    v.validate_exp = false;
    v.validate_nbf = false;
    v.validate_aud = false;
    v.required_spec_claims.clear();
    v
}

/// Writes `token` to [`kite_key_path`] (see [`write_to`]).
pub fn write(token: &str) -> Result<PathBuf, KiteKeyError> {
    let path = kite_key_path()?;
    write_to(&path, token)?;
    Ok(path)
}

/// Writes `token` to `path`: the directory created with mode 0700, the old file removed (it is
/// read-only), the new one written with mode 0400.
pub fn write_to(path: &Path, token: &str) -> Result<(), KiteKeyError> {
    let io = |source| KiteKeyError::Io {
        path: path.to_owned(),
        source,
    };
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        let mut builder = std::fs::DirBuilder::new();
        builder.recursive(true);
        #[cfg(unix)]
        std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
        builder.create(dir).map_err(io)?;
    }
    match std::fs::remove_file(path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(io(e)),
        _ => {}
    }
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o400);
    let mut file = options.open(path).map_err(io)?;
    std::io::Write::write_all(&mut file, token.trim().as_bytes()).map_err(io)
}
