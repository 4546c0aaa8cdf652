//! JWT benchmarks: what signing and verifying Kontrol's tokens costs, the JWT library's RS256
//! (`jsonwebtoken` with its pure-Rust RSA, what every token cost before) beside
//! [`kite_native::auth::SigningKey`] (ring, the key read once), in one run.
//!
//! Run with `cargo bench -p kite-native --bench jwt` (figures in `docs/BENCHMARKS.md`);
//! `cargo test -p kite-native --benches` runs each once as a smoke test.

// criterion's macros define undocumented public functions.
#![allow(missing_docs)]

use std::hint::black_box;
use std::sync::Arc;

use criterion::{Criterion, criterion_group, criterion_main};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use kite_native::auth::{SigningKey, TokenVerifier};
use kite_native::core::Kite;
use kite_native::core::auth::Claims;

const KONTROL_PEM: &str = include_str!("../../testdata/keys/kontrol.pem");
const KONTROL_PUB: &str = include_str!("../../testdata/keys/kontrol.pub.pem");

/// A token's claims as Kontrol's `getKites` signs them.
fn claims() -> Claims {
    Claims {
        iss: "kontrol".into(),
        sub: "alice".into(),
        aud: "/alice/prod/math".into(),
        exp: Some(4_000_000_000),
        iat: Some(1_700_000_000),
        nbf: Some(1_700_000_000),
        jti: "6b1f5a4e-0d6c-4d1e-9a57-6f7c1c1f2a3b".into(),
        ..Claims::default()
    }
}

fn jwt(c: &mut Criterion) {
    let claims = claims();
    let header = Header {
        kid: Some("default".into()),
        ..Header::new(Algorithm::RS256)
    };
    let mut g = c.benchmark_group("rs256");
    g.sample_size(20);
    g.bench_function("sign/jsonwebtoken", |b| {
        b.iter(|| {
            let key = EncodingKey::from_rsa_pem(KONTROL_PEM.as_bytes()).unwrap();
            black_box(jsonwebtoken::encode(&header, &claims, &key).unwrap())
        })
    });
    let key = SigningKey::from_pem(KONTROL_PEM).unwrap();
    g.bench_function("sign/signing_key", |b| {
        b.iter(|| black_box(key.sign(&claims, Some("default")).unwrap()))
    });
    let token = key.sign(&claims, Some("default")).unwrap();
    let local = Arc::new(Kite {
        username: "alice".into(),
        environment: "prod".into(),
        name: "math".into(),
        ..Kite::default()
    });
    g.bench_function("verify/uncached", |b| {
        b.iter(|| {
            // A new verifier each time: nothing remembered, a full RSA verification.
            let v = TokenVerifier::new("kontrol", KONTROL_PUB, local.clone()).unwrap();
            black_box(v.verify(&token).unwrap())
        })
    });
    g.finish();
}

criterion_group!(benches, jwt);
criterion_main!(benches);
