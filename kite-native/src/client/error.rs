//! [`ClientError`]: why a call or a dial of a [`crate::Client`] failed.

use std::sync::Arc;
use std::time::Duration;

use kite_core::{ErrorKind, KiteError};

use crate::transport::DialError;

/// Why a [`crate::Client`] call or dial failed.
///
/// The variants say where the failure comes from: the dial, the clock, the connection, the
/// peer, or this side. [`ClientError::kind`] and [`ClientError::kite_error`] give the wire
/// error ([`KiteError`]) each one stands for, the one a handler forwards to its own caller
/// (`From<ClientError> for KiteError` lets it use `?`). The text of each (`Display`) is the
/// message of that wire error.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum ClientError {
    /// The dial of `url` failed (`sendError` on the wire).
    #[error("dial {url}: {source}")]
    Dial {
        /// The URL dialed.
        url: String,
        /// Why the transport could not open a session.
        #[source]
        source: Arc<DialError>,
    },
    /// No answer to `method` came within `after`, waiting for the connection included
    /// (`timeout` on the wire).
    #[error("No response to \"{method}\" arrived in {} ms", whole_millis(.after))]
    Timeout {
        /// The method called.
        method: String,
        /// The time limit of the call.
        after: Duration,
    },
    /// The connection ended before the answer, was closed, or reconnection gave up
    /// (`disconnect` on the wire).
    #[error("{}", .0.message)]
    Disconnected(KiteError),
    /// The peer answered with an error of its own (its type, message, code and id as sent).
    #[error("{}", .0.message)]
    Remote(KiteError),
    /// The peer refused our credentials: it answered with an `authenticationError` (such as
    /// `token is expired`, when no new token came in time to send the call again).
    #[error("{}", .0.message)]
    Authentication(KiteError),
    /// The answer could not be used: an invalid response (`invalidResponse`), or a result
    /// that does not decode into the type [`crate::Client::call`] asked for (the decoder's
    /// `argumentError`).
    #[error("{}", .0.message)]
    Protocol(KiteError),
    /// This side refused to send the call: the connection could not take it (`sendError`),
    /// it already keeps as many functions for its peer as
    /// [`crate::Limits::max_callbacks`] allows (`requestLimitError`), or the arguments could
    /// not be encoded.
    #[error("{}", .0.message)]
    Local(KiteError),
}

/// Whole milliseconds of `d`, as the session counts them in its timeout message.
fn whole_millis(d: &Duration) -> u64 {
    kite_core::session::millis(*d)
}

impl ClientError {
    /// The wire type of this error: `sendError` for [`ClientError::Dial`], `timeout` for
    /// [`ClientError::Timeout`], else the type of the wire error it carries (`disconnect`,
    /// the peer's, `authenticationError`, `invalidResponse` or `argumentError`, `sendError` or
    /// `requestLimitError`).
    pub fn kind(&self) -> ErrorKind {
        match self {
            ClientError::Dial { .. } => ErrorKind::Send,
            ClientError::Timeout { .. } => ErrorKind::Timeout,
            ClientError::Disconnected(e)
            | ClientError::Remote(e)
            | ClientError::Authentication(e)
            | ClientError::Protocol(e)
            | ClientError::Local(e) => e.kind.clone(),
        }
    }

    /// The wire error this stands for, to forward to a peer: the type of
    /// [`ClientError::kind`] and the message of `Display` (with the peer's code and id, for
    /// the errors it sent).
    pub fn kite_error(&self) -> KiteError {
        match self {
            ClientError::Dial { .. } | ClientError::Timeout { .. } => {
                KiteError::new(self.kind(), self.to_string())
            }
            ClientError::Disconnected(e)
            | ClientError::Remote(e)
            | ClientError::Authentication(e)
            | ClientError::Protocol(e)
            | ClientError::Local(e) => e.clone(),
        }
    }

    /// The error of a call to `method` (with the time limit `timeout`) that failed with
    /// `error`: one the peer answered with when `answered`, else one the client session or
    /// the connection settled it with.
    pub(crate) fn of_call(
        error: KiteError,
        method: &str,
        timeout: Option<Duration>,
        answered: bool,
    ) -> ClientError {
        match (&error.kind, timeout) {
            (ErrorKind::Authentication, _) => ClientError::Authentication(error),
            // The connection's verdict on a malformed answer (or a peer's own).
            (ErrorKind::InvalidResponse, _) => ClientError::Protocol(error),
            _ if answered => ClientError::Remote(error),
            (ErrorKind::Timeout, Some(after)) => ClientError::Timeout {
                method: method.to_owned(),
                after,
            },
            (ErrorKind::Disconnect, _) => ClientError::Disconnected(error),
            _ => ClientError::Local(error),
        }
    }
}

impl From<ClientError> for KiteError {
    /// [`ClientError::kite_error`].
    fn from(e: ClientError) -> KiteError {
        match e {
            ClientError::Disconnected(e)
            | ClientError::Remote(e)
            | ClientError::Authentication(e)
            | ClientError::Protocol(e)
            | ClientError::Local(e) => e,
            other => other.kite_error(),
        }
    }
}

#[cfg(test)]
mod tests {
    use kite_core::session::{ClientSession, Output, SessionConfig, State, Time};

    use super::*;

    /// Settles a call of `method` the way the session does, and maps its error.
    fn session_failure(
        timeout: Option<Duration>,
        drive: impl FnOnce(&mut ClientSession),
    ) -> ClientError {
        let mut s = ClientSession::new(SessionConfig::default());
        s.connect(Time::ZERO);
        let _ = s.poll_output();
        assert!(s.opened(Time::ZERO, false));
        assert_eq!(s.state(), State::Open);
        let call = s.call(Time::ZERO, "wait", timeout);
        drive(&mut s);
        while let Some(output) = s.poll_output() {
            if let Output::Fail { call: c, error, .. } = output
                && c == call
            {
                return ClientError::of_call(error, "wait", timeout, false);
            }
        }
        panic!("the call did not fail");
    }

    #[test]
    fn session_failures_map_to_their_variants() {
        let timeout = Some(Duration::from_millis(1_500));
        let e = session_failure(timeout, |s| s.handle_timeout(Time::from_millis(1_500)));
        let ClientError::Timeout { method, after } = &e else {
            panic!("not a timeout: {e:?}");
        };
        assert_eq!(
            (method.as_str(), *after),
            ("wait", Duration::from_millis(1_500))
        );
        assert_eq!(e.to_string(), "No response to \"wait\" arrived in 1500 ms");

        let e = session_failure(None, |s| s.closed(Time::ZERO, 1006, "connection lost"));
        assert!(matches!(e, ClientError::Disconnected(_)), "{e:?}");
        assert_eq!(e.kind(), ErrorKind::Disconnect);

        let e = ClientError::of_call(KiteError::request_limit(), "wait", None, false);
        assert!(matches!(e, ClientError::Local(_)), "{e:?}");
    }

    #[test]
    fn answers_map_to_their_variants() {
        let expired = KiteError::new(ErrorKind::Authentication, "token is expired");
        let e = ClientError::of_call(expired, "m", None, true);
        assert!(matches!(e, ClientError::Authentication(_)), "{e:?}");
        assert_eq!(e.to_string(), "token is expired");

        // A peer's `timeout` (a proxy's, say) is the peer's, not our clock's.
        let theirs = KiteError::new(ErrorKind::Timeout, "upstream slow").with_id("0123");
        let e = ClientError::of_call(theirs.clone(), "m", Some(Duration::from_secs(1)), true);
        assert!(matches!(e, ClientError::Remote(_)), "{e:?}");
        assert_eq!(e.kite_error(), theirs);

        let invalid = KiteError::new(ErrorKind::InvalidResponse, "no result");
        let e = ClientError::of_call(invalid, "m", None, true);
        assert!(matches!(e, ClientError::Protocol(_)), "{e:?}");
    }

    #[test]
    fn kite_error_round_trips_the_wire_error() {
        let errors = [
            ClientError::Dial {
                url: "http://127.0.0.1:1/kite".into(),
                source: Arc::new(DialError::Io("connection refused".into())),
            },
            ClientError::Timeout {
                method: "wait".into(),
                after: Duration::from_millis(100),
            },
            ClientError::Disconnected(KiteError::disconnect()),
            ClientError::Remote(KiteError::generic("boom").with_code("7").with_id("ab")),
            ClientError::Authentication(KiteError::new(
                ErrorKind::Authentication,
                "token is expired",
            )),
            ClientError::Protocol(KiteError::argument("invalid type: string, expected f64")),
            ClientError::Local(KiteError::new(
                ErrorKind::Send,
                "can't send, client is closed",
            )),
        ];
        for e in errors {
            let wire = e.kite_error();
            assert_eq!(wire.kind, e.kind(), "{e:?}");
            assert_eq!(wire.message, e.to_string(), "{e:?}");
            assert_eq!(KiteError::from(e.clone()), wire, "{e:?}");
        }
        let dial = ClientError::Dial {
            url: "http://127.0.0.1:1/kite".into(),
            source: Arc::new(DialError::Timeout),
        };
        assert_eq!(dial.kite_error().kind, ErrorKind::Send);
        assert_eq!(dial.to_string(), "dial http://127.0.0.1:1/kite: timed out");
        assert!(std::error::Error::source(&dial).is_some());
    }
}
