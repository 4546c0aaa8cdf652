//! Small fake servers for the transport tests: a tokio-tungstenite SockJS (or raw) websocket
//! server and an axum xhr-polling server, both scripted by the messages the client sends.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use futures_util::{SinkExt, StreamExt};
use kite_core::sockjs::{self, Frame};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Notify, mpsc};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::handshake::server::{Request, Response as WsResponse};

// ---- fake websocket server ----

#[derive(Debug, Clone, Copy, PartialEq)]
pub(super) enum WsMode {
    /// SockJS framing: `o`, then echoes and scripted frames.
    Sockjs,
    /// SockJS framing, but a heartbeat where `o` should be.
    NoOpen,
    /// No framing: each text message echoed as is.
    Raw,
}

#[derive(Debug, PartialEq)]
pub(super) enum WsEvent {
    /// The upgrade request: path with query, `Origin`, `Cookie`.
    Request(String, Option<String>, Option<String>),
    /// One text message from the client, verbatim.
    Text(String),
    /// The client's close frame code.
    Closed(Option<u16>),
}

pub(super) struct WsServer {
    pub(super) base: String,
    pub(super) events: mpsc::UnboundedReceiver<WsEvent>,
}

pub(super) async fn ws_server(mode: WsMode) -> WsServer {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (tx, events) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            tokio::spawn(serve_ws(tcp, mode, tx.clone()));
        }
    });
    WsServer {
        base: format!("http://{addr}/kite"),
        events,
    }
}

/// The frames the fake SockJS server answers a client frame with: echoes batched in one
/// `a[...]`, and commands `pair`, `legacy`, `close`, `broken`, `big:N`.
fn script(msgs: Vec<String>) -> Vec<String> {
    let mut echoes = Vec::new();
    let mut frames = Vec::new();
    for m in msgs {
        match m.as_str() {
            "pair" => frames.push(sockjs::encode_messages(["x", "y"])),
            "legacy" => frames.push(Frame::Message("single".into()).encode()),
            "close" => {
                frames.push("h".into());
                frames.push(sockjs::encode_close(3000, "Go away!"));
            }
            "broken" => frames.push("a[\"unterminated".into()),
            _ => match m.strip_prefix("big:").and_then(|n| n.parse().ok()) {
                Some(n) => frames.push(sockjs::encode_messages(["x".repeat(n).as_str()])),
                None => echoes.push(m),
            },
        }
    }
    if !echoes.is_empty() {
        frames.insert(
            0,
            sockjs::encode_messages(echoes.iter().map(String::as_str)),
        );
    }
    frames
}

// The upgrade callback's error type is tungstenite's, not ours.
#[allow(clippy::result_large_err)]
async fn serve_ws(tcp: TcpStream, mode: WsMode, events: mpsc::UnboundedSender<WsEvent>) {
    let on_request = {
        let events = events.clone();
        move |req: &Request, resp: WsResponse| {
            let header = |name: &str| {
                req.headers()
                    .get(name)
                    .and_then(|v| v.to_str().ok())
                    .map(str::to_owned)
            };
            let _ = events.send(WsEvent::Request(
                req.uri().to_string(),
                header("origin"),
                header("cookie"),
            ));
            Ok(resp)
        }
    };
    let Ok(mut ws) = tokio_tungstenite::accept_hdr_async(tcp, on_request).await else {
        return;
    };
    let first = match mode {
        WsMode::Sockjs => Some("o"),
        WsMode::NoOpen => Some("h"),
        WsMode::Raw => None,
    };
    if let Some(first) = first {
        ws.send(Message::text(first)).await.unwrap();
    }
    while let Some(Ok(msg)) = ws.next().await {
        match msg {
            Message::Text(text) => {
                let _ = events.send(WsEvent::Text(text.to_string()));
                let replies = match mode {
                    WsMode::Raw => match text.strip_prefix("big:").and_then(|n| n.parse().ok()) {
                        Some(n) => vec!["x".repeat(n)],
                        None => vec![text.to_string()],
                    },
                    _ => script(sockjs::decode_client_frame(&text).unwrap()),
                };
                for reply in replies {
                    if ws.send(Message::text(reply)).await.is_err() {
                        return;
                    }
                }
            }
            Message::Close(frame) => {
                let _ = events.send(WsEvent::Closed(frame.map(|f| u16::from(f.code))));
                return;
            }
            _ => {}
        }
    }
}

// ---- fake xhr-polling server ----

#[derive(Default)]
pub(super) struct Xhr {
    pub(super) opened: bool,
    /// Messages to answer the next poll with, in one `a[...]`.
    pub(super) queue: Vec<String>,
    /// Whole frames to answer polls with, before the queue.
    pub(super) frames: VecDeque<String>,
    /// The session is gone: every request gets 404.
    pub(super) gone: bool,
    pub(super) polls: usize,
    /// This poll (1 is the opening one) never answers.
    pub(super) hang_poll: Option<usize>,
    /// Content types of the polls, and (content type, body) of each `xhr_send`.
    pub(super) poll_types: Vec<String>,
    pub(super) sends: Vec<(String, String)>,
}

pub(super) type XhrState = Arc<(Mutex<Xhr>, Notify)>;

fn content_type(headers: &HeaderMap) -> String {
    headers
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned()
}

async fn xhr_poll(State(state): State<XhrState>, headers: HeaderMap) -> Response {
    let n = {
        let mut st = state.0.lock().unwrap();
        st.polls += 1;
        st.poll_types.push(content_type(&headers));
        if st.hang_poll == Some(st.polls) {
            None
        } else {
            Some(st.polls)
        }
    };
    if n.is_none() {
        std::future::pending::<()>().await;
    }
    loop {
        let woken = state.1.notified();
        {
            let mut st = state.0.lock().unwrap();
            if st.gone {
                return StatusCode::NOT_FOUND.into_response();
            }
            let frame = if !st.opened {
                st.opened = true;
                Some("o".to_owned())
            } else if let Some(f) = st.frames.pop_front() {
                Some(f)
            } else if !st.queue.is_empty() {
                let queue = std::mem::take(&mut st.queue);
                Some(sockjs::encode_messages(queue.iter().map(String::as_str)))
            } else {
                None
            };
            if let Some(frame) = frame {
                return (StatusCode::OK, format!("{frame}\n")).into_response();
            }
        }
        woken.await;
    }
}

async fn xhr_send(State(state): State<XhrState>, headers: HeaderMap, body: String) -> StatusCode {
    let mut st = state.0.lock().unwrap();
    st.sends.push((content_type(&headers), body.clone()));
    if st.gone {
        return StatusCode::NOT_FOUND;
    }
    for m in sockjs::decode_client_frame(&body).unwrap() {
        match m.as_str() {
            "gone" => st.gone = true,
            "close" => st.frames.push_back(sockjs::encode_close(3000, "Go away!")),
            "pair" => st.frames.push_back(sockjs::encode_messages(["x", "y"])),
            _ => st.queue.push(m),
        }
    }
    state.1.notify_waiters();
    StatusCode::NO_CONTENT
}

/// An xhr-polling server at `<base>`; its websocket endpoint answers 404.
pub(super) async fn xhr_server(hang_poll: Option<usize>) -> (String, XhrState) {
    let state: XhrState = Arc::new((
        Mutex::new(Xhr {
            hang_poll,
            ..Xhr::default()
        }),
        Notify::new(),
    ));
    let app = axum::Router::new()
        .route(
            "/kite/{server}/{session}/xhr",
            axum::routing::post(xhr_poll),
        )
        .route(
            "/kite/{server}/{session}/xhr_send",
            axum::routing::post(xhr_send),
        )
        .with_state(state.clone());
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    (format!("http://{addr}/kite"), state)
}

/// A URL on which nothing listens.
pub(super) async fn refused_url() -> String {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    drop(listener);
    format!("http://{addr}/kite")
}
