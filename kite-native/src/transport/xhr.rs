//! SockJS xhr-polling client.
//!
//! The session URL is `<base>/<server>/<session>`. `POST .../xhr` opens the session (the answer
//! must be `o`) and then receives: a poll task re-issues it after each answer. A send task posts
//! queued messages, batched, to `.../xhr_send`, one request at a time so they stay in order.
//! One `reqwest::Client` per session: its pool keeps polls and sends on separate connections.

use std::time::Duration;

use reqwest::header::CONTENT_TYPE;
use reqwest::{StatusCode, Url};
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

use super::url::{endpoint, parse_base_url, sockjs_ids, xhr_session_url};
use super::{DialError, DialOptions, Silence, Step, decode_frame, frame_limit, valid_headers};
use crate::session::{self, Batch, Outbox, Session, SessionInfo, Text, TransportKind};

/// Dials the kite at `base` over xhr-polling: `POST <base>/<server>/<session>/xhr` must answer
/// 200 with an `o` frame within [`DialOptions::timeout`]; then a task polls and another sends
/// (`xhr_send`), batching queued messages.
pub async fn dial_xhr(base: &str, opts: &DialOptions) -> Result<Session, DialError> {
    let base_url = parse_base_url(base)?;
    let (server, id) = sockjs_ids();
    let session_url = xhr_session_url(&base_url, &server, &id);
    let poll_url = endpoint(&session_url, "xhr");
    let send_url = endpoint(&session_url, "xhr_send");
    let http = client(opts)?;
    let limit = frame_limit(opts.max_message_size);

    let deadline = Instant::now() + opts.timeout;
    let open = http
        .post(poll_url.clone())
        .header(CONTENT_TYPE, "text/plain")
        .send();
    let resp = tokio::time::timeout_at(deadline, open)
        .await
        .map_err(|_| DialError::Timeout)?
        .map_err(request_error)?;
    if resp.status() != StatusCode::OK {
        return Err(DialError::Handshake(format!("HTTP {}", resp.status())));
    }
    let remote_addr = resp.remote_addr();
    let body =
        match tokio::time::timeout_at(deadline, read_body(resp, Vec::new(), limit, opts.timeout))
            .await
        {
            Err(_) => return Err(DialError::Timeout),
            Ok(Err(e)) => return Err(e),
            Ok(Ok(body)) => body,
        };
    // The first frame must be `o`; anything after it on the same answer is delivered.
    let rest = match body.split_once('\n') {
        Some(("o", rest)) => rest.to_owned(),
        None if body == "o" => String::new(),
        _ => {
            let start: String = body.chars().take(32).collect();
            return Err(DialError::Protocol(format!(
                "expected an `o` frame, got {start:?}"
            )));
        }
    };

    let info = SessionInfo {
        transport: TransportKind::XhrPolling,
        remote_addr,
        id,
    };
    let (session, in_tx, out_rx) = session::channel(info);
    let stop = CancellationToken::new();
    let poller = Poller {
        http: http.clone(),
        url: poll_url,
        timeout: opts.timeout,
        limit,
        max_message_size: opts.max_message_size,
        silence: opts.heartbeat_timeout,
    };
    tokio::spawn(poll_loop(poller, rest, in_tx, stop.clone()));
    tokio::spawn(send_loop(http, send_url, out_rx, stop));
    Ok(session)
}

/// The session's HTTP client: extra headers on every request, extra TLS roots, connect limit.
pub(super) fn client(opts: &DialOptions) -> Result<reqwest::Client, DialError> {
    let headers = valid_headers(&opts.headers).into_iter().collect();
    #[cfg_attr(not(feature = "tls"), allow(unused_mut))]
    let mut builder = reqwest::Client::builder()
        .default_headers(headers)
        .connect_timeout(opts.timeout);
    // Without TLS reqwest refuses `https` URLs; extra roots have nothing to do.
    #[cfg(feature = "tls")]
    for pem in &opts.root_certificates {
        let cert = reqwest::Certificate::from_pem(pem.as_bytes())
            .map_err(|e| DialError::InvalidUrl(format!("TLS roots: {e}")))?;
        builder = builder.add_root_certificate(cert);
    }
    builder.build().map_err(|e| DialError::Io(error_chain(&e)))
}

/// A reqwest error with its causes (reqwest's own message hides them).
pub(super) fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        out.push_str(": ");
        out.push_str(&s.to_string());
        source = s.source();
    }
    out
}

pub(super) fn request_error(e: reqwest::Error) -> DialError {
    if e.is_timeout() {
        DialError::Timeout
    } else {
        DialError::Io(error_chain(&e))
    }
}

/// Reads the rest of a response body after the bytes already read (`body`) as UTF-8: at most
/// `limit` bytes, each chunk within `idle` of the previous one.
async fn read_body(
    mut resp: reqwest::Response,
    mut body: Vec<u8>,
    limit: usize,
    idle: Duration,
) -> Result<String, DialError> {
    if body.len() > limit {
        return Err(DialError::Protocol(format!(
            "response over the {limit} byte limit"
        )));
    }
    loop {
        let chunk = tokio::time::timeout(idle, resp.chunk())
            .await
            .map_err(|_| DialError::Timeout)?
            .map_err(request_error)?;
        let Some(chunk) = chunk else { break };
        if body.len() + chunk.len() > limit {
            return Err(DialError::Protocol(format!(
                "response over the {limit} byte limit"
            )));
        }
        body.extend_from_slice(&chunk);
    }
    String::from_utf8(body).map_err(|_| DialError::Protocol("response is not UTF-8".into()))
}

/// What one poll needs.
struct Poller {
    http: reqwest::Client,
    url: Url,
    timeout: Duration,
    limit: usize,
    max_message_size: usize,
    /// How long the server may stay silent (across polls: each has its own first-byte wait,
    /// `timeout`) before it counts as dead.
    silence: Option<Duration>,
}

/// The outcome of one poll.
enum Poll {
    /// An answer: one or more frames, each followed by `\n`.
    Body(String),
    /// No answer in time: poll again.
    Again,
    /// The session is over.
    End,
}

impl Poller {
    /// One `POST .../xhr`. The first byte of the answer must come within `timeout`, else the
    /// request is dropped (which aborts it) and the caller polls again, as Go does.
    async fn poll(&self) -> Poll {
        let first = async {
            let mut resp = self
                .http
                .post(self.url.clone())
                .header(CONTENT_TYPE, "text/plain")
                .send()
                .await?;
            let chunk = if resp.status() == StatusCode::OK {
                resp.chunk().await?
            } else {
                None
            };
            Ok::<_, reqwest::Error>((resp, chunk))
        };
        let (resp, chunk) = match tokio::time::timeout(self.timeout, first).await {
            Err(_) => {
                debug!("no answer to the poll in time, polling again");
                return Poll::Again;
            }
            Ok(Err(e)) => {
                debug!(error = %error_chain(&e), "poll failed, closing");
                return Poll::End;
            }
            Ok(Ok(answer)) => answer,
        };
        match resp.status() {
            StatusCode::OK => {}
            StatusCode::NOT_FOUND => {
                debug!("poll answered 404: the session is gone");
                return Poll::End;
            }
            status => {
                warn!(%status, "poll refused, closing");
                return Poll::End;
            }
        }
        let Some(chunk) = chunk else {
            return Poll::Body(String::new());
        };
        match read_body(resp, chunk.to_vec(), self.limit, self.timeout).await {
            Ok(body) => Poll::Body(body),
            Err(e) => {
                warn!(error = %e, "reading the poll answer failed, closing");
                Poll::End
            }
        }
    }
}

/// Delivers the frames of `initial`, then polls until the session ends; then drops `in_tx`
/// (ending the session) and stops the sender.
async fn poll_loop(
    poller: Poller,
    initial: String,
    in_tx: mpsc::Sender<String>,
    stop: CancellationToken,
) {
    let mut body = initial;
    let mut silence = Silence::new(poller.silence);
    'session: loop {
        for line in body.split('\n').filter(|l| !l.is_empty()) {
            let msgs = match decode_frame(line, poller.max_message_size) {
                Step::Deliver(msgs) => msgs,
                Step::Skip => continue,
                Step::End => break 'session,
            };
            let delivered = tokio::select! {
                () = stop.cancelled() => false,
                ok = session::deliver(&in_tx, msgs) => ok,
            };
            if !delivered {
                break 'session;
            }
        }
        body = loop {
            let poll = tokio::select! {
                () = stop.cancelled() => break 'session,
                poll = poller.poll() => poll,
                () = silence.expired() => break 'session,
            };
            match poll {
                Poll::Body(body) => {
                    silence.heard();
                    break body;
                }
                Poll::Again => continue,
                Poll::End => break 'session,
            }
        };
    }
    stop.cancel();
}

/// Posts queued messages, batched, to `xhr_send`, one request at a time, until a close
/// request, the runtime dropping the session, a refused send or the poller ending.
pub(super) async fn send_loop(
    http: reqwest::Client,
    url: Url,
    mut outbox: Outbox,
    stop: CancellationToken,
) {
    loop {
        let batch = tokio::select! {
            () = stop.cancelled() => break,
            batch = outbox.next_batch() => batch,
        };
        let Some(Batch { messages, close }) = batch else {
            break;
        };
        if messages.is_empty() {
            break;
        }
        let mut frame = Vec::with_capacity(messages.iter().map(Text::len).sum::<usize>() + 8);
        frame.push(b'[');
        session::write_frame_items(&mut frame, &messages);
        frame.push(b']');
        let body = String::from_utf8(frame).unwrap_or_default();
        let send = http
            .post(url.clone())
            .header(CONTENT_TYPE, "text/plain;charset=UTF-8")
            .body(body)
            .send();
        let sent = tokio::select! {
            () = stop.cancelled() => break,
            sent = send => sent,
        };
        match sent {
            Ok(r) if matches!(r.status(), StatusCode::OK | StatusCode::NO_CONTENT) => {}
            Ok(r) if r.status() == StatusCode::NOT_FOUND => {
                debug!("xhr_send answered 404: the session is gone");
                break;
            }
            Ok(r) => {
                warn!(status = %r.status(), "xhr_send refused, closing");
                break;
            }
            Err(e) => {
                debug!(error = %error_chain(&e), "xhr_send failed, closing");
                break;
            }
        }
        if close.is_some() {
            break;
        }
    }
    stop.cancel();
}
