//! A deliberately broken SockJS server (`bad` fixture): wrongly shaped answers, broken JSON and
//! frames, calls of unknown callbacks, silence, and a close in the middle of a call.
#![cfg(target_arch = "wasm32")]

#[allow(dead_code)]
mod common;

use common::*;
use kite_wasm::Kite;
use serde_json::json;
use wasm_bindgen::prelude::*;
use wasm_bindgen_test::*;

wasm_bindgen_test_configure!(run_in_browser);

fn bad_kite() -> Kite {
    new_kite(json!({
        "url": fixture("bad"),
        "transports": ["websocket"],
        "autoReconnect": false,
    }))
}

#[wasm_bindgen_test]
async fn the_bad_server_answers_ping_and_square() {
    let kite = bad_kite();
    ready(&kite).await;
    assert_eq!(square(&kite, 3.0).await, 9.0);
    assert_eq!(ok(&kite, "kite.ping", &[]).await, json!("pong"));
    let err = rejected(call(&kite, "nope", &[]).await, "nope");
    assert_eq!(err.kind, "methodNotFound", "{err:?}");
    kite.disconnect(None);
}

#[wasm_bindgen_test]
async fn wrongly_shaped_answers_reject() {
    let kite = bad_kite();
    ready(&kite).await;
    let err = rejected(call(&kite, "wrongShape", &[]).await, "wrongShape");
    assert_eq!(err.kind, "invalidResponse", "{err:?}");
    let err = rejected(call(&kite, "errorString", &[]).await, "errorString");
    assert_eq!(err.message, "plain string", "{err:?}");
    // Still connected.
    assert_eq!(square(&kite, 4.0).await, 16.0);
    kite.disconnect(None);
}

/// Garbage before an answer is reported as an `error` event, skipped, and the answer arrives.
#[wasm_bindgen_test]
async fn garbage_is_skipped_and_reported() {
    let kite = bad_kite();
    let mut errors = listen(&kite, "error");
    let mut closed = listen(&kite, "close");
    ready(&kite).await;
    for method in ["brokenJson", "brokenFrame", "unknownCallback"] {
        let answer = ok(&kite, method, &[]).await;
        assert_eq!(answer, json!(format!("after {method}")));
        let args = errors.next().await;
        let err = KiteErr::from_js(&args.get(0));
        assert_eq!(err.name, "KiteError", "{method}: {err:?}");
        assert!(!err.message.is_empty(), "{method}: {err:?}");
        assert!(errors.drain().is_empty(), "{method}: one error event only");
        assert_eq!(kite.state(), 1, "{method}: still connected");
        assert_eq!(square(&kite, 5.0).await, 25.0, "after {method}");
    }
    assert!(closed.drain().is_empty(), "no close event");
    kite.disconnect(None);
}

#[wasm_bindgen_test]
async fn silence_times_out_and_the_connection_stays() {
    let kite = bad_kite();
    ready(&kite).await;
    let started = now();
    let err = rejected(
        call_with(&kite, "noAnswer", &[], js(json!({ "timeout": 300 }))).await,
        "noAnswer",
    );
    let took = now() - started;
    assert_eq!(err.kind, "timeout", "{err:?}");
    assert!((250.0..3000.0).contains(&took), "timed out after {took} ms");
    assert_eq!(square(&kite, 3.0).await, 9.0);
    kite.disconnect(None);
}

#[wasm_bindgen_test]
async fn a_close_in_the_middle_of_a_call() {
    let kite = bad_kite();
    let mut closed = listen(&kite, "close");
    ready(&kite).await;
    // Another call in flight when the server closes fails too.
    let pending = kite.request("noAnswer".into(), None, JsValue::UNDEFINED);
    let err = rejected(call(&kite, "closeMe", &[]).await, "closeMe");
    assert_eq!(err.kind, "disconnect", "{err:?}");
    let info = closed.next().await.get(0);
    assert_eq!(
        json(&info),
        json!({ "code": 3000, "reason": "go away" }),
        "the close event"
    );
    let pending = within(
        CALL_DEADLINE_MS,
        "noAnswer",
        wasm_bindgen_futures::JsFuture::from(pending),
    )
    .await;
    let err = rejected(pending, "noAnswer when the server closed");
    assert_eq!(err.kind, "disconnect", "{err:?}");
    assert_eq!(kite.state(), 3);
    assert_eq!(kite.transport(), None);
}

/// A SockJS session the server is silent on for `heartbeatTimeout` ms is closed.
#[wasm_bindgen_test]
async fn a_silent_session_is_closed_after_heartbeat_timeout() {
    let kite = new_kite(json!({
        "url": fixture("bad"),
        "transports": ["websocket"],
        "autoReconnect": false,
        "heartbeatTimeout": 400,
    }));
    let mut errors = listen(&kite, "error");
    let mut closed = listen(&kite, "close");
    ready(&kite).await;
    let started = now();
    let pending = kite.request("noAnswer".into(), None, JsValue::UNDEFINED);
    let err = KiteErr::from_js(&errors.next_within(3000).await.get(0));
    assert!(err.message.contains("heartbeat"), "{err:?}");
    closed.next_within(3000).await;
    let took = now() - started;
    assert!((300.0..2500.0).contains(&took), "closed after {took} ms");
    let err = rejected(
        within(
            CALL_DEADLINE_MS,
            "noAnswer",
            wasm_bindgen_futures::JsFuture::from(pending),
        )
        .await,
        "a call on the silent session",
    );
    assert_eq!(err.kind, "disconnect", "{err:?}");
    assert_eq!(kite.state(), 3);
}
