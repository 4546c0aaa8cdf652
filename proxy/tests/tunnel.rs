//! The tunnel proxy end to end on 127.0.0.1, with a real Kontrol (in-memory registry): private
//! kites that listen on no port serve public clients through the proxy, over every transport,
//! authenticating them; tunnel tokens are checked; the proxy restarts; kites go away.

use std::time::Duration;

use futures_util::future::join_all;
use futures_util::{SinkExt, StreamExt};
use kite_native::auth::KeyPair;
use kite_native::core::KontrolQuery;
use kite_native::core::auth::Claims;
use kite_native::session::TransportKind;
use kite_native::transport::Transport;
use kite_native::{Args, Auth, Callback, Client, ErrorKind, Kite, KiteError, Request};
use kite_proxy::tunnel::{TUNNEL_FAILED, TunnelClaims, TunnelProxy, TunnelProxyOptions};
use serde_json::{Value, json};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::{self, Message};
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

const KONTROL_PEM: &str = include_str!("../../testdata/keys/kontrol.pem");
const KONTROL_PUB: &str = include_str!("../../testdata/keys/kontrol.pub.pem");
const OTHER_PEM: &str = include_str!("../../testdata/keys/other.pem");
const OTHER_PUB: &str = include_str!("../../testdata/keys/other.pub.pem");

mod common;

use common::{Env, config_for, kontrol, within};
use kite_test_kit::within_secs;

/// The Kontrol's key pair (from testdata).
fn kontrol_key() -> KeyPair {
    KeyPair {
        private_pem: KONTROL_PEM.into(),
        public_pem: KONTROL_PUB.into(),
    }
}

/// A kite of alice with its own kite key, configured as `Config::get` would from it.
fn kite_for(env: &Env, name: &str) -> Kite {
    Kite::with_config(name, "1.0.0", config_for(env, "alice")).unwrap()
}

fn proxy_options() -> TunnelProxyOptions {
    TunnelProxyOptions::new(KeyPair {
        private_pem: OTHER_PEM.into(),
        public_pem: OTHER_PUB.into(),
    })
}

/// A tunnel proxy (a kite of alice) serving on `listener`, or on a port of its own.
async fn start_proxy(
    env: &Env,
    options: TunnelProxyOptions,
    listener: Option<tokio::net::TcpListener>,
) -> (TunnelProxy, tokio::task::JoinHandle<()>) {
    let proxy = TunnelProxy::new(config_for(env, "alice"), "0.0.1", options).unwrap();
    let listener =
        listener.unwrap_or_else(|| kite_native::listen("127.0.0.1:0".parse().unwrap()).unwrap());
    let server = proxy.clone();
    let handle = tokio::spawn(async move { server.serve(listener).await.unwrap() });
    within("proxy up", proxy.ready()).await;
    (proxy, handle)
}

fn add_methods(kite: &Kite) {
    kite_test_kit::kites::add_square_and_echo(kite);
    kite.handle("whoami", |req: Request| async move {
        Ok::<_, KiteError>(json!({"id": req.local.id, "caller": req.username}))
    });
    kite.handle("callMe", |req: Request| async move {
        let (name, cb): (String, Callback) = req.args()?;
        cb.call((format!("hello {name}"),))?;
        Ok::<_, KiteError>("called")
    });
}

/// A kite of alice named `name` that serves on no port, behind `proxy`; its public URL.
async fn private_kite(env: &Env, name: &str, proxy_url: &str) -> (Kite, String) {
    let kite = kite_for(env, name);
    add_methods(&kite);
    let url = within("register_to_tunnel", kite.register_to_tunnel(proxy_url))
        .await
        .unwrap();
    assert_eq!(kite.port(), None, "the private kite listens nowhere");
    (kite, url)
}

/// The kites named `name` as Kontrol lists them to `caller`, with tokens.
async fn find_all(caller: &Kite, name: &str) -> Vec<Client> {
    let query = KontrolQuery {
        username: "alice".into(),
        environment: "test".into(),
        name: name.into(),
        ..Default::default()
    };
    within("getKites", caller.get_kites(&query)).await.unwrap()
}

async fn find(caller: &Kite, name: &str) -> Client {
    let mut found = find_all(caller, name).await;
    assert_eq!(found.len(), 1, "one {name}");
    found.remove(0)
}

/// `square` and a call with a callback, through `client`.
async fn call_through(client: &Client) {
    let n: f64 = within("square", client.call("square", (4,))).await.unwrap();
    assert_eq!(n, 16.0);
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let cb = Callback::new(move |args: Args| {
        let _ = tx.send(args.one::<String>());
    });
    let r: String = within("callMe", client.call("callMe", ("you", cb)))
        .await
        .unwrap();
    assert_eq!(r, "called");
    let called = within("callback", rx.recv()).await.unwrap().unwrap();
    assert_eq!(called, "hello you");
    let who: Value = within("whoami", client.call("whoami", ())).await.unwrap();
    assert_eq!(
        who["caller"], "alice",
        "the caller was authenticated as alice"
    );
}

type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// The next SockJS frame other than a heartbeat.
async fn next_frame(ws: &mut Ws) -> String {
    loop {
        match within("a frame", ws.next()).await {
            Some(Ok(Message::Text(t))) if t.as_str() == "h" => {}
            Some(Ok(Message::Text(t))) => return t.to_string(),
            Some(Ok(Message::Ping(_) | Message::Pong(_))) => {}
            other => panic!("not a SockJS frame: {other:?}"),
        }
    }
}

/// A raw SockJS websocket at `base` (a kite's SockJS base URL, `http://...`), opened.
async fn raw_sockjs(base: &str) -> Ws {
    let url = kite_native::transport::sockjs_websocket_url(base, "123", "rawsession").unwrap();
    let (mut ws, _) = within("raw connect", tokio_tungstenite::connect_async(url))
        .await
        .unwrap();
    assert_eq!(next_frame(&mut ws).await, "o");
    ws
}

/// A request as Go sends it, with a response callback.
fn raw_request(method: &str, args: Value, auth: Value) -> String {
    json!({
        "method": method,
        "arguments": [{
            "kite": {"name": "raw", "username": "alice", "id": "raw-1", "environment": "test",
                     "region": "r", "version": "1.0.0", "hostname": "h"},
            "authentication": auth,
            "responseCallback": "[Function]",
            "withArgs": args,
        }],
        "callbacks": {"0": [0, "responseCallback"]},
    })
    .to_string()
}

/// Sends one request over a raw SockJS websocket and returns the response object.
async fn raw_call(ws: &mut Ws, request: String) -> Value {
    let frame = serde_json::to_string(&vec![request]).unwrap();
    ws.send(Message::text(frame)).await.unwrap();
    let frame = next_frame(ws).await;
    let msgs: Vec<String> = serde_json::from_str(frame.strip_prefix('a').unwrap()).unwrap();
    let msg: Value = serde_json::from_str(&msgs[0]).unwrap();
    assert_eq!(msg["method"], 0);
    msg["arguments"][0].clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_kite_behind_the_tunnel_serves_clients_over_every_transport() {
    let env = kontrol(kontrol_key()).await;
    let (proxy, _h) = start_proxy(&env, proxy_options(), None).await;
    within("proxy registers", proxy.kite().register(&proxy.kite_url()))
        .await
        .unwrap();

    // The private kite finds the proxy through Kontrol.
    let kite = kite_for(&env, "private");
    add_methods(&kite);
    let proxy_url = find(&kite, "tunnelproxy").await.url().to_owned();
    assert_eq!(proxy_url, proxy.kite_url());
    let public = within("register_to_tunnel", kite.register_to_tunnel(&proxy_url))
        .await
        .unwrap();
    let id = kite.identity().id.clone();
    assert_eq!(public, proxy.public_url(&id));
    assert_eq!(public, format!("http://{}/proxy/{id}", proxy.public_host()));
    assert_eq!(proxy.registered_kites(), vec![id.clone()]);

    let caller = kite_for(&env, "caller");
    for (transport, kind) in [
        (Transport::WebSocket, TransportKind::WebSocket),
        (Transport::XhrPolling, TransportKind::XhrPolling),
        (Transport::XhrStreaming, TransportKind::XhrStreaming),
        (Transport::Auto, TransportKind::WebSocket),
    ] {
        let client = find(&caller, "private").await;
        assert_eq!(client.url(), public, "Kontrol has the public URL");
        client.set_transport(transport);
        within("dial", client.dial()).await.unwrap();
        assert_eq!(client.transport(), Some(kind));
        call_through(&client).await;
        assert!(proxy.open_tunnels() >= 1);
        client.close();
    }

    // Go's form of the public URL works too, over websocket and xhr.
    let token = find(&caller, "private").await.auth();
    for transport in [Transport::WebSocket, Transport::XhrPolling] {
        let go = caller.new_client(&format!("http://{}/proxy?kiteID={id}", proxy.public_host()));
        go.set_auth(token.clone());
        go.set_transport(transport);
        within("dial Go form", go.dial()).await.unwrap();
        call_through(&go).await;
        go.close();
    }

    // A raw SockJS client: kite.ping needs no credentials, square does.
    let mut ws = raw_sockjs(&public).await;
    let pong = raw_call(&mut ws, raw_request("kite.ping", json!([]), Value::Null)).await;
    assert_eq!(pong, json!({"error": null, "result": "pong"}));
    let refused = raw_call(&mut ws, raw_request("square", json!([3]), Value::Null)).await;
    assert_eq!(refused["error"]["type"], "authenticationError", "{refused}");
    let token = token.unwrap();
    let auth = json!({"type": token.kind, "key": token.key});
    let nine = raw_call(&mut ws, raw_request("square", json!([3]), auth)).await;
    assert_eq!(nine["result"], 9.0);
    ws.close(None).await.unwrap();

    // Unknown kites are not found.
    let stranger = caller.new_client(&proxy.public_url("no-such-kite"));
    stranger.set_transport(Transport::WebSocket);
    let err = within("dial unknown", stranger.dial()).await.unwrap_err();
    assert!(err.to_string().contains("404"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn mebibyte_messages_cross_the_tunnel_whole_both_ways() {
    let env = kontrol(kontrol_key()).await;
    let (proxy, _h) = start_proxy(&env, proxy_options(), None).await;
    let (_kite, _) = private_kite(&env, "big", &proxy.kite_url()).await;
    let caller = kite_for(&env, "caller");
    // 1 MiB that JSON must escape in places, with multi-byte characters.
    let unit = "abc\"<tag>&\\ é€ 0123456789\n";
    let big: String = unit.repeat((1 << 20) / unit.len() + 1);
    assert!(big.len() >= 1 << 20);
    for transport in [
        Transport::WebSocket,
        Transport::XhrPolling,
        Transport::XhrStreaming,
    ] {
        let client = find(&caller, "big").await;
        client.set_transport(transport);
        within("dial", client.dial()).await.unwrap();
        let back: String = within("echo 1 MiB", client.call("echo", (&big,)))
            .await
            .unwrap();
        assert!(back == big, "{transport}: the echo differs");
        client.close();
    }
}

#[tokio::test]
async fn the_private_kite_authenticates_public_callers() {
    let env = kontrol(kontrol_key()).await;
    let (proxy, _h) = start_proxy(&env, proxy_options(), None).await;
    let (_kite, public) = private_kite(&env, "guarded", &proxy.kite_url()).await;
    let caller = kite_for(&env, "caller");
    let valid = find(&caller, "guarded").await;

    let expect_auth_error = |r: Result<f64, kite_native::ClientError>, what: &str| {
        let e = r.unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Authentication, "{what}: {e}");
    };
    // No credentials.
    let none = caller.new_client(&public);
    within("dial", none.dial()).await.unwrap();
    expect_auth_error(
        within("square", none.call("square", (2,))).await,
        "no token",
    );
    let pong: String = within("ping", none.call("kite.ping", ())).await.unwrap();
    assert_eq!(pong, "pong");
    // Garbage, and a token signed by a key that is not Kontrol's.
    let now = i64::try_from(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs(),
    )
    .unwrap();
    let forged = kite_native::auth::sign(
        OTHER_PEM,
        &Claims {
            iss: "kontrol".into(),
            sub: "alice".into(),
            aud: "/alice/test/guarded".into(),
            iat: Some(now),
            exp: Some(now + 3600),
            jti: "forged".into(),
            ..Claims::default()
        },
    )
    .unwrap();
    for key in ["garbage".to_owned(), forged] {
        let bad = caller.new_client(&public);
        bad.set_auth(Some(Auth::new("token", key)));
        within("dial", bad.dial()).await.unwrap();
        expect_auth_error(
            within("square", bad.call("square", (2,))).await,
            "bad token",
        );
        bad.close();
    }
    // Kontrol's token works.
    within("dial", valid.dial()).await.unwrap();
    let n: f64 = within("square", valid.call("square", (2,))).await.unwrap();
    assert_eq!(n, 4.0);
    // Nobody but the proxy makes the kite dial: not even an authenticated public caller.
    let e = within(
        "kite.tunnel through the tunnel",
        valid.call::<Value>(
            "kite.tunnel",
            (json!({"url": "ws://127.0.0.1:9/t/1/2/websocket"}),),
        ),
    )
    .await
    .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Authentication, "{e}");
    none.close();
    valid.close();
}

#[tokio::test]
async fn kite_tunnel_is_refused_on_connections_that_are_not_to_a_tunnel_proxy() {
    let env = kontrol(kontrol_key()).await;
    let (proxy, _h) = start_proxy(&env, proxy_options(), None).await;
    let (private, _) = private_kite(&env, "private", &proxy.kite_url()).await;

    // A served kite that calls `kite.tunnel` back on whatever connection calls it.
    let other = kite_for(&env, "other");
    other.handle("probe", |req: Request| async move {
        let outcome = req
            .client
            .call::<Value>(
                "kite.tunnel",
                (json!({"url": "ws://127.0.0.1:9/t/1/2/websocket"}),),
            )
            .await;
        Ok::<_, KiteError>(match outcome {
            Ok(_) => json!({"obeyed": true}),
            Err(e) => {
                json!({"auth": e.kind() == ErrorKind::Authentication, "message": e.to_string()})
            }
        })
    });
    let server = other.clone();
    tokio::spawn(async move { server.run().await.unwrap() });
    within("other up", other.ready()).await;
    let other_url = other.url().unwrap();

    // The private kite dials it (even trusting it): the callback is refused.
    let dialed = private.new_client(&other_url);
    dialed.set_auth(Some(Auth::new("kiteKey", private.kite_key())));
    dialed.set_trusted(true);
    within("dial other", dialed.dial()).await.unwrap();
    let r: Value = within("probe", dialed.call("probe", ())).await.unwrap();
    assert_eq!(r["auth"], true, "{r}");
    assert!(
        r["message"].as_str().unwrap().contains("tunnel proxy"),
        "{r}"
    );

    // An accepted connection cannot ask for it either.
    let caller = kite_for(&env, "caller");
    let direct = caller.new_client(&other_url);
    direct.set_auth(Some(Auth::new("kiteKey", caller.kite_key())));
    within("dial other", direct.dial()).await.unwrap();
    let e = within(
        "kite.tunnel on an accepted connection",
        direct.call::<Value>(
            "kite.tunnel",
            (json!({"url": "ws://127.0.0.1:9/t/1/2/websocket"}),),
        ),
    )
    .await
    .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Authentication, "{e}");
    other.close();
}

/// The HTTP status a websocket handshake at `url` is refused with.
async fn refused_with(url: &str) -> u16 {
    match within("tunnel handshake", tokio_tungstenite::connect_async(url)).await {
        Err(tungstenite::Error::Http(resp)) => resp.status().as_u16(),
        Ok(_) => panic!("{url}: accepted"),
        Err(e) => panic!("{url}: {e}"),
    }
}

#[tokio::test]
async fn forged_expired_and_unknown_tunnel_tokens_are_refused() {
    let env = kontrol(kontrol_key()).await;
    let (proxy, _h) = start_proxy(&env, proxy_options(), None).await;
    let (kite, _) = private_kite(&env, "private", &proxy.kite_url()).await;
    let id = kite.identity().id.clone();
    let host = proxy.public_host();
    let now = i64::try_from(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs(),
    )
    .unwrap();
    let sign = |pem: &str, sub: &str, seq: u64, at: i64| {
        let claims = TunnelClaims {
            sub: sub.into(),
            seq,
            iat: at,
            nbf: at,
            exp: at + 60,
        };
        let key = jsonwebtoken::EncodingKey::from_rsa_pem(pem.as_bytes()).unwrap();
        jsonwebtoken::encode(
            &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::RS256),
            &claims,
            &key,
        )
        .unwrap()
    };
    let url = |token: &str| format!("ws://{host}/tunnel/{id}/1/websocket?token={token}");
    assert_eq!(
        refused_with(&format!("ws://{host}/tunnel/{id}/1/websocket")).await,
        401,
        "no token"
    );
    assert_eq!(refused_with(&url("garbage")).await, 401, "garbage");
    assert_eq!(
        refused_with(&url(&sign(KONTROL_PEM, &id, 1, now))).await,
        401,
        "signed by another key"
    );
    assert_eq!(
        refused_with(&url(&sign(OTHER_PEM, &id, 1, now - 600))).await,
        401,
        "expired"
    );
    assert_eq!(
        refused_with(&url(&sign(OTHER_PEM, &id, 999_999, now))).await,
        404,
        "no such tunnel"
    );
    assert_eq!(
        refused_with(&url(&sign(OTHER_PEM, "nobody", 1, now))).await,
        404,
        "no such kite"
    );

    // The proxy and the kite behind it are fine.
    let caller = kite_for(&env, "caller");
    let client = find(&caller, "private").await;
    within("dial", client.dial()).await.unwrap();
    call_through(&client).await;
}

#[tokio::test]
async fn a_kite_that_opens_no_tunnel_leaves_clients_a_clear_reason() {
    let env = kontrol(kontrol_key()).await;
    let mut options = proxy_options();
    options.open_timeout = Duration::from_secs(1);
    let (proxy, _h) = start_proxy(&env, options, None).await;

    // Says yes and never dials.
    let (idle, idle_url) = private_kite(&env, "idle", &proxy.kite_url()).await;
    idle.handle("kite.tunnel", |_req: Request| async {
        Ok::<_, KiteError>(Value::Null)
    })
    .disable_authentication();
    let mut ws = raw_sockjs(&idle_url).await;
    assert_eq!(
        next_frame(&mut ws).await,
        format!("c[{TUNNEL_FAILED},\"tunnel: the kite did not open a tunnel within 1s\"]")
    );

    // Says no.
    let (refusing, refusing_url) = private_kite(&env, "refusing", &proxy.kite_url()).await;
    refusing
        .handle("kite.tunnel", |_req: Request| async {
            Err::<Value, _>(KiteError::generic("not today"))
        })
        .disable_authentication();
    let mut ws = raw_sockjs(&refusing_url).await;
    let close = next_frame(&mut ws).await;
    assert!(
        close.starts_with(&format!(
            "c[{TUNNEL_FAILED},\"tunnel: the kite did not open a tunnel: not today"
        )),
        "{close}"
    );

    // A native client sees its calls fail.
    let caller = kite_for(&env, "caller");
    let client = find(&caller, "idle").await;
    within("dial", client.dial()).await.unwrap();
    let e = within("square", client.call::<f64>("square", (2,)))
        .await
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Disconnect, "{e}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_kite_registers_again_after_the_proxy_restarts() {
    let env = kontrol(kontrol_key()).await;
    let listener = kite_native::listen("127.0.0.1:0".parse().unwrap()).unwrap();
    let addr = listener.local_addr().unwrap();
    let (proxy, handle) = start_proxy(&env, proxy_options(), Some(listener)).await;
    let (kite, public) = private_kite(&env, "private", &proxy.kite_url()).await;
    let id = kite.identity().id.clone();
    let caller = kite_for(&env, "caller");
    let client = find(&caller, "private").await;
    within("dial", client.dial()).await.unwrap();
    call_through(&client).await;

    proxy.close();
    within("client notices", client.disconnected()).await;
    within("proxy stops", handle).await.unwrap();

    let listener = kite_native::listen(addr).unwrap();
    let (proxy, _h) = start_proxy(&env, proxy_options(), Some(listener)).await;
    within("registered again", proxy.registered(&id)).await;
    assert_eq!(proxy.public_url(&id), public);
    let client = find(&caller, "private").await;
    assert_eq!(client.url(), public);
    within("dial again", client.dial()).await.unwrap();
    call_through(&client).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_kite_going_away_closes_its_clients_and_spares_the_others() {
    let env = kontrol(kontrol_key()).await;
    let (proxy, _h) = start_proxy(&env, proxy_options(), None).await;
    let (leaving, leaving_url) = private_kite(&env, "leaving", &proxy.kite_url()).await;
    let (_staying, _) = private_kite(&env, "staying", &proxy.kite_url()).await;
    let caller = kite_for(&env, "caller");
    let client = find(&caller, "leaving").await;
    client.set_transport(Transport::WebSocket);
    within("dial", client.dial()).await.unwrap();
    call_through(&client).await;
    let mut ws = raw_sockjs(&leaving_url).await;
    let pong = raw_call(&mut ws, raw_request("kite.ping", json!([]), Value::Null)).await;
    assert_eq!(pong["result"], "pong");

    leaving.close();
    within("client closed", client.disconnected()).await;
    let close = next_frame(&mut ws).await;
    assert!(close.starts_with("c["), "{close}");
    let e = within("call", client.call::<f64>("square", (2,)))
        .await
        .unwrap_err();
    assert!(
        matches!(e.kind(), ErrorKind::Send | ErrorKind::Disconnect),
        "{e}"
    );
    within("proxy forgets it", proxy.left(&leaving.identity().id)).await;
    let err = within("dial gone", client.dial()).await.unwrap_err();
    assert!(err.to_string().contains("404"), "{err}");

    let other = find(&caller, "staying").await;
    within("dial", other.dial()).await.unwrap();
    call_through(&other).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 8)]
async fn a_hundred_kites_behind_one_proxy() {
    let env = kontrol(kontrol_key()).await;
    let (proxy, _h) = start_proxy(&env, proxy_options(), None).await;
    let url = proxy.kite_url();
    let kites = join_all((0..100).map(|_| private_kite(&env, "many", &url))).await;
    assert_eq!(proxy.registered_kites().len(), 100);
    let caller = kite_for(&env, "caller");
    let found = find_all(&caller, "many").await;
    assert_eq!(found.len(), 100);
    let ids = join_all(found.iter().map(|c| async move {
        within_secs(60, "dial", c.dial()).await.unwrap();
        let who: Value = within_secs(60, "whoami", c.call("whoami", ()))
            .await
            .unwrap();
        assert_eq!(who["id"], c.remote().id);
        c.close();
        c.remote().id
    }))
    .await;
    let mut ids: Vec<String> = ids;
    ids.sort();
    let mut expected: Vec<String> = kites.iter().map(|(k, _)| k.identity().id.clone()).collect();
    expected.sort();
    assert_eq!(ids, expected);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn without_a_url_the_tunnel_proxy_is_found_through_kontrol() {
    let env = kontrol(kontrol_key()).await;
    // Go's `RegisterToTunnel` query: the Kontrol's user, the environment, name `tunnelproxy`.
    let proxy = TunnelProxy::new(config_for(&env, "kontrol"), "0.0.1", proxy_options()).unwrap();
    let listener = kite_native::listen("127.0.0.1:0".parse().unwrap()).unwrap();
    let server = proxy.clone();
    tokio::spawn(async move { server.serve(listener).await.unwrap() });
    within("proxy up", proxy.ready()).await;

    // Until the proxy registers, Kontrol finds none.
    let early = kite_for(&env, "early");
    let err = within(
        "register_to_tunnel without a proxy",
        early.register_to_tunnel(""),
    )
    .await
    .unwrap_err();
    assert!(err.message.contains("no proxy kite"), "{err}");
    early.close();

    within("proxy registers", proxy.kite().register(&proxy.kite_url()))
        .await
        .unwrap();
    let (kite, url) = private_kite(&env, "math", "").await;
    assert_eq!(url, proxy.public_url(&kite.identity().id));
    let caller = kite_for(&env, "caller");
    let client = find(&caller, "math").await;
    assert_eq!(client.url(), url);
    within("dial", client.dial()).await.unwrap();
    call_through(&client).await;

    client.close();
    caller.close();
    kite.close();
    proxy.close();
    env.kontrol.kite().close();
}
