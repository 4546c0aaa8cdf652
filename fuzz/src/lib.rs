//! Helpers shared by the fuzz targets: reference models written independently of the code under
//! test (Go's duration grammar, JWT signatures checked with the `rsa` crate directly rather than
//! through jsonwebtoken) and small utilities.

use std::sync::OnceLock;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;

/// Splits `data` into its first byte (which picks what a target does) and the rest.
pub fn mode(data: &[u8]) -> Option<(u8, &[u8])> {
    data.split_first().map(|(m, rest)| (*m, rest))
}

/// Go's `time.ParseDuration`, written from its documentation and source: an optional sign,
/// then one or more `<decimal><unit>` with units `ns us µs μs ms s m h`; `0` alone is zero.
/// Exact, in nanoseconds; `None` where Go returns an error (including overflow past
/// `i64::MAX` nanoseconds).
pub fn go_parse_duration(s: &str) -> Option<i128> {
    let mut b = s.as_bytes();
    let mut neg = false;
    if let Some((&c, rest)) = b.split_first()
        && (c == b'-' || c == b'+')
    {
        neg = c == b'-';
        b = rest;
    }
    if b == b"0" {
        return Some(0);
    }
    if b.is_empty() {
        return None;
    }
    let mut total: i128 = 0;
    while !b.is_empty() {
        // The next character must be [0-9.].
        if !(b[0] == b'.' || b[0].is_ascii_digit()) {
            return None;
        }
        let int_len = b.iter().take_while(|c| c.is_ascii_digit()).count();
        let int_part = &b[..int_len];
        b = &b[int_len..];
        let mut frac_part: &[u8] = &[];
        let mut had_dot = false;
        if b.first() == Some(&b'.') {
            had_dot = true;
            b = &b[1..];
            let frac_len = b.iter().take_while(|c| c.is_ascii_digit()).count();
            frac_part = &b[..frac_len];
            b = &b[frac_len..];
        }
        let _ = had_dot;
        if int_part.is_empty() && frac_part.is_empty() {
            // "." or ".s": no digits at all.
            return None;
        }
        let unit_len = b
            .iter()
            .take_while(|c| !(**c == b'.' || c.is_ascii_digit()))
            .count();
        let unit = &b[..unit_len];
        b = &b[unit_len..];
        let scale: i128 = match unit {
            b"ns" => 1,
            // us, µs (U+00B5) and μs (U+03BC).
            b"us" | b"\xc2\xb5s" | b"\xce\xbcs" => 1_000,
            b"ms" => 1_000_000,
            b"s" => 1_000_000_000,
            b"m" => 60_000_000_000,
            b"h" => 3_600_000_000_000,
            _ => return None,
        };
        // Go: the integer part must not overflow (1<<63) before scaling.
        let mut v: i128 = 0;
        for d in int_part {
            v = v * 10 + i128::from(d - b'0');
            if v > 1 << 63 {
                return None;
            }
        }
        v *= scale;
        if v > 1 << 63 {
            return None;
        }
        // The fraction, truncated to whole nanoseconds as Go does (its arithmetic keeps at
        // most the digits that fit; the result is the same to the nanosecond).
        let mut f: i128 = 0;
        let mut fscale: i128 = 1;
        for d in frac_part {
            if fscale > 1 << 63 {
                break;
            }
            f = f * 10 + i128::from(d - b'0');
            fscale *= 10;
        }
        v += f * scale / fscale;
        total += v;
        if total > 1 << 63 {
            return None;
        }
    }
    if neg {
        total = -total;
    }
    if total > i128::from(i64::MAX) || total < i128::from(i64::MIN) {
        return None;
    }
    Some(total)
}

/// Percent-decodes `s` (`%XX` to the byte; anything else kept).
pub fn percent_decode(s: &str) -> Vec<u8> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%'
            && let Some(hex) = b.get(i + 1..i + 3)
            && let Ok(hex) = std::str::from_utf8(hex)
            && let Ok(v) = u8::from_str_radix(hex, 16)
            && hex.bytes().all(|c| c.is_ascii_hexdigit())
        {
            out.push(v);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    out
}

/// The trusted test Kontrol key pair (testdata/keys/kontrol*.pem) and an untrusted one.
pub mod keys {
    /// The trusted Kontrol's private key (PKCS#8).
    pub const KONTROL_PEM: &str = include_str!("../../testdata/keys/kontrol.pem");
    /// The trusted Kontrol's public key (SPKI).
    pub const KONTROL_PUB: &str = include_str!("../../testdata/keys/kontrol.pub.pem");
    /// An unrelated private key.
    pub const OTHER_PEM: &str = include_str!("../../testdata/keys/other.pem");
    /// Its public key.
    pub const OTHER_PUB: &str = include_str!("../../testdata/keys/other.pub.pem");
    /// The small trusted key of forged credentials (fuzz/keys: signing with it is fast).
    pub const FAST_PEM: &str = include_str!("../keys/trusted.pem");
    /// Its public key.
    pub const FAST_PUB: &str = include_str!("../keys/trusted.pub.pem");
    /// The small untrusted key of forged credentials.
    pub const FAST_OTHER_PEM: &str = include_str!("../keys/other.pem");
    /// Its public key.
    pub const FAST_OTHER_PUB: &str = include_str!("../keys/other.pub.pem");
}

/// A key pair a target trusts or signs with.
#[derive(Debug)]
pub struct Pair {
    /// The private key.
    pub private: rsa::RsaPrivateKey,
    /// The public key.
    pub public: rsa::RsaPublicKey,
    /// The public key in PEM, as `kontrolKey` claims and verifiers hold it.
    pub public_pem: &'static str,
}

fn pair(private_pem: &str, public_pem: &'static str) -> Pair {
    let private = private_key(private_pem);
    let public = rsa::RsaPublicKey::from(&private);
    Pair {
        private,
        public,
        public_pem,
    }
}

/// The test Kontrol (testdata/keys/kontrol.pem), trusted by the raw-credential modes.
pub fn kontrol() -> &'static Pair {
    static P: OnceLock<Pair> = OnceLock::new();
    P.get_or_init(|| pair(keys::KONTROL_PEM, keys::KONTROL_PUB))
}

/// The small key trusted by the forged-credential mode.
pub fn fast_trusted() -> &'static Pair {
    static P: OnceLock<Pair> = OnceLock::new();
    P.get_or_init(|| pair(keys::FAST_PEM, keys::FAST_PUB))
}

/// The small untrusted signer of the forged-credential mode.
pub fn fast_other() -> &'static Pair {
    static P: OnceLock<Pair> = OnceLock::new();
    P.get_or_init(|| pair(keys::FAST_OTHER_PEM, keys::FAST_OTHER_PUB))
}

/// The RSA signature algorithms of JWTs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RsaAlg {
    /// RSASSA-PKCS1-v1_5 with SHA-256.
    Rs256,
    /// With SHA-384.
    Rs384,
    /// With SHA-512.
    Rs512,
}

impl RsaAlg {
    /// The algorithm a JWT header's `alg` names, if it is one of these (case-sensitive, as
    /// RFC 7518 says).
    pub fn from_name(alg: &str) -> Option<RsaAlg> {
        match alg {
            "RS256" => Some(RsaAlg::Rs256),
            "RS384" => Some(RsaAlg::Rs384),
            "RS512" => Some(RsaAlg::Rs512),
            _ => None,
        }
    }
}

fn private_key(pem: &str) -> rsa::RsaPrivateKey {
    use rsa::pkcs8::DecodePrivateKey;
    rsa::RsaPrivateKey::from_pkcs8_pem(pem).expect("test key parses")
}

/// Signs `input` with `key` (RSASSA-PKCS1-v1_5).
pub fn rsa_sign(key: &rsa::RsaPrivateKey, alg: RsaAlg, input: &[u8]) -> Vec<u8> {
    use rsa::signature::{SignatureEncoding, Signer};
    match alg {
        RsaAlg::Rs256 => rsa::pkcs1v15::SigningKey::<sha2::Sha256>::new(key.clone())
            .sign(input)
            .to_vec(),
        RsaAlg::Rs384 => rsa::pkcs1v15::SigningKey::<sha2::Sha384>::new(key.clone())
            .sign(input)
            .to_vec(),
        RsaAlg::Rs512 => rsa::pkcs1v15::SigningKey::<sha2::Sha512>::new(key.clone())
            .sign(input)
            .to_vec(),
    }
}

/// HMAC-SHA256 of `input` under `secret`: the "algorithm confusion" forgery that signs with a
/// public key as an HMAC secret.
pub fn hmac_sha256(secret: &[u8], input: &[u8]) -> Vec<u8> {
    use hmac::Mac;
    let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(secret).expect("any key length");
    mac.update(input);
    mac.finalize().into_bytes().to_vec()
}

/// Base64url without padding, as JWTs use.
pub fn b64(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

/// A JWT made of `header` and `payload` (any bytes) and `signature`.
pub fn jwt(header: &[u8], payload: &[u8], signature: &[u8]) -> String {
    format!("{}.{}.{}", b64(header), b64(payload), b64(signature))
}

/// Whether `token` is a compact JWT whose header names an RSA algorithm and whose signature
/// over its first two parts verifies under `key`, checked with the `rsa` crate directly.
/// Returns the algorithm and the decoded payload.
pub fn rsa_verifies(token: &str, key: &rsa::RsaPublicKey) -> Option<(RsaAlg, Vec<u8>)> {
    use rsa::signature::Verifier;
    let mut parts = token.split('.');
    let (h, p, s) = (parts.next()?, parts.next()?, parts.next()?);
    if parts.next().is_some() {
        return None;
    }
    // jsonwebtoken tolerates trailing `=` on base64url parts; the signed input is the text as
    // sent either way.
    let decode = |part: &str| URL_SAFE_NO_PAD.decode(part.trim_end_matches('=')).ok();
    let header: serde_json::Value = serde_json::from_slice(&decode(h)?).ok()?;
    let alg = RsaAlg::from_name(header.get("alg")?.as_str()?)?;
    let payload = decode(p)?;
    let sig = rsa::pkcs1v15::Signature::try_from(decode(s)?.as_slice()).ok()?;
    let input = &token.as_bytes()[..h.len() + 1 + p.len()];
    let ok = match alg {
        RsaAlg::Rs256 => rsa::pkcs1v15::VerifyingKey::<sha2::Sha256>::new(key.clone())
            .verify(input, &sig)
            .is_ok(),
        RsaAlg::Rs384 => rsa::pkcs1v15::VerifyingKey::<sha2::Sha384>::new(key.clone())
            .verify(input, &sig)
            .is_ok(),
        RsaAlg::Rs512 => rsa::pkcs1v15::VerifyingKey::<sha2::Sha512>::new(key.clone())
            .verify(input, &sig)
            .is_ok(),
    };
    ok.then_some((alg, payload))
}

/// An RSA public key from PEM (SPKI `PUBLIC KEY` or PKCS#1 `RSA PUBLIC KEY`).
pub fn public_from_pem(pem: &str) -> Option<rsa::RsaPublicKey> {
    use rsa::pkcs1::DecodeRsaPublicKey;
    use rsa::pkcs8::DecodePublicKey;
    let pem = pem.trim();
    rsa::RsaPublicKey::from_public_key_pem(pem)
        .ok()
        .or_else(|| rsa::RsaPublicKey::from_pkcs1_pem(pem).ok())
}

/// Seconds since the Unix epoch.
pub fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn go_durations() {
        assert_eq!(go_parse_duration("1h30m"), Some(5_400_000_000_000));
        assert_eq!(go_parse_duration("1.5s"), Some(1_500_000_000));
        assert_eq!(go_parse_duration(".5s"), Some(500_000_000));
        assert_eq!(go_parse_duration("5.s"), Some(5_000_000_000));
        assert_eq!(go_parse_duration("-2ms"), Some(-2_000_000));
        assert_eq!(go_parse_duration("0"), Some(0));
        assert_eq!(go_parse_duration("1.0000000001s"), Some(1_000_000_000));
        for bad in ["", "5", ".s", "1x", "s", "1..5s", "9223372037s"] {
            assert_eq!(go_parse_duration(bad), None, "{bad}");
        }
    }
}
