//! Credentials: the JWT claims of kite keys and tokens, and the rules a kite applies to them
//! that need no cryptography (times, audience). Signature checks belong to the drivers
//! (jsonwebtoken in kite-native), which call these with the verified claims and their clock.

use serde::{Deserialize, Serialize};

use crate::identity::Kite;

/// The claims of a kite key or token, as Go kite writes them (jwt-go v3 `StandardClaims` plus
/// `kontrolKey` and `kontrolURL`): `aud` is a string, times are Unix seconds, empty claims are
/// left out.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Claims {
    /// Audience: the kite path prefix this token may call (`/user/env/name`), or `/`.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub aud: String,
    /// Expiry.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub exp: Option<i64>,
    /// Token id.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub jti: String,
    /// Issued at.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub iat: Option<i64>,
    /// Issuer: the Kontrol's username.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub iss: String,
    /// Not before.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub nbf: Option<i64>,
    /// Subject: the username the credential authenticates.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub sub: String,
    /// Kite keys: the Kontrol public key (PEM) that signed the key.
    #[serde(rename = "kontrolKey", skip_serializing_if = "String::is_empty")]
    pub kontrol_key: String,
    /// Kite keys: the Kontrol URL.
    #[serde(rename = "kontrolURL", skip_serializing_if = "String::is_empty")]
    pub kontrol_url: String,
}

/// Checks `exp`, `iat` and `nbf` against `now` (Unix seconds), each allowed `leeway` seconds
/// of clock skew. The messages are Go's (jwt-go), which clients look for: an expired token
/// says `token is expired by <duration>`.
pub fn check_times(claims: &Claims, now: i64, leeway: i64) -> Result<(), String> {
    if let Some(exp) = claims.exp
        && now > exp.saturating_add(leeway)
    {
        return Err(format!(
            "token is expired by {}",
            go_duration(now.saturating_sub(exp))
        ));
    }
    if let Some(iat) = claims.iat
        && iat > now.saturating_add(leeway)
    {
        return Err("Token used before issued".into());
    }
    if let Some(nbf) = claims.nbf
        && nbf > now.saturating_add(leeway)
    {
        return Err("token is not valid yet".into());
    }
    Ok(())
}

/// Whole seconds the way Go's `time.Duration` prints them: `45s`, `1m30s`, `2h0m5s`.
fn go_duration(secs: i64) -> String {
    let (h, m, s) = (secs / 3600, secs % 3600 / 60, secs % 60);
    if h > 0 {
        format!("{h}h{m}m{s}s")
    } else if m > 0 {
        format!("{m}m{s}s")
    } else {
        format!("{s}s")
    }
}

/// Checks that a token's audience lets it call `local`, as Go kite does: the audience is a
/// kite path prefix (starting with `/`, as Go's `KiteFromString` requires); its username must equal ours, its environment and name must equal ours
/// unless empty; the other fields are not checked. The root audience `/` is accepted only when
/// `allow_root` is set (Go accepts it everywhere, so any token from the same Kontrol could call
/// any kite).
pub fn check_audience(aud: &str, local: &Kite, allow_root: bool) -> Result<(), String> {
    match aud {
        "" => return Err("token has no audience".into()),
        "/" if allow_root => return Ok(()),
        "/" => return Err("root audience (/) is not accepted".into()),
        _ => {}
    }
    let Some(path) = aud.strip_prefix('/') else {
        return Err(format!("invalid audience: {aud}"));
    };
    let fields: Vec<&str> = path.split('/').collect();
    if fields.len() > 7 {
        return Err(format!("invalid audience: {aud}"));
    }
    let field = |i: usize| fields.get(i).copied().unwrap_or("");
    if field(0) != local.username {
        return Err(format!(
            "audience: username {:?} not allowed ({aud})",
            field(0)
        ));
    }
    if !field(1).is_empty() && field(1) != local.environment {
        return Err(format!(
            "audience: environment {:?} not allowed ({aud})",
            field(1)
        ));
    }
    if !field(2).is_empty() && field(2) != local.name {
        return Err(format!("audience: kite {:?} not allowed ({aud})", field(2)));
    }
    Ok(())
}

/// The RSA algorithms a kite accepts credentials signed with (Go kite's: RS256, RS384, RS512).
/// Any other `alg` — `none`, HMAC, ECDSA — is refused before a key is looked at.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RsaAlgorithm {
    /// RSASSA-PKCS1-v1_5 with SHA-256.
    Rs256,
    /// RSASSA-PKCS1-v1_5 with SHA-384.
    Rs384,
    /// RSASSA-PKCS1-v1_5 with SHA-512.
    Rs512,
}

impl RsaAlgorithm {
    /// The hash's name as WebCrypto and Node's `crypto` spell it (`sha256`, ...).
    pub fn hash(self) -> &'static str {
        match self {
            RsaAlgorithm::Rs256 => "sha256",
            RsaAlgorithm::Rs384 => "sha384",
            RsaAlgorithm::Rs512 => "sha512",
        }
    }
}

/// A kite key or token read without checking its signature: what a driver needs to check the
/// signature with its platform's crypto (the algorithm comes from this list, never from a
/// library that would take it from the token), and the claims to check afterwards.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RsaJwt<'a> {
    /// The algorithm the header names (one of the three accepted).
    pub alg: RsaAlgorithm,
    /// The claims, unverified.
    pub claims: Claims,
    /// The signed text: `header.payload`.
    pub signed: &'a str,
    /// The signature's bytes.
    pub signature: Vec<u8>,
}

/// Why credentials are refused: the messages Go kite sends (a peer receives them inside an
/// `authenticationError`, after the credential type, e.g. `token: token is expired`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CredentialError {
    /// Not a JWT, or its claims are not a kite key's or token's: `malformed <what>: <why>`.
    Malformed {
        /// `token` or `kite key`.
        what: &'static str,
        /// What is wrong with it.
        why: String,
    },
    /// The header names another algorithm than RS256, RS384 or RS512 (or none).
    Algorithm,
    /// The issuer (`iss`) is not the trusted Kontrol user.
    Issuer(String),
    /// A token's signature is not the trusted key's. Go says `token is expired`, which makes Go
    /// clients fetch a new token after a key rotation.
    Signature,
    /// A kite key's signature is not the key's it names.
    KiteKeySignature,
    /// `exp`, `nbf` or `iat` refused by [`check_times`].
    Times(String),
    /// The audience refused by [`check_audience`].
    Audience(String),
    /// No user (`sub`).
    NoUsername,
    /// A kite key without its `kontrolKey` claim.
    NoKontrolKey,
    /// A kite key whose `kontrolKey` is not trusted.
    Untrusted,
}

impl std::fmt::Display for CredentialError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CredentialError::Malformed { what, why } => write!(f, "malformed {what}: {why}"),
            CredentialError::Algorithm => f.write_str("invalid signing method"),
            CredentialError::Issuer(iss) => write!(f, "issuer is not trusted: {iss}"),
            CredentialError::Signature => f.write_str("token is expired"),
            CredentialError::KiteKeySignature => f.write_str("crypto/rsa: verification error"),
            CredentialError::Times(m) | CredentialError::Audience(m) => f.write_str(m),
            CredentialError::NoUsername => f.write_str("token has no username"),
            CredentialError::NoKontrolKey => f.write_str("no kontrol key found"),
            CredentialError::Untrusted => f.write_str("kontrol key is not trusted"),
        }
    }
}

impl std::error::Error for CredentialError {}

impl<'a> RsaJwt<'a> {
    /// Reads `jwt` (`what`: `token` or `kite key`, for messages): three base64url parts, a
    /// header naming RS256/384/512, claims in Go's layout.
    pub fn parse(jwt: &'a str, what: &'static str) -> Result<RsaJwt<'a>, CredentialError> {
        use base64::Engine;
        let malformed = |why: &str| CredentialError::Malformed {
            what,
            why: why.to_owned(),
        };
        let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
        let mut parts = jwt.split('.');
        let (Some(header), Some(payload), Some(signature), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(malformed("not three parts"));
        };
        let header = b64
            .decode(header.trim_end_matches('='))
            .map_err(|_| malformed("header is not base64url"))?;
        #[derive(Deserialize)]
        struct Header {
            alg: Option<String>,
        }
        let header: Header =
            serde_json::from_slice(&header).map_err(|_| malformed("header is not JSON"))?;
        let alg = match header.alg.as_deref() {
            Some("RS256") => RsaAlgorithm::Rs256,
            Some("RS384") => RsaAlgorithm::Rs384,
            Some("RS512") => RsaAlgorithm::Rs512,
            _ => return Err(CredentialError::Algorithm),
        };
        let payload = b64
            .decode(payload.trim_end_matches('='))
            .map_err(|_| malformed("claims are not base64url"))?;
        let claims: Claims =
            serde_json::from_slice(&payload).map_err(|e| malformed(&format!("claims: {e}")))?;
        let signature = b64
            .decode(signature.trim_end_matches('='))
            .map_err(|_| malformed("signature is not base64url"))?;
        let signed = &jwt[..jwt.len() - jwt.rsplit('.').next().map_or(0, str::len) - 1];
        Ok(RsaJwt {
            alg,
            claims,
            signed,
            signature,
        })
    }
}

/// What a kite accepts `token` credentials against (Go's `AuthenticateFromToken`).
#[derive(Debug, Clone)]
pub struct TokenRules<'a> {
    /// The trusted Kontrol user: tokens must name it as `iss`.
    pub issuer: &'a str,
    /// The kite being called, for the audience.
    pub local: &'a Kite,
    /// Seconds of clock skew allowed on `exp`, `nbf` and `iat`.
    pub leeway: i64,
    /// Whether the root audience `/` is accepted (see [`check_audience`]).
    pub allow_root_audience: bool,
}

/// A credential that passed every check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verified {
    /// The authenticated user (`sub`).
    pub username: String,
    /// Until when (Unix seconds) it stays valid: `exp` plus leeway, `i64::MAX` without `exp`.
    pub until: i64,
}

/// Checks a token the way every kite does, in Go's order: algorithm, issuer, signature (by
/// `signature_ok`, the driver's crypto, asked only after the cheap checks), times, user,
/// audience.
pub fn verify_token(
    token: &str,
    rules: &TokenRules<'_>,
    now: i64,
    signature_ok: impl FnOnce(&RsaJwt<'_>) -> bool,
) -> Result<Verified, CredentialError> {
    let jwt = RsaJwt::parse(token, "token")?;
    if jwt.claims.iss != rules.issuer {
        return Err(CredentialError::Issuer(jwt.claims.iss));
    }
    if !signature_ok(&jwt) {
        return Err(CredentialError::Signature);
    }
    check_times(&jwt.claims, now, rules.leeway).map_err(CredentialError::Times)?;
    if jwt.claims.sub.is_empty() {
        return Err(CredentialError::NoUsername);
    }
    check_audience(&jwt.claims.aud, rules.local, rules.allow_root_audience)
        .map_err(CredentialError::Audience)?;
    let until = jwt
        .claims
        .exp
        .map_or(i64::MAX, |t| t.saturating_add(rules.leeway));
    Ok(Verified {
        username: jwt.claims.sub,
        until,
    })
}

/// Checks a kite key the way a kite does (Go's `AuthenticateFromKiteKey`, without its holes):
/// its `kontrolKey` claim must be trusted (`trusted`), and the key signed by that key
/// (`signature_ok`, given the key's PEM), and it must name a user. Kite keys do not expire.
pub fn verify_kite_key(
    kite_key: &str,
    trusted: impl FnOnce(&str) -> bool,
    signature_ok: impl FnOnce(&RsaJwt<'_>, &str) -> bool,
) -> Result<Verified, CredentialError> {
    let jwt = RsaJwt::parse(kite_key, "kite key")?;
    let pem = jwt.claims.kontrol_key.trim();
    if pem.is_empty() {
        return Err(CredentialError::NoKontrolKey);
    }
    if !trusted(pem) {
        return Err(CredentialError::Untrusted);
    }
    if !signature_ok(&jwt, pem) {
        return Err(CredentialError::KiteKeySignature);
    }
    if jwt.claims.sub.is_empty() {
        return Err(CredentialError::NoUsername);
    }
    Ok(Verified {
        username: jwt.claims.sub.clone(),
        until: i64::MAX,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn me() -> Kite {
        Kite {
            username: "devrim".into(),
            environment: "production".into(),
            name: "math".into(),
            version: "1.0.0".into(),
            ..Kite::default()
        }
    }

    #[test]
    fn claims_round_trip_in_go_layout() {
        let c = Claims {
            aud: "/devrim/production/math".into(),
            exp: Some(100),
            iss: "koding".into(),
            sub: "devrim".into(),
            ..Claims::default()
        };
        let text = serde_json::to_string(&c).unwrap();
        assert_eq!(
            text,
            r#"{"aud":"/devrim/production/math","exp":100,"iss":"koding","sub":"devrim"}"#
        );
        assert_eq!(serde_json::from_str::<Claims>(&text).unwrap(), c);
        let key: Claims =
            serde_json::from_str(r#"{"kontrolKey":"PEM","kontrolURL":"http://k","jti":"j"}"#)
                .unwrap();
        assert_eq!(
            (key.kontrol_key.as_str(), key.kontrol_url.as_str()),
            ("PEM", "http://k")
        );
    }

    #[test]
    fn times_with_leeway_and_go_wording() {
        let c = |exp, iat, nbf| Claims {
            exp,
            iat,
            nbf,
            ..Claims::default()
        };
        assert!(check_times(&c(Some(100), Some(50), Some(50)), 100, 0).is_ok());
        assert!(check_times(&c(Some(100), None, None), 104, 5).is_ok());
        assert_eq!(
            check_times(&c(Some(100), None, None), 190, 0).unwrap_err(),
            "token is expired by 1m30s"
        );
        assert_eq!(
            check_times(&c(Some(0), None, None), 7205, 0).unwrap_err(),
            "token is expired by 2h0m5s"
        );
        assert_eq!(
            check_times(&c(None, Some(200), None), 100, 5).unwrap_err(),
            "Token used before issued"
        );
        assert_eq!(
            check_times(&c(None, None, Some(200)), 100, 5).unwrap_err(),
            "token is not valid yet"
        );
        assert!(check_times(&c(None, None, Some(103)), 100, 5).is_ok());
    }

    #[test]
    fn audience_rule() {
        let ok = [
            "/devrim",
            "/devrim/production",
            "/devrim//math",
            "/devrim/production/math/9.9.9",
        ];
        for aud in ok {
            assert!(check_audience(aud, &me(), false).is_ok(), "{aud}");
        }
        let bad = [
            "",
            "/",
            "/other",
            "/devrim/staging",
            "/devrim/production/other",
            "//production/math",
            "/a/b/c/d/e/f/g/h",
            // Found by the credentials fuzz target: an audience without its leading slash
            // was read as if it had one; Go refuses it (not a kite path).
            "devrim",
            "devrim/production/math",
        ];
        for aud in bad {
            assert!(check_audience(aud, &me(), false).is_err(), "{aud}");
        }
        assert!(check_audience("/", &me(), true).is_ok());
        assert_eq!(
            check_audience("/other/production/math", &me(), false).unwrap_err(),
            "audience: username \"other\" not allowed (/other/production/math)"
        );
    }
    fn jwt(header: &str, claims: &str) -> String {
        use base64::Engine;
        let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
        format!(
            "{}.{}.{}",
            b64.encode(header),
            b64.encode(claims),
            b64.encode(b"sig")
        )
    }

    #[test]
    fn only_rsa_algorithms_are_read() {
        let claims = r#"{"iss":"koding","sub":"devrim"}"#;
        for alg in ["RS256", "RS384", "RS512"] {
            let t = jwt(&format!(r#"{{"alg":"{alg}","typ":"JWT"}}"#), claims);
            let read = RsaJwt::parse(&t, "token").unwrap();
            assert_eq!(read.signature, b"sig");
            assert_eq!(read.signed, &t[..t.rfind('.').unwrap()]);
            assert_eq!(read.claims.sub, "devrim");
        }
        for header in [
            r#"{"alg":"none"}"#,
            r#"{"alg":"HS256"}"#,
            r#"{"alg":"ES256"}"#,
            "{}",
        ] {
            let t = jwt(header, claims);
            assert_eq!(
                RsaJwt::parse(&t, "token").unwrap_err(),
                CredentialError::Algorithm,
                "{header}"
            );
        }
        for bad in [
            "",
            "a.b",
            "a.b.c.d",
            "!!.e30.c2ln",
            &jwt("not json", claims),
        ] {
            let e = RsaJwt::parse(bad, "kite key").unwrap_err();
            assert!(
                e.to_string().starts_with("malformed kite key: "),
                "{bad}: {e}"
            );
        }
    }

    #[test]
    fn tokens_are_checked_in_go_order() {
        let local = me();
        let rules = TokenRules {
            issuer: "koding",
            local: &local,
            leeway: 5,
            allow_root_audience: false,
        };
        let t = |claims: &str| jwt(r#"{"alg":"RS256"}"#, claims);
        let good = t(r#"{"iss":"koding","sub":"alice","aud":"/devrim","exp":200}"#);
        let v = verify_token(&good, &rules, 100, |_| true).unwrap();
        assert_eq!((v.username.as_str(), v.until), ("alice", 205));
        // A bad signature reads as an expired token, as in Go.
        assert_eq!(
            verify_token(&good, &rules, 100, |_| false)
                .unwrap_err()
                .to_string(),
            "token is expired"
        );
        // The issuer is checked before the signature is asked for.
        let other = t(r#"{"iss":"mallory","sub":"alice","aud":"/devrim"}"#);
        let e = verify_token(&other, &rules, 100, |_| panic!("asked")).unwrap_err();
        assert_eq!(e.to_string(), "issuer is not trusted: mallory");
        assert_eq!(
            verify_token(&good, &rules, 300, |_| true)
                .unwrap_err()
                .to_string(),
            "token is expired by 1m40s"
        );
        let nobody = t(r#"{"iss":"koding","aud":"/devrim"}"#);
        assert_eq!(
            verify_token(&nobody, &rules, 100, |_| true).unwrap_err(),
            CredentialError::NoUsername
        );
        let elsewhere = t(r#"{"iss":"koding","sub":"alice","aud":"/other"}"#);
        assert!(matches!(
            verify_token(&elsewhere, &rules, 100, |_| true).unwrap_err(),
            CredentialError::Audience(_)
        ));
    }

    #[test]
    fn kite_keys_need_a_trusted_kontrol_key() {
        let key = jwt(
            r#"{"alg":"RS512"}"#,
            r#"{"iss":"koding","sub":"bob","kontrolKey":" PEM "}"#,
        );
        let v = verify_kite_key(&key, |k| k == "PEM", |_, k| k == "PEM").unwrap();
        assert_eq!(v.username, "bob");
        assert_eq!(
            verify_kite_key(&key, |_| false, |_, _| true).unwrap_err(),
            CredentialError::Untrusted
        );
        assert_eq!(
            verify_kite_key(&key, |_| true, |_, _| false).unwrap_err(),
            CredentialError::KiteKeySignature
        );
        let keyless = jwt(r#"{"alg":"RS256"}"#, r#"{"sub":"bob"}"#);
        assert_eq!(
            verify_kite_key(&keyless, |_| true, |_, _| true).unwrap_err(),
            CredentialError::NoKontrolKey
        );
    }
}
