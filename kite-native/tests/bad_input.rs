//! Hostile and malformed input over a real socket: each gets an error reply or a clean close,
//! and the server keeps serving everyone else.

mod common;

use common::{TestKite, within};
use futures_util::{SinkExt, StreamExt};
use kite_native::core::sockjs::{self, Frame};
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message as WsMessage;

type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// A hand-driven SockJS websocket client.
async fn sockjs_ws(url: &str) -> Ws {
    let ws_url = format!("{}/123/abcdefgh/websocket", url.replacen("http", "ws", 1));
    let (mut ws, _) = within("connect", tokio_tungstenite::connect_async(ws_url))
        .await
        .unwrap();
    assert_eq!(next_frame(&mut ws).await, Some(Frame::Open));
    ws
}

/// The next SockJS frame, skipping heartbeats; `None` when the socket ended.
async fn next_frame(ws: &mut Ws) -> Option<Frame> {
    loop {
        let msg = within("frame", ws.next()).await?;
        match msg {
            Ok(WsMessage::Text(t)) => match Frame::decode(&t) {
                Ok(Frame::Heartbeat) => continue,
                Ok(f) => return Some(f),
                Err(_) => return None,
            },
            Ok(WsMessage::Close(_)) | Err(_) => return None,
            Ok(_) => continue,
        }
    }
}

/// The code and reason of the websocket close that ends `ws`, with no SockJS frame before it
/// but heartbeats (as sockjs-node ends a session on broken input); `None` when the socket ended
/// without a close frame.
async fn websocket_close(ws: &mut Ws) -> Option<(u16, String)> {
    loop {
        match within("close", ws.next()).await? {
            Ok(WsMessage::Text(t)) if t == "h" => continue,
            Ok(WsMessage::Close(close)) => {
                return close.map(|c| (c.code.into(), c.reason.to_string()));
            }
            Ok(WsMessage::Ping(_) | WsMessage::Pong(_)) => continue,
            Err(_) => return None,
            Ok(other) => panic!("expected the websocket close, got {other:?}"),
        }
    }
}

async fn send(ws: &mut Ws, msgs: &[&str]) {
    let frame = sockjs::encode_client_frame(msgs.iter().copied());
    ws.send(WsMessage::text(frame)).await.unwrap();
}

fn request(method: &str, args: Value) -> String {
    json!({
        "method": method,
        "arguments": [{"kite": {"name": "raw"}, "authentication": null,
                        "responseCallback": "[Function]", "withArgs": args}],
        "callbacks": {"0": [0, "responseCallback"]},
    })
    .to_string()
}

/// The next dnode message, parsed.
async fn next_message(ws: &mut Ws) -> Value {
    match next_frame(ws).await {
        Some(Frame::Messages(m)) => serde_json::from_str(&m[0]).unwrap(),
        other => panic!("expected a message, got {other:?}"),
    }
}

async fn assert_still_serves(ws: &mut Ws) {
    send(ws, &[&request("square", json!([3]))]).await;
    let msg = next_message(ws).await;
    assert_eq!(msg["arguments"][0]["result"], json!(9), "{msg}");
}

#[tokio::test]
async fn malformed_dnode_messages_are_dropped_and_the_session_keeps_serving() {
    let server = TestKite::start().await;
    let mut ws = sockjs_ws(&server.url).await;
    for bad in [
        // `arguments` that is not a one-element array, without a callback (kills a Go kite).
        r#"{"method":"kite.ping","arguments":[],"callbacks":{}}"#,
        r#"{"method":"kite.ping","arguments":[1,2],"callbacks":{}}"#,
        // Not dnode at all.
        "hello",
        "",
        "{broken",
        "[1,2,3]",
        // A method that is neither a string nor an integer.
        r#"{"method":true,"arguments":[]}"#,
        r#"{"method":{"a":1},"arguments":[]}"#,
        r#"{"method":-3,"arguments":[]}"#,
        // Unknown callback ids (and a response callback we never sent).
        r#"{"method":999,"arguments":[1]}"#,
        r#"{"method":0,"arguments":[{"error":null,"result":1}]}"#,
        // Bad callback specs.
        r#"{"method":"square","arguments":[{}],"callbacks":{"x":[0]}}"#,
    ] {
        send(&mut ws, &[bad]).await;
    }
    assert_still_serves(&mut ws).await;
}

#[tokio::test]
async fn bad_requests_with_a_response_callback_get_an_error_reply() {
    let server = TestKite::start().await;
    let mut ws = sockjs_ws(&server.url).await;
    // Two arguments instead of one.
    send(
        &mut ws,
        &[r#"{"method":"square","arguments":[{"withArgs":[2]},5],"callbacks":{"0":[0,"responseCallback"]}}"#],
    )
    .await;
    let msg = next_message(&mut ws).await;
    assert_eq!(msg["method"], json!(0));
    assert_eq!(
        msg["arguments"][0]["error"]["type"], "argumentError",
        "{msg}"
    );
    // Wrong argument types.
    send(&mut ws, &[&request("square", json!({"x": 1}))]).await;
    let msg = next_message(&mut ws).await;
    assert_eq!(
        msg["arguments"][0]["error"]["type"], "argumentError",
        "{msg}"
    );
    // A scalar withArgs (Kite.js style) is a one-element list.
    send(&mut ws, &[&request("square", json!(6))]).await;
    assert_eq!(
        next_message(&mut ws).await["arguments"][0]["result"],
        json!(36)
    );
    // withArgs null (Go's no-argument call) is an empty list.
    send(&mut ws, &[&request("kite.ping", Value::Null)]).await;
    assert_eq!(
        next_message(&mut ws).await["arguments"][0]["result"],
        "pong"
    );
    // Malformed authentication.
    send(
        &mut ws,
        &[r#"{"method":"square","arguments":[{"authentication":7,"withArgs":[1]}],"callbacks":{"0":[0,"responseCallback"]}}"#],
    )
    .await;
    let msg = next_message(&mut ws).await;
    assert_eq!(
        msg["arguments"][0]["error"]["type"], "authenticationError",
        "{msg}"
    );
    assert_still_serves(&mut ws).await;
}

#[tokio::test]
async fn a_peer_answering_twice_is_ignored() {
    let server = TestKite::start().await;
    let mut ws = sockjs_ws(&server.url).await;
    // Ask the server to call our `client.hello`; answer it twice.
    send(&mut ws, &[&request("ask", json!(["x"]))]).await;
    let call = next_message(&mut ws).await;
    assert_eq!(call["method"], "client.hello");
    let cb = call["callbacks"]
        .as_object()
        .unwrap()
        .keys()
        .next()
        .unwrap()
        .parse::<u64>()
        .unwrap();
    let answer =
        json!({"method": cb, "arguments": [{"error": null, "result": "hi"}], "callbacks": {}})
            .to_string();
    send(&mut ws, &[&answer]).await;
    let msg = next_message(&mut ws).await;
    assert_eq!(msg["arguments"][0]["result"], "client said: hi");
    for _ in 0..3 {
        send(&mut ws, &[&answer]).await;
    }
    assert_still_serves(&mut ws).await;
}

#[tokio::test]
async fn broken_frames_close_only_that_session() {
    let server = TestKite::start().await;
    let mut other = sockjs_ws(&server.url).await;
    for bad in ["[\"unterminated", "{\"a\":1}", "[1,2]"] {
        let mut ws = sockjs_ws(&server.url).await;
        ws.send(WsMessage::text(bad)).await.unwrap();
        assert_eq!(
            websocket_close(&mut ws).await,
            Some((sockjs::BROKEN_FRAME.0, sockjs::BROKEN_FRAME.1.to_owned())),
            "{bad}"
        );
    }
    // An empty frame is ignored (SockJS spec).
    let mut ws = sockjs_ws(&server.url).await;
    ws.send(WsMessage::text("")).await.unwrap();
    assert_still_serves(&mut ws).await;
    // A bare JSON string is one message.
    ws.send(WsMessage::text(
        serde_json::to_string(&request("square", json!([2]))).unwrap(),
    ))
    .await
    .unwrap();
    assert_eq!(
        next_message(&mut ws).await["arguments"][0]["result"],
        json!(4)
    );
    assert_still_serves(&mut other).await;
}

#[tokio::test]
async fn oversized_messages_close_the_session_cleanly() {
    let mut config = common::config();
    config.max_message_size = 64 * 1024;
    let server = TestKite::start_with(config).await;
    let mut other = sockjs_ws(&server.url).await;
    let mut ws = sockjs_ws(&server.url).await;
    let big = request("kite.echo", json!(["x".repeat(100 * 1024)]));
    send(&mut ws, &[&big]).await;
    match next_frame(&mut ws).await {
        Some(Frame::Close { code, .. }) => assert_eq!(code, sockjs::MESSAGE_TOO_BIG.0),
        None => {}
        other => panic!("expected a close, got {other:?}"),
    }
    // Just under the limit is fine.
    let ok = request("kite.echo", json!(["y".repeat(60 * 1024)]));
    send(&mut other, &[&ok]).await;
    let msg = next_message(&mut other).await;
    assert_eq!(
        msg["arguments"][0]["result"].as_str().unwrap().len(),
        60 * 1024
    );
    assert_still_serves(&mut other).await;

    // Over xhr_send too.
    let http = reqwest::Client::new();
    let session = format!("{}/200/oversized", server.url);
    let open = http.post(format!("{session}/xhr")).send().await.unwrap();
    assert_eq!(open.text().await.unwrap(), "o\n");
    let body = sockjs::encode_client_frame([big.as_str()]);
    let resp = http
        .post(format!("{session}/xhr_send"))
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 413);
}

/// A hand-driven SockJS xhr-polling client.
struct Xhr {
    http: reqwest::Client,
    session: String,
}

impl Xhr {
    async fn open(url: &str, id: &str) -> Xhr {
        let x = Xhr {
            http: reqwest::Client::new(),
            session: format!("{url}/321/{id}"),
        };
        let body = x.post("xhr", String::new()).await.1;
        assert_eq!(body, "o\n");
        x
    }

    async fn post(&self, what: &str, body: String) -> (u16, String) {
        let r = within(
            what,
            self.http
                .post(format!("{}/{what}", self.session))
                .body(body)
                .send(),
        )
        .await
        .unwrap();
        (r.status().as_u16(), r.text().await.unwrap())
    }

    async fn send(&self, msgs: &[&str]) {
        let (status, _) = self
            .post(
                "xhr_send",
                sockjs::encode_client_frame(msgs.iter().copied()),
            )
            .await;
        assert_eq!(status, 204);
    }

    /// Polls until a message arrives (skipping heartbeats) and returns the first one.
    async fn next_message(&self) -> Value {
        loop {
            let body = self.post("xhr", String::new()).await.1;
            match Frame::decode(&body).unwrap() {
                Frame::Heartbeat => continue,
                Frame::Messages(m) => return serde_json::from_str(&m[0]).unwrap(),
                other => panic!("expected a message, got {other:?}"),
            }
        }
    }
}

#[tokio::test]
async fn bad_input_over_xhr_polling() {
    let server = TestKite::start().await;
    let x = Xhr::open(&server.url, "badinput").await;
    // Malformed dnode messages are dropped; the session keeps serving.
    x.send(&[
        r#"{"method":"kite.ping","arguments":[],"callbacks":{}}"#,
        "hello",
        "{broken",
        r#"{"method":true,"arguments":[]}"#,
        r#"{"method":999,"arguments":[1]}"#,
    ])
    .await;
    x.send(&[&request("square", json!([3]))]).await;
    assert_eq!(x.next_message().await["arguments"][0]["result"], json!(9));
    // A request with a response callback but two arguments gets argumentError.
    x.send(&[r#"{"method":"square","arguments":[{"withArgs":[2]},5],"callbacks":{"0":[0,"responseCallback"]}}"#])
        .await;
    let msg = x.next_message().await;
    assert_eq!(
        msg["arguments"][0]["error"]["type"], "argumentError",
        "{msg}"
    );
    // Wrong types and a panicking handler are errors for that call only.
    x.send(&[&request("square", json!(["four"]))]).await;
    assert_eq!(
        x.next_message().await["arguments"][0]["error"]["type"],
        "argumentError"
    );
    x.send(&[&request("panic", json!([]))]).await;
    let msg = x.next_message().await;
    assert_eq!(msg["arguments"][0]["error"]["type"], "genericError");
    // Broken frames are refused without ending the session.
    assert_eq!(
        x.post("xhr_send", "[\"a".into()).await,
        (500, "Broken JSON encoding.".into())
    );
    assert_eq!(
        x.post("xhr_send", String::new()).await,
        (500, "Payload expected.".into())
    );
    x.send(&[&request("square", json!([5]))]).await;
    assert_eq!(x.next_message().await["arguments"][0]["result"], json!(25));
}
