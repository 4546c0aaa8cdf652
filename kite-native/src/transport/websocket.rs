//! SockJS websocket and raw websocket clients.
//!
//! A dialed websocket has a writer task that drains the session's outgoing queue, batching
//! whatever is queued into one frame, and a reader that the runtime polls through the session's
//! receiver, so incoming messages reach the runtime without a hop between tasks. Either ending
//! ends the other and so the session.

use std::collections::VecDeque;
#[cfg(feature = "tls")]
use std::sync::Arc;

use futures_util::stream::{SplitSink, SplitStream};
use futures_util::{SinkExt, StreamExt};
use kite_core::sockjs::Frame;
use tokio::net::TcpStream;
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::{CloseFrame, WebSocketConfig};
use tokio_tungstenite::tungstenite::{self, Message};
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};
use tokio_util::sync::{CancellationToken, DropGuard};
use tracing::{debug, warn};

use super::url::{origin_of, parse_base_url, raw_websocket_url, sockjs_ids, websocket_url};
use super::{DialError, DialOptions, Silence, Step, decode_frame, frame_limit, valid_headers};
use crate::session::{
    self, Batch, Outbox, Session, SessionInfo, SessionReceiver, Text, TransportKind,
};

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
    expect_open(&mut ws, deadline).await?;
    Ok(spawn(ws, id, TransportKind::WebSocket, opts))
}

/// Dials the SockJS websocket at exactly `url` (`ws://host/prefix/<server>/<session>/websocket`,
/// query kept; `http`/`https` are spelled `ws`/`wss`) and waits for its `o` frame, all within
/// [`DialOptions::handshake_timeout`]: what `kite.tunnel` asks a kite to dial. The session id
/// is the URL's (random when the path has none), the `Origin` header `http(s)://<host>` as Go
/// sends it.
pub async fn dial_websocket_at(url: &str, opts: &DialOptions) -> Result<Session, DialError> {
    let deadline = Instant::now() + opts.handshake_timeout;
    let ws_url = raw_websocket_url(url)?;
    let mut parsed = parse_base_url(url.trim())?;
    let segments: Vec<&str> = parsed.path().split('/').collect();
    let id = match segments.as_slice() {
        [.., session, "websocket"] if !session.is_empty() => (*session).to_owned(),
        _ => sockjs_ids().1,
    };
    let scheme = if super::url::is_secure(&parsed) {
        "https"
    } else {
        "http"
    };
    // Switching between the special schemes http/https/ws/wss always succeeds.
    let _ = parsed.set_scheme(scheme);
    let limit = frame_limit(opts.max_message_size);
    let mut ws = connect(&ws_url, &origin_of(&parsed), limit, opts, deadline).await?;
    expect_open(&mut ws, deadline).await?;
    Ok(spawn(ws, id, TransportKind::WebSocket, opts))
}

/// Waits (until `deadline`) for the server's `o` frame.
async fn expect_open(ws: &mut Ws, deadline: Instant) -> Result<(), DialError> {
    match tokio::time::timeout_at(deadline, first_frame(ws)).await {
        Err(_) => Err(DialError::Timeout),
        Ok(Err(e)) => Err(e),
        Ok(Ok(Frame::Open)) => Ok(()),
        Ok(Ok(Frame::Close { code, reason })) => Err(DialError::Protocol(format!(
            "closed before opening: {code} {reason}"
        ))),
        Ok(Ok(_)) => Err(DialError::Protocol("the first frame is not `o`".into())),
    }
}

/// Dials a plain websocket at `url` verbatim (a Kite.js server, or a kite's `/kite/websocket`):
/// one text message per message, no SockJS framing. `http`/`https` are spelled `ws`/`wss`.
pub async fn dial_raw_websocket(url: &str, opts: &DialOptions) -> Result<Session, DialError> {
    let deadline = Instant::now() + opts.handshake_timeout;
    let ws_url = raw_websocket_url(url)?;
    let origin = origin_of(&parse_base_url(url.trim())?);
    let ws = connect(&ws_url, &origin, opts.max_message_size, opts, deadline).await?;
    let (_, id) = sockjs_ids();
    Ok(spawn(ws, id, TransportKind::RawWebSocket, opts))
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
    #[cfg(feature = "tls")]
    let connector = if url.starts_with("wss:") {
        let config = crate::tls::client_config(&opts.root_certificates)
            .map_err(|e| DialError::InvalidUrl(format!("TLS roots: {e}")))?;
        Some(tokio_tungstenite::Connector::Rustls(Arc::new(config)))
    } else {
        None
    };
    #[cfg(not(feature = "tls"))]
    if url.starts_with("wss:") {
        return Err(DialError::InvalidUrl(format!(
            "{url}: wss needs kite-native's feature tls"
        )));
    }
    let config = WebSocketConfig::default()
        .max_message_size(Some(limit))
        .max_frame_size(Some(limit))
        .read_buffer_size(opts.read_buffer_size);
    // Nagle off: calls are small messages that must leave at once.
    #[cfg(feature = "tls")]
    let connect =
        tokio_tungstenite::connect_async_tls_with_config(request, Some(config), true, connector);
    #[cfg(not(feature = "tls"))]
    let connect = tokio_tungstenite::connect_async_with_config(request, Some(config), true);
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

/// Starts the writer task of an open websocket and returns its session, whose receiver reads
/// the socket when the runtime polls it.
fn spawn(ws: Ws, id: String, transport: TransportKind, opts: &DialOptions) -> Session {
    let remote_addr = match ws.get_ref() {
        MaybeTlsStream::Plain(s) => s.peer_addr().ok(),
        #[cfg(feature = "tls")]
        MaybeTlsStream::Rustls(s) => s.get_ref().0.peer_addr().ok(),
        _ => None,
    };
    let info = SessionInfo {
        transport,
        remote_addr,
        id,
    };
    let framed = transport == TransportKind::WebSocket;
    let (tx, outbox) = session::outgoing();
    let (sink, stream) = ws.split();
    let done = CancellationToken::new();
    let reader = Reader {
        stream,
        framed,
        max: opts.max_message_size,
        // Raw websockets carry no heartbeats: their silence means nothing.
        silence: Silence::new(opts.heartbeat_timeout.filter(|_| framed)),
        queue: VecDeque::new(),
        done: done.clone(),
        _ended: done.clone().drop_guard(),
    };
    tokio::spawn(write_loop(sink, outbox, framed, done));
    Session {
        rx: SessionReceiver::from_stream(futures_util::stream::unfold(
            reader,
            |mut r| async move { r.next().await.map(|m| (m, r)) },
        )),
        tx,
        info,
    }
}

/// The reading half of a session, polled by the runtime. It ends (ending the session) when
/// the server closes, a frame is broken or too big, or the writer ends; its end or drop stops
/// the writer.
struct Reader {
    stream: SplitStream<Ws>,
    framed: bool,
    max: usize,
    /// Ends the session when the server sends nothing for too long.
    silence: Silence,
    queue: VecDeque<String>,
    done: CancellationToken,
    _ended: DropGuard,
}

impl Reader {
    async fn next(&mut self) -> Option<String> {
        loop {
            if let Some(m) = self.queue.pop_front() {
                return Some(m);
            }
            let next = tokio::select! {
                biased;
                next = self.stream.next() => next,
                () = self.done.cancelled() => return None,
                () = self.silence.expired() => return None,
            };
            self.silence.heard();
            match next {
                Some(Ok(Message::Text(text))) if self.framed => {
                    match decode_frame(&text, self.max) {
                        Step::Deliver(msgs) => self.queue.extend(msgs),
                        Step::Skip => {}
                        Step::End => return None,
                    }
                }
                Some(Ok(Message::Text(text))) => {
                    if text.len() > self.max {
                        warn!(
                            size = text.len(),
                            limit = self.max,
                            "message over the size limit, closing"
                        );
                        return None;
                    }
                    return Some(text.to_string());
                }
                Some(Ok(Message::Binary(_))) if self.framed => {
                    warn!("binary message on a SockJS websocket, closing");
                    return None;
                }
                Some(Ok(Message::Binary(_))) => debug!("ignoring a binary message"),
                Some(Ok(Message::Ping(_) | Message::Pong(_) | Message::Frame(_))) => {}
                Some(Ok(Message::Close(frame))) => {
                    debug!(?frame, "server closed the websocket");
                    return None;
                }
                None => return None,
                Some(Err(e)) => {
                    debug!(error = %e, "websocket read failed");
                    return None;
                }
            }
        }
    }
}

/// Writes queued messages (batched into SockJS client frames when `framed`) until a close
/// request, the runtime dropping the session, a write error or the reader ending; then sends a
/// close frame.
async fn write_loop(
    mut sink: SplitSink<Ws, Message>,
    mut outbox: Outbox,
    framed: bool,
    done: CancellationToken,
) {
    let close = loop {
        let batch = tokio::select! {
            () = done.cancelled() => break None,
            batch = outbox.next_batch() => batch,
        };
        let Some(Batch { messages, close }) = batch else {
            break Some((1000, String::new()));
        };
        let texts = if framed && !messages.is_empty() {
            let mut frame = Vec::with_capacity(messages.iter().map(Text::len).sum::<usize>() + 8);
            frame.push(b'[');
            session::write_frame_items(&mut frame, &messages);
            frame.push(b']');
            vec![String::from_utf8(frame).unwrap_or_default()]
        } else {
            messages.into_iter().map(Text::into_plain).collect()
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
