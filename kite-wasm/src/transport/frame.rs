//! SockJS frames, split by kite-core and parsed with the engine's `JSON.parse`; messages stay
//! JavaScript strings from the frame to the dnode parser.

use js_sys::{Array, JSON};
use kite_core::sockjs::RawFrame;
use wasm_bindgen::prelude::*;

/// A server → client frame.
pub(crate) enum Read {
    /// `o`.
    Open,
    /// `h`.
    Heartbeat,
    /// `a[...]` or `m"..."`: messages, each a JavaScript string.
    Messages(Vec<JsValue>),
    /// `c[code,"reason"]`.
    Close(u16, String),
}

/// Reads one frame (a websocket message, or a line of an xhr body).
pub(crate) fn read(text: &str) -> Result<Read, String> {
    let broken = |what: &str| format!("broken SockJS frame: {what}");
    Ok(match RawFrame::split(text).map_err(|e| e.to_string())? {
        RawFrame::Open => Read::Open,
        RawFrame::Heartbeat => Read::Heartbeat,
        RawFrame::Messages(body) => {
            let list: Array = JSON::parse(body)
                .ok()
                .and_then(|v| v.dyn_into().ok())
                .ok_or_else(|| broken("expected a list of messages"))?;
            let messages: Vec<JsValue> = list.iter().collect();
            if !messages.iter().all(JsValue::is_string) {
                return Err(broken("a message is not a string"));
            }
            Read::Messages(messages)
        }
        RawFrame::Message(body) => {
            let message = JSON::parse(body)
                .ok()
                .filter(JsValue::is_string)
                .ok_or_else(|| broken("expected a string"))?;
            Read::Messages(vec![message])
        }
        RawFrame::Close(body) => {
            let pair: Array = JSON::parse(body)
                .ok()
                .and_then(|v| v.dyn_into().ok())
                .filter(|a: &Array| a.length() == 2)
                .ok_or_else(|| broken("expected [code, reason]"))?;
            let code = pair
                .get(0)
                .as_f64()
                .filter(|c| c.fract() == 0.0 && (0.0..=65535.0).contains(c))
                .ok_or_else(|| broken("expected a close code"))?;
            let reason = pair
                .get(1)
                .as_string()
                .ok_or_else(|| broken("expected a close reason"))?;
            Read::Close(code as u16, reason)
        }
    })
}

/// A client → server frame: the messages as a JSON array of strings.
pub(crate) fn client_frame(messages: &[JsValue]) -> String {
    let list: Array = messages.iter().collect();
    JSON::stringify(&list)
        .ok()
        .and_then(|s| s.as_string())
        .unwrap_or_else(|| "[]".to_owned())
}
