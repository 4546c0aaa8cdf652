//! The plain HTTP parts of the server: routes, CORS, cookies, caching headers, refusals.

use super::Refusal;

/// `Cache-Control` of everything that must never be cached (session requests, `/info`).
pub(super) const NO_CACHE: &str = "no-store, no-cache, no-transform, must-revalidate, max-age=0";
/// `Cache-Control` of preflight answers.
const CACHE_ONE_YEAR: &str = "public, max-age=31536000";
pub(super) const TEXT: &str = "text/plain; charset=UTF-8";
pub(super) const JSON: &str = "application/json; charset=UTF-8";
pub(super) const JAVASCRIPT: &str = "application/javascript; charset=UTF-8";

/// The endpoints of `/<server>/<session>/...`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Endpoint {
    Xhr,
    XhrSend,
    XhrStreaming,
    WebSocket,
    /// eventsource, htmlfile, jsonp, jsonp_send: not offered (404).
    Other,
}

/// What a path (after the prefix) names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Route {
    /// `""` or `/`.
    Welcome,
    /// `/info`.
    Info,
    /// `/websocket`.
    RawWebSocket,
    /// `/<server>/<session>/<endpoint>`, with the (percent-decoded) session string.
    Session(String, Endpoint),
    NotFound,
}

/// A server or session segment is valid when it is non-empty and has no `.` (sockjs-go's
/// `[^/.]+`, kite-native's rule).
fn valid_segment(s: &str) -> bool {
    !s.is_empty() && !s.contains('.')
}

fn hex(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

/// A path segment percent-decoded (a `%` not followed by two hex digits stays as it is), as
/// kite-native's router reads it; `None` when that is not UTF-8.
fn decode_segment(s: &str) -> Option<String> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%'
            && let (Some(hi), Some(lo)) = (
                b.get(i + 1).copied().and_then(hex),
                b.get(i + 2).copied().and_then(hex),
            )
        {
            out.push(hi << 4 | lo);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

/// The route of `path` (maybe with `?query`).
pub(super) fn route(path: &str) -> Route {
    let path = path.split_once('?').map_or(path, |(p, _)| p);
    match path {
        "" | "/" => return Route::Welcome,
        "/info" => return Route::Info,
        "/websocket" => return Route::RawWebSocket,
        _ => {}
    }
    let Some(rest) = path.strip_prefix('/') else {
        return Route::NotFound;
    };
    let mut parts = rest.split('/');
    let (Some(server), Some(session), Some(endpoint), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Route::NotFound;
    };
    let endpoint = match endpoint {
        "xhr" => Endpoint::Xhr,
        "xhr_send" => Endpoint::XhrSend,
        "xhr_streaming" => Endpoint::XhrStreaming,
        "websocket" => Endpoint::WebSocket,
        "eventsource" | "htmlfile" | "jsonp" | "jsonp_send" => Endpoint::Other,
        _ => return Route::NotFound,
    };
    match (decode_segment(server), decode_segment(session)) {
        (Some(server), Some(session)) if valid_segment(&server) && valid_segment(&session) => {
            Route::Session(session, endpoint)
        }
        _ => Route::NotFound,
    }
}

/// Whether `v` may be written back as a header value (visible ASCII, spaces and tabs, and
/// bytes past ASCII): a peer's header is echoed only then.
fn header_safe(v: &str) -> bool {
    v.bytes().all(|b| b == b'\t' || (b >= 0x20 && b != 0x7f))
}

/// The CORS headers of every answer but the greeting: the request's `Origin` echoed with
/// credentials allowed, or `*` without; the requested headers echoed.
pub(super) fn cors(
    origin: Option<&str>,
    request_headers: Option<&str>,
) -> Vec<(&'static str, String)> {
    let mut h = Vec::with_capacity(6);
    match origin.filter(|o| header_safe(o)) {
        Some(origin) => {
            h.push(("Access-Control-Allow-Origin", origin.to_owned()));
            h.push(("Access-Control-Allow-Credentials", "true".to_owned()));
        }
        None => h.push(("Access-Control-Allow-Origin", "*".to_owned())),
    }
    if let Some(v) = request_headers.filter(|v| !v.is_empty() && header_safe(v)) {
        h.push(("Access-Control-Allow-Headers", v.to_owned()));
    }
    h
}

/// The `Set-Cookie` value of a session request when cookies are needed: the client's own
/// `JSESSIONID`, else `dummy`.
pub(super) fn cookie(header: Option<&str>) -> String {
    let id = header
        .into_iter()
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(name, _)| *name == "JSESSIONID")
        .map(|(_, value)| value)
        .filter(|v| header_safe(v))
        .unwrap_or("dummy");
    format!("JSESSIONID={id}; path=/")
}

/// The headers of a 204 preflight answer allowing `methods`. (An `Expires` a year ahead needs
/// a calendar clock: a driver that wants one adds it; `Cache-Control` supersedes it.)
pub(super) fn preflight(
    mut headers: Vec<(&'static str, String)>,
    methods: &'static str,
) -> Vec<(&'static str, String)> {
    headers.push(("Access-Control-Allow-Methods", methods.to_owned()));
    headers.push(("Cache-Control", CACHE_ONE_YEAR.to_owned()));
    headers.push(("Access-Control-Max-Age", "31536000".to_owned()));
    headers
}

/// The headers of a 405 answer.
pub(super) fn allow(methods: &'static str) -> Vec<(&'static str, String)> {
    vec![("Allow", methods.to_owned())]
}

/// The headers of a 503 answer past a budget (`headers` plus a plain text type, uncached).
pub(super) fn refused(mut headers: Vec<(&'static str, String)>) -> Vec<(&'static str, String)> {
    headers.retain(|(name, _)| *name != "Content-Type" && *name != "Cache-Control");
    headers.push(("Content-Type", TEXT.to_owned()));
    headers.push(("Cache-Control", NO_CACHE.to_owned()));
    headers
}

/// A 404 refusal of an upgrade.
pub(super) fn not_found() -> Refusal {
    Refusal {
        status: 404,
        headers: Vec::new(),
        body: Vec::new(),
    }
}
