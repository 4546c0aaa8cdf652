//! The options a `Kite` (and a `Kontrol`) is created with, read from a JavaScript object.

use std::time::Duration;

use js_sys::{Array, Function, Reflect};
use kite_core::session::ReconnectPolicy;
use kite_core::{Auth, Kite as Identity};
use wasm_bindgen::{JsCast, JsValue};

use crate::extras::Log;
use crate::transport::TransportKind;

/// Everything a `Kite` is configured with.
#[derive(Debug, Clone)]
pub(crate) struct Options {
    pub url: String,
    pub identity: Identity,
    pub auth: Option<Auth>,
    pub auto_connect: bool,
    pub auto_reconnect: bool,
    /// Kite.js's `backoff` option over the policy both drivers default to, Go's
    /// ([`ReconnectPolicy::go`]: 500 ms, ×1.5, ±50 %, at most 60 s, forever); Kite.js's own
    /// defaults (700 ms, ×1.4, at most 15 s, 50 attempts) are [`ReconnectPolicy::kite_js`].
    pub backoff: ReconnectPolicy,
    pub transports: Vec<TransportKind>,
    /// Default per-call timeout (0: none).
    pub timeout_ms: u32,
    /// How long one transport may take to open.
    pub connect_timeout_ms: u32,
    /// A SockJS session silent this long is considered dead (0: never).
    pub heartbeat_timeout_ms: u32,
    /// `tokenExpired` fires this long before the token's `exp`.
    pub renew_before_ms: f64,
    /// How long calls answered `token is expired` wait for a new token before failing.
    pub token_wait_ms: u32,
    /// The methods the page serves (`api` option), as given.
    pub api: JsValue,
    /// Checks credentials for methods that require authentication.
    pub authenticate: Option<Function>,
    /// A WebSocket the caller opened (Kite.js's `connection` option): used instead of dialing
    /// `url`, once.
    pub connection: Option<JsValue>,
    /// Where messages go (`logLevel`, `logger`: Kite.js's options).
    pub log: Log,
}

impl Options {
    /// Reads `new Kite(url | options)`'s argument.
    pub(crate) fn from_js(v: &JsValue) -> Result<Options, JsValue> {
        let obj = if v.is_string() {
            let o = js_sys::Object::new();
            let _ = Reflect::set(&o, &"url".into(), v);
            o.into()
        } else if v.is_object() {
            v.clone()
        } else {
            return Err(type_error("new Kite() needs a URL or an options object"));
        };
        let connection = get(&obj, "connection").filter(JsValue::is_object);
        let url = match (&connection, string(&obj, "url")) {
            (_, Some(url)) => url,
            // A kite over a connection the caller opened: its URL is the socket's.
            (Some(ws), None) => string(ws, "url").unwrap_or_else(|| "ws://connection".into()),
            (None, None) => return Err(type_error("a url (or a connection) is required")),
        };
        let url = match string(&obj, "prefix") {
            Some(prefix) => format!("{}{prefix}", url.trim_end_matches('/')),
            None => url,
        };
        if !(url.starts_with("http://")
            || url.starts_with("https://")
            || url.starts_with("ws://")
            || url.starts_with("wss://"))
        {
            // Quoted by JSON.stringify: Rust's `{:?}` would link core's Debug of strings (and its
            // Unicode tables) for this one message.
            let quoted = js_sys::JSON::stringify(&JsValue::from_str(&url))
                .map_or_else(|_| url.clone(), String::from);
            return Err(type_error(&format!(
                "invalid url {quoted}: use http(s):// for a SockJS kite or ws(s):// for a raw websocket"
            )));
        }
        let raw = url.starts_with("ws://") || url.starts_with("wss://");
        let transports = match get(&obj, "transports") {
            _ if connection.is_some() => vec![TransportKind::RawWebSocket],
            None => {
                if raw {
                    vec![TransportKind::RawWebSocket]
                } else {
                    TransportKind::sockjs_default()
                }
            }
            Some(list) => {
                let list: Vec<JsValue> = if Array::is_array(&list) {
                    list.unchecked_into::<Array>().iter().collect()
                } else {
                    vec![list]
                };
                let mut kinds = Vec::new();
                for name in list {
                    let name = name.as_string().unwrap_or_default();
                    kinds.push(TransportKind::from_name(&name).ok_or_else(|| {
                        type_error(&format!(
                            "unknown transport \"{name}\": use websocket, xhr-streaming, xhr-polling or raw-websocket"
                        ))
                    })?);
                }
                if kinds.is_empty() {
                    return Err(type_error("transports is empty"));
                }
                kinds
            }
        };
        let auth = match get(&obj, "auth") {
            None => None,
            Some(a) => Some(Auth::new(
                string(&a, "type").ok_or_else(|| type_error("auth needs a type"))?,
                string(&a, "key").unwrap_or_default(),
            )),
        };
        let mut backoff = ReconnectPolicy::go();
        if let Some(b) = get(&obj, "backoff") {
            // `as` saturates, and reads NaN and negatives as 0.
            let millis = |x: f64| Duration::from_millis(x as u64);
            if let Some(x) = number(&b, "initialDelayMs") {
                backoff.initial_delay = millis(x);
            }
            if let Some(x) = number(&b, "multiplyFactor") {
                backoff.multiplier = x;
            }
            if let Some(x) = number(&b, "maxDelayMs") {
                backoff.max_delay = millis(x);
            }
            if let Some(x) = number(&b, "maxReconnectAttempts") {
                // `Infinity`: forever.
                backoff.max_attempts = (x != f64::INFINITY).then(|| x.max(0.0) as u32);
            }
        }
        let field = |key: &str, default: &str| string(&obj, key).unwrap_or_else(|| default.into());
        let identity = Identity {
            name: field("name", "browser-kite"),
            username: field("username", "anonymous"),
            id: field("id", &uuid_v4()),
            environment: field("environment", "browser-environment"),
            region: field("region", "browser-region"),
            version: field("version", "1.0.0"),
            hostname: field("hostname", "browser-hostname"),
        };
        let ms = |key: &str, default: u32| number(&obj, key).map_or(default, |x| x.max(0.0) as u32);
        let log = Log::from_options(
            &identity.name,
            &get(&obj, "logLevel").unwrap_or(JsValue::UNDEFINED),
            &get(&obj, "logger").unwrap_or(JsValue::UNDEFINED),
        );
        Ok(Options {
            url,
            identity,
            auth,
            auto_connect: boolean(&obj, "autoConnect").unwrap_or(true),
            // A given connection cannot be dialed again.
            auto_reconnect: connection.is_none() && boolean(&obj, "autoReconnect").unwrap_or(true),
            backoff,
            transports,
            timeout_ms: ms("timeout", 0),
            connect_timeout_ms: ms("connectTimeout", 10_000),
            heartbeat_timeout_ms: ms("heartbeatTimeout", 45_000),
            renew_before_ms: number(&obj, "renewBefore").unwrap_or(30_000.0),
            token_wait_ms: ms("tokenWait", 15_000),
            api: get(&obj, "api").unwrap_or(JsValue::UNDEFINED),
            connection,
            log,
            authenticate: get(&obj, "authenticate").and_then(|f| f.dyn_into::<Function>().ok()),
        })
    }
}

/// `obj[key]` unless undefined or null.
pub(crate) fn get(obj: &JsValue, key: &str) -> Option<JsValue> {
    Reflect::get(obj, &JsValue::from_str(key))
        .ok()
        .filter(|v| !v.is_undefined() && !v.is_null())
}

pub(crate) fn string(obj: &JsValue, key: &str) -> Option<String> {
    get(obj, key).and_then(|v| v.as_string())
}

fn number(obj: &JsValue, key: &str) -> Option<f64> {
    get(obj, key).and_then(|v| v.as_f64())
}

fn boolean(obj: &JsValue, key: &str) -> Option<bool> {
    get(obj, key).and_then(|v| v.as_bool())
}

pub(crate) fn type_error(message: &str) -> JsValue {
    js_sys::TypeError::new(message).into()
}

/// A random UUIDv4 (from `Math.random`, which is all an id needs).
fn uuid_v4() -> String {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut b = [0u8; 16];
    for x in &mut b {
        *x = (js_sys::Math::random() * 256.0) as u8;
    }
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    // 8-4-4-4-12 hex digits, written by hand: `{:02x}` and slicing the text would link core's
    // hex formatting and the panics of string slicing.
    let mut id = String::with_capacity(36);
    for (i, x) in b.iter().enumerate() {
        if matches!(i, 4 | 6 | 8 | 10) {
            id.push('-');
        }
        id.push(char::from(HEX[usize::from(x >> 4)]));
        id.push(char::from(HEX[usize::from(x & 0x0f)]));
    }
    id
}
