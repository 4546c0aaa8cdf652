//! Forwarding `/proxy/<kiteID>/<rest>`: websocket upgrades piped message by message, every
//! other request streamed through a pooled HTTP/1.1 client.

use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::ws::{self, WebSocket, WebSocketUpgrade};
use axum::extract::{ConnectInfo, FromRequestParts};
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode, Uri, Version, header};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use kite_native::sockjs::PeerAddr;
use tokio_tungstenite::tungstenite::{self, client::IntoClientRequest, protocol::WebSocketConfig};
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};
use url::Url;

use super::Shared;

/// The pooled client for plain requests (`http` and `https` backends).
pub(crate) type HttpClient = Client<HttpsConnector<HttpConnector>, Body>;

/// How long a closing websocket waits for the other side's close before it is dropped.
const CLOSE_WAIT: Duration = Duration::from_secs(5);

pub(crate) fn http_client(connect_timeout: Duration) -> std::io::Result<HttpClient> {
    let mut http = HttpConnector::new();
    http.enforce_http(false);
    http.set_nodelay(true);
    http.set_connect_timeout(Some(connect_timeout));
    let tls = kite_native::tls::client_config(&[])?;
    let connector = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(tls)
        .https_or_http()
        .enable_http1()
        .wrap_connector(http);
    Ok(Client::builder(TokioExecutor::new()).build(connector))
}

/// A registered kite URL, split for forwarding.
#[derive(Debug, Clone)]
pub(crate) struct Backend {
    url: String,
    secure: bool,
    /// `host[:port]`.
    authority: String,
    /// The URL's path without a trailing `/` (`/kite`).
    base_path: String,
}

impl Backend {
    /// Parses a kite URL as `register` receives it.
    pub(crate) fn parse(raw: &str) -> Result<Backend, String> {
        let url = Url::parse(raw).map_err(|e| format!("invalid kite URL {raw:?}: {e}"))?;
        let secure = match url.scheme() {
            "http" | "ws" => false,
            "https" | "wss" => true,
            other => {
                return Err(format!(
                    "invalid kite URL {raw:?}: scheme {other:?} (want http, https, ws or wss)"
                ));
            }
        };
        let host = url
            .host_str()
            .filter(|h| !h.is_empty())
            .ok_or_else(|| format!("invalid kite URL {raw:?}: no host"))?;
        let authority = match url.port() {
            Some(port) => format!("{host}:{port}"),
            None => host.to_owned(),
        };
        Ok(Backend {
            url: raw.to_owned(),
            secure,
            authority,
            base_path: url.path().trim_end_matches('/').to_owned(),
        })
    }

    pub(crate) fn url(&self) -> &str {
        &self.url
    }

    /// `<scheme>://<authority><base><rest>[?query]`, with `http`/`https` or `ws`/`wss`.
    fn target(&self, websocket: bool, rest: &str, query: Option<&str>) -> String {
        let scheme = match (websocket, self.secure) {
            (false, false) => "http",
            (false, true) => "https",
            (true, false) => "ws",
            (true, true) => "wss",
        };
        let mut out = format!("{scheme}://{}{}{rest}", self.authority, self.base_path);
        if out.ends_with(&self.authority) {
            out.push('/');
        }
        if let Some(q) = query {
            out.push('?');
            out.push_str(q);
        }
        out
    }
}

/// A one-line `text/plain` answer of the proxy itself.
fn plain(status: StatusCode, message: String) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        format!("{message}\n"),
    )
        .into_response()
}

fn is_websocket(headers: &HeaderMap) -> bool {
    let has = |name: HeaderName, token: &str| {
        headers.get_all(name).iter().any(|v| {
            v.to_str()
                .is_ok_and(|v| v.split(',').any(|t| t.trim().eq_ignore_ascii_case(token)))
        })
    };
    has(header::UPGRADE, "websocket") && has(header::CONNECTION, "upgrade")
}

/// Serves one request under `/proxy/`.
pub(crate) async fn handle(shared: Arc<Shared>, req: axum::extract::Request) -> Response {
    let path = req.uri().path().to_owned();
    let after = path.strip_prefix("/proxy/").unwrap_or("");
    let (id, rest) = match after.find('/') {
        Some(i) => after.split_at(i),
        None => (after, ""),
    };
    if id.is_empty() {
        return plain(
            StatusCode::NOT_FOUND,
            "no kite id in the path: kites are proxied at /proxy/<kiteID>/".into(),
        );
    }

    // `..` would leave the kite's own path on its host.
    if rest.split('/').any(|seg| {
        let seg = seg.to_ascii_lowercase().replace("%2e", ".");
        seg == "." || seg == ".."
    }) {
        return plain(
            StatusCode::BAD_REQUEST,
            format!("invalid path {path:?}: no . or .. segments"),
        );
    }

    if let Some(origin) = req.headers().get(header::ORIGIN) {
        let host = req
            .headers()
            .get(header::HOST)
            .and_then(|h| h.to_str().ok())
            .or_else(|| req.uri().authority().map(|a| a.as_str()))
            .unwrap_or("");
        let public = shared.public_authority().unwrap_or_default();
        let origin = origin.to_str().unwrap_or("null");
        if !shared
            .origins
            .allows(origin, &[host, &public], shared.scheme == "https")
        {
            debug!(%origin, %path, "origin refused");
            return plain(
                StatusCode::FORBIDDEN,
                format!("origin {origin} is not allowed by this proxy"),
            );
        }
    }

    let Some(backend) = shared.lookup(id) else {
        return plain(
            StatusCode::NOT_FOUND,
            format!("no kite with id {id} is registered with this proxy"),
        );
    };
    let query = req.uri().query().map(str::to_owned);
    if is_websocket(req.headers()) {
        websocket(&shared, id, &backend, rest, query.as_deref(), req).await
    } else {
        http(&shared, id, &backend, rest, query.as_deref(), req).await
    }
}

/// Hop-by-hop headers, which are not forwarded (RFC 9110 §7.6.1), and those `Connection` names.
fn strip_hop_by_hop(headers: &mut HeaderMap) {
    let named: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|t| HeaderName::try_from(t.trim()).ok())
        .collect();
    for name in named {
        headers.remove(name);
    }
    for name in [
        header::CONNECTION,
        header::PROXY_AUTHENTICATE,
        header::PROXY_AUTHORIZATION,
        header::TE,
        header::TRAILER,
        header::TRANSFER_ENCODING,
        header::UPGRADE,
    ] {
        headers.remove(name);
    }
    headers.remove("keep-alive");
    headers.remove("proxy-connection");
}

/// `X-Forwarded-For` (appended to), `-Host` and `-Proto`, as Go's `httputil.ReverseProxy` and
/// most proxies send them.
fn forwarded_headers(
    shared: &Shared,
    from: &HeaderMap,
    peer: Option<PeerAddr>,
) -> Vec<(HeaderName, HeaderValue)> {
    let mut out = Vec::new();
    if let Some(PeerAddr(peer)) = peer {
        let ip = peer.ip().to_string();
        let value = match from.get("x-forwarded-for").and_then(|v| v.to_str().ok()) {
            Some(prior) => format!("{prior}, {ip}"),
            None => ip,
        };
        if let Ok(v) = HeaderValue::try_from(value) {
            out.push((HeaderName::from_static("x-forwarded-for"), v));
        }
    }
    if let Some(host) = from.get(header::HOST) {
        out.push((HeaderName::from_static("x-forwarded-host"), host.clone()));
    }
    out.push((
        HeaderName::from_static("x-forwarded-proto"),
        HeaderValue::from_static(shared.scheme),
    ));
    out
}

fn peer_of(req: &axum::extract::Request) -> Option<PeerAddr> {
    req.extensions().get::<ConnectInfo<PeerAddr>>().map(|c| c.0)
}

/// Forwards a plain request, both bodies streamed.
async fn http(
    shared: &Arc<Shared>,
    id: &str,
    backend: &Backend,
    rest: &str,
    query: Option<&str>,
    req: axum::extract::Request,
) -> Response {
    let target = backend.target(false, rest, query);
    let Ok(uri) = target.parse::<Uri>() else {
        return plain(
            StatusCode::BAD_GATEWAY,
            format!("kite {id}: cannot forward to {target:?}"),
        );
    };
    let peer = peer_of(&req);
    let forwarded = forwarded_headers(shared, req.headers(), peer);
    let (mut parts, body) = req.into_parts();
    strip_hop_by_hop(&mut parts.headers);
    // The client sets `Host` from the target.
    parts.headers.remove(header::HOST);
    for (name, value) in forwarded {
        parts.headers.insert(name, value);
    }
    parts.uri = uri;
    parts.version = Version::HTTP_11;
    parts.extensions = Default::default();
    let method = parts.method.clone();
    debug!(%id, %method, %target, "forwarding");
    let response = match shared
        .http
        .request(axum::http::Request::from_parts(parts, body))
        .await
    {
        Ok(r) => r,
        Err(e) => {
            warn!(%id, %target, error = %e, "backend kite unreachable");
            return plain(
                StatusCode::BAD_GATEWAY,
                format!(
                    "kite {id} at {} is unreachable: {}",
                    backend.url,
                    error_chain(&e)
                ),
            );
        }
    };
    let (mut parts, body) = response.into_parts();
    strip_hop_by_hop(&mut parts.headers);
    // Streamed as it comes (xhr_streaming, eventsource), until the proxy closes.
    let stream = Body::new(body)
        .into_data_stream()
        .take_until(shared.shutdown.clone().cancelled_owned());
    Response::from_parts(parts, Body::from_stream(stream))
}

/// An error with its sources (`client error (Connect): tcp connect error: Connection refused`).
fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let text = s.to_string();
        if !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        source = s.source();
    }
    out
}

/// Answers a websocket upgrade once the backend accepted its own, then pipes the two.
async fn websocket(
    shared: &Arc<Shared>,
    id: &str,
    backend: &Backend,
    rest: &str,
    query: Option<&str>,
    req: axum::extract::Request,
) -> Response {
    let peer = peer_of(&req);
    let forwarded = forwarded_headers(shared, req.headers(), peer);
    let (mut parts, _body) = req.into_parts();
    let upgrade = match WebSocketUpgrade::from_request_parts(&mut parts, &()).await {
        Ok(u) => u,
        Err(rejection) => return rejection.into_response(),
    };

    let target = backend.target(true, rest, query);
    let mut request = match target.as_str().into_client_request() {
        Ok(r) => r,
        Err(e) => {
            return plain(
                StatusCode::BAD_GATEWAY,
                format!("kite {id}: cannot forward to {target:?}: {e}"),
            );
        }
    };
    for name in [
        header::ORIGIN,
        header::COOKIE,
        header::AUTHORIZATION,
        header::USER_AGENT,
        header::SEC_WEBSOCKET_PROTOCOL,
    ] {
        for value in parts.headers.get_all(&name) {
            request.headers_mut().append(name.clone(), value.clone());
        }
    }
    for (name, value) in forwarded {
        request.headers_mut().insert(name, value);
    }
    let max = shared.max_message_size;
    let config = WebSocketConfig::default()
        .max_message_size(Some(max))
        .max_frame_size(Some(max));
    debug!(%id, %target, "forwarding websocket");
    let dial = tokio_tungstenite::connect_async_with_config(request, Some(config), true);
    let (backend_ws, answer) = match tokio::time::timeout(shared.backend_timeout, dial).await {
        Ok(Ok(x)) => x,
        Ok(Err(tungstenite::Error::Http(refused))) => {
            // The backend answered, but not with an upgrade: pass its answer on.
            let (parts, body) = refused.into_parts();
            let mut out = Response::new(Body::from(body.unwrap_or_default()));
            *out.status_mut() = parts.status;
            for name in [header::CONTENT_TYPE, header::ALLOW] {
                if let Some(v) = parts.headers.get(&name) {
                    out.headers_mut().insert(name, v.clone());
                }
            }
            return out;
        }
        Ok(Err(e)) => {
            warn!(%id, %target, error = %e, "backend kite unreachable");
            return plain(
                StatusCode::BAD_GATEWAY,
                format!(
                    "kite {id} at {} is unreachable: {}",
                    backend.url,
                    error_chain(&e)
                ),
            );
        }
        Err(_) => {
            warn!(%id, %target, "backend kite did not answer the websocket handshake");
            return plain(
                StatusCode::BAD_GATEWAY,
                format!(
                    "kite {id} at {} did not answer in {:?}",
                    backend.url, shared.backend_timeout
                ),
            );
        }
    };
    let mut upgrade = upgrade.max_message_size(max).max_frame_size(max);
    if let Some(p) = answer.headers().get(header::SEC_WEBSOCKET_PROTOCOL) {
        upgrade.set_selected_protocol(p.clone());
    }
    let shutdown = shared.shutdown.clone();
    let id_owned = id.to_owned();
    let mut response = upgrade
        .on_failed_upgrade(move |e| debug!(id = %id_owned, error = %e, "websocket upgrade failed"))
        .on_upgrade(move |client| pipe(client, backend_ws, shutdown));
    for cookie in answer.headers().get_all(header::SET_COOKIE) {
        response
            .headers_mut()
            .append(header::SET_COOKIE, cookie.clone());
    }
    response
}

type BackendWs =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// The client's message for the backend (`None` for pings and pongs, answered on their hop).
fn to_backend(m: ws::Message) -> Option<tungstenite::Message> {
    use tungstenite::Message as T;
    Some(match m {
        ws::Message::Text(t) => T::Text(tungstenite::Utf8Bytes::try_from(Bytes::from(t)).ok()?),
        ws::Message::Binary(b) => T::Binary(b),
        ws::Message::Close(frame) => T::Close(frame.and_then(|f| {
            Some(tungstenite::protocol::CloseFrame {
                code: f.code.into(),
                reason: tungstenite::Utf8Bytes::try_from(Bytes::from(f.reason)).ok()?,
            })
        })),
        ws::Message::Ping(_) | ws::Message::Pong(_) => return None,
    })
}

/// The backend's message for the client.
fn to_client(m: tungstenite::Message) -> Option<ws::Message> {
    use tungstenite::Message as T;
    Some(match m {
        T::Text(t) => ws::Message::Text(ws::Utf8Bytes::try_from(Bytes::from(t)).ok()?),
        T::Binary(b) => ws::Message::Binary(b),
        T::Close(frame) => ws::Message::Close(frame.and_then(|f| {
            Some(ws::CloseFrame {
                code: f.code.into(),
                reason: ws::Utf8Bytes::try_from(Bytes::from(f.reason)).ok()?,
            })
        })),
        T::Ping(_) | T::Pong(_) | T::Frame(_) => return None,
    })
}

/// Copies messages from `rx` to `tx` until a close (forwarded) or the end of `rx` (a close
/// without a code sent on).
async fn pump<R, M, E, S, N>(
    rx: &mut R,
    tx: &mut S,
    convert: impl Fn(M) -> Option<N>,
    is_close: impl Fn(&M) -> bool,
    close: N,
) where
    R: futures_util::Stream<Item = Result<M, E>> + Unpin,
    S: futures_util::Sink<N> + Unpin,
{
    loop {
        match rx.next().await {
            Some(Ok(m)) => {
                let last = is_close(&m);
                if let Some(n) = convert(m)
                    && tx.send(n).await.is_err()
                {
                    return;
                }
                if last {
                    return;
                }
            }
            Some(Err(_)) | None => {
                let _ = tx.send(close).await;
                return;
            }
        }
    }
}

/// Pipes a client's websocket and the backend's both ways until either closes (its close sent
/// on, code and reason kept) or the proxy shuts down (both closed with `1001`).
async fn pipe(client: WebSocket, backend: BackendWs, shutdown: CancellationToken) {
    let (mut client_tx, mut client_rx) = client.split();
    let (mut backend_tx, mut backend_rx) = backend.split();
    let shut = {
        let up = pump(
            &mut client_rx,
            &mut backend_tx,
            to_backend,
            |m| matches!(m, ws::Message::Close(_)),
            tungstenite::Message::Close(None),
        );
        let down = pump(
            &mut backend_rx,
            &mut client_tx,
            to_client,
            |m| matches!(m, tungstenite::Message::Close(_)),
            ws::Message::Close(None),
        );
        tokio::pin!(up, down);
        tokio::select! {
            () = &mut up => {
                let _ = tokio::time::timeout(CLOSE_WAIT, &mut down).await;
                false
            }
            () = &mut down => {
                let _ = tokio::time::timeout(CLOSE_WAIT, &mut up).await;
                false
            }
            () = shutdown.cancelled() => true,
        }
    };
    if shut {
        let reason = "proxy shutting down";
        let _ = client_tx
            .send(ws::Message::Close(Some(ws::CloseFrame {
                code: 1001,
                reason: reason.into(),
            })))
            .await;
        let _ = backend_tx
            .send(tungstenite::Message::Close(Some(
                tungstenite::protocol::CloseFrame {
                    code: 1001.into(),
                    reason: reason.into(),
                },
            )))
            .await;
    }
    let _ = tokio::time::timeout(CLOSE_WAIT, async {
        let _ = client_tx.close().await;
        let _ = backend_tx.close().await;
    })
    .await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets() {
        let b = Backend::parse("http://10.0.0.7:6000/kite").unwrap();
        assert_eq!(b.target(false, "", None), "http://10.0.0.7:6000/kite");
        assert_eq!(
            b.target(false, "/info", Some("t=1")),
            "http://10.0.0.7:6000/kite/info?t=1"
        );
        assert_eq!(
            b.target(true, "/123/abc/websocket", None),
            "ws://10.0.0.7:6000/kite/123/abc/websocket"
        );
        let b = Backend::parse("wss://example.com/kite/").unwrap();
        assert_eq!(b.target(false, "/", None), "https://example.com/kite/");
        assert_eq!(
            b.target(true, "/websocket", None),
            "wss://example.com/kite/websocket"
        );
        let b = Backend::parse("http://[::1]:80/").unwrap();
        assert_eq!(b.target(false, "", None), "http://[::1]/");
        assert!(Backend::parse("ftp://x/kite").is_err());
        assert!(Backend::parse("not a url").is_err());
    }

    #[test]
    fn websocket_detection() {
        let mut h = HeaderMap::new();
        h.insert(header::UPGRADE, HeaderValue::from_static("WebSocket"));
        h.insert(
            header::CONNECTION,
            HeaderValue::from_static("keep-alive, Upgrade"),
        );
        assert!(is_websocket(&h));
        h.insert(header::CONNECTION, HeaderValue::from_static("keep-alive"));
        assert!(!is_websocket(&h));
    }
}
