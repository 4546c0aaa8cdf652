//! Transports: SockJS over the WebSocket API, SockJS xhr-streaming and xhr-polling over
//! `fetch`, and a raw websocket for Kite.js-style servers. Each delivers the dnode messages of
//! one session to a handler of `Event`s and sends the ones it is given, in order.

mod frame;
mod websocket;
mod xhr;

use std::rc::Rc;

use futures_util::future::{Either, select};
use gloo_timers::future::TimeoutFuture;
use kite_core::KiteError;
use wasm_bindgen::JsCast;
use wasm_bindgen_futures::JsFuture;
use web_sys::{RequestInit, Response};

use crate::error;

/// A transport by its SockJS name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TransportKind {
    /// SockJS over a WebSocket (`<url>/<server>/<session>/websocket`).
    WebSocket,
    /// SockJS `xhr_streaming` (a long `fetch` response read as it arrives) with `xhr_send`.
    XhrStreaming,
    /// SockJS `xhr` (one `fetch` per batch of messages) with `xhr_send`.
    XhrPolling,
    /// A plain WebSocket at the URL as given, one dnode message per frame (Kite.js servers).
    RawWebSocket,
}

impl TransportKind {
    /// SockJS's name of the transport (`raw-websocket` for the plain one).
    pub fn name(self) -> &'static str {
        match self {
            TransportKind::WebSocket => "websocket",
            TransportKind::XhrStreaming => "xhr-streaming",
            TransportKind::XhrPolling => "xhr-polling",
            TransportKind::RawWebSocket => "raw-websocket",
        }
    }

    /// The transport named `name`, if there is one.
    pub fn from_name(name: &str) -> Option<TransportKind> {
        Some(match name {
            "websocket" => TransportKind::WebSocket,
            "xhr-streaming" => TransportKind::XhrStreaming,
            "xhr-polling" => TransportKind::XhrPolling,
            "raw-websocket" => TransportKind::RawWebSocket,
            _ => return None,
        })
    }

    /// The SockJS order of preference: websocket, then xhr-streaming, then xhr-polling.
    pub fn sockjs_default() -> Vec<TransportKind> {
        vec![
            TransportKind::WebSocket,
            TransportKind::XhrStreaming,
            TransportKind::XhrPolling,
        ]
    }
}

/// What a session tells its owner.
#[derive(Debug)]
pub(crate) enum Event {
    /// Dnode messages (JavaScript strings), in order.
    Messages(Vec<wasm_bindgen::JsValue>),
    /// A heartbeat frame: the server is alive.
    Heartbeat,
    /// A frame that could not be read (skipped; the session goes on).
    Broken(String),
    /// The session ended (a close frame, the socket closing, a failed request). Sent once.
    Closed { code: u16, reason: String },
}

/// Receives a session's events.
pub(crate) type Handler = Rc<dyn Fn(Event)>;

/// An open session.
pub(crate) enum Transport {
    WebSocket(websocket::Socket),
    Xhr(xhr::Session),
    /// A session a server accepted: its driver moves the bytes.
    #[cfg(feature = "server")]
    Accepted(crate::server::Link),
}

impl Transport {
    /// Which transport this is.
    pub(crate) fn kind(&self) -> TransportKind {
        match self {
            Transport::WebSocket(s) => s.kind(),
            Transport::Xhr(s) => s.kind(),
            #[cfg(feature = "server")]
            Transport::Accepted(s) => s.kind(),
        }
    }

    /// Queues messages (JavaScript strings) for the peer.
    pub(crate) fn send(&self, msgs: Vec<wasm_bindgen::JsValue>) {
        match self {
            Transport::WebSocket(s) => s.send(msgs),
            Transport::Xhr(s) => s.send(msgs),
            #[cfg(feature = "server")]
            Transport::Accepted(s) => s.send(msgs),
        }
    }

    /// Ends the session. No event follows.
    pub(crate) fn close(&self) {
        match self {
            Transport::WebSocket(s) => s.close(),
            Transport::Xhr(s) => s.close(),
            #[cfg(feature = "server")]
            Transport::Accepted(s) => s.close(),
        }
    }
}

/// What [`establish`] tried, for the error it returns when nothing worked.
fn describe(failures: &[(TransportKind, KiteError)]) -> String {
    let mut text = String::new();
    for (kind, e) in failures {
        if !text.is_empty() {
            text.push_str("; ");
        }
        text.push_str(kind.name());
        text.push_str(": ");
        text.push_str(&e.message);
    }
    text
}

/// Opens a session with the kite at `url` with the first of `kinds` that works. SockJS kinds
/// ask `<url>/info` first and skip the websocket when the server says it has none; each attempt
/// may take `timeout_ms`. Returns the session and, on the way, reports every failure.
pub(crate) async fn establish(
    url: &str,
    kinds: &[TransportKind],
    handler: Handler,
    timeout_ms: u32,
) -> Result<Transport, KiteError> {
    let url = url.trim_end_matches('/');
    let mut failures = Vec::new();
    let mut info: Option<Result<Info, KiteError>> = None;
    for &kind in kinds {
        if kind != TransportKind::RawWebSocket {
            let info = match &info {
                Some(i) => i.clone(),
                None => {
                    let i = with_timeout(fetch_info(url), timeout_ms, "info").await;
                    info = Some(i.clone());
                    i
                }
            };
            match info {
                Err(e) => {
                    failures.push((kind, e));
                    continue;
                }
                Ok(Info { websocket: false }) if kind == TransportKind::WebSocket => {
                    failures.push((
                        kind,
                        KiteError::generic("the server has websockets disabled"),
                    ));
                    continue;
                }
                Ok(_) => {}
            }
        }
        let attempt = async {
            match kind {
                TransportKind::WebSocket => {
                    let ws_url = format!("{}/websocket", session_url(&websocket_url(url)));
                    websocket::Socket::open(&ws_url, kind, handler.clone())
                        .await
                        .map(Transport::WebSocket)
                }
                TransportKind::RawWebSocket => {
                    websocket::Socket::open(&websocket_url(url), kind, handler.clone())
                        .await
                        .map(Transport::WebSocket)
                }
                TransportKind::XhrStreaming | TransportKind::XhrPolling => {
                    xhr::Session::open(&session_url(url), kind, handler.clone())
                        .await
                        .map(Transport::Xhr)
                }
            }
        };
        match with_timeout(attempt, timeout_ms, kind.name()).await {
            Ok(t) => return Ok(t),
            Err(e) => failures.push((kind, e)),
        }
    }
    Err(KiteError::generic(format!(
        "cannot connect to {url}: {}",
        describe(&failures)
    )))
}

/// A session over `connection`, a WebSocket the caller opened (Kite.js's `connection`
/// option): one dnode message per frame, as a raw websocket.
pub(crate) async fn adopt(
    connection: wasm_bindgen::JsValue,
    handler: Handler,
    timeout_ms: u32,
) -> Result<Transport, KiteError> {
    use wasm_bindgen::JsCast;
    let ws: web_sys::WebSocket = connection.unchecked_into();
    let attempt = websocket::Socket::adopt(ws, TransportKind::RawWebSocket, handler);
    with_timeout(attempt, timeout_ms, "connection")
        .await
        .map(Transport::WebSocket)
}

/// Runs `f`, failing with a timeout error after `ms` (0: no limit).
pub(crate) async fn with_timeout<T>(
    f: impl Future<Output = Result<T, KiteError>>,
    ms: u32,
    what: &str,
) -> Result<T, KiteError> {
    if ms == 0 {
        return f.await;
    }
    let f = std::pin::pin!(f);
    match select(f, TimeoutFuture::new(ms)).await {
        Either::Left((r, _)) => r,
        Either::Right(_) => Err(KiteError::new(
            kite_core::ErrorKind::Timeout,
            format!("{what}: no answer within {ms} ms"),
        )),
    }
}

/// What `/info` says.
#[derive(Debug, Clone)]
struct Info {
    websocket: bool,
}

#[wasm_bindgen::prelude::wasm_bindgen]
extern "C" {
    /// The global `fetch` (browsers, workers, Node 18+).
    #[wasm_bindgen(js_name = fetch)]
    fn fetch_with_init(url: &str, init: &RequestInit) -> js_sys::Promise;
}

/// A `fetch` failed or its body could not be read: what it was, and the engine's text of the
/// error (`TypeError: fetch failed`).
fn fetch_failure(url: &str, e: &wasm_bindgen::JsValue) -> KiteError {
    let text = match e.dyn_ref::<js_sys::Error>() {
        Some(e) => String::from(e.to_string()),
        None => e.as_string().unwrap_or_else(|| "fetch failed".to_owned()),
    };
    KiteError::generic(format!("{url}: {text}"))
}

/// `fetch(url, {method, body, signal})`; an error for a failed request or a status other than
/// 2xx. (Bound directly: gloo-net's request builder, its `http` crate and its error types were
/// a few kilobytes of the module for these two calls.)
pub(crate) async fn fetch_ok(
    url: &str,
    method: &str,
    body: Option<&wasm_bindgen::JsValue>,
    signal: Option<&web_sys::AbortSignal>,
) -> Result<Response, KiteError> {
    let init = RequestInit::new();
    init.set_method(method);
    if let Some(body) = body {
        init.set_body(body);
    }
    init.set_signal(signal);
    let response: Response = JsFuture::from(fetch_with_init(url, &init))
        .await
        .map_err(|e| fetch_failure(url, &e))?
        .unchecked_into();
    if !response.ok() {
        return Err(KiteError::generic(format!(
            "{url}: HTTP {}",
            response.status()
        )));
    }
    Ok(response)
}

/// The body of `response` (from `url`) as text.
pub(crate) async fn text(response: &Response, url: &str) -> Result<String, KiteError> {
    let text = response.text().map_err(|e| fetch_failure(url, &e))?;
    let text = JsFuture::from(text)
        .await
        .map_err(|e| fetch_failure(url, &e))?;
    Ok(text.as_string().unwrap_or_default())
}

async fn fetch_info(url: &str) -> Result<Info, KiteError> {
    let info_url = format!("{url}/info");
    let response = fetch_ok(&info_url, "GET", None, None).await?;
    let text = text(&response, &info_url).await?;
    let value = js_sys::JSON::parse(&text)
        .ok()
        .filter(wasm_bindgen::JsValue::is_object)
        .ok_or_else(|| KiteError::generic(format!("{url}/info is not a JSON object")))?;
    Ok(Info {
        websocket: js_sys::Reflect::get(&value, &"websocket".into())
            .ok()
            .and_then(|w| w.as_bool())
            .unwrap_or(true),
    })
}

/// `http(s)://` → `ws(s)://`; other schemes as given.
fn websocket_url(url: &str) -> String {
    if let Some(rest) = url.strip_prefix("https://") {
        format!("wss://{rest}")
    } else if let Some(rest) = url.strip_prefix("http://") {
        format!("ws://{rest}")
    } else {
        url.to_owned()
    }
}

/// `<url>/<server>/<session>` with a random three-digit server and eight-character session id.
fn session_url(url: &str) -> String {
    const ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyz012345";
    let server = (js_sys::Math::random() * 1000.0) as u32 % 1000;
    let session: String = (0..8)
        .map(|_| ALPHABET[(js_sys::Math::random() * 32.0) as usize % 32] as char)
        .collect();
    format!("{url}/{server:03}/{session}")
}

/// A failed JavaScript call as a kite error.
pub(crate) fn failure(context: &str, e: &wasm_bindgen::JsValue) -> KiteError {
    error::from_js_failure(context, e)
}
