//! Interoperability with the original peers.
//!
//! * Go kite clients: the exact bytes a Go `math-client` sent (golden captures in
//!   `kite-core/tests/golden/`) are replayed against our kite over SockJS websocket and over
//!   xhr-polling, and our answers must be what the Go server answered.
//! * Kite.js: the real `kite.js` 1.0.13 package from npm (with `sockjs-client`) runs under Node
//!   against our kite over every SockJS transport it has and over its raw websocket transport.
//!   Set up by `scripts/setup` (`npm ci` in `tests/interop`). Outside CI the Kite.js test is
//!   skipped when Node or the packages are missing; under `CI=true` that is a failure.

mod common;

use common::{TestKite, interop_dir, within};
use kite_native::core::sockjs::{self, Frame};
use serde_json::{Value, json};

fn golden_square_request() -> String {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../kite-core/tests/golden/s1-go-go-websocket.jsonl"
    );
    let text = std::fs::read_to_string(path).unwrap();
    for line in text.lines() {
        let v: Value = serde_json::from_str(line).unwrap();
        if v["case"] == "square-4" && v["dir"] == "c2s" && v["kind"] == "ws-message" {
            return v["payload"].as_str().unwrap().to_owned();
        }
    }
    panic!("no square-4 request in the golden file");
}

/// What the Go server answered to square(4), byte for byte (inside the SockJS frame).
const GO_ANSWER: &str =
    r#"a["{\"method\":0,\"arguments\":[{\"error\":null,\"result\":16}],\"callbacks\":{}}"]"#;

#[tokio::test]
async fn go_client_bytes_get_go_answers_over_websocket() {
    use futures_util::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::Message;
    let server = TestKite::start().await;
    let frame = golden_square_request();
    let ws_url = format!(
        "{}/571/0123456789abcdef0123/websocket",
        server.url.replacen("http", "ws", 1)
    );
    let (mut ws, _) = within("connect", tokio_tungstenite::connect_async(ws_url))
        .await
        .unwrap();
    // Go's client does not wait for `o` before sending.
    ws.send(Message::text(frame.clone())).await.unwrap();
    let mut frames = Vec::new();
    while frames.len() < 2 {
        match within("answer", ws.next()).await {
            Some(Ok(Message::Text(t))) if t.as_str() != "h" => frames.push(t.to_string()),
            Some(Ok(_)) => {}
            other => panic!("socket ended: {other:?}"),
        }
    }
    assert_eq!(frames[0], "o");
    assert_eq!(frames[1], GO_ANSWER);
}

#[tokio::test]
async fn go_client_bytes_get_go_answers_over_xhr_polling() {
    let server = TestKite::start().await;
    let frame = golden_square_request();
    let http = reqwest::Client::new();
    let session = format!("{}/571/0123456789abcdef0124", server.url);
    let open = http
        .post(format!("{session}/xhr"))
        .header("Content-Type", "text/plain")
        .send()
        .await
        .unwrap();
    assert_eq!(open.status().as_u16(), 200);
    assert_eq!(
        open.headers()["content-type"],
        "application/javascript; charset=UTF-8"
    );
    assert_eq!(open.text().await.unwrap(), "o\n");
    let sent = http
        .post(format!("{session}/xhr_send"))
        .body(frame)
        .send()
        .await
        .unwrap();
    assert!(sent.status().is_success(), "{}", sent.status());
    let poll = within("poll", http.post(format!("{session}/xhr")).send())
        .await
        .unwrap();
    assert_eq!(poll.text().await.unwrap(), format!("{GO_ANSWER}\n"));
}

#[tokio::test]
async fn our_client_speaks_what_go_servers_expect() {
    // Our client's first frame to a server, captured by a fake SockJS server, has the Go
    // layout: one message per array, `withArgs` always an array, `authentication: null`.
    use futures_util::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::Message;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let fake = tokio::spawn(async move {
        let (tcp, _) = listener.accept().await.unwrap();
        let mut ws = tokio_tungstenite::accept_async(tcp).await.unwrap();
        ws.send(Message::text("o")).await.unwrap();
        let mut seen = Vec::new();
        while seen.len() < 2 {
            if let Some(Ok(Message::Text(t))) = ws.next().await {
                let msgs = sockjs::decode_client_frame(&t).unwrap();
                for m in msgs {
                    let v: Value = serde_json::from_str(&m).unwrap();
                    let answer = json!({"method": 0, "arguments": [{"error": null, "result": null}], "callbacks": {}});
                    let id = v["callbacks"]
                        .as_object()
                        .unwrap()
                        .keys()
                        .next()
                        .unwrap()
                        .parse::<u64>()
                        .unwrap();
                    let mut answer = answer;
                    answer["method"] = json!(id);
                    ws.send(Message::text(sockjs::encode_messages([answer
                        .to_string()
                        .as_str()])))
                        .await
                        .unwrap();
                    seen.push(m);
                }
            }
        }
        seen
    });
    let kite = kite_native::Kite::with_config("second", "1.0.0", common::config()).unwrap();
    let client = kite.new_client(&format!("http://{addr}/kite"));
    client.set_transport(kite_native::transport::Transport::WebSocket);
    within("dial", client.dial()).await.unwrap();
    let _ = within("ping", client.tell("kite.ping", ())).await.unwrap();
    let _ = within("square", client.tell("square", (4,))).await.unwrap();
    let seen = within("fake server", fake).await.unwrap();
    let ping: Value = serde_json::from_str(&seen[0]).unwrap();
    assert_eq!(ping["method"], "kite.ping");
    assert_eq!(ping["arguments"].as_array().unwrap().len(), 1);
    assert_eq!(ping["arguments"][0]["withArgs"], json!([]));
    assert_eq!(ping["arguments"][0]["authentication"], Value::Null);
    assert_eq!(ping["callbacks"], json!({"0": [0, "responseCallback"]}));
    assert!(seen[0].starts_with(r#"{"method":"kite.ping","arguments":[{"kite":{"name":"second","username":"unknown","id":""#), "{}", seen[0]);
    let square: Value = serde_json::from_str(&seen[1]).unwrap();
    assert_eq!(square["arguments"][0]["withArgs"], json!([4]));
    assert_eq!(square["callbacks"], json!({"1": [0, "responseCallback"]}));
    client.close();
}

#[tokio::test]
async fn kitejs_client_calls_our_kite_over_every_transport() {
    let Some(dir) = interop_dir() else { return };
    let server = TestKite::start().await;
    let port = server.kite.port().unwrap();
    for (transport, url) in [
        ("websocket", server.url.clone()),
        ("xhr-polling", server.url.clone()),
        ("xhr-streaming", server.url.clone()),
        ("raw", format!("ws://127.0.0.1:{port}/kite/websocket")),
    ] {
        let out = within(
            "node",
            tokio::process::Command::new("node")
                .arg(dir.join("kitejs-client.js"))
                .arg(&url)
                .arg(transport)
                .current_dir(&dir)
                .output(),
        )
        .await
        .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "{transport}: node failed: {stdout}\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let r: Value = serde_json::from_str(stdout.trim())
            .unwrap_or_else(|e| panic!("{transport}: {e}: {stdout}"));
        assert_eq!(r["ping"]["result"], "pong", "{transport}: {r}");
        assert_eq!(r["square"]["result"], 16, "{transport}: {r}");
        assert_eq!(r["scalar"]["result"], 25, "{transport}: {r}");
        assert_eq!(r["callback"]["result"], 42, "{transport}: {r}");
        assert_eq!(r["callbackCalls"], json!([42, 42, 42]), "{transport}: {r}");
        assert_eq!(
            r["error"]["error"]["type"], "genericError",
            "{transport}: {r}"
        );
        assert_eq!(
            r["error"]["error"]["message"], "intentional error",
            "{transport}: {r}"
        );
        assert_eq!(
            r["unknown"]["error"]["type"], "methodNotFound",
            "{transport}: {r}"
        );
        assert_eq!(r["concurrent"], true, "{transport}: {r}");
    }
    let _ = Frame::Open;
}

#[tokio::test]
async fn our_client_calls_a_kitejs_server_over_raw_websocket() {
    use tokio::io::AsyncBufReadExt;
    let Some(dir) = interop_dir() else { return };
    common::init_tracing();
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let mut node = tokio::process::Command::new("node")
        .arg(dir.join("kitejs-server.js"))
        .arg(port.to_string())
        .current_dir(&dir)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines = tokio::io::BufReader::new(node.stdout.take().unwrap()).lines();
    let ready = within("kite.js server start", lines.next_line())
        .await
        .unwrap();
    assert_eq!(ready.as_deref(), Some("ready"));

    let kite = kite_native::Kite::with_config("second", "1.0.0", common::config()).unwrap();
    let client = kite.new_client(&format!("ws://127.0.0.1:{port}"));
    client.set_transport(kite_native::transport::Transport::RawWebSocket);
    within("dial", client.dial()).await.unwrap();

    let n: f64 = within("square", client.call("square", (4,))).await.unwrap();
    assert_eq!(n, 16.0);
    let pong: String = within("ping", client.call("kite.ping", ())).await.unwrap();
    assert_eq!(pong, "pong");
    let e = within("fail", client.tell("fail", ())).await.unwrap_err();
    assert_eq!(e.to_string(), "js says no");
    assert_eq!(e.kite_error().code, "JS1");

    // Kite.js wraps every argument list it sends as {error, result}; the calls still arrive.
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let cb = kite_native::Callback::new(move |args| {
        let _ = tx.send(args.to_json().unwrap_or_default());
    });
    let v: Value = within(
        "callback",
        client.call(
            "callback",
            kite_native::value!([{"value": 7, "times": 2, "cb": cb}]),
        ),
    )
    .await
    .unwrap();
    assert_eq!(v, json!(7));
    for _ in 0..2 {
        let got = within("callback call", rx.recv()).await.unwrap();
        assert!(got.to_string().contains('7'), "{got}");
    }

    // One function in two places of one message: Kite.js finds a function at each (our
    // encoding gives each place its own id; one id for both would be a duplicate JSON key,
    // and Kite.js would find a string at one of them and throw).
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let cb = kite_native::Callback::new(move |args| {
        let _ = tx.send(args.to_json().unwrap_or_default().to_string());
    });
    let r: String = within(
        "both",
        client.call("both", kite_native::value!([&cb, {"again": &cb}])),
    )
    .await
    .unwrap();
    assert_eq!(r, "called both");
    let mut got = vec![
        within("first place", rx.recv()).await.unwrap(),
        within("second place", rx.recv()).await.unwrap(),
    ];
    got.sort();
    assert!(
        got[0].contains("first") && got[1].contains("second"),
        "{got:?}"
    );
    client.close();
    drop(node.stdin.take());
}

/// Our kite with the methods of the Go `math-server` the golden captures were taken from.
async fn go_math_server() -> TestKite {
    use kite_native::{Callback, KiteError, Request};
    let server = TestKite::start().await;
    let kite = &server.kite;
    kite.handle("square", |req: Request| async move {
        #[derive(serde::Deserialize)]
        #[serde(untagged)]
        enum N {
            Plain(f64),
            Named { number: f64 },
        }
        let n = match req.arg::<N>() {
            Ok(N::Plain(n) | N::Named { number: n }) => n,
            Err(_) => {
                return Err(KiteError::argument(
                    "square expects a number or {\"number\": n}",
                ));
            }
        };
        Ok(n * n)
    });
    kite.handle("echo", |req: Request| async move {
        Ok::<_, KiteError>(req.args.get(0).unwrap_or_default())
    });
    kite.handle("callback", |req: Request| async move {
        #[derive(serde::Deserialize)]
        struct Opts {
            value: Value,
            times: u32,
        }
        let in_options = req.args.callback_at(&[0.into(), "cb".into()]);
        let (value, cb, times) = match (req.arg::<Opts>(), in_options) {
            (Ok(o), Some(cb)) => (o.value, cb, o.times),
            _ => {
                let (v, cb): (Value, Callback) = req.args()?;
                (v, cb, 1)
            }
        };
        for _ in 0..times {
            cb.call((value.clone(),))?;
        }
        Ok::<_, KiteError>(value)
    });
    kite.handle("error", |req: Request| async move {
        let msg = req
            .args
            .nth::<String>(0)
            .unwrap_or_else(|_| "math-server: intentional error".into());
        Err::<(), _>(KiteError::generic(msg))
    });
    kite.handle("panic", |_req: Request| async move {
        if true {
            panic!("math-server: intentional panic");
        }
        Ok::<(), KiteError>(())
    });
    kite.handle("whoami", |req: Request| async move {
        Ok::<_, KiteError>(json!({"auth": req.auth, "kite": req.caller, "username": req.username}))
    });
    server
}

/// Request ids are random: compare them by shape.
fn normalize_ids(msg: &str) -> String {
    let mut out = String::with_capacity(msg.len());
    let mut rest = msg;
    while let Some(i) = rest.find("\"id\":\"") {
        let (head, tail) = rest.split_at(i + 6);
        out.push_str(head);
        let hex_len = tail.bytes().take_while(u8::is_ascii_hexdigit).count();
        if hex_len == 16 && tail.as_bytes().get(16) == Some(&b'"') {
            out.push_str("<request id>");
            rest = &tail[16..];
        } else {
            rest = tail;
        }
    }
    out.push_str(rest);
    out
}

type Cases = std::collections::BTreeMap<String, (Vec<String>, Vec<String>)>;

/// The Go client's captured cases: case -> (client frames or `xhr_send` bodies, the messages
/// the Go server answered), in capture order. Authentication cases (kite keys) are issue 5.
fn go_cases(file: &str) -> Cases {
    let path = format!(
        "{}/../kite-core/tests/golden/{file}",
        env!("CARGO_MANIFEST_DIR")
    );
    let mut cases = Cases::new();
    for line in std::fs::read_to_string(path).unwrap().lines() {
        let v: Value = serde_json::from_str(line).unwrap();
        let case = v["case"].as_str().unwrap().to_owned();
        if case.starts_with("auth-") {
            continue;
        }
        let payload = v["payload"].as_str().unwrap_or_default();
        let req_path = v["http"]["path"].as_str().unwrap_or_default();
        let (is_request, is_answer) = match v["kind"].as_str() {
            Some("ws-message") => (v["dir"] == "c2s", v["dir"] == "s2c"),
            Some("http-request") => (req_path.ends_with("/xhr_send"), false),
            Some("http-response") => (false, req_path.ends_with("/xhr")),
            _ => (false, false),
        };
        let entry = cases.entry(case).or_default();
        if is_request {
            entry.0.push(payload.to_owned());
        } else if is_answer {
            for line in payload.lines() {
                if let Ok(Frame::Messages(msgs)) = Frame::decode(line) {
                    entry.1.extend(msgs);
                }
            }
        }
    }
    cases.retain(|_, (requests, _)| !requests.is_empty());
    assert!(cases.len() >= 12, "{file}: {} cases", cases.len());
    cases
}

fn compare(case: &str, got: &[String], expected: &[String]) {
    assert_eq!(got.len(), expected.len(), "{case}: {got:?}");
    for (ours, go) in got.iter().zip(expected) {
        if case == "echo-nested" {
            // Go echoed the client's raw number text `-1.5e-07`; compare as JSON values.
            let a: Value = serde_json::from_str(ours).unwrap();
            let b: Value = serde_json::from_str(go).unwrap();
            assert_eq!(a, b, "{case}");
        } else {
            assert_eq!(normalize_ids(ours), normalize_ids(go), "{case}");
        }
    }
}

#[tokio::test]
async fn every_go_client_case_gets_the_go_servers_answers_over_websocket() {
    use futures_util::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::Message;
    let server = go_math_server().await;
    for (case, (requests, expected)) in &go_cases("s1-go-go-websocket.jsonl") {
        let ws_url = format!(
            "{}/100/0123456789abcdef0123/websocket",
            server.url.replacen("http", "ws", 1)
        );
        let (mut ws, _) = within("connect", tokio_tungstenite::connect_async(ws_url))
            .await
            .unwrap();
        for r in requests {
            ws.send(Message::text(r.clone())).await.unwrap();
        }
        let mut got = Vec::new();
        while got.len() < expected.len() {
            match within(case, ws.next()).await {
                Some(Ok(Message::Text(t))) => match Frame::decode(&t).unwrap() {
                    Frame::Messages(m) => got.extend(m),
                    Frame::Open | Frame::Heartbeat => {}
                    other => panic!("{case}: {other:?}"),
                },
                other => panic!("{case}: socket ended: {other:?}"),
            }
        }
        compare(case, &got, expected);
    }
}

#[tokio::test]
async fn every_go_client_case_gets_the_go_servers_answers_over_xhr_polling() {
    let server = go_math_server().await;
    let http = reqwest::Client::new();
    for (n, (case, (requests, expected))) in go_cases("s1-go-go-xhr.jsonl").iter().enumerate() {
        let session = format!("{}/100/gocase{n}", server.url);
        let open = http.post(format!("{session}/xhr")).send().await.unwrap();
        assert_eq!(open.text().await.unwrap(), "o\n");
        for body in requests {
            let r = http
                .post(format!("{session}/xhr_send"))
                .body(body.clone())
                .send()
                .await
                .unwrap();
            assert!(r.status().is_success(), "{case}: {}", r.status());
        }
        let mut got = Vec::new();
        while got.len() < expected.len() {
            let body = within(case, async {
                http.post(format!("{session}/xhr"))
                    .send()
                    .await
                    .unwrap()
                    .text()
                    .await
                    .unwrap()
            })
            .await;
            match Frame::decode(&body).unwrap() {
                Frame::Messages(m) => got.extend(m),
                Frame::Heartbeat => {}
                other => panic!("{case}: {other:?}"),
            }
        }
        compare(case, &got, expected);
    }
}
