//! SockJS xhr-streaming client.
//!
//! `POST <base>/<server>/<session>/xhr_streaming` answers with a prelude (a line of `h`), then
//! `o`, then one frame per line for as long as the server keeps the response open; after its
//! response limit the server ends the response and the client posts again on the same session
//! (the new response repeats the prelude, without `o`). Messages go out through `xhr_send`, as
//! with xhr-polling.

use reqwest::header::CONTENT_TYPE;
use reqwest::{StatusCode, Url};
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

use super::url::{endpoint, parse_base_url, sockjs_ids, xhr_session_url};
use super::xhr::{client, request_error, send_loop};
use super::{DialError, DialOptions, Step, decode_frame, frame_limit};
use crate::session::{self, Session, SessionInfo, TransportKind};

/// Dials the kite at `base` over xhr-streaming: the first response must answer 200 and bring
/// its prelude and the `o` frame within [`DialOptions::timeout`] (a proxy that buffers
/// responses fails here, and [`super::Transport::Auto`] then falls back to xhr-polling).
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
        let mut lines = open_stream(&http, &stream_url, limit).await?;
        loop {
            match lines.next_line().await? {
                Some(line) if is_heartbeat_or_prelude(&line) => {}
                Some(line) if line == "o" => return Ok(lines),
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
    let lines = tokio::time::timeout_at(deadline, open)
        .await
        .map_err(|_| DialError::Timeout)??;
    let info = SessionInfo {
        transport: TransportKind::XhrStreaming,
        remote_addr: lines.resp.remote_addr(),
        id,
    };
    let (session, in_tx, out_rx) = session::channel(info);
    let stop = CancellationToken::new();
    let receiver = Receiver {
        http: http.clone(),
        url: stream_url,
        limit,
        max_message_size: opts.max_message_size,
        silence: opts.heartbeat_timeout,
    };
    tokio::spawn(receive_loop(receiver, lines, in_tx, stop.clone()));
    tokio::spawn(send_loop(http, send_url, out_rx, stop));
    Ok(session)
}

/// A line of only `h`: the prelude, or a heartbeat.
fn is_heartbeat_or_prelude(line: &str) -> bool {
    !line.is_empty() && line.bytes().all(|b| b == b'h')
}

/// Posts `xhr_streaming`; the response must be 200.
async fn open_stream(http: &reqwest::Client, url: &Url, limit: usize) -> Result<Lines, DialError> {
    let resp = http
        .post(url.clone())
        .header(CONTENT_TYPE, "text/plain")
        .send()
        .await
        .map_err(request_error)?;
    if resp.status() != StatusCode::OK {
        return Err(DialError::Handshake(format!("HTTP {}", resp.status())));
    }
    Ok(Lines {
        resp,
        buf: Vec::new(),
        limit,
    })
}

/// The lines of a streaming response, whatever its chunking.
struct Lines {
    resp: reqwest::Response,
    buf: Vec<u8>,
    /// Longest line accepted.
    limit: usize,
}

impl Lines {
    /// The next line without its newline; `None` when the response has ended.
    async fn next_line(&mut self) -> Result<Option<String>, DialError> {
        let mut searched = 0;
        loop {
            if let Some(i) = self.buf[searched..].iter().position(|&b| b == b'\n') {
                let end = searched + i;
                let line: Vec<u8> = self.buf.drain(..=end).take(end).collect();
                return String::from_utf8(line)
                    .map(Some)
                    .map_err(|_| DialError::Protocol("a frame is not UTF-8".into()));
            }
            searched = self.buf.len();
            if self.buf.len() > self.limit {
                return Err(DialError::Protocol(format!(
                    "frame over the {} byte limit",
                    self.limit
                )));
            }
            match self.resp.chunk().await.map_err(request_error)? {
                Some(chunk) => self.buf.extend_from_slice(&chunk),
                // A partial last line is dropped: a response ends after whole frames.
                None => return Ok(None),
            }
        }
    }
}

/// What the receiving task needs to re-open the stream.
struct Receiver {
    http: reqwest::Client,
    url: Url,
    limit: usize,
    max_message_size: usize,
    /// How long the server may stay silent before it counts as dead.
    silence: Option<std::time::Duration>,
}

/// Delivers frames from the stream, re-opening it each time the server ends a response, until
/// the session ends; then drops `in_tx` (ending the session) and stops the sender.
async fn receive_loop(
    r: Receiver,
    mut lines: Lines,
    in_tx: mpsc::Sender<String>,
    stop: CancellationToken,
) {
    let mut last_heard = Instant::now();
    'session: loop {
        let dead_at = super::silence_deadline(last_heard, r.silence);
        let line = tokio::select! {
            () = stop.cancelled() => break,
            line = lines.next_line() => line,
            () = super::sleep_until(dead_at) => {
                warn!(silence = ?r.silence, "the server has been silent too long, closing");
                break;
            }
        };
        last_heard = Instant::now();
        let line = match line {
            Ok(Some(line)) => line,
            Ok(None) => {
                // The response limit: continue the session on a new response.
                let reopened = tokio::select! {
                    () = stop.cancelled() => break,
                    reopened = open_stream(&r.http, &r.url, r.limit) => reopened,
                };
                match reopened {
                    Ok(next) => {
                        lines = next;
                        continue;
                    }
                    Err(e) => {
                        debug!(error = %e, "re-opening the stream failed, closing");
                        break;
                    }
                }
            }
            Err(e) => {
                debug!(error = %e, "reading the stream failed, closing");
                break;
            }
        };
        if is_heartbeat_or_prelude(&line) {
            continue;
        }
        let msgs = match decode_frame(&line, r.max_message_size) {
            Step::Deliver(msgs) => msgs,
            Step::Skip => continue,
            Step::End => break,
        };
        let delivered = tokio::select! {
            () = stop.cancelled() => false,
            ok = session::deliver(&in_tx, msgs) => ok,
        };
        if !delivered {
            break 'session;
        }
    }
    stop.cancel();
}
