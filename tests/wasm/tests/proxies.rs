//! Kites behind proxies: `behind-proxy` (behind the reverse proxy) and `behind-tunnel` (behind
//! the tunnel proxy, listening on no port), found through Kontrol at their public URLs and called
//! with the tokens Kontrol gives, over each transport in turn.
#![cfg(target_arch = "wasm32")]

#[allow(dead_code)]
mod common;

use common::*;
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

/// The one kite Kontrol knows as `name` (of the fixtures' user), as `fetchKites` gives it.
async fn find(kontrol: &Kontrol, name: &str) -> kite_wasm::Kite {
    let query = js(json!({ "query": { "username": "fixture", "name": name } }));
    let found = within(
        CALL_DEADLINE_MS,
        "fetchKites",
        JsFuture::from(kontrol.fetch_kites(query)),
    )
    .await
    .unwrap_or_else(|e| panic!("fetchKites {name} rejected: {:?}", KiteErr::from_js(&e)));
    assert!(Array::is_array(&found), "fetchKites resolves with a list");
    let found: Array = found.unchecked_into();
    assert_eq!(found.length(), 1, "kites named {name}: {:?}", json(&found));
    kite_from_js(found.get(0))
}

/// 1 MiB of text that JSON and SockJS must escape in places, with multi-byte characters.
fn mebibyte() -> String {
    let unit = "abc\"<tag>&\\ é€🎉 0123456789\n";
    let mut text = unit.repeat((1 << 20) / unit.len() + 1);
    let mut end = 1 << 20;
    while !text.is_char_boundary(end) {
        end += 1;
    }
    text.truncate(end);
    text
}

/// Finds `name` through Kontrol, checks that its URL is the fixture's `url_key`, and calls it
/// over each transport in turn with the token Kontrol gave.
async fn found_and_called(name: &str, url_key: &str) {
    let kontrol = kontrol().await;
    let public = fixture(url_key);
    let big = mebibyte();
    for transport in TRANSPORTS {
        let found = find(&kontrol, name).await;
        assert_eq!(found.url(), public, "Kontrol has {name}'s public URL");
        let remote = json(found.remote());
        assert_eq!(remote["name"], json!(name), "{remote}");
        assert_eq!(remote["username"], json!("fixture"), "{remote}");
        assert_eq!(found.state(), 0, "kites from Kontrol are not connected");
        let token = found.get_token().expect("a token from Kontrol");
        assert_eq!(token.split('.').count(), 3, "a JWT: {token}");

        let kite = new_kite(json!({
            "url": found.url(),
            "auth": { "type": "token", "key": token },
            "transports": [transport],
        }));
        ready(&kite).await;
        assert_eq!(
            kite.transport().as_deref(),
            Some(transport),
            "{name} over {transport}"
        );
        assert_eq!(square(&kite, 4.0).await, 16.0, "{name} over {transport}");

        // Callbacks through the proxy: 1, 2, 3 in order, before the answer.
        let (f, seen) = recorder();
        assert_eq!(
            ok(&kite, "count", &[JsValue::from(3), f.into()]).await,
            json!(3),
            "{name} over {transport}"
        );
        eventually(EVENT_DEADLINE_MS, "three callbacks", || {
            seen.borrow().len() >= 3
        })
        .await;
        assert_eq!(
            *seen.borrow(),
            vec![json!([1]), json!([2]), json!([3])],
            "{name} over {transport}"
        );

        // A 1 MiB string there and back, whole.
        let echoed = ok(&kite, "echo", &[big.as_str().into()]).await;
        assert_eq!(
            echoed.as_str().map(str::len),
            Some(big.len()),
            "echo of 1 MiB from {name} over {transport}"
        );
        assert!(
            echoed.as_str() == Some(big.as_str()),
            "echo of 1 MiB from {name} over {transport}: the text differs"
        );

        // The kite authenticated the caller with Kontrol's token.
        let who = ok(&kite, "whoami", &[]).await;
        assert_eq!(who["username"], json!("browser"), "{who}");
        kite.disconnect(None);
    }
    kontrol.disconnect();
}

#[wasm_bindgen_test]
async fn a_kite_behind_the_reverse_proxy_is_found_and_called_over_each_transport() {
    found_and_called("behind-proxy", "behindProxy").await;
}

#[wasm_bindgen_test]
async fn a_kite_behind_the_tunnel_proxy_is_found_and_called_over_each_transport() {
    found_and_called("behind-tunnel", "behindTunnel").await;
}

/// Without a token the kites behind the proxies refuse calls themselves: the proxies pass the
/// caller's credentials through untouched.
#[wasm_bindgen_test]
async fn the_kites_behind_the_proxies_want_credentials() {
    for url_key in ["behindProxy", "behindTunnel"] {
        let kite = new_kite(json!({ "url": fixture(url_key) }));
        ready(&kite).await;
        let err = rejected(
            call(&kite, "square", &[JsValue::from(2)]).await,
            "square without credentials",
        );
        assert_eq!(err.kind, "authenticationError", "{url_key}: {err:?}");
        kite.disconnect(None);
    }
}
