//! WebRTC signalling through a relay kite (`Config::use_webrtc`, `kite.handleWebRTC`) over real
//! sockets: `src` set by the relay, Go's errors, the message as the peer's handler receives it
//! (Go's shape), disconnects, a peer claiming another's kite id, and the peer budget.

mod common;

use common::{TRANSPORTS, config, init_tracing, within};
use kite_native::core::webrtc::{HANDLER_NAME, SignalMessage};
use kite_native::transport::Transport;
use kite_native::{Client, ClientError, Config, ErrorKind, Kite, KiteError, Request};
use serde_json::{Value, json};
use tokio::sync::mpsc;

/// A relay kite serving `kite.handleWebRTC`; its URL.
async fn relay(configure: impl FnOnce(&mut Config)) -> (Kite, String) {
    init_tracing();
    let mut c = config();
    c.use_webrtc = true;
    configure(&mut c);
    let kite = Kite::with_config("relay", "1.0.0", c).unwrap();
    let server = kite.clone();
    tokio::spawn(async move { server.run().await.unwrap() });
    let addr = within("relay start", kite.ready()).await;
    (kite, format!("http://{addr}/kite"))
}

/// A peer kite with id `id` whose `kite.handleWebRTC` hands every call's raw argument list to
/// the receiver; dialed to the relay over `transport`.
async fn peer(
    url: &str,
    id: &str,
    transport: Transport,
) -> (Kite, Client, mpsc::UnboundedReceiver<Value>) {
    let mut c = config();
    c.id = id.to_owned();
    let kite = Kite::with_config("peer", "1.0.0", c).unwrap();
    let (tx, rx) = mpsc::unbounded_channel();
    kite.handle(HANDLER_NAME, move |req: Request| {
        let tx = tx.clone();
        async move {
            // The one argument Go's SendWebRTCRequest sends.
            let message: Value = req.arg()?;
            let _ = tx.send(json!([message]));
            Ok::<_, KiteError>(())
        }
    });
    let client = kite.new_client(url);
    client.set_transport(transport);
    within("dial", client.dial()).await.unwrap();
    (kite, client, rx)
}

fn offer(dst: &str) -> SignalMessage {
    SignalMessage::parse(&format!(
        r#"{{"type":"offer","src":"forged","dst":"{dst}","payload":{{"sdp":{{"type":"offer","sdp":"v=0\r\no=- 1 1 IN IP4 127.0.0.1"}},"connectionId":"c1"}}}}"#
    ))
    .unwrap()
}

fn message_of(e: &ClientError) -> String {
    e.kite_error().message
}

#[tokio::test]
async fn the_relay_forwards_with_src_set_and_answers_as_go() {
    let (_relay, url) = relay(|_| {}).await;
    for transport in TRANSPORTS {
        let a_id = format!("kite-a-{transport:?}");
        let b_id = format!("kite-b-{transport:?}");
        let (_a, a, mut a_rx) = peer(&url, &a_id, transport).await;
        let (_b, b, mut b_rx) = peer(&url, &b_id, transport).await;

        // B is unknown until it signals: Go's error, and nothing delivered.
        let e = within("to unknown", a.send_webrtc_request(&offer(&b_id)))
            .await
            .unwrap_err();
        assert_eq!(message_of(&e), "dst not registered");
        // A message without dst registers B and fails as Go's does.
        let leave = SignalMessage {
            kind: "leave".into(),
            ..SignalMessage::default()
        };
        let e = within("no dst", b.send_webrtc_request(&leave))
            .await
            .unwrap_err();
        assert_eq!(message_of(&e), "dst not set");
        assert_eq!(e.kind(), ErrorKind::Generic);

        // Now A reaches B; B's handler gets Go's shape with src set to A's kite id.
        within("offer", a.send_webrtc_request(&offer(&b_id)))
            .await
            .unwrap();
        let args = within("B hears", b_rx.recv()).await.unwrap();
        assert_eq!(
            args,
            json!([{
                "type": "offer",
                "src": a_id,
                "dst": b_id,
                "payload": {"sdp": {"type": "offer", "sdp": "v=0\r\no=- 1 1 IN IP4 127.0.0.1"}, "connectionId": "c1"}
            }])
        );
        let got = SignalMessage::parse(&args[0].to_string()).unwrap();
        assert_eq!(got.payload().unwrap().connection_id.as_deref(), Some("c1"));

        // And B answers A by the src it got.
        let answer = SignalMessage {
            kind: "answer".into(),
            dst: got.src.clone(),
            payload: Some(json!({"sdp": {"type": "answer", "sdp": "v=0"}})),
            ..SignalMessage::default()
        };
        within("answer", b.send_webrtc_request(&answer))
            .await
            .unwrap();
        let back = within("A hears", a_rx.recv()).await.unwrap();
        assert_eq!(back[0]["src"], json!(b_id));
        assert_eq!(back[0]["type"], json!("answer"));

        // An argument that is no signalling message.
        let e = within("bad", a.tell(HANDLER_NAME, ("not a message",)))
            .await
            .unwrap_err();
        assert!(message_of(&e).starts_with("invalid query: "), "{e}");

        // B goes away: A's next message finds no B (the relay hears of the close soon after).
        b.close();
        let mut last = None;
        for _ in 0..200 {
            let r = a.send_webrtc_request(&offer(&b_id)).await;
            if let Err(e) = &r
                && message_of(e) == "dst not registered"
            {
                last = Some(());
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(25)).await;
        }
        assert!(
            last.is_some(),
            "B stayed registered after its connection closed"
        );
        assert!(b_rx.try_recv().is_err(), "nothing reached the closed B");
        a.close();
    }
}

#[tokio::test]
async fn a_peer_cannot_take_another_peers_id() {
    let (_relay, url) = relay(|_| {}).await;
    let (_a, a, mut a_rx) = peer(&url, "victim", Transport::WebSocket).await;
    let (_b, b, _b_rx) = peer(&url, "friend", Transport::WebSocket).await;
    // Both signal once, so both are reachable.
    let hello = |dst: &str| SignalMessage {
        kind: "leave".into(),
        dst: dst.into(),
        ..SignalMessage::default()
    };
    let _ = within("a", a.send_webrtc_request(&hello("friend"))).await;
    within("b", b.send_webrtc_request(&hello("victim")))
        .await
        .unwrap();
    within("a hears b", a_rx.recv()).await.unwrap();

    // The attacker declares the victim's kite id: refused, and the victim keeps its signals.
    let (_m, mallory, mut m_rx) = peer(&url, "victim", Transport::WebSocket).await;
    let e = within("hijack", mallory.send_webrtc_request(&hello("friend")))
        .await
        .unwrap_err();
    assert_eq!(message_of(&e), "another connection signals as victim");
    within("b again", b.send_webrtc_request(&offer("victim")))
        .await
        .unwrap();
    let got = within("victim hears", a_rx.recv()).await.unwrap();
    assert_eq!(got[0]["src"], json!("friend"));
    assert!(
        m_rx.try_recv().is_err(),
        "the attacker got the victim's signal"
    );
    a.close();
    b.close();
    mallory.close();
}

#[tokio::test]
async fn the_peer_budget_refuses_new_peers_with_a_request_limit_error() {
    let (_relay, url) = relay(|c| c.max_webrtc_peers = 2).await;
    let mut clients = Vec::new();
    for id in ["p1", "p2"] {
        let (k, c, rx) = peer(&url, id, Transport::WebSocket).await;
        let e = within("join", c.send_webrtc_request(&offer("nobody")))
            .await
            .unwrap_err();
        assert_eq!(message_of(&e), "dst not registered");
        clients.push((k, c, rx));
    }
    let (_k3, c3, _rx3) = peer(&url, "p3", Transport::WebSocket).await;
    let e = within("full", c3.send_webrtc_request(&offer("p1")))
        .await
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::RequestLimit);
    // The registered ones still reach each other.
    within("p2 to p1", clients[1].1.send_webrtc_request(&offer("p1")))
        .await
        .unwrap();
    assert_eq!(
        within("p1 hears", clients[0].2.recv()).await.unwrap()[0]["src"],
        json!("p2")
    );
    for (_, c, _) in &clients {
        c.close();
    }
    c3.close();
}

#[tokio::test]
async fn without_use_webrtc_there_is_no_relay() {
    let (_relay, url) = relay(|c| c.use_webrtc = false).await;
    let (_a, a, _rx) = peer(&url, "a", Transport::WebSocket).await;
    let e = within("no relay", a.send_webrtc_request(&offer("b")))
        .await
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::MethodNotFound);
    a.close();
}
