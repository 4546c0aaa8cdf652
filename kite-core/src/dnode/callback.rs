//! [`Callback`]: a function that travels inside arguments, in either direction.
//!
//! A callback is never written into JSON text by serde: a [`Value`](super::Value) holds it
//! beside the JSON, by path, and the connection that sends the value puts `"[Function]"` at
//! that path and the function in its callback table. Received callbacks arrive the same way:
//! the message's `callbacks` object names their paths. So no string, whatever it holds, is ever
//! taken for a function, and a function that is never sent is freed with its last handle.

use std::fmt;
use std::sync::Arc;

use super::value::{IntoArgs, Value};
use crate::error::KiteError;

/// Where calls to a received (remote) function go: the connection it arrived on.
///
/// A driver (native or wasm) implements this for its connection handle. `invoke` must not block:
/// it encodes and queues `{"method": id, "arguments": ..., "callbacks": ...}`.
pub trait CallbackSink: Send + Sync {
    /// Sends an invocation of the peer's callback `id` with `args` as the argument list.
    fn invoke(&self, id: u64, args: Value) -> Result<(), KiteError>;
}

type LocalFn = dyn Fn(Value) + Send + Sync;

enum Inner {
    Local(Box<LocalFn>),
    Remote {
        id: u64,
        sink: Arc<dyn CallbackSink>,
    },
}

/// A function that can be sent to a peer or has been received from one.
///
/// * [`Callback::new`] wraps a Rust closure. Put it in the arguments of a call or in a result
///   (with [`crate::value!`] or [`Value::function`]) and the peer can invoke it, any number of
///   times, until the connection ends.
/// * A callback received from a peer ([`Value::callback`], [`Value::nth`]) calls the peer's
///   function. Sending it on to another peer forwards calls through this kite.
///
/// Cloning is cheap; clones are the same function (one callback id per connection).
///
/// ```
/// use kite_core::{value, Callback};
/// let progress = Callback::new(|args| println!("progress: {}", args));
/// let args = value!([{"onProgress": progress, "steps": 3}]);
/// assert_eq!(args.functions().len(), 1);
/// ```
#[derive(Clone)]
pub struct Callback(Arc<Inner>);

impl fmt::Debug for Callback {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &*self.0 {
            Inner::Local(_) => f.write_str("Callback(local)"),
            Inner::Remote { id, .. } => write!(f, "Callback(remote {id})"),
        }
    }
}

impl Callback {
    /// Wraps a closure that the peer may invoke with any arguments (always a list).
    pub fn new(f: impl Fn(Value) + Send + Sync + 'static) -> Self {
        Callback(Arc::new(Inner::Local(Box::new(f))))
    }

    /// A function of the peer reached through `sink`, with the peer's callback id.
    pub fn remote(id: u64, sink: Arc<dyn CallbackSink>) -> Self {
        Callback(Arc::new(Inner::Remote { id, sink }))
    }

    /// The peer's id for a received function; `None` for a local one.
    pub fn remote_id(&self) -> Option<u64> {
        match &*self.0 {
            Inner::Local(_) => None,
            Inner::Remote { id, .. } => Some(*id),
        }
    }

    /// Calls the function with `args` as the argument list: a tuple (`(1, "x")`, functions
    /// included), `()` for none, or a list [`Value`] (see [`IntoArgs`]). For a remote function
    /// this queues a message and returns at once; it fails if the connection has ended.
    pub fn call(&self, args: impl IntoArgs) -> Result<(), KiteError> {
        self.call_with(args.into_args()?)
    }

    /// Calls the function with an argument list already made.
    pub fn call_with(&self, args: Value) -> Result<(), KiteError> {
        match &*self.0 {
            Inner::Local(f) => {
                f(args);
                Ok(())
            }
            Inner::Remote { id, sink } => sink.invoke(*id, args),
        }
    }

    /// Whether two handles are the same function.
    pub fn ptr_eq(&self, other: &Callback) -> bool {
        Arc::ptr_eq(&self.0, &other.0)
    }

    /// An identity for giving one function one id per connection: the address of the shared
    /// function, stable while any handle (the connection's table holds one) lives.
    pub(crate) fn key(&self) -> usize {
        Arc::as_ptr(&self.0) as *const () as usize
    }
}
