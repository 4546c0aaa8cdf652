//! SockJS frames, split by kite-core and parsed with the engine's `JSON.parse`: frames and the
//! messages in them stay JavaScript strings from the socket to the dnode parser, and back.

use js_sys::{Array, JSON, JsString};
use kite_core::sockjs::{FrameError, RawFrame};
use wasm_bindgen::prelude::*;

use crate::convert::parse_js;

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

/// Reads one frame (a websocket message, or a line of an xhr body), a JavaScript string.
pub(crate) fn read(frame: &JsString) -> Result<Read, String> {
    let broken = |what: &str| format!("broken SockJS frame: {what}");
    let kind = char::from_u32(frame.char_code_at(0) as u32)
        .filter(|_| frame.length() > 0)
        .ok_or_else(|| FrameError::Empty.to_string())?;
    let body = frame.slice(1, frame.length());
    Ok(
        match RawFrame::from_parts(kind, body).map_err(|e| e.to_string())? {
            RawFrame::Open => Read::Open,
            RawFrame::Heartbeat => Read::Heartbeat,
            RawFrame::Messages(body) => {
                let list: Array = parse_js(&body)
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
                let message = parse_js(&body)
                    .ok()
                    .filter(JsValue::is_string)
                    .ok_or_else(|| broken("expected a string"))?;
                Read::Messages(vec![message])
            }
            RawFrame::Close(body) => {
                let pair: Array = parse_js(&body)
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
        },
    )
}

/// Reads one line of an xhr body.
pub(crate) fn read_line(line: &str) -> Result<Read, String> {
    read(&JsString::from(line))
}

/// A client → server frame: the messages as a JSON array of strings, a JavaScript string.
pub(crate) fn client_frame(messages: &[JsValue]) -> JsValue {
    let list: Array = messages.iter().collect();
    JSON::stringify(&list).map_or_else(|_| JsValue::from_str("[]"), JsValue::from)
}
