//! Entry points for the fuzz targets in `fuzz/` (cargo feature `fuzzing`, off by default):
//! thin wrappers over crate-private pure functions that parse or build what peers send. Not
//! part of the API; nothing else may depend on it.

use reqwest::Url;

use crate::transport::DialError;

/// [`crate::transport`]'s raw websocket URL for `url` (`http`/`https` spelled `ws`/`wss`).
pub fn raw_websocket_url(url: &str) -> Result<String, DialError> {
    crate::transport::url::raw_websocket_url(url)
}

/// The xhr session URL `<base>/<server>/<session>` the client transports post to.
pub fn xhr_session_url(base: &Url, server: &str, session: &str) -> Url {
    crate::transport::url::xhr_session_url(base, server, session)
}

/// `session` with `/<endpoint>` appended to its path.
pub fn endpoint(session: &Url, endpoint: &str) -> Url {
    crate::transport::url::endpoint(session, endpoint)
}

/// The `Origin` header the client sends for `url`.
pub fn origin_of(url: &Url) -> String {
    crate::transport::url::origin_of(url)
}
