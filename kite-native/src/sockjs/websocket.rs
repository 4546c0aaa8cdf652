//! SockJS websocket (`/<server>/<session>/websocket`) and raw websocket (`/websocket`).

use std::net::SocketAddr;

use axum::extract::ws::{CloseFrame, Message, WebSocket, WebSocketUpgrade};
use axum::extract::{Path, State as AxState};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use futures_util::{SinkExt, StreamExt};
use kite_core::sockjs::{self, BROKEN_FRAME, MESSAGE_TOO_BIG};
use tracing::debug;

use super::http::RemoteAddr;
use super::{State, valid_segment};
use crate::session::{self, Outgoing, SessionInfo, TransportKind};

fn upgrade(ws: WebSocketUpgrade, state: &State) -> WebSocketUpgrade {
    // A little headroom: the SockJS array wrapping is not part of the message.
    let limit = state.options.max_message_size + 1024;
    ws.max_message_size(limit).max_frame_size(limit)
}

fn session_id() -> String {
    hex::encode(rand::random::<[u8; 10]>())
}

/// `GET /<server>/<session>/websocket`.
pub(crate) async fn sockjs(
    ws: WebSocketUpgrade,
    Path((server, session)): Path<(String, String)>,
    AxState(state): AxState<State>,
    RemoteAddr(remote): RemoteAddr,
) -> Response {
    if !state.options.websocket || !valid_segment(&server) || !valid_segment(&session) {
        return StatusCode::NOT_FOUND.into_response();
    }
    upgrade(ws, &state)
        .on_upgrade(move |socket| serve(socket, state, remote, true))
        .into_response()
}

/// `GET /websocket`: Kite.js's plain websocket transport, one message per text frame.
pub(crate) async fn raw(
    ws: WebSocketUpgrade,
    AxState(state): AxState<State>,
    RemoteAddr(remote): RemoteAddr,
) -> Response {
    if !state.options.raw_websocket {
        return StatusCode::NOT_FOUND.into_response();
    }
    upgrade(ws, &state)
        .on_upgrade(move |socket| serve(socket, state, remote, false))
        .into_response()
}

async fn serve(socket: WebSocket, state: State, remote: Option<SocketAddr>, framed: bool) {
    let info = SessionInfo {
        transport: if framed {
            TransportKind::WebSocket
        } else {
            TransportKind::RawWebSocket
        },
        remote_addr: remote,
        id: session_id(),
    };
    let id = info.id.clone();
    let (session, in_tx, mut out_rx) = session::channel(info);
    (state.on_session)(session);
    let (mut sink, mut stream) = socket.split();
    let max = state.options.max_message_size;

    if framed && sink.send(Message::text("o")).await.is_err() {
        return;
    }
    let delay = state.options.heartbeat_delay;
    let mut heartbeat = tokio::time::interval_at(tokio::time::Instant::now() + delay, delay);
    let mut buf = Vec::with_capacity(256);

    // One loop per connection: writes, reads and heartbeats. Closing (either side) ends it,
    // which drops `in_tx` so the runtime sees the session end.
    let close: Option<(u16, String)> = loop {
        tokio::select! {
            out = out_rx.recv() => match out {
                Some(Outgoing::Message(first)) => {
                    if framed {
                        // Batch everything queued right now into one `a[...]` frame.
                        let (batch, close_after) = session::drain_batch(first, &mut out_rx);
                        buf.clear();
                        sockjs::encode_messages_into(&mut buf, batch.iter().map(String::as_str));
                        let text = String::from_utf8(std::mem::take(&mut buf)).unwrap_or_default();
                        if sink.send(Message::text(text)).await.is_err() {
                            break None;
                        }
                        if close_after.is_some() {
                            break close_after;
                        }
                    } else if sink.send(Message::text(first)).await.is_err() {
                        break None;
                    }
                    heartbeat.reset();
                }
                Some(Outgoing::Close(code, reason)) => break Some((code, reason)),
                None => break Some((sockjs::GO_AWAY.0, sockjs::GO_AWAY.1.to_owned())),
            },
            inc = stream.next() => match inc {
                Some(Ok(Message::Text(text))) => {
                    if text.len() > max {
                        break Some((MESSAGE_TOO_BIG.0, MESSAGE_TOO_BIG.1.to_owned()));
                    }
                    let msgs = if framed {
                        match sockjs::decode_client_frame(&text) {
                            Ok(m) => m,
                            Err(e) => {
                                debug!(session = %id, error = %e, "broken SockJS frame");
                                break Some((BROKEN_FRAME.0, BROKEN_FRAME.1.to_owned()));
                            }
                        }
                    } else {
                        vec![text.to_string()]
                    };
                    if !session::deliver(&in_tx, msgs).await {
                        break None;
                    }
                }
                Some(Ok(Message::Binary(_))) => {
                    break Some((BROKEN_FRAME.0, BROKEN_FRAME.1.to_owned()));
                }
                Some(Ok(Message::Ping(_) | Message::Pong(_))) => {}
                Some(Ok(Message::Close(_))) | None => break None,
                Some(Err(e)) => {
                    debug!(session = %id, error = %e, "websocket read failed");
                    // tungstenite reports oversized messages as a capacity error.
                    let too_big = e.to_string().to_ascii_lowercase().contains("too long")
                        || e.to_string().to_ascii_lowercase().contains("size");
                    break too_big.then(|| (MESSAGE_TOO_BIG.0, MESSAGE_TOO_BIG.1.to_owned()));
                }
            },
            _ = heartbeat.tick(), if framed => {
                if sink.send(Message::text("h")).await.is_err() {
                    break None;
                }
            }
        }
    };
    drop(in_tx);
    if let Some((code, reason)) = close {
        if framed {
            let _ = sink
                .send(Message::text(sockjs::encode_close(code, &reason)))
                .await;
        }
        let ws_code = if framed { 1000 } else { code.max(1000) };
        let _ = sink
            .send(Message::Close(Some(CloseFrame {
                code: ws_code,
                reason: reason.into(),
            })))
            .await;
    }
    let _ = sink.close().await;
}
