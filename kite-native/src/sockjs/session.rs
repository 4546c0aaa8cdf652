//! Sessions of the HTTP transports (xhr-polling, xhr-streaming, eventsource, htmlfile, JSONP).
//!
//! A session is created by the first receiving request for an unknown id and lives in the
//! server's table between requests. Messages for the client queue in it until a receiver takes
//! them. At most one receiver is attached at a time; it is detached *before* its answer is handed
//! back, so a client that asks again the instant an answer arrives is always accepted. A
//! receiver dropped before it finished (the client went away mid-request) interrupts the
//! session. A receiver that finds another attached waits up to [`HANDOVER`] for it to detach
//! before it is refused with `c[2010,...]`: a client that drops a request and asks again at once
//! is usually faster than the server at noticing the dropped connection. The interruption
//! ends the session with `c[1002,"Connection interrupted"]`, since the client cannot know what it
//! missed. A session without a receiver for the disconnect delay is forgotten; a closed one keeps
//! answering its close frame until then.
//!
//! Budgets: a new session past the session budgets is refused (503) before anything is set up;
//! its place is given back when it is forgotten. The queue holds at most `max_queued_bytes`:
//! past it the session is closed with `c[1008,...]` ([`QUEUE_OVERFLOW`]), the queue is dropped
//! and the runtime's sends fail from then on. Incoming messages wait for the runtime within a
//! byte budget ([`session::channel_within`]), and one send request at a time delivers them.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};

use kite_core::sockjs;
use tokio::sync::Notify;
use tokio::time::Instant;

use super::State;
use super::budget::Refused;
use crate::session::{
    self, IncomingSender, Outbox, Outgoing, QUEUE_OVERFLOW, Reported, SessionInfo, SessionSender,
    TransportKind,
};
use crate::tally::Held;

struct Inner {
    queue: VecDeque<String>,
    /// Bytes of the messages in `queue`.
    queued: usize,
    /// What the queue counts for in the server's backlog.
    backlog: Reported,
    closed: Option<(u16, String)>,
    receiver: bool,
    detached_at: Instant,
    /// Incoming messages to the runtime; `None` once the session has ended for it.
    in_tx: Option<IncomingSender>,
}

/// One session of the HTTP transports.
pub(crate) struct HttpSession {
    inner: Mutex<Inner>,
    /// Wakes the attached receiver when there is something to take.
    wake: Notify,
    /// Wakes receivers waiting for the attached one to detach.
    detached: Notify,
    /// The runtime's sender, to close the session on oversized input.
    pub(crate) tx: SessionSender,
    /// Held by the send request reading and delivering a body: one at a time per session.
    pub(crate) sending: tokio::sync::Mutex<()>,
}

/// What a receiver takes from a session.
pub(crate) enum Take {
    /// Messages, to send as one `a[...]` frame.
    Messages(Vec<String>),
    /// The session is closed: send this close frame.
    Closed(u16, String),
    /// Nothing yet.
    Nothing,
}

impl Take {
    /// The SockJS frame of what was taken, if anything.
    pub(crate) fn frame(self) -> Option<String> {
        match self {
            Take::Messages(m) => Some(sockjs::encode_messages(m.iter().map(String::as_str))),
            Take::Closed(c, r) => Some(sockjs::encode_close(c, &r)),
            Take::Nothing => None,
        }
    }
}

impl HttpSession {
    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Takes what is queued, up to the batch budget (a larger message goes alone; the rest
    /// waits for the next answer), or the close frame once the queue is empty.
    pub(crate) fn take(&self) -> Take {
        let mut s = self.lock();
        if !s.queue.is_empty() {
            let mut size = 0;
            let mut n = 0;
            for m in &s.queue {
                if n > 0 && size + m.len() > session::BATCH_BUDGET {
                    break;
                }
                size += m.len();
                n += 1;
            }
            s.queued -= size;
            let queued = s.queued;
            s.backlog.update(queued);
            return Take::Messages(s.queue.drain(..n).collect());
        }
        match &s.closed {
            Some((c, r)) => Take::Closed(*c, r.clone()),
            None => Take::Nothing,
        }
    }

    /// Waits until something may be there to take.
    pub(crate) async fn changed(&self) {
        self.wake.notified().await;
    }

    /// The sender of incoming messages, while the session is open.
    pub(crate) fn incoming(&self) -> Option<IncomingSender> {
        self.lock().in_tx.clone()
    }

    /// Ends the session for the runtime and answers every later receiver with `code, reason`;
    /// what was still queued for the client is dropped.
    fn interrupt(&self, (code, reason): (u16, &str)) {
        let mut s = self.lock();
        if s.closed.is_none() {
            s.drop_queue();
            s.closed = Some((code, reason.to_owned()));
        }
        s.in_tx = None;
    }
}

impl Inner {
    /// Drops what is queued for the client, returning its memory.
    fn drop_queue(&mut self) {
        self.queue = VecDeque::new();
        self.queued = 0;
        self.backlog.update(0);
    }

    /// Queues `m` for the client; `false` when that takes the queue past `budget`, which
    /// closes the session with [`QUEUE_OVERFLOW`] and drops the queue instead.
    fn queue(&mut self, m: String, budget: usize) -> bool {
        if self.queued > 0 && self.queued.saturating_add(m.len()) > budget {
            tracing::debug!(
                bytes = self.queued,
                "session closed: output over its budget"
            );
            self.drop_queue();
            let (code, reason) = QUEUE_OVERFLOW;
            self.closed = Some((code, reason.to_owned()));
            self.in_tx = None;
            return false;
        }
        self.queued += m.len();
        self.backlog.update(self.queued);
        self.queue.push_back(m);
        true
    }
}

/// An attached receiver. Call [`Attached::finish`] once its answer is complete; dropping it
/// unfinished means the client went away mid-request, which interrupts the session.
pub(crate) struct Attached {
    session: Arc<HttpSession>,
    finished: bool,
}

impl Attached {
    /// The session this receiver is attached to.
    pub(crate) fn session(&self) -> &Arc<HttpSession> {
        &self.session
    }

    /// Detaches normally: the answer is complete (or about to be handed back whole).
    pub(crate) fn finish(mut self) {
        self.finished = true;
    }
}

impl Drop for Attached {
    fn drop(&mut self) {
        if !self.finished {
            tracing::debug!("receiving request cut off, interrupting the session");
            self.session.interrupt(sockjs::CONNECTION_INTERRUPTED);
        }
        let mut s = self.session.lock();
        s.receiver = false;
        s.detached_at = Instant::now();
        drop(s);
        self.session.detached.notify_waiters();
    }
}

/// How long a receiver waits for the attached one to detach before it is refused.
pub(crate) const HANDOVER: std::time::Duration = std::time::Duration::from_millis(250);

/// Attaches a receiver, unless another one stays attached for [`HANDOVER`].
pub(crate) async fn attach(session: &Arc<HttpSession>) -> Option<Attached> {
    let deadline = Instant::now() + HANDOVER;
    loop {
        // Registered before looking, so that a detach right after the look still wakes us.
        let detached = session.detached.notified();
        tokio::pin!(detached);
        detached.as_mut().enable();
        {
            let mut s = session.lock();
            if !s.receiver {
                s.receiver = true;
                return Some(Attached {
                    session: session.clone(),
                    finished: false,
                });
            }
        }
        if tokio::time::timeout_at(deadline, detached).await.is_err() {
            return None;
        }
    }
}

/// The session `id`, if it is alive.
pub(crate) fn lookup(state: &State, id: &str) -> Option<Arc<HttpSession>> {
    state
        .sessions
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .get(id)
        .cloned()
}

/// The session `id`, created (and handed to the runtime) if unknown; `true` when created. A new
/// session past the session budgets is refused.
pub(crate) fn get_or_create(
    state: &State,
    id: &str,
    transport: TransportKind,
    remote: Option<SocketAddr>,
) -> Result<(Arc<HttpSession>, bool), Refused> {
    let mut table = state.sessions.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(s) = table.get(id) {
        return Ok((s.clone(), false));
    }
    let held = state
        .occupancy
        .admit_session(remote.map(|r| r.ip()), &state.options)?;
    let info = SessionInfo {
        transport,
        remote_addr: remote,
        id: id.to_owned(),
    };
    let (session, in_tx, out_rx) = session::channel_within(info, state.options.max_message_size);
    let http = Arc::new(HttpSession {
        inner: Mutex::new(Inner {
            queue: VecDeque::new(),
            queued: 0,
            backlog: Reported::new(Some(state.occupancy.backlog())),
            closed: None,
            receiver: false,
            detached_at: Instant::now(),
            in_tx: Some(in_tx),
        }),
        wake: Notify::new(),
        detached: Notify::new(),
        tx: session.tx.clone(),
        sending: tokio::sync::Mutex::new(()),
    });
    table.insert(id.to_owned(), http.clone());
    drop(table);
    tokio::spawn(pump(
        state.clone(),
        id.to_owned(),
        http.clone(),
        out_rx,
        held,
    ));
    (state.on_session)(session);
    Ok((http, true))
}

/// The next item of `out`, or never once it is gone.
async fn next_out(out: &mut Option<Outbox>) -> Option<Outgoing> {
    match out {
        Some(out) => out.recv().await,
        None => std::future::pending().await,
    }
}

/// Moves outgoing messages into the session's queue, and forgets the session once it has had
/// no receiver for `disconnect_delay` (giving back its place in the session budget, `_held`).
async fn pump(state: State, id: String, session: Arc<HttpSession>, out_rx: Outbox, _held: Held) {
    let delay = state.options.disconnect_delay;
    let budget = state.options.max_queued_bytes;
    let mut out_rx = Some(out_rx);
    let mut open = true;
    loop {
        let deadline = {
            let s = session.lock();
            (!s.receiver).then_some(s.detached_at + delay)
        };
        let expiry = async {
            match deadline {
                Some(d) => tokio::time::sleep_until(d).await,
                // A receiver is attached: look again after a delay (it detaches long before).
                None => tokio::time::sleep(delay).await,
            }
        };
        tokio::select! {
            out = next_out(&mut out_rx), if open => {
                let mut s = session.lock();
                let queued = match out {
                    // Interrupted sessions drop what the runtime still sends.
                    Some(_) if s.closed.is_some() && s.in_tx.is_none() => true,
                    Some(Outgoing::Message(m)) => s.queue(m, budget),
                    Some(Outgoing::Quoted(q)) => {
                        let m = session::Text::Quoted(q).into_plain();
                        s.queue(m, budget)
                    }
                    Some(Outgoing::Close(c, r)) => {
                        s.closed.get_or_insert((c, r));
                        s.in_tx = None;
                        open = false;
                        true
                    }
                    None => {
                        let (c, r) = sockjs::GO_AWAY;
                        s.closed.get_or_insert((c, r.to_owned()));
                        s.in_tx = None;
                        open = false;
                        true
                    }
                };
                drop(s);
                if !queued {
                    // Over budget: the runtime's sends fail from now on.
                    open = false;
                    out_rx = None;
                }
                session.wake.notify_one();
            }
            () = expiry => {
                let s = session.lock();
                if !s.receiver && Instant::now() >= s.detached_at + delay {
                    break;
                }
            }
        }
    }
    // Expired: forget the session; dropping `in_tx` tells the runtime it ended.
    {
        let mut s = session.lock();
        s.in_tx = None;
        s.drop_queue();
    }
    drop(out_rx);
    let mut table = state.sessions.lock().unwrap_or_else(|e| e.into_inner());
    if table.get(&id).is_some_and(|s| Arc::ptr_eq(s, &session)) {
        table.remove(&id);
    }
}
