//! [`Connection`]: the protocol state of one kite connection, without I/O.
//!
//! A driver (tokio in kite-native, the browser in kite-wasm) owns the socket and a
//! `Connection`. It passes every incoming dnode message to [`Connection::receive`] and sends the
//! text that [`Connection::request`], [`Connection::invoke`] and [`Connection::respond`]
//! return. The connection assigns callback ids, matches responses to calls, frees answered
//! response callbacks, and enforces the per-connection [`Limits`]: calls of the peer in flight,
//! and functions kept for the peer to call.
//!
//! ```
//! use std::sync::Arc;
//! use kite_core::connection::{Connection, Incoming};
//! use kite_core::dnode::{CallbackSink, Value};
//! use kite_core::{Kite, KiteError};
//!
//! struct Nowhere;
//! impl CallbackSink for Nowhere {
//!     fn invoke(&self, _id: u64, _args: Value) -> Result<(), KiteError> { Ok(()) }
//! }
//! let sink: Arc<dyn CallbackSink> = Arc::new(Nowhere);
//!
//! // The client sends a request...
//! let mut client: Connection<&str> = Connection::new();
//! let me = Kite::new("second", "1.0.0");
//! let args = kite_core::value!([4]);
//! let (_, text) = client.request("square", &me, None, args, "call #1").unwrap();
//!
//! // ...the server decodes it and answers through the response callback...
//! let mut server: Connection<()> = Connection::new();
//! let Incoming::Request(req) = server.receive(&text, &sink).unwrap() else { panic!() };
//! let n: f64 = req.args.one().unwrap();
//! let answer = server.respond(req.response_id().unwrap(), Ok(kite_core::value!(n * n)));
//! assert_eq!(answer, r#"{"method":0,"arguments":[{"error":null,"result":16}],"callbacks":{}}"#);
//!
//! // ...and the client matches the answer to its call.
//! let Incoming::Response { pending, result } = client.receive(&answer, &sink).unwrap() else { panic!() };
//! assert_eq!(pending, "call #1");
//! assert_eq!(result.unwrap().decode::<f64>().unwrap(), 16.0);
//! ```

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use serde::Deserialize;
use serde_json::value::RawValue;

use crate::dnode::{
    Callback, CallbackSink, CallbackTable, Entry, Json, Members, Method, Path, RawMessage, Segment,
    Value, encode_with, last_wins, only_response_callback, write_json,
};
use crate::envelope::{Auth, Request, RequestHead};
use crate::error::{ErrorKind, KiteError, ProtocolError};
use crate::identity::Kite;
use crate::json;

/// Budgets of one connection, enforced by [`Connection`] and
/// [`crate::tree::TreeConnection`] alike.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Requests of the peer being served at once (default 1,024). A request past it is
    /// answered at once with a `requestLimitError` ([`Incoming::InvalidRequest`]); a slot is
    /// free again when the [`InFlight`] of a request being served is dropped.
    pub max_calls_in_flight: usize,
    /// Functions kept for the peer to call (default [`crate::dnode::DEFAULT_MAX_FUNCTIONS`],
    /// 10,000). A call, invocation or answer that would keep more fails with a
    /// `requestLimitError` (an answer is replaced by that error).
    pub max_functions: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_calls_in_flight: 1_024,
            max_functions: crate::dnode::DEFAULT_MAX_FUNCTIONS,
        }
    }
}

/// A request of the peer being served. Its slot among [`Limits::max_calls_in_flight`] is free
/// again when this is dropped: keep it until the answer is sent.
#[derive(Debug)]
pub struct InFlight(Arc<AtomicUsize>);

impl InFlight {
    pub(crate) fn take(counter: &Arc<AtomicUsize>, limit: usize) -> Option<InFlight> {
        let mut now = counter.load(Ordering::Relaxed);
        loop {
            if now >= limit {
                return None;
            }
            match counter.compare_exchange_weak(now, now + 1, Ordering::AcqRel, Ordering::Relaxed) {
                Ok(_) => return Some(InFlight(counter.clone())),
                Err(seen) => now = seen,
            }
        }
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

/// The `requestLimitError` of a request past [`Limits::max_calls_in_flight`].
pub(crate) fn too_many_calls(limit: usize) -> KiteError {
    KiteError::new(
        ErrorKind::RequestLimit,
        format!("too many calls in flight on this connection (limit {limit})"),
    )
}

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
        result: Result<Value, KiteError>,
    },
    /// The peer invokes a function we sent.
    Callback {
        /// The function.
        callback: Callback,
        /// Its arguments, a list.
        args: Value,
    },
    /// A request we cannot run (malformed, or past [`Limits::max_calls_in_flight`]); if the
    /// peer gave a response callback, answer with `error`.
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
    pub(crate) table: CallbackTable<P>,
    limits: Limits,
    /// Requests of the peer being served now.
    in_flight: Arc<AtomicUsize>,
    /// The last caller identity decoded, with its JSON text: a peer sends the same identity
    /// with every request, so it is parsed once per connection.
    caller: Option<(Box<str>, Arc<Kite>)>,
    /// The same for the caller's credentials (a token is hundreds of bytes).
    credentials: Option<(Box<str>, Arc<Auth>)>,
}

impl<P> Default for Connection<P> {
    fn default() -> Self {
        Connection::with_limits(Limits::default())
    }
}

const RESPONSE_CALLBACK: &str = "responseCallback";

fn response_path() -> Path {
    vec![Segment::Index(0), Segment::Key(RESPONSE_CALLBACK.into())]
}

impl<P> Connection<P> {
    /// A fresh connection with the default [`Limits`].
    pub fn new() -> Self {
        Self::default()
    }

    /// A fresh connection with these budgets.
    pub fn with_limits(limits: Limits) -> Self {
        Connection {
            table: CallbackTable::with_limit(limits.max_functions),
            limits,
            in_flight: Arc::default(),
            caller: None,
            credentials: None,
        }
    }

    /// This connection's budgets.
    pub fn limits(&self) -> Limits {
        self.limits
    }

    /// Encodes a call of `method` and registers its response slot holding `pending`.
    /// Returns the response callback id (for [`Connection::cancel`]) and the message text, in
    /// Go's exact layout: `{"method":..,"arguments":[{"kite":..,"authentication":..,
    /// "responseCallback":"[Function]","withArgs":[..]}],"callbacks":{"0":[0,"responseCallback"]}}`.
    /// `args` should be a list ([`Value::into_list`] makes one). Fails (`requestLimitError`)
    /// when its functions would pass [`Limits::max_functions`]; nothing is registered then.
    pub fn request(
        &mut self,
        method: &str,
        kite: &Kite,
        auth: Option<&Auth>,
        args: Value,
        pending: P,
    ) -> Result<(u64, String), KiteError> {
        self.request_with_head(method, &RequestHead::new(kite, auth), args, pending)
    }

    /// [`Connection::request`] with the caller's identity and credentials already encoded.
    pub fn request_with_head(
        &mut self,
        method: &str,
        head: &RequestHead,
        args: Value,
        pending: P,
    ) -> Result<(u64, String), KiteError> {
        let (json, functions) = args.into_parts();
        let (id, callbacks) = self.request_callbacks(functions, pending)?;
        let head = head.as_bytes();
        let text = encode_with(
            &Method::Name(method.to_owned()),
            &callbacks,
            head.len() + 64,
            |out| {
                out.push(b'[');
                out.extend_from_slice(head);
                write_json(out, &json);
                out.extend_from_slice(b"}]");
            },
        );
        Ok((id, text))
    }

    /// [`Connection::request_with_head`] encoded the way a SockJS frame carries it: as one JSON
    /// string literal (quoted and escaped), equal to [`json::write_str`] of the plain text.
    /// Only the parts that change per call are escaped; the head comes escaped already.
    pub fn request_quoted(
        &mut self,
        method: &str,
        head: &RequestHead,
        args: Value,
        pending: P,
    ) -> Result<(u64, String), KiteError> {
        let (json, functions) = args.into_parts();
        let (id, callbacks) = self.request_callbacks(functions, pending)?;
        let mut plain = Vec::with_capacity(64);
        plain.extend_from_slice(b"{\"method\":");
        json::write_str(&mut plain, method);
        plain.extend_from_slice(b",\"arguments\":[");
        let mut out = Vec::with_capacity(head.quoted_bytes().len() + 160);
        out.push(b'"');
        json::write_contents(&mut out, std::str::from_utf8(&plain).unwrap_or_default());
        out.extend_from_slice(head.quoted_bytes());
        plain.clear();
        write_json(&mut plain, &json);
        plain.extend_from_slice(b"}],");
        crate::dnode::write_callbacks(&mut plain, &callbacks);
        plain.push(b'}');
        json::write_contents(&mut out, std::str::from_utf8(&plain).unwrap_or_default());
        out.push(b'"');
        Ok((id, String::from_utf8(out).expect("JSON output is UTF-8")))
    }

    /// Registers the functions of a request's arguments, then its response slot: the
    /// callbacks of the message, response callback first.
    fn request_callbacks(
        &mut self,
        functions: Vec<(Path, Callback)>,
        pending: P,
    ) -> Result<(u64, Vec<(u64, Path)>), KiteError> {
        // Go gives the response callback the first id, then the functions inside `withArgs`.
        self.table.check_room(&functions)?;
        let id = self.table.insert_pending(pending);
        let ids = self.table.register_all(&functions)?;
        let mut callbacks: Vec<(u64, Path)> = Vec::with_capacity(1 + functions.len());
        callbacks.push((id, response_path()));
        for ((mut path, _), fid) in functions.into_iter().zip(ids) {
            path.splice(0..0, [Segment::Index(0), Segment::Key("withArgs".into())]);
            callbacks.push((fid, path));
        }
        Ok((id, callbacks))
    }

    /// Encodes an invocation of the peer's callback `id` (a response, or any function the peer
    /// sent) with `args` as the argument list. Fails (`requestLimitError`) when its functions
    /// would pass [`Limits::max_functions`].
    pub fn invoke(&mut self, id: u64, args: Value) -> Result<String, KiteError> {
        let (json, functions) = args.into_list().into_parts();
        let callbacks = self.register(functions, &[])?;
        Ok(encode_with(&Method::Callback(id), &callbacks, 64, |out| {
            write_json(out, &json)
        }))
    }

    /// Encodes the answer to a request whose response callback is the peer's `id`:
    /// `{"method":id,"arguments":[{"error":..,"result":..}],"callbacks":{..}}`. A result whose
    /// functions would pass [`Limits::max_functions`] is answered with that
    /// `requestLimitError` instead.
    pub fn respond(&mut self, id: u64, result: Result<Value, KiteError>) -> String {
        let prefix = [Segment::Index(0), Segment::Key("result".into())];
        let (error, json, callbacks) = match result {
            Ok(value) => {
                let (json, functions) = value.into_parts();
                match self.register(functions, &prefix) {
                    Ok(callbacks) => (None, json, callbacks),
                    Err(e) => (Some(e), Json::default(), Vec::new()),
                }
            }
            Err(e) => (Some(e), Json::default(), Vec::new()),
        };
        encode_with(&Method::Callback(id), &callbacks, 64, |out| {
            out.extend_from_slice(b"[{\"error\":");
            // Serializing plain data cannot fail.
            let _ = json::write_into(out, &error);
            out.extend_from_slice(b",\"result\":");
            write_json(out, &json);
            out.extend_from_slice(b"}]");
        })
    }

    /// Gives each function an id, its path put under `prefix`.
    fn register(
        &mut self,
        functions: Vec<(Path, Callback)>,
        prefix: &[Segment],
    ) -> Result<Vec<(u64, Path)>, KiteError> {
        let ids = self.table.register_all(&functions)?;
        Ok(functions
            .into_iter()
            .zip(ids)
            .map(|((path, _), id)| {
                let mut full = prefix.to_vec();
                full.extend(path);
                (id, full)
            })
            .collect())
    }

    /// Decodes one incoming message. Functions inside it become remote [`Callback`]s that send
    /// through `sink`. Errors mean the message is unusable and there is no one to answer.
    ///
    /// The arguments stay the peer's JSON text until a handler decodes them, so no value is
    /// parsed here, whatever its depth. The common shapes (a request whose only function is
    /// its response callback, a response without functions) are read in one pass over the
    /// text; anything else goes through the general path, which reads the callbacks and then
    /// the parts of the arguments they hang from. Both decide alike.
    pub fn receive(
        &mut self,
        text: &str,
        sink: &Arc<dyn CallbackSink>,
    ) -> Result<Incoming<P>, ProtocolError> {
        if let Some(incoming) = self.receive_usual(text, sink) {
            return Ok(self.admit(incoming));
        }
        self.receive_general(text, sink)
    }

    /// [`Connection::receive`] without the one-pass reading of the usual messages: what every
    /// other message goes through. Exposed for the differential tests and fuzz targets, which
    /// check that both paths decide alike.
    #[cfg(any(test, feature = "fuzzing"))]
    #[doc(hidden)]
    pub fn receive_general_path(
        &mut self,
        text: &str,
        sink: &Arc<dyn CallbackSink>,
    ) -> Result<Incoming<P>, ProtocolError> {
        self.receive_general(text, sink)
    }

    fn receive_general(
        &mut self,
        text: &str,
        sink: &Arc<dyn CallbackSink>,
    ) -> Result<Incoming<P>, ProtocolError> {
        let raw = RawMessage::decode(text)?;
        // Malformed callbacks reject the message before anything else happens.
        let callbacks = match raw.only_response_callback() {
            Some(None) => Vec::new(),
            Some(Some(id)) => vec![(id, response_path())],
            None => raw.callbacks()?,
        };
        let incoming = match &raw.method {
            Method::Callback(id) => match self.table.take(*id) {
                Some(Entry::Pending(pending)) => Incoming::Response {
                    pending,
                    result: response(raw.arguments, &callbacks, sink),
                },
                Some(Entry::Callback(callback)) => Incoming::Callback {
                    callback,
                    args: received(raw.arguments, &callbacks, &[], sink).into_list(),
                },
                None => Incoming::UnknownCallback(*id),
            },
            Method::Name(method) => {
                request(method, raw.arguments, &callbacks, sink, &mut self.caller)
            }
        };
        Ok(self.admit(incoming))
    }

    /// Gives a request its slot among the calls in flight, or turns it into a
    /// `requestLimitError` answer when there is none.
    fn admit(&mut self, incoming: Incoming<P>) -> Incoming<P> {
        let Incoming::Request(mut req) = incoming else {
            return incoming;
        };
        match InFlight::take(&self.in_flight, self.limits.max_calls_in_flight) {
            Some(slot) => {
                req.in_flight = Some(slot);
                Incoming::Request(req)
            }
            None => Incoming::InvalidRequest {
                response: req.response.take(),
                error: too_many_calls(self.limits.max_calls_in_flight),
            },
        }
    }

    /// The two messages nearly all traffic is made of, read in one pass over the text: a
    /// request whose only function is its response callback, and a response without
    /// functions. `None` for anything else (or anything unusual about these), which the
    /// general path then decodes.
    fn receive_usual(&mut self, text: &str, sink: &Arc<dyn CallbackSink>) -> Option<Incoming<P>> {
        #[derive(Deserialize)]
        struct Usual<'a> {
            #[serde(borrow)]
            method: Option<&'a RawValue>,
            #[serde(borrow, default)]
            arguments: Option<OnlyOptions<'a>>,
            #[serde(borrow, default)]
            callbacks: Option<&'a RawValue>,
        }
        if !text.trim_ascii_start().starts_with('{') {
            return None;
        }
        let wire: Usual<'_> = serde_json::from_str(text).ok()?;
        let method = serde_json::from_str::<Method>(wire.method?.get()).ok()?;
        let response_id = only_response_callback(wire.callbacks)?;
        let OnlyOptions(options) = wire.arguments?;
        match method {
            Method::Name(name) => Some(Incoming::Request(Box::new(Request {
                method: name,
                kite: self.caller_from(options.kite),
                // Malformed credentials are answered by the general path, with its wording.
                auth: self.credentials_from(options.authentication)?,
                args: raw_value(options.with_args).into_list(),
                response: response_id.map(|id| Callback::remote(id, sink.clone())),
                in_flight: None,
            }))),
            Method::Callback(id) => {
                if response_id.is_some() || !self.table.is_pending(id) {
                    return None;
                }
                let result = outcome(options.error, options.result, Vec::new())?;
                let Some(Entry::Pending(pending)) = self.table.take(id) else {
                    return None;
                };
                Some(Incoming::Response { pending, result })
            }
        }
    }

    /// The caller identity of a request: the one decoded last on this connection when the text
    /// is the same (it nearly always is).
    fn caller_from(&mut self, text: Option<&RawValue>) -> Arc<Kite> {
        caller_from(&mut self.caller, text)
    }

    /// The credentials of a request (`Some(None)`: none or `null`), reused when the text is the
    /// same as last time; `None` if malformed.
    fn credentials_from(&mut self, text: Option<&RawValue>) -> Option<Option<Arc<Auth>>> {
        let Some(text) = text.filter(|t| t.get() != "null") else {
            return Some(None);
        };
        if let Some((last, auth)) = &self.credentials
            && **last == *text.get()
        {
            return Some(Some(auth.clone()));
        }
        let auth: Arc<Auth> = Arc::new(last_wins(text.get()).ok()?);
        self.credentials = Some((text.get().into(), auth.clone()));
        Some(Some(auth))
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

    /// Functions sent on this connection that the peer may still call.
    pub fn functions_len(&self) -> usize {
        self.table.functions_len()
    }

    /// Requests of the peer being served now (their [`InFlight`]s not yet dropped).
    pub fn calls_in_flight(&self) -> usize {
        self.in_flight.load(Ordering::Relaxed)
    }
}

fn caller_from(caller: &mut Option<(Box<str>, Arc<Kite>)>, text: Option<&RawValue>) -> Arc<Kite> {
    let Some(text) = text else {
        return Arc::default();
    };
    if let Some((last, kite)) = caller
        && **last == *text.get()
    {
        return kite.clone();
    }
    let kite: Arc<Kite> = Arc::new(last_wins(text.get()).unwrap_or_default());
    *caller = Some((text.get().into(), kite.clone()));
    kite
}

/// A peer's JSON text as a value without functions (`null` when absent).
fn raw_value(text: Option<&RawValue>) -> Value {
    match text {
        Some(text) => Value::received(text.to_owned(), Vec::new()),
        None => Value::null(),
    }
}

/// The subtree `text` of a message (found at `prefix` of its arguments) with the peer's
/// callbacks under `prefix`, as functions reached through `sink`. Callbacks elsewhere are not
/// this value's, and paths that lead nowhere inside it are skipped, as Go skips them.
fn received(
    text: Option<&RawValue>,
    callbacks: &[(u64, Path)],
    prefix: &[Segment],
    sink: &Arc<dyn CallbackSink>,
) -> Value {
    let Some(text) = text else {
        return Value::null();
    };
    let under: Vec<(u64, &[Segment])> = callbacks
        .iter()
        .filter_map(|(id, path)| {
            crate::dnode::path::strip_prefix(path, prefix).map(|rest| (*id, rest))
        })
        .collect();
    let functions = if under.is_empty() {
        Vec::new()
    } else {
        let paths: Vec<&[Segment]> = under.iter().map(|(_, p)| *p).collect();
        let exists = crate::dnode::existing(text.get(), &paths);
        under
            .into_iter()
            .zip(exists)
            .filter(|(_, there)| *there)
            .map(|((id, rest), _)| (rest.to_vec(), Callback::remote(id, sink.clone())))
            .collect()
    };
    Value::received(text.to_owned(), functions)
}

/// The outcome carried by an invocation of a response callback, as Go's client reads it:
/// exactly one object with `error` and/or `result`. Kite.js browser kites answer node-style
/// `[error, result]`; that is accepted too. Anything else is `invalidResponse`.
fn response(
    arguments: Option<&RawValue>,
    callbacks: &[(u64, Path)],
    sink: &Arc<dyn CallbackSink>,
) -> Result<Value, KiteError> {
    let invalid = |msg: String| KiteError::new(ErrorKind::InvalidResponse, msg);
    let shape = || invalid("Server has sent invalid response arguments".into());
    // Arguments that are not a list are one argument (`null` or none: no argument), as
    // they would be for any other function.
    let (items, wrapped): (Vec<&RawValue>, bool) = match arguments {
        None => (Vec::new(), false),
        Some(text) if text.get() == "null" => (Vec::new(), false),
        Some(text) if text.get().starts_with('[') => (
            serde_json::from_str(text.get()).map_err(|_| shape())?,
            false,
        ),
        Some(text) => (vec![text], true),
    };
    let (error, result, prefix) = match items.as_slice() {
        [only] if only.get().starts_with('{') => {
            let mut de = serde_json::Deserializer::from_str(only.get());
            let [error, result] =
                serde::de::DeserializeSeed::deserialize(Members(["error", "result"]), &mut de)
                    .map_err(|_| shape())?;
            if error.is_none() && result.is_none() {
                return Err(shape());
            }
            let mut prefix = vec![Segment::Index(0), Segment::Key("result".into())];
            if wrapped {
                prefix.remove(0);
            }
            (error, result, prefix)
        }
        [_] => return Err(shape()),
        [error, result] => (Some(*error), Some(*result), vec![Segment::Index(1)]),
        other => {
            return Err(invalid(format!(
                "Invalid response arguments length: {}",
                other.len()
            )));
        }
    };
    if let Some(error) = error.filter(|e| e.get() != "null") {
        return Err(match error.get().as_bytes().first() {
            Some(b'"') => KiteError::generic(
                serde_json::from_str::<String>(error.get()).map_err(|_| shape())?,
            ),
            _ => last_wins::<KiteError>(error.get())
                .map_err(|e| invalid(format!("malformed error in response: {e}")))?,
        });
    }
    Ok(received(result, callbacks, &prefix, sink))
}

/// [`response`] for the usual shapes, read from the text: `None` when the error is
/// malformed (the general path then words it).
fn outcome(
    error: Option<&RawValue>,
    result: Option<&RawValue>,
    functions: Vec<(Path, Callback)>,
) -> Option<Result<Value, KiteError>> {
    if error.is_none() && result.is_none() {
        return None;
    }
    if let Some(error) = error.filter(|e| e.get() != "null") {
        let error = match error.get().as_bytes().first() {
            Some(b'"') => KiteError::generic(serde_json::from_str::<String>(error.get()).ok()?),
            _ => last_wins::<KiteError>(error.get()).ok()?,
        };
        return Some(Err(error));
    }
    Some(Ok(match result {
        Some(text) => Value::received(text.to_owned(), functions),
        None => Value::null(),
    }))
}

/// A request: exactly one options object with the caller's identity, credentials and
/// `withArgs`, and the response callback at `[0, "responseCallback"]` (the lowest id when a
/// confused peer names several).
fn request<P>(
    method: &str,
    arguments: Option<&RawValue>,
    callbacks: &[(u64, Path)],
    sink: &Arc<dyn CallbackSink>,
    caller: &mut Option<(Box<str>, Arc<Kite>)>,
) -> Incoming<P> {
    let response_path = response_path();
    let response = callbacks
        .iter()
        .filter(|(_, p)| {
            p.len() == 2 && crate::dnode::path::strip_prefix(p, &response_path).is_some()
        })
        .map(|(id, _)| *id)
        .min()
        .map(|id| Callback::remote(id, sink.clone()));
    let invalid = |what: String| {
        KiteError::argument(format!(
            "invalid request to {method:?}: a kite request has exactly one argument object, got {what}"
        ))
    };
    let items: Option<Vec<&RawValue>> = arguments
        .filter(|a| a.get().starts_with('['))
        .and_then(|a| serde_json::from_str(a.get()).ok());
    let options = match items.as_deref() {
        Some([only]) if only.get().starts_with('{') => {
            match serde_json::from_str::<OptionsObject<'_>>(only.get()) {
                Ok(OptionsObject(options)) => options,
                Err(_) => {
                    return Incoming::InvalidRequest {
                        response,
                        error: invalid("an argument that is not an object".into()),
                    };
                }
            }
        }
        Some([_]) => {
            return Incoming::InvalidRequest {
                response,
                error: invalid("an argument that is not an object".into()),
            };
        }
        Some(items) => {
            return Incoming::InvalidRequest {
                response,
                error: invalid(format!("{} arguments", items.len())),
            };
        }
        None => {
            return Incoming::InvalidRequest {
                response,
                error: invalid("arguments that are not a list".into()),
            };
        }
    };
    let auth = match options.authentication.filter(|a| a.get() != "null") {
        None => None,
        Some(a) => match last_wins::<Auth>(a.get()) {
            Ok(a) => Some(Arc::new(a)),
            Err(e) => {
                return Incoming::InvalidRequest {
                    response,
                    error: KiteError::new(
                        ErrorKind::Authentication,
                        format!("malformed authentication: {e}"),
                    ),
                };
            }
        },
    };
    let prefix = [Segment::Index(0), Segment::Key("withArgs".into())];
    Incoming::Request(Box::new(Request {
        method: method.to_owned(),
        kite: caller_from(caller, options.kite),
        auth,
        args: received(options.with_args, callbacks, &prefix, sink).into_list(),
        response,
        in_flight: None,
    }))
}

/// The one object of a request (`kite`, `authentication`, `withArgs`) or a response
/// (`error`, `result`), its parts still JSON text.
#[derive(Default)]
struct Options<'a> {
    kite: Option<&'a RawValue>,
    authentication: Option<&'a RawValue>,
    with_args: Option<&'a RawValue>,
    /// Present (even if `null`) or not.
    error: Option<&'a RawValue>,
    /// Present (even if `null`) or not.
    result: Option<&'a RawValue>,
}

/// `[options]`: exactly one argument, a JSON object (not an array posing as a struct).
struct OnlyOptions<'a>(Options<'a>);

impl<'de: 'a, 'a> Deserialize<'de> for OnlyOptions<'a> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct List<'a>(std::marker::PhantomData<&'a ()>);
        impl<'de: 'a, 'a> serde::de::Visitor<'de> for List<'a> {
            type Value = OnlyOptions<'a>;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a list holding one options object")
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(
                self,
                mut seq: A,
            ) -> Result<Self::Value, A::Error> {
                let options = seq
                    .next_element::<OptionsObject<'a>>()?
                    .ok_or_else(|| serde::de::Error::custom("no options"))?;
                if seq.next_element::<serde::de::IgnoredAny>()?.is_some() {
                    return Err(serde::de::Error::custom("more than one argument"));
                }
                Ok(OnlyOptions(options.0))
            }
        }
        d.deserialize_seq(List(std::marker::PhantomData))
    }
}

/// The request or response object: its members as text, a key given twice keeping its last
/// value, as a parsed object keeps it.
struct OptionsObject<'a>(Options<'a>);

impl<'de: 'a, 'a> Deserialize<'de> for OptionsObject<'a> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let names = ["kite", "authentication", "withArgs", "error", "result"];
        let [kite, authentication, with_args, error, result] =
            serde::de::DeserializeSeed::deserialize(Members(names), d)?;
        Ok(OptionsObject(Options {
            kite,
            authentication,
            with_args,
            error,
            result,
        }))
    }
}

#[cfg(test)]
pub(crate) mod tests {
    //! The fast paths of [`Connection::receive`] must decide exactly what the parsed path
    //! decides: every captured message, and shapes chosen to stress the differences.

    use super::*;
    pub(crate) use crate::fuzzing::{connection, describe, sink};
    use crate::sockjs::{self, Frame};

    /// Every dnode message in the captured traffic.
    pub(crate) fn captured() -> Vec<String> {
        let files = [
            include_str!("../tests/golden/s1-go-go-websocket.jsonl"),
            include_str!("../tests/golden/s1-go-go-xhr.jsonl"),
            include_str!("../tests/golden/s2-kitejs-go-sockjs-websocket.jsonl"),
            include_str!("../tests/golden/s2-kitejs-kitejs-rawws.jsonl"),
        ];
        let mut out = Vec::new();
        for line in files.iter().flat_map(|f| f.lines()) {
            let v: serde_json::Value = serde_json::from_str(line).unwrap();
            let Some(payload) = v["payload"].as_str().filter(|p| !p.is_empty()) else {
                continue;
            };
            let raw = v["scenario"].as_str().unwrap().contains("rawws");
            if raw && payload.starts_with('{') {
                out.push(payload.to_owned());
            } else if let Ok(msgs) = sockjs::decode_client_frame(payload) {
                out.extend(msgs);
            } else if let Ok(Frame::Messages(msgs)) = Frame::decode(payload) {
                out.extend(msgs);
            } else {
                // xhr bodies: one frame per line.
                for l in payload.lines() {
                    if let Ok(Frame::Messages(msgs)) = Frame::decode(l) {
                        out.extend(msgs);
                    }
                }
            }
        }
        out
    }

    /// Messages chosen to stress the decoders: ids 0..=4 are pending calls, 5..=9 functions.
    pub(crate) fn edge_cases() -> Vec<String> {
        [
            // Requests.
            r#"{"method":"m","arguments":[{"withArgs":[1,"<a>"]}],"callbacks":{"0":[0,"responseCallback"]}}"#,
            r#"{"method":"m","arguments":[{"withArgs":null,"kite":null,"authentication":null}],"callbacks":{}}"#,
            r#"{"method":"m","arguments":[{"withArgs":7}],"callbacks":{"3":["0","responseCallback"]}}"#,
            r#"{"method":"m","arguments":[{"withArgs":{"a":1}}],"callbacks":{}}"#,
            r#"{"method":"m","arguments":[{}],"callbacks":{}}"#,
            r#"{"method":"m","arguments":[{"kite":{"name":5}}],"callbacks":{}}"#,
            r#"{"method":"m","arguments":[{"kite":{"username":"u","name":"n"},"withArgs":[]}]}"#,
            r#"{"method":"m","arguments":[{"authentication":{"type":"token"}}],"callbacks":{}}"#,
            r#"{"method":"m","arguments":[{"authentication":{"type":"token","key":"k"}}]}"#,
            r#"{"method":"m","arguments":[{"authentication":"nope"}],"callbacks":{"0":[0,"responseCallback"]}}"#,
            r#"{"method":"m","arguments":[{"withArgs":[1],"withArgs":[2]}],"callbacks":{}}"#,
            r#"{"method":"m","arguments":[1,2],"callbacks":{"0":[0,"responseCallback"]}}"#,
            r#"{"method":"m","arguments":[],"callbacks":{}}"#,
            r#"{"method":"m","arguments":"x","callbacks":{}}"#,
            r#"{"method":"m","callbacks":{}}"#,
            r#"{"method":"m","arguments":[[1]],"callbacks":{}}"#,
            r#"{"method":"m","arguments":[{"withArgs":[1e400]}],"callbacks":{}}"#,
            r#"{"method":"m","arguments":[{"withArgs":[{"f":"[Function]"}]}],"callbacks":{"0":[0,"responseCallback"],"1":[0,"withArgs",0,"f"]}}"#,
            r#"{"method":"m","arguments":[{"withArgs":["\u2028 \"q\" \\"]}],"callbacks":{}}"#,
            r#"{"method":"m","arguments":[{"withArgs":[1]}],"callbacks":null}"#,
            r#"{"method":"m","arguments":[{"withArgs":[1]}],"callbacks":{"0":["0","responseCallback"]}}"#,
            r#"{"method":"m","arguments":[{"withArgs":[1]}],"callbacks":{"0":[0.0,"responseCallback"]}}"#,
            r#"{"method":"m","arguments":[{"withArgs":[1]}],"callbacks":{"2":[0,"responseCallback"],"1":[0,"responseCallback"]}}"#,
            r#"{"method":"m","arguments":[{"withArgs":[1]}],"callbacks":{"a":[0,"responseCallback"]}}"#,
            r#"{"method":"m","arguments":[{"withArgs":[1]}],"callbacks":{"0":[0,"responseCallback",1]}}"#,
            r#"{"method":"m","arguments":[{"withArgs":[1]}],"callbacks":{"0":[0,"response\u0043allback"]}}"#,
            r#"{"method":"m","arguments":[{"withArgs":[1]}],"callbacks":{"0":[0]}}"#,
            r#"{"method":"m","arguments":[{"withArgs":[1]}],"callbacks":{"0":[-1,"x"]}}"#,
            r#"{"method":"m","arguments":[{"withArgs":[1]}],"callbacks":[1]}"#,
            r#"{"method":"m","arguments":[{"withArgs":[1]},2],"callbacks":{"0":[0,"responseCallback"]}}"#,
            r#"{"method":"m","arguments":[{"with\u0041rgs":[9]}],"callbacks":{}}"#,
            r#"{"method":"m","arguments":[{"withArgs":[1]}],"callbacks":{"0":[1,"responseCallback"]}}"#,
            // Responses and callback invocations (ids 0..=9 are pending or callbacks).
            r#"{"method":0,"arguments":[{"error":null,"result":1}],"callbacks":null}"#,
            r#"{"method":0,"arguments":[{"error":null,"result":1}],"callbacks":{"x":[0]}}"#,
            r#"{"method":0,"arguments":[{"error":null,"result":1}],"callbacks":{"3":[0,"responseCallback"]}}"#,
            r#"{"method":0,"arguments":[{"error":null,"result":16}],"callbacks":{}}"#,
            r#"{"method":0,"arguments":[{"result":{"a":[1,2]}}]}"#,
            r#"{"method":0,"arguments":[{"error":null}],"callbacks":{}}"#,
            r#"{"method":0,"arguments":[{"error":{"type":"genericError","message":"m"}}]}"#,
            r#"{"method":0,"arguments":[{"error":"plain"}]}"#,
            r#"{"method":0,"arguments":[{"error":5}]}"#,
            r#"{"method":0,"arguments":[{"error":{"type":7}}]}"#,
            r#"{"method":0,"arguments":[{"other":1}]}"#,
            r#"{"method":0,"arguments":[null,"node-style"]}"#,
            r#"{"method":0,"arguments":[{"message":"e"},1]}"#,
            r#"{"method":0,"arguments":[1,2,3]}"#,
            r#"{"method":0,"arguments":[]}"#,
            r#"{"method":0,"arguments":[7]}"#,
            r#"{"method":0,"arguments":{"error":null,"result":1}}"#,
            r#"{"method":0}"#,
            r#"{"method":0,"arguments":[{"result":"[Function]"}],"callbacks":{"4":[0,"result"]}}"#,
            r#"{"method":5,"arguments":[1,{"x":"<y>"}],"callbacks":{}}"#,
            r#"{"method":5,"arguments":null}"#,
            r#"{"method":5,"arguments":3}"#,
            r#"{"method":5,"arguments":["[Function]"],"callbacks":{"9":[0]}}"#,
            // A key given twice keeps its last value, as Go's decoder and JSON.parse do
            // (found by the dnode_message fuzz target).
            r#"{"method":0,"method":1,"arlbackcallbacks":{}}"#,
            r#"{"method":"m","method":"n","arguments":[{"withArgs":[1]}],"callbacks":{"0":[0,"responseCallback"]}}"#,
            r#"{"method":"m","arguments":[{"withArgs":[1]}],"arguments":[{"withArgs":[2]}],"callbacks":{"0":[0,"responseCallback"]}}"#,
            r#"{"method":0,"arguments":[{"error":{"type":"x"},"error":null,"result":5}]}"#,
            r#"{"method":0,"arguments":[{"error":{"message":"a","message":"b","code":1,"code":"c"}}]}"#,
            r#"{"method":"m","arguments":[{"kite":{"name":"a","name":"b"},"authentication":{"type":"token","key":"1","key":"2"},"withArgs":[]}],"callbacks":{}}"#,
            r#"{"method":0,"arguments":[{"error":null,"result":1}],"callbacks":{"0":[0],"0":[1]},"callbacks":null}"#,
            // Ids and indices past 2^53 are not exact in a double, as Go and JavaScript read
            // them (found by the dnode_message fuzz target).
            r#"{"method":555555612555555611}"#,
            r#"{"method":9007199254740993,"arguments":[]}"#,
            r#"{"method":"m","arguments":[{"withArgs":[1]}],"callbacks":{"0":[0,"responseCallback"],"1":[0,"withArgs",9007199254740993]}}"#,
        ]
        .iter()
        .map(|s| (*s).to_owned())
        .collect()
    }

    #[test]
    fn quoted_requests_are_the_escaped_plain_ones() {
        let kite = Kite {
            username: "u<&>\u{2028}".into(),
            name: "n\"q\\".into(),
            ..Kite::default()
        };
        let auth = Auth::new("token", "eyJ.abc-_.sig");
        for auth in [None, Some(&auth)] {
            let head = RequestHead::new(&kite, auth);
            let cb = Callback::new(|_| {});
            let args = [
                crate::value!([4]),
                crate::value!(["<\"x\">\n", [1.5, -2.0]]),
                crate::value!([{"a": "é"}, cb.clone(), cb]),
            ];
            for a in args {
                let (mut plain, mut quoted): (Connection<()>, Connection<()>) =
                    (Connection::new(), Connection::new());
                let (id1, text) = plain
                    .request_with_head("sq\"uare", &head, a.clone(), ())
                    .unwrap();
                let (id2, lit) = quoted.request_quoted("sq\"uare", &head, a, ()).unwrap();
                assert_eq!(id1, id2);
                let mut want = Vec::new();
                json::write_str(&mut want, &text);
                assert_eq!(lit, String::from_utf8(want).unwrap());
            }
        }
    }

    #[test]
    fn identity_and_credentials_are_reused_only_when_they_repeat() {
        let sink = sink();
        let mut server: Connection<()> = Connection::new();
        let kite = |name: &str| Kite {
            name: name.into(),
            ..Kite::default()
        };
        let calls = [
            (kite("a"), Some(Auth::new("token", "t1"))),
            (kite("a"), Some(Auth::new("token", "t1"))),
            (kite("b"), Some(Auth::new("token", "t2"))),
            (kite("b"), None),
            (kite("a"), Some(Auth::new("kiteKey", "t1"))),
            (kite("a"), Some(Auth::new("token", "t1"))),
        ];
        let mut previous: Option<Box<Request>> = None;
        for (k, auth) in &calls {
            let mut client: Connection<()> = Connection::new();
            let (_, text) = client
                .request("m", k, auth.as_ref(), crate::value!([1]), ())
                .unwrap();
            let Ok(Incoming::Request(req)) = server.receive(&text, &sink) else {
                panic!("{text}")
            };
            assert_eq!(*req.kite, *k);
            assert_eq!(req.auth.as_deref(), auth.as_ref());
            if let Some(p) = &previous
                && *p.kite == *k
            {
                assert!(
                    Arc::ptr_eq(&p.kite, &req.kite),
                    "a repeated identity is shared"
                );
            }
            previous = Some(req);
        }
    }

    #[test]
    fn the_one_pass_path_agrees_with_the_general_path() {
        let sink = sink();
        let messages: Vec<String> = captured().into_iter().chain(edge_cases()).collect();
        assert!(messages.len() > 100, "only {} messages", messages.len());
        for text in &messages {
            let fast = connection().receive(text, &sink);
            let general = connection().receive_general_path(text, &sink);
            assert_eq!(describe(&fast), describe(&general), "{text}");
            crate::fuzzing::check_message(text);
        }
    }

    #[test]
    fn values_found_by_the_fuzzers_round_trip() {
        // `1.00` is written back as `1`, Go's form of the same number (dnode_value target).
        crate::fuzzing::check_round_trip(r#"[{"error":null,"*esul.u":1.00}]"#, &[]);
        // A long integer read as the nearest double and written back as Go writes it: the
        // same double again (serde_json's float_roundtrip parsing; dnode_value target).
        crate::fuzzing::check_round_trip(&format!("[\r4{}2]", "7".repeat(48)), &[]);
        for (text, paths) in [
            (
                r#"[1,{"a":[true,null]}]"#,
                r#"[[0],[1,"a",0],["1","a","1"],[1,"a"]]"#,
            ),
            (r#"{"k":[1,2,3]}"#, r#"[["k",2],["k","2"],["k"]]"#),
        ] {
            let paths: Vec<Path> = serde_json::from_str(paths).unwrap();
            crate::fuzzing::check_value(text, &paths);
            crate::fuzzing::check_round_trip(text, &paths);
        }
    }

    #[test]
    fn no_string_is_ever_a_function() {
        // Marker-like strings of earlier designs, NUL-led strings, "[Function]" without a
        // callbacks entry: strings, both ways.
        let sink = sink();
        for s in [
            "\u{0}kite-callback:0",
            "\u{0}kite-callback-parked:0",
            "\u{0}",
            "[Function]",
        ] {
            let mut client: Connection<()> = Connection::new();
            let me = Kite::new("c", "1.0.0");
            let (_, text) = client
                .request("kite.echo", &me, None, crate::value!([s, {"k": s}]), ())
                .unwrap();
            let mut server: Connection<()> = Connection::new();
            let Ok(Incoming::Request(req)) = server.receive(&text, &sink) else {
                panic!("{text}")
            };
            assert!(req.args.functions().is_empty(), "{s:?}");
            assert!(req.args.callback(0).is_err());
            assert_eq!(req.args.nth::<String>(0).unwrap(), s);
            let echoed = server.respond(req.response_id().unwrap(), Ok(req.args.clone()));
            assert!(echoed.ends_with(r#""callbacks":{}}"#), "{echoed}");
            let Ok(Incoming::Response { result, .. }) = client.receive(&echoed, &sink) else {
                panic!("{echoed}")
            };
            let result = result.unwrap();
            assert!(result.functions().is_empty());
            assert_eq!(result.nth::<String>(0).unwrap(), s);
        }
    }

    #[test]
    fn one_function_in_several_places_gets_an_id_per_place() {
        let cb = Callback::new(|_| {});
        let mut c: Connection<()> = Connection::new();
        let text = c
            .invoke(7, crate::value!([cb.clone(), {"again": cb.clone()}, [cb]]))
            .unwrap();
        assert_eq!(
            text,
            r#"{"method":7,"arguments":["[Function]",{"again":"[Function]"},["[Function]"]],"callbacks":{"0":[0],"1":[1,"again"],"2":[2,0]}}"#
        );
        // Every id reaches the same function; sending the message again adds nothing.
        let again = c
            .invoke(7, crate::value!([cb_of(&c, 0), cb_of(&c, 1)]))
            .unwrap();
        assert!(
            again.contains(r#""callbacks":{"0":[0],"1":[1]}"#),
            "{again}"
        );
        assert_eq!(c.functions_len(), 3);
    }

    fn cb_of(c: &Connection<()>, id: u64) -> Callback {
        match c.table.entries_get(id) {
            Some(cb) => cb,
            None => panic!("no function {id}"),
        }
    }

    #[test]
    fn calls_in_flight_are_bounded_and_their_slots_come_back() {
        let sink = sink();
        let limits = Limits {
            max_calls_in_flight: 2,
            ..Limits::default()
        };
        let mut server: Connection<()> = Connection::with_limits(limits);
        let mut client: Connection<()> = Connection::new();
        let me = Kite::new("c", "1.0.0");
        let mut held = Vec::new();
        for _ in 0..2 {
            let (_, text) = client
                .request("slow", &me, None, crate::value!([]), ())
                .unwrap();
            let Ok(Incoming::Request(req)) = server.receive(&text, &sink) else {
                panic!()
            };
            held.push(req);
        }
        let (_, text) = client
            .request("slow", &me, None, crate::value!([]), ())
            .unwrap();
        let Ok(Incoming::InvalidRequest { response, error }) = server.receive(&text, &sink) else {
            panic!()
        };
        assert_eq!(error.kind, ErrorKind::RequestLimit);
        assert!(response.is_some(), "the refusal is answered");
        assert_eq!(server.calls_in_flight(), 2);
        held.pop();
        assert_eq!(server.calls_in_flight(), 1);
        let Ok(Incoming::Request(_)) = server.receive(&text, &sink) else {
            panic!()
        };
    }

    #[test]
    fn functions_are_bounded_and_an_answer_past_the_bound_is_an_error() {
        let limits = Limits {
            max_functions: 2,
            ..Limits::default()
        };
        let mut c: Connection<()> = Connection::with_limits(limits);
        let f = || Callback::new(|_| {});
        let me = Kite::new("c", "1.0.0");
        assert!(
            c.request("m", &me, None, crate::value!([f(), f(), f()]), ())
                .is_err()
        );
        assert_eq!(
            (c.functions_len(), c.pending_len()),
            (0, 0),
            "nothing half-done"
        );
        c.invoke(1, crate::value!([f(), f()])).unwrap();
        assert_eq!(
            c.invoke(1, crate::value!([f()])).unwrap_err().kind,
            ErrorKind::RequestLimit
        );
        let answer = c.respond(3, Ok(crate::value!({"f": f()})));
        assert!(answer.contains("requestLimitError"), "{answer}");
        assert!(
            answer.ends_with(r#""result":null}],"callbacks":{}}"#),
            "{answer}"
        );
    }

    #[test]
    fn values_of_any_depth_pass_through_and_decode_up_to_go_limit() {
        let sink = sink();
        let deep = |n: usize| "[".repeat(n) + &"]".repeat(n);
        // The list of arguments is one level more.
        for depth in [200, crate::dnode::depth::MAX_DEPTH - 1, 50_000] {
            // A request whose argument is nested `depth` deep, with a function inside.
            let text = format!(
                r#"{{"method":"kite.echo","arguments":[{{"withArgs":[{},"[Function]"],"responseCallback":"[Function]"}}],"callbacks":{{"0":[0,"responseCallback"],"1":[0,"withArgs",1]}}}}"#,
                deep(depth)
            );
            let mut server: Connection<()> = Connection::new();
            let Ok(Incoming::Request(req)) = server.receive(&text, &sink) else {
                panic!("depth {depth}: dropped")
            };
            assert_eq!(req.args.len(), 2);
            assert!(req.args.callback(1).is_ok());
            let decoded = req.args.nth::<serde_json::Value>(0);
            if depth <= crate::dnode::depth::MAX_DEPTH {
                let v = decoded.unwrap();
                crate::dnode::depth::drop_tree(v);
            } else {
                assert_eq!(decoded.unwrap_err().kind, ErrorKind::Argument);
            }
            // Echoed intact, function included, at any depth.
            let answer = server.respond(0, Ok(req.args.get(0).unwrap()));
            assert!(answer.contains(&deep(depth)), "depth {depth}");
            let answer = server.respond(0, Ok(req.args.clone()));
            assert!(
                answer.ends_with(r#""callbacks":{"0":[0,"result",1]}}"#),
                "{}",
                &answer[answer.len() - 60..]
            );
        }
    }
}
