//! Authentication of requests: dispatch to the authenticator of a credential's type, the
//! built-in `token` and `kiteKey` checks, and the keys a rotation replaces. The verifiers
//! themselves are [`crate::auth`].

use std::future::Future;
use std::sync::Arc;

use kite_core::{ErrorKind, KiteError};

use super::{Error, Kite, KiteInner, lock, read, write};
use crate::auth::{AudienceCheck, KiteKeyVerifier, TokenVerifier};
use crate::method::BoxFuture;
use crate::request::Request;

/// Checks credentials of one type and returns the authenticated username.
pub type Authenticator = Arc<dyn Fn(Request) -> BoxFuture<Result<String, KiteError>> + Send + Sync>;

/// The credentials a kite checks and presents, which a key rotation replaces.
pub(super) struct Credentials {
    /// The verifier of `token` credentials, if the kite trusts a Kontrol key.
    pub(super) token: Option<Arc<TokenVerifier>>,
    /// The verifier of `kiteKey` credentials, if the kite trusts a Kontrol key.
    pub(super) kite_key_verifier: Option<Arc<KiteKeyVerifier>>,
    /// The kite key this kite presents.
    pub(super) kite_key: String,
    /// The Kontrol public key this kite trusts.
    pub(super) kontrol_key: String,
    /// The audience rule of `token` credentials set with [`Kite::set_audience_check`], which
    /// verifiers made by a key rotation keep.
    pub(super) audience_check: Option<AudienceCheck>,
}

impl Kite {
    /// Accepts credentials whose `authentication.type` is `kind`: `f` returns the
    /// authenticated username or an error.
    pub fn authenticator<F, Fut>(&self, kind: &str, f: F)
    where
        F: Fn(Request) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<String, KiteError>> + Send + 'static,
    {
        let a: Authenticator = Arc::new(move |r| Box::pin(f(r)));
        write(&self.0.registry)
            .authenticators
            .insert(kind.to_owned(), a);
    }

    /// Checks `token` credentials with `verifier` from now on (replacing the one made from
    /// `Config::kontrol_key`, e.g. after a key rotation, or to change its leeway).
    pub fn set_token_verifier(&self, verifier: TokenVerifier) {
        write(&self.0.credentials).token = Some(Arc::new(verifier));
    }

    /// Decides whether a `token`'s audience lets it call this kite with `check` instead of the
    /// default rule ([`kite_core::auth::check_audience`]: the audience must be
    /// `/<username>/<environment>/<name>` of this kite, the last two may be empty): Go's
    /// `Config.VerifyAudienceFunc`. `check` gets this kite's identity and the token's `aud`
    /// (never empty) and returns `Err(reason)` to refuse; the caller is told
    /// `token: <reason>` in an `authenticationError`. It applies to the current token verifier
    /// (tokens it accepted before are verified again) and to those a key rotation makes; a
    /// verifier given to [`Kite::set_token_verifier`] afterwards keeps its own rule.
    pub fn set_audience_check(
        &self,
        check: impl Fn(&kite_core::Kite, &str) -> Result<(), String> + Send + Sync + 'static,
    ) {
        let check: AudienceCheck = Arc::new(check);
        let mut credentials = write(&self.0.credentials);
        if let Some(token) = &credentials.token {
            credentials.token = Some(Arc::new(token.with_audience(Some(check.clone()))));
        }
        credentials.audience_check = Some(check);
    }

    /// Checks `kiteKey` credentials with `verifier` from now on (replacing the one made from
    /// `Config::kontrol_key`): for example one whose [`crate::auth::TrustFn`] trusts several
    /// Kontrol keys.
    pub fn set_kite_key_verifier(&self, verifier: KiteKeyVerifier) {
        write(&self.0.credentials).kite_key_verifier = Some(Arc::new(verifier));
    }

    /// The verifier of `kiteKey` credentials, if the kite trusts a Kontrol key.
    pub fn kite_key_verifier(&self) -> Option<Arc<KiteKeyVerifier>> {
        read(&self.0.credentials).kite_key_verifier.clone()
    }

    /// The kite key this kite presents (`Config::kite_key`, or the one a rotation installed).
    pub fn kite_key(&self) -> String {
        read(&self.0.credentials).kite_key.clone()
    }

    /// The Kontrol public key this kite trusts (`Config::kontrol_key`, or a rotated one).
    pub fn kontrol_key(&self) -> String {
        read(&self.0.credentials).kontrol_key.clone()
    }

    /// Applies a key rotation announced by Kontrol (`RegisterResult.kiteKey` and
    /// `publicKey`): a new kite key replaces the one this kite presents, and is written to
    /// `write_to` (normally [`crate::kitekey::kite_key_path`]) unlike Go, which forgets it on
    /// restart; the new Kontrol public key (given, or the new kite key's `kontrolKey`) becomes the
    /// one `token` and `kiteKey` credentials are checked against.
    pub fn rotate_keys(
        &self,
        kite_key: Option<&str>,
        public_key: Option<&str>,
        write_to: Option<&std::path::Path>,
    ) -> Result<(), Error> {
        let parsed = kite_key.map(crate::kitekey::parse).transpose()?;
        let public = public_key
            .map(|p| p.trim().to_owned())
            .filter(|p| !p.is_empty())
            .or_else(|| {
                parsed
                    .as_ref()
                    .map(|k| k.claims.kontrol_key.trim().to_owned())
            })
            .filter(|p| !p.is_empty());
        if let Some(public) = &public {
            let mut token =
                TokenVerifier::new(&self.0.config.kontrol_user, public, self.0.identity.clone())?;
            if let Some(check) = read(&self.0.credentials).audience_check.clone() {
                token = token.with_audience(Some(check));
            }
            self.set_token_verifier(token);
            self.set_kite_key_verifier(
                KiteKeyVerifier::trusting(public).with_ttl(self.0.config.verify_ttl),
            );
        }
        if let (Some(key), Some(path)) = (&parsed, write_to) {
            crate::kitekey::write_to(path, &key.token)?;
        }
        let mut keys = write(&self.0.credentials);
        if let Some(key) = parsed {
            keys.kite_key = key.token;
        }
        if let Some(public) = public {
            keys.kontrol_key = public;
        }
        Ok(())
    }

    /// The verifier of `token` credentials, if the kite trusts a Kontrol key.
    pub fn token_verifier(&self) -> Option<Arc<TokenVerifier>> {
        read(&self.0.credentials).token.clone()
    }
}

impl KiteInner {
    /// The verifier of `kiteKey` credentials, if the kite trusts a Kontrol key.
    pub(crate) fn kite_key_verifier(&self) -> Option<Arc<KiteKeyVerifier>> {
        read(&self.credentials).kite_key_verifier.clone()
    }

    /// The authenticated username of a request: a user-supplied authenticator for its
    /// `authentication.type` if there is one, else the built-in `token` check.
    pub(super) async fn authenticate(&self, req: &Request) -> Result<String, KiteError> {
        let auth_error = |m: String| KiteError::new(ErrorKind::Authentication, m);
        let auth = req
            .auth
            .as_ref()
            .ok_or_else(|| auth_error("No authentication information is provided".into()))?;
        let custom = read(&self.registry).authenticators.get(&auth.kind).cloned();
        match custom {
            Some(authenticator) => authenticator(req.clone())
                .await
                .map_err(|e| auth_error(format!("{}: {}", auth.kind, e.message))),
            None if auth.kind == "token" => {
                let verifier = read(&self.credentials).token.clone();
                let Some(verifier) = verifier else {
                    return Err(auth_error("token: kontrol key is not set in config".into()));
                };
                // The peer repeats its credentials with every call: the connection remembers
                // the last token verified (by the same verifier) until it expires.
                let now = crate::auth::unix_now();
                let mut memo = lock(&req.client.0.verified_token);
                if let Some(m) = memo.as_ref()
                    && Arc::ptr_eq(&m.auth, auth)
                    && Arc::ptr_eq(&m.verifier, &verifier)
                    && m.generation == verifier.generation()
                    && now <= m.until
                {
                    return Ok(m.username.clone());
                }
                let generation = verifier.generation();
                let (username, until) = verifier
                    .verify_until(&auth.key)
                    .map_err(|e| auth_error(format!("token: {e}")))?;
                *memo = Some(crate::client::VerifiedToken {
                    verifier,
                    generation,
                    auth: auth.clone(),
                    username: username.clone(),
                    until,
                });
                Ok(username)
            }
            None if auth.kind == "kiteKey" => {
                let verifier = read(&self.credentials).kite_key_verifier.clone();
                let Some(verifier) = verifier else {
                    return Err(auth_error(
                        "kiteKey: kontrol key is not set in config".into(),
                    ));
                };
                verifier
                    .verify(&auth.key)
                    .map_err(|e| auth_error(format!("kiteKey: {e}")))
            }
            None => Err(auth_error(format!(
                "Unknown authentication type: {}",
                auth.kind
            ))),
        }
    }
}
