//! Callbacks both ways, reverse calls, disconnects and reconnects, over a real socket.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use common::{TRANSPORTS, TestKite, client_for, within};
use kite_native::{Callback, ErrorKind, Kite, KiteError, Request};
use serde_json::{Value, json};
use tokio::sync::mpsc;

#[tokio::test]
async fn callbacks_are_invoked_many_times_in_both_directions() {
    let server = TestKite::start().await;
    for transport in TRANSPORTS {
        let (_k, client) = client_for(&server.url, transport).await;
        let (tx, mut rx) = mpsc::unbounded_channel();
        let cb = Callback::new(move |args| {
            let _ = tx.send(args.nth::<Value>(0).unwrap());
        });
        let result: Value = within(
            "callback",
            client.call(
                "callback",
                kite_native::value!([{"value": 42, "times": 3, "cb": cb}]),
            ),
        )
        .await
        .unwrap();
        assert_eq!(result, json!(42));
        for _ in 0..3 {
            assert_eq!(within("cb", rx.recv()).await.unwrap(), json!(42));
        }

        // A callback given to the server's echo comes back as a callable function.
        let (tx2, mut rx2) = mpsc::unbounded_channel();
        let mine = Callback::new(move |args| {
            let _ = tx2.send(args.nth::<String>(0).unwrap());
        });
        let back: Callback = within("echo fn", client.call("kite.echo", (mine,)))
            .await
            .unwrap();
        back.call(("round trip",)).unwrap();
        assert_eq!(within("echoed cb", rx2.recv()).await.unwrap(), "round trip");
        client.close();
    }
}

#[tokio::test]
async fn a_handler_calls_back_into_the_caller() {
    let server = TestKite::start().await;
    for transport in TRANSPORTS {
        let (_k, client) = client_for(&server.url, transport).await;
        let answer: String = within("ask", client.call("ask", ("bob",))).await.unwrap();
        assert_eq!(answer, "client said: hello bob");
        client.close();
    }
}

#[tokio::test]
async fn heartbeat_pings_until_the_connection_ends() {
    let server = TestKite::start().await;
    let (_k, client) = client_for(&server.url, TRANSPORTS[0]).await;
    let count = Arc::new(AtomicUsize::new(0));
    let (tx, mut rx) = mpsc::unbounded_channel();
    let c = count.clone();
    let ping = Callback::new(move |_| {
        c.fetch_add(1, Ordering::SeqCst);
        let _ = tx.send(());
    });
    let r: Value = within("heartbeat", client.call("kite.heartbeat", (0.05, ping)))
        .await
        .unwrap();
    assert_eq!(r, Value::Null);
    for _ in 0..3 {
        within("ping", rx.recv()).await.unwrap();
    }
    let e = within("bad heartbeat", client.tell("kite.heartbeat", ()))
        .await
        .unwrap_err();
    assert_eq!(e.to_string(), "empty heartbeat request");
    client.close();
}

#[tokio::test]
async fn pending_calls_fail_with_disconnect_and_contexts_are_cancelled() {
    for transport in TRANSPORTS {
        let server = TestKite::start().await;
        let (_k, client) = client_for(&server.url, transport).await;
        let c = client.clone();
        let pending = tokio::spawn(async move { c.tell("wait", ()).await });
        // Make sure the call reached the server before it goes away.
        let n: f64 = within("square", client.call("square", (2,))).await.unwrap();
        assert_eq!(n, 4.0);
        server.kite.close();
        let e = within("pending call", pending).await.unwrap().unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Disconnect, "{e}");
        let e = within("after close", client.tell("square", (2,)))
            .await
            .unwrap_err();
        assert!(
            matches!(e.kind(), ErrorKind::Send | ErrorKind::Disconnect),
            "{e}"
        );
    }

    // The server-side context of a call is cancelled when the caller goes away.
    let server = TestKite::start().await;
    let (tx, mut rx) = mpsc::unbounded_channel::<()>();
    server.kite.handle("watch_context", move |req: Request| {
        let tx = tx.clone();
        async move {
            req.context.cancelled().await;
            let _ = tx.send(());
            Ok::<_, KiteError>(())
        }
    });
    let (_k, client) = client_for(&server.url, TRANSPORTS[0]).await;
    let c = client.clone();
    tokio::spawn(async move { c.tell("watch_context", ()).await });
    let _: f64 = within("square", client.call("square", (1,))).await.unwrap();
    client.close();
    within("context cancelled", rx.recv()).await.unwrap();
}

#[tokio::test]
async fn hooks_fire_and_dial_forever_reconnects() {
    let server = TestKite::start().await;
    let (conn_tx, mut conn_rx) = mpsc::unbounded_channel();
    let (first_tx, mut first_rx) = mpsc::unbounded_channel();
    let (disc_tx, mut disc_rx) = mpsc::unbounded_channel();
    server.kite.on_connect(move |_| {
        let _ = conn_tx.send(());
    });
    server.kite.on_first_request(move |c| {
        let _ = first_tx.send(c.remote().name);
    });
    server.kite.on_disconnect(move |_| {
        let _ = disc_tx.send(());
    });
    // A hook that panics does not break anything.
    server.kite.on_connect(|_| panic!("hook panic"));

    let (_k, client) = client_for(&server.url, TRANSPORTS[0]).await;
    within("connect hook", conn_rx.recv()).await.unwrap();
    let _: f64 = within("square", client.call("square", (1,))).await.unwrap();
    assert_eq!(
        within("first request", first_rx.recv()).await.unwrap(),
        "tester"
    );
    client.close();
    within("disconnect hook", disc_rx.recv()).await.unwrap();

    // dial_forever: reconnects when the server drops the session.
    let kite = Kite::with_config("tester", "1.0.0", common::config()).unwrap();
    let client = kite.new_client(&server.url);
    let (up_tx, mut up_rx) = mpsc::unbounded_channel();
    client.on_connect(move |_| {
        let _ = up_tx.send(());
    });
    within("dial forever", client.dial_forever()).await;
    within("first connect", up_rx.recv()).await.unwrap();
    within("first session", conn_rx.recv()).await.unwrap();
    // The server closes every session (as on restart); the client comes back by itself.
    let closer = server.kite.clone();
    let accepted = closer.connections();
    assert_eq!(accepted, 1);
    // Close the session from the server side without stopping the server.
    server.kite.handle("drop_me", |req: Request| async move {
        req.client.close();
        Ok::<_, KiteError>(())
    });
    let _ = client.tell("drop_me", ()).await;
    within("reconnect", up_rx.recv()).await.unwrap();
    let n: f64 = within("square after reconnect", client.call("square", (5,)))
        .await
        .unwrap();
    assert_eq!(n, 25.0);
    client.close();
}
