//! Token authentication against a real server: accepted tokens, every way a token can be
//! wrong (each answered with `authenticationError`, the connection going on), and the cache
//! that keeps RSA verification off the per-call path.

mod common;

use common::{TRANSPORTS, TestKite, client_for, config, within};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use kite_native::auth::TokenVerifier;
use kite_native::{Auth, Client, Config};
use serde_json::{Value, json};

const KONTROL_PEM: &str = include_str!("../../testdata/keys/kontrol.pem");
const KONTROL_PUB: &str = include_str!("../../testdata/keys/kontrol.pub.pem");
const OTHER_PEM: &str = include_str!("../../testdata/keys/other.pem");

fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

/// Claims Kontrol would issue for calling the test kite (`/unknown/unknown/math`).
fn claims() -> Value {
    json!({
        "iss": "kontrol",
        "sub": "alice",
        "aud": "/unknown/unknown/math",
        "iat": now() - 300,
        "nbf": now() - 300,
        "exp": now() + 3600,
        "jti": "token-1",
    })
}

fn sign_with(alg: Algorithm, claims: &Value, pem: &str) -> String {
    jsonwebtoken::encode(
        &Header::new(alg),
        claims,
        &EncodingKey::from_rsa_pem(pem.as_bytes()).unwrap(),
    )
    .unwrap()
}

fn sign(claims: &Value) -> String {
    sign_with(Algorithm::RS256, claims, KONTROL_PEM)
}

fn with(overrides: Value) -> Value {
    let mut c = claims();
    for (k, v) in overrides.as_object().unwrap() {
        if v.is_null() {
            c.as_object_mut().unwrap().remove(k);
        } else {
            c[k] = v.clone();
        }
    }
    c
}

fn b64(bytes: &[u8]) -> String {
    // base64url without padding, enough for hand-made tokens.
    const T: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |a, (i, b)| a | (u32::from(*b) << (16 - 8 * i)));
        for i in 0..=chunk.len() {
            out.push(T[(n >> (18 - 6 * i) & 63) as usize] as char);
        }
    }
    out
}

/// A token with `alg: none` and no signature.
fn unsigned() -> String {
    let header = b64(br#"{"alg":"none","typ":"JWT"}"#);
    let body = b64(claims().to_string().as_bytes());
    format!("{header}.{body}.")
}

/// HS256 "signed" with the Kontrol *public* key as the HMAC secret (the alg-confusion attack).
fn hmac_with_public_key() -> String {
    jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        &claims(),
        &EncodingKey::from_secret(KONTROL_PUB.as_bytes()),
    )
    .unwrap()
}

fn token_config() -> Config {
    let mut c = config();
    c.disable_authentication = false;
    c.kontrol_user = "kontrol".into();
    c.kontrol_key = KONTROL_PUB.into();
    c
}

async fn call_with(client: &Client, auth: Option<Auth>) -> Result<Value, kite_native::ClientError> {
    client.set_auth(auth);
    within("call", client.call::<Value>("whoami", ())).await
}

#[tokio::test]
async fn a_valid_token_authenticates_its_subject() {
    let server = TestKite::start_with(token_config()).await;
    for transport in TRANSPORTS {
        let (_k, client) = client_for(&server.url, transport).await;
        let token = sign(&claims());
        let who = call_with(&client, Some(Auth::new("token", token.clone())))
            .await
            .unwrap();
        // The authenticated username replaces the one the caller declared.
        assert_eq!(who["username"], "alice");
        assert_eq!(who["caller"]["username"], "alice");
        // RS384 and RS512 are accepted too.
        for alg in [Algorithm::RS384, Algorithm::RS512] {
            let t = sign_with(alg, &claims(), KONTROL_PEM);
            assert!(
                call_with(&client, Some(Auth::new("token", t)))
                    .await
                    .is_ok()
            );
        }
        client.close();
    }
}

#[tokio::test]
async fn bad_tokens_are_authentication_errors_and_the_connection_goes_on() {
    let server = TestKite::start_with(token_config()).await;
    let cases: Vec<(&str, Option<Auth>, &str)> = vec![
        (
            "signed with another key",
            Some(Auth::new(
                "token",
                sign_with(Algorithm::RS256, &claims(), OTHER_PEM),
            )),
            "token: token is expired",
        ),
        (
            "alg none",
            Some(Auth::new("token", unsigned())),
            "token: invalid signing method",
        ),
        (
            "HS256 with the public key",
            Some(Auth::new("token", hmac_with_public_key())),
            "token: invalid signing method",
        ),
        (
            "expired",
            Some(Auth::new("token", sign(&with(json!({"exp": now() - 90}))))),
            "token: token is expired by 1m3",
        ),
        (
            "not yet valid",
            Some(Auth::new("token", sign(&with(json!({"nbf": now() + 600}))))),
            "token: token is not valid yet",
        ),
        (
            "issued in the future",
            Some(Auth::new("token", sign(&with(json!({"iat": now() + 600}))))),
            "token: Token used before issued",
        ),
        (
            "wrong issuer",
            Some(Auth::new("token", sign(&with(json!({"iss": "mallory"}))))),
            "token: issuer is not trusted: mallory",
        ),
        (
            "no subject",
            Some(Auth::new("token", sign(&with(json!({"sub": null}))))),
            "token: token has no username",
        ),
        (
            "no audience",
            Some(Auth::new("token", sign(&with(json!({"aud": null}))))),
            "token: token has no audience",
        ),
        (
            "another user's audience",
            Some(Auth::new(
                "token",
                sign(&with(json!({"aud": "/bob/unknown/math"}))),
            )),
            "token: audience: username \"bob\" not allowed",
        ),
        (
            "another kite's audience",
            Some(Auth::new(
                "token",
                sign(&with(json!({"aud": "/unknown/unknown/db"}))),
            )),
            "token: audience: kite \"db\" not allowed",
        ),
        (
            "the root audience",
            Some(Auth::new("token", sign(&with(json!({"aud": "/"}))))),
            "token: root audience",
        ),
        (
            "garbage",
            Some(Auth::new("token", "not.a.jwt at all")),
            "token: malformed token",
        ),
        (
            "an unknown type",
            Some(Auth::new("sessionID", "abc")),
            "Unknown authentication type: sessionID",
        ),
        (
            "no credentials",
            None,
            "No authentication information is provided",
        ),
    ];
    for transport in TRANSPORTS {
        let (_k, client) = client_for(&server.url, transport).await;
        for (what, auth, want) in &cases {
            let err = call_with(&client, auth.clone()).await.unwrap_err();
            assert_eq!(
                err.kind().as_str(),
                "authenticationError",
                "{what}: {err:?}"
            );
            assert!(
                err.to_string().starts_with(want),
                "{what}: got {:?}, want it to start with {want:?}",
                err.to_string()
            );
            // The same connection still serves a good call.
            let ok = call_with(&client, Some(Auth::new("token", sign(&claims())))).await;
            assert!(ok.is_ok(), "{what}: the connection broke: {ok:?}");
        }
        // kite.ping never needs credentials.
        client.set_auth(Some(Auth::new("token", "garbage")));
        let pong: String = within("ping", client.call("kite.ping", ())).await.unwrap();
        assert_eq!(pong, "pong");
        client.close();
    }
}

#[tokio::test]
async fn each_token_is_verified_once() {
    let server = TestKite::start_with(token_config()).await;
    let verifier = server.kite.token_verifier().expect("made from the config");
    let (_k, client) = client_for(&server.url, TRANSPORTS[0]).await;
    let token = sign(&claims());
    let before = verifier.verifications();
    for _ in 0..50 {
        call_with(&client, Some(Auth::new("token", token.clone())))
            .await
            .unwrap();
    }
    assert_eq!(
        verifier.verifications() - before,
        1,
        "50 calls, one verification"
    );
    // A different token is verified on its own; a bad one is checked every time (never
    // remembered as good).
    let other = sign(&with(json!({"jti": "token-2"})));
    call_with(&client, Some(Auth::new("token", other)))
        .await
        .unwrap();
    let bad = sign_with(Algorithm::RS256, &claims(), OTHER_PEM);
    for _ in 0..3 {
        assert!(
            call_with(&client, Some(Auth::new("token", bad.clone())))
                .await
                .is_err()
        );
    }
    assert_eq!(verifier.verifications() - before, 5);
    client.close();
}

#[tokio::test]
async fn root_audience_only_when_allowed_and_no_key_no_tokens() {
    let server = TestKite::start_with(token_config()).await;
    let verifier = TokenVerifier::new(
        "kontrol",
        KONTROL_PUB,
        server.kite.identity().clone().into(),
    )
    .unwrap()
    .allow_root_audience(true);
    server.kite.set_token_verifier(verifier);
    let (_k, client) = client_for(&server.url, TRANSPORTS[0]).await;
    let root = sign(&with(json!({"aud": "/"})));
    let who = call_with(&client, Some(Auth::new("token", root)))
        .await
        .unwrap();
    assert_eq!(who["username"], "alice");
    client.close();

    // A kite that trusts no Kontrol key refuses tokens with Go's message.
    let mut c = config();
    c.disable_authentication = false;
    let keyless = TestKite::start_with(c).await;
    let (_k, client) = client_for(&keyless.url, TRANSPORTS[0]).await;
    let err = call_with(&client, Some(Auth::new("token", sign(&claims()))))
        .await
        .unwrap_err();
    assert_eq!(err.to_string(), "token: kontrol key is not set in config");
    client.close();

    // A malformed key is an error when the kite is made, not a panic later.
    let mut c = config();
    c.kontrol_key = "-----BEGIN PUBLIC KEY-----\nnope\n-----END PUBLIC KEY-----".into();
    assert!(kite_native::Kite::with_config("x", "1.0.0", c).is_err());
}

/// A kite whose `client.hello` needs authentication, connected to the test server, which calls
/// it back through `ask`.
async fn dialing_kite(server: &TestKite, transport: kite_native::transport::Transport) -> Client {
    let mut cfg = config();
    cfg.disable_authentication = false;
    let kite = kite_native::Kite::with_config("tester", "1.0.0", cfg).unwrap();
    kite.handle("client.hello", |req: kite_native::Request| async move {
        let name: String = req.arg()?;
        Ok::<_, kite_native::KiteError>(format!("hello {name}"))
    });
    let client = kite.new_client(&server.url);
    client.set_transport(transport);
    within("dial", client.dial()).await.unwrap();
    client
}

#[tokio::test]
async fn calls_back_from_a_dialed_peer_are_authenticated_unless_the_connection_is_trusted() {
    let server = TestKite::start().await;
    for transport in TRANSPORTS {
        let client = dialing_kite(&server, transport).await;
        assert!(!client.is_trusted());
        // Unlike Go, a connection this kite dialed is not trusted by default: the server's
        // call back carries no credentials and is refused.
        let err = within("ask", client.call::<String>("ask", ("bob",)))
            .await
            .unwrap_err();
        assert!(
            err.to_string().contains("No authentication information"),
            "{err}"
        );
        client.set_trusted(true);
        let answer: String = within("ask", client.call("ask", ("bob",))).await.unwrap();
        assert_eq!(answer, "client said: hello bob");
        client.close();
    }
}

#[tokio::test]
async fn tokens_are_renewed_before_expiry_and_when_a_peer_says_expired() {
    let server = TestKite::start_with(token_config()).await;
    let (_k, client) = client_for(&server.url, TRANSPORTS[0]).await;
    let fetched = std::sync::Arc::new(std::sync::atomic::AtomicU32::new(0));
    let (renewed_tx, mut renewed_rx) = tokio::sync::mpsc::unbounded_channel();
    let (expired_tx, mut expired_rx) = tokio::sync::mpsc::unbounded_channel();
    client.on_token_renewed(move |_, token| {
        let _ = renewed_tx.send(token.to_owned());
    });
    client.on_token_expired(move |_| {
        let _ = expired_tx.send(());
    });
    let f = fetched.clone();
    client.set_token_renewer(move || {
        let n = f.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        async move { Ok(sign(&with(json!({"jti": format!("renewed-{n}")})))) }
    });

    // Expired already: the peer answers `token is expired`, the client renews once for a
    // burst of calls and sends each again.
    client.set_auth(Some(Auth::new(
        "token",
        sign(&with(json!({"exp": now() - 100}))),
    )));
    let calls = (0..10).map(|_| call_with_current(&client));
    for who in futures_util::future::join_all(calls).await {
        assert_eq!(who.unwrap()["username"], "alice");
    }
    within("expired hook", expired_rx.recv()).await.unwrap();
    within("renewed hook", renewed_rx.recv()).await.unwrap();
    assert_eq!(fetched.load(std::sync::atomic::Ordering::SeqCst), 1);

    // About to expire (within 30 s): renewed ahead of time, without any call failing.
    client.set_auth(Some(Auth::new(
        "token",
        sign(&with(json!({"exp": now() + 20}))),
    )));
    let token = within("renewal before expiry", renewed_rx.recv())
        .await
        .unwrap();
    assert_eq!(client.auth().unwrap().key, token);
    assert_eq!(fetched.load(std::sync::atomic::Ordering::SeqCst), 2);
    assert!(call_with_current(&client).await.is_ok());
    client.close();
}

async fn call_with_current(client: &Client) -> Result<Value, kite_native::ClientError> {
    within("call", client.call::<Value>("whoami", ())).await
}

#[tokio::test]
async fn credentials_on_a_method_without_authentication_are_ignored() {
    let server = TestKite::start_with(token_config()).await;
    server
        .kite
        .handle("open", |req: kite_native::Request| async move {
            Ok::<_, kite_native::KiteError>(req.username.clone())
        })
        .disable_authentication();
    for transport in TRANSPORTS {
        let (_k, client) = client_for(&server.url, transport).await;
        for auth in [
            Auth::new("token", "garbage"),
            Auth::new("token", sign_with(Algorithm::RS256, &claims(), OTHER_PEM)),
            Auth::new("nonsense", "x"),
        ] {
            client.set_auth(Some(auth));
            let pong: String = within("ping", client.call("kite.ping", ())).await.unwrap();
            assert_eq!(pong, "pong");
            // The caller-declared username, unauthenticated.
            let who: String = within("open", client.call("open", ())).await.unwrap();
            assert_eq!(who, "unknown");
        }
        client.close();
    }
}
