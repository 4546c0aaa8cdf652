//! What the client reads from its token without verifying it: when it expires.

use wasm_bindgen::prelude::*;

#[wasm_bindgen]
extern "C" {
    /// The engine's base64 decoder (browsers and Node 16+), giving one character per byte.
    #[wasm_bindgen(catch)]
    fn atob(data: &str) -> Result<String, JsValue>;
}

/// The `exp` claim of a JWT (seconds since the epoch), if it has one.
pub(crate) fn expiry(token: &str) -> Option<f64> {
    let payload = token.split('.').nth(1)?;
    // base64url without padding → base64, as atob wants it.
    let mut b64: String = payload
        .trim_end_matches('=')
        .chars()
        .map(|c| match c {
            '-' => '+',
            '_' => '/',
            c => c,
        })
        .collect();
    while !b64.len().is_multiple_of(4) {
        b64.push('=');
    }
    // The claims are JSON; `exp` is a number, which the byte-per-character text keeps intact.
    let claims = js_sys::JSON::parse(&atob(&b64).ok()?).ok()?;
    if !claims.is_object() {
        return None;
    }
    js_sys::Reflect::get(&claims, &JsValue::from_str("exp"))
        .ok()?
        .as_f64()
}
