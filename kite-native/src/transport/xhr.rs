//! SockJS xhr-polling client.

use std::time::Duration;

use kite_core::sockjs::{self, Frame};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::debug;

use super::{DialError, DialOptions, sockjs_ids};
use crate::session::{self, Outgoing, Session, SessionInfo, TransportKind};

fn client(opts: &DialOptions) -> Result<reqwest::Client, DialError> {
    let mut headers = reqwest::header::HeaderMap::new();
    for (k, v) in &opts.headers {
        if let (Ok(name), Ok(value)) = (
            reqwest::header::HeaderName::from_bytes(k.as_bytes()),
            reqwest::header::HeaderValue::from_str(v),
        ) {
            headers.insert(name, value);
        }
    }
    let mut builder = reqwest::Client::builder();
    for pem in &opts.root_certificates {
        let cert = reqwest::Certificate::from_pem(pem.as_bytes())
            .map_err(|e| DialError::InvalidUrl(format!("TLS roots: {e}")))?;
        builder = builder.add_root_certificate(cert);
    }
    builder
        .default_headers(headers)
        .connect_timeout(opts.timeout)
        .build()
        .map_err(|e| DialError::Io(e.to_string()))
}

fn io(e: reqwest::Error) -> DialError {
    if e.is_timeout() {
        DialError::Timeout
    } else {
        DialError::Io(e.to_string())
    }
}

/// Dials the kite at `base` over xhr-polling: `POST <base>/<server>/<session>/xhr` must answer
/// `o`; then a task polls and another sends (`xhr_send`), batching queued messages.
pub async fn dial_xhr(base: &str, opts: &DialOptions) -> Result<Session, DialError> {
    let base = base.trim_end_matches('/');
    if !(base.starts_with("http://") || base.starts_with("https://")) {
        return Err(DialError::InvalidUrl(format!("{base}: xhr needs http(s)")));
    }
    let (server, id) = sockjs_ids();
    let url = format!("{base}/{server}/{id}");
    let http = client(opts)?;
    let open = tokio::time::timeout(
        opts.timeout,
        http.post(format!("{url}/xhr"))
            .header("Content-Type", "text/plain")
            .send(),
    )
    .await
    .map_err(|_| DialError::Timeout)?
    .map_err(io)?;
    if open.status() != reqwest::StatusCode::OK {
        return Err(DialError::Handshake(format!("HTTP {}", open.status())));
    }
    let body = tokio::time::timeout(opts.timeout, open.text())
        .await
        .map_err(|_| DialError::Timeout)?
        .map_err(io)?;
    if !body.starts_with('o') {
        return Err(DialError::Handshake(format!(
            "expected an open frame, got {body:?}"
        )));
    }
    let info = SessionInfo {
        transport: TransportKind::XhrPolling,
        remote_addr: None,
        id,
    };
    let (session, in_tx, out_rx) = session::channel(info);
    let stop = CancellationToken::new();
    tokio::spawn(poll_loop(
        http.clone(),
        url.clone(),
        in_tx,
        stop.clone(),
        opts.timeout,
        opts.max_message_size,
    ));
    tokio::spawn(send_loop(http, url, out_rx, stop));
    Ok(session)
}

async fn poll_loop(
    http: reqwest::Client,
    url: String,
    in_tx: mpsc::Sender<String>,
    stop: CancellationToken,
    timeout: Duration,
    max: usize,
) {
    let poll_url = format!("{url}/xhr");
    'outer: loop {
        let poll = async {
            let resp = http.post(&poll_url).send().await?;
            let status = resp.status();
            let body = resp.text().await?;
            Ok::<_, reqwest::Error>((status, body))
        };
        let (status, body) = tokio::select! {
            () = stop.cancelled() => break,
            r = tokio::time::timeout(timeout, poll) => match r {
                // No answer in time: abandon the poll and issue a new one.
                Err(_) => continue,
                Ok(Err(e)) => { debug!(error = %e, "poll failed"); break; }
                Ok(Ok(r)) => r,
            },
        };
        if status == reqwest::StatusCode::NOT_FOUND || !status.is_success() {
            debug!(%status, "poll refused, session ended");
            break;
        }
        if body.len() > max + 1024 {
            debug!("poll answer over the size limit, closing");
            break;
        }
        for line in body.split('\n').filter(|l| !l.is_empty()) {
            let msgs = match Frame::decode(line) {
                Ok(Frame::Messages(m)) => m,
                Ok(Frame::Message(m)) => vec![m],
                Ok(Frame::Open | Frame::Heartbeat) => continue,
                Ok(Frame::Close { code, reason }) => {
                    debug!(code, %reason, "server closed the session");
                    break 'outer;
                }
                Err(e) => {
                    debug!(error = %e, "broken frame from server");
                    break 'outer;
                }
            };
            if !session::deliver(&in_tx, msgs).await {
                break 'outer;
            }
        }
    }
    stop.cancel();
}

async fn send_loop(
    http: reqwest::Client,
    url: String,
    mut out_rx: mpsc::UnboundedReceiver<Outgoing>,
    stop: CancellationToken,
) {
    let send_url = format!("{url}/xhr_send");
    loop {
        let first = tokio::select! {
            () = stop.cancelled() => break,
            out = out_rx.recv() => out,
        };
        let (batch, close) = match first {
            Some(Outgoing::Message(m)) => session::drain_batch(m, &mut out_rx),
            Some(Outgoing::Close(..)) | None => break,
        };
        let body = sockjs::encode_client_frame(batch.iter().map(String::as_str));
        let sent = http
            .post(&send_url)
            .header("Content-Type", "text/plain;charset=UTF-8")
            .body(body)
            .send()
            .await;
        match sent {
            Ok(r) if r.status().is_success() => {}
            Ok(r) => {
                debug!(status = %r.status(), "xhr_send refused, session ended");
                break;
            }
            Err(e) => {
                debug!(error = %e, "xhr_send failed");
                break;
            }
        }
        if close.is_some() {
            break;
        }
    }
    stop.cancel();
}
