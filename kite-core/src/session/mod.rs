//! The client side of a connection as a sans-IO state machine: [`ClientSession`].
//!
//! A [`crate::Connection`] (or [`crate::tree::TreeConnection`]) knows what one message means;
//! a `ClientSession` knows what happens over time: calls made before the connection is open
//! wait in order and go out when it opens; each call may have a deadline; a session the server
//! has gone silent on is closed; a dropped connection fails the calls it carried and is dialed
//! again by a [`ReconnectPolicy`] until it gives up; a token is renewed before it expires, and a
//! call refused with `token is expired` is sent once more with the new token.
//!
//! It holds no clock, no socket, no timer and no randomness (a seed the driver gives). The
//! driver (kite-native's tokio client, kite-wasm's browser one) tells it what happened, each
//! time with the current [`Time`] on its own monotonic clock, and then does what it says:
//!
//! - inputs: [`ClientSession::connect`], [`ClientSession::opened`] (or
//!   [`ClientSession::attached`] for a transport the driver dialed on its own),
//!   [`ClientSession::dial_failed`], [`ClientSession::closed`], [`ClientSession::heard`],
//!   [`ClientSession::call`], [`ClientSession::answered`], [`ClientSession::set_credentials`],
//!   [`ClientSession::token_failed`], [`ClientSession::close`] and
//!   [`ClientSession::handle_timeout`];
//! - outputs: [`ClientSession::poll_output`] until `None` (dial, send this call, close the
//!   transport, settle that call with an error, tell the user), and
//!   [`ClientSession::poll_timeout`], the one time at which the driver must call
//!   `handle_timeout`.
//!
//! The driver keeps what is its own: the arguments of each call (in its representation), the
//! [`crate::Connection`] of the current transport, and the futures or promises of its users.
//! A call is settled by the driver only when the session says so: an [`Output::Fail`], or an
//! answer that [`ClientSession::answered`] returns as [`Answer::Deliver`].
//!
//! ```
//! use std::time::Duration;
//! use kite_core::session::{ClientSession, Output, SessionConfig, Time};
//!
//! let mut s = ClientSession::new(SessionConfig::default());
//! let t0 = Time::from_millis(0);
//! let call = s.call(t0, "square", Some(Duration::from_secs(5))); // before connecting: it waits
//! s.connect(t0);
//! assert_eq!(s.poll_output(), Some(Output::Dial));
//! s.opened(t0, true);
//! assert!(matches!(s.poll_output(), Some(Output::Event(_)))); // Event::Opened
//! assert_eq!(s.poll_output(), Some(Output::Send(call)));
//! // No answer in 5 s: the call fails with a timeout, and its response callback goes.
//! assert_eq!(s.poll_timeout(), Some(Time::from_millis(5_000)));
//! s.handle_timeout(Time::from_millis(5_000));
//! assert!(matches!(s.poll_output(), Some(Output::Fail { call: c, sent: true, .. }) if c == call));
//! ```

mod policy;
mod time;

pub use policy::ReconnectPolicy;
pub use time::Time;

use std::collections::VecDeque;
use std::time::Duration;

use crate::{ErrorKind, KiteError};

/// A call made through a [`ClientSession`], unique in it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct CallId(pub u64);

/// What a session is configured with. The defaults are the same on every driver.
#[derive(Debug, Clone, PartialEq)]
pub struct SessionConfig {
    /// When to dial again after a connection drops or a dial fails; `None` never does.
    /// Default: [`ReconnectPolicy::go`].
    pub reconnect: Option<ReconnectPolicy>,
    /// A session the server sends nothing on (not even a SockJS heartbeat, every 25 s) for
    /// this long is closed as dead. Default 45 s (Kite.js's `heartbeatTimeout`).
    pub silence_timeout: Option<Duration>,
    /// How long before a token's expiry it is renewed. Default 30 s (Go's token renewer,
    /// Kite.js's `renewBefore`).
    pub renew_before: Duration,
    /// How long a call refused with `token is expired` waits for a new token before it fails
    /// with that error. Default 15 s (Kite.js's `tokenWait`).
    pub token_wait: Duration,
    /// How long after a failed renewal it is tried again. Default 10 s (Go's renewer).
    pub renew_retry: Duration,
    /// Seeds the jitter of reconnection delays (the driver picks it at random).
    pub seed: u64,
}

impl Default for SessionConfig {
    fn default() -> SessionConfig {
        SessionConfig {
            reconnect: Some(ReconnectPolicy::go()),
            silence_timeout: Some(Duration::from_secs(45)),
            renew_before: Duration::from_secs(30),
            token_wait: Duration::from_secs(15),
            renew_retry: Duration::from_secs(10),
            seed: 0x9e37_79b9_7f4a_7c15,
        }
    }
}

/// The credentials calls are made with, as far as the session's timing goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Credentials {
    /// None, or a kind that does not expire (`kiteKey`, `sessionID`, ...).
    Lasting,
    /// A token; `expires_in` is the time left until its `exp` (`None`: it has none).
    Token {
        /// The time left until the token's `exp` claim, as the driver computed it.
        expires_in: Option<Duration>,
    },
}

/// Where the connection is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    /// Not connected and not trying: never connected, or closed by the user. Calls wait for
    /// [`ClientSession::connect`] (Kite.js's queue; a session that cannot dial fails them).
    Idle,
    /// A dial is under way.
    Connecting,
    /// The transport is open.
    Open,
    /// Waiting to dial again (attempt `attempt`).
    Waiting {
        /// When the next attempt starts.
        until: Time,
        /// The attempt that starts then (1-based).
        attempt: u32,
    },
    /// The reconnection attempts are used up.
    GaveUp,
    /// The connection dropped and nothing dials it again (reconnection off, or a connection
    /// someone else opened): calls fail at once with `disconnect` until
    /// [`ClientSession::connect`].
    Closed,
}

/// Something the driver must do, or tell its user.
#[derive(Debug, Clone, PartialEq)]
pub enum Output {
    /// Open a transport now; then call [`ClientSession::opened`] or
    /// [`ClientSession::dial_failed`].
    Dial,
    /// Encode and send this call with the current credentials.
    Send(CallId),
    /// Close the transport (the session has already counted it as closed).
    Close {
        /// The close code (the session's reason: 1006 for a silent server, 1000 for the user).
        code: u16,
        /// The close reason.
        reason: String,
    },
    /// Settle this call with `error`. With `sent`, also forget its response callback on the
    /// connection (a late answer to it is expected, not the peer's fault).
    Fail {
        /// The call.
        call: CallId,
        /// Its error.
        error: KiteError,
        /// Whether it went out on the current connection.
        sent: bool,
    },
    /// Tell the user.
    Event(Event),
}

/// What the user of a session hears about.
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    /// The transport opened (Kite.js's `open`).
    Opened,
    /// An open transport closed (Kite.js's `close`).
    Closed {
        /// The close code.
        code: u16,
        /// The close reason.
        reason: String,
    },
    /// The session dials again after `delay` (attempt `attempt`, 1-based).
    Reconnecting {
        /// The attempt.
        attempt: u32,
        /// How long it waits first.
        delay: Duration,
    },
    /// No more attempts (Kite.js's `backOffFailed`).
    GaveUp {
        /// How many attempts failed.
        attempts: u32,
    },
    /// The token is about to expire or a peer said it has: get a new one and give it to
    /// [`ClientSession::set_credentials`] (or report [`ClientSession::token_failed`]).
    /// Kite.js's `tokenExpired`.
    TokenExpired,
}

/// What to do with an answer to a call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Answer {
    /// Settle the call with the answer.
    Deliver,
    /// Keep it: it waits for a new token and will be sent again ([`Output::Send`]).
    Retry,
    /// No such call (any more): drop the answer.
    Unknown,
}

#[derive(Debug, Clone, PartialEq)]
enum Phase {
    Queued,
    Sent,
    /// Refused with `token is expired`; the error is its answer if no token comes.
    AwaitingToken(KiteError),
}

#[derive(Debug, Clone)]
struct CallState {
    method: String,
    deadline: Option<Time>,
    timeout: Option<Duration>,
    phase: Phase,
    /// May still be sent again once after `token is expired`.
    retriable: bool,
    /// The [`ClientSession::set_credentials`] generation it was last sent with.
    sent_with: u64,
}

/// The calls not settled yet, in the order they were made (ids only grow, so pushing keeps the
/// order and lookups are binary searches; a map type of its own would cost the wasm build
/// kilobytes). A deque, because answers come mostly oldest first. `timed` counts the calls
/// with a deadline, so that a session with none finds its next timeout without a scan.
#[derive(Debug, Default)]
struct Calls {
    list: VecDeque<(CallId, CallState)>,
    timed: usize,
}

impl Calls {
    fn push(&mut self, id: CallId, call: CallState) {
        debug_assert!(self.list.back().is_none_or(|(last, _)| *last < id));
        self.timed += usize::from(call.deadline.is_some());
        self.list.push_back((id, call));
    }

    fn index(&self, id: &CallId) -> Option<usize> {
        self.list.binary_search_by_key(id, |(k, _)| *k).ok()
    }

    fn get(&self, id: &CallId) -> Option<&CallState> {
        self.index(id).map(|i| &self.list[i].1)
    }

    fn get_mut(&mut self, id: &CallId) -> Option<&mut CallState> {
        self.index(id).map(|i| &mut self.list[i].1)
    }

    fn contains_key(&self, id: &CallId) -> bool {
        self.index(id).is_some()
    }

    fn remove(&mut self, id: &CallId) -> Option<CallState> {
        let (_, call) = self.list.remove(self.index(id)?)?;
        self.timed -= usize::from(call.deadline.is_some());
        Some(call)
    }

    fn len(&self) -> usize {
        self.list.len()
    }

    fn iter(&self) -> impl Iterator<Item = (&CallId, &CallState)> {
        self.list.iter().map(|(k, v)| (k, v))
    }

    /// The earliest deadline of a call.
    fn next_deadline(&self) -> Option<Time> {
        if self.timed == 0 {
            return None;
        }
        self.list.iter().filter_map(|(_, c)| c.deadline).min()
    }

    fn keys(&self) -> impl Iterator<Item = &CallId> {
        self.list.iter().map(|(k, _)| k)
    }
}

/// The client side of one connection over time (see the [module docs](self)).
#[derive(Debug)]
pub struct ClientSession {
    config: SessionConfig,
    state: State,
    calls: Calls,
    queue: VecDeque<CallId>,
    next_call: u64,
    outputs: VecDeque<Output>,
    /// Failed attempts since the last open.
    attempts: u32,
    watch_silence: bool,
    last_heard: Time,
    token: bool,
    renew_at: Option<Time>,
    renewing: bool,
    renewable: bool,
    token_wait_until: Option<Time>,
    /// Whether the session may dial ([`Output::Dial`]); not over a connection someone else
    /// opened ([`ClientSession::accepted`]).
    dialable: bool,
    /// Bumped by every [`ClientSession::set_credentials`].
    credentials: u64,
    rng: u64,
}

/// Whole milliseconds of `d`, saturating: how a driver turns its clock's readings into
/// [`Time`]s.
pub fn millis(d: Duration) -> u64 {
    // Not `as_millis`, a u128: 128-bit arithmetic costs the wasm build.
    d.as_secs()
        .saturating_mul(1_000)
        .saturating_add(u64::from(d.subsec_millis()))
}

/// The error of calls cut off by the end of their connection, or never sent because the
/// session was closed.
fn disconnect() -> KiteError {
    KiteError::disconnect()
}

/// Whether `e` is a peer's refusal of an expired token.
pub fn is_token_expired(e: &KiteError) -> bool {
    // A window scan, not `str::contains`: its searcher costs the wasm build kilobytes.
    const EXPIRED: &[u8] = b"token is expired";
    e.kind == ErrorKind::Authentication
        && e.message
            .as_bytes()
            .windows(EXPIRED.len())
            .any(|w| w == EXPIRED)
}

impl ClientSession {
    /// A session that is [`State::Idle`]: calls wait until [`ClientSession::connect`].
    pub fn new(config: SessionConfig) -> ClientSession {
        let rng = config.seed | 1;
        ClientSession {
            config,
            state: State::Idle,
            calls: Calls::default(),
            queue: VecDeque::new(),
            next_call: 0,
            outputs: VecDeque::new(),
            attempts: 0,
            watch_silence: false,
            last_heard: Time::ZERO,
            token: false,
            renew_at: None,
            renewing: false,
            renewable: false,
            token_wait_until: None,
            dialable: true,
            credentials: 0,
            rng,
        }
    }

    /// A session over a connection that is already open and that it can never dial again: a
    /// server's side of an accepted connection. It has no reconnection; once the connection
    /// ends, calls fail at once with `disconnect`.
    pub fn accepted(config: SessionConfig, now: Time, watch_silence: bool) -> ClientSession {
        let mut s = ClientSession::new(SessionConfig {
            reconnect: None,
            ..config
        });
        s.dialable = false;
        s.state = State::Open;
        s.watch_silence = watch_silence;
        s.last_heard = now;
        s
    }

    /// The configuration.
    pub fn config(&self) -> &SessionConfig {
        &self.config
    }

    /// Changes when the session reconnects (for the next drop; a wait under way is kept).
    pub fn set_reconnect(&mut self, policy: Option<ReconnectPolicy>) {
        self.config.reconnect = policy;
    }

    /// Where the connection is.
    pub fn state(&self) -> State {
        self.state
    }

    /// Calls not settled yet (waiting, sent, or waiting for a token).
    pub fn calls_in_flight(&self) -> usize {
        self.calls.len()
    }

    /// The next thing to do, in order.
    pub fn poll_output(&mut self) -> Option<Output> {
        self.outputs.pop_front()
    }

    /// When [`ClientSession::handle_timeout`] must be called next, if ever.
    pub fn poll_timeout(&self) -> Option<Time> {
        let calls = self.calls.next_deadline();
        let waiting = match self.state {
            State::Waiting { until, .. } => Some(until),
            _ => None,
        };
        let silence = self.silence_deadline();
        [
            calls,
            waiting,
            silence,
            self.renew_at,
            self.token_wait_until,
        ]
        .into_iter()
        .flatten()
        .min()
    }

    fn silence_deadline(&self) -> Option<Time> {
        match (self.state, self.watch_silence, self.config.silence_timeout) {
            (State::Open, true, Some(limit)) => Some(self.last_heard + limit),
            _ => None,
        }
    }

    /// Starts connecting, unless the session is open or a dial is under way. Resets the count
    /// of failed attempts; a wait between attempts is cut short.
    pub fn connect(&mut self, _now: Time) {
        if !self.dialable || matches!(self.state, State::Open | State::Connecting) {
            return;
        }
        self.attempts = 0;
        self.dial();
    }

    fn dial(&mut self) {
        self.state = State::Connecting;
        self.outputs.push_back(Output::Dial);
    }

    /// The transport opened. `watch_silence`: close it when the server is silent for
    /// [`SessionConfig::silence_timeout`] (SockJS transports, whose servers send heartbeats;
    /// not a raw websocket, whose servers send none). `false` when the session was not dialing
    /// any more (it was closed, or [`ClientSession::attached`] another transport meanwhile):
    /// the driver closes this transport.
    pub fn opened(&mut self, now: Time, watch_silence: bool) -> bool {
        if self.state != State::Connecting {
            return false;
        }
        self.open(now, watch_silence);
        true
    }

    /// A transport the driver opened on its own (not for an [`Output::Dial`]: a user's
    /// one-off dial) is the session's connection now, unless one is open already (`false`:
    /// the driver closes the new one). A dial under way is overtaken: its
    /// [`ClientSession::opened`] will say `false`.
    pub fn attached(&mut self, now: Time, watch_silence: bool) -> bool {
        if !self.dialable || self.state == State::Open {
            return false;
        }
        self.open(now, watch_silence);
        true
    }

    fn open(&mut self, now: Time, watch_silence: bool) {
        self.state = State::Open;
        self.attempts = 0;
        self.watch_silence = watch_silence;
        self.last_heard = now;
        self.outputs.push_back(Output::Event(Event::Opened));
        self.flush();
    }

    /// Something arrived on the open transport (a message or a heartbeat).
    pub fn heard(&mut self, now: Time) {
        if self.state == State::Open {
            self.last_heard = self.last_heard.max(now);
        }
    }

    /// A dial failed (the transport never opened).
    pub fn dial_failed(&mut self, now: Time) {
        if self.state != State::Connecting {
            return;
        }
        self.ended(now);
    }

    /// The open transport (or the one being dialed) closed.
    pub fn closed(&mut self, now: Time, code: u16, reason: &str) {
        match self.state {
            State::Open => {
                self.outputs.push_back(Output::Event(Event::Closed {
                    code,
                    reason: reason.to_owned(),
                }));
                self.ended(now);
            }
            State::Connecting => self.ended(now),
            _ => {}
        }
    }

    /// The connection is gone: its sent calls fail, and the session waits to dial again, or
    /// fails the rest too.
    fn ended(&mut self, now: Time) {
        self.state = State::Idle;
        let sent: Vec<CallId> = self
            .calls
            .iter()
            .filter(|(_, c)| c.phase == Phase::Sent)
            .map(|(id, _)| *id)
            .collect();
        for id in sent {
            self.fail(id, disconnect(), false);
        }
        let Some(policy) = self.config.reconnect.clone() else {
            self.state = State::Closed;
            self.fail_all(disconnect());
            return;
        };
        let attempt = self.attempts + 1;
        match policy.delay(attempt, self.random()) {
            Some(delay) => {
                self.attempts = attempt;
                self.state = State::Waiting {
                    until: now + delay,
                    attempt,
                };
                self.outputs
                    .push_back(Output::Event(Event::Reconnecting { attempt, delay }));
            }
            None => {
                self.state = State::GaveUp;
                self.outputs.push_back(Output::Event(Event::GaveUp {
                    attempts: self.attempts,
                }));
                let e = KiteError::new(
                    ErrorKind::Disconnect,
                    format!("could not reconnect after {} attempts", self.attempts),
                );
                self.fail_all(e);
            }
        }
    }

    /// Closes the session for good (until [`ClientSession::connect`]) with `code` and
    /// `reason`: the transport closes, every call fails with `disconnect`, no reconnection, no
    /// renewal.
    pub fn close(&mut self, _now: Time, code: u16, reason: &str) {
        if matches!(self.state, State::Open | State::Connecting) {
            self.outputs.push_back(Output::Close {
                code,
                reason: reason.to_owned(),
            });
        }
        if self.state == State::Open {
            self.outputs.push_back(Output::Event(Event::Closed {
                code,
                reason: reason.to_owned(),
            }));
        }
        self.state = State::Idle;
        self.fail_all(disconnect());
    }

    /// A new call; it is sent at once ([`Output::Send`]) when the session is open, waits in
    /// order while it connects, waits to reconnect, or has not been told to connect
    /// ([`State::Idle`]: before the first `connect`, and after the user's `close`, as Kite.js
    /// keeps calls until `connect()`), and fails at once when nothing will connect it
    /// ([`State::GaveUp`], [`State::Closed`], or an [accepted](ClientSession::accepted)
    /// session that ended). `timeout` counts from now, waiting included.
    pub fn call(&mut self, now: Time, method: &str, timeout: Option<Duration>) -> CallId {
        let id = CallId(self.next_call);
        self.next_call += 1;
        let refusal = match self.state {
            State::GaveUp => Some(KiteError::new(
                ErrorKind::Disconnect,
                format!("could not reconnect after {} attempts", self.attempts),
            )),
            State::Closed => Some(disconnect()),
            State::Idle if !self.dialable => Some(disconnect()),
            _ => None,
        };
        if let Some(error) = refusal {
            self.outputs.push_back(Output::Fail {
                call: id,
                error,
                sent: false,
            });
            return id;
        }
        self.calls.push(
            id,
            CallState {
                method: method.to_owned(),
                deadline: timeout.map(|t| now + t),
                timeout,
                phase: Phase::Queued,
                retriable: self.token,
                sent_with: 0,
            },
        );
        self.queue.push_back(id);
        self.flush();
        id
    }

    /// Whether `call` may be sent again after `token is expired` (the driver keeps its
    /// arguments until it is sent for the last time).
    pub fn may_resend(&self, call: CallId) -> bool {
        self.calls.get(&call).is_some_and(|c| c.retriable)
    }

    /// The driver could not send `call` (it was refused before it left: too many functions,
    /// say): it fails alone.
    pub fn refused(&mut self, call: CallId, error: KiteError) {
        if self.calls.contains_key(&call) {
            self.fail(call, error, false);
        }
    }

    /// An answer to `call` arrived; `error` is the error it carries, if any.
    pub fn answered(&mut self, now: Time, call: CallId, error: Option<&KiteError>) -> Answer {
        let Some(state) = self.calls.get_mut(&call) else {
            return Answer::Unknown;
        };
        if state.phase != Phase::Sent {
            return Answer::Unknown;
        }
        if let Some(e) = error
            && is_token_expired(e)
            && state.retriable
            && self.renewable
        {
            state.retriable = false;
            if state.sent_with != self.credentials {
                // It left with credentials replaced since (renewed ahead of its answer): send
                // it again with the new ones, without asking for another token.
                state.phase = Phase::Queued;
                self.queue.push_front(call);
                self.flush();
                return Answer::Retry;
            }
            state.phase = Phase::AwaitingToken(e.clone());
            if self.token_wait_until.is_none() {
                self.token_wait_until = Some(now + self.config.token_wait);
            }
            self.ask_for_token();
            return Answer::Retry;
        }
        self.calls.remove(&call);
        Answer::Deliver
    }

    /// Whether the driver can renew tokens (a renewer, or a listener of
    /// [`Event::TokenExpired`]): only then does a call refused with `token is expired` wait
    /// for a new token.
    pub fn set_renewable(&mut self, renewable: bool) {
        self.renewable = renewable;
    }

    /// New credentials are in use: a token is renewed [`SessionConfig::renew_before`] its
    /// expiry, and the calls that waited for it are sent again, first.
    pub fn set_credentials(&mut self, now: Time, credentials: Credentials) {
        self.credentials += 1;
        self.renewing = false;
        self.token_wait_until = None;
        match credentials {
            Credentials::Lasting => {
                self.token = false;
                self.renew_at = None;
            }
            Credentials::Token { expires_in } => {
                self.token = true;
                self.renew_at =
                    expires_in.map(|left| now + left.saturating_sub(self.config.renew_before));
            }
        }
        let waiting: Vec<CallId> = self
            .calls
            .iter()
            .filter(|(_, c)| matches!(c.phase, Phase::AwaitingToken(_)))
            .map(|(id, _)| *id)
            .collect();
        for id in waiting.into_iter().rev() {
            if let Some(c) = self.calls.get_mut(&id) {
                c.phase = Phase::Queued;
            }
            self.queue.push_front(id);
        }
        self.flush();
    }

    /// Getting a new token failed: the calls waiting for one fail with the error they were
    /// refused with; with `retry`, renewal is tried again after [`SessionConfig::renew_retry`].
    pub fn token_failed(&mut self, now: Time, retry: bool) {
        self.renewing = false;
        self.token_wait_until = None;
        self.fail_awaiting();
        self.renew_at = (retry && self.token).then(|| now + self.config.renew_retry);
    }

    /// Asks for a token, once while a renewal is under way; with nothing to renew it
    /// ([`ClientSession::set_renewable`] false), the event is told again next time, for a
    /// listener that may have come meanwhile.
    fn ask_for_token(&mut self) {
        if !self.renewing {
            self.renewing = self.renewable;
            self.outputs.push_back(Output::Event(Event::TokenExpired));
        }
    }

    fn fail_awaiting(&mut self) {
        let waiting: Vec<(CallId, KiteError)> = self
            .calls
            .iter()
            .filter_map(|(id, c)| match &c.phase {
                Phase::AwaitingToken(e) => Some((*id, e.clone())),
                _ => None,
            })
            .collect();
        for (id, e) in waiting {
            self.fail(id, e, false);
        }
    }

    /// Does what is due at `now`: call deadlines, the silence watchdog, the next reconnection
    /// attempt, token renewal and the wait for a token.
    pub fn handle_timeout(&mut self, now: Time) {
        let due: Vec<(CallId, KiteError, bool)> = self
            .calls
            .iter()
            .filter(|(_, c)| c.deadline.is_some_and(|d| d <= now))
            .map(|(id, c)| {
                let after = millis(c.timeout.unwrap_or_default());
                let e = KiteError::new(
                    ErrorKind::Timeout,
                    format!("No response to \"{}\" arrived in {after} ms", c.method),
                );
                (*id, e, c.phase == Phase::Sent)
            })
            .collect();
        for (id, e, sent) in due {
            self.fail(id, e, sent);
        }
        if self.silence_deadline().is_some_and(|d| d <= now) {
            let limit = self.config.silence_timeout.unwrap_or_default();
            let reason = format!("no heartbeat from the server for {} ms", millis(limit));
            self.outputs.push_back(Output::Close {
                code: 1006,
                reason: reason.clone(),
            });
            self.closed(now, 1006, &reason);
        }
        if let State::Waiting { until, .. } = self.state
            && until <= now
        {
            self.dial();
        }
        if self.renew_at.is_some_and(|t| t <= now) {
            self.renew_at = None;
            self.ask_for_token();
        }
        if self.token_wait_until.is_some_and(|t| t <= now) {
            self.token_wait_until = None;
            self.renewing = false;
            self.fail_awaiting();
        }
    }

    /// Sends the waiting calls, in order, if open.
    fn flush(&mut self) {
        if self.state != State::Open {
            return;
        }
        while let Some(id) = self.queue.pop_front() {
            if let Some(c) = self.calls.get_mut(&id)
                && c.phase == Phase::Queued
            {
                c.phase = Phase::Sent;
                c.sent_with = self.credentials;
                self.outputs.push_back(Output::Send(id));
            }
        }
    }

    fn fail(&mut self, id: CallId, error: KiteError, sent: bool) {
        if self.calls.remove(&id).is_some() {
            self.queue.retain(|q| *q != id);
            self.outputs.push_back(Output::Fail {
                call: id,
                error,
                sent,
            });
        }
    }

    /// Fails every call; nothing is left to renew a token for.
    fn fail_all(&mut self, error: KiteError) {
        let ids: Vec<CallId> = self.calls.keys().copied().collect();
        for id in ids {
            self.fail(id, error.clone(), false);
        }
        self.queue.clear();
        self.renew_at = None;
        self.token_wait_until = None;
        self.renewing = false;
    }

    /// xorshift64*: a number in `[0, 1)` for the reconnection jitter.
    fn random(&mut self) -> f64 {
        let mut x = self.rng;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.rng = x;
        (x.wrapping_mul(0x2545_f491_4f6c_dd1d) >> 11) as f64 / (1u64 << 53) as f64
    }
}

#[cfg(test)]
mod tests;
