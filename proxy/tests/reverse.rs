//! The reverse proxy end to end on 127.0.0.1: a Kontrol (memory storage), a proxy, kites
//! registered through it with `Kite::register_to_proxy`, and callers that find them through
//! Kontrol at their public `/proxy/<kiteID>` URLs and call them over every transport.

use std::sync::Arc;

use futures_util::{SinkExt, StreamExt};
use kite_native::auth::KeyPair;
use kite_native::core::KontrolQuery;
use kite_native::session::TransportKind;
use kite_native::transport::{DialOptions, Transport};
use kite_native::{Client, ErrorKind, Kite};
use kite_proxy::reverse::{ReverseProxy, ReverseProxyOptions};
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_tungstenite::tungstenite::{self, Message as WsMessage, client::IntoClientRequest};

mod common;

use common::{Env, LIMIT, config_for, kontrol, local_config, within};

const MIB: usize = 1 << 20;

fn kite_for(s: &Env, name: &str) -> Kite {
    Kite::with_config(name, "1.0.0", config_for(s, "alice")).unwrap()
}

async fn start(kite: &Kite) -> std::net::SocketAddr {
    let server = kite.clone();
    tokio::spawn(async move { server.run().await.unwrap() });
    within("kite up", kite.ready()).await
}

/// A proxy serving on `listener` (a fresh port when `None`), and the task serving it.
async fn start_proxy(
    s: &Env,
    options: ReverseProxyOptions,
    listener: Option<TcpListener>,
) -> (ReverseProxy, JoinHandle<()>) {
    let proxy = ReverseProxy::new(config_for(s, "proxy-admin"), "0.0.1", options).unwrap();
    let listener =
        listener.unwrap_or_else(|| kite_native::listen(([127, 0, 0, 1], 0).into()).unwrap());
    let server = proxy.clone();
    let task = tokio::spawn(async move { server.serve(listener).await.unwrap() });
    within("proxy up", proxy.ready()).await;
    (proxy, task)
}

/// `square` and `echo`, the way the introduction's kites serve them.
fn add_methods(kite: &Kite) {
    kite_test_kit::kites::add_square_and_echo(kite);
}

/// A kite named `name` serving `square` and `echo`, registered through `proxy`: its public URL.
async fn backend(s: &Env, name: &str, proxy: &ReverseProxy) -> (Kite, String) {
    let kite = kite_for(s, name);
    add_methods(&kite);
    start(&kite).await;
    let public = within(
        "register_to_proxy",
        kite.register_to_proxy(&proxy.kite_url().unwrap(), &kite.url().unwrap()),
    )
    .await
    .unwrap();
    (kite, public)
}

fn query(name: &str) -> KontrolQuery {
    KontrolQuery {
        username: "alice".into(),
        environment: "test".into(),
        name: name.into(),
        ..Default::default()
    }
}

/// The one kite Kontrol knows as `name`.
async fn find(caller: &Kite, name: &str) -> Client {
    let mut found = within("getKites", caller.get_kites(&query(name)))
        .await
        .unwrap();
    assert_eq!(found.len(), 1, "kites named {name}");
    found.remove(0)
}

async fn square(client: &Client, n: f64) -> Result<f64, kite_native::ClientError> {
    within("square", client.call("square", (n,))).await
}

fn ws_url(http_url: &str) -> String {
    http_url
        .replacen("https://", "wss://", 1)
        .replacen("http://", "ws://", 1)
}

type RawWs =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// A Kite.js-style call on a raw websocket: one dnode message, its answer.
async fn raw_call(ws: &mut RawWs, method: &str, args: Value, token: &str) -> Value {
    let msg = json!({
        "method": method,
        "arguments": [{
            "kite": {"name": "browser", "username": "alice", "id": "b1", "environment": "test",
                     "region": "r", "version": "1.0.0", "hostname": "h"},
            "authentication": {"type": "token", "key": token},
            "withArgs": args,
            "responseCallback": "[Function]",
        }],
        "callbacks": {"0": [0, "responseCallback"]},
    });
    within("raw send", ws.send(WsMessage::text(msg.to_string())))
        .await
        .unwrap();
    loop {
        match within("raw answer", ws.next()).await {
            Some(Ok(WsMessage::Text(t))) => return serde_json::from_str(&t).unwrap(),
            Some(Ok(WsMessage::Ping(_) | WsMessage::Pong(_))) => continue,
            other => panic!("expected an answer, got {other:?}"),
        }
    }
}

/// The next close frame on a raw websocket (`None` if it ended without one).
async fn next_close(ws: &mut RawWs) -> Option<(u16, String)> {
    loop {
        match within("close", ws.next()).await {
            Some(Ok(WsMessage::Close(f))) => {
                return f.map(|f| (u16::from(f.code), f.reason.to_string()));
            }
            Some(Ok(_)) => continue,
            Some(Err(_)) | None => return None,
        }
    }
}

#[tokio::test]
async fn a_kite_behind_the_proxy_is_found_through_kontrol_and_called_over_every_transport() {
    let s = kontrol(KeyPair::generate(2048).unwrap()).await;
    let (proxy, _) = start_proxy(&s, ReverseProxyOptions::default(), None).await;
    let (math, public) = backend(&s, "math", &proxy).await;
    let id = math.identity().id.clone();
    assert_eq!(Some(public.clone()), proxy.public_url(&id));
    assert!(public.starts_with("http://127.0.0.1:") && public.ends_with(&format!("/proxy/{id}")));
    assert_eq!(proxy.backend_url(&id), math.url());
    assert_eq!(proxy.kites()[0].username, "alice");

    let caller = kite_for(&s, "caller");
    for (transport, kind) in [
        (Transport::WebSocket, TransportKind::WebSocket),
        (Transport::XhrPolling, TransportKind::XhrPolling),
        (Transport::XhrStreaming, TransportKind::XhrStreaming),
    ] {
        let client = find(&caller, "math").await;
        // Kontrol hands out the public URL, not the kite's own.
        assert_eq!(client.url(), public);
        client.set_transport(transport);
        within("dial", client.dial()).await.unwrap();
        assert_eq!(client.transport(), Some(kind));
        assert_eq!(square(&client, 4.0).await.unwrap(), 16.0, "{transport}");
        // 1 MiB each way, over websocket and both XHR transports.
        let big: String = "0123456789abcdef".repeat(MIB / 16);
        let echoed: String = within("echo 1 MiB", client.call("echo", (&big,)))
            .await
            .unwrap();
        assert!(echoed == big, "{transport}: 1 MiB came back changed");
        client.close();
    }

    // Kite.js: a raw websocket at `<public URL>/websocket`, with a token from Kontrol.
    let token = within(
        "getToken",
        caller.get_token(&KontrolQuery {
            id: id.clone(),
            ..Default::default()
        }),
    )
    .await
    .unwrap();
    let (mut ws, _) = within(
        "raw websocket",
        tokio_tungstenite::connect_async(format!("{}/websocket", ws_url(&public))),
    )
    .await
    .unwrap();
    let answer = raw_call(&mut ws, "square", json!([5]), &token).await;
    assert_eq!(
        answer["arguments"][0]["result"].as_f64(),
        Some(25.0),
        "{answer}"
    );
    // The client's close, code and reason, goes through and comes back.
    within(
        "raw close",
        ws.send(WsMessage::Close(Some(tungstenite::protocol::CloseFrame {
            code: 4000.into(),
            reason: "bye".into(),
        }))),
    )
    .await
    .unwrap();
    assert_eq!(next_close(&mut ws).await, Some((4000, "bye".into())));

    // SockJS info and an unknown kite id, over plain HTTP.
    let http = reqwest::Client::new();
    let info = within("info", http.get(format!("{public}/info")).send())
        .await
        .unwrap();
    assert_eq!(info.status(), 200);
    let info: Value = serde_json::from_str(&info.text().await.unwrap()).unwrap();
    assert_eq!(info["websocket"], json!(true), "{info}");
    let base = proxy.public_url("").unwrap();
    let unknown = within("unknown", http.get(format!("{base}nobody/info")).send())
        .await
        .unwrap();
    assert_eq!(unknown.status(), 404);
    let body = unknown.text().await.unwrap();
    assert!(
        body.contains("no kite with id nobody is registered"),
        "{body}"
    );

    caller.close();
    math.close();
    within("route removed", proxy.unregistered(&id)).await;
    proxy.close();
    s.kontrol.kite().close();
}

#[tokio::test]
async fn the_backend_registers_again_when_the_proxy_restarts() {
    let s = kontrol(KeyPair::generate(2048).unwrap()).await;
    let (proxy, task) = start_proxy(&s, ReverseProxyOptions::default(), None).await;
    let addr = proxy.ready().await;
    let (math, public) = backend(&s, "math", &proxy).await;
    let id = math.identity().id.clone();
    let caller = kite_for(&s, "caller");
    let client = find(&caller, "math").await;
    within("dial", client.dial()).await.unwrap();
    assert_eq!(square(&client, 3.0).await.unwrap(), 9.0);

    // The proxy goes away: callers through it are cut off.
    proxy.close();
    within("proxy down", task).await.unwrap();
    within("caller cut off", client.disconnected()).await;
    let err = square(&client, 3.0).await.unwrap_err();
    assert!(
        matches!(err.kind(), ErrorKind::Send | ErrorKind::Disconnect),
        "{err}"
    );

    // A new proxy on the same port: the backend's connection comes back and registers again.
    let listener = kite_native::listen(addr).unwrap();
    let (proxy, _) = start_proxy(&s, ReverseProxyOptions::default(), Some(listener)).await;
    assert_eq!(
        within("registered again", proxy.registered(&id)).await,
        math.url().unwrap()
    );
    let client = find(&caller, "math").await;
    assert_eq!(client.url(), public);
    within("dial again", client.dial()).await.unwrap();
    assert_eq!(square(&client, 6.0).await.unwrap(), 36.0);

    client.close();
    caller.close();
    math.close();
    proxy.close();
    s.kontrol.kite().close();
}

#[tokio::test]
async fn with_a_proxy_url_register_forever_goes_through_the_proxy() {
    let s = kontrol(KeyPair::generate(2048).unwrap()).await;
    let (proxy, _) = start_proxy(&s, ReverseProxyOptions::default(), None).await;
    // What `KITE_PROXY_URL` sets.
    let mut config = config_for(&s, "alice");
    config.proxy_url = proxy.kite_url().unwrap();
    let math = Kite::with_config("math", "1.0.0", config).unwrap();
    add_methods(&math);
    start(&math).await;
    let result = within(
        "register_forever",
        math.register_forever(&math.url().unwrap()),
    )
    .await
    .unwrap();
    let id = math.identity().id.clone();
    assert_eq!(Some(result.url.clone()), proxy.public_url(&id));
    assert_eq!(proxy.backend_url(&id), math.url());

    let caller = kite_for(&s, "caller");
    let client = find(&caller, "math").await;
    assert_eq!(client.url(), result.url);
    within("dial", client.dial()).await.unwrap();
    assert_eq!(square(&client, 11.0).await.unwrap(), 121.0);

    client.close();
    caller.close();
    math.close();
    proxy.close();
    s.kontrol.kite().close();
}

#[tokio::test]
async fn a_backend_that_goes_away_fails_clearly_and_the_others_keep_working() {
    let s = kontrol(KeyPair::generate(2048).unwrap()).await;
    let (proxy, _) = start_proxy(&s, ReverseProxyOptions::default(), None).await;
    let (a, a_public) = backend(&s, "a", &proxy).await;
    let (b, b_public) = backend(&s, "b", &proxy).await;
    let a_id = a.identity().id.clone();
    let caller = kite_for(&s, "caller");
    let to_a = find(&caller, "a").await;
    to_a.set_transport(Transport::WebSocket);
    within("dial a", to_a.dial()).await.unwrap();
    assert_eq!(square(&to_a, 2.0).await.unwrap(), 4.0);
    let token = within(
        "getToken",
        caller.get_token(&KontrolQuery {
            id: a_id.clone(),
            ..Default::default()
        }),
    )
    .await
    .unwrap();
    let (mut raw, _) = within(
        "raw websocket",
        tokio_tungstenite::connect_async(format!("{}/websocket", ws_url(&a_public))),
    )
    .await
    .unwrap();
    let answer = raw_call(&mut raw, "square", json!([7]), &token).await;
    assert_eq!(
        answer["arguments"][0]["result"].as_f64(),
        Some(49.0),
        "{answer}"
    );

    // A kite registered at an address nobody serves: 502 for HTTP and websockets alike.
    let dead = kite_for(&s, "dead");
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let dead_public = within(
        "register dead",
        dead.register_to_proxy(
            &proxy.kite_url().unwrap(),
            &format!("http://127.0.0.1:{port}/kite"),
        ),
    )
    .await
    .unwrap();
    let http = reqwest::Client::new();
    let resp = within("dead info", http.get(format!("{dead_public}/info")).send())
        .await
        .unwrap();
    assert_eq!(resp.status(), 502);
    let body = resp.text().await.unwrap();
    assert!(body.contains("is unreachable"), "{body}");
    match within(
        "dead websocket",
        tokio_tungstenite::connect_async(format!("{}/websocket", ws_url(&dead_public))),
    )
    .await
    {
        Err(tungstenite::Error::Http(r)) => assert_eq!(r.status(), 502),
        other => panic!("expected a 502, got {other:?}"),
    }

    // `a` goes away: its callers are cut off (the raw websocket with the kite's own close
    // code), and its route goes with its connection to the proxy.
    a.close();
    within("caller cut off", to_a.disconnected()).await;
    assert_eq!(next_close(&mut raw).await, Some((3000, "Go away!".into())));
    within("route removed", proxy.unregistered(&a_id)).await;
    let resp = within("gone info", http.get(format!("{a_public}/info")).send())
        .await
        .unwrap();
    assert_eq!(resp.status(), 404);

    // `b` is still served, over websocket and xhr-polling.
    for transport in [Transport::WebSocket, Transport::XhrPolling] {
        let to_b = find(&caller, "b").await;
        assert_eq!(to_b.url(), b_public);
        to_b.set_transport(transport);
        within("dial b", to_b.dial()).await.unwrap();
        assert_eq!(square(&to_b, 8.0).await.unwrap(), 64.0);
        to_b.close();
    }

    caller.close();
    b.close();
    dead.close();
    proxy.close();
    s.kontrol.kite().close();
}

#[tokio::test]
async fn a_hundred_kites_behind_one_proxy() {
    let s = Arc::new(kontrol(KeyPair::generate(2048).unwrap()).await);
    let (proxy, _) = start_proxy(&s, ReverseProxyOptions::default(), None).await;
    let mut starting = tokio::task::JoinSet::new();
    for i in 0..100 {
        let (s, proxy) = (s.clone(), proxy.clone());
        starting.spawn(async move { backend(&s, &format!("k{i}"), &proxy).await });
    }
    let mut kites = Vec::new();
    while let Some(k) = starting.join_next().await {
        kites.push(k.unwrap());
    }
    assert_eq!(proxy.kites().len(), 100);

    let caller = kite_for(&s, "caller");
    // Connected before the burst of calls: concurrent first uses of `Kite::kontrol` each
    // start a dial (a kite-native issue of its own).
    within("kontrol", caller.kontrol()).await.unwrap();
    let mut calls = tokio::task::JoinSet::new();
    for (i, (kite, public)) in kites.iter().enumerate() {
        let (caller, id, public) = (caller.clone(), kite.identity().id.clone(), public.clone());
        calls.spawn(async move {
            let q = KontrolQuery {
                username: "alice".into(),
                id,
                ..Default::default()
            };
            let mut found = within("getKites", caller.get_kites(&q)).await.unwrap();
            assert_eq!(found.len(), 1);
            let client = found.remove(0);
            assert_eq!(client.url(), public);
            within("dial", client.dial()).await.unwrap();
            let n = square(&client, i as f64).await.unwrap();
            client.close();
            (i, n)
        });
    }
    let mut answered = 0;
    while let Some(r) = calls.join_next().await {
        let (i, n) = r.unwrap();
        assert_eq!(n, (i * i) as f64);
        answered += 1;
    }
    assert_eq!(answered, 100);

    caller.close();
    for (k, _) in &kites {
        k.close();
    }
    proxy.close();
    s.kontrol.kite().close();
}

/// A websocket handshake to `url` with `Origin: origin`: its HTTP status.
async fn ws_status(url: &str, origin: Option<&str>) -> u16 {
    let mut request = url.into_client_request().unwrap();
    if let Some(o) = origin {
        request
            .headers_mut()
            .insert("origin", o.try_into().unwrap());
    }
    match within("websocket", tokio_tungstenite::connect_async(request)).await {
        Ok((mut ws, answer)) => {
            let _ = ws.close(None).await;
            answer.status().as_u16()
        }
        Err(tungstenite::Error::Http(r)) => {
            let body =
                String::from_utf8_lossy(r.body().as_deref().unwrap_or_default()).into_owned();
            if r.status() == 403 {
                assert!(body.contains("is not allowed"), "{body}");
            }
            r.status().as_u16()
        }
        Err(e) => panic!("websocket to {url}: {e}"),
    }
}

#[tokio::test]
async fn origins_are_checked() {
    let s = kontrol(KeyPair::generate(2048).unwrap()).await;
    let mut options = ReverseProxyOptions::default();
    options.allowed_origins = vec!["https://app.example.com".into()];
    let (proxy, _) = start_proxy(&s, options, None).await;
    let (math, public) = backend(&s, "math", &proxy).await;
    let port = proxy.public_port().unwrap();
    let ws = format!("{}/websocket", ws_url(&public));

    // No Origin (kites, tools), the proxy's own, and the allowed one are served.
    assert_eq!(ws_status(&ws, None).await, 101);
    assert_eq!(
        ws_status(&ws, Some(&format!("http://127.0.0.1:{port}"))).await,
        101
    );
    assert_eq!(ws_status(&ws, Some("https://app.example.com")).await, 101);
    // Another origin is refused, on websockets and XHR alike.
    assert_eq!(ws_status(&ws, Some("https://evil.example.com")).await, 403);
    assert_eq!(ws_status(&ws, Some("http://app.example.com")).await, 403);
    assert_eq!(ws_status(&ws, Some("null")).await, 403);
    let http = reqwest::Client::new();
    let xhr = format!("{public}/000/abcdef/xhr");
    let refused = within(
        "xhr",
        http.post(&xhr)
            .header("origin", "https://evil.example.com")
            .send(),
    )
    .await
    .unwrap();
    assert_eq!(refused.status(), 403);
    let served = within(
        "xhr",
        http.post(&xhr)
            .header("origin", "https://app.example.com")
            .send(),
    )
    .await
    .unwrap();
    assert_eq!(served.status(), 200);
    assert_eq!(served.text().await.unwrap(), "o\n");

    // `*` serves every origin (Go's behaviour).
    let mut options = ReverseProxyOptions::default();
    options.allowed_origins = vec!["*".into()];
    let (open, _) = start_proxy(&s, options, None).await;
    let (other, other_public) = backend(&s, "other", &open).await;
    let ws = format!("{}/websocket", ws_url(&other_public));
    assert_eq!(ws_status(&ws, Some("https://evil.example.com")).await, 101);

    math.close();
    other.close();
    proxy.close();
    open.close();
    s.kontrol.kite().close();
}

#[tokio::test]
async fn the_public_side_can_be_tls() {
    let cert =
        rcgen::generate_simple_self_signed(vec!["localhost".into(), "127.0.0.1".into()]).unwrap();
    let dir = std::env::temp_dir().join(format!("reverse-proxy-tls-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let (cert_path, key_path) = (dir.join("cert.pem"), dir.join("key.pem"));
    let cert_pem = cert.cert.pem();
    std::fs::write(&cert_path, &cert_pem).unwrap();
    std::fs::write(&key_path, cert.signing_key.serialize_pem()).unwrap();

    let s = kontrol(KeyPair::generate(2048).unwrap()).await;
    let mut config = config_for(&s, "proxy-admin");
    config.tls = Some(kite_native::config::TlsConfig {
        cert_path,
        key_path,
    });
    let proxy = ReverseProxy::new(config, "0.0.1", ReverseProxyOptions::default()).unwrap();
    let server = proxy.clone();
    tokio::spawn(async move { server.run().await.unwrap() });
    within("proxy up", proxy.ready()).await;
    let proxy_url = proxy.kite_url().unwrap();
    assert!(proxy_url.starts_with("https://127.0.0.1:"), "{proxy_url}");

    let mut tls = DialOptions::default();
    tls.root_certificates = vec![cert_pem.clone()];
    tls.max_message_size = LIMIT;

    // The backend serves plain HTTP; it registers over TLS with a client trusting the cert.
    let math = kite_for(&s, "math");
    add_methods(&math);
    start(&math).await;
    let to_proxy = math.new_client(&proxy_url);
    to_proxy.set_dial_options(tls.clone());
    to_proxy.set_auth(Some(kite_native::Auth::new("kiteKey", math.kite_key())));
    within("dial proxy", to_proxy.dial()).await.unwrap();
    let public: String = within(
        "register",
        to_proxy.call("register", (math.url().unwrap(),)),
    )
    .await
    .unwrap();
    assert!(public.starts_with("https://127.0.0.1:"), "{public}");
    within("register with Kontrol", math.register(&public))
        .await
        .unwrap();

    let caller = kite_for(&s, "caller");
    let token = within(
        "getToken",
        caller.get_token(&KontrolQuery {
            id: math.identity().id.clone(),
            ..Default::default()
        }),
    )
    .await
    .unwrap();
    for transport in [Transport::WebSocket, Transport::XhrStreaming] {
        let client = caller.new_client(&public);
        let mut options = tls.clone();
        options.transport = transport;
        client.set_dial_options(options);
        client.set_auth(Some(kite_native::Auth::new("token", token.clone())));
        within("dial", client.dial()).await.unwrap();
        assert_eq!(square(&client, 9.0).await.unwrap(), 81.0, "{transport}");
        client.close();
    }

    // Without the kite key, `register` is refused.
    let anonymous = Kite::with_config("anon", "1.0.0", local_config()).unwrap();
    let c = anonymous.new_client(&proxy_url);
    c.set_dial_options(tls);
    within("dial proxy", c.dial()).await.unwrap();
    let err = within(
        "register",
        c.call::<String>("register", ("http://127.0.0.1:1/kite",)),
    )
    .await
    .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Authentication, "{err}");

    c.close();
    to_proxy.close();
    caller.close();
    math.close();
    proxy.close();
    s.kontrol.kite().close();
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn without_a_proxy_url_the_proxy_is_found_through_kontrol() {
    let s = kontrol(KeyPair::generate(2048).unwrap()).await;
    // Go's query: the Kontrol's user (the kite keys' issuer), the environment, name `proxy`.
    let proxy = ReverseProxy::new(
        config_for(&s, "kontrol"),
        "0.0.1",
        ReverseProxyOptions::default(),
    )
    .unwrap();
    let listener = kite_native::listen(([127, 0, 0, 1], 0).into()).unwrap();
    let server = proxy.clone();
    tokio::spawn(async move { server.serve(listener).await.unwrap() });
    within("proxy up", proxy.ready()).await;
    let math = kite_for(&s, "math");
    add_methods(&math);
    start(&math).await;
    assert_eq!(math.proxy_query("proxy").username, "kontrol");

    // Until the proxy registers, Kontrol finds none.
    let err = within(
        "register_to_proxy without a proxy",
        math.register_to_proxy("", &math.url().unwrap()),
    )
    .await
    .unwrap_err();
    assert!(err.message.contains("no proxy kite"), "{err}");

    let proxy_url = proxy.kite_url().unwrap();
    within("proxy registers", proxy.kite().register(&proxy_url))
        .await
        .unwrap();
    let public = within(
        "register_to_proxy",
        math.register_to_proxy("", &math.url().unwrap()),
    )
    .await
    .unwrap();
    let id = math.identity().id.clone();
    assert_eq!(Some(public.clone()), proxy.public_url(&id));
    assert_eq!(proxy.backend_url(&id), math.url());

    let caller = kite_for(&s, "caller");
    let client = find(&caller, "math").await;
    assert_eq!(client.url(), public);
    within("dial", client.dial()).await.unwrap();
    assert_eq!(square(&client, 12.0).await.unwrap(), 144.0);

    client.close();
    caller.close();
    math.close();
    proxy.close();
    s.kontrol.kite().close();
}
