//! Plain HTTP parts: welcome, `/info`, OPTIONS preflights, CORS and no-cache headers.

use axum::extract::Request;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::State;

pub(crate) const NO_CACHE: &str = "no-store, no-cache, no-transform, must-revalidate, max-age=0";
const ONE_YEAR: &str = "31536000";

pub(crate) async fn welcome() -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "text/plain; charset=UTF-8")],
        "Welcome to SockJS!\n",
    )
}

pub(crate) async fn info(axum::extract::State(state): axum::extract::State<State>) -> Response {
    let body =
        kite_core::sockjs::info_body(state.options.websocket, false, rand::random::<u32>() >> 1);
    (
        [
            (header::CONTENT_TYPE, "application/json; charset=UTF-8"),
            (header::CACHE_CONTROL, NO_CACHE),
        ],
        body,
    )
        .into_response()
}

fn preflight(methods: &'static str) -> Response {
    (
        StatusCode::NO_CONTENT,
        [
            (header::ACCESS_CONTROL_ALLOW_METHODS, methods),
            (header::CACHE_CONTROL, "public, max-age=31536000"),
            (header::ACCESS_CONTROL_MAX_AGE, ONE_YEAR),
        ],
    )
        .into_response()
}

pub(crate) async fn info_options() -> Response {
    preflight("OPTIONS, GET")
}

pub(crate) async fn xhr_options() -> Response {
    preflight("OPTIONS, POST")
}

/// Adds CORS headers to every response: the request's `Origin` echoed (or `*`), credentials
/// allowed, requested headers echoed.
pub(crate) async fn cors(req: Request, next: Next) -> Response {
    let headers: HeaderMap = req.headers().clone();
    let mut resp = next.run(req).await;
    let h = resp.headers_mut();
    let origin = headers
        .get(header::ORIGIN)
        .filter(|o| o.as_bytes() != b"null")
        .cloned()
        .unwrap_or(HeaderValue::from_static("*"));
    h.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, origin);
    h.insert(
        header::ACCESS_CONTROL_ALLOW_CREDENTIALS,
        HeaderValue::from_static("true"),
    );
    if let Some(req_headers) = headers.get(header::ACCESS_CONTROL_REQUEST_HEADERS) {
        h.insert(header::ACCESS_CONTROL_ALLOW_HEADERS, req_headers.clone());
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

/// The peer address of a connection, as connect info for plain and TLS listeners alike
/// (`router.into_make_service_with_connect_info::<PeerAddr>()`).
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

impl
    axum::extract::connect_info::Connected<axum::serve::IncomingStream<'_, crate::tls::TlsListener>>
    for PeerAddr
{
    fn connect_info(stream: axum::serve::IncomingStream<'_, crate::tls::TlsListener>) -> Self {
        PeerAddr(*stream.remote_addr())
    }
}

/// A TCP listener whose connections have Nagle's algorithm off (calls are small messages that
/// must leave at once), for `axum::serve`.
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
