//! SockJS websocket (`/<server>/<session>/websocket`) and raw websocket (`/websocket`).
//!
//! The runtime reads the socket itself, through the session's receiver (so a request goes from
//! the socket to its handler in one task); the task of the upgraded connection writes: it sends
//! `o`, then batches of queued messages as `a[...]` frames, heartbeats, and the close frames.
//!
//! An upgrade past the websocket budgets is answered 503. A peer that lets more than
//! `max_queued_bytes` of output queue up is closed with `c[1008,...]` (SockJS) and close code
//! 1008, even while a write to it is stuck; closing frames get [`CLOSING_FRAMES_GRACE`] to leave,
//! then the connection is dropped.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;

use axum::extract::State as AxState;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use futures_util::stream::{SplitSink, SplitStream};
use futures_util::{SinkExt, StreamExt};
use kite_core::sockjs::{self, BROKEN_FRAME, MESSAGE_TOO_BIG};
use tokio::sync::oneshot;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::{Error as WsError, Message};
use tokio_util::sync::{CancellationToken, DropGuard};
use tracing::debug;

use super::http::RemoteAddr;
use super::upgrade::{Socket, SocketOptions, WsUpgrade};
use super::{SessionId, State};
use crate::session::{
    self, Batch, Outbox, QUEUE_OVERFLOW, Session, SessionInfo, SessionReceiver, SessionSender,
    Text, TransportKind,
};
use crate::tally::Held;

/// The largest websocket message accepted: one message of `max_message_size` may come
/// JSON-escaped inside a SockJS frame (at most twice as long), and clients batch small
/// messages into frames of tens of KiB. Each message is then held to `max_message_size`.
fn frame_limit(max_message_size: usize, framed: bool) -> usize {
    if framed {
        max_message_size
            .saturating_mul(2)
            .saturating_add(crate::session::BATCH_BUDGET)
    } else {
        max_message_size
    }
}

fn socket_options(state: &State, framed: bool) -> SocketOptions {
    SocketOptions {
        max_size: frame_limit(state.options.max_message_size, framed),
        read_chunk: state.options.read_buffer_size,
    }
}

fn session_id() -> String {
    hex::encode(rand::random::<[u8; 10]>())
}

/// `GET /<server>/<session>/websocket`.
pub(crate) async fn sockjs(
    // Websocket sessions ignore the id (one session per socket); the path must still be valid.
    _: SessionId,
    ws: WsUpgrade,
    AxState(state): AxState<State>,
    RemoteAddr(remote): RemoteAddr,
) -> Response {
    let held = match state
        .occupancy
        .admit_websocket(remote.map(|r| r.ip()), &state.options)
    {
        Ok(h) => h,
        Err(refused) => return refused.into_response(),
    };
    ws.on_upgrade(socket_options(&state, true), move |socket| {
        serve(socket, state, remote, true, held)
    })
}

/// `GET /websocket`: Kite.js's plain websocket transport, one message per text frame.
pub(crate) async fn raw(
    ws: WsUpgrade,
    AxState(state): AxState<State>,
    RemoteAddr(remote): RemoteAddr,
) -> Response {
    if !state.options.raw_websocket {
        return StatusCode::NOT_FOUND.into_response();
    }
    let held = match state
        .occupancy
        .admit_websocket(remote.map(|r| r.ip()), &state.options)
    {
        Ok(h) => h,
        Err(refused) => return refused.into_response(),
    };
    ws.on_upgrade(socket_options(&state, false), move |socket| {
        serve(socket, state, remote, false, held)
    })
}

/// The reading half of a session, polled by the runtime.
struct Reader {
    /// Taken back by the connection's task when the reader goes (see `Drop`).
    stream: Option<SplitStream<Socket>>,
    give_back: Option<oneshot::Sender<SplitStream<Socket>>>,
    framed: bool,
    max: usize,
    tx: SessionSender,
    queue: VecDeque<String>,
    id: String,
    done: CancellationToken,
    /// Tells the writer when the reader ends or the runtime drops it.
    _ended: DropGuard,
}

impl Drop for Reader {
    /// Hands the socket's reading half back to the connection's task, which reads what the
    /// peer still sends until it answers the close: dropping a socket with unread input makes
    /// the kernel reset the connection, and the peer would lose the frames sent before it.
    fn drop(&mut self) {
        if let (Some(stream), Some(back)) = (self.stream.take(), self.give_back.take()) {
            let _ = back.send(stream);
        }
    }
}

impl Reader {
    /// The next message, reading frames as needed; `None` ends the session (after queueing a
    /// close frame for broken or oversized input).
    async fn next(&mut self) -> Option<String> {
        loop {
            if let Some(m) = self.queue.pop_front() {
                return Some(m);
            }
            let stream = self.stream.as_mut()?;
            let next = tokio::select! {
                biased;
                next = stream.next() => next,
                () = self.done.cancelled() => return None,
            };
            match next {
                Some(Ok(Message::Text(text))) if self.framed => {
                    let msgs = match sockjs::decode_client_frame(&text) {
                        Ok(m) => m,
                        Err(e) => {
                            debug!(session = %self.id, error = %e, "broken SockJS frame");
                            return self.close(BROKEN_FRAME);
                        }
                    };
                    if msgs.iter().any(|m| m.len() > self.max) {
                        return self.close(MESSAGE_TOO_BIG);
                    }
                    self.queue.extend(msgs);
                }
                Some(Ok(Message::Text(text))) => {
                    if text.len() > self.max {
                        return self.close(MESSAGE_TOO_BIG);
                    }
                    return Some(text.to_string());
                }
                Some(Ok(Message::Binary(_))) => return self.close(BROKEN_FRAME),
                Some(Ok(Message::Ping(_) | Message::Pong(_) | Message::Frame(_))) => {}
                Some(Ok(Message::Close(_))) | None => return None,
                Some(Err(e)) => {
                    debug!(session = %self.id, error = %e, "websocket read failed");
                    // tungstenite reports oversized messages and frames as a capacity error.
                    if matches!(e, WsError::Capacity(_)) {
                        return self.close(MESSAGE_TOO_BIG);
                    }
                    return None;
                }
            }
        }
    }

    fn close(&self, (code, reason): (u16, &str)) -> Option<String> {
        self.tx.close(code, reason);
        None
    }
}

/// Counts an open websocket session for [`super::SockJsServer::live_sessions`].
struct Live(State);

impl Live {
    fn new(state: &State) -> Self {
        state.websockets.fetch_add(1, Ordering::Relaxed);
        Live(state.clone())
    }
}

impl Drop for Live {
    fn drop(&mut self) {
        self.0.websockets.fetch_sub(1, Ordering::Relaxed);
    }
}

async fn serve(
    socket: Socket,
    state: State,
    remote: Option<SocketAddr>,
    framed: bool,
    _held: Held,
) {
    let _live = Live::new(&state);
    let info = SessionInfo {
        transport: if framed {
            TransportKind::WebSocket
        } else {
            TransportKind::RawWebSocket
        },
        remote_addr: remote,
        id: session_id(),
    };
    let (tx, outbox) = session::outgoing_within(
        state.options.max_queued_bytes,
        Some(state.occupancy.backlog()),
    );
    let (mut sink, stream) = socket.split();
    let done = CancellationToken::new();
    let (give_back, taken_back) = oneshot::channel();
    let reader = Reader {
        stream: Some(stream),
        give_back: Some(give_back),
        framed,
        max: state.options.max_message_size,
        tx: tx.clone(),
        queue: VecDeque::new(),
        id: info.id.clone(),
        done: done.clone(),
        _ended: done.clone().drop_guard(),
    };
    let rx =
        SessionReceiver::from_stream(futures_util::stream::unfold(reader, |mut r| async move {
            r.next().await.map(|m| (m, r))
        }));
    (state.on_session)(Session { rx, tx, info });

    if framed && sink.send(Message::text("o")).await.is_err() {
        done.cancel();
        return;
    }
    let close = write_loop(&mut sink, outbox, &state, framed, &done).await;
    // Ends the reader too, should the peer never answer the close.
    done.cancel();
    if let Some(close) = close {
        // Boxed: a connection's task is as large as its largest state, and this one is rare.
        Box::pin(closing(&mut sink, framed, close, taken_back)).await;
    }
    let _ = tokio::time::timeout(CLOSE_GRACE, sink.close()).await;
}

/// Sends the closing frames of a session (a peer that does not read gets a moment for them,
/// not forever), and meanwhile reads and drops what the peer still sends, so that it is not
/// stuck writing to us.
async fn closing(
    sink: &mut SplitSink<Socket, Message>,
    framed: bool,
    (code, reason): (u16, String),
    taken_back: oneshot::Receiver<SplitStream<Socket>>,
) {
    // SockJS clients take the code from the `c` frame; a peer past its output budget is told
    // on the websocket too (policy violation). Broken input ends the websocket with the code
    // and no `c` frame, as in sockjs-node.
    let broken = (code, reason.as_str()) == BROKEN_FRAME;
    let ws_code = if framed && code != QUEUE_OVERFLOW.0 && !broken {
        1000
    } else {
        code.max(1000)
    };
    let frames = async {
        if framed && !broken {
            sink.send(Message::text(sockjs::encode_close(code, &reason)))
                .await?;
        }
        sink.send(Message::Close(Some(CloseFrame {
            code: ws_code.into(),
            reason: reason.into(),
        })))
        .await
    };
    let _ = tokio::join!(
        tokio::time::timeout(CLOSING_FRAMES_GRACE, frames),
        drain(taken_back)
    );
}

/// How long the closing frames of a session may take to leave (behind what was already being
/// written to a peer that reads slowly) before the connection is dropped.
const CLOSING_FRAMES_GRACE: std::time::Duration = std::time::Duration::from_secs(5);

/// How long a closing connection waits for the peer to stop sending and answer the close.
const CLOSE_GRACE: std::time::Duration = std::time::Duration::from_secs(2);

/// Reads and drops what the peer still sends after our close, until its close frame, the end
/// of the stream, or [`CLOSE_GRACE`].
async fn drain(taken_back: oneshot::Receiver<SplitStream<Socket>>) {
    let _ = tokio::time::timeout(CLOSE_GRACE, async {
        let Ok(mut stream) = taken_back.await else {
            return;
        };
        while let Some(Ok(m)) = stream.next().await {
            if matches!(m, Message::Close(_)) {
                break;
            }
        }
    })
    .await;
}

/// Sends `message`, unless the queue goes over its budget first (`false` then, as for a failed
/// write): a peer that does not read would hold the write, and the session, forever.
async fn send_or_overflow(
    sink: &mut SplitSink<Socket, Message>,
    outbox: &Outbox,
    message: Message,
) -> Result<bool, ()> {
    tokio::select! {
        sent = sink.send(message) => Ok(sent.is_ok()),
        () = outbox.overflowed() => Err(()),
    }
}

fn overflow() -> Option<(u16, String)> {
    Some((QUEUE_OVERFLOW.0, QUEUE_OVERFLOW.1.to_owned()))
}

/// Writes batches and heartbeats until a close is asked for (returned), the runtime is gone
/// (`Go away!`), the reader ends (the close it queued, if any), the queue goes over its budget
/// ([`QUEUE_OVERFLOW`]) or a write fails (`None`).
async fn write_loop(
    sink: &mut SplitSink<Socket, Message>,
    mut outbox: Outbox,
    state: &State,
    framed: bool,
    done: &CancellationToken,
) -> Option<(u16, String)> {
    let delay = state.options.heartbeat_delay;
    let mut heartbeat = tokio::time::interval_at(tokio::time::Instant::now() + delay, delay);
    let mut buf = Vec::new();
    loop {
        let batch = tokio::select! {
            biased;
            batch = outbox.next_batch() => match batch {
                Some(b) => b,
                None => return Some((sockjs::GO_AWAY.0, sockjs::GO_AWAY.1.to_owned())),
            },
            () = done.cancelled() => {
                // The reader ended: send the close it queued (broken or oversized input).
                return outbox.try_batch().and_then(|b| b.close);
            }
            _ = heartbeat.tick(), if framed => {
                match send_or_overflow(sink, &outbox, Message::text("h")).await {
                    Ok(true) => continue,
                    Ok(false) => return None,
                    Err(()) => return overflow(),
                }
            }
        };
        let Batch { messages, close } = batch;
        if !messages.is_empty() {
            let written = if framed {
                buf.clear();
                buf.extend_from_slice(b"a[");
                session::write_frame_items(&mut buf, &messages);
                buf.push(b']');
                drop(messages);
                let text = String::from_utf8(std::mem::take(&mut buf)).unwrap_or_default();
                send_or_overflow(sink, &outbox, Message::text(text)).await
            } else {
                tokio::select! {
                    written = write_each(sink, messages) => Ok(written),
                    () = outbox.overflowed() => Err(()),
                }
            };
            match written {
                Ok(true) => {}
                Ok(false) => return None,
                Err(()) => return overflow(),
            }
            heartbeat.reset();
        }
        if close.is_some() {
            return close;
        }
    }
}

/// Raw websocket: one text message per message, flushed once.
async fn write_each(sink: &mut SplitSink<Socket, Message>, messages: Vec<Text>) -> bool {
    for m in messages {
        if sink.feed(Message::text(m.into_plain())).await.is_err() {
            return false;
        }
    }
    sink.flush().await.is_ok()
}
