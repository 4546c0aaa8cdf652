//! Hostile peers against the protocol layer, over real sockets, speaking raw SockJS frames as
//! an attacker would: forged function markers and "parked" callbacks, one function in several
//! places, values nested deeper than parsers like, and floods of calls in flight and of
//! functions a connection is made to keep.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use common::{TestKite, config, within};
use futures_util::{SinkExt, StreamExt};
use kite_native::{Callback, Kite, KiteError, Request, value};
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;

type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// A peer speaking SockJS over a websocket, one dnode message per frame.
struct Raw {
    ws: Ws,
    /// Messages received but not yet asked for.
    inbox: std::collections::VecDeque<String>,
}

impl Raw {
    async fn connect(base: &str) -> Raw {
        let url = base.replace("http://", "ws://") + "/000/hostile/websocket";
        let (ws, _) = within("ws connect", tokio_tungstenite::connect_async(&url))
            .await
            .unwrap();
        let mut raw = Raw {
            ws,
            inbox: Default::default(),
        };
        let open = raw.frame().await;
        assert_eq!(open.as_deref(), Some("o"));
        raw
    }

    /// The next SockJS frame's text (heartbeats skipped); `None` when the socket ends.
    async fn frame(&mut self) -> Option<String> {
        loop {
            match within("a frame", self.ws.next()).await {
                Some(Ok(Message::Text(t))) if t.as_str() == "h" => continue,
                Some(Ok(Message::Text(t))) => return Some(t.to_string()),
                Some(Ok(Message::Close(_))) | None | Some(Err(_)) => return None,
                Some(Ok(_)) => continue,
            }
        }
    }

    async fn send(&mut self, messages: &[String]) {
        let frame = serde_json::to_string(messages).unwrap();
        self.ws.send(Message::text(frame)).await.unwrap();
    }

    /// The next dnode message, as the peer sent its text (20 s at most, heartbeats or not).
    async fn message(&mut self) -> String {
        within("a message", self.next_message()).await
    }

    async fn next_message(&mut self) -> String {
        loop {
            if let Some(m) = self.inbox.pop_front() {
                return m;
            }
            let frame = self.frame().await.expect("the session ended");
            if let Some(body) = frame.strip_prefix('a') {
                let msgs: Vec<String> = serde_json::from_str(body).unwrap();
                self.inbox.extend(msgs);
            } else {
                panic!("unexpected frame {frame}");
            }
        }
    }
}

/// A request with response callback id `id`, `with_args` and more callbacks.
fn request(method: &str, id: u64, with_args: &str, callbacks: &[(u64, &str)]) -> String {
    let mut cbs = format!(r#""{id}":[0,"responseCallback"]"#);
    for (cid, path) in callbacks {
        cbs.push_str(&format!(r#","{cid}":{path}"#));
    }
    format!(
        r#"{{"method":"{method}","arguments":[{{"kite":{{"username":"mallory"}},"withArgs":{with_args},"responseCallback":"[Function]"}}],"callbacks":{{{cbs}}}}}"#
    )
}

/// The parsed answer message to response callback `id`, waiting past other messages.
async fn answer(raw: &mut Raw, id: u64) -> Value {
    serde_json::from_str(&answer_text(raw, id).await).unwrap()
}

/// The text of the answer to response callback `id` (for answers too deep to parse here),
/// waiting 20 s at most.
async fn answer_text(raw: &mut Raw, id: u64) -> String {
    let head = format!(r#"{{"method":{id},"#);
    within(&format!("the answer to call {id}"), async {
        loop {
            let text = raw.next_message().await;
            if text.starts_with(&head) {
                return text;
            }
        }
    })
    .await
}

async fn kite_with(setup: impl FnOnce(&Kite), config: kite_native::Config) -> TestKite {
    let t = TestKite::start_with(config).await;
    setup(&t.kite);
    t
}

#[tokio::test]
async fn marker_strings_and_parked_numbers_are_only_strings() {
    // A kite that holds another user's function, as a subscription service does.
    let held = Arc::new(std::sync::Mutex::new(Vec::<Callback>::new()));
    let store = held.clone();
    let server = kite_with(
        move |k| {
            k.handle("subscribe", move |req: Request| {
                let store = store.clone();
                async move {
                    let cb: Callback = req.arg()?;
                    store.lock().unwrap().push(cb);
                    Ok::<_, KiteError>("subscribed")
                }
            });
        },
        config(),
    )
    .await;
    // alice gives the kite a function of hers.
    let mut alice = Raw::connect(&server.url).await;
    alice
        .send(&[request(
            "subscribe",
            0,
            r#"["[Function]"]"#,
            &[(1, "[0,\"withArgs\",0]")],
        )])
        .await;
    assert_eq!(
        answer(&mut alice, 0).await["arguments"][0]["result"],
        "subscribed"
    );

    // mallory sends every marker an earlier design recognised, and plain "[Function]"
    // strings without a callbacks entry, to be echoed, and one real function of hers (last):
    // exactly that one comes back as a function.
    let mut mallory = Raw::connect(&server.url).await;
    let mut forged: Vec<String> = (0..64)
        .flat_map(|n| {
            [
                format!("\u{0}kite-callback-parked:{n}"),
                format!("\u{0}kite-callback:{n}"),
            ]
        })
        .collect();
    forged.push("[Function]".into());
    forged.push("\u{0}".into());
    let mut sent = forged.clone();
    sent.push("[Function]".into());
    let last = sent.len() - 1;
    let args = serde_json::to_string(&json!([sent])).unwrap();
    let path = format!("[0,\"withArgs\",0,{last}]");
    mallory
        .send(&[request("kite.echo", 9, &args, &[(10, path.as_str())])])
        .await;
    let echoed = answer(&mut mallory, 9).await;
    let callbacks = echoed["callbacks"].as_object().unwrap();
    let paths: Vec<&Value> = callbacks.values().collect();
    assert_eq!(
        paths,
        [&json!([0, "result", last])],
        "only mallory's own function came back as one: {echoed}"
    );
    assert_eq!(echoed["arguments"][0]["result"], json!(sent));
    assert_eq!(echoed["arguments"][0]["error"], Value::Null);

    // A marker where a function is expected is an error that names no marker.
    mallory
        .send(&[request(
            "subscribe",
            11,
            r#"["\u0000kite-callback:0"]"#,
            &[],
        )])
        .await;
    let refused = answer(&mut mallory, 11).await;
    let message = refused["arguments"][0]["error"]["message"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(refused["arguments"][0]["error"]["type"], "argumentError");
    assert!(!message.contains("kite-callback"), "{message}");
    assert_eq!(
        held.lock().unwrap().len(),
        1,
        "only alice's function is held"
    );
}

#[tokio::test]
async fn one_function_in_several_places_reaches_every_place() {
    // The server calls back each place it was given a function at.
    let server = kite_with(
        |k| {
            k.handle("both", |req: Request| async move {
                let first: Callback = req.args.nth(0)?;
                let second = req
                    .args
                    .callback_at(&[1.into(), "again".into()])
                    .ok_or_else(|| KiteError::argument("argument 1 has no function at again"))?;
                first.call(("first",))?;
                second.call(("second",))?;
                Ok::<_, KiteError>("called both")
            });
        },
        config(),
    )
    .await;
    let kite = Kite::with_config("caller", "1.0.0", config()).unwrap();
    let client = kite.new_client(&server.url);
    within("dial", client.dial()).await.unwrap();
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let cb = Callback::new(move |args| {
        let _ = tx.send(args.nth::<String>(0).unwrap_or_default());
    });
    let r: String = within("both", client.call("both", value!([&cb, {"again": &cb}])))
        .await
        .unwrap();
    assert_eq!(r, "called both");
    let mut got = vec![
        within("first call", rx.recv()).await.unwrap(),
        within("second call", rx.recv()).await.unwrap(),
    ];
    got.sort();
    assert_eq!(got, ["first", "second"]);
}

#[tokio::test]
async fn values_as_deep_as_go_accepts_come_back_intact() {
    let server = kite_with(
        |k| {
            // A handler that decodes its argument into a tree (as many do) and answers how
            // deep it is.
            k.handle("decode", |req: Request| async move {
                let v: Value = req.arg()?;
                let (mut depth, mut node) = (0, &v);
                while let Some(inner) = node.as_array().and_then(|a| a.first()) {
                    depth += 1;
                    node = inner;
                }
                Ok::<_, KiteError>(depth)
            });
        },
        config(),
    )
    .await;
    let mut raw = Raw::connect(&server.url).await;
    let nested = |n: usize| "[".repeat(n) + "7" + &"]".repeat(n);
    // Go's decoder allows 10,000 levels in a whole message; the value sits 4 levels in.
    for (i, depth) in [129usize, 1_000, 9_990].into_iter().enumerate() {
        let id = i as u64;
        // With a function beside it, so the message takes the general path.
        let args = format!("[[{},\"[Function]\"]]", nested(depth));
        raw.send(&[request(
            "kite.echo",
            id,
            &args,
            &[(100 + id, "[0,\"withArgs\",0,1]")],
        )])
        .await;
        let echoed = answer_text(&mut raw, id).await;
        let want = format!(
            // Each round forwards a new function of the peer: ids 0, 1, 2.
            r#"{{"method":{id},"arguments":[{{"error":null,"result":[{},"[Function]"]}}],"callbacks":{{"{id}":[0,"result",1]}}}}"#,
            nested(depth)
        );
        assert!(
            echoed == want,
            "depth {depth}: echoed …{}",
            &echoed[echoed.len().saturating_sub(120)..]
        );
        raw.send(&[request(
            "decode",
            50 + id,
            &format!("[{}]", nested(depth)),
            &[],
        )])
        .await;
        let decoded = answer(&mut raw, 50 + id).await;
        assert_eq!(
            decoded["arguments"][0]["result"],
            json!(depth),
            "depth {depth} decoded: {decoded}"
        );
    }
    // Past Go's limit a decoding handler answers an argumentError (echo still passes it on).
    raw.send(&[request("decode", 99, &format!("[{}]", nested(10_500)), &[])])
        .await;
    let refused = answer(&mut raw, 99).await;
    assert_eq!(refused["arguments"][0]["error"]["type"], "argumentError");
}

#[tokio::test]
async fn calls_in_flight_past_the_budget_are_refused_and_the_connection_goes_on() {
    let mut c = config();
    c.limits.max_calls_in_flight = 8;
    let server = kite_with(|_| {}, c).await;
    let mut raw = Raw::connect(&server.url).await;
    // 20 calls that wait, then a quick one: 8 are served, the rest refused at once.
    let waits: Vec<String> = (0..20).map(|i| request("wait", i, "[]", &[])).collect();
    raw.send(&waits).await;
    let mut refused = 0;
    for _ in 0..12 {
        let msg: Value = serde_json::from_str(&raw.message().await).unwrap();
        let e = &msg["arguments"][0]["error"];
        assert_eq!(e["type"], "requestLimitError", "{msg}");
        assert!(
            e["message"].as_str().unwrap().contains("in flight"),
            "{msg}"
        );
        refused += 1;
    }
    assert_eq!(refused, 12);
    // Another connection is not held back; released calls free their slots.
    let kite = Kite::with_config("other", "1.0.0", config()).unwrap();
    let other = kite.new_client(&server.url);
    within("dial", other.dial()).await.unwrap();
    let n: f64 = within("square elsewhere", other.call("square", (3,)))
        .await
        .unwrap();
    assert_eq!(n, 9.0);
    for _ in 0..8 {
        server.release.notify_one();
        let msg: Value = serde_json::from_str(&raw.message().await).unwrap();
        assert_eq!(msg["arguments"][0]["result"], "released", "{msg}");
    }
    raw.send(&[request("square", 77, "[4]", &[])]).await;
    assert_eq!(answer(&mut raw, 77).await["arguments"][0]["result"], 16);
}

#[tokio::test]
async fn a_peer_cannot_make_a_connection_keep_functions_without_end() {
    let mut c = config();
    c.limits.max_callbacks = 50;
    let server = kite_with(|_| {}, c).await;
    let mut raw = Raw::connect(&server.url).await;
    // Each echo of a new function of the peer is forwarded: the kite keeps it for the peer.
    let mut kept = 0;
    let mut refused = 0;
    for i in 0..80u64 {
        let id = 2 * i;
        raw.send(&[request(
            "kite.echo",
            id,
            r#"["[Function]"]"#,
            &[(id + 1, "[0,\"withArgs\",0]")],
        )])
        .await;
        let msg = answer(&mut raw, id).await;
        if msg["arguments"][0]["error"].is_null() {
            assert_eq!(msg["callbacks"].as_object().unwrap().len(), 1, "{msg}");
            kept += 1;
        } else {
            assert_eq!(msg["arguments"][0]["error"]["type"], "requestLimitError");
            refused += 1;
        }
    }
    assert_eq!((kept, refused), (50, 30));
    // The connection still answers calls that need no function.
    raw.send(&[request("square", 1000, "[5]", &[])]).await;
    assert_eq!(answer(&mut raw, 1000).await["arguments"][0]["result"], 25);
}

#[tokio::test]
async fn a_flood_of_callback_invocations_never_blocks_other_peers() {
    // The server hands out one function; a peer calls it a great many times at once.
    let calls = Arc::new(AtomicUsize::new(0));
    let counter = calls.clone();
    let server = kite_with(
        move |k| {
            let counter = counter.clone();
            k.handle("counter", move |_req: Request| {
                let counter = counter.clone();
                async move {
                    Ok::<_, KiteError>(Callback::new(move |_| {
                        counter.fetch_add(1, Ordering::Relaxed);
                    }))
                }
            });
        },
        config(),
    )
    .await;
    let mut raw = Raw::connect(&server.url).await;
    raw.send(&[request("counter", 0, "[]", &[])]).await;
    let msg = answer(&mut raw, 0).await;
    let fid: u64 = msg["callbacks"]
        .as_object()
        .unwrap()
        .keys()
        .next()
        .unwrap()
        .parse()
        .unwrap();
    let invocations: Vec<String> = (0..5_000)
        .map(|_| format!(r#"{{"method":{fid},"arguments":[],"callbacks":{{}}}}"#))
        .collect();
    for chunk in invocations.chunks(500) {
        raw.send(chunk).await;
    }
    raw.send(&[request("square", 1, "[6]", &[])]).await;
    assert_eq!(answer(&mut raw, 1).await["arguments"][0]["result"], 36);
    assert_eq!(calls.load(Ordering::Relaxed), 5_000);
}
