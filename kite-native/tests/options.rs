//! Options Go kite has that change how connections behave, over real sockets: a bound on a
//! whole dial (`Client::dial_timeout`, `Config::dial_timeout`), requests of one connection
//! served one at a time (`Config::disable_concurrency`) and a custom audience rule for tokens
//! (`Kite::set_audience_check`).

mod common;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{TestKite, client_for, config, within};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use kite_native::transport::{DialError, Transport};
use kite_native::{Auth, ClientError, Config, Kite, KiteError, Request};
use serde_json::{Value, json};

const KONTROL_PEM: &str = include_str!("../../testdata/keys/kontrol.pem");
const KONTROL_PUB: &str = include_str!("../../testdata/keys/kontrol.pub.pem");

/// A listener that accepts TCP connections and never says a word; the connections are kept
/// open (so the peer sees silence, not a reset) until the test ends.
async fn silent_listener() -> (std::net::SocketAddr, tokio::task::JoinHandle<()>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let task = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((socket, _)) = listener.accept().await {
            held.push(socket);
        }
    });
    (addr, task)
}

fn assert_timed_out(result: Result<(), ClientError>) {
    match result {
        Err(ClientError::Dial { source, .. }) => {
            assert!(
                matches!(*source, DialError::Timeout),
                "want a timeout, got {source:?}"
            );
        }
        other => panic!("want a dial timeout, got {other:?}"),
    }
}

#[tokio::test]
async fn a_dial_to_a_silent_server_fails_within_its_bound() {
    let (addr, listener) = silent_listener().await;
    let url = format!("http://{addr}/kite");
    let bound = Duration::from_millis(300);
    let kite = Kite::with_config("tester", "1.0.0", config()).unwrap();
    // Every transport, Auto's fallbacks included, would wait 15 s per step without the bound.
    for transport in [
        Transport::Auto,
        Transport::WebSocket,
        Transport::XhrPolling,
        Transport::XhrStreaming,
    ] {
        let client = kite.new_client(&url);
        client.set_transport(transport);
        let started = Instant::now();
        assert_timed_out(within("dial", client.dial_timeout(bound)).await);
        let took = started.elapsed();
        assert!(
            took >= bound && took < bound + Duration::from_secs(2),
            "{transport}: took {took:?}"
        );
        client.close();
    }

    // Config::dial_timeout bounds every client of the kite.
    let mut c = config();
    c.dial_timeout = Some(bound);
    let bounded = Kite::with_config("tester", "1.0.0", c).unwrap();
    let client = bounded.new_client(&url);
    let started = Instant::now();
    assert_timed_out(within("dial", client.dial()).await);
    assert!(started.elapsed() < bound + Duration::from_secs(2));
    listener.abort();

    // A bound does not get in the way of a server that answers.
    let server = TestKite::start().await;
    let client = kite.new_client(&server.url);
    within("dial", client.dial_timeout(Duration::from_secs(10)))
        .await
        .unwrap();
    let four: f64 = within("call", client.call("square", (2,))).await.unwrap();
    assert_eq!(four, 4.0);
    client.close();
}

/// Starts a kite whose `step` method logs `start <n>`, waits 150 ms, logs `end <n>`.
async fn stepping_kite(disable_concurrency: bool) -> (TestKite, Arc<Mutex<Vec<String>>>) {
    let mut c = config();
    c.disable_concurrency = disable_concurrency;
    let server = TestKite::start_with(c).await;
    let log = Arc::new(Mutex::new(Vec::new()));
    let l = log.clone();
    server.kite.handle("step", move |req: Request| {
        let log = l.clone();
        async move {
            let n: u32 = req.arg()?;
            log.lock().unwrap().push(format!("start {n}"));
            tokio::time::sleep(Duration::from_millis(150)).await;
            log.lock().unwrap().push(format!("end {n}"));
            Ok::<_, KiteError>(n)
        }
    });
    (server, log)
}

#[tokio::test]
async fn disable_concurrency_serves_a_connections_requests_one_at_a_time() {
    for disable in [true, false] {
        let (server, log) = stepping_kite(disable).await;
        let (_k, client) = client_for(&server.url, Transport::WebSocket).await;
        // Both calls leave together on one connection, 1 first.
        let (a, b) = within("calls", async {
            tokio::join!(
                client.call::<u32>("step", (1,)),
                client.call::<u32>("step", (2,))
            )
        })
        .await;
        assert_eq!((a.unwrap(), b.unwrap()), (1, 2));
        let log = log.lock().unwrap().clone();
        if disable {
            assert_eq!(log, ["start 1", "end 1", "start 2", "end 2"]);
        } else {
            assert_eq!(&log[..2], ["start 1", "start 2"], "{log:?}");
        }
        client.close();
    }
}

#[tokio::test]
async fn an_ordered_handler_can_still_call_its_peer_back() {
    // The read loop goes on while a request is served, so the answer of `client.hello`
    // reaches `ask` (Go's non-concurrent read loop would wait for itself here).
    let mut c = config();
    c.disable_concurrency = true;
    let server = TestKite::start_with(c).await;
    let (_k, client) = client_for(&server.url, Transport::WebSocket).await;
    let answer: String = within("ask", client.call("ask", ("bob",))).await.unwrap();
    assert_eq!(answer, "client said: hello bob");
    let four: f64 = within("call", client.call("square", (2,))).await.unwrap();
    assert_eq!(four, 4.0);
    client.close();
}

fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

/// A token Kontrol would sign for `aud`.
fn token(aud: &str) -> String {
    let claims = json!({
        "iss": "kontrol",
        "sub": "alice",
        "aud": aud,
        "iat": now() - 60,
        "exp": now() + 3600,
        "jti": aud,
    });
    jsonwebtoken::encode(
        &Header::new(Algorithm::RS256),
        &claims,
        &EncodingKey::from_rsa_pem(KONTROL_PEM.as_bytes()).unwrap(),
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

#[tokio::test]
async fn a_custom_audience_check_replaces_the_default_rule() {
    let server = TestKite::start_with(token_config()).await;
    let (_k, client) = client_for(&server.url, Transport::WebSocket).await;
    let call = |aud: &str| {
        client.set_auth(Some(Auth::new("token", token(aud))));
        let client = client.clone();
        async move { within("call", client.call::<Value>("whoami", ())).await }
    };
    let other_user = "/bob/unknown/math";
    let own = "/unknown/unknown/math";
    // The default rule: another user's audience is refused, the kite's own accepted.
    let err = call(other_user).await.unwrap_err();
    assert_eq!(
        err.to_string(),
        "token: audience: username \"bob\" not allowed (/bob/unknown/math)"
    );
    assert_eq!(call(own).await.unwrap()["username"], "alice");

    // A check that wants the audience to name bob's kites of this name, and nothing else.
    server.kite.set_audience_check(|kite, aud| {
        if aud == format!("/bob/{}/{}", kite.environment, kite.name) {
            Ok(())
        } else {
            Err(format!("audience {aud} is not bob's"))
        }
    });
    assert_eq!(call(other_user).await.unwrap()["username"], "alice");
    let err = call(own).await.unwrap_err();
    assert!(
        matches!(&err, ClientError::Authentication(_)),
        "want an authentication error, got {err:?}"
    );
    assert_eq!(
        err.to_string(),
        "token: audience /unknown/unknown/math is not bob's"
    );

    // A key rotation keeps the check.
    server
        .kite
        .rotate_keys(None, Some(KONTROL_PUB), None)
        .unwrap();
    assert_eq!(call(other_user).await.unwrap()["username"], "alice");
    assert!(call(own).await.is_err());
    client.close();
}
