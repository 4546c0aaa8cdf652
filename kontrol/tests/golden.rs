//! A Go kite against our Kontrol, with the bytes Go sent to Go Kontrol (`tests/golden/`, copied
//! from the captures described in `../shared/reference/golden/README.md`): the `register`
//! request of `math-server -register` (its kite key signed by the captured Kontrol, whose public
//! key our Kontrol is told to trust), Go's answers to our `kite.heartbeat`, and `math-client`'s
//! `getKites` (username and name only). Our answers must have Go Kontrol's shape.

use std::sync::Arc;

use futures_util::{SinkExt, StreamExt};
use kite_native::auth::KeyPair;
use kite_native::{Config, auth::KiteKeyVerifier};
use kite_test_kit::within;
use kontrol::server::{Kontrol, KontrolOptions};
use kontrol::storage::MemoryStorage;
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;

/// The client → server SockJS frames of `case` on the Kontrol link, in order.
fn go_frames(file: &str, case: &str) -> Vec<String> {
    let path = format!("{}/tests/golden/{file}", env!("CARGO_MANIFEST_DIR"));
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap())
        .filter(|r| {
            r["case"] == case
                && r["link"] == "kontrol"
                && r["dir"] == "c2s"
                && r["kind"] == "ws-message"
                && r["payload"].as_str().is_some_and(|p| p.starts_with('['))
        })
        .map(|r| r["payload"].as_str().unwrap().to_owned())
        .collect()
}

/// The dnode messages inside a client frame.
fn messages(frame: &str) -> Vec<Value> {
    serde_json::from_str::<Vec<String>>(frame)
        .unwrap()
        .iter()
        .map(|m| serde_json::from_str(m).unwrap())
        .collect()
}

type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// The next dnode messages from the server (skipping `o` and `h`).
async fn next_messages(ws: &mut Ws) -> Vec<Value> {
    loop {
        match within("frame", ws.next()).await {
            Some(Ok(Message::Text(t))) => {
                let t = t.to_string();
                if let Some(batch) = t.strip_prefix('a') {
                    return serde_json::from_str::<Vec<String>>(batch)
                        .unwrap()
                        .iter()
                        .map(|m| serde_json::from_str(m).unwrap())
                        .collect();
                }
                assert!(t == "o" || t == "h", "unexpected frame {t}");
            }
            other => panic!("connection ended: {other:?}"),
        }
    }
}

#[tokio::test]
async fn a_go_kite_registers_heartbeats_and_is_found_by_go_getkites() {
    let register = go_frames("s4-kontrol-register.jsonl", "register");
    let request = &messages(&register[0])[0];
    assert_eq!(request["method"], "register");
    let go_key = request["arguments"][0]["authentication"]["key"]
        .as_str()
        .unwrap()
        .to_owned();
    let go_kontrol_key =
        jsonwebtoken::dangerous::insecure_decode::<kite_native::core::auth::Claims>(&go_key)
            .unwrap()
            .claims
            .kontrol_key;

    // Our Kontrol, with its own key pair, also trusting the Go Kontrol's key.
    let mut config = Config::default();
    config.ip = [127, 0, 0, 1].into();
    let options = KontrolOptions::new("kite", KeyPair::generate(2048).unwrap(), "");
    let kontrol = Kontrol::new(config, options, Arc::new(MemoryStorage::new())).unwrap();
    let ours = kontrol.kite().kontrol_key();
    let trusted = [ours, go_kontrol_key.trim().to_owned()];
    kontrol
        .kite()
        .set_kite_key_verifier(KiteKeyVerifier::with_trust(Arc::new(move |k: &str| {
            if trusted.iter().any(|t| t == k) {
                Ok(())
            } else {
                Err("kontrol key is not trusted".into())
            }
        })));
    let server = kontrol.kite().clone();
    tokio::spawn(async move { server.run().await.unwrap() });
    let addr = within("kontrol up", kontrol.kite().ready()).await;
    let (mut ws, _) = within(
        "connect",
        tokio_tungstenite::connect_async(format!(
            "ws://{addr}/kite/140/6d71a79769809d980380/websocket"
        )),
    )
    .await
    .unwrap();

    // Go's register request, byte for byte.
    ws.send(Message::text(register[0].clone())).await.unwrap();
    let mut got = Vec::new();
    while got.len() < 2 {
        got.extend(next_messages(&mut ws).await);
    }
    let answer = got
        .iter()
        .find(|m| m["method"] == 0)
        .expect("the register answer");
    assert_eq!(
        *answer,
        json!({"method": 0, "arguments": [{"error": null, "result": {
            "url": "http://127.0.0.1:4740/kite", "heartbeatInterval": 0}}], "callbacks": {}})
    );
    let heartbeat = got
        .iter()
        .find(|m| m["method"] == "kite.heartbeat")
        .expect("Kontrol asks for heartbeats");
    assert_eq!(
        heartbeat["arguments"][0]["withArgs"],
        json!([10, "[Function]"])
    );
    assert_eq!(
        heartbeat["callbacks"],
        json!({"0": [0, "responseCallback"], "1": [0, "withArgs", 1]})
    );
    // Go's answers: the heartbeat callback (our id 1, as Go Kontrol's) and the result.
    for frame in &register[1..] {
        ws.send(Message::text(frame.clone())).await.unwrap();
    }

    // Go's getKites (username and name only) finds it, in Go Kontrol's answer shape.
    let get = go_frames(
        "s4-kontrol-getkites.jsonl",
        "getkites-then-square-websocket",
    );
    assert_eq!(messages(&get[0])[0]["method"], "getKites");
    ws.send(Message::text(get[0].clone())).await.unwrap();
    let answer = loop {
        let batch = next_messages(&mut ws).await;
        if let Some(a) = batch.into_iter().find(|m| m["method"] == 0) {
            break a;
        }
    };
    let result = &answer["arguments"][0]["result"];
    assert_eq!(answer["arguments"][0]["error"], Value::Null, "{answer}");
    let kites = result["kites"].as_array().unwrap();
    assert_eq!(kites.len(), 1, "{answer}");
    let found = &kites[0];
    let mut keys: Vec<&str> = found
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    keys.sort_unstable();
    assert_eq!(keys, ["keyId", "kite", "token", "url"]);
    assert_eq!(found["kite"], request["arguments"][0]["kite"]);
    assert_eq!(found["url"], "http://127.0.0.1:4740/kite");
    let token = found["token"].as_str().unwrap();
    let claims = jsonwebtoken::dangerous::insecure_decode::<kite_native::core::auth::Claims>(token)
        .unwrap()
        .claims;
    // As Go Kontrol's token in the capture: audience /kite//math, for user kite.
    assert_eq!(
        (claims.aud.as_str(), claims.sub.as_str()),
        ("/kite//math", "kite")
    );
    kontrol.kite().close();
}

/// The server → client frames of the capture's `register` case.
fn go_kontrol_frames() -> Vec<String> {
    let path = format!(
        "{}/tests/golden/s4-kontrol-register.jsonl",
        env!("CARGO_MANIFEST_DIR")
    );
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap())
        .filter(|r| r["dir"] == "s2c" && r["kind"] == "ws-message")
        .filter_map(|r| r["payload"].as_str().map(str::to_owned))
        .filter(|p| p.starts_with("a["))
        .collect()
}

#[tokio::test]
async fn our_kite_registers_with_what_go_kontrol_sends() {
    // A stand-in for Go Kontrol that answers with Go Kontrol's captured frames.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let fake = tokio::spawn(async move {
        let (tcp, _) = listener.accept().await.unwrap();
        let mut ws = tokio_tungstenite::accept_async(tcp).await.unwrap();
        ws.send(Message::text("o")).await.unwrap();
        // Our register request.
        let request = loop {
            match ws.next().await.unwrap().unwrap() {
                Message::Text(t) => break messages(&t)[0].clone(),
                _ => continue,
            }
        };
        let go = go_kontrol_frames();
        let response_id = request["callbacks"]
            .as_object()
            .unwrap()
            .iter()
            .find(|(_, path)| **path == json!([0, "responseCallback"]))
            .map(|(id, _)| id.clone())
            .unwrap();
        // Go Kontrol: ask for heartbeats, then answer the register call.
        ws.send(Message::text(go[0].clone())).await.unwrap();
        let answer = go[1].replacen(
            "\\\"method\\\":0",
            &format!("\\\"method\\\":{response_id}"),
            1,
        );
        ws.send(Message::text(answer)).await.unwrap();
        // What the kite sends back: the heartbeat call's result and a ping, as Go's kite did.
        let mut back = Vec::new();
        while back.len() < 2 {
            if let Message::Text(t) = ws.next().await.unwrap().unwrap() {
                back.extend(messages(&t));
            }
        }
        (request, back)
    });

    let key = KeyPair::generate(2048).unwrap();
    let kite_key = key
        .sign(&kite_native::core::auth::Claims {
            iss: "kite".into(),
            sub: "kite".into(),
            kontrol_key: key.public_pem.trim().into(),
            kontrol_url: format!("http://{addr}/kite"),
            ..Default::default()
        })
        .unwrap();
    let mut cfg = Config::default();
    cfg.ip = [127, 0, 0, 1].into();
    cfg.apply_kite_key(&kite_native::kitekey::parse(&kite_key).unwrap());
    let math = kite_native::Kite::with_config("math", "1.0.0", cfg).unwrap();
    let result = within("register", math.register("http://127.0.0.1:4740/kite"))
        .await
        .unwrap();
    assert_eq!(result.url, "http://127.0.0.1:4740/kite");
    assert_eq!(result.heartbeat_interval, 0);

    let (request, back) = within("fake Go Kontrol", fake).await.unwrap();
    // Our request has the shape of Go's.
    let go_request = &messages(&go_frames("s4-kontrol-register.jsonl", "register")[0])[0];
    let keys = |v: &Value| {
        let mut k: Vec<String> = v["arguments"][0]
            .as_object()
            .unwrap()
            .keys()
            .cloned()
            .collect();
        k.sort();
        k
    };
    assert_eq!(keys(&request), keys(go_request));
    assert_eq!(request["method"], "register");
    assert_eq!(
        request["arguments"][0]["withArgs"],
        json!([{"url": "http://127.0.0.1:4740/kite"}])
    );
    assert_eq!(request["arguments"][0]["authentication"]["type"], "kiteKey");
    // Our answers to Go Kontrol's heartbeat request are Go's kite's, message for message.
    let go_back: Vec<Value> = go_frames("s4-kontrol-register.jsonl", "register")[1..3]
        .iter()
        .flat_map(|f| messages(f))
        .collect();
    let mut ours = back.clone();
    let mut theirs = go_back.clone();
    let order = |v: &Value| v["method"].as_i64();
    ours.sort_by_key(order);
    theirs.sort_by_key(order);
    assert_eq!(ours, theirs);
    math.close();
}
