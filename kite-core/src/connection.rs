//! [`Connection`]: the protocol state of one kite connection, without I/O.
//!
//! A driver (tokio in kite-native, the browser in kite-wasm) owns the socket and a
//! `Connection`. It passes every incoming dnode message to [`Connection::receive`] and sends the
//! text that [`Connection::request`] and [`Connection::invoke`] return. The connection assigns
//! callback ids, matches responses to calls and frees answered response callbacks.
//!
//! ```
//! use std::sync::Arc;
//! use kite_core::connection::{Connection, Incoming};
//! use kite_core::dnode::{scrub_args, CallbackSink, Scrubbed};
//! use kite_core::{Kite, KiteError};
//!
//! struct Nowhere;
//! impl CallbackSink for Nowhere {
//!     fn invoke(&self, _id: u64, _args: Scrubbed) -> Result<(), KiteError> { Ok(()) }
//! }
//! let sink: Arc<dyn CallbackSink> = Arc::new(Nowhere);
//!
//! // The client sends a request...
//! let mut client: Connection<&str> = Connection::new();
//! let me = Kite::new("second", "1.0.0");
//! let (_, text) = client.request("square", &me, None, scrub_args(&(4,)).unwrap(), "call #1");
//!
//! // ...the server decodes it and answers through the response callback...
//! let mut server: Connection<()> = Connection::new();
//! let Incoming::Request(req) = server.receive(&text, &sink).unwrap() else { panic!() };
//! let n: f64 = req.args.one().unwrap();
//! let reply = kite_core::envelope::response_args(Ok(Scrubbed::plain((n * n).into())));
//! let answer = server.invoke(req.response.unwrap().remote_id().unwrap(), reply);
//! assert_eq!(answer, r#"{"method":0,"arguments":[{"error":null,"result":16}],"callbacks":{}}"#);
//!
//! // ...and the client matches the answer to its call.
//! let Incoming::Response { pending, result } = client.receive(&answer, &sink).unwrap() else { panic!() };
//! assert_eq!(pending, "call #1");
//! assert_eq!(result.unwrap().decode::<f64>().unwrap(), 16.0);
//! ```

use std::sync::Arc;

use serde::Serialize;
use serde_json::Value;

use crate::dnode::{
    Args, Callback, CallbackSink, CallbackTable, Entry, Message, Method, Path, Scrubbed, Segment,
    encode_raw,
};
use crate::envelope::{Auth, Request, parse_response};
use crate::error::{KiteError, ProtocolError};
use crate::identity::Kite;
use crate::json;

/// What an incoming message means.
#[derive(Debug)]
pub enum Incoming<P> {
    /// The peer calls one of our methods.
    Request(Box<Request>),
    /// The answer to one of our calls (its response callback was invoked). The slot is freed.
    Response {
        /// The driver's handle given to [`Connection::request`].
        pending: P,
        /// The result, or the error the peer sent (or `invalidResponse`).
        result: Result<Args, KiteError>,
    },
    /// The peer invokes a function we sent.
    Callback {
        /// The function.
        callback: Callback,
        /// Its arguments.
        args: Args,
    },
    /// A request we cannot run; if the peer gave a response callback, answer with `error`.
    InvalidRequest {
        /// Where to send the error, if anywhere.
        response: Option<Callback>,
        /// The error to send.
        error: KiteError,
    },
    /// The peer invoked an id we do not know, or a response callback already answered (or
    /// given up on). Nothing to do but log it.
    UnknownCallback(u64),
}

/// Protocol state of one connection. `P` is the driver's handle for a call waiting for its
/// response (a oneshot sender, say).
#[derive(Debug)]
pub struct Connection<P> {
    table: CallbackTable<P>,
}

impl<P> Default for Connection<P> {
    fn default() -> Self {
        Connection {
            table: CallbackTable::new(),
        }
    }
}

#[derive(Serialize)]
struct Envelope<'a> {
    kite: &'a Kite,
    authentication: Option<&'a Auth>,
    #[serde(rename = "responseCallback")]
    response_callback: &'static str,
    #[serde(rename = "withArgs")]
    with_args: &'a Value,
}

impl<P> Connection<P> {
    /// A fresh connection.
    pub fn new() -> Self {
        Self::default()
    }

    /// Encodes a call of `method` and registers its response slot holding `pending`.
    /// Returns the response callback id (for [`Connection::cancel`]) and the message text, in
    /// Go's exact layout: `{"method":..,"arguments":[{"kite":..,"authentication":..,
    /// "responseCallback":"[Function]","withArgs":[..]}],"callbacks":{"0":[0,"responseCallback"]}}`.
    /// `args` should be a list ([`crate::dnode::scrub_args`] makes one).
    pub fn request(
        &mut self,
        method: &str,
        kite: &Kite,
        auth: Option<&Auth>,
        args: Scrubbed,
        pending: P,
    ) -> (u64, String) {
        let id = self.table.insert_pending(pending);
        let mut callbacks: Vec<(u64, Path)> = Vec::with_capacity(1 + args.callbacks.len());
        callbacks.push((
            id,
            vec![Segment::Index(0), Segment::Key("responseCallback".into())],
        ));
        for (mut path, cb) in args.callbacks {
            path.splice(0..0, [Segment::Index(0), Segment::Key("withArgs".into())]);
            callbacks.push((self.table.register(&cb), path));
        }
        let envelope = Envelope {
            kite,
            authentication: auth,
            response_callback: "[Function]",
            with_args: &args.value,
        };
        let mut arguments = Vec::with_capacity(256);
        arguments.push(b'[');
        // Serializing plain data cannot fail.
        let _ = json::write_into(&mut arguments, &envelope);
        arguments.push(b']');
        (
            id,
            encode_raw(&Method::Name(method.to_owned()), &arguments, &callbacks),
        )
    }

    /// Encodes an invocation of the peer's callback `id` (a response, or any function the peer
    /// sent) with `args` as the argument list.
    pub fn invoke(&mut self, id: u64, args: Scrubbed) -> String {
        let callbacks: Vec<(u64, Path)> = args
            .callbacks
            .into_iter()
            .map(|(path, cb)| (self.table.register(&cb), path))
            .collect();
        let arguments = json::to_string(&crate::dnode::normalize_args(args.value))
            .unwrap_or_else(|_| "[]".to_owned());
        encode_raw(&Method::Callback(id), arguments.as_bytes(), &callbacks)
    }

    /// Decodes one incoming message. Functions inside it become remote [`Callback`]s that send
    /// through `sink`. Errors mean the message is unusable and there is no one to answer.
    pub fn receive(
        &mut self,
        text: &str,
        sink: &Arc<dyn CallbackSink>,
    ) -> Result<Incoming<P>, ProtocolError> {
        let Message {
            method,
            mut arguments,
            callbacks,
        } = Message::decode(text)?;
        match method {
            Method::Callback(id) => {
                let args = Args::from_message(&mut arguments, &callbacks, &[], sink).into_list();
                Ok(match self.table.take(id) {
                    Some(Entry::Pending(pending)) => Incoming::Response {
                        pending,
                        result: parse_response(args),
                    },
                    Some(Entry::Callback(callback)) => Incoming::Callback { callback, args },
                    None => Incoming::UnknownCallback(id),
                })
            }
            Method::Name(method) => Ok(decode_request(method, arguments, &callbacks, sink)),
        }
    }

    /// Frees the response slot of a call whose caller gave up (timeout), returning its handle.
    /// A late answer then arrives as [`Incoming::UnknownCallback`].
    pub fn cancel(&mut self, id: u64) -> Option<P> {
        self.table.cancel(id)
    }

    /// The connection is gone: returns every call still waiting, so the driver can fail them
    /// with `disconnect`, and drops all registered functions.
    pub fn drain_pending(&mut self) -> Vec<P> {
        self.table.drain_pending()
    }

    /// Calls waiting for a response.
    pub fn pending_len(&self) -> usize {
        self.table.pending_len()
    }

    /// Entries in the callback table (functions sent plus calls in flight).
    pub fn callbacks_len(&self) -> usize {
        self.table.len()
    }
}

fn decode_request<P>(
    method: String,
    mut arguments: Value,
    callbacks: &[(u64, Path)],
    sink: &Arc<dyn CallbackSink>,
) -> Incoming<P> {
    let response_path = [Segment::Index(0), Segment::Key("responseCallback".into())];
    let response = callbacks
        .iter()
        .find(|(_, p)| {
            p.len() == 2 && crate::dnode::path::strip_prefix(p, &response_path).is_some()
        })
        .map(|(id, _)| Callback::remote(*id, sink.clone()));

    let len = match &arguments {
        Value::Array(items) => Some(items.len()),
        _ => None,
    };
    if len != Some(1) || !arguments[0].is_object() {
        let what = match len {
            Some(1) => "an argument that is not an object".to_owned(),
            Some(n) => format!("{n} arguments"),
            None => "arguments that are not a list".to_owned(),
        };
        return Incoming::InvalidRequest {
            response,
            error: KiteError::argument(format!(
                "invalid request to {method:?}: a kite request has exactly one argument object, got {what}"
            )),
        };
    }

    let options = &mut arguments[0];
    let kite = options
        .get_mut("kite")
        .map(Value::take)
        .and_then(|v| serde_json::from_value(v).ok())
        .unwrap_or_default();
    let auth = match options.get_mut("authentication").map(Value::take) {
        None | Some(Value::Null) => None,
        Some(v) => match serde_json::from_value::<Auth>(v) {
            Ok(a) => Some(a),
            Err(e) => {
                return Incoming::InvalidRequest {
                    response,
                    error: KiteError::new(
                        crate::error::ErrorKind::Authentication,
                        format!("malformed authentication: {e}"),
                    ),
                };
            }
        },
    };
    let args = Args::from_message(
        &mut arguments,
        callbacks,
        &[Segment::Index(0), Segment::Key("withArgs".into())],
        sink,
    )
    .into_list();
    Incoming::Request(Box::new(Request {
        method,
        kite,
        auth,
        args,
        response,
    }))
}
