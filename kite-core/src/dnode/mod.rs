//! The dnode protocol as Kite uses it: messages, callback paths, functions inside arguments.
//!
//! A dnode message is `{"method": name-or-callback-id, "arguments": [...], "callbacks": {id:
//! path}}`. Functions inside `arguments` are sent as `"[Function]"` with their path recorded
//! under a fresh id; the peer calls one by sending a message whose `method` is that id.
//! Programs hold such arguments as [`Value`]s: JSON with the functions beside it, by path.

mod callback;
mod decode;
pub mod depth;
mod message;
pub mod path;
mod scan;
mod table;
mod value;

pub use callback::{Callback, CallbackSink};
pub use decode::{FromArg, FromArgs, FromValue};
pub(crate) use message::{
    Members, RawMessage, encode_with, last_wins, only_response_callback, write_callbacks,
};
pub use message::{Message, Method};
pub use path::{Path, Segment};
pub(crate) use scan::existing;
pub use table::{CallbackTable, DEFAULT_MAX_FUNCTIONS, Entry};
#[doc(hidden)]
pub use value::__from;
pub use value::{IntoArgs, IntoValue, Value};
pub(crate) use value::{Json, write_json};

/// Arguments (and results) as received or sent: a [`Value`], read with [`Value::nth`],
/// [`Value::one`], [`Value::args`], [`Value::decode`] and [`Value::callback`].
pub type Args = Value;
