//! The receiving requests of the HTTP transports.
//!
//! Polling (`xhr`, `jsonp`): one frame per request. Streaming (`xhr_streaming`, `eventsource`,
//! `htmlfile`): a prelude, then frames as they come, until `response_limit` bytes of frames
//! have been sent; the client then opens a new request on the same session. Each transport only
//! differs in how a frame is wrapped and in its content type.
//!
//! As in sockjs-node, the prelude and every streamed frame is an HTTP chunk of its own (never
//! coalesced, not even the prelude and `o`): the protocol's test suite, and clients reading the
//! body chunk by chunk, take one chunk for one frame.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::net::SocketAddr;

use axum::body::{Body, Bytes};
use axum::extract::{RawQuery, State as AxState};
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use kite_core::sockjs::{self, ANOTHER_CONNECTION_OPEN};

use super::budget::Refused;
use super::http::{NO_CACHE, RemoteAddr, server_error};
use super::session::{Attached, Take, attach, get_or_create};
use super::{SessionId, State};
use crate::session::TransportKind;

/// A response of `content_type` that must not be cached.
fn uncached(content_type: &'static str, body: impl Into<Body>) -> Response {
    let mut resp = body.into().into_response();
    let h = resp.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static(NO_CACHE));
    resp
}

const JAVASCRIPT: &str = "application/javascript; charset=UTF-8";

fn another_connection() -> String {
    let (c, r) = ANOTHER_CONNECTION_OPEN;
    sockjs::encode_close(c, r)
}

/// The `c` query parameter of JSONP and htmlfile, checked; the error message otherwise (for a
/// 500 answer).
fn callback(query: Option<String>) -> Result<String, &'static str> {
    let c = query.as_deref().and_then(|q| {
        form_urlencoded::parse(q.as_bytes())
            .find(|(k, _)| k == "c")
            .map(|(_, v)| v.into_owned())
    });
    match c {
        None => Err("\"callback\" parameter required"),
        Some(c) if c.is_empty() => Err("\"callback\" parameter required"),
        Some(c) if !sockjs::valid_callback(&c) => Err("invalid \"callback\" parameter"),
        Some(c) => Ok(c),
    }
}

/// One poll: `o` for a new session, `c[2010]` when another receiver waits, else the next
/// frame (messages, the close frame, or `h` after the heartbeat delay). A new session past the
/// budgets is refused.
async fn poll_frame(
    state: &State,
    id: &str,
    transport: TransportKind,
    remote: Option<SocketAddr>,
) -> Result<String, Refused> {
    let (session, created) = get_or_create(state, id, transport, remote)?;
    if created {
        return Ok("o".to_owned());
    }
    let Some(attached) = attach(&session).await else {
        return Ok(another_connection());
    };
    let heartbeat = tokio::time::sleep(state.options.heartbeat_delay);
    tokio::pin!(heartbeat);
    let frame = loop {
        if let Some(frame) = session.take().frame() {
            break frame;
        }
        tokio::select! {
            () = session.changed() => {}
            () = &mut heartbeat => break "h".to_owned(),
        }
    };
    // Detached before the answer is handed back: the next poll may come at once.
    attached.finish();
    Ok(frame)
}

/// `POST .../xhr`: one frame per poll, followed by a newline.
pub(crate) async fn xhr_polling(
    SessionId(id): SessionId,
    AxState(state): AxState<State>,
    RemoteAddr(remote): RemoteAddr,
) -> Response {
    match poll_frame(&state, &id, TransportKind::XhrPolling, remote).await {
        Ok(mut frame) => {
            frame.push('\n');
            uncached(JAVASCRIPT, frame)
        }
        Err(refused) => refused.into_response(),
    }
}

/// `GET .../jsonp?c=callback`: one frame per poll, as `/**/callback("<frame>");`.
pub(crate) async fn jsonp(
    SessionId(id): SessionId,
    AxState(state): AxState<State>,
    RawQuery(query): RawQuery,
    RemoteAddr(remote): RemoteAddr,
) -> Response {
    let cb = match callback(query) {
        Ok(cb) => cb,
        Err(message) => return server_error(message),
    };
    match poll_frame(&state, &id, TransportKind::JsonpPolling, remote).await {
        Ok(frame) => uncached(JAVASCRIPT, sockjs::jsonp_answer(&cb, &frame)),
        Err(refused) => refused.into_response(),
    }
}

/// How a streaming transport writes its prelude and frames.
#[derive(Clone)]
enum Framing {
    XhrStreaming,
    EventSource,
    HtmlFile(String),
}

impl Framing {
    fn prelude(&self) -> String {
        match self {
            Framing::XhrStreaming => sockjs::xhr_streaming_prelude(),
            Framing::EventSource => sockjs::EVENTSOURCE_PRELUDE.to_owned(),
            Framing::HtmlFile(cb) => sockjs::htmlfile_head(cb),
        }
    }

    fn wrap(&self, frame: &str) -> String {
        match self {
            Framing::XhrStreaming => format!("{frame}\n"),
            Framing::EventSource => sockjs::eventsource_event(frame),
            Framing::HtmlFile(_) => sockjs::htmlfile_chunk(frame),
        }
    }

    fn content_type(&self) -> &'static str {
        match self {
            Framing::XhrStreaming => JAVASCRIPT,
            Framing::EventSource => "text/event-stream",
            Framing::HtmlFile(_) => "text/html; charset=UTF-8",
        }
    }

    fn transport(&self) -> TransportKind {
        match self {
            Framing::XhrStreaming => TransportKind::XhrStreaming,
            Framing::EventSource => TransportKind::EventSource,
            Framing::HtmlFile(_) => TransportKind::HtmlFile,
        }
    }
}

/// The state of a streaming response body.
struct Stream {
    framing: Framing,
    /// The prelude and `o` for a new session, sent first, each as a chunk of its own.
    first: VecDeque<String>,
    /// `None` once the response has ended for the session.
    attached: Option<Attached>,
    state: State,
    /// Bytes of frames sent (the prelude does not count).
    written: usize,
}

impl Stream {
    /// The next chunk of the body; `None` ends the response.
    async fn next(&mut self) -> Option<String> {
        if let Some(first) = self.first.pop_front() {
            return Some(first);
        }
        let session = self.attached.as_ref()?.session().clone();
        let heartbeat = tokio::time::sleep(self.state.options.heartbeat_delay);
        tokio::pin!(heartbeat);
        let (frame, closed) = loop {
            let take = session.take();
            let closed = matches!(take, Take::Closed(..));
            if let Some(frame) = take.frame() {
                break (frame, closed);
            }
            tokio::select! {
                () = session.changed() => {}
                () = &mut heartbeat => break ("h".to_owned(), false),
            }
        };
        let chunk = self.framing.wrap(&frame);
        self.written += chunk.len();
        if closed || self.written >= self.state.options.response_limit {
            // The last chunk: detach now, so that the client's next request (which may come as
            // soon as it sees this chunk) is accepted.
            if let Some(a) = self.attached.take() {
                a.finish();
            }
        }
        Some(chunk)
    }
}

/// A response body of `chunks`, each an HTTP chunk of its own.
fn chunked(chunks: impl futures_util::Stream<Item = String> + Send + 'static) -> Body {
    Body::from_stream(futures_util::StreamExt::map(chunks, |chunk| {
        Ok::<_, Infallible>(Bytes::from(chunk))
    }))
}

/// A streaming response on session `id`.
async fn stream(state: State, id: &str, framing: Framing, remote: Option<SocketAddr>) -> Response {
    let (session, created) = match get_or_create(&state, id, framing.transport(), remote) {
        Ok(x) => x,
        Err(refused) => return refused.into_response(),
    };
    let content_type = framing.content_type();
    let mut first = VecDeque::from([framing.prelude()]);
    let Some(attached) = attach(&session).await else {
        first.push_back(framing.wrap(&another_connection()));
        return uncached(content_type, chunked(futures_util::stream::iter(first)));
    };
    if created {
        first.push_back(framing.wrap("o"));
    }
    let st = Stream {
        framing,
        first,
        attached: Some(attached),
        state,
        written: 0,
    };
    let body = futures_util::stream::unfold(st, |mut st| async move {
        let chunk = st.next().await?;
        Some((chunk, st))
    });
    uncached(content_type, chunked(body))
}

/// `POST .../xhr_streaming`: a 2 KiB prelude of `h`, then one frame per line.
pub(crate) async fn xhr_streaming(
    SessionId(id): SessionId,
    AxState(state): AxState<State>,
    RemoteAddr(remote): RemoteAddr,
) -> Response {
    stream(state, &id, Framing::XhrStreaming, remote).await
}

/// `GET .../eventsource`: server-sent events, one `data:` event per frame.
pub(crate) async fn eventsource(
    SessionId(id): SessionId,
    AxState(state): AxState<State>,
    RemoteAddr(remote): RemoteAddr,
) -> Response {
    stream(state, &id, Framing::EventSource, remote).await
}

/// `GET .../htmlfile?c=callback`: a page whose script chunks hand frames to the callback.
pub(crate) async fn htmlfile(
    SessionId(id): SessionId,
    AxState(state): AxState<State>,
    RawQuery(query): RawQuery,
    RemoteAddr(remote): RemoteAddr,
) -> Response {
    match callback(query) {
        Ok(cb) => stream(state, &id, Framing::HtmlFile(cb), remote).await,
        Err(message) => server_error(message),
    }
}
