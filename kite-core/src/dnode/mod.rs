//! The dnode protocol as Kite uses it: messages, callback paths, functions inside arguments.
//!
//! A dnode message is `{"method": name-or-callback-id, "arguments": [...], "callbacks": {id:
//! path}}`. Functions inside `arguments` are sent as `"[Function]"` with their path recorded
//! under a fresh id; the peer calls one by sending a message whose `method` is that id.

mod args;
mod callback;
mod message;
pub mod path;
mod table;

pub use args::Args;
pub use callback::{
    Callback, CallbackSink, Scrubbed, normalize_args, parked_len, scrub, scrub_args,
};
pub use message::{Message, Method};
pub(crate) use message::{RawMessage, encode_with, only_response_callback, write_callbacks};
pub use path::{Path, Segment};
pub use table::{CallbackTable, Entry};
