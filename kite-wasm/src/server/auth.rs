//! Authentication of a server's requests, as a Go kite does it: `token` and `kiteKey`
//! credentials checked against the trusted Kontrol key by kite-core's rules
//! (`kite_core::auth::verify_token`, `verify_kite_key`: RS256/384/512 only, issuer, times with
//! leeway, audience), signatures checked by Node's `crypto` through the driver, each credential
//! verified once and remembered (a bounded cache) until it expires; custom authenticators by
//! credential type.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;

use js_sys::{Array, Function, Object};
use kite_core::auth::{RsaJwt, TokenRules, Verified, verify_kite_key, verify_token};
use kite_core::tree::TreeRequest;
use kite_core::{ErrorKind, Kite as Identity, KiteError};
use wasm_bindgen::prelude::*;

use super::Driver;
use crate::convert::Js;
use crate::options::{get, string, type_error};

/// Credentials remembered at most; when full, expired ones go, then all.
const CACHE_LIMIT: usize = 16_384;

/// A server's checks of credentials.
pub(crate) struct Verifier {
    /// The trusted Kontrol public key (PEM, trimmed); empty: `token` and `kiteKey` are refused.
    kontrol_key: String,
    /// The trusted Kontrol user, which tokens must name as issuer.
    issuer: String,
    local: Identity,
    leeway: i64,
    allow_root_audience: bool,
    /// Custom checks by credential type.
    authenticators: HashMap<String, Function>,
    driver: Driver,
    /// Accepted credentials (`type`, key) with their user and validity.
    accepted: RefCell<HashMap<(String, String), Verified>>,
    verifications: Cell<u64>,
}

fn unix_now() -> i64 {
    (js_sys::Date::now() / 1000.0) as i64
}

impl Verifier {
    /// Reads the `auth` option: `{kontrolKey, kontrolUser, leeway, allowRootAudience,
    /// authenticators: {type: fn}}`.
    pub(crate) fn from_options(
        auth: &JsValue,
        local: Identity,
        driver: Driver,
    ) -> Result<Verifier, JsValue> {
        let mut authenticators = HashMap::new();
        if let Some(list) = get(auth, "authenticators") {
            for entry in Object::entries(list.unchecked_ref()).iter() {
                let pair: Array = entry.unchecked_into();
                let name = pair.get(0).as_string().unwrap_or_default();
                let f = pair.get(1).dyn_into::<Function>().map_err(|_| {
                    type_error(&format!("auth.authenticators.{name} must be a function"))
                })?;
                authenticators.insert(name, f);
            }
        }
        Ok(Verifier {
            kontrol_key: string(auth, "kontrolKey")
                .unwrap_or_default()
                .trim()
                .to_owned(),
            issuer: string(auth, "kontrolUser").unwrap_or_else(|| "koding".to_owned()),
            local,
            leeway: get(auth, "leeway")
                .and_then(|x| x.as_f64())
                .map_or(0, |x| x.max(0.0) as i64),
            allow_root_audience: get(auth, "allowRootAudience")
                .and_then(|x| x.as_bool())
                .unwrap_or(false),
            authenticators,
            driver,
            accepted: RefCell::new(HashMap::new()),
            verifications: Cell::new(0),
        })
    }

    /// Credentials checked cryptographically so far (cache misses).
    pub(crate) fn verifications(&self) -> u64 {
        self.verifications.get()
    }

    fn signature_ok(&self, jwt: &RsaJwt<'_>, pem: &str) -> bool {
        self.driver
            .verify(jwt.alg.hash(), pem, jwt.signed, &jwt.signature)
    }

    /// The authenticated username of a request, or an `authenticationError` with Go's message.
    pub(crate) async fn authenticate(&self, req: &TreeRequest<Js>) -> Result<String, KiteError> {
        let denied = |m: String| KiteError::new(ErrorKind::Authentication, m);
        let Some(auth) = &req.auth else {
            return Err(denied("No authentication information is provided".into()));
        };
        if let Some(check) = self.authenticators.get(&auth.kind) {
            return self
                .custom(check, auth, req)
                .await
                .map_err(|e| denied(format!("{}: {}", auth.kind, e.message)));
        }
        if auth.kind != "token" && auth.kind != "kiteKey" {
            return Err(denied(format!(
                "Unknown authentication type: {}",
                auth.kind
            )));
        }
        if self.kontrol_key.is_empty() {
            return Err(denied(format!(
                "{}: kontrol key is not set in config",
                auth.kind
            )));
        }
        let now = unix_now();
        let key = (auth.kind.clone(), auth.key.clone());
        if let Some(v) = self.accepted.borrow().get(&key)
            && now <= v.until
        {
            return Ok(v.username.clone());
        }
        self.verifications.set(self.verifications.get() + 1);
        let verified = if auth.kind == "token" {
            let rules = TokenRules {
                issuer: &self.issuer,
                local: &self.local,
                leeway: self.leeway,
                allow_root_audience: self.allow_root_audience,
            };
            verify_token(&auth.key, &rules, now, |jwt| {
                self.signature_ok(jwt, &self.kontrol_key)
            })
        } else {
            verify_kite_key(
                &auth.key,
                |pem| pem == self.kontrol_key,
                |jwt, pem| self.signature_ok(jwt, pem),
            )
        }
        .map_err(|e| denied(format!("{}: {e}", auth.kind)))?;
        let mut accepted = self.accepted.borrow_mut();
        if accepted.len() >= CACHE_LIMIT {
            accepted.retain(|_, v| v.until >= now);
            if accepted.len() >= CACHE_LIMIT {
                accepted.clear();
            }
        }
        accepted.insert(key, verified.clone());
        Ok(verified.username)
    }

    /// A custom authenticator: `(authentication, kite) => username | true | false` (or a
    /// promise of one); throwing refuses with the thrown message.
    async fn custom(
        &self,
        check: &Function,
        auth: &kite_core::Auth,
        req: &TreeRequest<Js>,
    ) -> Result<String, KiteError> {
        let verdict = crate::api::ask(check, auth, req).await?;
        match verdict.as_string() {
            Some(username) if !username.is_empty() => Ok(username),
            _ if verdict.as_bool() == Some(true) => Ok(req.kite.username.clone()),
            _ => Err(KiteError::new(ErrorKind::Authentication, "access denied")),
        }
    }
}
