//! Small fake servers for the transport tests: a tokio-tungstenite SockJS (or raw) websocket
//! server and an axum xhr-polling server, both scripted by the messages the client sends, and
//! an axum xhr-streaming server whose responses the test writes chunk by chunk.

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
    /// SockJS framing: `o`, then nothing at all (a dead peer whose socket stays open).
    Mute,
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
/// `a[...]`, and commands `pair`, `legacy`, `close`, `broken`, `reopen` (a second `o`), `big:N`.
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
            "reopen" => frames.push("o".into()),
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
        WsMode::Sockjs | WsMode::Mute => Some("o"),
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
                    WsMode::Mute => continue,
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
    /// Every poll from this one on never answers (a dead peer).
    pub(super) hang_from: Option<usize>,
    /// `xhr_streaming` answers 200 and then nothing (a buffering proxy), instead of 404.
    pub(super) stall_streaming: bool,
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
        if st.hang_poll == Some(st.polls) || st.hang_from.is_some_and(|n| st.polls >= n) {
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
            "reopen" => st.frames.push_back("o".into()),
            _ => st.queue.push(m),
        }
    }
    state.1.notify_waiters();
    StatusCode::NO_CONTENT
}

/// `xhr_streaming` of the xhr-polling server: 404, or when stalling a response that never
/// sends a byte.
async fn xhr_streaming_stall(State(state): State<XhrState>) -> Response {
    if !state.0.lock().unwrap().stall_streaming {
        return StatusCode::NOT_FOUND.into_response();
    }
    let never = futures_util::stream::pending::<Result<bytes::Bytes, std::io::Error>>();
    (StatusCode::OK, axum::body::Body::from_stream(never)).into_response()
}

/// An xhr-polling server at `<base>`; its websocket endpoint answers 404, and so does its
/// `xhr_streaming` unless [`Xhr::stall_streaming`].
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
        .route(
            "/kite/{server}/{session}/xhr_streaming",
            axum::routing::post(xhr_streaming_stall),
        )
        .with_state(state.clone());
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    (format!("http://{addr}/kite"), state)
}

// ---- fake xhr-streaming server ----

/// An xhr-streaming server whose responses the test writes chunk by chunk.
pub(super) struct StreamServer {
    pub(super) base: String,
    /// One per `xhr_streaming` request that is answered 200: the chunks of its body, sent as
    /// they come; dropping it ends the response cleanly.
    pub(super) responses: mpsc::UnboundedReceiver<mpsc::UnboundedSender<Vec<u8>>>,
    /// The body of each `xhr_send`.
    pub(super) sends: mpsc::UnboundedReceiver<String>,
    /// While set, every request is answered 404 (the session is gone).
    pub(super) gone: Arc<std::sync::atomic::AtomicBool>,
}

#[derive(Clone)]
struct StreamState {
    responses: mpsc::UnboundedSender<mpsc::UnboundedSender<Vec<u8>>>,
    sends: mpsc::UnboundedSender<String>,
    gone: Arc<std::sync::atomic::AtomicBool>,
}

impl StreamState {
    fn gone(&self) -> bool {
        self.gone.load(std::sync::atomic::Ordering::SeqCst)
    }
}

async fn stream_open(State(state): State<StreamState>) -> Response {
    if state.gone() {
        return StatusCode::NOT_FOUND.into_response();
    }
    let (tx, rx) = mpsc::unbounded_channel::<Vec<u8>>();
    let _ = state.responses.send(tx);
    let body = futures_util::stream::unfold(rx, |mut rx| async move {
        let chunk = rx.recv().await?;
        Some((Ok::<_, std::io::Error>(bytes::Bytes::from(chunk)), rx))
    });
    (StatusCode::OK, axum::body::Body::from_stream(body)).into_response()
}

async fn stream_send(State(state): State<StreamState>, body: String) -> StatusCode {
    if state.gone() {
        return StatusCode::NOT_FOUND;
    }
    let _ = state.sends.send(body);
    StatusCode::NO_CONTENT
}

/// An xhr-streaming server at `<base>`; its websocket endpoint answers 404.
pub(super) async fn stream_server() -> StreamServer {
    let (responses_tx, responses) = mpsc::unbounded_channel();
    let (sends_tx, sends) = mpsc::unbounded_channel();
    let gone = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let state = StreamState {
        responses: responses_tx,
        sends: sends_tx,
        gone: gone.clone(),
    };
    let app = axum::Router::new()
        .route(
            "/kite/{server}/{session}/xhr_streaming",
            axum::routing::post(stream_open),
        )
        .route(
            "/kite/{server}/{session}/xhr_send",
            axum::routing::post(stream_send),
        )
        .with_state(state);
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    StreamServer {
        base: format!("http://{addr}/kite"),
        responses,
        sends,
        gone,
    }
}

/// A URL on which nothing listens.
pub(super) async fn refused_url() -> String {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    drop(listener);
    format!("http://{addr}/kite")
}
