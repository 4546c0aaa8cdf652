//! The sending requests of the HTTP transports: `xhr_send` (a JSON array of strings) and
//! `jsonp_send` (the same, raw or as the `d` field of a form).
//!
//! Errors are the protocol's: 404 for an unknown session, 500 `Payload expected.` for an empty
//! body, 500 `Broken JSON encoding.` for anything that is not a JSON array of strings (or one
//! string), and 413 for a body over the message limit (which also closes the session with
//! `c[1009,"Message too big"]`, as an oversized websocket frame does).
//!
//! One send request of a session at a time reads its body and delivers it (others wait their
//! turn), so a session holds at most one body being read, plus the messages waiting for the
//! runtime within their byte budget.

use axum::body::Body;
use axum::extract::State as AxState;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use kite_core::sockjs;

use super::http::{NO_CACHE, server_error};
use super::session::{HttpSession, lookup};
use super::{SessionId, State};
use crate::session;

/// Why a body was refused.
enum Refused {
    NotFound,
    TooBig,
    PayloadExpected,
    BrokenJson,
}

impl IntoResponse for Refused {
    fn into_response(self) -> Response {
        match self {
            Refused::NotFound => StatusCode::NOT_FOUND.into_response(),
            Refused::TooBig => (
                StatusCode::PAYLOAD_TOO_LARGE,
                [(header::CONTENT_TYPE, "text/plain; charset=UTF-8")],
                "Message too big.",
            )
                .into_response(),
            Refused::PayloadExpected => server_error("Payload expected."),
            Refused::BrokenJson => server_error("Broken JSON encoding."),
        }
    }
}

/// Reads the body of a send request on session `id` within the message limit, then hands the
/// messages of the frame `decode` makes of it to the runtime, while no other send request of
/// the session does.
async fn read_and_deliver(
    state: &State,
    id: &str,
    body: Body,
    decode: impl FnOnce(Vec<u8>) -> Vec<u8>,
) -> Result<(), Refused> {
    let session = lookup(state, id).ok_or(Refused::NotFound)?;
    let _turn = session.sending.lock().await;
    let bytes = read(state, &session, body).await?;
    deliver(state, &session, &decode(bytes)).await
}

/// The body of a send request read within the message limit.
async fn read(state: &State, session: &HttpSession, body: Body) -> Result<Vec<u8>, Refused> {
    // A frame may hold one message of the limit, JSON-escaped (up to twice as long), or a
    // batch of smaller ones; each message is then held to the limit.
    let limit = state
        .options
        .max_message_size
        .saturating_mul(2)
        .saturating_add(session::BATCH_BUDGET);
    match axum::body::to_bytes(body, limit).await {
        Ok(bytes) => Ok(bytes.to_vec()),
        Err(_) => {
            let (c, r) = sockjs::MESSAGE_TOO_BIG;
            session.tx.close(c, r);
            Err(Refused::TooBig)
        }
    }
}

/// Decodes a client frame and hands its messages to the session's runtime, in order.
async fn deliver(state: &State, session: &HttpSession, frame: &[u8]) -> Result<(), Refused> {
    if frame.iter().all(u8::is_ascii_whitespace) {
        return Err(Refused::PayloadExpected);
    }
    let msgs = std::str::from_utf8(frame)
        .ok()
        .and_then(|t| sockjs::decode_client_frame(t).ok())
        .ok_or(Refused::BrokenJson)?;
    if msgs
        .iter()
        .any(|m| m.len() > state.options.max_message_size)
    {
        let (c, r) = sockjs::MESSAGE_TOO_BIG;
        session.tx.close(c, r);
        return Err(Refused::TooBig);
    }
    // A session that is closed but not yet expired takes messages and drops them (its next
    // receiver gets the close frame), as sockjs-node does.
    if let Some(in_tx) = session.incoming() {
        in_tx.deliver(msgs).await;
    }
    Ok(())
}

fn uncached_text(status: StatusCode, body: &'static str) -> Response {
    let mut resp = (status, body).into_response();
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=UTF-8"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static(NO_CACHE));
    resp
}

/// `POST .../xhr_send`: 204 once the messages are handed over.
pub(crate) async fn xhr_send(
    SessionId(id): SessionId,
    AxState(state): AxState<State>,
    body: Body,
) -> Response {
    match read_and_deliver(&state, &id, body, |bytes| bytes).await {
        Ok(()) => uncached_text(StatusCode::NO_CONTENT, ""),
        Err(refused) => refused.into_response(),
    }
}

/// `POST .../jsonp_send`: the frame is the body, or the `d` field of a form body; `ok` once
/// the messages are handed over (some browsers mishandle 204 here).
pub(crate) async fn jsonp_send(
    SessionId(id): SessionId,
    AxState(state): AxState<State>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let form = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| {
            v.trim_start()
                .to_ascii_lowercase()
                .starts_with("application/x-www-form-urlencoded")
        });
    let decode = |bytes: Vec<u8>| {
        if form {
            form_urlencoded::parse(&bytes)
                .find(|(k, _)| k == "d")
                .map(|(_, v)| v.into_owned().into_bytes())
                .unwrap_or_default()
        } else {
            bytes
        }
    };
    match read_and_deliver(&state, &id, body, decode).await {
        Ok(()) => uncached_text(StatusCode::OK, "ok"),
        Err(refused) => refused.into_response(),
    }
}
