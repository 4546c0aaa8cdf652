//! The page's functions handed to a kite are freed when the connection that carried them
//! ends (`Kite.liveCallbacks()` returns to where it was).
#![cfg(target_arch = "wasm32")]

#[allow(dead_code)]
mod common;

use common::*;
use js_sys::Object;
use js_sys::{Array, Function};
use kite_wasm::{Kite, Kontrol};
use serde_json::json;
use wasm_bindgen::prelude::*;
use wasm_bindgen_futures::JsFuture;
use wasm_bindgen_test::*;

wasm_bindgen_test_configure!(run_in_browser);

/// Uses callbacks every way the math kite allows; returns a call still in flight that holds
/// one more function.
async fn use_callbacks(kite: &Kite) -> js_sys::Promise {
    let (f, seen) = recorder();
    assert_eq!(
        ok(kite, "count", &[JsValue::from(3), f.into()]).await,
        json!(3)
    );
    assert_eq!(seen.borrow().len(), 3);

    let (cb, got) = one_call();
    ok(kite, "callCallback", &[cb.into(), JsValue::from(1)]).await;
    called(got, "callCallback's function").await;

    let add: Function = call(kite, "adder", &[JsValue::from(1)])
        .await
        .expect("adder")
        .dyn_into()
        .expect("a function");
    let (cb, got) = one_call();
    add.call2(&JsValue::NULL, &JsValue::from(1), &cb)
        .expect("adder's function");
    assert_eq!(json(&called(got, "adder's callback").await), json!([2]));

    let holder = js(json!({ "n": 1 }));
    set(&holder, "f", &js_function("", ""));
    call(kite, "echo", &[holder]).await.expect("echo");

    // A call that times out here, but whose function the kite still holds.
    let err = rejected(
        call_with(
            kite,
            "slow",
            &[JsValue::from(2000), js_function("", "").into()],
            js(json!({ "timeout": 50 })),
        )
        .await,
        "slow with timeout 50",
    );
    assert_eq!(err.kind, "timeout");

    kite.request(
        "slow".into(),
        Some(Array::of2(&JsValue::from(5000), &js_function("", ""))),
        JsValue::UNDEFINED,
    )
}

async fn freed_on_disconnect(transport: &str) {
    let before = Kite::live_callbacks();
    let kite = new_kite(json!({ "url": fixture("math"), "transports": [transport] }));
    ready(&kite).await;
    let in_flight = use_callbacks(&kite).await;
    assert!(
        Kite::live_callbacks() >= before + 5,
        "functions in use over {transport}: {} (before: {before})",
        Kite::live_callbacks()
    );
    kite.disconnect(None);
    let err = rejected(
        within(
            CALL_DEADLINE_MS,
            "slow in flight",
            JsFuture::from(in_flight),
        )
        .await,
        "slow in flight on disconnect",
    );
    assert_eq!(err.kind, "disconnect", "{err:?}");
    eventually(2000, "live callbacks back to where they were", || {
        Kite::live_callbacks() == before
    })
    .await;
    drop(kite);
    assert_eq!(Kite::live_callbacks(), before);
}

#[wasm_bindgen_test]
async fn freed_on_disconnect_over_websocket() {
    freed_on_disconnect("websocket").await;
}

#[wasm_bindgen_test]
async fn freed_on_disconnect_over_xhr_streaming() {
    freed_on_disconnect("xhr-streaming").await;
}

#[wasm_bindgen_test]
async fn freed_on_disconnect_over_xhr_polling() {
    freed_on_disconnect("xhr-polling").await;
}

/// Dropping the kite without disconnecting frees them too.
#[wasm_bindgen_test]
async fn freed_when_the_kite_is_dropped() {
    let before = Kite::live_callbacks();
    let kite = new_kite(json!({ "url": fixture("math") }));
    ready(&kite).await;
    let in_flight = use_callbacks(&kite).await;
    assert!(Kite::live_callbacks() > before);
    drop(kite);
    let result = within(
        CALL_DEADLINE_MS,
        "slow in flight",
        JsFuture::from(in_flight),
    )
    .await;
    let err = rejected(result, "slow in flight when the kite is dropped");
    assert_eq!(err.kind, "disconnect", "{err:?}");
    eventually(2000, "live callbacks back to where they were", || {
        Kite::live_callbacks() == before
    })
    .await;
}

/// Functions of calls that were never sent are freed when those calls fail.
#[wasm_bindgen_test]
async fn freed_when_queued_calls_fail() {
    let before = Kite::live_callbacks();
    let kite = new_kite(json!({ "url": fixture("math"), "autoConnect": false }));
    let queued = kite.request(
        "count".into(),
        Some(Array::of2(&JsValue::from(1), &js_function("", ""))),
        JsValue::UNDEFINED,
    );
    let timed_out = kite.request(
        "count".into(),
        Some(Array::of2(&JsValue::from(1), &js_function("", ""))),
        js(json!({ "timeout": 50 })),
    );
    assert_eq!(Kite::live_callbacks(), before + 2);
    let err = rejected(
        within(CALL_DEADLINE_MS, "queued call", JsFuture::from(timed_out)).await,
        "a queued call timing out",
    );
    assert_eq!(err.kind, "timeout", "{err:?}");
    assert_eq!(Kite::live_callbacks(), before + 1);
    kite.disconnect(None);
    let err = rejected(
        within(CALL_DEADLINE_MS, "queued call", JsFuture::from(queued)).await,
        "a queued call when the kite disconnects",
    );
    assert_eq!(err.kind, "disconnect", "{err:?}");
    assert_eq!(Kite::live_callbacks(), before);
}

/// Functions the page returns from its methods, and functions sent over a token-authenticated
/// connection, are freed too.
#[wasm_bindgen_test]
async fn freed_page_results_and_token_calls() {
    let before = Kite::live_callbacks();
    let options = js(json!({ "url": fixture("math") }));
    let api = Object::new();
    set(
        &api,
        "makeAdder",
        &js_function("n", "return function (x, cb) { cb(x + n); };"),
    );
    set(&options, "api", &api);
    let kite = new_kite_js(options);
    ready(&kite).await;
    let adder: Function = call(&kite, "callPage", &["makeAdder".into(), JsValue::from(1)])
        .await
        .expect("makeAdder")
        .dyn_into()
        .expect("a function");
    let (cb, got) = one_call();
    adder
        .call2(&JsValue::NULL, &JsValue::from(1), &cb)
        .expect("the page's adder");
    assert_eq!(json(called(got, "the page's adder").await), json!([2]));
    assert!(Kite::live_callbacks() >= before + 2);
    kite.disconnect(None);
    assert_eq!(Kite::live_callbacks(), before);

    let key = token(3600).await;
    let kite = new_kite(json!({
        "url": fixture("auth"),
        "auth": { "type": "token", "key": key },
    }));
    ready(&kite).await;
    let (f, seen) = recorder();
    assert_eq!(
        ok(&kite, "count", &[JsValue::from(2), f.into()]).await,
        json!(2)
    );
    assert_eq!(seen.borrow().len(), 2);
    assert!(Kite::live_callbacks() > before);
    kite.disconnect(None);
    assert_eq!(Kite::live_callbacks(), before);
}

/// The watch callback of `watchKites` is freed when the Kontrol connection ends.
#[wasm_bindgen_test]
async fn freed_kontrol_watch() {
    let before = Kite::live_callbacks();
    let key = http_get(&control("/kite-key")).await;
    let kontrol = Kontrol::new(js(json!({
        "url": fixture("kontrol"),
        "auth": { "type": "kiteKey", "key": key },
    })))
    .expect("new Kontrol");
    let query = js(json!({ "query": { "username": "fixture", "name": unique("nobody") } }));
    let found = within(
        CALL_DEADLINE_MS,
        "watchKites",
        JsFuture::from(kontrol.watch_kites(query, js_function("", ""))),
    )
    .await
    .expect("watchKites");
    assert_eq!(json(found), json!([]));
    assert!(Kite::live_callbacks() > before);
    kontrol.disconnect();
    assert_eq!(Kite::live_callbacks(), before);
}
