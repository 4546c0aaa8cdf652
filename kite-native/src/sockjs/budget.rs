//! What the peers of SockJS servers hold now, counted against the budgets of [`SockJsOptions`].

use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

use super::SockJsOptions;
use crate::tally::{Held, Tally};

/// What the peers of one or more SockJS servers hold now: sessions of the HTTP transports,
/// websockets, and bytes queued for peers that have not taken them yet. Each server holds its
/// peers to its own [`SockJsOptions`] budgets against these counts; servers made with the same
/// occupancy ([`super::SockJsServer::with_occupancy`]) share them, so that, for example, the
/// many SockJS endpoints of a tunnel proxy make one budget per remote address.
///
/// Cloning is cheap; clones share the counts.
#[derive(Debug, Clone, Default)]
pub struct Occupancy {
    sessions: Tally,
    websockets: Tally,
    queued: Arc<AtomicUsize>,
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

    /// Bytes of messages queued for peers and not yet taken by the transports (summed over
    /// every session; see [`SockJsOptions::max_queued_bytes`]).
    pub fn queued_bytes(&self) -> usize {
        self.queued.load(Ordering::Relaxed)
    }

    pub(crate) fn queued_counter(&self) -> Arc<AtomicUsize> {
        self.queued.clone()
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

    /// Adds to the queued bytes (HTTP sessions keep their own queue).
    pub(crate) fn queued_add(&self, n: usize) {
        if n > 0 {
            self.queued.fetch_add(n, Ordering::Relaxed);
        }
    }

    /// Takes from the queued bytes.
    pub(crate) fn queued_sub(&self, n: usize) {
        if n > 0 {
            self.queued.fetch_sub(n, Ordering::Relaxed);
        }
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
