//! Plain HTTP parts: welcome, `/info`, the iframe page, OPTIONS preflights, CORS, cookies,
//! caching headers and the error answers.

use std::hash::{Hash, Hasher};
use std::time::{Duration, SystemTime};

use axum::body::Body;
use axum::extract::{Request, State as AxState};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::{State, valid_segment};

/// `Cache-Control` of everything that must never be cached (session requests, `/info`).
pub(crate) const NO_CACHE: &str = "no-store, no-cache, no-transform, must-revalidate, max-age=0";
const ONE_YEAR_SECS: u64 = 31_536_000;
const CACHE_ONE_YEAR: &str = "public, max-age=31536000";

pub(crate) async fn welcome() -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "text/plain; charset=UTF-8")],
        "Welcome to SockJS!\n",
    )
}

pub(crate) async fn info(AxState(state): AxState<State>) -> Response {
    let o = &state.options;
    let body = kite_core::sockjs::info_body(o.websocket, o.cookie_needed, rand::random::<u32>());
    (
        [
            (header::CONTENT_TYPE, "application/json; charset=UTF-8"),
            (header::CACHE_CONTROL, NO_CACHE),
        ],
        body,
    )
        .into_response()
}

/// `Expires` one year from now.
fn expires_in_a_year() -> HeaderValue {
    let when = SystemTime::now() + Duration::from_secs(ONE_YEAR_SECS);
    HeaderValue::from_str(&httpdate::fmt_http_date(when)).expect("an HTTP date is a valid header")
}

fn preflight(methods: &'static str) -> Response {
    let mut resp = (
        StatusCode::NO_CONTENT,
        [
            (header::ACCESS_CONTROL_ALLOW_METHODS, methods),
            (header::CACHE_CONTROL, CACHE_ONE_YEAR),
            (header::ACCESS_CONTROL_MAX_AGE, "31536000"),
        ],
    )
        .into_response();
    resp.headers_mut()
        .insert(header::EXPIRES, expires_in_a_year());
    resp
}

pub(crate) async fn info_options() -> Response {
    preflight("OPTIONS, GET")
}

/// The preflight of a session endpoint; its path must name a valid server and session like
/// every other method's (else 404, as the extractor answers).
pub(crate) async fn xhr_options(_: super::SessionId) -> Response {
    preflight("OPTIONS, POST")
}

/// 405 with `Allow`, no body and no content type.
pub(crate) async fn method_not_allowed(allow: &'static str) -> Response {
    (StatusCode::METHOD_NOT_ALLOWED, [(header::ALLOW, allow)]).into_response()
}

/// 404, no body.
pub(crate) async fn not_found() -> Response {
    StatusCode::NOT_FOUND.into_response()
}

/// The wrong method on a session endpoint: 405, unless the server or session segment is
/// invalid (then the path does not exist: 404).
pub(crate) async fn session_method_not_allowed(req: Request, allow: &'static str) -> Response {
    let mut segments = req.uri().path().rsplit('/').skip(1);
    let session = segments.next().unwrap_or_default();
    let server = segments.next().unwrap_or_default();
    if valid_segment(server) && valid_segment(session) {
        method_not_allowed(allow).await
    } else {
        not_found().await
    }
}

/// A 500 answer with a plain text message, as the protocol words them.
pub(crate) fn server_error(message: &'static str) -> Response {
    (
        StatusCode::INTERNAL_SERVER_ERROR,
        [(header::CONTENT_TYPE, "text/plain; charset=UTF-8")],
        message,
    )
        .into_response()
}

/// Whether `path` names the iframe page: `/iframe.html` or `/iframe<version>.html`, the version
/// made of `[0-9a-z._-]`.
fn is_iframe_path(path: &str) -> bool {
    path.strip_prefix("/iframe")
        .and_then(|rest| rest.strip_suffix(".html"))
        .is_some_and(|v| {
            v.bytes().all(|b| {
                b.is_ascii_digit() || b.is_ascii_lowercase() || matches!(b, b'-' | b'.' | b'_')
            })
        })
}

/// The iframe page (strongly cached, with an `ETag` answered by 304), or 404 for any other
/// unknown path.
pub(crate) async fn iframe_or_not_found(AxState(state): AxState<State>, req: Request) -> Response {
    let path = req.uri().path();
    if req.method() != axum::http::Method::GET || !is_iframe_path(path) {
        return not_found().await;
    }
    let page = kite_core::sockjs::iframe_page(&state.options.sockjs_url);
    let mut hasher = std::hash::DefaultHasher::new();
    page.hash(&mut hasher);
    let etag = format!("\"{:016x}\"", hasher.finish());
    let fresh = req
        .headers()
        .get(header::IF_NONE_MATCH)
        .is_some_and(|v| v.as_bytes() == etag.as_bytes());
    let mut resp = if fresh {
        StatusCode::NOT_MODIFIED.into_response()
    } else {
        (
            [(header::CONTENT_TYPE, "text/html; charset=UTF-8")],
            Body::from(page),
        )
            .into_response()
    };
    let h = resp.headers_mut();
    h.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static(CACHE_ONE_YEAR),
    );
    h.insert(header::EXPIRES, expires_in_a_year());
    if let Ok(v) = HeaderValue::from_str(&etag) {
        h.insert(header::ETAG, v);
    }
    resp
}

/// The endpoints of a session that load balancers must keep sticky when cookies are needed.
fn is_session_request(path: &str) -> bool {
    let mut segments = path.rsplit('/');
    let endpoint = segments.next().unwrap_or_default();
    matches!(
        endpoint,
        "xhr" | "xhr_send" | "xhr_streaming" | "eventsource" | "htmlfile" | "jsonp" | "jsonp_send"
    ) && segments.clone().take(2).all(valid_segment)
        && segments.count() >= 3
}

/// The `JSESSIONID` the client sent, if any.
fn jsessionid(headers: &HeaderMap) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(name, _)| *name == "JSESSIONID")
        .map(|(_, value)| value.to_owned())
}

/// Adds CORS headers to every response (the request's `Origin` echoed with credentials
/// allowed, or `*` without), echoes requested headers, and sets `JSESSIONID` on session
/// requests when the server needs cookies.
pub(crate) async fn cors(AxState(state): AxState<State>, req: Request, next: Next) -> Response {
    let origin = req.headers().get(header::ORIGIN).cloned();
    let request_headers = req
        .headers()
        .get(header::ACCESS_CONTROL_REQUEST_HEADERS)
        .filter(|v| !v.is_empty())
        .cloned();
    let cookie = (state.options.cookie_needed && is_session_request(req.uri().path()))
        .then(|| jsessionid(req.headers()).unwrap_or_else(|| "dummy".to_owned()));
    let mut resp = next.run(req).await;
    let h = resp.headers_mut();
    match origin {
        Some(origin) => {
            h.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, origin);
            h.insert(
                header::ACCESS_CONTROL_ALLOW_CREDENTIALS,
                HeaderValue::from_static("true"),
            );
        }
        None => {
            h.insert(
                header::ACCESS_CONTROL_ALLOW_ORIGIN,
                HeaderValue::from_static("*"),
            );
        }
    }
    if let Some(v) = request_headers {
        h.insert(header::ACCESS_CONTROL_ALLOW_HEADERS, v);
    }
    if let Some(id) = cookie
        && resp.status() != StatusCode::NOT_FOUND
        && let Ok(v) = HeaderValue::from_str(&format!("JSESSIONID={id}; path=/"))
    {
        resp.headers_mut().insert(header::SET_COOKIE, v);
    }
    resp
}

/// The peer address, when the server was started with connect info.
pub(crate) struct RemoteAddr(pub(crate) Option<std::net::SocketAddr>);

impl<S: Send + Sync> axum::extract::FromRequestParts<S> for RemoteAddr {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        _state: &S,
    ) -> Result<Self, Self::Rejection> {
        let ext = &parts.extensions;
        Ok(RemoteAddr(
            ext.get::<axum::extract::ConnectInfo<PeerAddr>>()
                .map(|c| c.0.0)
                .or_else(|| {
                    ext.get::<axum::extract::ConnectInfo<std::net::SocketAddr>>()
                        .map(|c| c.0)
                }),
        ))
    }
}

/// The peer address of a connection, as connect info for plain and TLS listeners alike:
/// [`crate::server`] gives it to every request, and so does `axum::serve` with
/// `router.into_make_service_with_connect_info::<PeerAddr>()`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PeerAddr(pub std::net::SocketAddr);

impl
    axum::extract::connect_info::Connected<axum::serve::IncomingStream<'_, tokio::net::TcpListener>>
    for PeerAddr
{
    fn connect_info(stream: axum::serve::IncomingStream<'_, tokio::net::TcpListener>) -> Self {
        PeerAddr(*stream.remote_addr())
    }
}

#[cfg(feature = "tls")]
impl
    axum::extract::connect_info::Connected<axum::serve::IncomingStream<'_, crate::tls::TlsListener>>
    for PeerAddr
{
    fn connect_info(stream: axum::serve::IncomingStream<'_, crate::tls::TlsListener>) -> Self {
        PeerAddr(*stream.remote_addr())
    }
}

/// A TCP listener whose connections have Nagle's algorithm off (calls are small messages that
/// must leave at once), for `axum::serve`. [`crate::server`] does the same, with connection
/// budgets and timeouts `axum::serve` lacks.
#[derive(Debug)]
pub struct NoDelayListener(pub tokio::net::TcpListener);

impl axum::serve::Listener for NoDelayListener {
    type Io = tokio::net::TcpStream;
    type Addr = std::net::SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        let (tcp, addr) = axum::serve::Listener::accept(&mut self.0).await;
        let _ = tcp.set_nodelay(true);
        (tcp, addr)
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        self.0.local_addr()
    }
}

impl axum::extract::connect_info::Connected<axum::serve::IncomingStream<'_, NoDelayListener>>
    for PeerAddr
{
    fn connect_info(stream: axum::serve::IncomingStream<'_, NoDelayListener>) -> Self {
        PeerAddr(*stream.remote_addr())
    }
}
