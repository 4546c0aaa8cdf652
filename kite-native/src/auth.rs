//! Token authentication: Kontrol-signed JWTs checked the way Go kite checks them
//! (`AuthenticateFromToken`), with each verified token remembered until it expires so that a
//! caller sending the same token on every call pays for the RSA verification once.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use kite_core::Kite as KiteIdentity;
use kite_core::auth::{Claims, check_audience, check_times};

use crate::kite::lock;

/// Tokens remembered at most; when full, expired ones are dropped, then the oldest half.
const CACHE_LIMIT: usize = 16_384;

/// Why a token or kite key is refused: the errors of [`TokenVerifier`] and [`KiteKeyVerifier`].
///
/// Each message is the one Go kite sends (peers receive it inside an `authenticationError`,
/// prefixed with the credential type, e.g. `token: token is expired`), so the `Display` of a
/// variant is part of the wire protocol.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VerifyError {
    /// Not a JWT, or its claims are not the claims of a kite key or token: `malformed
    /// <what>: <cause>`, `what` being `token` or `kite key`.
    #[error("malformed {what}: {source}")]
    Malformed {
        /// What was being read: `token` or `kite key`.
        what: &'static str,
        /// Why the JWT library could not read it.
        #[source]
        source: jsonwebtoken::errors::Error,
    },
    /// The header names `none`, HMAC or any other algorithm than RS256, RS384 and RS512: the
    /// algorithm, when the JWT library knows it.
    #[error("invalid signing method")]
    Algorithm(Option<Algorithm>),
    /// The token's issuer (`iss`) is not the trusted Kontrol user.
    #[error("issuer is not trusted: {0}")]
    Issuer(String),
    /// The token's signature is not the trusted Kontrol key's. Go's message, `token is
    /// expired`, which makes Go clients fetch a new token after a key rotation.
    #[error("token is expired")]
    Signature(#[source] jsonwebtoken::errors::Error),
    /// The JWT library refused the token or kite key when checking its signature (for kite
    /// keys, a bad signature too), with its message.
    #[error("{0}")]
    Jwt(#[source] jsonwebtoken::errors::Error),
    /// `exp`, `nbf` or `iat` refused by [`kite_core::auth::check_times`], with its (Go's)
    /// message, e.g. `token is expired by 1m0s` or `token is not valid yet`.
    #[error("{0}")]
    Times(String),
    /// The audience (`aud`) refused by [`kite_core::auth::check_audience`] (or by the
    /// verifier's [`AudienceCheck`]), with its message.
    #[error("{0}")]
    Audience(String),
    /// The credential names no user (`sub`).
    #[error("token has no username")]
    NoUsername,
    /// The kite key has no `kontrolKey` claim.
    #[error("no kontrol key found")]
    NoKontrolKey,
    /// The kite key's `kontrolKey` is not trusted: the [`TrustFn`]'s reason.
    #[error(transparent)]
    Untrusted(#[from] Untrusted),
    /// The kite key's trusted `kontrolKey` is not a usable RSA public key.
    #[error("invalid kontrol key: {0}")]
    KontrolKey(#[source] jsonwebtoken::errors::Error),
}

/// Why a [`TrustFn`] refuses a Kontrol key; its `Display` is the reason as given. Made from a
/// string: `Err("kontrol key is not trusted".into())`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct Untrusted(
    /// The reason, as the peer is told it.
    pub String,
);

impl From<&str> for Untrusted {
    fn from(reason: &str) -> Self {
        Untrusted(reason.to_owned())
    }
}

impl From<String> for Untrusted {
    fn from(reason: String) -> Self {
        Untrusted(reason)
    }
}

/// Why a key could not be used, made or used to sign.
#[derive(Debug, Clone, thiserror::Error)]
#[error("invalid RSA key: {0}")]
pub struct KeyError(String);

/// Checks `token` credentials sent to one kite.
///
/// A token is accepted when it is signed with RS256, RS384 or RS512 by the trusted Kontrol key
/// (or one of the keys a [`KeyLookup`] finds for its `kid`, [`TokenVerifier::with_key_lookup`]),
/// was issued by the trusted Kontrol user (`iss`), is within its `exp`, `nbf` and `iat` (each
/// with `leeway` seconds of clock skew), names a user (`sub`) and an audience that lets it
/// call this kite (see [`kite_core::auth::check_audience`]). Other algorithms (`none`, HMAC,
/// ...) are refused. Messages follow Go's: a bad signature reads `token is expired`, which
/// makes Go clients fetch a new token after a key rotation.
///
/// [`TokenVerifier::with_audience_check`] replaces the audience rule (Go's
/// `Config.VerifyAudienceFunc`).
#[derive(Debug)]
pub struct TokenVerifier {
    issuer: String,
    keys: Keys,
    validation: Validation,
    local: Arc<KiteIdentity>,
    leeway: i64,
    allow_root_audience: bool,
    /// Replaces [`check_audience`] when set.
    audience_check: Option<CustomAudience>,
    /// Keyed by the token's last 16 bytes (signature bytes, effectively random), so a lookup
    /// hashes 16 bytes instead of the whole token; the entry keeps the whole token to compare.
    cache: Mutex<HashMap<[u8; 16], Verified>>,
    cache_limit: usize,
    verifications: AtomicU64,
    /// Bumped by [`TokenVerifier::forget_all`]: a verification that began before is not
    /// remembered.
    generation: AtomicU64,
}

/// Decides whether a token's audience (`aud`, never empty: a token without one is refused
/// before) lets it call the kite `local`: `Ok(())` to accept, `Err(reason)` to refuse (the
/// peer is told `token: <reason>`). Go's `Config.VerifyAudienceFunc`; it replaces the default
/// rule, [`kite_core::auth::check_audience`], root audience `/` included.
pub type AudienceCheck = Arc<dyn Fn(&KiteIdentity, &str) -> Result<(), String> + Send + Sync>;

/// An [`AudienceCheck`], which has no `Debug` of its own.
#[derive(Clone)]
struct CustomAudience(AudienceCheck);

impl std::fmt::Debug for CustomAudience {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("AudienceCheck")
    }
}

/// Finds the keys a token may be signed with from the key id (`kid`) of its header, `None` when
/// it names none: for a verifier trusting several key pairs (Kontrol's key ring, a JWKS). An
/// empty answer refuses the token as if its signature were bad (`token is expired`, which makes
/// Go clients fetch a new token). The keys are tried in order until one verifies the signature,
/// so a lookup should answer few (one for a known `kid`): each is an RSA verification a peer
/// can make the verifier do.
pub type KeyLookup = Arc<dyn Fn(Option<&str>) -> Vec<DecodingKey> + Send + Sync>;

/// The keys a [`TokenVerifier`] checks signatures with.
#[derive(Clone)]
enum Keys {
    /// One key, whatever the token's `kid`.
    One(DecodingKey),
    /// The keys a [`KeyLookup`] finds for the token's `kid`.
    Lookup(KeyLookup),
}

impl std::fmt::Debug for Keys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Keys::One(key) => f.debug_tuple("One").field(key).finish(),
            Keys::Lookup(_) => f.write_str("Lookup"),
        }
    }
}

/// A token that passed every check, with the window it stays valid in.
#[derive(Debug, Clone)]
struct Verified {
    token: String,
    username: String,
    from: i64,
    until: i64,
    inserted: u64,
}

impl TokenVerifier {
    /// Trusts tokens issued by `issuer` (the Kontrol's username) and signed with the key whose
    /// public half is `public_pem`, for calls to the kite `local`.
    pub fn new(
        issuer: &str,
        public_pem: &str,
        local: Arc<KiteIdentity>,
    ) -> Result<TokenVerifier, KeyError> {
        let key = DecodingKey::from_rsa_pem(public_pem.trim().as_bytes())
            .map_err(|e| KeyError(e.to_string()))?;
        Ok(Self::with_keys(issuer, Keys::One(key), local))
    }

    /// Trusts tokens issued by `issuer` and signed with one of the keys `lookup` finds for the
    /// `kid` of their header (see [`KeyLookup`]), for calls to the kite `local`. Everything else
    /// is checked as by [`TokenVerifier::new`].
    pub fn with_key_lookup(
        issuer: &str,
        lookup: KeyLookup,
        local: Arc<KiteIdentity>,
    ) -> TokenVerifier {
        Self::with_keys(issuer, Keys::Lookup(lookup), local)
    }

    fn with_keys(issuer: &str, keys: Keys, local: Arc<KiteIdentity>) -> TokenVerifier {
        // Claims are checked by kite_core::auth, with Go's wording.
        let validation = crate::kitekey::rsa_validation();
        TokenVerifier {
            issuer: issuer.to_owned(),
            keys,
            validation,
            local,
            leeway: 5,
            allow_root_audience: false,
            audience_check: None,
            cache: Mutex::new(HashMap::new()),
            cache_limit: CACHE_LIMIT,
            verifications: AtomicU64::new(0),
            generation: AtomicU64::new(0),
        }
    }

    /// Seconds of clock skew allowed on `exp`, `nbf` and `iat` (default 5).
    pub fn with_leeway(mut self, seconds: u32) -> Self {
        self.leeway = i64::from(seconds);
        self
    }

    /// Accepts tokens with the root audience `/`, which Go Kontrol issues when a token is
    /// renewed by kite id. Off by default: such a token could call any kite of any user that
    /// trusts the same Kontrol.
    pub fn allow_root_audience(mut self, allow: bool) -> Self {
        self.allow_root_audience = allow;
        self
    }

    /// Decides on audiences with `check` instead of the default rule (Go's
    /// `VerifyAudienceFunc`; [`TokenVerifier::allow_root_audience`] then has no effect: the root
    /// audience is `check`'s to accept). `check` is given this verifier's kite and the token's
    /// `aud`; its `Err` reason is what the peer is told. Only tokens with an audience reach it.
    pub fn with_audience_check(
        mut self,
        check: impl Fn(&KiteIdentity, &str) -> Result<(), String> + Send + Sync + 'static,
    ) -> Self {
        self.audience_check = Some(CustomAudience(Arc::new(check)));
        self
    }

    /// The same verifier (issuer, key, kite, leeway, root audience) with `check` deciding on
    /// audiences (`None`: the default rule) and nothing remembered.
    pub(crate) fn with_audience(&self, check: Option<AudienceCheck>) -> TokenVerifier {
        TokenVerifier {
            issuer: self.issuer.clone(),
            keys: self.keys.clone(),
            validation: self.validation.clone(),
            local: self.local.clone(),
            leeway: self.leeway,
            allow_root_audience: self.allow_root_audience,
            audience_check: check.map(CustomAudience),
            cache: Mutex::new(HashMap::new()),
            cache_limit: self.cache_limit,
            verifications: AtomicU64::new(0),
            generation: AtomicU64::new(0),
        }
    }

    /// The authenticated username of `token`, or why it is refused.
    pub fn verify(&self, token: &str) -> Result<String, VerifyError> {
        self.verify_at(token, unix_now())
            .map(|(username, _)| username)
    }

    /// [`TokenVerifier::verify`], also giving the last Unix second the token stays valid.
    pub(crate) fn verify_until(&self, token: &str) -> Result<(String, i64), VerifyError> {
        self.verify_at(token, unix_now())
    }

    fn verify_at(&self, token: &str, now: i64) -> Result<(String, i64), VerifyError> {
        if let Some(hit) = self.lock().get(&cache_key(token))
            && hit.token == token
            && (hit.from..=hit.until).contains(&now)
        {
            return Ok((hit.username.clone(), hit.until));
        }
        let generation = self.generation.load(Ordering::SeqCst);
        let verified = self.verify_fully(token, now)?;
        let answer = (verified.username.clone(), verified.until);
        self.remember(token, verified, now, generation);
        Ok(answer)
    }

    /// How many times [`TokenVerifier::forget_all`] was called: what a token remembered
    /// elsewhere (a connection's last token) was verified under.
    pub(crate) fn generation(&self) -> u64 {
        self.generation.load(Ordering::SeqCst)
    }

    /// Forgets every token verified so far, and those being verified now: each is checked
    /// again when next presented. For a verifier with a [`KeyLookup`] whose keys changed (a
    /// pair deleted), so that tokens of a withdrawn key stop being accepted at once.
    pub fn forget_all(&self) {
        let mut cache = self.lock();
        self.generation.fetch_add(1, Ordering::SeqCst);
        cache.clear();
    }

    /// How many tokens were verified cryptographically (cache misses), for tests and metrics.
    pub fn verifications(&self) -> u64 {
        self.verifications.load(Ordering::Relaxed)
    }

    fn verify_fully(&self, token: &str, now: i64) -> Result<Verified, VerifyError> {
        self.verifications.fetch_add(1, Ordering::Relaxed);
        // The issuer decides which key to check with, so it is read before the signature.
        let (kid, claims) = rsa_claims(token, "token")?;
        if claims.iss != self.issuer {
            return Err(VerifyError::Issuer(claims.iss));
        }
        let check = |key: &DecodingKey| {
            jsonwebtoken::decode::<serde::de::IgnoredAny>(token, key, &self.validation)
                .map(drop)
                .map_err(|e| match e.kind() {
                    jsonwebtoken::errors::ErrorKind::InvalidSignature => VerifyError::Signature(e),
                    _ => VerifyError::Jwt(e),
                })
        };
        match &self.keys {
            Keys::One(key) => check(key)?,
            Keys::Lookup(lookup) => {
                let mut outcome = Err(VerifyError::Signature(
                    jsonwebtoken::errors::ErrorKind::InvalidSignature.into(),
                ));
                for key in lookup(kid.as_deref()) {
                    outcome = check(&key);
                    if !matches!(outcome, Err(VerifyError::Signature(_))) {
                        break;
                    }
                }
                outcome?;
            }
        }
        check_times(&claims, now, self.leeway).map_err(VerifyError::Times)?;
        if claims.sub.is_empty() {
            return Err(VerifyError::NoUsername);
        }
        match &self.audience_check {
            // As Go, an empty audience is refused before the custom check is asked.
            Some(_) if claims.aud.is_empty() => Err("token has no audience".to_owned()),
            Some(CustomAudience(check)) => check(&self.local, &claims.aud),
            None => check_audience(&claims.aud, &self.local, self.allow_root_audience),
        }
        .map_err(VerifyError::Audience)?;
        let from = [claims.iat, claims.nbf]
            .into_iter()
            .flatten()
            .max()
            .map_or(i64::MIN, |t| t.saturating_sub(self.leeway));
        let until = claims
            .exp
            .map_or(i64::MAX, |t| t.saturating_add(self.leeway));
        Ok(Verified {
            token: token.to_owned(),
            username: claims.sub,
            from,
            until,
            inserted: 0,
        })
    }

    fn remember(&self, token: &str, mut verified: Verified, now: i64, generation: u64) {
        debug_assert_eq!(verified.token, token);
        let mut cache = self.lock();
        if self.generation.load(Ordering::SeqCst) != generation {
            return;
        }
        if cache.len() >= self.cache_limit {
            cache.retain(|_, v| v.until >= now);
            if cache.len() >= self.cache_limit {
                let mut ages: Vec<u64> = cache.values().map(|v| v.inserted).collect();
                ages.sort_unstable();
                let cut = ages[ages.len() / 2];
                cache.retain(|_, v| v.inserted > cut);
            }
        }
        verified.inserted = self.verifications.load(Ordering::Relaxed);
        cache.insert(cache_key(token), verified);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<[u8; 16], Verified>> {
        self.cache.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// The last 16 bytes of a token (zero-padded in front if shorter).
fn cache_key(token: &str) -> [u8; 16] {
    let b = token.as_bytes();
    let tail = &b[b.len().saturating_sub(16)..];
    let mut key = [0u8; 16];
    key[16 - tail.len()..].copy_from_slice(tail);
    key
}

/// The key id (`kid`) of the header and the claims of a JWT whose header names an RSA algorithm
/// (RS256/384/512), read before its signature is checked (they say which key to check it with);
/// `invalid signing method` for `none`, HMAC or anything else, `malformed <what>` for what is
/// not a JWT.
fn rsa_claims(jwt: &str, what: &'static str) -> Result<(Option<String>, Claims), VerifyError> {
    let header = jsonwebtoken::decode_header(jwt).map_err(|source| {
        if names_an_algorithm(jwt) {
            // `none`, or an algorithm jsonwebtoken does not know.
            VerifyError::Algorithm(None)
        } else {
            VerifyError::Malformed { what, source }
        }
    })?;
    if !matches!(
        header.alg,
        Algorithm::RS256 | Algorithm::RS384 | Algorithm::RS512
    ) {
        return Err(VerifyError::Algorithm(Some(header.alg)));
    }
    jsonwebtoken::dangerous::insecure_decode::<Claims>(jwt)
        .map(|t| (header.kid, t.claims))
        .map_err(|source| VerifyError::Malformed { what, source })
}

/// Whether the token's header is JSON naming an `alg` (one the JWT library refused to parse).
fn names_an_algorithm(token: &str) -> bool {
    use base64::Engine;
    let Some(header) = token.split('.').next() else {
        return false;
    };
    base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(header.trim_end_matches('='))
        .ok()
        .and_then(|bytes| serde_json::from_slice::<serde_json::Value>(&bytes).ok())
        .is_some_and(|h| h.get("alg").is_some_and(serde_json::Value::is_string))
}

pub(crate) fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

/// Decides whether a Kontrol public key (PEM, trimmed) is trusted to sign kite keys: `Ok(())`
/// to trust it, `Err(reason)` to refuse (the reason is what the peer is told). Go's
/// `Config.VerifyFunc`.
pub type TrustFn = Arc<dyn Fn(&str) -> Result<(), Untrusted> + Send + Sync>;

/// A trust decision about a Kontrol key, and when it was made.
type Decision = (Result<(), Untrusted>, std::time::Instant);

/// Checks `kiteKey` credentials, as Go's `AuthenticateFromKiteKey` does, without its holes.
///
/// A kite key is accepted when its `kontrolKey` claim is a trusted Kontrol key (by default:
/// exactly the kite's own `Config::kontrol_key`; or what a [`TrustFn`] says, each answer
/// remembered for the verify TTL), it is signed (RS256/384/512) by that key, and it names a
/// user (`sub`). Kite keys have no expiry. Each accepted key is remembered, so a caller sending
/// its key with every call pays for the RSA verification once per TTL.
pub struct KiteKeyVerifier {
    trust: TrustFn,
    ttl: std::time::Duration,
    /// Trust decisions by Kontrol key, with when they were made.
    trusted: Mutex<HashMap<String, Decision>>,
    /// Accepted kite keys: username and when accepted.
    accepted: Mutex<HashMap<String, (String, std::time::Instant)>>,
    verifications: AtomicU64,
}

impl std::fmt::Debug for KiteKeyVerifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KiteKeyVerifier")
            .field("ttl", &self.ttl)
            .finish_non_exhaustive()
    }
}

impl KiteKeyVerifier {
    /// Trusts kite keys signed by `kontrol_key` only (Go's default `selfVerify`).
    pub fn trusting(kontrol_key: &str) -> KiteKeyVerifier {
        let own = kontrol_key.trim().to_owned();
        Self::with_trust(Arc::new(move |key: &str| {
            if !own.is_empty() && key == own {
                Ok(())
            } else {
                Err("kontrol key is not trusted".into())
            }
        }))
    }

    /// Trusts the Kontrol keys `trust` accepts (Kontrol itself trusts every key pair it holds).
    pub fn with_trust(trust: TrustFn) -> KiteKeyVerifier {
        KiteKeyVerifier {
            trust,
            ttl: std::time::Duration::from_secs(300),
            trusted: Mutex::default(),
            accepted: Mutex::default(),
            verifications: AtomicU64::new(0),
        }
    }

    /// How long trust decisions and accepted keys are remembered (default 5 minutes, Go's
    /// `VerifyTTL`); zero remembers nothing.
    pub fn with_ttl(mut self, ttl: std::time::Duration) -> Self {
        self.ttl = ttl;
        self
    }

    /// How many kite keys were verified cryptographically (cache misses).
    pub fn verifications(&self) -> u64 {
        self.verifications.load(Ordering::Relaxed)
    }

    /// The authenticated username of `kite_key`, or why it is refused.
    pub fn verify(&self, kite_key: &str) -> Result<String, VerifyError> {
        let now = std::time::Instant::now();
        let fresh = |at: std::time::Instant| now.duration_since(at) < self.ttl;
        if let Some((user, at)) = lock(&self.accepted).get(kite_key)
            && fresh(*at)
        {
            return Ok(user.clone());
        }
        self.verifications.fetch_add(1, Ordering::Relaxed);
        let (_, claims) = rsa_claims(kite_key, "kite key")?;
        let pem = claims.kontrol_key.trim();
        if pem.is_empty() {
            return Err(VerifyError::NoKontrolKey);
        }
        let decision = {
            let cached = lock(&self.trusted)
                .get(pem)
                .filter(|(_, at)| fresh(*at))
                .map(|(d, _)| d.clone());
            match cached {
                Some(d) => d,
                None => {
                    let d = (self.trust)(pem);
                    let mut trusted = lock(&self.trusted);
                    trusted.retain(|_, (_, at)| fresh(*at));
                    trusted.insert(pem.to_owned(), (d.clone(), now));
                    d
                }
            }
        };
        decision?;
        let key = DecodingKey::from_rsa_pem(pem.as_bytes()).map_err(VerifyError::KontrolKey)?;
        jsonwebtoken::decode::<serde::de::IgnoredAny>(
            kite_key,
            &key,
            &crate::kitekey::rsa_validation(),
        )
        .map_err(VerifyError::Jwt)?;
        if claims.sub.is_empty() {
            return Err(VerifyError::NoUsername);
        }
        let mut accepted = lock(&self.accepted);
        if accepted.len() >= CACHE_LIMIT {
            accepted.retain(|_, (_, at)| fresh(*at));
            if accepted.len() >= CACHE_LIMIT {
                accepted.clear();
            }
        }
        if !self.ttl.is_zero() {
            accepted.insert(kite_key.to_owned(), (claims.sub.clone(), now));
        }
        Ok(claims.sub)
    }
}

/// An RSA key pair in PEM (private PKCS#8, public SPKI), as Kontrol signs kite keys and
/// tokens with; for tests, examples and a new Kontrol.
#[derive(Clone, PartialEq, Eq)]
pub struct KeyPair {
    /// The private key (`-----BEGIN PRIVATE KEY-----`).
    pub private_pem: String,
    /// The public key (`-----BEGIN PUBLIC KEY-----`), what `kontrolKey` claims carry.
    pub public_pem: String,
}

impl std::fmt::Debug for KeyPair {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyPair")
            .field("public_pem", &self.public_pem)
            .finish_non_exhaustive()
    }
}

impl KeyPair {
    /// A new random key pair of `bits` bits (2048 is what Go kite's docs generate).
    pub fn generate(bits: usize) -> Result<KeyPair, KeyError> {
        use rsa::pkcs8::{EncodePrivateKey, EncodePublicKey, LineEnding};
        let private = rsa::RsaPrivateKey::new(&mut rsa::rand_core::OsRng, bits)
            .map_err(|e| KeyError(e.to_string()))?;
        let private_pem = private
            .to_pkcs8_pem(LineEnding::LF)
            .map_err(|e| KeyError(e.to_string()))?
            .to_string();
        let public_pem = private
            .to_public_key()
            .to_public_key_pem(LineEnding::LF)
            .map_err(|e| KeyError(e.to_string()))?;
        Ok(KeyPair {
            private_pem,
            public_pem,
        })
    }

    /// Signs `claims` with RS256, as Kontrol signs kite keys and tokens.
    pub fn sign(&self, claims: &Claims) -> Result<String, KeyError> {
        sign(&self.private_pem, claims)
    }

    /// Signs `claims` with RS256, naming the pair `kid` in the JWT header (`"kid"`), as Kontrol
    /// does when it holds several pairs. Verifiers ignore the header field; it tells which pair
    /// signed.
    pub fn sign_with_kid(&self, claims: &Claims, kid: &str) -> Result<String, KeyError> {
        sign_with_kid(&self.private_pem, claims, kid)
    }
}

/// Signs `claims` with RS256 and the PEM private key `private_pem` (PKCS#1 or PKCS#8).
pub fn sign(private_pem: &str, claims: &Claims) -> Result<String, KeyError> {
    SigningKey::from_pem(private_pem)?.sign(claims, None)
}

/// [`sign`], with the JWT header's `kid` set to `kid` (the id of the signing key pair).
pub fn sign_with_kid(private_pem: &str, claims: &Claims, kid: &str) -> Result<String, KeyError> {
    SigningKey::from_pem(private_pem)?.sign(claims, Some(kid))
}

/// An RSA private key read once to sign many JWTs with RS256 (the free [`sign`] reads the PEM
/// each time). Kontrol keeps one per key pair: signing is what a `getKites` answer costs.
///
/// Keys of 2048 to 4096 bits sign with *ring* (about 3× faster than the pure-Rust RSA of the JWT
/// library here: 0.7 against 2.2 ms per token on this project's 2-core test machine); others
/// with the JWT library. RS256 signatures (PKCS#1 v1.5) are deterministic, so both give the
/// same token byte for byte.
pub struct SigningKey(Signing);

enum Signing {
    Ring(Box<ring::rsa::KeyPair>),
    Jwt(jsonwebtoken::EncodingKey),
}

impl std::fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let with = match self.0 {
            Signing::Ring(_) => "ring",
            Signing::Jwt(_) => "jsonwebtoken",
        };
        f.debug_struct("SigningKey")
            .field("with", &with)
            .finish_non_exhaustive()
    }
}

impl SigningKey {
    /// Reads the PEM private key `private_pem` (PKCS#8 or PKCS#1).
    pub fn from_pem(private_pem: &str) -> Result<SigningKey, KeyError> {
        use rsa::pkcs1::DecodeRsaPrivateKey;
        use rsa::pkcs8::{DecodePrivateKey, EncodePrivateKey};
        let pem = private_pem.trim();
        let jwt = jsonwebtoken::EncodingKey::from_rsa_pem(pem.as_bytes())
            .map_err(|e| KeyError(e.to_string()))?;
        let fast = rsa::RsaPrivateKey::from_pkcs8_pem(pem)
            .or_else(|_| rsa::RsaPrivateKey::from_pkcs1_pem(pem))
            .ok()
            .and_then(|key| key.to_pkcs8_der().ok())
            .and_then(|der| ring::rsa::KeyPair::from_pkcs8(der.as_bytes()).ok());
        Ok(SigningKey(match fast {
            Some(key) => Signing::Ring(Box::new(key)),
            None => Signing::Jwt(jwt),
        }))
    }

    /// `claims` as a JWT signed with RS256, naming `kid` in its header if given.
    pub fn sign(&self, claims: &Claims, kid: Option<&str>) -> Result<String, KeyError> {
        use base64::Engine;
        let header = jsonwebtoken::Header {
            kid: kid.map(str::to_owned),
            ..jsonwebtoken::Header::new(Algorithm::RS256)
        };
        let key = match &self.0 {
            Signing::Jwt(key) => {
                return jsonwebtoken::encode(&header, claims, key)
                    .map_err(|e| KeyError(e.to_string()));
            }
            Signing::Ring(key) => key,
        };
        // The JWS compact form, as the JWT library writes it: base64url (no padding) of the
        // header's and the claims' JSON, then of the signature of both.
        let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
        fn json<T: serde::Serialize>(value: &T) -> Result<Vec<u8>, KeyError> {
            serde_json::to_vec(value).map_err(|e| KeyError(e.to_string()))
        }
        let mut jwt = b64.encode(json(&header)?);
        jwt.push('.');
        b64.encode_string(json(claims)?, &mut jwt);
        let mut signature = vec![0; key.public().modulus_len()];
        key.sign(
            &ring::signature::RSA_PKCS1_SHA256,
            &ring::rand::SystemRandom::new(),
            jwt.as_bytes(),
            &mut signature,
        )
        .map_err(|_| KeyError("signing failed".to_owned()))?;
        jwt.push('.');
        b64.encode_string(signature, &mut jwt);
        Ok(jwt)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use jsonwebtoken::{EncodingKey, Header};

    const KONTROL_PEM: &str = include_str!("../../testdata/keys/kontrol.pem");
    const KONTROL_PUB: &str = include_str!("../../testdata/keys/kontrol.pub.pem");

    fn verifier() -> TokenVerifier {
        let local = KiteIdentity {
            username: "u".into(),
            environment: "e".into(),
            name: "n".into(),
            ..KiteIdentity::default()
        };
        TokenVerifier::new("kontrol", KONTROL_PUB, Arc::new(local))
            .unwrap()
            .with_leeway(0)
    }

    fn token(jti: &str, iat: i64, exp: i64) -> String {
        let claims = serde_json::json!({
            "iss": "kontrol", "sub": "alice", "aud": "/u/e/n", "jti": jti, "iat": iat, "exp": exp,
        });
        let key = EncodingKey::from_rsa_pem(KONTROL_PEM.as_bytes()).unwrap();
        jsonwebtoken::encode(&Header::new(Algorithm::RS256), &claims, &key).unwrap()
    }

    #[test]
    fn sign_with_kid_names_the_pair_and_verifies_as_before() {
        let pair = KeyPair {
            private_pem: KONTROL_PEM.to_owned(),
            public_pem: KONTROL_PUB.to_owned(),
        };
        let claims = Claims {
            iss: "kontrol".into(),
            sub: "alice".into(),
            aud: "/u/e/n".into(),
            exp: Some(unix_now() + 60),
            ..Claims::default()
        };
        let token = pair.sign_with_kid(&claims, "pair-7").unwrap();
        let header = jsonwebtoken::decode_header(&token).unwrap();
        assert_eq!(header.kid.as_deref(), Some("pair-7"));
        assert_eq!(header.alg, Algorithm::RS256);
        assert_eq!(verifier().verify(&token).unwrap(), "alice");
        // Without a kid, as before.
        let plain = pair.sign(&claims).unwrap();
        assert_eq!(jsonwebtoken::decode_header(&plain).unwrap().kid, None);
    }

    #[test]
    fn a_key_lookup_is_asked_with_the_kid_and_its_keys_are_tried_in_order() {
        let local = Arc::new(KiteIdentity {
            username: "u".into(),
            environment: "e".into(),
            name: "n".into(),
            ..KiteIdentity::default()
        });
        let right = DecodingKey::from_rsa_pem(KONTROL_PUB.as_bytes()).unwrap();
        let other = KeyPair::generate(1024).unwrap();
        let wrong = DecodingKey::from_rsa_pem(other.public_pem.as_bytes()).unwrap();
        let asked = Arc::new(Mutex::new(Vec::new()));
        let seen = asked.clone();
        let lookup: KeyLookup = Arc::new(move |kid: Option<&str>| {
            lock(&seen).push(kid.map(str::to_owned));
            match kid {
                Some("good") => vec![wrong.clone(), right.clone()],
                Some("bad") => vec![wrong.clone()],
                None => vec![right.clone()],
                Some(_) => Vec::new(),
            }
        });
        let v = TokenVerifier::with_key_lookup("kontrol", lookup, local);
        let now = unix_now();
        let claims = Claims {
            iss: "kontrol".into(),
            sub: "alice".into(),
            aud: "/u/e/n".into(),
            exp: Some(now + 60),
            ..Claims::default()
        };
        let pair = KeyPair {
            private_pem: KONTROL_PEM.to_owned(),
            public_pem: KONTROL_PUB.to_owned(),
        };
        let signed = |kid: Option<&str>, jti: &str| {
            let claims = Claims {
                jti: jti.into(),
                ..claims.clone()
            };
            match kid {
                Some(kid) => pair.sign_with_kid(&claims, kid).unwrap(),
                None => pair.sign(&claims).unwrap(),
            }
        };
        // The second key of the answer verifies it; no kid is asked as `None`.
        assert_eq!(v.verify(&signed(Some("good"), "1")).unwrap(), "alice");
        assert_eq!(v.verify(&signed(None, "2")).unwrap(), "alice");
        // Only wrong keys, or none: a bad signature, in Go's words.
        for kid in ["bad", "unknown"] {
            let err = v.verify(&signed(Some(kid), kid)).unwrap_err();
            assert!(matches!(err, VerifyError::Signature(_)), "{kid}: {err:?}");
            assert_eq!(err.to_string(), "token is expired");
        }
        assert_eq!(
            *lock(&asked),
            [Some("good"), None, Some("bad"), Some("unknown")].map(|k| k.map(str::to_owned))
        );
        // The issuer is checked before any key is looked up.
        let foreign = pair
            .sign_with_kid(
                &Claims {
                    iss: "mallory".into(),
                    ..claims.clone()
                },
                "good",
            )
            .unwrap();
        assert!(matches!(v.verify(&foreign), Err(VerifyError::Issuer(_))));
        assert_eq!(lock(&asked).len(), 4);
    }

    #[test]
    fn a_signing_key_signs_as_the_jwt_library_does_byte_for_byte() {
        use rsa::pkcs1::EncodeRsaPrivateKey;
        use rsa::pkcs8::DecodePrivateKey;
        let claims = Claims {
            iss: "kontrol".into(),
            sub: "alice".into(),
            aud: "/u/e/n".into(),
            exp: Some(2_000_000_000),
            jti: "j1".into(),
            ..Claims::default()
        };
        let library = |pem: &str, kid: Option<&str>| {
            let header = Header {
                kid: kid.map(str::to_owned),
                ..Header::new(Algorithm::RS256)
            };
            let key = EncodingKey::from_rsa_pem(pem.as_bytes()).unwrap();
            jsonwebtoken::encode(&header, &claims, &key).unwrap()
        };
        // The 2048-bit test key, as PKCS#8 and as PKCS#1: ring signs, with the same bytes.
        let pkcs1 = rsa::RsaPrivateKey::from_pkcs8_pem(KONTROL_PEM)
            .unwrap()
            .to_pkcs1_pem(rsa::pkcs8::LineEnding::LF)
            .unwrap()
            .to_string();
        for pem in [KONTROL_PEM, pkcs1.as_str()] {
            let key = SigningKey::from_pem(pem).unwrap();
            assert!(matches!(key.0, Signing::Ring(_)));
            for kid in [None, Some("pair-1")] {
                assert_eq!(
                    key.sign(&claims, kid).unwrap(),
                    library(pem, kid),
                    "{kid:?}"
                );
            }
        }
        assert_eq!(
            sign(KONTROL_PEM, &claims).unwrap(),
            library(KONTROL_PEM, None)
        );
        // A key ring does not sign with (1024 bits): the JWT library does.
        let small = KeyPair::generate(1024).unwrap();
        let key = SigningKey::from_pem(&small.private_pem).unwrap();
        assert!(matches!(key.0, Signing::Jwt(_)));
        assert_eq!(
            key.sign(&claims, Some("k")).unwrap(),
            library(&small.private_pem, Some("k"))
        );
        assert!(SigningKey::from_pem("not a key").is_err());
    }

    #[test]
    fn a_remembered_token_still_expires() {
        let v = verifier();
        let t = token("a", 1_000, 1_010);
        assert_eq!(v.verify_at(&t, 1_005).unwrap(), ("alice".to_owned(), 1_010));
        assert_eq!(v.verify_at(&t, 1_009).unwrap().0, "alice");
        assert_eq!(v.verifications(), 1, "the second check came from the cache");
        assert_eq!(
            v.verify_at(&t, 1_070).unwrap_err().to_string(),
            "token is expired by 1m0s"
        );
        // Before its issue time it is not valid either, cached or not.
        assert!(v.verify_at(&t, 990).is_err());
    }

    #[test]
    fn errors_keep_go_messages_and_their_causes() {
        let v = verifier();
        let e = v.verify_at("garbage", 1_000).unwrap_err();
        assert!(
            matches!(e, VerifyError::Malformed { what: "token", .. }),
            "{e:?}"
        );
        assert!(e.to_string().starts_with("malformed token: "), "{e}");
        assert!(std::error::Error::source(&e).is_some());
        // Another signature: Go's message, with the JWT library's error as the cause.
        let mut t = token("a", 1_000, 2_000).into_bytes();
        let i = t.len() - 10;
        t[i] = if t[i] == b'A' { b'B' } else { b'A' };
        let e = v
            .verify_at(&String::from_utf8(t).unwrap(), 1_500)
            .unwrap_err();
        assert!(matches!(e, VerifyError::Signature(_)), "{e:?}");
        assert_eq!(e.to_string(), "token is expired");
        assert!(std::error::Error::source(&e).is_some());
    }

    #[test]
    fn a_token_sharing_the_cache_key_is_not_taken_for_the_cached_one() {
        let v = verifier();
        let good = token("a", 1_000, 2_000);
        v.verify_at(&good, 1_500).unwrap();
        // Same last 16 bytes, different token: must be verified (and fails).
        let forged = format!("x{}", &good[1..]);
        assert_eq!(cache_key(&forged), cache_key(&good));
        assert!(v.verify_at(&forged, 1_500).is_err());
        assert_eq!(v.verifications(), 2);
    }

    #[test]
    fn the_cache_stays_bounded() {
        let mut v = verifier();
        v.cache_limit = 8;
        for i in 0..40 {
            let t = token(&i.to_string(), 1_000, 2_000);
            v.verify_at(&t, 1_500).unwrap();
            assert!(v.lock().len() <= 8);
        }
        // Expired entries are dropped first when the cache is full.
        let mut v = verifier();
        v.cache_limit = 4;
        for i in 0..3 {
            v.verify_at(&token(&format!("old{i}"), 1_000, 1_100), 1_050)
                .unwrap();
        }
        v.verify_at(&token("x", 1_000, 9_000), 1_050).unwrap();
        v.verify_at(&token("y", 1_000, 9_000), 5_000).unwrap();
        assert_eq!(
            v.lock().len(),
            2,
            "the three expired ones went, x and y stay"
        );
    }
}
