//! What the peers of SockJS servers hold now, counted against the budgets of [`SockJsOptions`].

use std::net::IpAddr;

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

use super::SockJsOptions;
use crate::session::Backlog;
use crate::tally::{Held, Tally};

/// What the peers of one or more SockJS servers hold now: sessions of the HTTP transports,
/// websockets, and bytes queued for peers that have fallen behind. Each server holds its
/// peers to its own [`SockJsOptions`] budgets against these counts; servers made with the same
/// occupancy ([`super::SockJsServer::with_occupancy`]) share them, so that, for example, the
/// many SockJS endpoints of a tunnel proxy make one budget per remote address.
///
/// Cloning is cheap; clones share the counts.
#[derive(Debug, Clone, Default)]
pub struct Occupancy {
    sessions: Tally,
    websockets: Tally,
    backlog: Backlog,
}

impl Occupancy {
    /// Counts of nothing held yet.
    pub fn new() -> Self {
        Occupancy::default()
    }

    /// Sessions of the HTTP transports alive now (a closed one counts until it expires).
    pub fn sessions(&self) -> usize {
        self.sessions.total()
    }

    /// Sessions of the HTTP transports from `ip` alive now.
    pub fn sessions_from(&self, ip: IpAddr) -> usize {
        self.sessions.from(ip)
    }

    /// Websockets (SockJS and raw) open now.
    pub fn websockets(&self) -> usize {
        self.websockets.total()
    }

    /// Websockets from `ip` open now.
    pub fn websockets_from(&self, ip: IpAddr) -> usize {
        self.websockets.from(ip)
    }

    /// Bytes queued for the sessions that have fallen behind their peers: those holding
    /// [`crate::session::BACKLOG_THRESHOLD`] (64 KiB) or more, each counted whole (see
    /// [`Backlog`]). A peer that does not read shows here until its session is closed past
    /// [`SockJsOptions::max_queued_bytes`]; the count then drops back.
    pub fn backlog_bytes(&self) -> usize {
        self.backlog.bytes()
    }

    /// The backlog the sessions' queues count in.
    pub(crate) fn backlog(&self) -> Backlog {
        self.backlog.clone()
    }

    /// A place for a new HTTP session from `ip`, within `options`' budgets.
    pub(crate) fn admit_session(&self, ip: Option<IpAddr>, options: &SockJsOptions) -> Admitted {
        self.sessions
            .take(ip, options.max_sessions, options.max_sessions_per_ip)
            .ok_or(Refused::Sessions)
    }

    /// A place for a new websocket from `ip`, within `options`' budgets.
    pub(crate) fn admit_websocket(&self, ip: Option<IpAddr>, options: &SockJsOptions) -> Admitted {
        self.websockets
            .take(ip, options.max_websockets, options.max_websockets_per_ip)
            .ok_or(Refused::Websockets)
    }
}

/// A place within a budget, or why there is none.
pub(crate) type Admitted = Result<Held, Refused>;

/// A new session or websocket past its budget: answered `503 Service Unavailable`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Refused {
    Sessions,
    Websockets,
}

impl IntoResponse for Refused {
    fn into_response(self) -> Response {
        let what = match self {
            Refused::Sessions => "Too many sessions.",
            Refused::Websockets => "Too many websockets.",
        };
        let mut resp = (
            StatusCode::SERVICE_UNAVAILABLE,
            [(header::CONTENT_TYPE, "text/plain; charset=UTF-8")],
            what,
        )
            .into_response();
        resp.headers_mut().insert(
            header::CACHE_CONTROL,
            HeaderValue::from_static(super::http::NO_CACHE),
        );
        resp
    }
}
