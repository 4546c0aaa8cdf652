//! The transport-agnostic core of Kite: identity, the dnode codec with callbacks, the request and
//! response envelopes, the error object and SockJS framing.
//!
//! This crate does no I/O and depends on no async runtime, so it builds for native targets and
//! for `wasm32-unknown-unknown` alike. A driver (kite-native's tokio runtime, kite-wasm's browser
//! bindings) owns sockets, clocks and randomness, and feeds this crate bytes (or, through
//! [`tree`], documents its own JSON parser made). The protocol state
//! of one connection is a [`connection::Connection`]; see its docs for a full round trip. What
//! happens to a client's connection over time (calls waiting, deadlines, reconnection, token
//! renewal) is a [`session::ClientSession`], driven the same way.

pub mod auth;
pub mod connection;
pub mod dnode;
pub mod envelope;
pub mod error;
#[cfg(any(test, feature = "fuzzing"))]
#[doc(hidden)]
pub mod fuzzing;
pub mod identity;
pub mod json;
pub mod kontrol;
pub mod session;
pub mod sockjs;
pub mod tree;
pub mod webrtc;

pub use connection::{Connection, Incoming};
pub use dnode::{Args, Callback, IntoArgs, IntoValue, Value};
pub use envelope::{Auth, Request, RequestHead};
pub use error::{ErrorKind, KiteError, ProtocolError};
pub use identity::{Kite, KontrolQuery};
