//! Kite keys: the `kite.key` file (location, modes, parsing, the config it fills) and `kiteKey`
//! credentials against a real server, including every way a key can be wrong.

mod common;

use common::{TRANSPORTS, TestKite, client_for, config, within};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use kite_native::auth::KiteKeyVerifier;
use kite_native::{Auth, Client, Config, kitekey};
use serde_json::{Value, json};

const KONTROL_PEM: &str = include_str!("../../testdata/keys/kontrol.pem");
const KONTROL_PUB: &str = include_str!("../../testdata/keys/kontrol.pub.pem");
const OTHER_PEM: &str = include_str!("../../testdata/keys/other.pem");
const OTHER_PUB: &str = include_str!("../../testdata/keys/other.pub.pem");

/// Claims Kontrol's `registerUser` writes into a kite key (no expiry, no audience).
fn key_claims(kontrol_key: &str) -> Value {
    json!({
        "iss": "kontrol",
        "sub": "alice",
        "iat": 1_700_000_000,
        "jti": "9b6a7f0e-6f2c-4c5e-8e7e-3f0f2a9d1c11",
        "kontrolURL": "http://127.0.0.1:4000/kite",
        "kontrolKey": kontrol_key.trim(),
    })
}

fn sign(claims: &Value, pem: &str) -> String {
    jsonwebtoken::encode(
        &Header::new(Algorithm::RS256),
        claims,
        &EncodingKey::from_rsa_pem(pem.as_bytes()).unwrap(),
    )
    .unwrap()
}

fn kite_key() -> String {
    sign(&key_claims(KONTROL_PUB), KONTROL_PEM)
}

#[test]
fn kite_key_files_are_written_private_read_back_and_fill_the_config() {
    let dir = std::env::temp_dir().join(format!("kite-home-{}", uuid::Uuid::new_v4()));
    let path = dir.join("nested").join("kite.key");
    kitekey::write_to(&path, &format!("  {}\n", kite_key())).unwrap();
    // Rewriting replaces the read-only file.
    kitekey::write_to(&path, &kite_key()).unwrap();
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = |p: &std::path::Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&path), 0o400);
        assert_eq!(mode(path.parent().unwrap()), 0o700);
    }
    let key = kitekey::read_from(&path).unwrap();
    assert_eq!(key.token, kite_key());
    assert_eq!(key.claims.sub, "alice");
    let mut c = Config::default();
    c.apply_kite_key(&key);
    assert_eq!(c.username, "alice");
    assert_eq!(c.kontrol_user, "kontrol");
    assert_eq!(c.id, "9b6a7f0e-6f2c-4c5e-8e7e-3f0f2a9d1c11");
    assert_eq!(c.kontrol_url, "http://127.0.0.1:4000/kite");
    assert_eq!(c.kontrol_key, KONTROL_PUB.trim());
    assert_eq!(c.kite_key, kite_key());
    std::fs::remove_dir_all(&dir).unwrap();

    // A key must be signed by the key it names.
    let forged = sign(&key_claims(KONTROL_PUB), OTHER_PEM);
    assert!(kitekey::parse(&forged).is_err());
    assert!(kitekey::parse("not a jwt").is_err());
    let no_key = sign(&json!({"sub": "alice", "iss": "kontrol"}), KONTROL_PEM);
    assert!(
        kitekey::parse(&no_key)
            .unwrap_err()
            .to_string()
            .contains("no kontrol key found")
    );
    assert!(matches!(
        kitekey::read_from(&dir.join("missing")),
        Err(kitekey::KiteKeyError::Io { .. })
    ));
}

fn key_config() -> Config {
    let mut c = config();
    c.disable_authentication = false;
    c.kontrol_user = "kontrol".into();
    c.kontrol_key = KONTROL_PUB.into();
    c
}

async fn whoami(client: &Client, auth: Option<Auth>) -> Result<Value, kite_native::ClientError> {
    client.set_auth(auth);
    within("call", client.call::<Value>("whoami", ())).await
}

#[tokio::test]
async fn a_kite_key_authenticates_its_subject_verified_once() {
    let server = TestKite::start_with(key_config()).await;
    for transport in TRANSPORTS {
        let (_k, client) = client_for(&server.url, transport).await;
        for _ in 0..20 {
            let who = whoami(&client, Some(Auth::new("kiteKey", kite_key())))
                .await
                .unwrap();
            assert_eq!(who["username"], "alice");
            assert_eq!(who["caller"]["username"], "alice");
        }
        client.close();
    }
    let verifier = server.kite.kite_key_verifier().unwrap();
    assert_eq!(verifier.verifications(), 1);
}

#[tokio::test]
async fn bad_kite_keys_are_authentication_errors_and_the_connection_goes_on() {
    let server = TestKite::start_with(key_config()).await;
    let header_none = "eyJhbGciOiJub25lIiwidHlwIjoiSldUIn0";
    let body = kitekey_body(&key_claims(KONTROL_PUB));
    let cases: Vec<(&str, String, &str)> = vec![
        (
            "a Kontrol key that is not trusted",
            sign(&key_claims(OTHER_PUB), OTHER_PEM),
            "kiteKey: kontrol key is not trusted",
        ),
        (
            "the trusted key named, another key signing",
            sign(&key_claims(KONTROL_PUB), OTHER_PEM),
            "kiteKey: InvalidSignature",
        ),
        (
            "alg none",
            format!("{header_none}.{body}."),
            "kiteKey: invalid signing method",
        ),
        (
            "no Kontrol key",
            sign(&json!({"sub": "alice", "iss": "kontrol"}), KONTROL_PEM),
            "kiteKey: no kontrol key found",
        ),
        (
            "no subject",
            sign(
                &json!({"iss": "kontrol", "kontrolKey": KONTROL_PUB.trim()}),
                KONTROL_PEM,
            ),
            "kiteKey: token has no username",
        ),
        ("garbage", "garbage".into(), "kiteKey: malformed kite key"),
    ];
    for transport in TRANSPORTS {
        let (_k, client) = client_for(&server.url, transport).await;
        for (what, key, want) in &cases {
            let err = whoami(&client, Some(Auth::new("kiteKey", key.clone())))
                .await
                .expect_err(what);
            assert_eq!(err.kind().as_str(), "authenticationError", "{what}: {err}");
            assert!(err.to_string().starts_with(want), "{what}: {err}");
        }
        // The connection still works with a good key.
        let who = whoami(&client, Some(Auth::new("kiteKey", kite_key())))
            .await
            .unwrap();
        assert_eq!(who["username"], "alice");
        client.close();
    }
}

/// The base64url body of a JWT with these claims.
fn kitekey_body(claims: &Value) -> String {
    let token = sign(claims, KONTROL_PEM);
    token.split('.').nth(1).unwrap().to_owned()
}

#[tokio::test]
async fn a_trust_function_decides_which_kontrol_keys_sign_kite_keys() {
    let server = TestKite::start_with(key_config()).await;
    // Trust the other Kontrol too (as a Kontrol trusts every key pair it holds).
    let trusted = [KONTROL_PUB.trim().to_owned(), OTHER_PUB.trim().to_owned()];
    server
        .kite
        .set_kite_key_verifier(KiteKeyVerifier::with_trust(std::sync::Arc::new(
            move |key: &str| {
                if trusted.iter().any(|t| t == key) {
                    Ok(())
                } else {
                    Err("kontrol key is not trusted".into())
                }
            },
        )));
    let (_k, client) = client_for(&server.url, TRANSPORTS[0]).await;
    let other = sign(&key_claims(OTHER_PUB), OTHER_PEM);
    let who = whoami(&client, Some(Auth::new("kiteKey", other)))
        .await
        .unwrap();
    assert_eq!(who["username"], "alice");
    client.close();
}

#[tokio::test]
async fn generated_key_pairs_sign_kite_keys_and_tokens_a_kite_accepts() {
    let pair = kite_native::auth::KeyPair::generate(2048).unwrap();
    assert!(pair.public_pem.starts_with("-----BEGIN PUBLIC KEY-----"));
    let key_claims = kite_native::core::auth::Claims {
        iss: "kontrol".into(),
        sub: "carol".into(),
        jti: "k1".into(),
        kontrol_key: pair.public_pem.trim().into(),
        kontrol_url: "http://127.0.0.1:4000/kite".into(),
        ..Default::default()
    };
    let kite_key = pair.sign(&key_claims).unwrap();
    assert_eq!(kitekey::parse(&kite_key).unwrap().claims, key_claims);

    let mut cfg = key_config();
    cfg.kontrol_key = pair.public_pem.clone();
    let server = TestKite::start_with(cfg).await;
    let (_k, client) = client_for(&server.url, TRANSPORTS[0]).await;
    let who = whoami(&client, Some(Auth::new("kiteKey", kite_key)))
        .await
        .unwrap();
    assert_eq!(who["username"], "carol");
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    let token = pair
        .sign(&kite_native::core::auth::Claims {
            iss: "kontrol".into(),
            sub: "dave".into(),
            aud: "/unknown/unknown/math".into(),
            iat: Some(now),
            exp: Some(now + 60),
            ..Default::default()
        })
        .unwrap();
    let who = whoami(&client, Some(Auth::new("token", token)))
        .await
        .unwrap();
    assert_eq!(who["username"], "dave");
    client.close();
}

#[tokio::test]
async fn a_key_rotation_switches_the_trusted_kontrol_key_and_writes_the_new_kite_key() {
    let server = TestKite::start_with(key_config()).await;
    let (_k, client) = client_for(&server.url, TRANSPORTS[0]).await;
    let old = kite_key();
    assert!(
        whoami(&client, Some(Auth::new("kiteKey", old.clone())))
            .await
            .is_ok()
    );

    let pair = kite_native::auth::KeyPair::generate(2048).unwrap();
    let mut claims: kite_native::core::auth::Claims =
        serde_json::from_value(key_claims(&pair.public_pem)).unwrap();
    claims.sub = "alice".into();
    let new_key = pair.sign(&claims).unwrap();
    let dir = std::env::temp_dir().join(format!("kite-rotate-{}", uuid::Uuid::new_v4()));
    let path = dir.join("kite.key");
    server
        .kite
        .rotate_keys(Some(&new_key), None, Some(&path))
        .unwrap();
    assert_eq!(server.kite.kite_key(), new_key);
    assert_eq!(server.kite.kontrol_key(), pair.public_pem.trim());
    assert_eq!(kitekey::read_from(&path).unwrap().token, new_key);
    std::fs::remove_dir_all(&dir).unwrap();

    // Keys of the new pair are accepted, those of the rotated-out one no longer.
    let who = whoami(&client, Some(Auth::new("kiteKey", new_key)))
        .await
        .unwrap();
    assert_eq!(who["username"], "alice");
    let err = whoami(&client, Some(Auth::new("kiteKey", old)))
        .await
        .unwrap_err();
    assert!(err.to_string().contains("not trusted"), "{err}");
    // A broken kite key is refused and changes nothing.
    assert!(server.kite.rotate_keys(Some("junk"), None, None).is_err());
    assert_eq!(server.kite.kontrol_key(), pair.public_pem.trim());
    client.close();
}
