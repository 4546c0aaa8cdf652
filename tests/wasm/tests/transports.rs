//! Choosing transports (forced, fallback, raw websocket) and reconnecting after the kite
//! restarts.
#![cfg(target_arch = "wasm32")]

#[allow(dead_code)]
mod common;

use common::*;
use js_sys::Array;
use serde_json::json;
use wasm_bindgen::prelude::*;
use wasm_bindgen_futures::{JsFuture, spawn_local};
use wasm_bindgen_test::*;

wasm_bindgen_test_configure!(run_in_browser);

#[wasm_bindgen_test]
async fn each_forced_transport_is_used() {
    for transport in TRANSPORTS {
        let kite = new_kite(json!({ "url": fixture("math"), "transports": [transport] }));
        let mut opened = listen(&kite, "open");
        ready(&kite).await;
        assert_eq!(json(&opened.next().await), json!([]));
        assert_eq!(kite.transport().as_deref(), Some(transport));
        assert_eq!(square(&kite, 4.0).await, 16.0);
        assert_eq!(
            json(JsFuture::from(kite.ping()).await.expect("ping")),
            json!("pong")
        );
        kite.disconnect(None);
    }
}

#[wasm_bindgen_test]
async fn default_transports_pick_websocket() {
    let kite = new_kite(json!({ "url": fixture("math") }));
    ready(&kite).await;
    assert_eq!(kite.transport().as_deref(), Some("websocket"));
    kite.disconnect(None);
}

/// A kite without websockets: the default list falls back to xhr-streaming.
#[wasm_bindgen_test]
async fn no_websocket_falls_back_to_xhr_streaming() {
    let kite = new_kite(json!({ "url": fixture("noWebsocket") }));
    ready(&kite).await;
    assert_eq!(kite.transport().as_deref(), Some("xhr-streaming"));
    assert_eq!(square(&kite, 5.0).await, 25.0);
    kite.disconnect(None);

    // Without xhr-streaming in the list, xhr-polling is next.
    let kite = new_kite(json!({
        "url": fixture("noWebsocket"), "transports": ["websocket", "xhr-polling"],
    }));
    ready(&kite).await;
    assert_eq!(kite.transport().as_deref(), Some("xhr-polling"));
    assert_eq!(square(&kite, 6.0).await, 36.0);
    kite.disconnect(None);
}

/// Only websockets, to a kite without them: an error, and calls time out.
#[wasm_bindgen_test]
async fn no_websocket_with_only_websocket_fails() {
    let kite = new_kite(json!({
        "url": fixture("noWebsocket"),
        "transports": ["websocket"],
        "backoff": { "initialDelayMs": 100, "multiplyFactor": 1, "maxDelayMs": 100 },
    }));
    let mut errors = listen(&kite, "error");
    let mut opened = listen(&kite, "open");
    let args = errors.next().await;
    let err = KiteErr::from_js(&args.get(0));
    assert_eq!(err.name, "KiteError", "{err:?}");
    assert!(
        err.message.contains("websocket"),
        "the error should say why: {err:?}"
    );
    let err = rejected(
        call_with(
            &kite,
            "square",
            &[JsValue::from(2)],
            js(json!({ "timeout": 300 })),
        )
        .await,
        "square without a connection",
    );
    assert!(err.kind == "timeout" || err.kind == "disconnect", "{err:?}");
    assert_ne!(kite.state(), 1);
    assert_eq!(kite.transport(), None);
    assert!(opened.drain().is_empty(), "no open event");
    kite.disconnect(None);

    // Without reconnecting, the failed attempt fails the waiting calls at once.
    let kite = new_kite(json!({
        "url": fixture("noWebsocket"), "transports": ["websocket"], "autoReconnect": false,
    }));
    let err = rejected(
        call(&kite, "square", &[JsValue::from(2)]).await,
        "square on a failed connection",
    );
    assert_eq!(err.kind, "disconnect", "{err:?}");
    assert_eq!(kite.state(), 3);
}

/// A ws:// URL is a raw websocket (no SockJS framing).
#[wasm_bindgen_test]
async fn raw_websocket() {
    let kite = new_kite(json!({ "url": fixture("rawWebsocket") }));
    ready(&kite).await;
    assert_eq!(kite.transport().as_deref(), Some("raw-websocket"));
    assert_eq!(square(&kite, 4.0).await, 16.0);
    // Callbacks work over it too.
    let (f, seen) = recorder();
    assert_eq!(
        ok(&kite, "count", &[JsValue::from(2), f.into()]).await,
        json!(2)
    );
    assert_eq!(*seen.borrow(), vec![json!([1]), json!([2])]);
    kite.disconnect(None);
}

#[wasm_bindgen_test]
fn invalid_options_are_refused() {
    for options in [
        json!({}),
        json!({ "url": "ftp://127.0.0.1/kite" }),
        json!({ "url": fixture("math"), "transports": ["carrier-pigeon"] }),
        json!({ "url": fixture("math"), "transports": [] }),
        json!({ "url": fixture("math"), "auth": { "key": "no type" } }),
        json!({ "url": fixture("math"), "api": 3 }),
        json!({ "url": fixture("math"), "api": { "m": 3 } }),
    ] {
        assert!(
            kite_wasm::Kite::new(js(options.clone())).is_err(),
            "new Kite({options}) should throw"
        );
    }
    assert!(kite_wasm::Kite::new(JsValue::from(3)).is_err());
}

/// A kite that goes away and comes back: `close`, then `open` again, and calls made in
/// between are sent after reconnecting.
async fn reconnect(transport: &str) {
    let kite = new_kite(json!({
        "url": fixture("restart"),
        "transports": [transport],
        "backoff": { "initialDelayMs": 100, "multiplyFactor": 1.2, "maxDelayMs": 300, "maxReconnectAttempts": 100 },
    }));
    let mut opened = listen(&kite, "open");
    let mut closed = listen(&kite, "close");
    ready(&kite).await;
    opened.next().await;
    assert_eq!(square(&kite, 2.0).await, 4.0);
    // A function of the kite, from this connection.
    let old_function: js_sys::Function = call(&kite, "adder", &[JsValue::from(1)])
        .await
        .expect("adder")
        .dyn_into()
        .expect("a function");

    let (tx, restarted) = futures_channel::oneshot::channel();
    spawn_local(async move {
        let body = http_post(&control("/restart?down_ms=400")).await;
        let _ = tx.send(body);
    });

    let close = closed.next().await;
    let info = close.get(0);
    assert!(
        get(&info, "code").as_f64().is_some(),
        "close carries a code: {:?}",
        json(&info)
    );
    assert!(get(&info, "reason").is_string(), "close carries a reason");
    assert_ne!(kite.state(), 1, "not ready after close");
    assert_eq!(kite.transport(), None);

    // While the kite is down: queued.
    let queued = kite.request(
        "square".into(),
        Some(Array::of1(&JsValue::from(7))),
        JsValue::UNDEFINED,
    );
    let queued_echo = kite.request(
        "echo".into(),
        Some(Array::of1(&"after".into())),
        JsValue::UNDEFINED,
    );

    opened.next().await;
    assert_eq!(kite.state(), 1);
    assert_eq!(kite.transport().as_deref(), Some(transport));
    let seven = within(CALL_DEADLINE_MS, "queued square", JsFuture::from(queued))
        .await
        .expect("the call made while disconnected");
    assert_eq!(json(&seven), json!(49));
    let echoed = within(CALL_DEADLINE_MS, "queued echo", JsFuture::from(queued_echo))
        .await
        .expect("the second call made while disconnected");
    assert_eq!(json(&echoed), json!("after"));
    assert_eq!(square(&kite, 3.0).await, 9.0);
    // The function of the old connection cannot be called on the new one.
    assert!(
        old_function
            .call2(&JsValue::NULL, &JsValue::from(1), &js_function("", ""))
            .is_err(),
        "a function of the previous connection should throw"
    );

    let body = within(CALL_DEADLINE_MS, "POST /restart", restarted)
        .await
        .expect("restart answered");
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(&body).unwrap()["ok"],
        json!(true)
    );
    assert!(closed.drain().is_empty(), "one close only");

    // A deliberate disconnect: a close event, and no reconnection.
    kite.disconnect(None);
    let info = closed.next().await.get(0);
    assert_eq!(
        get(&info, "code").as_f64(),
        Some(1000.0),
        "{:?}",
        json(&info)
    );
    assert_eq!(kite.state(), 3);
    let err = rejected(
        call_with(
            &kite,
            "square",
            &[JsValue::from(2)],
            js(json!({ "timeout": 300 })),
        )
        .await,
        "square after disconnect()",
    );
    assert!(err.kind == "disconnect" || err.kind == "timeout", "{err:?}");
    assert!(
        opened.drain().is_empty(),
        "no reconnection after disconnect()"
    );

    // connect() again works.
    kite.connect();
    opened.next().await;
    assert_eq!(square(&kite, 8.0).await, 64.0);
    kite.disconnect(None);
}

#[wasm_bindgen_test]
async fn reconnects_over_websocket() {
    reconnect("websocket").await;
}

#[wasm_bindgen_test]
async fn reconnects_over_xhr_streaming() {
    reconnect("xhr-streaming").await;
}

#[wasm_bindgen_test]
async fn reconnects_over_xhr_polling() {
    reconnect("xhr-polling").await;
}

/// `disconnect(true)` closes and connects again.
#[wasm_bindgen_test]
async fn disconnect_with_reconnect() {
    let kite = new_kite(json!({ "url": fixture("math") }));
    let mut opened = listen(&kite, "open");
    let mut closed = listen(&kite, "close");
    ready(&kite).await;
    opened.next().await;
    kite.disconnect(Some(true));
    closed.next().await;
    opened.next().await;
    assert_eq!(square(&kite, 9.0).await, 81.0);
    kite.disconnect(None);
}

/// A kite that never answers: `backOffFailed` after the last attempt, and the waiting calls
/// fail.
#[wasm_bindgen_test]
async fn back_off_fails_after_the_last_attempt() {
    let kite = new_kite(json!({
        "url": "http://127.0.0.1:1/kite",
        "backoff": { "initialDelayMs": 20, "multiplyFactor": 1, "maxDelayMs": 20, "maxReconnectAttempts": 2 },
    }));
    let failed = once(&kite, "backOffFailed");
    let mut errors = listen(&kite, "error");
    let err = rejected(
        call(&kite, "square", &[JsValue::from(2)]).await,
        "square to nowhere",
    );
    assert_eq!(err.kind, "disconnect", "{err:?}");
    within(EVENT_DEADLINE_MS, "backOffFailed", failed)
        .await
        .expect("backOffFailed");
    // The first attempt and the two retries each reported an error.
    assert_eq!(errors.drain().len(), 3);
    assert_eq!(kite.state(), 3);
}

/// `disconnect()` while connecting: the attempt is abandoned, nothing opens.
#[wasm_bindgen_test]
async fn disconnect_while_connecting() {
    let abandoned = new_kite(json!({ "url": fixture("math") }));
    assert_eq!(abandoned.state(), 5);
    let mut opened = listen(&abandoned, "open");
    abandoned.disconnect(None);
    assert_eq!(abandoned.state(), 3);
    // Another kite connecting at the same time gets there; the abandoned one stays closed.
    let other = new_kite(json!({ "url": fixture("math") }));
    ready(&other).await;
    assert_eq!(square(&other, 2.0).await, 4.0);
    assert!(opened.drain().is_empty(), "the abandoned kite opened");
    assert_eq!(abandoned.state(), 3);
    assert_eq!(abandoned.transport(), None);
    other.disconnect(None);
}

/// `ready(callback)`, `once` and `off`.
#[wasm_bindgen_test]
async fn ready_once_and_off() {
    let kite = new_kite(json!({ "url": fixture("math") }));
    let (callback, called_back) = one_call();
    let ready_promise = kite.ready(Some(callback));
    let (once_listener, once_seen) = recorder();
    kite.once("open".into(), once_listener);
    let (off_listener, off_seen) = recorder();
    kite.on("open".into(), off_listener.clone());
    kite.off("open".into(), off_listener);
    let mut opened = listen(&kite, "open");
    within(
        CONNECT_DEADLINE_MS,
        "ready()",
        JsFuture::from(ready_promise),
    )
    .await
    .expect("ready() resolves");
    called(called_back, "ready's callback").await;
    opened.next().await;
    // Reconnect: a second open.
    kite.disconnect(Some(true));
    opened.next().await;
    assert_eq!(once_seen.borrow().len(), 1, "once: the first open only");
    assert!(off_seen.borrow().is_empty(), "off: never");
    // ready() when already connected resolves at once.
    within(
        1000,
        "ready() when connected",
        JsFuture::from(kite.ready(None)),
    )
    .await
    .expect("ready");
    kite.disconnect(None);
}

/// `disconnect(true)` while waiting to reconnect (the kite is down): it must still reconnect.
#[wasm_bindgen_test]
async fn disconnect_with_reconnect_while_the_kite_is_down() {
    let kite = new_kite(json!({
        "url": fixture("restart"),
        "backoff": { "initialDelayMs": 200, "multiplyFactor": 1, "maxDelayMs": 200, "maxReconnectAttempts": 100 },
    }));
    let mut opened = listen(&kite, "open");
    let mut closed = listen(&kite, "close");
    ready(&kite).await;
    opened.next().await;

    let (tx, restarted) = futures_channel::oneshot::channel();
    spawn_local(async move {
        let _ = tx.send(http_post(&control("/restart?down_ms=1000")).await);
    });
    closed.next().await;
    // Down, between two attempts.
    assert_eq!(kite.state(), 3);
    kite.disconnect(Some(true));
    let reopened = within(6000, "open after disconnect(true)", opened.rx_next()).await;
    assert!(reopened.is_some());
    assert_eq!(square(&kite, 4.0).await, 16.0);
    within(CALL_DEADLINE_MS, "POST /restart", restarted)
        .await
        .expect("restart answered");
    kite.disconnect(None);
}
