//! XHR sessions: `xhr` (polling), `xhr_streaming` and `xhr_send`.
//!
//! A session is created by the first poll for an unknown id. Messages for the client queue in
//! the session until a receiver (a poll or a streaming response) takes them. The receiver is
//! detached *before* its response is handed back, so a client that polls again the instant an
//! answer arrives is always accepted; only a genuinely concurrent second receiver gets
//! `c[2010,"Another connection still open"]` (Go kite's sessions die on back-to-back polls).

use std::collections::VecDeque;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};

use axum::body::{Body, Bytes};
use axum::extract::{Path, State as AxState};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use kite_core::sockjs::{self, ANOTHER_CONNECTION_OPEN};
use tokio::sync::{Notify, mpsc};
use tokio::time::Instant;

use super::http::{NO_CACHE, RemoteAddr};
use super::{State, valid_segment};
use crate::session::{self, Outgoing, SessionInfo, SessionSender, TransportKind};

struct XhrState {
    queue: VecDeque<String>,
    closed: Option<(u16, String)>,
    receiver: bool,
    detached_at: Instant,
    in_tx: Option<mpsc::Sender<String>>,
}

pub(crate) struct XhrSession {
    state: Mutex<XhrState>,
    wake: Notify,
    tx: SessionSender,
}

impl XhrSession {
    fn lock(&self) -> MutexGuard<'_, XhrState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// What a receiver takes from a session.
enum Take {
    Messages(Vec<String>),
    Closed(u16, String),
    Nothing,
}

impl XhrSession {
    fn take(&self) -> Take {
        let mut s = self.lock();
        if !s.queue.is_empty() {
            // Up to the batch budget per answer (a larger message goes alone); the rest waits
            // for the next poll, or the next chunk of a stream.
            let mut size = 0;
            let mut n = 0;
            for m in &s.queue {
                if n > 0 && size + m.len() > session::BATCH_BUDGET {
                    break;
                }
                size += m.len();
                n += 1;
            }
            return Take::Messages(s.queue.drain(..n).collect());
        }
        match &s.closed {
            Some((c, r)) => Take::Closed(*c, r.clone()),
            None => Take::Nothing,
        }
    }
}

/// Detaches the receiver when dropped (response built, or client gone).
struct Attached(Arc<XhrSession>);

impl Drop for Attached {
    fn drop(&mut self) {
        let mut s = self.0.lock();
        s.receiver = false;
        s.detached_at = Instant::now();
    }
}

fn attach(session: &Arc<XhrSession>) -> Option<Attached> {
    let mut s = session.lock();
    if s.receiver {
        return None;
    }
    s.receiver = true;
    Some(Attached(session.clone()))
}

fn get_or_create(
    state: &State,
    id: &str,
    transport: TransportKind,
    remote: Option<SocketAddr>,
) -> (Arc<XhrSession>, bool) {
    let mut table = state.sessions.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(s) = table.get(id) {
        return (s.clone(), false);
    }
    let info = SessionInfo {
        transport,
        remote_addr: remote,
        id: id.to_owned(),
    };
    let (session, in_tx, out_rx) = session::channel(info);
    let xhr = Arc::new(XhrSession {
        state: Mutex::new(XhrState {
            queue: VecDeque::new(),
            closed: None,
            receiver: false,
            detached_at: Instant::now(),
            in_tx: Some(in_tx),
        }),
        wake: Notify::new(),
        tx: session.tx.clone(),
    });
    table.insert(id.to_owned(), xhr.clone());
    drop(table);
    tokio::spawn(pump(state.clone(), id.to_owned(), xhr.clone(), out_rx));
    (state.on_session)(session);
    (xhr, true)
}

/// Moves outgoing messages into the session's queue, and ends the session when it has had no
/// receiver for `disconnect_delay` or after it was closed and the close frame was delivered.
async fn pump(state: State, id: String, session: Arc<XhrSession>, mut out_rx: session::Outbox) {
    let delay = state.options.disconnect_delay;
    let mut open = true;
    loop {
        let deadline = {
            let s = session.lock();
            if s.receiver {
                None
            } else {
                Some(s.detached_at + delay)
            }
        };
        let expiry = async {
            match deadline {
                Some(d) => tokio::time::sleep_until(d).await,
                None => tokio::time::sleep(delay).await,
            }
        };
        tokio::select! {
            out = out_rx.recv(), if open => {
                let mut s = session.lock();
                match out {
                    Some(Outgoing::Message(m)) => s.queue.push_back(m),
                    Some(Outgoing::Quoted(q)) => s.queue.push_back(session::Text::Quoted(q).into_plain()),
                    Some(Outgoing::Close(c, r)) => {
                        s.closed.get_or_insert((c, r));
                        s.in_tx = None;
                        open = false;
                    }
                    None => {
                        s.closed.get_or_insert((sockjs::GO_AWAY.0, sockjs::GO_AWAY.1.to_owned()));
                        s.in_tx = None;
                        open = false;
                    }
                }
                drop(s);
                session.wake.notify_one();
            }
            () = expiry => {
                let s = session.lock();
                if !s.receiver && Instant::now() >= s.detached_at + delay {
                    break;
                }
            }
        }
    }
    // Expired: forget the session; dropping `in_tx` tells the runtime it ended.
    session.lock().in_tx = None;
    let mut table = state.sessions.lock().unwrap_or_else(|e| e.into_inner());
    if table.get(&id).is_some_and(|s| Arc::ptr_eq(s, &session)) {
        table.remove(&id);
    }
}

fn remove(state: &State, id: &str, session: &Arc<XhrSession>) {
    let mut table = state.sessions.lock().unwrap_or_else(|e| e.into_inner());
    if table.get(id).is_some_and(|s| Arc::ptr_eq(s, session)) {
        table.remove(id);
    }
}

fn javascript(body: impl Into<Body>) -> Response {
    (
        [
            (
                header::CONTENT_TYPE,
                "application/javascript; charset=UTF-8",
            ),
            (header::CACHE_CONTROL, NO_CACHE),
        ],
        body.into(),
    )
        .into_response()
}

fn frame_line(take: Take) -> Option<String> {
    let mut out = Vec::new();
    match take {
        Take::Messages(m) => sockjs::encode_messages_into(&mut out, m.iter().map(String::as_str)),
        Take::Closed(c, r) => sockjs::encode_close_into(&mut out, c, &r),
        Take::Nothing => return None,
    }
    out.push(b'\n');
    String::from_utf8(out).ok()
}

fn another_connection() -> String {
    let (c, r) = ANOTHER_CONNECTION_OPEN;
    format!("{}\n", sockjs::encode_close(c, r))
}

/// `POST .../xhr`: one frame per poll.
pub(crate) async fn poll(
    Path((server, id)): Path<(String, String)>,
    AxState(state): AxState<State>,
    RemoteAddr(remote): RemoteAddr,
) -> Response {
    if !valid_segment(&server) || !valid_segment(&id) {
        return StatusCode::NOT_FOUND.into_response();
    }
    let (session, created) = get_or_create(&state, &id, TransportKind::XhrPolling, remote);
    if created {
        return javascript("o\n");
    }
    let Some(attached) = attach(&session) else {
        return javascript(another_connection());
    };
    let heartbeat = tokio::time::sleep(state.options.heartbeat_delay);
    tokio::pin!(heartbeat);
    loop {
        let take = session.take();
        if let Take::Closed(..) = take {
            remove(&state, &id, &session);
        }
        if let Some(line) = frame_line(take) {
            drop(attached);
            return javascript(line);
        }
        tokio::select! {
            () = session.wake.notified() => {}
            () = &mut heartbeat => {
                drop(attached);
                return javascript("h\n");
            }
        }
    }
}

/// `POST .../xhr_streaming`: a chunked response carrying frames until `response_limit` bytes.
pub(crate) async fn streaming(
    Path((server, id)): Path<(String, String)>,
    AxState(state): AxState<State>,
    RemoteAddr(remote): RemoteAddr,
) -> Response {
    if !state.options.xhr_streaming || !valid_segment(&server) || !valid_segment(&id) {
        return StatusCode::NOT_FOUND.into_response();
    }
    let (session, created) = get_or_create(&state, &id, TransportKind::XhrStreaming, remote);
    let Some(attached) = attach(&session) else {
        let body = format!(
            "{}{}",
            sockjs::xhr_streaming_prelude(),
            another_connection()
        );
        return javascript(body);
    };
    let mut first = sockjs::xhr_streaming_prelude();
    if created {
        first.push_str("o\n");
    }
    struct Stream {
        first: Option<String>,
        attached: Option<Attached>,
        state: State,
        id: String,
        written: usize,
    }
    let st = Stream {
        first: Some(first),
        attached: Some(attached),
        state,
        id,
        written: 0,
    };
    let body = futures_util::stream::unfold(st, |mut st| async move {
        if let Some(first) = st.first.take() {
            return Some((Ok::<_, Infallible>(Bytes::from(first)), st));
        }
        let attached = st.attached.as_ref()?;
        let session = attached.0.clone();
        if st.written >= st.state.options.response_limit {
            // Ends the response; the client opens a new one on the same session.
            return None;
        }
        loop {
            let take = session.take();
            let closed = matches!(take, Take::Closed(..));
            if let Some(line) = frame_line(take) {
                st.written += line.len();
                if closed {
                    remove(&st.state, &st.id, &session);
                    st.attached = None;
                }
                return Some((Ok(Bytes::from(line)), st));
            }
            let heartbeat = tokio::time::sleep(st.state.options.heartbeat_delay);
            tokio::select! {
                () = session.wake.notified() => {}
                () = heartbeat => return Some((Ok(Bytes::from_static(b"h\n")), st)),
            }
        }
    });
    javascript(Body::from_stream(body))
}

/// `POST .../xhr_send`: a JSON array of messages for the session.
pub(crate) async fn send(
    Path((server, id)): Path<(String, String)>,
    AxState(state): AxState<State>,
    body: Body,
) -> Response {
    if !valid_segment(&server) || !valid_segment(&id) {
        return StatusCode::NOT_FOUND.into_response();
    }
    let lookup = || {
        state
            .sessions
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&id)
            .cloned()
    };
    let bytes = match axum::body::to_bytes(body, state.options.max_message_size).await {
        Ok(b) => b,
        Err(_) => {
            if let Some(s) = lookup() {
                let (c, r) = sockjs::MESSAGE_TOO_BIG;
                s.tx.close(c, r);
            }
            return (StatusCode::PAYLOAD_TOO_LARGE, "Message too big.").into_response();
        }
    };
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return (StatusCode::INTERNAL_SERVER_ERROR, "Payload expected.").into_response();
    }
    let msgs = match std::str::from_utf8(&bytes)
        .ok()
        .and_then(|t| sockjs::decode_client_frame(t).ok())
    {
        Some(m) => m,
        None => {
            return (StatusCode::INTERNAL_SERVER_ERROR, "Broken JSON encoding.").into_response();
        }
    };
    let Some(session) = lookup() else {
        return StatusCode::NOT_FOUND.into_response();
    };
    let Some(in_tx) = session.lock().in_tx.clone() else {
        return StatusCode::NOT_FOUND.into_response();
    };
    for m in msgs {
        if in_tx.send(m).await.is_err() {
            return StatusCode::NOT_FOUND.into_response();
        }
    }
    (
        StatusCode::NO_CONTENT,
        [(header::CONTENT_TYPE, "text/plain; charset=UTF-8")],
    )
        .into_response()
}
