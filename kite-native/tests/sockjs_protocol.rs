//! The SockJS protocol 0.3.3, rule by rule, written from the protocol's own test suite
//! (`sockjs-protocol.py` in github.com/sockjs/sockjs-protocol) against the four services it
//! expects (`/echo`, `/close`, `/disabled_websocket_echo`, `/cookie_needed_echo`, streaming
//! responses limited to 4 KiB), plus our rules for bad input and session clean-up.

use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use kite_native::session::Session;
use kite_native::sockjs::{SockJsOptions, SockJsServer};
use kite_test_kit::within;
use reqwest::header::{HeaderMap, HeaderValue};
use reqwest::{Method, StatusCode};
use tokio_tungstenite::tungstenite::Message;

const NO_CACHE: &str = "no-store, no-cache, no-transform, must-revalidate, max-age=0";

fn echo(mut session: Session) {
    tokio::spawn(async move {
        while let Some(msg) = session.rx.recv().await {
            if session.tx.send(msg).is_err() {
                break;
            }
        }
    });
}

fn close(session: Session) {
    session.tx.close(3000, "Go away!");
}

/// The suite's four services on 127.0.0.1, and the echo server's handle.
struct Services {
    base: String,
    echo: SockJsServer,
    http: reqwest::Client,
}

impl Services {
    async fn start(tune: impl Fn(&mut SockJsOptions)) -> Services {
        let mut options = SockJsOptions {
            response_limit: 4096,
            heartbeat_delay: Duration::from_secs(25),
            disconnect_delay: Duration::from_secs(5),
            ..SockJsOptions::default()
        };
        tune(&mut options);
        let no_ws = SockJsOptions {
            websocket: false,
            ..options.clone()
        };
        let cookie = SockJsOptions {
            cookie_needed: true,
            ..options.clone()
        };
        let echo_server = SockJsServer::new(options.clone(), echo);
        let app = axum::Router::new()
            .merge(echo_server.router_at("/echo"))
            .merge(SockJsServer::new(options, close).router_at("/close"))
            .merge(SockJsServer::new(no_ws, echo).router_at("/disabled_websocket_echo"))
            .merge(SockJsServer::new(cookie, echo).router_at("/cookie_needed_echo"));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        Services {
            base: format!("http://{addr}"),
            echo: echo_server,
            http: reqwest::Client::builder().no_proxy().build().unwrap(),
        }
    }

    fn url(&self, service: &str, path: &str) -> String {
        format!("{}/{service}{path}", self.base)
    }

    /// A fresh session URL of `service`.
    fn session(&self, service: &str) -> String {
        self.url(service, &format!("/000/{}", uuid::Uuid::new_v4()))
    }

    async fn req(
        &self,
        method: Method,
        url: &str,
        headers: &[(&str, &str)],
        body: &str,
    ) -> reqwest::Response {
        let mut h = HeaderMap::new();
        for (k, v) in headers {
            h.insert(
                reqwest::header::HeaderName::from_bytes(k.as_bytes()).unwrap(),
                HeaderValue::from_str(v).unwrap(),
            );
        }
        within(
            url,
            self.http
                .request(method, url)
                .headers(h)
                .body(body.to_owned())
                .send(),
        )
        .await
        .unwrap()
    }

    async fn get(&self, url: &str) -> (StatusCode, HeaderMap, String) {
        read_all(self.req(Method::GET, url, &[], "").await).await
    }

    async fn post(&self, url: &str, body: &str) -> (StatusCode, HeaderMap, String) {
        read_all(self.req(Method::POST, url, &[], body).await).await
    }
}

async fn read_all(r: reqwest::Response) -> (StatusCode, HeaderMap, String) {
    let status = r.status();
    let headers = r.headers().clone();
    let body = within("body", r.text()).await.unwrap();
    (status, headers, body)
}

fn header<'a>(h: &'a HeaderMap, name: &str) -> Option<&'a str> {
    h.get(name).and_then(|v| v.to_str().ok())
}

fn content_type(h: &HeaderMap) -> String {
    header(h, "content-type")
        .unwrap_or_default()
        .replace(' ', "")
}

fn assert_not_cached(h: &HeaderMap) {
    assert_eq!(header(h, "cache-control"), Some(NO_CACHE));
    assert!(header(h, "expires").is_none());
    assert!(header(h, "last-modified").is_none());
}

fn assert_cors(h: &HeaderMap, origin: Option<&str>) {
    match origin {
        Some(o) => {
            assert_eq!(header(h, "access-control-allow-origin"), Some(o));
            assert_eq!(header(h, "access-control-allow-credentials"), Some("true"));
        }
        None => {
            assert_eq!(header(h, "access-control-allow-origin"), Some("*"));
            assert!(header(h, "access-control-allow-credentials").is_none());
        }
    }
}

/// A streaming response read piece by piece, whatever the chunking.
struct Stream {
    resp: reqwest::Response,
    buf: Vec<u8>,
}

impl Stream {
    async fn open(s: &Services, method: Method, url: &str) -> Stream {
        let resp = s.req(method, url, &[], "").await;
        assert_eq!(resp.status(), StatusCode::OK, "{url}");
        Stream {
            resp,
            buf: Vec::new(),
        }
    }

    /// The next `expected.len()` bytes must be `expected`.
    async fn expect(&mut self, expected: &str) {
        while self.buf.len() < expected.len() {
            match within(expected, self.resp.chunk()).await.unwrap() {
                Some(c) => self.buf.extend_from_slice(&c),
                None => break,
            }
        }
        let n = expected.len().min(self.buf.len());
        let got: Vec<u8> = self.buf.drain(..n).collect();
        assert_eq!(String::from_utf8_lossy(&got), expected);
    }

    /// The next line, newline included.
    async fn line(&mut self) -> String {
        loop {
            if let Some(i) = self.buf.iter().position(|&b| b == b'\n') {
                let line: Vec<u8> = self.buf.drain(..=i).collect();
                return String::from_utf8(line).unwrap();
            }
            match within("a line", self.resp.chunk()).await.unwrap() {
                Some(c) => self.buf.extend_from_slice(&c),
                None => panic!("stream ended in {:?}", String::from_utf8_lossy(&self.buf)),
            }
        }
    }

    /// The response must end with nothing more.
    async fn expect_end(&mut self) {
        assert!(
            self.buf.is_empty(),
            "left: {:?}",
            String::from_utf8_lossy(&self.buf)
        );
        let next = within("end of stream", self.resp.chunk()).await.unwrap();
        assert!(next.is_none(), "more data: {next:?}");
    }
}

fn prelude() -> String {
    format!("{}\n", "h".repeat(2048))
}

/// One HTTP/1.1 request on a socket of its own, whose chunked body is read chunk by chunk as
/// the server framed it (reqwest hands over whatever the socket had, chunks merged or split).
struct RawHttp {
    io: tokio::io::BufReader<tokio::net::TcpStream>,
}

impl RawHttp {
    /// Sends `method url` (an empty body for POST) and reads the head: it must be a 200 with a
    /// chunked body.
    async fn open(method: &str, url: &str) -> RawHttp {
        let mut r = RawHttp::send(method, url).await;
        r.head(url).await;
        r
    }

    /// Sends `method url` (an empty body for POST), reading nothing yet.
    async fn send(method: &str, url: &str) -> RawHttp {
        use tokio::io::AsyncWriteExt;
        let rest = url.strip_prefix("http://").unwrap();
        let (addr, path) = rest.split_at(rest.find('/').unwrap());
        let stream = within("connect", tokio::net::TcpStream::connect(addr))
            .await
            .unwrap();
        let mut io = tokio::io::BufReader::new(stream);
        let req = format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Length: 0\r\n\r\n");
        io.get_mut().write_all(req.as_bytes()).await.unwrap();
        RawHttp { io }
    }

    /// Reads the head of the answer: it must be a 200 with a chunked body.
    async fn head(&mut self, url: &str) {
        let r = self;
        let status = r.line().await;
        assert!(status.starts_with("HTTP/1.1 200 "), "{url}: {status:?}");
        let mut chunked = false;
        loop {
            let h = r.line().await;
            if h == "\r\n" {
                break;
            }
            let h = h.to_ascii_lowercase();
            chunked |= h.starts_with("transfer-encoding:") && h.contains("chunked");
        }
        assert!(chunked, "{url}: not a chunked body");
    }

    async fn line(&mut self) -> String {
        use tokio::io::AsyncBufReadExt;
        let mut line = String::new();
        within("a line", self.io.read_line(&mut line))
            .await
            .unwrap();
        assert!(line.ends_with("\r\n"), "cut off: {line:?}");
        line
    }

    /// The next chunk of the body; `None` for the last (empty) one.
    async fn chunk(&mut self) -> Option<String> {
        use tokio::io::AsyncReadExt;
        let size = self.line().await;
        let size = usize::from_str_radix(size.trim_end(), 16).unwrap();
        let mut data = vec![0; size + 2];
        within("a chunk", self.io.read_exact(&mut data))
            .await
            .unwrap();
        assert!(data.ends_with(b"\r\n"));
        data.truncate(size);
        (size > 0).then(|| String::from_utf8(data).unwrap())
    }

    /// The next chunk must be `expected`.
    async fn expect(&mut self, expected: &str) {
        assert_eq!(self.chunk().await.as_deref(), Some(expected));
    }

    /// The body must end here.
    async fn expect_end(&mut self) {
        assert_eq!(self.chunk().await, None);
    }
}

#[tokio::test]
async fn greeting_and_not_found() {
    let s = Services::start(|_| {}).await;
    for path in ["", "/"] {
        let (status, h, body) = s.get(&s.url("echo", path)).await;
        assert_eq!(status, 200);
        assert_eq!(content_type(&h), "text/plain;charset=UTF-8");
        assert_eq!(body, "Welcome to SockJS!\n");
        assert!(header(&h, "set-cookie").is_none());
    }
    for path in ["/a", "/a.html", "//", "///", "/a/a", "/a/a/"] {
        let (status, _, _) = s.get(&s.url("echo", path)).await;
        assert_eq!(status, 404, "{path}");
    }
}

#[tokio::test]
async fn iframe_page_is_served_cached_and_revalidated() {
    let s = Services::start(|o| o.sockjs_url = "/static/sockjs.js".into()).await;
    for path in [
        "/iframe.html",
        "/iframe-a.html",
        "/iframe-.html",
        "/iframe-0.1.2.html",
        "/iframe-0.1.2abc-dirty.2144.html",
        "/iframe-a.html?t=1234",
        "/iframe-0.1.2.html?t=123414",
    ] {
        let (status, h, body) = s.get(&s.url("echo", path)).await;
        assert_eq!(status, 200, "{path}");
        assert_eq!(content_type(&h), "text/html;charset=UTF-8");
        let cache = header(&h, "cache-control").unwrap();
        assert!(cache.contains("public") && cache.contains("max-age=31536000"));
        assert!(header(&h, "expires").is_some());
        assert!(header(&h, "etag").is_some());
        assert!(header(&h, "last-modified").is_none());
        assert!(header(&h, "set-cookie").is_none());
        assert!(body.starts_with("<!DOCTYPE html>\n<html>\n<head>\n"));
        assert!(body.contains("<script src=\"/static/sockjs.js\"></script>"));
        assert!(body.contains("SockJS.bootstrap_iframe();"));
    }
    for path in [
        "/iframe.htm",
        "/iframe",
        "/IFRAME.HTML",
        "/IFRAME",
        "/iframe.HTML",
        "/iframe.xml",
        "/iframe-/.html",
    ] {
        assert_eq!(s.get(&s.url("echo", path)).await.0, 404, "{path}");
    }
    let (_, h1, _) = s.get(&s.url("echo", "/iframe.html")).await;
    let (_, h2, _) = s.get(&s.url("echo", "/iframe.html")).await;
    let etag = header(&h1, "etag").unwrap().to_owned();
    assert_eq!(header(&h2, "etag"), Some(etag.as_str()));
    let r = s
        .req(
            Method::GET,
            &s.url("echo", "/iframe.html"),
            &[("If-None-Match", &etag)],
            "",
        )
        .await;
    let (status, h, body) = read_all(r).await;
    assert_eq!(status, 304);
    assert!(header(&h, "content-type").is_none());
    assert!(body.is_empty());
}

#[tokio::test]
async fn info_entropy_cors_and_options() {
    let s = Services::start(|_| {}).await;
    let r = s
        .req(
            Method::GET,
            &s.url("echo", "/info"),
            &[("Origin", "test")],
            "",
        )
        .await;
    let (status, h, body) = read_all(r).await;
    assert_eq!(status, 200);
    assert_eq!(content_type(&h), "application/json;charset=UTF-8");
    assert!(header(&h, "set-cookie").is_none());
    assert_not_cached(&h);
    assert_cors(&h, Some("test"));
    let info: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(info["websocket"], true);
    assert_eq!(info["cookie_needed"], false);
    assert_eq!(info["origins"], serde_json::json!(["*:*"]));
    let e1 = info["entropy"].as_u64().expect("an integer entropy");
    let (_, _, body2) = s.get(&s.url("echo", "/info")).await;
    let info2: serde_json::Value = serde_json::from_str(&body2).unwrap();
    assert_ne!(Some(e1), info2["entropy"].as_u64());

    assert_options(&s, &s.url("echo", "/info"), "OPTIONS, GET").await;

    let (_, _, off) = s.get(&s.url("disabled_websocket_echo", "/info")).await;
    let off: serde_json::Value = serde_json::from_str(&off).unwrap();
    assert_eq!(off["websocket"], false);
    let (_, h, cookie) = s.get(&s.url("cookie_needed_echo", "/info")).await;
    assert!(header(&h, "set-cookie").is_none());
    let cookie: serde_json::Value = serde_json::from_str(&cookie).unwrap();
    assert_eq!(cookie["cookie_needed"], true);

    // A wrong method on a known path: 405 with Allow, no body, no content type.
    let (status, h, body) = read_all(
        s.req(Method::DELETE, &s.url("echo", "/info"), &[], "")
            .await,
    )
    .await;
    assert_eq!(status, 405);
    assert!(header(&h, "allow").is_some());
    assert!(header(&h, "content-type").is_none());
    assert!(body.is_empty());
}

/// The suite's `verify_options`: cacheable preflight answers with CORS for both origins.
async fn assert_options(s: &Services, url: &str, methods: &str) {
    for origin in ["test", "null"] {
        let r = s
            .req(
                Method::OPTIONS,
                url,
                &[
                    ("Access-Control-Request-Method", methods),
                    ("Origin", origin),
                ],
                "",
            )
            .await;
        let (status, h, body) = read_all(r).await;
        assert!(status == 204 || status == 200, "{url}: {status}");
        let cache = header(&h, "cache-control").unwrap();
        assert!(cache.contains("public") && cache.contains("max-age=31536000"));
        assert!(header(&h, "expires").is_some());
        let max_age: u64 = header(&h, "access-control-max-age")
            .unwrap()
            .parse()
            .unwrap();
        assert!(max_age > 1_000_000);
        let allowed = header(&h, "access-control-allow-methods").unwrap();
        for m in methods.split(',') {
            assert!(allowed.contains(m.trim()), "{allowed} lacks {m}");
        }
        assert!(body.is_empty());
        assert_cors(&h, Some(origin));
    }
}

#[tokio::test]
async fn session_urls_accept_any_id_and_ignore_the_server_id() {
    let s = Services::start(|_| {}).await;
    for part in ["/a/a1", "/_/_1", "/1/1", "/abcdefgh_i-j%20/abcdefg_i-j%20"] {
        let (status, _, body) = s.post(&s.url("echo", &format!("{part}/xhr")), "").await;
        assert_eq!((status.as_u16(), body.as_str()), (200, "o\n"), "{part}");
    }
    for part in ["//", "/a./a", "/a/a.", "/./.", "/", "///"] {
        let url = s.url("echo", &format!("{part}/xhr"));
        assert_eq!(s.get(&url).await.0, 404, "GET {part}");
        assert_eq!(s.post(&url, "").await.0, 404, "POST {part}");
        // Found by the sockjs_paths fuzz target: the preflight answered 204 here.
        let options = read_all(s.req(Method::OPTIONS, &url, &[], "").await).await;
        assert_eq!(options.0, 404, "OPTIONS {part}");
    }
    let id = uuid::Uuid::new_v4();
    let (_, _, body) = s.post(&s.url("echo", &format!("/000/{id}/xhr")), "").await;
    assert_eq!(body, "o\n");
    let (status, _, body) = s
        .post(&s.url("echo", &format!("/000/{id}/xhr_send")), "[\"a\"]")
        .await;
    assert_eq!((status.as_u16(), body.as_str()), (204, ""));
    let (_, _, body) = s.post(&s.url("echo", &format!("/999/{id}/xhr")), "").await;
    assert_eq!(body, "a[\"a\"]\n");
}

/// Leaves a poll of session `url` waiting, proven attached by a second poll answered
/// `c[2010,"Another connection still open"]` (with status 200); returns the waiting poll.
#[allow(clippy::async_yields_async)] // the held poll is returned on purpose, not awaited
async fn hold_poll(
    s: &Services,
    url: &str,
) -> tokio::task::JoinHandle<reqwest::Result<reqwest::Response>> {
    let poll = format!("{url}/xhr");
    within("a poll held", async {
        loop {
            let first = tokio::spawn(s.http.post(poll.clone()).send());
            // Let the first poll take the client's idle pooled connection and write itself,
            // so that it usually reaches the server first (the loop copes when it does not).
            for _ in 0..10 {
                tokio::task::yield_now().await;
            }
            let (status, _, body) = s.post(&poll, "").await;
            if body == "c[2010,\"Another connection still open\"]\n" {
                assert_eq!(status, 200);
                return first;
            }
            // The second poll was attached first (and answered at its heartbeat), so the first
            // one was refused; hold again.
            let first = first.await.unwrap().unwrap().text().await.unwrap();
            assert_eq!(first, "c[2010,\"Another connection still open\"]\n");
        }
    })
    .await
}

#[tokio::test]
async fn simple_session_2010_and_close_session() {
    let s = Services::start(|o| o.heartbeat_delay = Duration::from_secs(2)).await;
    let url = s.session("echo");
    assert_eq!(s.post(&format!("{url}/xhr"), "").await.2, "o\n");
    let (status, _, body) = s.post(&format!("{url}/xhr_send"), "[\"a\"]").await;
    assert_eq!((status.as_u16(), body.as_str()), (204, ""));
    assert_eq!(s.post(&format!("{url}/xhr"), "").await.2, "a[\"a\"]\n");
    let bad = s.url("echo", "/000/bad_session/xhr_send");
    assert_eq!(s.post(&bad, "[\"a\"]").await.0, 404);

    // A second receiver while one waits gets c[2010] (`hold_poll` checks it).
    let waiting = hold_poll(&s, &url).await;
    drop(waiting);

    let url = s.session("close");
    assert_eq!(s.post(&format!("{url}/xhr"), "").await.2, "o\n");
    for _ in 0..2 {
        let (status, _, body) = s.post(&format!("{url}/xhr"), "").await;
        assert_eq!(
            (status.as_u16(), body.as_str()),
            (200, "c[3000,\"Go away!\"]\n")
        );
    }
}

type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

async fn ws_connect(url: &str) -> Ws {
    let url = url.replacen("http://", "ws://", 1);
    within("ws connect", tokio_tungstenite::connect_async(url))
        .await
        .unwrap()
        .0
}

/// The next text message, or `None` when the connection ended.
async fn ws_next(ws: &mut Ws) -> Option<String> {
    loop {
        match within("ws message", ws.next()).await {
            Some(Ok(Message::Text(t))) => return Some(t.to_string()),
            Some(Ok(Message::Close(_))) | None | Some(Err(_)) => return None,
            Some(Ok(_)) => {}
        }
    }
}

#[tokio::test]
async fn websocket_transport_close_empty_frames_reuse_and_broken_json() {
    let s = Services::start(|_| {}).await;
    let url = format!("{}/websocket", s.session("echo"));
    let mut ws = ws_connect(&url).await;
    assert_eq!(ws_next(&mut ws).await.as_deref(), Some("o"));
    // Empty messages and frames with no messages are ignored.
    for frame in ["", "[]", "[\"a\"]"] {
        ws.send(Message::text(frame)).await.unwrap();
    }
    assert_eq!(ws_next(&mut ws).await.as_deref(), Some("a[\"a\"]"));

    // Two sessions may share an id at once: websocket sessions live as long as the socket.
    let mut ws2 = ws_connect(&url).await;
    assert_eq!(ws_next(&mut ws2).await.as_deref(), Some("o"));
    ws.send(Message::text("[\"a\"]")).await.unwrap();
    ws2.send(Message::text("[\"b\"]")).await.unwrap();
    assert_eq!(ws_next(&mut ws).await.as_deref(), Some("a[\"a\"]"));
    assert_eq!(ws_next(&mut ws2).await.as_deref(), Some("a[\"b\"]"));
    ws.close(None).await.unwrap();
    ws2.close(None).await.unwrap();

    let mut closed = ws_connect(&format!("{}/websocket", s.session("close"))).await;
    assert_eq!(ws_next(&mut closed).await.as_deref(), Some("o"));
    assert_eq!(
        ws_next(&mut closed).await.as_deref(),
        Some("c[3000,\"Go away!\"]")
    );
    assert_eq!(ws_next(&mut closed).await, None);

    // Broken JSON ends the session.
    let mut broken = ws_connect(&url).await;
    assert_eq!(ws_next(&mut broken).await.as_deref(), Some("o"));
    broken.send(Message::text("[\"a")).await.unwrap();
    // No `c` frame: the websocket is closed (see `broken_json_closes_the_websocket_with_3000`).
    assert_eq!(ws_next(&mut broken).await, None);

    // Plain HTTP to the websocket endpoint: 400 for GET, 405 for POST.
    assert_eq!(s.get(&url).await.0, 400);
    let r = s
        .req(
            Method::GET,
            &url,
            &[("Upgrade", "WebSocket"), ("Connection", "close")],
            "",
        )
        .await;
    assert_eq!(r.status(), 400);
    for headers in [
        &[("Upgrade", "WebSocket"), ("Connection", "Upgrade")][..],
        &[][..],
    ] {
        let (status, h, body) = read_all(s.req(Method::POST, &url, headers, "").await).await;
        assert_eq!(status, 405);
        assert!(header(&h, "allow").is_some());
        assert!(body.is_empty());
    }
    // Websocket off: the endpoint does not exist.
    let off = format!("{}/websocket", s.session("disabled_websocket_echo"));
    assert_eq!(s.get(&off).await.0, 404);
}

#[tokio::test]
async fn raw_websocket_echoes_and_closes_with_the_reason() {
    let s = Services::start(|_| {}).await;
    let mut ws = ws_connect(&s.url("echo", "/websocket")).await;
    ws.send(Message::text("Hello world!\u{ffff}"))
        .await
        .unwrap();
    assert_eq!(
        ws_next(&mut ws).await.as_deref(),
        Some("Hello world!\u{ffff}")
    );
    ws.close(None).await.unwrap();

    let mut ws = ws_connect(&s.url("close", "/websocket")).await;
    let close = loop {
        match within("close", ws.next()).await {
            Some(Ok(Message::Close(frame))) => break frame,
            Some(Ok(_)) => {}
            other => panic!("no close frame: {other:?}"),
        }
    };
    assert_eq!(close.unwrap().reason.as_str(), "Go away!");
}

#[tokio::test]
async fn xhr_polling_headers_errors_content_types_and_empty_frames() {
    let s = Services::start(|_| {}).await;
    for suffix in ["/xhr", "/xhr_send"] {
        assert_options(
            &s,
            &s.url("echo", &format!("/abc/abc{suffix}")),
            "OPTIONS, POST",
        )
        .await;
    }
    let url = s.session("echo");
    let (status, h, body) = read_all(
        s.req(
            Method::POST,
            &format!("{url}/xhr"),
            &[("Origin", "test")],
            "",
        )
        .await,
    )
    .await;
    assert_eq!((status.as_u16(), body.as_str()), (200, "o\n"));
    assert_eq!(content_type(&h), "application/javascript;charset=UTF-8");
    assert_cors(&h, Some("test"));
    assert_not_cached(&h);
    let (status, h, body) = read_all(
        s.req(
            Method::POST,
            &format!("{url}/xhr_send"),
            &[("Origin", "test")],
            "[\"x\"]",
        )
        .await,
    )
    .await;
    assert_eq!((status.as_u16(), body.as_str()), (204, ""));
    assert_eq!(content_type(&h), "text/plain;charset=UTF-8");
    assert_cors(&h, Some("test"));
    assert_not_cached(&h);
    assert_eq!(s.post(&format!("{url}/xhr"), "").await.2, "a[\"x\"]\n");

    // No Origin: `*` and no credentials.
    let (_, h, _) = s.post(&format!("{url}/xhr_send"), "[\"y\"]").await;
    assert_cors(&h, None);
    assert_eq!(s.post(&format!("{url}/xhr"), "").await.2, "a[\"y\"]\n");

    // Unknown session, broken JSON, no payload.
    let fresh = s.session("echo");
    assert_eq!(s.post(&format!("{fresh}/xhr_send"), "[\"x\"]").await.0, 404);
    let (status, _, body) = s.post(&format!("{url}/xhr_send"), "[\"x").await;
    assert_eq!(status, 500);
    assert!(body.contains("Broken JSON encoding."));
    let (status, _, body) = s.post(&format!("{url}/xhr_send"), "").await;
    assert_eq!(status, 500);
    assert!(body.contains("Payload expected."));
    for bad in ["[1]", "{\"a\":1}", "[\"a\",2]", "[null]", "nope"] {
        let (status, _, body) = s.post(&format!("{url}/xhr_send"), bad).await;
        assert_eq!(status, 500, "{bad}");
        assert!(body.contains("Broken JSON encoding."), "{bad}");
    }
    // Any content type, and frames with no messages.
    let types = [
        "text/plain",
        "T",
        "application/json",
        "application/xml",
        "",
        "application/json; charset=utf-8",
        "text/xml; charset=utf-8",
        "text/xml",
    ];
    for ct in types {
        let r = s
            .req(
                Method::POST,
                &format!("{url}/xhr_send"),
                &[("Content-Type", ct)],
                "[\"a\"]",
            )
            .await;
        assert_eq!(r.status(), 204, "{ct}");
    }
    assert_eq!(s.post(&format!("{url}/xhr_send"), "[]").await.0, 204);
    let want = format!("a[{}]\n", vec!["\"a\""; types.len()].join(","));
    assert_eq!(s.post(&format!("{url}/xhr"), "").await.2, want);

    // Requested headers are echoed, and only when asked for.
    for (asked, echoed) in [
        (Some("a, b, c"), Some("a, b, c")),
        (Some(""), None),
        (None, None),
    ] {
        let mut headers = vec![
            ("Origin", "test"),
            ("Access-Control-Request-Method", "POST"),
        ];
        if let Some(a) = asked {
            headers.push(("Access-Control-Request-Headers", a));
        }
        let r = s
            .req(
                Method::OPTIONS,
                &format!("{}/xhr", s.session("echo")),
                &headers,
                "",
            )
            .await;
        assert!(r.status() == 204 || r.status() == 200);
        assert_cors(r.headers(), Some("test"));
        assert_eq!(header(r.headers(), "access-control-allow-headers"), echoed);
    }
}

#[tokio::test]
async fn xhr_streaming_prelude_messages_and_response_limit() {
    let s = Services::start(|_| {}).await;
    assert_options(
        &s,
        &s.url("echo", "/abc/abc/xhr_streaming"),
        "OPTIONS, POST",
    )
    .await;
    let url = s.session("echo");
    let resp = s
        .req(
            Method::POST,
            &format!("{url}/xhr_streaming"),
            &[("Origin", "test")],
            "",
        )
        .await;
    assert_eq!(
        content_type(resp.headers()),
        "application/javascript;charset=UTF-8"
    );
    assert_cors(resp.headers(), Some("test"));
    assert_not_cached(resp.headers());
    let mut r = Stream {
        resp,
        buf: Vec::new(),
    };
    r.expect(&prelude()).await;
    r.expect("o\n").await;
    assert_eq!(s.post(&format!("{url}/xhr_send"), "[\"x\"]").await.0, 204);
    r.expect("a[\"x\"]\n").await;
    drop(r);

    // 4 KiB limit: 31 frames of 134 bytes end the response, 30 do not.
    let url = s.session("echo");
    let mut r = Stream::open(&s, Method::POST, &format!("{url}/xhr_streaming")).await;
    r.expect(&prelude()).await;
    r.expect("o\n").await;
    let msg = format!("\"{}\"", "x".repeat(128));
    for _ in 0..31 {
        assert_eq!(
            s.post(&format!("{url}/xhr_send"), &format!("[{msg}]"))
                .await
                .0,
            204
        );
        r.expect(&format!("a[{msg}]\n")).await;
    }
    r.expect_end().await;
    // The session lives on: the next request continues it (prelude, no `o`).
    assert_eq!(
        s.post(&format!("{url}/xhr_send"), "[\"next\"]").await.0,
        204
    );
    let mut r = Stream::open(&s, Method::POST, &format!("{url}/xhr_streaming")).await;
    r.expect(&prelude()).await;
    r.expect("a[\"next\"]\n").await;
}

#[tokio::test]
async fn eventsource_framing_and_response_limit() {
    let s = Services::start(|_| {}).await;
    let url = s.session("echo");
    let mut r = Stream::open(&s, Method::GET, &format!("{url}/eventsource")).await;
    assert_eq!(content_type(r.resp.headers()), "text/event-stream");
    assert_not_cached(r.resp.headers());
    r.expect("\r\n").await;
    r.expect("data: o\r\n\r\n").await;
    assert_eq!(s.post(&format!("{url}/xhr_send"), "[\"x\"]").await.0, 204);
    r.expect("data: a[\"x\"]\r\n\r\n").await;
    let (status, _, _) = s
        .post(&format!("{url}/xhr_send"), r#"["  \u0000\n\r "]"#)
        .await;
    assert_eq!(status, 204);
    r.expect("data: a[\"  \\u0000\\n\\r \"]\r\n\r\n").await;
    drop(r);

    let url = s.session("echo");
    let mut r = Stream::open(&s, Method::GET, &format!("{url}/eventsource")).await;
    r.expect("\r\n").await;
    r.expect("data: o\r\n\r\n").await;
    let msg = format!("\"{}\"", "x".repeat(4096));
    assert_eq!(
        s.post(&format!("{url}/xhr_send"), &format!("[{msg}]"))
            .await
            .0,
        204
    );
    r.expect(&format!("data: a[{msg}]\r\n\r\n")).await;
    r.expect_end().await;
}

#[tokio::test]
async fn htmlfile_framing_callbacks_and_response_limit() {
    let s = Services::start(|_| {}).await;
    let url = s.session("echo");
    let mut r = Stream::open(&s, Method::GET, &format!("{url}/htmlfile?c=%63allback")).await;
    assert_eq!(content_type(r.resp.headers()), "text/html;charset=UTF-8");
    assert_not_cached(r.resp.headers());
    let head = kite_native::core::sockjs::htmlfile_head("callback");
    assert!(head.len() > 1024);
    assert!(head.trim().ends_with("</script>"));
    assert!(head.contains("var c = parent.callback;"));
    r.expect(&head).await;
    r.expect("<script>\np(\"o\");\n</script>\r\n").await;
    assert_eq!(s.post(&format!("{url}/xhr_send"), "[\"x\"]").await.0, 204);
    r.expect("<script>\np(\"a[\\\"x\\\"]\");\n</script>\r\n")
        .await;
    drop(r);

    let (status, _, body) = s.get(&s.url("echo", "/a/a/htmlfile")).await;
    assert_eq!(status, 500);
    assert!(body.contains("\"callback\" parameter required"));
    for cb in ["%20", "*", "abc(", "abc%28"] {
        let (status, _, body) = s
            .get(&s.url("echo", &format!("/a/a/htmlfile?c={cb}")))
            .await;
        assert_eq!(status, 500, "{cb}");
        assert!(body.contains("invalid \"callback\" parameter"), "{cb}");
    }

    let url = s.session("echo");
    let mut r = Stream::open(&s, Method::GET, &format!("{url}/htmlfile?c=callback")).await;
    r.expect(&kite_native::core::sockjs::htmlfile_head("callback"))
        .await;
    r.expect("<script>\np(\"o\");\n</script>\r\n").await;
    let msg = "x".repeat(4096);
    assert_eq!(
        s.post(&format!("{url}/xhr_send"), &format!("[\"{msg}\"]"))
            .await
            .0,
        204
    );
    r.expect(&format!(
        "<script>\np(\"a[\\\"{msg}\\\"]\");\n</script>\r\n"
    ))
    .await;
    r.expect_end().await;
}

async fn form_post(s: &Services, url: &str, body: &str) -> (StatusCode, HeaderMap, String) {
    read_all(
        s.req(
            Method::POST,
            url,
            &[("Content-Type", "application/x-www-form-urlencoded")],
            body,
        )
        .await,
    )
    .await
}

#[tokio::test]
async fn jsonp_polling_sending_errors_and_close() {
    let s = Services::start(|_| {}).await;
    let url = s.session("echo");
    let (status, h, body) = s.get(&format!("{url}/jsonp?c=%63allback")).await;
    assert_eq!(status, 200);
    assert_eq!(content_type(&h), "application/javascript;charset=UTF-8");
    assert_not_cached(&h);
    assert_eq!(body, "/**/callback(\"o\");\r\n");
    let (status, h, body) = form_post(&s, &format!("{url}/jsonp_send"), "d=%5B%22x%22%5D").await;
    assert_eq!((status.as_u16(), body.as_str()), (200, "ok"));
    assert_eq!(content_type(&h), "text/plain;charset=UTF-8");
    assert_not_cached(&h);
    let (_, _, body) = s.get(&format!("{url}/jsonp?c=%63allback")).await;
    assert_eq!(body, "/**/callback(\"a[\\\"x\\\"]\");\r\n");

    let (status, _, body) = s.get(&s.url("echo", "/a/a/jsonp")).await;
    assert_eq!(status, 500);
    assert!(body.contains("\"callback\" parameter required"));
    for cb in ["%20", "*", "abc(", "abc%28"] {
        let (status, _, body) = s.get(&s.url("echo", &format!("/a/a/jsonp?c={cb}"))).await;
        assert_eq!(status, 500, "{cb}");
        assert!(body.contains("invalid \"callback\" parameter"), "{cb}");
    }

    let url = s.session("echo");
    assert_eq!(
        s.get(&format!("{url}/jsonp?c=x")).await.2,
        "/**/x(\"o\");\r\n"
    );
    let (status, _, body) = form_post(&s, &format!("{url}/jsonp_send"), "d=%5B%22x").await;
    assert_eq!(status, 500);
    assert!(body.contains("Broken JSON encoding."));
    for data in ["", "d=", "p=p"] {
        let (status, _, body) = form_post(&s, &format!("{url}/jsonp_send"), data).await;
        assert_eq!(status, 500, "{data:?}");
        assert!(body.contains("Payload expected."), "{data:?}");
    }
    assert_eq!(
        form_post(&s, &format!("{url}/jsonp_send"), "d=%5B%5D")
            .await
            .2,
        "ok"
    );
    assert_eq!(
        form_post(&s, &format!("{url}/jsonp_send"), "d=%5B%22abc%22%5D")
            .await
            .2,
        "ok"
    );
    let r = s
        .req(
            Method::POST,
            &format!("{url}/jsonp_send"),
            &[("Content-Type", "text/plain")],
            "[\"%61bc\"]",
        )
        .await;
    assert_eq!(read_all(r).await.2, "ok");
    assert_eq!(
        s.get(&format!("{url}/jsonp?c=x")).await.2,
        "/**/x(\"a[\\\"abc\\\",\\\"%61bc\\\"]\");\r\n"
    );

    let url = s.session("close");
    assert_eq!(
        s.get(&format!("{url}/jsonp?c=x")).await.2,
        "/**/x(\"o\");\r\n"
    );
    for _ in 0..2 {
        assert_eq!(
            s.get(&format!("{url}/jsonp?c=x")).await.2,
            "/**/x(\"c[3000,\\\"Go away!\\\"]\");\r\n"
        );
    }
}

fn assert_cookie(h: &HeaderMap, value: &str) {
    let cookie = header(h, "set-cookie").expect("a Set-Cookie header");
    let mut parts = cookie.split(';');
    assert_eq!(parts.next().unwrap().trim(), format!("JSESSIONID={value}"));
    assert_eq!(parts.next().unwrap().trim().to_ascii_lowercase(), "path=/");
}

#[tokio::test]
async fn jsessionid_cookie_on_every_session_transport_when_needed() {
    let s = Services::start(|_| {}).await;
    let url = s.session("cookie_needed_echo");
    let (status, h, body) = s.post(&format!("{url}/xhr"), "").await;
    assert_eq!((status.as_u16(), body.as_str()), (200, "o\n"));
    assert_cookie(&h, "dummy");
    let r = s
        .req(
            Method::POST,
            &format!("{}/xhr", s.session("cookie_needed_echo")),
            &[("Cookie", "JSESSIONID=abcdef")],
            "",
        )
        .await;
    assert_cookie(r.headers(), "abcdef");

    let r = Stream::open(
        &s,
        Method::POST,
        &format!("{}/xhr_streaming", s.session("cookie_needed_echo")),
    )
    .await;
    assert_cookie(r.resp.headers(), "dummy");
    let r = Stream::open(
        &s,
        Method::GET,
        &format!("{}/eventsource", s.session("cookie_needed_echo")),
    )
    .await;
    assert_cookie(r.resp.headers(), "dummy");
    let r = Stream::open(
        &s,
        Method::GET,
        &format!("{}/htmlfile?c=%63allback", s.session("cookie_needed_echo")),
    )
    .await;
    assert_cookie(r.resp.headers(), "dummy");
    let url = s.session("cookie_needed_echo");
    let (_, h, body) = s.get(&format!("{url}/jsonp?c=%63allback")).await;
    assert_cookie(&h, "dummy");
    assert_eq!(body, "/**/callback(\"o\");\r\n");
    let (_, h, body) = form_post(&s, &format!("{url}/jsonp_send"), "d=%5B%22x%22%5D").await;
    assert_eq!(body, "ok");
    assert_cookie(&h, "dummy");

    // Without the option: no cookie anywhere.
    let (_, h, _) = s.post(&format!("{}/xhr", s.session("echo")), "").await;
    assert!(header(&h, "set-cookie").is_none());
}

#[tokio::test]
async fn the_server_escapes_what_the_protocol_lists_and_decodes_what_clients_escape() {
    let s = Services::start(|_| {}).await;
    // The suite's `server_killer_string_esc`: every character from U+00FF up that servers must
    // send escaped.
    let killers: String = (0xFFu32..0x10000)
        .filter_map(char::from_u32)
        .filter(|c| {
            matches!(*c as u32, 0x200C..=0x200F | 0x2028..=0x202F | 0x2060..=0x206F | 0xFFF0..=0xFFFF)
        })
        .collect();
    let escaped: String = killers
        .chars()
        .map(|c| format!("\\u{:04x}", c as u32))
        .collect();
    let url = s.session("echo");
    assert_eq!(s.post(&format!("{url}/xhr"), "").await.2, "o\n");
    let payload = format!("[\"{killers}\"]");
    assert_eq!(s.post(&format!("{url}/xhr_send"), &payload).await.0, 204);
    let (_, _, body) = s.post(&format!("{url}/xhr"), "").await;
    assert_eq!(body.trim(), format!("a[\"{escaped}\"]"));

    // Clients escape a long list of characters; the server decodes them all (surrogates as
    // pairs only: a lone surrogate is not a character).
    let all: String = (1u32..0x10000)
        .filter_map(char::from_u32)
        .filter(|c| !c.is_ascii_alphanumeric())
        .collect();
    let client_escaped: String = all
        .chars()
        .map(|c| format!("\\u{:04x}", c as u32))
        .collect();
    let emoji = "\\ud83d\\ude00";
    let url = s.session("echo");
    assert_eq!(s.post(&format!("{url}/xhr"), "").await.2, "o\n");
    let payload = format!("[\"{client_escaped}{emoji}\"]");
    assert_eq!(s.post(&format!("{url}/xhr_send"), &payload).await.0, 204);
    let (_, _, body) = s.post(&format!("{url}/xhr"), "").await;
    let frame = body.trim().strip_prefix('a').unwrap();
    let got: Vec<String> = serde_json::from_str(frame).unwrap();
    assert_eq!(got, vec![format!("{all}\u{1F600}")]);
}

#[tokio::test]
async fn closing_unlinks_the_receiver_and_aborted_receivers_interrupt_the_session() {
    let s = Services::start(|o| o.heartbeat_delay = Duration::from_secs(2)).await;
    // A closed session answers every receiver with its close frame, then ends the response.
    let url = s.session("close");
    let mut r1 = Stream::open(&s, Method::POST, &format!("{url}/xhr_streaming")).await;
    r1.expect(&prelude()).await;
    r1.expect("o\n").await;
    r1.expect("c[3000,\"Go away!\"]\n").await;
    let mut r2 = Stream::open(&s, Method::POST, &format!("{url}/xhr_streaming")).await;
    r2.expect(&prelude()).await;
    r2.expect("c[3000,\"Go away!\"]\n").await;
    r1.expect_end().await;
    r2.expect_end().await;

    // A second streaming receiver gets 2010, and its response ends.
    let url = s.session("echo");
    let mut r1 = Stream::open(&s, Method::POST, &format!("{url}/xhr_streaming")).await;
    r1.expect(&prelude()).await;
    r1.expect("o\n").await;
    let mut r2 = Stream::open(&s, Method::POST, &format!("{url}/xhr_streaming")).await;
    r2.expect(&prelude()).await;
    r2.expect("c[2010,\"Another connection still open\"]\n")
        .await;
    r2.expect_end().await;
    // The first receiver goes away mid-stream: the session is interrupted (the next receiver
    // is handed the session, not refused, even when it asks at once).
    drop(r1);
    let interrupted = "c[1002,\"Connection interrupted\"]\n";
    let mut r3 = Stream::open(&s, Method::POST, &format!("{url}/xhr_streaming")).await;
    r3.expect(&prelude()).await;
    let body = r3.line().await;
    assert!(body == "o\n" || body == interrupted, "{body:?}");

    // The same for polling.
    let url = s.session("echo");
    assert_eq!(s.post(&format!("{url}/xhr"), "").await.2, "o\n");
    let waiting = hold_poll(&s, &url).await;
    waiting.abort();
    let _ = waiting.await;
    let (_, _, body) = s.post(&format!("{url}/xhr"), "").await;
    assert!(body == "o\n" || body == interrupted, "{body:?}");
}

/// Waits until `server` holds `n` live sessions, looking again every few milliseconds.
async fn live_sessions_become(server: &SockJsServer, n: usize) {
    within(&format!("{n} live sessions"), async {
        while server.live_sessions() != n {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
}

#[tokio::test]
async fn oversized_bodies_are_refused_and_close_the_session() {
    let s = Services::start(|o| o.max_message_size = 1000).await;
    let url = s.session("echo");
    assert_eq!(s.post(&format!("{url}/xhr"), "").await.2, "o\n");
    let big = format!("[\"{}\"]", "x".repeat(1001));
    let (status, _, body) = s.post(&format!("{url}/xhr_send"), &big).await;
    assert_eq!((status.as_u16(), body.as_str()), (413, "Message too big."));
    assert_eq!(
        s.post(&format!("{url}/xhr"), "").await.2,
        "c[1009,\"Message too big\"]\n"
    );
    // A body far over the frame limit is cut off, not read whole.
    let url = s.session("echo");
    assert_eq!(
        s.get(&format!("{url}/jsonp?c=x")).await.2,
        "/**/x(\"o\");\r\n"
    );
    let huge = format!("d={}", "x".repeat(1 << 20));
    assert_eq!(
        form_post(&s, &format!("{url}/jsonp_send"), &huge).await.0,
        413
    );
    assert_eq!(
        s.get(&format!("{url}/jsonp?c=x")).await.2,
        "/**/x(\"c[1009,\\\"Message too big\\\"]\");\r\n"
    );
    // Other sessions are untouched.
    let url = s.session("echo");
    assert_eq!(s.post(&format!("{url}/xhr"), "").await.2, "o\n");
    assert_eq!(
        s.post(&format!("{url}/xhr_send"), "[\"fine\"]").await.0,
        204
    );
    assert_eq!(s.post(&format!("{url}/xhr"), "").await.2, "a[\"fine\"]\n");
}

#[tokio::test]
async fn a_flood_of_sessions_that_never_poll_again_is_cleaned_up() {
    let s = Services::start(|o| o.disconnect_delay = Duration::from_millis(300)).await;
    let opened = futures_util::future::join_all((0..300).map(|i| {
        let url = s.session("echo");
        let s = &s;
        async move {
            match i % 4 {
                0 => s.post(&format!("{url}/xhr"), "").await.2,
                1 => s.get(&format!("{url}/jsonp?c=f")).await.2,
                // Streaming receivers that go away after the open frame.
                2 => {
                    let mut r =
                        Stream::open(s, Method::POST, &format!("{url}/xhr_streaming")).await;
                    r.expect(&prelude()).await;
                    r.line().await
                }
                _ => {
                    let mut r = Stream::open(s, Method::GET, &format!("{url}/eventsource")).await;
                    r.expect("\r\n").await;
                    r.line().await
                }
            }
        }
    }))
    .await;
    assert!(opened.iter().all(|b| b.contains('o')), "{:?}", &opened[..4]);
    let mut sockets = Vec::new();
    for _ in 0..20 {
        let mut ws = ws_connect(&format!("{}/websocket", s.session("echo"))).await;
        assert_eq!(ws_next(&mut ws).await.as_deref(), Some("o"));
        sockets.push(ws);
    }
    assert!(s.echo.live_sessions() >= 20, "{}", s.echo.live_sessions());
    drop(sockets);
    live_sessions_become(&s.echo, 0).await;
}

#[tokio::test]
async fn a_kite_serves_the_sockjs_transports_its_config_offers() {
    let mut config = kite_native::Config::default();
    config.ip = [127, 0, 0, 1].into();
    config.disable_authentication = true;
    config.sockjs.jsonp = false;
    config.sockjs.cookie_needed = true;
    let kite = kite_native::Kite::with_config("math", "1.0.0", config).unwrap();
    let server = kite.clone();
    tokio::spawn(async move { server.run().await.unwrap() });
    let addr = within("kite up", kite.ready()).await;
    let base = format!("http://{addr}/kite");
    let http = reqwest::Client::new();
    for url in [base.clone(), format!("{base}/")] {
        let body = http.get(url).send().await.unwrap().text().await.unwrap();
        assert_eq!(body, "Welcome to SockJS!\n");
    }
    let info = http.get(format!("{base}/info")).send().await.unwrap();
    let info: serde_json::Value = serde_json::from_str(&info.text().await.unwrap()).unwrap();
    assert_eq!(info["cookie_needed"], true);
    let id = uuid::Uuid::new_v4();
    let jsonp = http
        .get(format!("{base}/0/{id}/jsonp?c=x"))
        .send()
        .await
        .unwrap();
    assert_eq!(jsonp.status(), 404);
    // Eventsource reaches the kite: `kite.ping` answered through it.
    let resp = http
        .get(format!("{base}/0/{id}/eventsource"))
        .send()
        .await
        .unwrap();
    assert!(resp.headers().contains_key("set-cookie"));
    let mut r = Stream {
        resp,
        buf: Vec::new(),
    };
    r.expect("\r\n").await;
    r.expect("data: o\r\n\r\n").await;
    let ping = r#"{"method":"kite.ping","arguments":[{"withArgs":[],"responseCallback":"[Function]"}],"callbacks":{"0":["0","responseCallback"]},"links":[]}"#;
    let frame = kite_native::core::sockjs::encode_client_frame([ping]);
    let sent = http
        .post(format!("{base}/0/{id}/xhr_send"))
        .body(frame)
        .send()
        .await
        .unwrap();
    assert_eq!(sent.status(), 204);
    let line = r.line().await;
    let line = line.trim().strip_prefix("data: a").unwrap();
    let msgs: Vec<String> = serde_json::from_str(line).unwrap();
    let reply: serde_json::Value = serde_json::from_str(&msgs[0]).unwrap();
    assert_eq!(reply["arguments"][0]["result"], "pong", "{reply}");
    kite.close();
}

/// As sockjs-node writes them, and as the protocol suite reads them: the prelude and each frame
/// is an HTTP chunk of its own, the `o` and close frames included.
#[tokio::test]
async fn every_streaming_frame_is_an_http_chunk_of_its_own() {
    let s = Services::start(|_| {}).await;
    let url = s.session("echo");
    let mut r = RawHttp::open("POST", &format!("{url}/xhr_streaming")).await;
    r.expect(&prelude()).await;
    r.expect("o\n").await;
    assert_eq!(s.post(&format!("{url}/xhr_send"), "[\"x\"]").await.0, 204);
    r.expect("a[\"x\"]\n").await;
    // A second receiver: the prelude, then the 2010 frame, then the end.
    let mut second = RawHttp::open("POST", &format!("{url}/xhr_streaming")).await;
    second.expect(&prelude()).await;
    second
        .expect("c[2010,\"Another connection still open\"]\n")
        .await;
    second.expect_end().await;

    let url = s.session("echo");
    let mut r = RawHttp::open("GET", &format!("{url}/eventsource")).await;
    r.expect("\r\n").await;
    r.expect("data: o\r\n\r\n").await;
    assert_eq!(s.post(&format!("{url}/xhr_send"), "[\"x\"]").await.0, 204);
    r.expect("data: a[\"x\"]\r\n\r\n").await;

    let url = s.session("echo");
    let mut r = RawHttp::open("GET", &format!("{url}/htmlfile?c=callback")).await;
    r.expect(&kite_native::core::sockjs::htmlfile_head("callback"))
        .await;
    r.expect("<script>\np(\"o\");\n</script>\r\n").await;

    // The close frame right after the open frame, then the end of the response.
    let url = s.session("close");
    let mut r = RawHttp::open("POST", &format!("{url}/xhr_streaming")).await;
    r.expect(&prelude()).await;
    r.expect("o\n").await;
    r.expect("c[3000,\"Go away!\"]\n").await;
    r.expect_end().await;
}

/// A client that drops a receiving request and asks again at once is usually faster than the
/// server at noticing the dropped connection: it is handed the session (interrupted), not
/// refused with `c[2010,...]` as if the old request were still there.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_receiver_asking_again_right_after_it_was_cut_off_is_not_refused() {
    let s = Services::start(|_| {}).await;
    let interrupted = "c[1002,\"Connection interrupted\"]\n";
    for _ in 0..5 {
        let url = s.session("echo");
        let streaming = format!("{url}/xhr_streaming");
        let mut r1 = RawHttp::open("POST", &streaming).await;
        r1.expect(&prelude()).await;
        r1.expect("o\n").await;
        // The new request goes out as the old one is cut off: the server may see it first.
        let mut r2 = RawHttp::send("POST", &streaming).await;
        drop(r1);
        r2.head(&streaming).await;
        r2.expect(&prelude()).await;
        assert_eq!(r2.chunk().await.as_deref(), Some(interrupted));
        r2.expect_end().await;
    }
    // A receiver that stays is still refused, after the handover delay.
    let url = s.session("echo");
    let mut r1 = RawHttp::open("POST", &format!("{url}/xhr_streaming")).await;
    r1.expect(&prelude()).await;
    r1.expect("o\n").await;
    let mut r2 = RawHttp::open("POST", &format!("{url}/xhr_streaming")).await;
    r2.expect(&prelude()).await;
    r2.expect("c[2010,\"Another connection still open\"]\n")
        .await;
    r2.expect_end().await;
    assert_eq!(s.post(&format!("{url}/xhr_send"), "[\"x\"]").await.0, 204);
    r1.expect("a[\"x\"]\n").await;
}

/// As sockjs-node does, and as the protocol suite checks: broken JSON on a SockJS websocket
/// ends it with a websocket close 3000 "Broken framing.", not with a SockJS `c` frame.
#[tokio::test]
async fn broken_json_closes_the_websocket_with_3000() {
    let s = Services::start(|_| {}).await;
    for bad in ["[\"a", "{\"a\":1}", "[1]"] {
        let mut ws = ws_connect(&format!("{}/websocket", s.session("echo"))).await;
        assert_eq!(ws_next(&mut ws).await.as_deref(), Some("o"));
        ws.send(Message::text(bad)).await.unwrap();
        let close = match within("close", ws.next()).await {
            Some(Ok(Message::Close(Some(close)))) => close,
            other => panic!("{bad}: expected the websocket close, got {other:?}"),
        };
        assert_eq!(
            (u16::from(close.code), close.reason.as_str()),
            (3000, "Broken framing."),
            "{bad}"
        );
        // Then the connection ends.
        assert!(
            matches!(within("end", ws.next()).await, None | Some(Err(_))),
            "{bad}"
        );
    }
}

/// One request on a socket of its own, written as given; the status line, the headers (lower
/// case) and the body (`Content-Length` bytes; none for a 101) of the answer.
async fn raw_exchange(addr: &str, request: &str) -> (String, Vec<(String, String)>, String) {
    use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt};
    let stream = within("connect", tokio::net::TcpStream::connect(addr))
        .await
        .unwrap();
    let mut io = tokio::io::BufReader::new(stream);
    io.get_mut().write_all(request.as_bytes()).await.unwrap();
    let mut status = String::new();
    within("status", io.read_line(&mut status)).await.unwrap();
    let mut headers = Vec::new();
    loop {
        let mut line = String::new();
        within("header", io.read_line(&mut line)).await.unwrap();
        if line == "\r\n" || line.is_empty() {
            break;
        }
        let (name, value) = line.split_once(':').unwrap();
        headers.push((name.to_ascii_lowercase(), value.trim().to_owned()));
    }
    let length = headers
        .iter()
        .find(|(n, _)| n == "content-length")
        .map_or(0, |(_, v)| v.parse().unwrap());
    let mut body = vec![0; length];
    within("body", io.read_exact(&mut body)).await.unwrap();
    (
        status.trim_end().to_owned(),
        headers,
        String::from_utf8(body).unwrap(),
    )
}

/// The handshake is ours, not axum's: a request missing what an upgrade needs gets the answer
/// axum's `WebSocketUpgrade` gave (same status, same text), on the SockJS and the raw
/// websocket endpoints alike, and a good one gets the RFC 6455 accept key and no subprotocol.
#[tokio::test]
async fn websocket_upgrades_are_checked_as_before() {
    let s = Services::start(|_| {}).await;
    let addr = s.base.strip_prefix("http://").unwrap().to_owned();
    const KEY: &str = "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n";
    const GOOD: &str = "Connection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\n";
    let cases: [(&str, String, &str, &str); 6] = [
        (
            "no Connection: upgrade",
            format!(
                "Connection: keep-alive\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\n{KEY}"
            ),
            "HTTP/1.1 400 Bad Request",
            "Connection header did not include 'upgrade'",
        ),
        (
            "Upgrade: h2c",
            format!("Connection: Upgrade\r\nUpgrade: h2c\r\nSec-WebSocket-Version: 13\r\n{KEY}"),
            "HTTP/1.1 400 Bad Request",
            "`Upgrade` header did not include 'websocket'",
        ),
        (
            "no Upgrade",
            format!("Connection: Upgrade\r\nSec-WebSocket-Version: 13\r\n{KEY}"),
            "HTTP/1.1 400 Bad Request",
            "`Upgrade` header did not include 'websocket'",
        ),
        (
            "version 8",
            format!(
                "Connection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 8\r\n{KEY}"
            ),
            "HTTP/1.1 400 Bad Request",
            "`Sec-WebSocket-Version` header did not include '13'",
        ),
        (
            "no version",
            format!("Connection: Upgrade\r\nUpgrade: websocket\r\n{KEY}"),
            "HTTP/1.1 400 Bad Request",
            "`Sec-WebSocket-Version` header did not include '13'",
        ),
        (
            "no key",
            GOOD.to_owned(),
            "HTTP/1.1 400 Bad Request",
            "`Sec-WebSocket-Key` header missing",
        ),
    ];
    let session = s.session("echo");
    let sockjs_path = format!("{}/websocket", session.strip_prefix(&s.base).unwrap());
    for path in [sockjs_path.as_str(), "/echo/websocket"] {
        for (what, headers, status, body) in &cases {
            let request = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\n{headers}\r\n");
            let (got, h, text) = raw_exchange(&addr, &request).await;
            assert_eq!(
                (got.as_str(), text.as_str()),
                (*status, *body),
                "{path}: {what}"
            );
            assert!(
                h.iter()
                    .any(|(n, v)| n == "content-type" && v == "text/plain; charset=utf-8"),
                "{path}: {what}: {h:?}"
            );
        }
        // Upper case is fine, and a subprotocol asked for is not taken.
        let request = format!(
            "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: keep-alive, UPGRADE\r\n\
             Upgrade: WebSocket\r\nSec-WebSocket-Version: 13\r\n{KEY}\
             Sec-WebSocket-Protocol: chat\r\n\r\n"
        );
        let (got, h, _) = raw_exchange(&addr, &request).await;
        assert_eq!(got, "HTTP/1.1 101 Switching Protocols", "{path}");
        // The headers axum's answer had, in its order (then CORS and the date).
        let names: Vec<&str> = h.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(
            names[..3],
            ["connection", "upgrade", "sec-websocket-accept"],
            "{path}"
        );
        assert!(!names.contains(&"sec-websocket-protocol"), "{path}");
        assert!(h.contains(&("connection".to_owned(), "upgrade".to_owned())));
        assert!(h.contains(&(
            "sec-websocket-accept".to_owned(),
            "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=".to_owned()
        )));
        assert!(h.contains(&("upgrade".to_owned(), "websocket".to_owned())));
    }
    // POST is not routed to the handler at all (405 with `Allow`, as before).
    let request = format!(
        "POST /echo/websocket HTTP/1.1\r\nHost: {addr}\r\n{GOOD}{KEY}Content-Length: 0\r\n\r\n"
    );
    let (got, h, _) = raw_exchange(&addr, &request).await;
    assert_eq!(got, "HTTP/1.1 405 Method Not Allowed");
    assert!(h.iter().any(|(n, _)| n == "allow"));
}

/// Messages far larger than both the socket's read-ahead chunk (64 KiB) and tungstenite's
/// frame buffer arrive whole, on both websocket endpoints, also with a chunk smaller than the
/// frame buffer; past the frame budget a raw websocket is still closed with 1009.
#[tokio::test]
async fn large_frames_arrive_intact_through_the_read_ahead() {
    for chunk in [64 * 1024, 512] {
        let s = Services::start(|o| {
            o.max_message_size = 1 << 20;
            o.read_buffer_size = chunk;
        })
        .await;
        let big: String = (0..300_000u32)
            .map(|i| char::from(b'a' + (i * 7 % 26) as u8))
            .collect();
        let mut raw = ws_connect(&s.url("echo", "/websocket")).await;
        for _ in 0..3 {
            raw.send(Message::text(big.clone())).await.unwrap();
            assert_eq!(ws_next(&mut raw).await.as_deref(), Some(big.as_str()));
            // Small messages in between still go (the read-ahead is freed after a burst).
            raw.send(Message::text("small")).await.unwrap();
            assert_eq!(ws_next(&mut raw).await.as_deref(), Some("small"));
        }
        let mut framed = ws_connect(&format!("{}/websocket", s.session("echo"))).await;
        assert_eq!(ws_next(&mut framed).await.as_deref(), Some("o"));
        framed
            .send(Message::text(format!("[\"{big}\",\"x\"]")))
            .await
            .unwrap();
        let got = ws_next(&mut framed).await.unwrap();
        // The echo may come back in one frame or two.
        let mut all = got.clone();
        if !got.contains("\"x\"") {
            all.push_str(&ws_next(&mut framed).await.unwrap());
        }
        assert!(all.starts_with("a[\""), "{}", &all[..10]);
        assert!(all.contains(&big), "chunk {chunk}");
        assert!(all.ends_with("\"x\"]"), "chunk {chunk}");

        // One byte past the raw websocket's frame budget (max_message_size).
        raw.send(Message::text("y".repeat((1 << 20) + 1)))
            .await
            .unwrap();
        let close = loop {
            match within("close", raw.next()).await {
                Some(Ok(Message::Close(Some(close)))) => break close,
                Some(Ok(_)) => {}
                other => panic!("expected the websocket close, got {other:?}"),
            }
        };
        assert_eq!(u16::from(close.code), 1009, "chunk {chunk}");
    }
}
