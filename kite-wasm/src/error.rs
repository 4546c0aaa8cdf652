//! Kite errors as JavaScript values: every rejected promise carries a `KiteError` (an `Error`
//! whose `name` is `KiteError`) with the protocol's `type`, `code` and `id` fields beside
//! `message`.

use js_sys::Reflect;
use kite_core::{ErrorKind, KiteError};
use wasm_bindgen::{JsCast, JsValue};

/// A `KiteError` (kite-wasm/js/kite-extras.js, an `Error`) for `e`: `message`, `type`, `code`
/// and `id`.
pub(crate) fn to_js(e: &KiteError) -> JsValue {
    crate::extras::new_kite_error(&e.message, e.kind.as_str(), &e.code, &e.id)
}

/// Reads an error thrown or passed by JavaScript code (a method of the page, a callback of
/// the user) as a kite error: `type` (default `genericError`), `message`, `code`.
pub(crate) fn from_js(v: &JsValue) -> KiteError {
    if let Some(s) = v.as_string() {
        return KiteError::generic(s);
    }
    if !v.is_object() {
        return KiteError::generic(
            js_sys::JSON::stringify(v).map_or_else(|_| "unknown error".to_owned(), String::from),
        );
    }
    let text = |key: &str| {
        Reflect::get(v, &JsValue::from_str(key))
            .ok()
            .filter(|x| !x.is_undefined() && !x.is_null())
            .map(|x| x.as_string().unwrap_or_else(|| display(&x)))
    };
    let kind = text("type")
        .map(|t| ErrorKind::from_name(&t))
        .unwrap_or(ErrorKind::Generic);
    let message = text("message").unwrap_or_else(|| display(v));
    let mut e = KiteError::new(kind, message);
    if let Some(code) = text("code") {
        e.code = code;
    }
    e
}

/// A `genericError` carrying what JavaScript threw at us (a failed `fetch`, a closed socket).
pub(crate) fn from_js_failure(context: &str, v: &JsValue) -> KiteError {
    let detail = v
        .dyn_ref::<js_sys::Error>()
        .map(|e| String::from(e.message()))
        .or_else(|| v.as_string())
        .unwrap_or_else(|| display(v));
    KiteError::generic(format!("{context}: {detail}"))
}

fn display(v: &JsValue) -> String {
    js_sys::JSON::stringify(v)
        .ok()
        .map(String::from)
        .unwrap_or_else(|| "a value JSON cannot show".to_owned())
}

pub(crate) fn set(target: &JsValue, key: &str, value: &JsValue) {
    // Setting a property on a plain object we created cannot fail.
    let _ = Reflect::set(target, &JsValue::from_str(key), value);
}
