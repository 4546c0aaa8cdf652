//! Kontrol: finding kites (`fetchKites`, `fetchKite`), calling them with the tokens Kontrol
//! gives, `getToken`, and watching for new kites (`watchKites`).
#![cfg(target_arch = "wasm32")]

#[allow(dead_code)]
mod common;

use common::*;
use futures_util::StreamExt;
use js_sys::Array;
use kite_wasm::Kontrol;
use serde_json::json;
use wasm_bindgen::prelude::*;
use wasm_bindgen_futures::JsFuture;
use wasm_bindgen_test::*;

wasm_bindgen_test_configure!(run_in_browser);

async fn kontrol() -> Kontrol {
    let key = http_get(&control("/kite-key")).await;
    assert!(!key.is_empty(), "an empty kite key");
    Kontrol::new(js(json!({
        "url": fixture("kontrol"),
        "auth": { "type": "kiteKey", "key": key },
    })))
    .unwrap_or_else(|e| panic!("new Kontrol failed: {e:?}"))
}

fn query(name: &str) -> JsValue {
    js(json!({ "query": { "username": "fixture", "name": name } }))
}

async fn settle(what: &str, p: js_sys::Promise) -> Result<JsValue, JsValue> {
    within(CALL_DEADLINE_MS, what, JsFuture::from(p)).await
}

#[wasm_bindgen_test]
async fn fetch_kites_finds_discoverable_and_calls_it() {
    let kontrol = kontrol().await;
    let found = settle("fetchKites", kontrol.fetch_kites(query("discoverable")))
        .await
        .unwrap_or_else(|e| panic!("fetchKites rejected: {:?}", KiteErr::from_js(&e)));
    assert!(Array::is_array(&found), "fetchKites resolves with a list");
    let found: Array = found.unchecked_into();
    assert!(found.length() >= 1, "no discoverable kite found");
    let kite = kite_from_js(found.get(0));
    let remote = json(kite.remote());
    assert_eq!(remote["name"], json!("discoverable"), "{remote}");
    assert_eq!(remote["username"], json!("fixture"), "{remote}");
    assert!(
        kite.url().starts_with("http://127.0.0.1:"),
        "the kite's URL: {}",
        kite.url()
    );
    assert_eq!(kite.state(), 0, "kites from Kontrol are not connected");
    let token = kite.get_token().expect("a token from Kontrol");
    assert!(!token.is_empty());
    kite.connect();
    ready(&kite).await;
    assert_eq!(square(&kite, 6.0).await, 36.0);
    let who = ok(&kite, "whoami", &[]).await;
    assert_eq!(who["username"], json!("browser"), "{who}");
    kite.disconnect(None);

    // getToken for that kite.
    let again = kite_from_js(
        settle("fetchKite", kontrol.fetch_kite(query("discoverable")))
            .await
            .unwrap_or_else(|e| panic!("fetchKite rejected: {:?}", KiteErr::from_js(&e))),
    );
    let token = settle("getToken", kontrol.get_token(again.remote()))
        .await
        .unwrap_or_else(|e| panic!("getToken rejected: {:?}", KiteErr::from_js(&e)));
    let token = token.as_string().expect("getToken resolves with a string");
    assert_eq!(token.split('.').count(), 3, "a JWT: {token}");
    kontrol.disconnect();
}

#[wasm_bindgen_test]
async fn fetch_kite_for_a_missing_name_rejects() {
    let kontrol = kontrol().await;
    let missing = unique("missing");
    let err = rejected(
        settle("fetchKite", kontrol.fetch_kite(query(&missing))).await,
        "fetchKite of a missing kite",
    );
    assert!(err.message.contains(&missing), "{err:?}");
    // fetchKites finds nothing, without failing.
    let none = settle("fetchKites", kontrol.fetch_kites(query(&missing)))
        .await
        .expect("fetchKites of a missing kite");
    assert_eq!(json(&none), json!([]));
    kontrol.disconnect();
}

#[wasm_bindgen_test]
async fn kontrol_refuses_a_bad_kite_key() {
    let kontrol = Kontrol::new(js(json!({
        "url": fixture("kontrol"),
        "auth": { "type": "kiteKey", "key": "not-a-key" },
    })))
    .expect("new Kontrol");
    let err = rejected(
        settle("fetchKites", kontrol.fetch_kites(query("discoverable"))).await,
        "fetchKites with a bad key",
    );
    assert_eq!(err.kind, "authenticationError", "{err:?}");
    kontrol.disconnect();
}

#[wasm_bindgen_test]
async fn watch_kites_reports_a_new_kite() {
    let kontrol = kontrol().await;
    let name = unique("watched");
    let (tx, mut events) = futures_channel::mpsc::unbounded();
    let handler = js_fn(move |args| {
        let _ = tx.unbounded_send(args.get(0));
        JsValue::UNDEFINED
    });
    let now_found = settle("watchKites", kontrol.watch_kites(query(&name), handler))
        .await
        .unwrap_or_else(|e| panic!("watchKites rejected: {:?}", KiteErr::from_js(&e)));
    assert_eq!(json(&now_found), json!([]), "nothing registered yet");

    let spawned = http_post(&control(&format!("/kontrol/spawn?name={name}"))).await;
    let spawned: serde_json::Value = serde_json::from_str(&spawned).expect("spawn's JSON");
    let id = spawned["id"].as_str().expect("spawn's id").to_owned();

    let event = within(EVENT_DEADLINE_MS, "the REGISTER event", events.next())
        .await
        .expect("the watch handler was dropped");
    assert_eq!(
        get(&event, "action").as_string().as_deref(),
        Some("REGISTER")
    );
    let identity = json(get(&event, "kite"));
    assert_eq!(identity["name"], json!(name), "{identity}");
    assert_eq!(identity["id"], json!(id), "{identity}");
    assert_eq!(
        get(&event, "url").as_string(),
        spawned["url"].as_str().map(String::from)
    );

    let kite = kite_from_js(get(&event, "remote"));
    assert_eq!(json(kite.remote())["id"], json!(id));
    kite.connect();
    ready(&kite).await;
    assert_eq!(square(&kite, 3.0).await, 9.0);
    kite.disconnect(None);

    // Killed: DEREGISTER once Kontrol misses its heartbeats (5 to 7.5 s).
    http_post(&control(&format!("/kontrol/kill?id={id}"))).await;
    let event = within(12_000, "the DEREGISTER event", events.next())
        .await
        .expect("the watch handler was dropped");
    assert_eq!(
        get(&event, "action").as_string().as_deref(),
        Some("DEREGISTER"),
        "{:?}",
        json(&event)
    );
    assert_eq!(json(get(&event, "kite"))["id"], json!(id));
    kontrol.disconnect();
}

/// A kite from Kontrol whose token is refused as expired gets a new one from Kontrol and the
/// call is sent again.
#[wasm_bindgen_test]
async fn kontrol_renews_a_refused_token() {
    let kontrol = kontrol().await;
    let kite = kite_from_js(
        settle("fetchKite", kontrol.fetch_kite(query("discoverable")))
            .await
            .unwrap_or_else(|e| panic!("fetchKite rejected: {:?}", KiteErr::from_js(&e))),
    );
    let good = kite.get_token().expect("a token");
    // The same claims with a broken signature: the kite answers `token is expired`.
    let mut parts: Vec<String> = good.split('.').map(String::from).collect();
    assert_eq!(parts.len(), 3);
    // Change one character in the middle (the last one's spare bits must stay zero).
    let mut signature: Vec<char> = parts[2].chars().collect();
    signature[5] = if signature[5] == 'A' { 'B' } else { 'A' };
    parts[2] = signature.into_iter().collect();
    let broken = parts.join(".");
    let mut expiries = listen(&kite, "tokenExpired");
    let mut set = listen(&kite, "tokenSet");
    kite.set_token(broken.clone());
    assert_eq!(json(set.next().await), json!([broken]));
    kite.connect();
    assert_eq!(square(&kite, 12.0).await, 144.0);
    assert_eq!(expiries.drain().len(), 1, "tokenExpired once");
    let renewed = set
        .next()
        .await
        .get(0)
        .as_string()
        .expect("the renewed token");
    assert_ne!(renewed, broken);
    assert_eq!(kite.get_token(), Some(renewed));
    kite.disconnect(None);
    kontrol.disconnect();
}

/// Kites found through Kontrol use the Kontrol's transports.
#[wasm_bindgen_test]
async fn kites_from_kontrol_inherit_transports() {
    let key = http_get(&control("/kite-key")).await;
    let kontrol = Kontrol::new(js(json!({
        "url": fixture("kontrol"),
        "auth": { "type": "kiteKey", "key": key },
        "transports": ["xhr-polling"],
    })))
    .expect("new Kontrol");
    let kite = kite_from_js(
        settle("fetchKite", kontrol.fetch_kite(query("discoverable")))
            .await
            .unwrap_or_else(|e| panic!("fetchKite rejected: {:?}", KiteErr::from_js(&e))),
    );
    assert_eq!(kontrol.kite().transport().as_deref(), Some("xhr-polling"));
    kite.connect();
    ready(&kite).await;
    assert_eq!(kite.transport().as_deref(), Some("xhr-polling"));
    assert_eq!(square(&kite, 2.0).await, 4.0);
    kite.disconnect(None);
    kontrol.disconnect();
}
