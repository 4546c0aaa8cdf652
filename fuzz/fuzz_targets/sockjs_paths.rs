//! The SockJS server's path rules (kite_native::sockjs): a request of any method to any path,
//! with any Origin, Cookie, Access-Control-Request-Headers and If-None-Match, through the real
//! router, against a model of the protocol's routes: the welcome page and `/info`; the iframe
//! page at `/iframe[0-9a-z._-]*.html`; `/<server>/<session>/<endpoint>` whose segments are
//! non-empty and have no `.` (else 404), 405 with `Allow` for a wrong method; 404 for anything
//! else; CORS headers on every answer; `JSESSIONID` set on session requests when the server
//! needs cookies. Requests that would open a session are left out (the session tests cover
//! them): a request here never holds anything.
//!
//! Input: a method byte (an index into `METHODS`), a flags byte (1: the server needs cookies,
//! 2: send the iframe page's ETag in If-None-Match), then lines: the path (with any query),
//! Origin, Cookie and Access-Control-Request-Headers (a missing or empty line: no header).
#![no_main]

use std::sync::OnceLock;

use axum::body::Body;
use axum::http::{HeaderValue, Method, Request, StatusCode, header};
use kite_native::sockjs::{SockJsOptions, SockJsServer};
use libfuzzer_sys::fuzz_target;
use tower::ServiceExt;

#[derive(Debug)]
struct Input<'a> {
    method: u8,
    cookie_needed: bool,
    if_none_match: bool,
    path: &'a [u8],
    origin: Option<&'a [u8]>,
    cookie: Option<&'a [u8]>,
    request_headers: Option<&'a [u8]>,
}

impl<'a> Input<'a> {
    fn parse(data: &'a [u8]) -> Option<Input<'a>> {
        let (&method, rest) = data.split_first()?;
        let (&flags, rest) = rest.split_first()?;
        let mut lines = rest.split(|b| *b == b'\n');
        let path = lines.next()?;
        let mut next = || lines.next().filter(|l| !l.is_empty());
        Some(Input {
            method,
            cookie_needed: flags & 1 != 0,
            if_none_match: flags & 2 != 0,
            path,
            origin: next(),
            cookie: next(),
            request_headers: next(),
        })
    }
}

const METHODS: [&str; 8] = [
    "GET", "POST", "PUT", "DELETE", "OPTIONS", "PATCH", "HEAD", "BREW",
];

/// `(endpoint, methods it answers, whether that method opens or feeds a session)`.
fn session_endpoint(name: &str) -> Option<&'static str> {
    Some(match name {
        "websocket" | "eventsource" | "htmlfile" | "jsonp" => "GET",
        "xhr" | "xhr_send" | "xhr_streaming" => "OPTIONS, POST",
        "jsonp_send" => "POST",
        _ => return None,
    })
}

fn valid_segment(s: &str) -> bool {
    !s.is_empty() && !s.contains('.')
}

fn is_iframe(path: &str) -> bool {
    let Some(v) = path
        .strip_prefix("/iframe")
        .and_then(|r| r.strip_suffix(".html"))
    else {
        return false;
    };
    v.bytes()
        .all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'z' | b'.' | b'_' | b'-'))
}

/// What the model expects: the status (or statuses, where the framework decides), whether
/// the request must be left out, and whether it is a session request (for cookies).
enum Expect {
    Status(&'static [StatusCode]),
    Allow(&'static str),
    Skip,
}

fn model(method: &Method, path: &str) -> (Expect, bool) {
    use StatusCode as S;
    let segments: Vec<&str> = path.split('/').collect();
    let get_like = method == Method::GET || method == Method::HEAD;
    if path == "/" {
        return (
            if get_like {
                Expect::Status(&[S::OK])
            } else {
                Expect::Status(&[S::METHOD_NOT_ALLOWED])
            },
            false,
        );
    }
    if path == "/info" {
        return (
            match *method {
                Method::GET | Method::HEAD => Expect::Status(&[S::OK]),
                Method::OPTIONS => Expect::Status(&[S::NO_CONTENT]),
                _ => Expect::Allow("OPTIONS, GET"),
            },
            false,
        );
    }
    if path == "/websocket" {
        // A raw websocket upgrade; without upgrade headers GET is refused.
        return (
            if get_like {
                Expect::Status(&[S::BAD_REQUEST, S::METHOD_NOT_ALLOWED, S::UPGRADE_REQUIRED])
            } else {
                Expect::Allow("GET")
            },
            false,
        );
    }
    if segments.len() == 4
        && segments[0].is_empty()
        && !segments[1].is_empty()
        && !segments[2].is_empty()
        && let Some(allow) = session_endpoint(segments[3])
    {
        let session_request = segments[3] != "websocket";
        let raw_valid = valid_segment(segments[1]) && valid_segment(segments[2]);
        let answers = allow.split(", ").any(|m| m == method.as_str())
            || (allow == "GET" && method == Method::HEAD);
        if !answers {
            return (
                if raw_valid {
                    Expect::Allow(allow)
                } else {
                    Expect::Status(&[S::NOT_FOUND])
                },
                session_request,
            );
        }
        // The router decodes the segments before checking them.
        let decoded = |s: &str| String::from_utf8(kite_fuzz::percent_decode(s)).ok();
        let valid = matches!((decoded(segments[1]), decoded(segments[2])), (Some(a), Some(b)) if valid_segment(&a) && valid_segment(&b));
        if !valid {
            return (Expect::Status(&[S::NOT_FOUND]), session_request);
        }
        if method == Method::OPTIONS {
            return (Expect::Status(&[S::NO_CONTENT]), session_request);
        }
        // A request that would open or feed a session: left out.
        return (Expect::Skip, session_request);
    }
    if is_iframe(path) {
        return (
            match *method {
                Method::GET => Expect::Status(&[S::OK, S::NOT_MODIFIED]),
                Method::HEAD => Expect::Status(&[S::OK, S::NOT_MODIFIED, S::NOT_FOUND]),
                _ => Expect::Status(&[S::NOT_FOUND]),
            },
            false,
        );
    }
    (Expect::Status(&[S::NOT_FOUND]), false)
}

fn runtime() -> &'static tokio::runtime::Runtime {
    static RT: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RT.get_or_init(|| {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
    })
}

fn etag() -> &'static HeaderValue {
    static ETAG: OnceLock<HeaderValue> = OnceLock::new();
    ETAG.get_or_init(|| {
        let server = SockJsServer::new(SockJsOptions::default(), |_| {});
        let req = Request::get("/iframe.html").body(Body::empty()).unwrap();
        let resp = runtime().block_on(server.router().oneshot(req)).unwrap();
        resp.headers()[header::ETAG].clone()
    })
}

fn check(input: Input) {
    let method =
        Method::from_bytes(METHODS[usize::from(input.method) % METHODS.len()].as_bytes()).unwrap();
    let Ok(uri) = axum::http::Uri::builder()
        .path_and_query(input.path)
        .build()
    else {
        return;
    };
    let path = uri.path().to_owned();
    let (expect, session_request) = model(&method, &path);
    if matches!(expect, Expect::Skip) {
        return;
    }
    let header = |v: Option<&[u8]>| v.and_then(|b| HeaderValue::from_bytes(b).ok());
    let origin = header(input.origin);
    let cookie = header(input.cookie);
    let request_headers = header(input.request_headers);
    let mut req = Request::builder().method(method.clone()).uri(uri);
    if let Some(v) = &origin {
        req = req.header(header::ORIGIN, v);
    }
    if let Some(v) = &cookie {
        req = req.header(header::COOKIE, v);
    }
    if let Some(v) = &request_headers {
        req = req.header(header::ACCESS_CONTROL_REQUEST_HEADERS, v);
    }
    if input.if_none_match {
        req = req.header(header::IF_NONE_MATCH, etag());
    }
    let req = req.body(Body::empty()).unwrap();
    let options = SockJsOptions {
        cookie_needed: input.cookie_needed,
        ..SockJsOptions::default()
    };
    let server = SockJsServer::new(options, |_| panic!("no request here opens a session"));
    let resp = runtime().block_on(server.router().oneshot(req)).unwrap();
    let status = resp.status();
    let h = resp.headers();
    match expect {
        Expect::Status(allowed) => {
            assert!(allowed.contains(&status), "{method} {path:?}: {status}")
        }
        Expect::Allow(allow) => {
            assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED, "{method} {path:?}");
            assert_eq!(h[header::ALLOW], allow, "{method} {path:?}");
        }
        Expect::Skip => unreachable!(),
    }
    assert_eq!(server.live_sessions(), 0);
    // CORS on every answer.
    match &origin {
        Some(o) => {
            assert_eq!(h.get(header::ACCESS_CONTROL_ALLOW_ORIGIN), Some(o));
            assert_eq!(h[header::ACCESS_CONTROL_ALLOW_CREDENTIALS], "true");
        }
        None => assert_eq!(h[header::ACCESS_CONTROL_ALLOW_ORIGIN], "*"),
    }
    match request_headers.filter(|v| !v.is_empty()) {
        Some(v) => assert_eq!(h.get(header::ACCESS_CONTROL_ALLOW_HEADERS), Some(&v)),
        None => assert!(!h.contains_key(header::ACCESS_CONTROL_ALLOW_HEADERS)),
    }
    // Sticky-session cookies: the client's JSESSIONID (else `dummy`) on session requests.
    let set_cookie = h.get(header::SET_COOKIE);
    if input.cookie_needed && session_request && status != StatusCode::NOT_FOUND {
        let id = cookie
            .as_ref()
            .and_then(|v| v.to_str().ok())
            .and_then(|v| {
                v.split(';')
                    .filter_map(|p| p.trim().split_once('='))
                    .find(|(n, _)| *n == "JSESSIONID")
                    .map(|(_, v)| v.to_owned())
            })
            .unwrap_or_else(|| "dummy".to_owned());
        let want = format!("JSESSIONID={id}; path=/");
        match HeaderValue::from_str(&want) {
            Ok(v) => assert_eq!(set_cookie, Some(&v), "{path:?}"),
            Err(_) => assert!(set_cookie.is_none()),
        }
    } else {
        assert!(set_cookie.is_none(), "{method} {path:?}: {set_cookie:?}");
    }
}

fuzz_target!(|data: &[u8]| {
    if let Some(input) = Input::parse(data) {
        check(input);
    }
});
