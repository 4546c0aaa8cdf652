//! What the peers of SockJS servers hold now, counted against the budgets of [`SockJsOptions`].

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex, Weak};

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

use super::SockJsOptions;
use super::session::HttpSession;
use crate::session::QueueProbe;
use crate::tally::{Held, Tally};

/// What the peers of one or more SockJS servers hold now: sessions of the HTTP transports,
/// websockets, and bytes queued for peers that have not taken them yet. Each server holds its
/// peers to its own [`SockJsOptions`] budgets against these counts; servers made with the same
/// occupancy ([`super::SockJsServer::with_occupancy`]) share them, so that, for example, the
/// many SockJS endpoints of a tunnel proxy make one budget per remote address.
///
/// Cloning is cheap; clones share the counts.
#[derive(Clone, Default)]
pub struct Occupancy {
    sessions: Tally,
    websockets: Tally,
    /// The queues of the sessions alive, looked at only when asked (never on a send).
    queues: Arc<Mutex<Queues>>,
}

impl std::fmt::Debug for Occupancy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Occupancy")
            .field("sessions", &self.sessions())
            .field("websockets", &self.websockets())
            .field("queued_bytes", &self.queued_bytes())
            .finish()
    }
}

#[derive(Default)]
struct Queues {
    next: u64,
    probes: HashMap<u64, Probe>,
}

/// A session's outgoing queue, seen without keeping it alive.
#[derive(Clone)]
pub(crate) enum Probe {
    /// A websocket's.
    Outbox(QueueProbe),
    /// An HTTP session's.
    Http(Weak<HttpSession>),
}

impl Probe {
    fn queued_bytes(&self) -> usize {
        match self {
            Probe::Outbox(p) => p.queued_bytes(),
            Probe::Http(s) => s.upgrade().map_or(0, |s| s.queued_bytes()),
        }
    }
}

/// A queue counted in an [`Occupancy`] until this is dropped.
pub(crate) struct Watched {
    queues: Arc<Mutex<Queues>>,
    key: u64,
}

impl Drop for Watched {
    fn drop(&mut self) {
        lock(&self.queues).probes.remove(&self.key);
    }
}

fn lock(queues: &Mutex<Queues>) -> std::sync::MutexGuard<'_, Queues> {
    queues.lock().unwrap_or_else(|e| e.into_inner())
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

    /// Bytes of messages queued for peers and not yet taken by the transports, summed over
    /// every session now (see [`SockJsOptions::max_queued_bytes`]). It looks at each session's
    /// queue: meant for statistics and tests, not for every request.
    pub fn queued_bytes(&self) -> usize {
        let probes: Vec<Probe> = lock(&self.queues).probes.values().cloned().collect();
        probes.iter().map(Probe::queued_bytes).sum()
    }

    /// Counts a session's queue in [`Occupancy::queued_bytes`] until the guard is dropped.
    pub(crate) fn watch(&self, probe: Probe) -> Watched {
        let mut q = lock(&self.queues);
        q.next += 1;
        let key = q.next;
        q.probes.insert(key, probe);
        Watched {
            queues: self.queues.clone(),
            key,
        }
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
