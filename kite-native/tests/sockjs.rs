//! The SockJS server on its own (an echo service), driven by hand over HTTP and websocket.

use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use kite_native::core::sockjs::{self, Frame};
use kite_native::session::Session;
use kite_native::sockjs::{SockJsOptions, router};
use kite_native::transport::{DialOptions, Transport};
use kite_test_kit::within;
use tokio_tungstenite::tungstenite::Message;

/// Serves an echo service at `/echo`; each ended session is reported on the channel.
async fn echo_server(
    options: SockJsOptions,
) -> (String, tokio::sync::mpsc::UnboundedReceiver<String>) {
    let (ended_tx, ended_rx) = tokio::sync::mpsc::unbounded_channel();
    let on_session = move |mut s: Session| {
        let ended = ended_tx.clone();
        tokio::spawn(async move {
            while let Some(msg) = s.rx.recv().await {
                if msg == "close" {
                    s.tx.close(3000, "Go away!");
                    continue;
                }
                let _ = s.tx.send(msg);
            }
            let _ = ended.send(s.info.id);
        });
    };
    let app = axum::Router::new().nest("/echo", router(options, on_session));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        axum::serve(
            listener,
            app.into_make_service_with_connect_info::<std::net::SocketAddr>(),
        )
        .await
        .unwrap()
    });
    (format!("http://{addr}/echo"), ended_rx)
}

#[tokio::test]
async fn info_welcome_cors_and_errors() {
    let (url, _) = echo_server(SockJsOptions::default()).await;
    let http = reqwest::Client::new();
    let info = http
        .get(format!("{url}/info"))
        .header("Origin", "http://example.com")
        .send()
        .await
        .unwrap();
    assert_eq!(info.status().as_u16(), 200);
    assert_eq!(
        info.headers()["access-control-allow-origin"],
        "http://example.com"
    );
    assert_eq!(info.headers()["access-control-allow-credentials"], "true");
    assert!(
        info.headers()["cache-control"]
            .to_str()
            .unwrap()
            .contains("no-store")
    );
    let body: serde_json::Value = info.json_text().await;
    assert_eq!(body["websocket"], true);
    assert_eq!(body["cookie_needed"], false);
    assert_eq!(body["origins"], serde_json::json!(["*:*"]));
    assert!(body["entropy"].is_u64());

    let welcome = http.get(url.clone()).send().await.unwrap();
    assert_eq!(welcome.text().await.unwrap(), "Welcome to SockJS!\n");

    let pre = http
        .request(reqwest::Method::OPTIONS, format!("{url}/1/a/xhr"))
        .header("Access-Control-Request-Headers", "x-test")
        .send()
        .await
        .unwrap();
    assert_eq!(pre.status().as_u16(), 204);
    assert_eq!(pre.headers()["access-control-allow-headers"], "x-test");
    assert!(
        pre.headers()["access-control-max-age"]
            .to_str()
            .unwrap()
            .parse::<u64>()
            .unwrap()
            > 0
    );

    let wrong = http.get(format!("{url}/1/a/xhr")).send().await.unwrap();
    assert_eq!(wrong.status().as_u16(), 405);
    assert!(wrong.headers().contains_key("allow"));
    let missing = http.get(format!("{url}/nope/x/y/z")).send().await.unwrap();
    assert_eq!(missing.status().as_u16(), 404);
    let dotted = http.post(format!("{url}/1/a.b/xhr")).send().await.unwrap();
    assert_eq!(dotted.status().as_u16(), 404);

    // An unknown session is 404 whatever the body (sockjs-node's order; Go decodes first):
    // nothing is read for a session that does not exist.
    let send = |body: &'static str, path: &'static str| {
        let http = http.clone();
        let url = url.clone();
        async move {
            let r = http
                .post(format!("{url}/{path}/xhr_send"))
                .body(body)
                .send()
                .await
                .unwrap();
            (r.status().as_u16(), r.text().await.unwrap())
        }
    };
    assert_eq!(send("", "1/nosession").await.0, 404);
    assert_eq!(send("[\"a", "1/nosession").await.0, 404);
    assert_eq!(send("[\"a\"]", "1/nosession").await.0, 404);
}

trait JsonText {
    async fn json_text(self) -> serde_json::Value;
}
impl JsonText for reqwest::Response {
    async fn json_text(self) -> serde_json::Value {
        serde_json::from_str(&self.text().await.unwrap()).unwrap()
    }
}

#[tokio::test]
async fn back_to_back_xhr_polls_never_get_2010_and_lose_nothing() {
    let (url, _) = echo_server(SockJsOptions::default()).await;
    let http = reqwest::Client::new();
    let session = format!("{url}/000/backtoback");
    assert_eq!(
        http.post(format!("{session}/xhr"))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap(),
        "o\n"
    );
    for i in 0..2000 {
        let msg = format!("m{i}");
        let r = http
            .post(format!("{session}/xhr_send"))
            .body(sockjs::encode_client_frame([msg.as_str()]))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status().as_u16(), 204);
        let body = within("poll", async {
            http.post(format!("{session}/xhr"))
                .send()
                .await
                .unwrap()
                .text()
                .await
                .unwrap()
        })
        .await;
        assert_eq!(
            body,
            format!("{}\n", sockjs::encode_messages([msg.as_str()])),
            "call {i}"
        );
    }
}

#[tokio::test]
async fn a_concurrent_second_poll_gets_2010_and_the_first_keeps_waiting() {
    let (url, _) = echo_server(SockJsOptions::default()).await;
    let http = reqwest::Client::new();
    let session = format!("{url}/000/concurrent");
    http.post(format!("{session}/xhr")).send().await.unwrap();
    let poll = || {
        let http = http.clone();
        let session = session.clone();
        tokio::spawn(async move {
            http.post(format!("{session}/xhr"))
                .send()
                .await
                .unwrap()
                .text()
                .await
                .unwrap()
        })
    };
    // Two polls at once: nothing is queued, so the one that finishes first is the refused one.
    let (mut a, mut b) = (poll(), poll());
    let (refused, waiting) = tokio::select! {
        r = &mut a => (r.unwrap(), b),
        r = &mut b => (r.unwrap(), a),
    };
    assert_eq!(refused, "c[2010,\"Another connection still open\"]\n");
    http.post(format!("{session}/xhr_send"))
        .body("[\"late\"]")
        .send()
        .await
        .unwrap();
    assert_eq!(
        within("first poll", waiting).await.unwrap(),
        "a[\"late\"]\n"
    );
}

#[tokio::test]
async fn heartbeats_expiry_and_close_frames() {
    let options = SockJsOptions {
        heartbeat_delay: Duration::from_millis(50),
        disconnect_delay: Duration::from_millis(200),
        ..SockJsOptions::default()
    };
    let (url, mut ended) = echo_server(options).await;
    let http = reqwest::Client::new();

    // xhr: an idle poll is answered with a heartbeat.
    let session = format!("{url}/000/idle");
    http.post(format!("{session}/xhr")).send().await.unwrap();
    assert_eq!(
        http.post(format!("{session}/xhr"))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap(),
        "h\n"
    );
    // Nobody polls: the session ends after the disconnect delay and sends are refused.
    assert_eq!(within("expiry", ended.recv()).await.unwrap(), "idle");
    assert_eq!(
        http.post(format!("{session}/xhr_send"))
            .body("[\"x\"]")
            .send()
            .await
            .unwrap()
            .status()
            .as_u16(),
        404
    );
    // Polling the same id again opens a fresh session.
    assert_eq!(
        http.post(format!("{session}/xhr"))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap(),
        "o\n"
    );

    // xhr: a server-side close is delivered as c[3000,"Go away!"].
    let s2 = format!("{url}/000/closing");
    http.post(format!("{s2}/xhr")).send().await.unwrap();
    http.post(format!("{s2}/xhr_send"))
        .body("[\"close\"]")
        .send()
        .await
        .unwrap();
    assert_eq!(
        http.post(format!("{s2}/xhr"))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap(),
        "c[3000,\"Go away!\"]\n"
    );

    // websocket: o, h while idle, echo, then the close frame.
    let ws_url = format!("{}/000/ws/websocket", url.replacen("http", "ws", 1));
    let (mut ws, _) = tokio_tungstenite::connect_async(ws_url).await.unwrap();
    assert_eq!(next_text(&mut ws).await, "o");
    assert_eq!(next_text(&mut ws).await, "h");
    ws.send(Message::text("[\"a\",\"b\"]")).await.unwrap();
    let mut got = Vec::new();
    while got.len() < 2 {
        match within("echo", ws.next()).await {
            Some(Ok(Message::Text(t))) => match Frame::decode(&t).unwrap() {
                Frame::Messages(m) => got.extend(m),
                Frame::Heartbeat => {}
                other => panic!("{other:?}"),
            },
            other => panic!("{other:?}"),
        }
    }
    assert_eq!(got, vec!["a".to_owned(), "b".to_owned()]);
    ws.send(Message::text("[\"close\"]")).await.unwrap();
    loop {
        match within("close", ws.next()).await {
            Some(Ok(Message::Text(t))) if t.as_str() == "h" || t.starts_with('a') => continue,
            Some(Ok(Message::Text(t))) => {
                assert_eq!(t.as_str(), "c[3000,\"Go away!\"]");
                break;
            }
            other => panic!("{other:?}"),
        }
    }
}

type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

async fn next_text(ws: &mut Ws) -> String {
    match within("ws frame", ws.next()).await {
        Some(Ok(Message::Text(t))) => t.to_string(),
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn xhr_streaming_delivers_frames_and_rotates_after_the_response_limit() {
    let options = SockJsOptions {
        response_limit: 4096,
        ..SockJsOptions::default()
    };
    let (url, _) = echo_server(options).await;
    let http = reqwest::Client::new();
    let session = format!("{url}/000/stream");
    let resp = http
        .post(format!("{session}/xhr_streaming"))
        .send()
        .await
        .unwrap();
    let mut resp = resp;
    let mut text = String::new();
    while !text.contains("o\n") {
        text.push_str(
            std::str::from_utf8(&within("prelude", resp.chunk()).await.unwrap().unwrap()).unwrap(),
        );
    }
    assert!(text.starts_with(&"h".repeat(2048)));
    let big = "x".repeat(3000);
    for i in 0..3 {
        let msg = format!("{i}{big}");
        http.post(format!("{session}/xhr_send"))
            .body(sockjs::encode_client_frame([msg.as_str()]))
            .send()
            .await
            .unwrap();
    }
    // The response ends once it has carried more than the limit.
    let mut rest = String::new();
    while let Some(chunk) = within("stream", resp.chunk()).await.unwrap() {
        rest.push_str(std::str::from_utf8(&chunk).unwrap());
    }
    assert!(rest.starts_with("a[\"0"), "{}", &rest[..20.min(rest.len())]);
    // The next streaming request continues the same session with what is left.
    let resp = http
        .post(format!("{session}/xhr_streaming"))
        .send()
        .await
        .unwrap();
    let mut resp = resp;
    let mut text = String::new();
    while !text.contains("a[\"2") {
        text.push_str(
            std::str::from_utf8(
                &within("second stream", resp.chunk())
                    .await
                    .unwrap()
                    .unwrap(),
            )
            .unwrap(),
        );
    }
    assert!(!text.contains("o\n"), "no second open frame");
}

#[tokio::test]
async fn auto_transport_falls_back_to_xhr_when_websocket_is_off() {
    // Websocket off: xhr-streaming; xhr-streaming off too: xhr-polling.
    for (streaming, expected) in [
        (true, kite_native::session::TransportKind::XhrStreaming),
        (false, kite_native::session::TransportKind::XhrPolling),
    ] {
        let options = SockJsOptions {
            websocket: false,
            xhr_streaming: streaming,
            ..SockJsOptions::default()
        };
        let (url, _) = echo_server(options).await;
        let mut session = within(
            "dial",
            kite_native::transport::dial(&url, &DialOptions::default()),
        )
        .await
        .unwrap();
        assert_eq!(session.info.transport, expected);
        session.tx.send("via xhr".into()).unwrap();
        assert_eq!(within("echo", session.rx.recv()).await.unwrap(), "via xhr");
    }
    let options = SockJsOptions {
        websocket: false,
        ..SockJsOptions::default()
    };
    let (url, _) = echo_server(options).await;

    let mut ws_only = DialOptions::default();
    ws_only.transport = Transport::WebSocket;
    let err = kite_native::transport::dial(&url, &ws_only)
        .await
        .unwrap_err();
    assert!(
        matches!(err, kite_native::transport::DialError::Handshake(_)),
        "{err}"
    );

    // Nothing listening: an error, no fallback, no hang.
    let closed = "http://127.0.0.1:1/echo";
    assert!(
        within(
            "refused",
            kite_native::transport::dial(closed, &DialOptions::default())
        )
        .await
        .is_err()
    );
}
