//! SockJS websocket and raw websocket clients.
//!
//! A dialed websocket runs two tasks: a reader that turns incoming frames into messages for the
//! runtime (waiting while the runtime's queue is full) and a writer that drains the session's
//! outgoing queue, batching whatever is queued into one frame. Either ending ends the other,
//! drops the incoming channel and so ends the session.

use std::sync::Arc;

use futures_util::stream::{SplitSink, SplitStream};
use futures_util::{SinkExt, StreamExt};
use kite_core::sockjs::{self, Frame};
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::{CloseFrame, WebSocketConfig};
use tokio_tungstenite::tungstenite::{self, Message};
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

use super::url::{origin_of, parse_base_url, raw_websocket_url, sockjs_ids, websocket_url};
use super::{DialError, DialOptions, Step, decode_frame, frame_limit, valid_headers};
use crate::session::{self, Outgoing, Session, SessionInfo, TransportKind};

type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// Dials the SockJS websocket of the kite at `base` (`<base>/<server>/<session>/websocket`, see
/// [`super::sockjs_websocket_url`]) and waits for its `o` frame, all within
/// [`DialOptions::handshake_timeout`].
pub async fn dial_websocket(base: &str, opts: &DialOptions) -> Result<Session, DialError> {
    let deadline = Instant::now() + opts.handshake_timeout;
    let base_url = parse_base_url(base)?;
    let (server, id) = sockjs_ids();
    let url = websocket_url(&base_url, &server, &id);
    let limit = frame_limit(opts.max_message_size);
    let mut ws = connect(&url, &origin_of(&base_url), limit, opts, deadline).await?;
    match tokio::time::timeout_at(deadline, first_frame(&mut ws)).await {
        Err(_) => return Err(DialError::Timeout),
        Ok(Err(e)) => return Err(e),
        Ok(Ok(Frame::Open)) => {}
        Ok(Ok(Frame::Close { code, reason })) => {
            return Err(DialError::Protocol(format!(
                "closed before opening: {code} {reason}"
            )));
        }
        Ok(Ok(_)) => {
            return Err(DialError::Protocol("the first frame is not `o`".into()));
        }
    }
    Ok(spawn(
        ws,
        id,
        TransportKind::WebSocket,
        opts.max_message_size,
    ))
}

/// Dials a plain websocket at `url` verbatim (a Kite.js server, or a kite's `/kite/websocket`):
/// one text message per message, no SockJS framing. `http`/`https` are spelled `ws`/`wss`.
pub async fn dial_raw_websocket(url: &str, opts: &DialOptions) -> Result<Session, DialError> {
    let deadline = Instant::now() + opts.handshake_timeout;
    let ws_url = raw_websocket_url(url)?;
    let origin = origin_of(&parse_base_url(url.trim())?);
    let ws = connect(&ws_url, &origin, opts.max_message_size, opts, deadline).await?;
    let (_, id) = sockjs_ids();
    Ok(spawn(
        ws,
        id,
        TransportKind::RawWebSocket,
        opts.max_message_size,
    ))
}

/// Connects and upgrades, with `Origin`, the extra headers and a read limit of `limit` bytes.
async fn connect(
    url: &str,
    origin: &str,
    limit: usize,
    opts: &DialOptions,
    deadline: Instant,
) -> Result<Ws, DialError> {
    let mut request = url
        .into_client_request()
        .map_err(|e| DialError::InvalidUrl(format!("{url}: {e}")))?;
    let headers = request.headers_mut();
    if let Ok(origin) = tungstenite::http::HeaderValue::from_str(origin) {
        headers.insert(tungstenite::http::header::ORIGIN, origin);
    }
    for (name, value) in valid_headers(&opts.headers) {
        headers.insert(name, value);
    }
    let connector = if url.starts_with("wss:") {
        let config = crate::tls::client_config(&opts.root_certificates)
            .map_err(|e| DialError::InvalidUrl(format!("TLS roots: {e}")))?;
        Some(tokio_tungstenite::Connector::Rustls(Arc::new(config)))
    } else {
        None
    };
    let config = WebSocketConfig::default()
        .max_message_size(Some(limit))
        .max_frame_size(Some(limit));
    let connect =
        tokio_tungstenite::connect_async_tls_with_config(request, Some(config), false, connector);
    match tokio::time::timeout_at(deadline, connect).await {
        Err(_) => Err(DialError::Timeout),
        Ok(Ok((ws, _))) => Ok(ws),
        Ok(Err(e)) => Err(handshake_error(e)),
    }
}

/// Classifies a failed connect: only a refused upgrade is a [`DialError::Handshake`].
fn handshake_error(e: tungstenite::Error) -> DialError {
    match e {
        tungstenite::Error::Http(resp) => DialError::Handshake(format!("HTTP {}", resp.status())),
        tungstenite::Error::Protocol(e) => DialError::Handshake(e.to_string()),
        tungstenite::Error::HttpFormat(e) => DialError::Handshake(e.to_string()),
        tungstenite::Error::Url(e) => DialError::InvalidUrl(e.to_string()),
        other => DialError::Io(other.to_string()),
    }
}

/// Reads the first SockJS frame, skipping pings.
async fn first_frame(ws: &mut Ws) -> Result<Frame, DialError> {
    loop {
        match ws.next().await {
            Some(Ok(Message::Text(text))) => {
                return Frame::decode(&text)
                    .map_err(|e| DialError::Protocol(format!("first frame: {e}")));
            }
            Some(Ok(Message::Ping(_) | Message::Pong(_) | Message::Frame(_))) => {}
            Some(Ok(Message::Binary(_))) => {
                return Err(DialError::Protocol("binary message instead of `o`".into()));
            }
            Some(Ok(Message::Close(_))) | None => {
                return Err(DialError::Io(
                    "connection closed before the `o` frame".into(),
                ));
            }
            Some(Err(e)) => return Err(DialError::Io(e.to_string())),
        }
    }
}

/// Starts the reader and writer tasks of an open websocket and returns its session.
fn spawn(ws: Ws, id: String, transport: TransportKind, max_message_size: usize) -> Session {
    let remote_addr = match ws.get_ref() {
        MaybeTlsStream::Plain(s) => s.peer_addr().ok(),
        MaybeTlsStream::Rustls(s) => s.get_ref().0.peer_addr().ok(),
        _ => None,
    };
    let info = SessionInfo {
        transport,
        remote_addr,
        id,
    };
    let framed = transport == TransportKind::WebSocket;
    let (session, in_tx, out_rx) = session::channel(info);
    let (sink, stream) = ws.split();
    let done = CancellationToken::new();
    tokio::spawn(read_loop(
        stream,
        in_tx,
        framed,
        max_message_size,
        done.clone(),
    ));
    tokio::spawn(write_loop(sink, out_rx, framed, done));
    session
}

/// Reads frames until the server closes, a frame is broken or too big, the runtime drops the
/// session, or the writer ends; then drops `in_tx`, which ends the session.
async fn read_loop(
    mut stream: SplitStream<Ws>,
    in_tx: mpsc::Sender<String>,
    framed: bool,
    max: usize,
    done: CancellationToken,
) {
    loop {
        let next = tokio::select! {
            () = done.cancelled() => break,
            next = stream.next() => next,
        };
        let msgs = match next {
            Some(Ok(Message::Text(text))) if framed => match decode_frame(&text, max) {
                Step::Deliver(msgs) => msgs,
                Step::Skip => continue,
                Step::End => break,
            },
            Some(Ok(Message::Text(text))) => {
                if text.len() > max {
                    warn!(
                        size = text.len(),
                        limit = max,
                        "message over the size limit, closing"
                    );
                    break;
                }
                vec![text.to_string()]
            }
            Some(Ok(Message::Binary(_))) if framed => {
                warn!("binary message on a SockJS websocket, closing");
                break;
            }
            Some(Ok(Message::Binary(_))) => {
                debug!("ignoring a binary message");
                continue;
            }
            Some(Ok(Message::Ping(_) | Message::Pong(_) | Message::Frame(_))) => continue,
            Some(Ok(Message::Close(frame))) => {
                debug!(?frame, "server closed the websocket");
                break;
            }
            None => break,
            Some(Err(e)) => {
                debug!(error = %e, "websocket read failed");
                break;
            }
        };
        let delivered = tokio::select! {
            () = done.cancelled() => false,
            ok = session::deliver(&in_tx, msgs) => ok,
        };
        if !delivered {
            break;
        }
    }
    done.cancel();
}

/// Writes queued messages (batched into one SockJS client frame when `framed`) until a close
/// request, the runtime dropping the session, a write error or the reader ending; then sends a
/// close frame.
async fn write_loop(
    mut sink: SplitSink<Ws, Message>,
    mut out_rx: mpsc::UnboundedReceiver<Outgoing>,
    framed: bool,
    done: CancellationToken,
) {
    let close = loop {
        let first = tokio::select! {
            () = done.cancelled() => break None,
            out = out_rx.recv() => out,
        };
        let (texts, close) = match first {
            Some(Outgoing::Message(first)) if framed => {
                let (batch, close) = session::drain_batch(first, &mut out_rx);
                (
                    vec![sockjs::encode_client_frame(
                        batch.iter().map(String::as_str),
                    )],
                    close,
                )
            }
            Some(Outgoing::Message(first)) => {
                let (batch, close) = session::drain_batch(first, &mut out_rx);
                (batch, close)
            }
            Some(Outgoing::Close(code, reason)) => break Some((code, reason)),
            None => break Some((1000, String::new())),
        };
        let written = tokio::select! {
            () = done.cancelled() => false,
            ok = write_all(&mut sink, texts) => ok,
        };
        if !written {
            break None;
        }
        if close.is_some() {
            break close;
        }
    };
    done.cancel();
    if let Some((code, reason)) = close {
        let frame = Message::Close(Some(close_frame(code, &reason)));
        let grace = std::time::Duration::from_secs(5);
        let _ = tokio::time::timeout(grace, sink.send(frame)).await;
    }
}

/// Sends each text and flushes once; `false` on a write error.
async fn write_all(sink: &mut SplitSink<Ws, Message>, texts: Vec<String>) -> bool {
    for text in texts {
        if let Err(e) = sink.feed(Message::text(text)).await {
            debug!(error = %e, "websocket write failed");
            return false;
        }
    }
    sink.flush().await.is_ok()
}

/// A websocket close frame for a SockJS close request: the code if websocket allows sending it
/// (1000–1003, 1007–1011, 3000–4999), else 1000; the reason cut to the 123 bytes a frame holds.
pub(super) fn close_frame(code: u16, reason: &str) -> CloseFrame {
    let code = match code {
        1000..=1003 | 1007..=1011 | 3000..=4999 => code,
        _ => 1000,
    };
    let mut end = reason.len().min(123);
    while !reason.is_char_boundary(end) {
        end -= 1;
    }
    CloseFrame {
        code: CloseCode::from(code),
        reason: reason[..end].to_owned().into(),
    }
}
