//! SockJS websocket and raw websocket clients.

use futures_util::{SinkExt, StreamExt};
use kite_core::sockjs::{self, Frame};
use reqwest::Url;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::{self, Message};
use tracing::debug;

use super::{DialError, DialOptions, sockjs_ids};
use crate::session::{self, Outgoing, Session, SessionInfo, TransportKind};

/// The SockJS websocket URL for a base URL, as Go's client builds it: `https`/`wss` → `wss`,
/// else `ws`; default port added; `/<server>/<session>/websocket` appended to the path; the
/// query string kept.
pub fn sockjs_websocket_url(base: &str, server: &str, session: &str) -> Result<String, DialError> {
    let mut url = Url::parse(base).map_err(|e| DialError::InvalidUrl(format!("{base}: {e}")))?;
    let secure = matches!(url.scheme(), "https" | "wss");
    let port = url
        .port_or_known_default()
        .unwrap_or(if secure { 443 } else { 80 });
    let host = url
        .host_str()
        .ok_or_else(|| DialError::InvalidUrl(format!("{base}: no host")))?
        .to_owned();
    let path = format!(
        "{}/{server}/{session}/websocket",
        url.path().trim_end_matches('/')
    );
    url.set_path(&path);
    let query = url.query().map(|q| format!("?{q}")).unwrap_or_default();
    let host = if host.contains(':') && !host.starts_with('[') {
        format!("[{host}]")
    } else {
        host
    };
    Ok(format!(
        "{}://{host}:{port}{}{query}",
        if secure { "wss" } else { "ws" },
        url.path()
    ))
}

fn origin_of(base: &str) -> Option<String> {
    let url = Url::parse(base).ok()?;
    let scheme = match url.scheme() {
        "wss" => "https",
        "ws" => "http",
        s => s,
    };
    Some(format!("{scheme}://{}", url.host_str()?))
}

fn ws_config(opts: &DialOptions) -> WebSocketConfig {
    let limit = opts.max_message_size + 1024;
    WebSocketConfig::default()
        .max_message_size(Some(limit))
        .max_frame_size(Some(limit))
}

type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

async fn connect(url: &str, origin: Option<String>, opts: &DialOptions) -> Result<Ws, DialError> {
    let mut request = url
        .into_client_request()
        .map_err(|e| DialError::InvalidUrl(format!("{url}: {e}")))?;
    if let Some(origin) = origin.and_then(|o| HeaderValue::from_str(&o).ok()) {
        request.headers_mut().insert("Origin", origin);
    }
    for (k, v) in &opts.headers {
        if let (Ok(name), Ok(value)) = (
            tungstenite::http::HeaderName::from_bytes(k.as_bytes()),
            HeaderValue::from_str(v),
        ) {
            request.headers_mut().insert(name, value);
        }
    }
    let connector = if url.starts_with("wss:") {
        let config = crate::tls::client_config(&opts.root_certificates)
            .map_err(|e| DialError::InvalidUrl(format!("TLS roots: {e}")))?;
        Some(tokio_tungstenite::Connector::Rustls(std::sync::Arc::new(
            config,
        )))
    } else {
        None
    };
    let connect = tokio_tungstenite::connect_async_tls_with_config(
        request,
        Some(ws_config(opts)),
        false,
        connector,
    );
    match tokio::time::timeout(opts.handshake_timeout, connect).await {
        Err(_) => Err(DialError::Timeout),
        Ok(Ok((ws, _))) => Ok(ws),
        Ok(Err(tungstenite::Error::Http(resp))) => {
            Err(DialError::Handshake(format!("HTTP {}", resp.status())))
        }
        Ok(Err(tungstenite::Error::Io(e))) => Err(DialError::Io(e.to_string())),
        Ok(Err(e)) => Err(DialError::Handshake(e.to_string())),
    }
}

/// Dials the SockJS websocket of the kite at `base` and waits for its `o` frame.
pub async fn dial_websocket(base: &str, opts: &DialOptions) -> Result<Session, DialError> {
    let (server, session_id) = sockjs_ids();
    let url = sockjs_websocket_url(base, &server, &session_id)?;
    let mut ws = connect(&url, origin_of(base), opts).await?;
    let open = async {
        loop {
            match ws.next().await {
                Some(Ok(Message::Text(t))) => return Frame::decode(&t).ok(),
                Some(Ok(Message::Ping(_) | Message::Pong(_))) => continue,
                _ => return None,
            }
        }
    };
    match tokio::time::timeout(opts.handshake_timeout, open).await {
        Ok(Some(Frame::Open)) => {}
        Ok(Some(Frame::Close { code, reason })) => {
            return Err(DialError::Handshake(format!("closed: {code} {reason}")));
        }
        Ok(_) => return Err(DialError::Handshake("no SockJS open frame".into())),
        Err(_) => return Err(DialError::Timeout),
    }
    Ok(run(ws, session_id, TransportKind::WebSocket, opts))
}

/// Dials a plain websocket at `url` verbatim (Kite.js servers, or `/kite/websocket`).
pub async fn dial_raw_websocket(url: &str, opts: &DialOptions) -> Result<Session, DialError> {
    let ws_url = if let Some(rest) = url.strip_prefix("http") {
        format!("ws{rest}")
    } else {
        url.to_owned()
    };
    let ws = connect(&ws_url, origin_of(url), opts).await?;
    let (_, id) = sockjs_ids();
    Ok(run(ws, id, TransportKind::RawWebSocket, opts))
}

fn run(ws: Ws, id: String, transport: TransportKind, opts: &DialOptions) -> Session {
    let info = SessionInfo {
        transport,
        remote_addr: match ws.get_ref() {
            tokio_tungstenite::MaybeTlsStream::Plain(s) => s.peer_addr().ok(),
            _ => None,
        },
        id,
    };
    let (session, in_tx, mut out_rx) = session::channel(info);
    let framed = transport == TransportKind::WebSocket;
    let max = opts.max_message_size;
    tokio::spawn(async move {
        let (mut sink, mut stream) = ws.split();
        loop {
            tokio::select! {
                out = out_rx.recv() => match out {
                    Some(Outgoing::Message(first)) => {
                        let text = if framed {
                            let (batch, close) = session::drain_batch(first, &mut out_rx);
                            let frame = sockjs::encode_client_frame(batch.iter().map(String::as_str));
                            if close.is_some() {
                                let _ = sink.send(Message::text(frame)).await;
                                break;
                            }
                            frame
                        } else {
                            first
                        };
                        if sink.send(Message::text(text)).await.is_err() {
                            break;
                        }
                    }
                    Some(Outgoing::Close(..)) | None => break,
                },
                inc = stream.next() => match inc {
                    Some(Ok(Message::Text(t))) => {
                        if t.len() > max {
                            debug!("message over the size limit, closing");
                            break;
                        }
                        let msgs = if framed {
                            match Frame::decode(&t) {
                                Ok(Frame::Messages(m)) => m,
                                Ok(Frame::Message(m)) => vec![m],
                                Ok(Frame::Open | Frame::Heartbeat) => continue,
                                Ok(Frame::Close { code, reason }) => {
                                    debug!(code, %reason, "server closed the session");
                                    break;
                                }
                                Err(e) => {
                                    debug!(error = %e, "broken frame from server");
                                    break;
                                }
                            }
                        } else {
                            vec![t.to_string()]
                        };
                        if !session::deliver(&in_tx, msgs).await {
                            break;
                        }
                    }
                    Some(Ok(Message::Ping(_) | Message::Pong(_) | Message::Frame(_))) => {}
                    Some(Ok(Message::Binary(_))) if framed => break,
                    Some(Ok(Message::Binary(_))) => {}
                    Some(Ok(Message::Close(_))) | None => break,
                    Some(Err(e)) => {
                        debug!(error = %e, "websocket read failed");
                        break;
                    }
                },
            }
        }
        drop(in_tx);
        let _ = sink.send(Message::Close(None)).await;
        let _ = sink.close().await;
    });
    session
}
