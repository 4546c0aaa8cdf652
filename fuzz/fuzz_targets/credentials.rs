//! Kite keys and tokens: kite_native::kitekey::parse, kite_native::auth::TokenVerifier and
//! KiteKeyVerifier fed arbitrary and forged credentials, and kite_core::auth's claim checks.
//!
//! The first byte picks what the rest is: `T` a raw token and `K` a raw kite key (whatever is
//! accepted must carry a signature that the trusted test key (testdata/keys/kontrol.pem) made,
//! checked here with the `rsa` crate directly, and claims that pass a model of Go's rules);
//! `C` claims, a clock and a kite for `check_times` and `check_audience` against a model of
//! jwt-go's and Go kite's rules; anything else: a credential forged from the rest (header
//! algorithm, signer, claims, trailing tampering), which must be accepted exactly when the model
//! says so; these are signed with the small keys of fuzz/keys (the verifiers trust
//! `trusted.pem` there), as signing with a 2048-bit key took most of the time. Every token and
//! kite key also goes through kite-core's `verify_token` / `verify_kite_key` (the Node server's
//! rules, the signature checked by the `rsa` crate as Node's crypto would), which must decide
//! exactly as kite-native's verifiers do.
#![no_main]

use std::sync::Arc;

use arbitrary::{Arbitrary, Unstructured};
use kite_core::Kite;
use kite_core::auth::{
    Claims, TokenRules, check_audience, check_times, verify_kite_key, verify_token,
};
use kite_fuzz::{Pair, RsaAlg};
use kite_native::auth::{KiteKeyVerifier, TokenVerifier, VerifyError};
use libfuzzer_sys::fuzz_target;

const ISSUER: &str = "kontrol";
const LEEWAY: i64 = 5;

fn local() -> Kite {
    Kite {
        username: "alice".into(),
        environment: "prod".into(),
        name: "math".into(),
        version: "1.0.0".into(),
        region: "eu".into(),
        hostname: "h".into(),
        id: "k1".into(),
    }
}

/// Go kite's audience rule (`verifyAudience`: the audience is a kite path, its username must be
/// ours, environment and name ours unless empty), refusing the root audience unless allowed, and
/// more than seven fields (Go's KiteFromString would keep them in the id).
fn audience_model(aud: &str, local: &Kite, allow_root: bool) -> bool {
    if aud.is_empty() {
        return false;
    }
    if aud == "/" {
        return allow_root;
    }
    let Some(rest) = aud.strip_prefix('/') else {
        return false;
    };
    let fields: Vec<&str> = rest.split('/').collect();
    if fields.len() > 7 {
        return false;
    }
    let field = |i: usize| fields.get(i).copied().unwrap_or("");
    field(0) == local.username
        && (field(1).is_empty() || field(1) == local.environment)
        && (field(2).is_empty() || field(2) == local.name)
}

/// jwt-go's time rules with `leeway` seconds of skew, in exact arithmetic.
fn times_model(c: &Claims, now: i64, leeway: i64) -> bool {
    let (now, leeway) = (i128::from(now), i128::from(leeway));
    c.exp.is_none_or(|e| now <= i128::from(e) + leeway)
        && c.iat.is_none_or(|t| i128::from(t) <= now + leeway)
        && c.nbf.is_none_or(|t| i128::from(t) <= now + leeway)
}

/// Whether a token with these claims, signed by the trusted key, is acceptable at `now`.
fn token_claims_ok(c: &Claims, now: i64) -> bool {
    c.iss == ISSUER
        && times_model(c, now, LEEWAY)
        && !c.sub.is_empty()
        && audience_model(&c.aud, &local(), false)
}

/// The model's verdict on a token: signed by the trusted key (RSA), claims readable, rules met.
fn token_model(token: &str, trust: &Pair, now: i64) -> Option<String> {
    let (_, payload) = kite_fuzz::rsa_verifies(token, &trust.public)?;
    let claims: Claims = serde_json::from_slice(&payload).ok()?;
    token_claims_ok(&claims, now).then_some(claims.sub)
}

/// kite-core's `verify_token` (the Node server's rules, which leave the signature to the
/// platform's crypto: here the `rsa` crate) on `token` at `now`.
fn core_token(token: &str, trust: &Pair, now: i64) -> Option<String> {
    let local = local();
    let rules = TokenRules {
        issuer: ISSUER,
        local: &local,
        leeway: LEEWAY,
        allow_root_audience: false,
    };
    let verified = verify_token(token, &rules, now, |jwt| {
        let checked = kite_fuzz::rsa_verifies(token, &trust.public);
        // The signed text and algorithm the driver is handed are the token's own.
        if let Some((alg, _)) = checked {
            let hash = match alg {
                RsaAlg::Rs256 => "sha256",
                RsaAlg::Rs384 => "sha384",
                RsaAlg::Rs512 => "sha512",
            };
            assert_eq!(jwt.alg.hash(), hash);
            assert!(token.starts_with(jwt.signed) && token[jwt.signed.len()..].starts_with('.'));
        }
        checked.is_some()
    });
    verified.ok().map(|v| v.username)
}

/// Verifies `token`; whatever is accepted, the model accepts too (at some second of the
/// check), and kite-core's verifier decides as kite-native's does. Returns ours, and the
/// model's verdict when it did not change during the check.
fn check_token(token: &str, trust: &Pair) -> (Result<String, VerifyError>, Option<Option<String>>) {
    let verifier =
        TokenVerifier::new(ISSUER, trust.public_pem, Arc::new(local())).expect("test key");
    let before = kite_fuzz::unix_now();
    let ours = verifier.verify(token);
    let core = core_token(token, trust, before);
    let after = kite_fuzz::unix_now();
    if before == after {
        assert_eq!(
            core,
            ours.clone().ok(),
            "kite-core and kite-native differ on {token:?}"
        );
    }
    let (m1, m2) = (
        token_model(token, trust, before),
        token_model(token, trust, after),
    );
    if let Ok(user) = &ours {
        assert!(
            m1.as_ref() == Some(user) || m2.as_ref() == Some(user),
            "accepted a token the model refuses: {token:?} as {user:?}"
        );
    }
    (ours, (m1 == m2).then_some(m1))
}

/// Checks `key` as a kite key: `kitekey::parse` accepts only what its own `kontrolKey` signed,
/// and the verifier only what the trusted key signed, for a user. Returns both answers.
fn check_kite_key(key: &str, trust: &Pair) -> (bool, Result<String, VerifyError>) {
    let parsed = kite_native::kitekey::parse(key);
    if let Ok(k) = &parsed {
        assert_eq!(k.token, key.trim());
        let public = kite_fuzz::public_from_pem(&k.claims.kontrol_key)
            .expect("kitekey::parse accepted a kontrolKey that is no RSA public key");
        let (_, payload) = kite_fuzz::rsa_verifies(&k.token, &public)
            .expect("kitekey::parse accepted a key its kontrolKey did not sign");
        assert_eq!(
            serde_json::from_slice::<Claims>(&payload).unwrap(),
            k.claims
        );
    }
    let verifier = KiteKeyVerifier::trusting(trust.public_pem);
    let ours = verifier.verify(key);
    let core = verify_kite_key(
        key,
        |pem| pem == trust.public_pem.trim(),
        |_, pem| {
            kite_fuzz::public_from_pem(pem)
                .is_some_and(|public| kite_fuzz::rsa_verifies(key, &public).is_some())
        },
    );
    assert_eq!(
        core.map(|v| v.username).ok(),
        ours.clone().ok(),
        "kite-core and kite-native differ on the kite key {key:?}"
    );
    if let Ok(user) = &ours {
        let (_, payload) = kite_fuzz::rsa_verifies(key, &trust.public)
            .expect("accepted a kite key the trusted key did not sign");
        let claims: Claims = serde_json::from_slice(&payload).unwrap();
        assert_eq!(claims.kontrol_key.trim(), trust.public_pem.trim());
        assert!(!user.is_empty());
        assert_eq!(&claims.sub, user);
    }
    (parsed.is_ok(), ours)
}

#[derive(Debug, Arbitrary)]
struct ClaimsArb {
    aud: String,
    exp: Option<i64>,
    jti: String,
    iat: Option<i64>,
    iss: String,
    nbf: Option<i64>,
    sub: String,
    kontrol_key: String,
    kontrol_url: String,
}

impl From<ClaimsArb> for Claims {
    fn from(c: ClaimsArb) -> Claims {
        Claims {
            aud: c.aud,
            exp: c.exp,
            jti: c.jti,
            iat: c.iat,
            iss: c.iss,
            nbf: c.nbf,
            sub: c.sub,
            kontrol_key: c.kontrol_key,
            kontrol_url: c.kontrol_url,
        }
    }
}

#[derive(Debug, Arbitrary)]
struct ClaimsInput {
    claims: ClaimsArb,
    now: i64,
    leeway: u32,
    allow_root: bool,
    local: LocalInput,
}

#[derive(Debug, Arbitrary)]
struct LocalInput {
    username: String,
    environment: String,
    name: String,
}

fn check_claims(input: ClaimsInput) {
    let c = &Claims::from(input.claims);
    let text = kite_core::json::to_string(c).unwrap();
    assert_eq!(&serde_json::from_str::<Claims>(&text).unwrap(), c);

    let leeway = i64::from(input.leeway);
    let ours = check_times(c, input.now, leeway);
    let extreme = [c.exp, c.iat, c.nbf, Some(input.now)]
        .into_iter()
        .flatten()
        .any(|t| t.unsigned_abs() > 1 << 62);
    if !extreme {
        assert_eq!(
            ours.is_ok(),
            times_model(c, input.now, leeway),
            "{c:?} at {}",
            input.now
        );
    }
    if let Err(msg) = &ours
        && let Some(by) = msg.strip_prefix("token is expired by ")
    {
        // The Go duration in the message is how long ago the token expired.
        let expected = input.now.saturating_sub(c.exp.unwrap());
        assert!(expected > 0);
        // Go durations end at about 292 years; past that only the shape is checked.
        if expected < 9_000_000_000 {
            let d = kite_native::config::parse_go_duration(by).expect("a Go duration");
            assert_eq!(d.as_secs() as i64, expected, "{msg}");
        } else {
            let shape = by
                .bytes()
                .all(|b| b.is_ascii_digit() || b"hms".contains(&b));
            assert!(by.ends_with('s') && shape, "{msg}");
        }
    }

    let kite = Kite {
        username: input.local.username.clone(),
        environment: input.local.environment.clone(),
        name: input.local.name.clone(),
        ..Kite::default()
    };
    assert_eq!(
        check_audience(&c.aud, &kite, input.allow_root).is_ok(),
        audience_model(&c.aud, &kite, input.allow_root),
        "audience {:?} for {kite:?}",
        c.aud
    );
}

#[derive(Debug, Arbitrary)]
enum Alg {
    Rs256,
    Rs384,
    Rs512,
    /// HS256 keyed with the trusted public key: the algorithm confusion forgery.
    Hs256WithPublicKey,
    None,
    Named(String),
}

#[derive(Debug, Arbitrary)]
enum Signer {
    Trusted,
    Other,
    Bytes(Vec<u8>),
}

#[derive(Debug, Arbitrary)]
enum Text {
    Expected,
    Empty,
    Other(String),
}

#[derive(Debug, Arbitrary)]
enum Time {
    Absent,
    /// Seconds from now.
    Relative(i16),
    Absolute(i64),
}

#[derive(Debug, Arbitrary)]
enum KontrolKey {
    Trusted,
    /// The trusted key with whitespace around it.
    TrustedPadded,
    Other,
    Text(String),
    Absent,
}

#[derive(Debug, Arbitrary)]
struct Forge {
    alg: Alg,
    signer: Signer,
    extra_header: bool,
    iss: Text,
    sub: Text,
    aud: Text,
    exp: Time,
    iat: Time,
    nbf: Time,
    kontrol_key: KontrolKey,
    /// Replace the byte at this index (modulo the length) with this one.
    tamper: Option<(u16, u8)>,
}

fn text(t: &Text, expected: &str) -> Option<String> {
    match t {
        Text::Expected => Some(expected.to_owned()),
        Text::Empty => None,
        Text::Other(s) => Some(s.clone()),
    }
}

fn time(t: &Time, now: i64) -> Option<i64> {
    match t {
        Time::Absent => None,
        Time::Relative(d) => Some(now + i64::from(*d)),
        Time::Absolute(t) => Some(*t),
    }
}

fn forge(f: Forge) {
    let now = kite_fuzz::unix_now();
    let (trusted, other) = (kite_fuzz::fast_trusted(), kite_fuzz::fast_other());
    let alg_name = match &f.alg {
        Alg::Rs256 => "RS256".to_owned(),
        Alg::Rs384 => "RS384".to_owned(),
        Alg::Rs512 => "RS512".to_owned(),
        Alg::Hs256WithPublicKey => "HS256".to_owned(),
        Alg::None => "none".to_owned(),
        Alg::Named(s) => s.clone(),
    };
    let mut header = serde_json::json!({"alg": alg_name, "typ": "JWT"});
    if f.extra_header {
        header["kid"] = "key-1".into();
    }
    let mut payload = serde_json::Map::new();
    let mut put = |k: &str, v: serde_json::Value| {
        payload.insert(k.to_owned(), v);
    };
    if let Some(v) = text(&f.iss, ISSUER) {
        put("iss", v.into());
    }
    if let Some(v) = text(&f.sub, "bob") {
        put("sub", v.into());
    }
    if let Some(v) = text(&f.aud, "/alice/prod/math") {
        put("aud", v.into());
    }
    for (k, t) in [("exp", &f.exp), ("iat", &f.iat), ("nbf", &f.nbf)] {
        if let Some(v) = time(t, now) {
            put(k, v.into());
        }
    }
    match &f.kontrol_key {
        KontrolKey::Trusted => put("kontrolKey", trusted.public_pem.into()),
        KontrolKey::TrustedPadded => {
            put("kontrolKey", format!("\n {} \n", trusted.public_pem).into())
        }
        KontrolKey::Other => put("kontrolKey", other.public_pem.into()),
        KontrolKey::Text(s) => put("kontrolKey", s.clone().into()),
        KontrolKey::Absent => {}
    }
    let header = serde_json::to_vec(&header).unwrap();
    let payload = serde_json::to_vec(&payload).unwrap();
    let input = format!("{}.{}", kite_fuzz::b64(&header), kite_fuzz::b64(&payload));
    let rsa = RsaAlg::from_name(&alg_name);
    let signature = match (&f.signer, rsa, &f.alg) {
        (Signer::Trusted, Some(a), _) => kite_fuzz::rsa_sign(&trusted.private, a, input.as_bytes()),
        (Signer::Other, Some(a), _) => kite_fuzz::rsa_sign(&other.private, a, input.as_bytes()),
        (Signer::Trusted | Signer::Other, None, Alg::Hs256WithPublicKey) => {
            kite_fuzz::hmac_sha256(trusted.public_pem.as_bytes(), input.as_bytes())
        }
        (Signer::Trusted | Signer::Other, None, _) => Vec::new(),
        (Signer::Bytes(b), _, _) => b.clone(),
    };
    let mut token = format!("{input}.{}", kite_fuzz::b64(&signature));
    let untouched = token.clone();
    if let Some((at, byte)) = f.tamper {
        let mut bytes = token.into_bytes();
        let i = usize::from(at) % bytes.len();
        bytes[i] = byte;
        token = String::from_utf8_lossy(&bytes).into_owned();
    }
    let genuine = token == untouched && matches!(f.signer, Signer::Trusted) && rsa.is_some();

    let (ours, model) = check_token(&token, trusted);
    if genuine && let Some(model) = model {
        assert_eq!(ours.clone().ok(), model, "a genuine token: {token}");
    }
    if !genuine && token == untouched && !matches!(f.signer, Signer::Bytes(_)) {
        assert!(
            ours.is_err(),
            "a token not signed by the trusted key: {token}"
        );
    }

    let (parsed, verified) = check_kite_key(&token, trusted);
    let claims: Claims = serde_json::from_slice(&payload).unwrap();
    if genuine {
        let trusted = matches!(
            f.kontrol_key,
            KontrolKey::Trusted | KontrolKey::TrustedPadded
        );
        assert_eq!(parsed, trusted, "kitekey::parse of a genuine key: {token}");
        assert_eq!(
            verified.ok(),
            (trusted && !claims.sub.is_empty()).then(|| claims.sub.clone()),
            "a genuine kite key: {token}"
        );
    } else if token == untouched && matches!(f.signer, Signer::Other) && rsa.is_some() {
        assert_eq!(
            parsed,
            matches!(f.kontrol_key, KontrolKey::Other),
            "{token}"
        );
        assert!(
            verified.is_err(),
            "a kite key signed by an untrusted key: {token}"
        );
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((mode, rest)) = kite_fuzz::mode(data) else {
        return;
    };
    match mode {
        b'T' => {
            let _ = check_token(&String::from_utf8_lossy(rest), kite_fuzz::kontrol());
        }
        b'K' => {
            let _ = check_kite_key(&String::from_utf8_lossy(rest), kite_fuzz::kontrol());
        }
        b'C' => {
            if let Ok(input) = ClaimsInput::arbitrary_take_rest(Unstructured::new(rest)) {
                check_claims(input);
            }
        }
        _ => {
            if let Ok(f) = Forge::arbitrary_take_rest(Unstructured::new(rest)) {
                forge(f);
            }
        }
    }
});
