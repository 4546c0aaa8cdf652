//! SockJS xhr-streaming client.
//!
//! `POST <base>/<server>/<session>/xhr_streaming` answers with a prelude (a line of 2048 `h`),
//! then `o`, then one frame per line for as long as the server keeps the response open. After
//! its response limit the server ends the response and the client posts again on the same
//! session (the new response repeats the prelude, without `o`); the server hands each frame to
//! exactly one response, so nothing is lost or repeated across the rotation. Messages go out
//! through `xhr_send`, with the xhr-polling client's sender.

use std::time::Duration;

use reqwest::header::CONTENT_TYPE;
use reqwest::{StatusCode, Url};
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

use super::url::{endpoint, parse_base_url, sockjs_ids, xhr_session_url};
use super::xhr::{client, error_chain, request_error, send_loop};
use super::{DialError, DialOptions, Silence, Step, decode_frame, frame_limit};
use crate::session::{self, Session, SessionInfo, TransportKind};

/// Dials the kite at `base` over xhr-streaming: `POST <base>/<server>/<session>/xhr_streaming`
/// must answer 200 and bring its prelude and the `o` frame within [`DialOptions::timeout`] (a
/// proxy that buffers responses fails here with [`DialError::Timeout`], and
/// [`super::Transport::Auto`] then falls back to xhr-polling). Then a task reads the stream,
/// posting again whenever the server ends a response, and another sends (`xhr_send`),
/// batching queued messages.
pub async fn dial_xhr_streaming(base: &str, opts: &DialOptions) -> Result<Session, DialError> {
    let base_url = parse_base_url(base)?;
    let (server, id) = sockjs_ids();
    let session_url = xhr_session_url(&base_url, &server, &id);
    let stream_url = endpoint(&session_url, "xhr_streaming");
    let send_url = endpoint(&session_url, "xhr_send");
    let http = client(opts)?;
    let limit = frame_limit(opts.max_message_size);

    let deadline = Instant::now() + opts.timeout;
    let open = async {
        let mut resp = open_stream(&http, &stream_url).await?;
        let mut lines = Lines::new(limit);
        loop {
            match read_line(&mut resp, &mut lines).await? {
                Some(line) if is_heartbeat_or_prelude(&line) => {}
                Some(line) if line == "o" => return Ok((resp, lines)),
                Some(line) => {
                    let start: String = line.chars().take(32).collect();
                    return Err(DialError::Protocol(format!(
                        "expected an `o` frame, got {start:?}"
                    )));
                }
                None => {
                    return Err(DialError::Protocol(
                        "the response ended before the `o` frame".into(),
                    ));
                }
            }
        }
    };
    let (resp, lines) = tokio::time::timeout_at(deadline, open)
        .await
        .map_err(|_| DialError::Timeout)??;
    let info = SessionInfo {
        transport: TransportKind::XhrStreaming,
        remote_addr: resp.remote_addr(),
        id,
    };
    let (session, in_tx, out_rx) = session::channel(info);
    let stop = CancellationToken::new();
    let receiver = Receiver {
        http: http.clone(),
        url: stream_url,
        timeout: opts.timeout,
        max_message_size: opts.max_message_size,
        silence: Silence::new(opts.heartbeat_timeout),
    };
    tokio::spawn(receive_loop(receiver, resp, lines, in_tx, stop.clone()));
    tokio::spawn(send_loop(http, send_url, out_rx, stop));
    Ok(session)
}

/// A line of only `h`: the prelude, or a heartbeat.
fn is_heartbeat_or_prelude(line: &str) -> bool {
    !line.is_empty() && line.bytes().all(|b| b == b'h')
}

/// Posts `xhr_streaming`; the response must be 200 ([`DialError::Handshake`] otherwise).
async fn open_stream(http: &reqwest::Client, url: &Url) -> Result<reqwest::Response, DialError> {
    let resp = http
        .post(url.clone())
        .header(CONTENT_TYPE, "text/plain")
        .send()
        .await
        .map_err(request_error)?;
    if resp.status() != StatusCode::OK {
        return Err(DialError::Handshake(format!("HTTP {}", resp.status())));
    }
    Ok(resp)
}

/// Reads `resp` until `lines` holds a whole line and returns it; `None` when the response ends
/// cleanly between lines.
async fn read_line(
    resp: &mut reqwest::Response,
    lines: &mut Lines,
) -> Result<Option<String>, DialError> {
    loop {
        if let Some(line) = lines.next_line()? {
            return Ok(Some(line));
        }
        match resp.chunk().await.map_err(request_error)? {
            Some(chunk) => lines.push(&chunk),
            None if lines.has_partial() => {
                return Err(DialError::Protocol(
                    "the response ended inside a frame".into(),
                ));
            }
            None => return Ok(None),
        }
    }
}

/// Splits the bytes of a streaming response into lines, whatever its chunking: a frame split
/// over several chunks, several frames in one chunk, a UTF-8 character cut between chunks.
#[derive(Debug)]
pub(super) struct Lines {
    buf: Vec<u8>,
    /// Where the next line starts in `buf`.
    start: usize,
    /// Bytes from `start` known to hold no newline.
    scanned: usize,
    /// Longest line accepted (the frame limit).
    limit: usize,
}

impl Lines {
    /// An empty buffer accepting lines of up to `limit` bytes.
    pub(super) fn new(limit: usize) -> Self {
        Lines {
            buf: Vec::new(),
            start: 0,
            scanned: 0,
            limit,
        }
    }

    /// Appends a chunk of the response.
    pub(super) fn push(&mut self, chunk: &[u8]) {
        if self.start > 0 {
            // Only the partial line is left: move it to the front.
            self.buf.drain(..self.start);
            self.start = 0;
        }
        self.buf.extend_from_slice(chunk);
    }

    /// The next whole line without its newline, `None` until one has arrived; an error for a
    /// line over the limit (even before its end arrives) or one that is not UTF-8.
    pub(super) fn next_line(&mut self) -> Result<Option<String>, DialError> {
        let pending = &self.buf[self.start..];
        let Some(i) = pending[self.scanned..].iter().position(|&b| b == b'\n') else {
            self.scanned = pending.len();
            if pending.len() > self.limit {
                return Err(self.too_long());
            }
            return Ok(None);
        };
        let len = self.scanned + i;
        if len > self.limit {
            return Err(self.too_long());
        }
        let line = std::str::from_utf8(&pending[..len])
            .map_err(|_| DialError::Protocol("a frame is not UTF-8".into()))?
            .to_owned();
        self.start += len + 1;
        self.scanned = 0;
        if self.start == self.buf.len() {
            self.buf.clear();
            self.start = 0;
        }
        Ok(Some(line))
    }

    /// Whether part of a line has arrived without its newline.
    pub(super) fn has_partial(&self) -> bool {
        self.buf.len() > self.start
    }

    fn too_long(&self) -> DialError {
        DialError::Protocol(format!("frame over the {} byte limit", self.limit))
    }
}

/// What the receiving task needs to re-open the stream.
struct Receiver {
    http: reqwest::Client,
    url: Url,
    /// Limit for a re-opening request's answer to start.
    timeout: Duration,
    max_message_size: usize,
    /// Ends the session when the server sends nothing for too long.
    silence: Silence,
}

/// Why [`receive`] stopped.
enum Ended {
    /// The session is over (logged).
    Over,
    /// The response ended cleanly, between frames: post again.
    Rotate,
}

/// Delivers frames from the stream, re-opening it each time the server ends a response, until
/// the session ends; then drops `in_tx` (ending the session) and stops the sender.
async fn receive_loop(
    mut r: Receiver,
    mut resp: reqwest::Response,
    mut lines: Lines,
    in_tx: mpsc::Sender<String>,
    stop: CancellationToken,
) {
    loop {
        match receive(&mut r, &mut resp, &mut lines, &in_tx, &stop).await {
            Ended::Over => break,
            Ended::Rotate => {}
        }
        // The server ended the response after its limit: continue on a new one.
        let reopen = tokio::time::timeout(r.timeout, open_stream(&r.http, &r.url));
        let reopened = tokio::select! {
            () = stop.cancelled() => break,
            () = r.silence.expired() => break,
            reopened = reopen => reopened,
        };
        match reopened {
            Ok(Ok(next)) => {
                resp = next;
                lines = Lines::new(lines.limit);
            }
            Ok(Err(DialError::Handshake(why))) => {
                debug!(%why, "re-opening the stream was refused: the session is gone");
                break;
            }
            Ok(Err(e)) => {
                debug!(error = %e, "re-opening the stream failed, closing");
                break;
            }
            Err(_) => {
                warn!(timeout = ?r.timeout, "no answer to re-opening the stream, closing");
                break;
            }
        }
    }
    stop.cancel();
}

/// Delivers the frames of one response until it ends or the session does.
async fn receive(
    r: &mut Receiver,
    resp: &mut reqwest::Response,
    lines: &mut Lines,
    in_tx: &mpsc::Sender<String>,
    stop: &CancellationToken,
) -> Ended {
    loop {
        let line = match lines.next_line() {
            Ok(Some(line)) => line,
            Ok(None) => {
                // Bytes waiting count before the silence limit, however late we look.
                let chunk = tokio::select! {
                    biased;
                    () = stop.cancelled() => return Ended::Over,
                    chunk = resp.chunk() => chunk,
                    () = r.silence.expired() => return Ended::Over,
                };
                match chunk {
                    Ok(Some(chunk)) => {
                        r.silence.heard();
                        lines.push(&chunk);
                        continue;
                    }
                    Ok(None) if lines.has_partial() => {
                        warn!("the stream ended inside a frame, closing");
                        return Ended::Over;
                    }
                    Ok(None) => return Ended::Rotate,
                    Err(e) => {
                        debug!(error = %error_chain(&e), "reading the stream failed, closing");
                        return Ended::Over;
                    }
                }
            }
            Err(e) => {
                warn!(error = %e, "bad stream from the server, closing");
                return Ended::Over;
            }
        };
        if line.is_empty() || is_heartbeat_or_prelude(&line) {
            continue;
        }
        let msgs = match decode_frame(&line, r.max_message_size) {
            Step::Deliver(msgs) => msgs,
            Step::Skip => continue,
            Step::End => return Ended::Over,
        };
        let delivered = tokio::select! {
            () = stop.cancelled() => false,
            ok = session::deliver(in_tx, msgs) => ok,
        };
        if !delivered {
            return Ended::Over;
        }
    }
}
