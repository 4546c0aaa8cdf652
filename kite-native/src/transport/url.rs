//! URLs of the client transports: the kite's base URL, the SockJS websocket URL, the xhr session
//! URL, the `Origin` header and the random SockJS ids.

use reqwest::Url;

use super::DialError;

/// Parses a kite's base URL (`http`, `https`, `ws` or `wss`, with a host), such as
/// `http://127.0.0.1:6000/kite`.
pub fn parse_base_url(url: &str) -> Result<Url, DialError> {
    let parsed = Url::parse(url).map_err(|e| DialError::InvalidUrl(format!("{url}: {e}")))?;
    if !matches!(parsed.scheme(), "http" | "https" | "ws" | "wss") {
        return Err(DialError::InvalidUrl(format!(
            "{url}: unsupported scheme {:?} (want http, https, ws or wss)",
            parsed.scheme()
        )));
    }
    if parsed.host_str().is_none_or(str::is_empty) {
        return Err(DialError::InvalidUrl(format!("{url}: no host")));
    }
    Ok(parsed)
}

/// Whether the URL asks for TLS (`https` or `wss`).
pub(crate) fn is_secure(url: &Url) -> bool {
    matches!(url.scheme(), "https" | "wss")
}

/// `host` or `host:port` as the URL spells it (IPv6 hosts in brackets; a port equal to the
/// scheme's default is not kept by the URL parser).
fn authority(url: &Url) -> String {
    let host = url.host().map(|h| h.to_string()).unwrap_or_default();
    match url.port() {
        Some(port) => format!("{host}:{port}"),
        None => host,
    }
}

/// `path` without trailing slashes, followed by `/segment` for each of `segments`.
fn join_path(path: &str, segments: &[&str]) -> String {
    let mut out = path.trim_end_matches('/').to_owned();
    for s in segments {
        out.push('/');
        out.push_str(s);
    }
    out
}

/// The SockJS websocket URL for a kite's base URL, built as Go's client builds it:
/// `https`/`wss` become `wss`, anything else `ws`; the scheme's default port is written out;
/// `/<server>/<session>/websocket` is appended to the path; the query string is kept.
///
/// ```
/// use kite_native::transport::sockjs_websocket_url;
///
/// assert_eq!(
///     sockjs_websocket_url("https://koding.com/kloud/kite", "server", "session").unwrap(),
///     "wss://koding.com:443/kloud/kite/server/session/websocket"
/// );
/// ```
pub fn sockjs_websocket_url(base: &str, server: &str, session: &str) -> Result<String, DialError> {
    let url = parse_base_url(base)?;
    Ok(websocket_url(&url, server, session))
}

pub(crate) fn websocket_url(url: &Url, server: &str, session: &str) -> String {
    let secure = is_secure(url);
    let host = url.host().map(|h| h.to_string()).unwrap_or_default();
    let port = url
        .port_or_known_default()
        .unwrap_or(if secure { 443 } else { 80 });
    let path = join_path(url.path(), &[server, session, "websocket"]);
    let query = url.query().map(|q| format!("?{q}")).unwrap_or_default();
    let scheme = if secure { "wss" } else { "ws" };
    format!("{scheme}://{host}:{port}{path}{query}")
}

/// The `Origin` header Go's client sends: the original URL's scheme and host (with its port
/// when the URL names one).
pub(crate) fn origin_of(url: &Url) -> String {
    format!("{}://{}", url.scheme(), authority(url))
}

/// The xhr session URL `<base>/<server>/<session>` (`ws`/`wss` become `http`/`https`; the query
/// string is kept, where Go's string concatenation would break it).
pub(crate) fn xhr_session_url(url: &Url, server: &str, session: &str) -> Url {
    let mut out = url.clone();
    let scheme = if is_secure(url) { "https" } else { "http" };
    // Switching between the special schemes http/https/ws/wss always succeeds.
    let _ = out.set_scheme(scheme);
    out.set_fragment(None);
    out.set_path(&join_path(url.path(), &[server, session]));
    out
}

/// `session` with `/<endpoint>` appended to its path (`xhr`, `xhr_send`), query kept.
pub(crate) fn endpoint(session: &Url, endpoint: &str) -> Url {
    let mut out = session.clone();
    out.set_path(&join_path(session.path(), &[endpoint]));
    out
}

/// The URL of a raw websocket: the given URL as parsed, with `http`/`https` spelled `ws`/`wss`.
///
/// Built from the parsed URL rather than by slicing the text: the parser drops leading control
/// characters and tabs or newlines anywhere, so a slice of the text could name another scheme
/// or host than the URL that was checked.
pub(crate) fn raw_websocket_url(url: &str) -> Result<String, DialError> {
    let mut parsed = parse_base_url(url.trim())?;
    let scheme = if is_secure(&parsed) { "wss" } else { "ws" };
    // Switching between the special schemes http/https/ws/wss always succeeds.
    let _ = parsed.set_scheme(scheme);
    Ok(parsed.into())
}

/// Random SockJS server id (3 digits, 100–999) and session id (20 hex chars), as Go's client
/// makes them.
pub(crate) fn sockjs_ids() -> (String, String) {
    let server = rand::random_range(100..1000u32).to_string();
    let session = hex::encode(rand::random::<[u8; 10]>());
    (server, session)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Found by the client_urls fuzz target: `"\0http://h/"` parsed as `http://h/` but came out
    /// as `ws\0http://h/`.
    #[test]
    fn raw_websocket_urls_are_the_parsed_url() {
        for (input, want) in [
            ("\0\0http://user:pw@h/k", "ws://user:pw@h/k"),
            ("\u{1}https://h/ws", "wss://h/ws"),
            ("ht\ttp://h\n/a", "ws://h/a"),
            ("HTTP://H:1/kite/websocket", "ws://h:1/kite/websocket"),
            (" wss://h/x?a=1 ", "wss://h/x?a=1"),
        ] {
            assert_eq!(raw_websocket_url(input).unwrap(), want, "{input:?}");
        }
        assert!(raw_websocket_url("\0ftp://h/").is_err());
    }
}
