//! Token authentication against the native `auth` kite, which trusts the tokens of the control
//! server's `/token`: valid, missing and expired tokens, renewal through `tokenExpired` and
//! `setToken`, and the renewal timer (`renewBefore`).
#![cfg(target_arch = "wasm32")]

#[allow(dead_code)]
mod common;

use std::cell::Cell;
use std::rc::Rc;

use common::*;
use kite_wasm::Kite;
use serde_json::json;
use wasm_bindgen::prelude::*;
use wasm_bindgen_futures::spawn_local;
use wasm_bindgen_test::*;

wasm_bindgen_test_configure!(run_in_browser);

/// `renewBefore` far below zero: the expiry timer of an expired token fires minutes later,
/// so only a refused call can raise `tokenExpired`.
const NO_TIMER: i64 = -200_000;

fn auth_kite(auth: Option<&str>, extra: serde_json::Value) -> Kite {
    let mut options = json!({ "url": fixture("auth"), "transports": ["websocket"] });
    if let Some(key) = auth {
        options["auth"] = json!({ "type": "token", "key": key });
    }
    for (k, v) in extra.as_object().expect("an object") {
        options[k] = v.clone();
    }
    new_kite(options)
}

/// Counts `tokenExpired` and answers each with a fresh token from `/token`.
fn renew_on_expiry(kite: &Rc<Kite>) -> Rc<Cell<u32>> {
    let count = Rc::new(Cell::new(0));
    let c = count.clone();
    let weak = Rc::downgrade(kite);
    kite.on(
        "tokenExpired".into(),
        js_fn(move |_| {
            c.set(c.get() + 1);
            let weak = weak.clone();
            spawn_local(async move {
                let fresh = token(3600).await;
                if let Some(kite) = weak.upgrade() {
                    kite.set_token(fresh);
                }
            });
            JsValue::UNDEFINED
        }),
    );
    count
}

#[wasm_bindgen_test]
async fn a_valid_token_is_accepted() {
    let key = token(3600).await;
    let kite = auth_kite(Some(&key), json!({}));
    ready(&kite).await;
    assert_eq!(square(&kite, 4.0).await, 16.0);
    assert_eq!(kite.get_token().as_deref(), Some(key.as_str()));
    let who = ok(&kite, "whoami", &[]).await;
    assert_eq!(who["username"], json!("browser-user"), "{who}");
    assert_eq!(who["caller"]["name"], json!("browser-kite"), "{who}");

    // Another valid token, set while connected: tokenSet, and calls still work.
    let mut set = listen(&kite, "tokenSet");
    let other = token(1800).await;
    kite.set_token(other.clone());
    assert_eq!(json(&set.next().await), json!([other]));
    assert_eq!(kite.get_token().as_deref(), Some(other.as_str()));
    assert_eq!(square(&kite, 5.0).await, 25.0);
    kite.disconnect(None);
}

#[wasm_bindgen_test]
async fn no_token_is_refused() {
    let kite = auth_kite(None, json!({}));
    let err = rejected(
        call(&kite, "square", &[JsValue::from(4)]).await,
        "square without a token",
    );
    assert_eq!(err.kind, "authenticationError", "{err:?}");
    assert_eq!(kite.get_token(), None);
    // A wrong token is refused too.
    let kite = auth_kite(Some("not.a.token"), json!({}));
    let err = rejected(
        call(&kite, "square", &[JsValue::from(4)]).await,
        "square with a garbage token",
    );
    assert_eq!(err.kind, "authenticationError", "{err:?}");
    kite.disconnect(None);
}

/// An expired token, nobody to renew it: the call fails with the kite's error.
#[wasm_bindgen_test]
async fn an_expired_token_without_renewal_fails() {
    let expired = token(-120).await;
    let kite = auth_kite(Some(&expired), json!({ "renewBefore": NO_TIMER }));
    let err = rejected(
        call(&kite, "square", &[JsValue::from(4)]).await,
        "square with an expired token",
    );
    assert_eq!(err.kind, "authenticationError", "{err:?}");
    assert!(err.message.contains("token is expired"), "{err:?}");
    kite.disconnect(None);
}

/// An expired token and a `tokenExpired` listener that never sets one: the refused call waits
/// `tokenWait`, then fails.
#[wasm_bindgen_test]
async fn an_expired_token_waits_token_wait_then_fails() {
    let expired = token(-120).await;
    let kite = auth_kite(
        Some(&expired),
        json!({ "renewBefore": NO_TIMER, "tokenWait": 300 }),
    );
    let mut expiries = listen(&kite, "tokenExpired");
    ready(&kite).await;
    let started = now();
    let err = rejected(
        call(&kite, "square", &[JsValue::from(4)]).await,
        "square while nobody renews",
    );
    let took = now() - started;
    assert_eq!(err.kind, "authenticationError", "{err:?}");
    assert!(err.message.contains("token is expired"), "{err:?}");
    assert!(took >= 250.0, "failed after {took} ms, before tokenWait");
    assert!(took < 5000.0, "failed after {took} ms");
    assert_eq!(expiries.drain().len(), 1);
    kite.disconnect(None);
}

/// A refused call with an expired token is sent again once with the token the `tokenExpired`
/// listener sets.
#[wasm_bindgen_test]
async fn a_refused_call_is_retried_with_the_renewed_token() {
    let expired = token(-120).await;
    let kite = Rc::new(auth_kite(
        Some(&expired),
        json!({ "renewBefore": NO_TIMER }),
    ));
    let expiries = renew_on_expiry(&kite);
    let mut set = listen(&kite, "tokenSet");
    ready(&kite).await;
    assert_eq!(expiries.get(), 0, "no timer for this token");

    assert_eq!(square(&kite, 6.0).await, 36.0);
    assert_eq!(
        expiries.get(),
        1,
        "the refused call raised tokenExpired once"
    );
    let new_token = set
        .next()
        .await
        .get(0)
        .as_string()
        .expect("tokenSet's token");
    assert_ne!(new_token, expired);
    assert_eq!(kite.get_token(), Some(new_token));
    // Later calls use the new token directly.
    assert_eq!(square(&kite, 7.0).await, 49.0);
    assert_eq!(expiries.get(), 1);
    assert!(set.drain().is_empty());

    // Several calls refused together are all retried.
    let expired = token(-120).await;
    kite.set_token(expired);
    set.next().await;
    let calls: Vec<_> = (1..=5)
        .map(|i| {
            kite.request(
                "square".into(),
                Some(js_sys::Array::of1(&JsValue::from(i))),
                JsValue::UNDEFINED,
            )
        })
        .collect();
    let all = js_sys::Promise::all(&calls.into_iter().collect::<js_sys::Array>());
    let results = within(
        CALL_DEADLINE_MS,
        "five refused calls",
        wasm_bindgen_futures::JsFuture::from(all),
    )
    .await
    .expect("the refused calls, retried");
    assert_eq!(json(&results), json!([1, 4, 9, 16, 25]));
    kite.disconnect(None);
}

/// An expired token with the default `renewBefore`: `tokenExpired` fires at once, and the call
/// succeeds with the renewed token.
#[wasm_bindgen_test]
async fn an_expired_token_is_renewed() {
    let expired = token(-120).await;
    let kite = Rc::new(auth_kite(Some(&expired), json!({})));
    let expiries = renew_on_expiry(&kite);
    let mut set = listen(&kite, "tokenSet");
    assert_eq!(square(&kite, 3.0).await, 9.0);
    assert!(expiries.get() >= 1);
    let new_token = set.next().await.get(0).as_string().expect("a token");
    assert_ne!(new_token, expired);
    kite.disconnect(None);
}

/// `tokenExpired` fires `renewBefore` ms before the token's `exp`.
#[wasm_bindgen_test]
async fn token_expired_fires_renew_before_the_expiry() {
    let key = token(40).await;
    let started = now();
    let soon = auth_kite(Some(&key), json!({ "renewBefore": 39_500 }));
    let later = auth_kite(Some(&key), json!({}));
    let mut later_expiries = listen(&later, "tokenExpired");
    let fired = once(&soon, "tokenExpired");
    within(2000, "tokenExpired (ttl 40 s, renewBefore 39.5 s)", fired)
        .await
        .expect("tokenExpired");
    let took = now() - started;
    assert!(took < 1600.0, "tokenExpired after {took} ms");
    // The token is still valid: calls work.
    assert_eq!(square(&soon, 2.0).await, 4.0);
    // With the default 30 s, nothing yet.
    assert!(later_expiries.drain().is_empty());
    assert_eq!(square(&later, 3.0).await, 9.0);
    soon.disconnect(None);
    later.disconnect(None);
}

/// A `tokenExpired` listener that sets the new token synchronously.
#[wasm_bindgen_test]
async fn a_token_set_synchronously_in_the_listener() {
    let expired = token(-120).await;
    let fresh = token(3600).await;
    let kite = Rc::new(auth_kite(
        Some(&expired),
        json!({ "renewBefore": NO_TIMER }),
    ));
    let weak = Rc::downgrade(&kite);
    let count = Rc::new(Cell::new(0));
    let c = count.clone();
    kite.on(
        "tokenExpired".into(),
        js_fn(move |_| {
            c.set(c.get() + 1);
            if let Some(kite) = weak.upgrade() {
                kite.set_token(fresh.clone());
            }
            JsValue::UNDEFINED
        }),
    );
    assert_eq!(square(&kite, 8.0).await, 64.0);
    assert_eq!(count.get(), 1);
    kite.disconnect(None);
}
