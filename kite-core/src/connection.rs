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

use serde_json::Value;

use serde::Deserialize;
use serde_json::value::RawValue;

use crate::dnode::{
    Args, Callback, CallbackSink, CallbackTable, Entry, Method, Path, RawMessage, Scrubbed,
    Segment, encode_with, only_response_callback,
};
use crate::envelope::{Auth, Request, RequestHead, parse_response};
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
    /// The last caller identity decoded, with its JSON text: a peer sends the same identity
    /// with every request, so it is parsed once per connection.
    caller: Option<(Box<str>, Arc<Kite>)>,
    /// The same for the caller's credentials (a token is hundreds of bytes).
    credentials: Option<(Box<str>, Arc<Auth>)>,
}

impl<P> Default for Connection<P> {
    fn default() -> Self {
        Connection {
            table: CallbackTable::new(),
            caller: None,
            credentials: None,
        }
    }
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
        self.request_with_head(method, &RequestHead::new(kite, auth), args, pending)
    }

    /// [`Connection::request`] with the caller's identity and credentials already encoded.
    pub fn request_with_head(
        &mut self,
        method: &str,
        head: &RequestHead,
        args: Scrubbed,
        pending: P,
    ) -> (u64, String) {
        let id = self.table.insert_pending(pending);
        let callbacks = self.request_callbacks(id, args.callbacks);
        let head = head.as_bytes();
        let text = encode_with(
            &Method::Name(method.to_owned()),
            &callbacks,
            head.len() + 64,
            |out| {
                out.push(b'[');
                out.extend_from_slice(head);
                // Serializing plain data cannot fail.
                json::write_value(out, &args.value);
                out.extend_from_slice(b"}]");
            },
        );
        (id, text)
    }

    /// [`Connection::request_with_head`] encoded the way a SockJS frame carries it: as one JSON
    /// string literal (quoted and escaped), equal to [`json::write_str`] of the plain text.
    /// Only the parts that change per call are escaped; the head comes escaped already.
    pub fn request_quoted(
        &mut self,
        method: &str,
        head: &RequestHead,
        args: Scrubbed,
        pending: P,
    ) -> (u64, String) {
        let id = self.table.insert_pending(pending);
        let callbacks = self.request_callbacks(id, args.callbacks);
        let mut plain = Vec::with_capacity(64);
        plain.extend_from_slice(b"{\"method\":");
        json::write_str(&mut plain, method);
        plain.extend_from_slice(b",\"arguments\":[");
        let mut out = Vec::with_capacity(head.quoted_bytes().len() + 160);
        out.push(b'"');
        json::write_contents(&mut out, std::str::from_utf8(&plain).unwrap_or_default());
        out.extend_from_slice(head.quoted_bytes());
        plain.clear();
        // Serializing plain data cannot fail.
        json::write_value(&mut plain, &args.value);
        plain.extend_from_slice(b"}],");
        crate::dnode::write_callbacks(&mut plain, &callbacks);
        plain.push(b'}');
        json::write_contents(&mut out, std::str::from_utf8(&plain).unwrap_or_default());
        out.push(b'"');
        (id, String::from_utf8(out).expect("JSON output is UTF-8"))
    }

    /// The callbacks of a request: its response callback `id`, then the functions in `args`.
    fn request_callbacks(&mut self, id: u64, functions: Vec<(Path, Callback)>) -> Vec<(u64, Path)> {
        let mut callbacks: Vec<(u64, Path)> = Vec::with_capacity(1 + functions.len());
        callbacks.push((
            id,
            vec![Segment::Index(0), Segment::Key("responseCallback".into())],
        ));
        for (mut path, cb) in functions {
            path.splice(0..0, [Segment::Index(0), Segment::Key("withArgs".into())]);
            callbacks.push((self.table.register(&cb), path));
        }
        callbacks
    }

    /// Encodes an invocation of the peer's callback `id` (a response, or any function the peer
    /// sent) with `args` as the argument list.
    pub fn invoke(&mut self, id: u64, args: Scrubbed) -> String {
        let callbacks: Vec<(u64, Path)> = args
            .callbacks
            .into_iter()
            .map(|(path, cb)| (self.table.register(&cb), path))
            .collect();
        let arguments = crate::dnode::normalize_args(args.value);
        encode_with(&Method::Callback(id), &callbacks, 64, |out| {
            json::write_value(out, &arguments)
        })
    }

    /// Encodes the answer to a request whose response callback is the peer's `id`:
    /// `{"method":id,"arguments":[{"error":..,"result":..}],"callbacks":{..}}`, the same text as
    /// [`Connection::invoke`] with [`crate::envelope::response_args`], written directly.
    pub fn respond(&mut self, id: u64, result: Result<Scrubbed, KiteError>) -> String {
        let (error, result) = match result {
            Ok(s) => (None, s),
            Err(e) => (Some(e), Scrubbed::plain(Value::Null)),
        };
        let callbacks: Vec<(u64, Path)> = result
            .callbacks
            .into_iter()
            .map(|(mut path, cb)| {
                path.splice(0..0, [Segment::Index(0), Segment::Key("result".into())]);
                (self.table.register(&cb), path)
            })
            .collect();
        encode_with(&Method::Callback(id), &callbacks, 64, |out| {
            out.extend_from_slice(b"[{\"error\":");
            // Serializing plain data cannot fail.
            let _ = json::write_into(out, &error);
            out.extend_from_slice(b",\"result\":");
            json::write_value(out, &result.value);
            out.extend_from_slice(b"}]");
        })
    }

    /// Decodes one incoming message. Functions inside it become remote [`Callback`]s that send
    /// through `sink`. Errors mean the message is unusable and there is no one to answer.
    ///
    /// The common shapes (a request whose only function is its response callback, a response
    /// or callback invocation without functions) are decoded straight from the text: their
    /// arguments stay JSON text until a handler decodes them into its own types. Anything
    /// else goes through a parsed [`Value`]; both give the same results, except that a number
    /// too large for an `f64` reaches the handler as an `argumentError` when decoded, where
    /// the parsed path could only drop the message.
    pub fn receive(
        &mut self,
        text: &str,
        sink: &Arc<dyn CallbackSink>,
    ) -> Result<Incoming<P>, ProtocolError> {
        if let Some(incoming) = self.receive_usual(text, sink) {
            return Ok(incoming);
        }
        let raw = RawMessage::decode(text)?;
        // Malformed callbacks reject the message before anything else happens.
        let callbacks = match raw.only_response_callback() {
            Some(only) => Callbacks::OnlyResponse(only),
            None => Callbacks::List(raw.callbacks()?),
        };
        match &raw.method {
            Method::Callback(id) => Ok(match self.table.take(*id) {
                Some(Entry::Pending(pending)) => Incoming::Response {
                    pending,
                    result: decode_response(&raw, callbacks, sink)?,
                },
                Some(Entry::Callback(callback)) => Incoming::Callback {
                    callback,
                    args: decode_args(&raw, callbacks, sink)?,
                },
                None => Incoming::UnknownCallback(*id),
            }),
            Method::Name(method) => decode_request(method, &raw, callbacks, sink, &mut self.caller),
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
                args: match options.with_args {
                    Some(text) => Args::from_raw(text.to_owned()),
                    None => Args::default(),
                }
                .into_list(),
                response: response_id.map(|id| Callback::remote(id, sink.clone())),
            }))),
            Method::Callback(id) => {
                if response_id.is_some() || !self.table.is_pending(id) {
                    return None;
                }
                let result = outcome(options.error, options.result)?;
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
        let Some(text) = text else {
            return Arc::default();
        };
        if let Some((last, kite)) = &self.caller
            && **last == *text.get()
        {
            return kite.clone();
        }
        let kite: Arc<Kite> = Arc::new(serde_json::from_str(text.get()).unwrap_or_default());
        self.caller = Some((text.get().into(), kite.clone()));
        kite
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
        let auth: Arc<Auth> = Arc::new(serde_json::from_str(text.get()).ok()?);
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
}

/// The callbacks of a message: recognised without parsing, or parsed.
enum Callbacks {
    /// None (`None`), or only the response callback of a request.
    OnlyResponse(Option<u64>),
    /// Anything else, id → path.
    List(Vec<(u64, Path)>),
}

impl Callbacks {
    fn into_list(self) -> Vec<(u64, Path)> {
        match self {
            Callbacks::OnlyResponse(None) => Vec::new(),
            Callbacks::OnlyResponse(Some(id)) => vec![(
                id,
                vec![Segment::Index(0), Segment::Key("responseCallback".into())],
            )],
            Callbacks::List(list) => list,
        }
    }
}

/// The arguments of a callback invocation, as a list.
fn decode_args(
    raw: &RawMessage<'_>,
    callbacks: Callbacks,
    sink: &Arc<dyn CallbackSink>,
) -> Result<Args, ProtocolError> {
    if let Callbacks::OnlyResponse(None) = callbacks {
        return Ok(match raw.arguments {
            Some(text) => Args::from_raw(text.to_owned()),
            None => Args::default(),
        }
        .into_list());
    }
    let mut arguments = raw.arguments_value()?;
    Ok(Args::from_message(&mut arguments, &callbacks.into_list(), &[], sink).into_list())
}

/// The outcome carried by an invocation of a response callback.
fn decode_response(
    raw: &RawMessage<'_>,
    callbacks: Callbacks,
    sink: &Arc<dyn CallbackSink>,
) -> Result<Result<Args, KiteError>, ProtocolError> {
    if let Callbacks::OnlyResponse(None) = callbacks
        && let Some(outcome) = raw.arguments.and_then(fast_response)
    {
        return Ok(outcome);
    }
    Ok(parse_response(decode_args(raw, callbacks, sink)?))
}

/// [`parse_response`] for a response without functions, read from the text. `None` when the
/// shape is not the usual one (the parsed path then decides, with its error wording).
fn fast_response(arguments: &RawValue) -> Option<Result<Args, KiteError>> {
    #[derive(Deserialize)]
    struct Outcome<'a> {
        #[serde(borrow, default, deserialize_with = "present")]
        error: Option<&'a RawValue>,
        #[serde(borrow, default, deserialize_with = "present")]
        result: Option<&'a RawValue>,
    }
    let items: Vec<&RawValue> = serde_json::from_str(arguments.get()).ok()?;
    let (error, result) = match items.as_slice() {
        [only] if only.get().starts_with('{') => {
            let o: Outcome<'_> = serde_json::from_str(only.get()).ok()?;
            (o.error, o.result)
        }
        [error, result] => (Some(*error), Some(*result)),
        _ => return None,
    };
    outcome(error, result)
}

/// Deserializes a field that is present as `Some`, even when it is `null`.
fn present<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<&'de RawValue>, D::Error> {
    <&RawValue>::deserialize(d).map(Some)
}

fn decode_request<P>(
    method: &str,
    raw: &RawMessage<'_>,
    callbacks: Callbacks,
    sink: &Arc<dyn CallbackSink>,
    caller: &mut Option<(Box<str>, Arc<Kite>)>,
) -> Result<Incoming<P>, ProtocolError> {
    if let Callbacks::OnlyResponse(response_id) = callbacks
        && let Some(request) = raw
            .arguments
            .and_then(|a| fast_request(method, a, response_id, sink, caller))
    {
        return Ok(Incoming::Request(Box::new(request)));
    }
    let callbacks = callbacks.into_list();
    let response_path = [Segment::Index(0), Segment::Key("responseCallback".into())];
    let response = callbacks
        .iter()
        .find(|(_, p)| {
            p.len() == 2 && crate::dnode::path::strip_prefix(p, &response_path).is_some()
        })
        .map(|(id, _)| Callback::remote(*id, sink.clone()));
    let arguments = raw.arguments_value()?;
    Ok(decode_request_value(
        method.to_owned(),
        arguments,
        &callbacks,
        response,
        sink,
    ))
}

/// The one object of a request (`kite`, `authentication`, `withArgs`) or a response
/// (`error`, `result`), its parts still JSON text except the credentials.
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

struct OptionsObject<'a>(Options<'a>);

impl<'de: 'a, 'a> Deserialize<'de> for OptionsObject<'a> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Object<'a>(std::marker::PhantomData<&'a ()>);
        impl<'de: 'a, 'a> serde::de::Visitor<'de> for Object<'a> {
            type Value = OptionsObject<'a>;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("an options object")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                mut map: A,
            ) -> Result<Self::Value, A::Error> {
                let mut o = Options::default();
                // A repeated key keeps its last value, as a parsed object does.
                while let Some(key) = map.next_key::<std::borrow::Cow<'de, str>>()? {
                    match &*key {
                        "kite" => o.kite = Some(map.next_value()?),
                        "authentication" => o.authentication = Some(map.next_value()?),
                        "withArgs" => o.with_args = Some(map.next_value()?),
                        "error" => o.error = Some(map.next_value()?),
                        "result" => o.result = Some(map.next_value()?),
                        _ => {
                            map.next_value::<serde::de::IgnoredAny>()?;
                        }
                    }
                }
                Ok(OptionsObject(o))
            }
        }
        d.deserialize_map(Object(std::marker::PhantomData))
    }
}

/// A request with no functions besides its response callback, read from the text in one
/// pass. `None` when the shape is not the usual one.
fn fast_request(
    method: &str,
    arguments: &RawValue,
    response_id: Option<u64>,
    sink: &Arc<dyn CallbackSink>,
    caller: &mut Option<(Box<str>, Arc<Kite>)>,
) -> Option<Request> {
    let OnlyOptions(options) = serde_json::from_str(arguments.get()).ok()?;
    let kite = match (options.kite, caller.as_ref()) {
        (Some(text), Some((last, kite))) if **last == *text.get() => kite.clone(),
        (Some(text), _) => {
            let kite: Arc<Kite> = Arc::new(serde_json::from_str(text.get()).unwrap_or_default());
            *caller = Some((text.get().into(), kite.clone()));
            kite
        }
        (None, _) => Arc::default(),
    };
    let args = match options.with_args {
        Some(text) => Args::from_raw(text.to_owned()),
        None => Args::default(),
    }
    .into_list();
    let auth = match options.authentication.filter(|a| a.get() != "null") {
        None => None,
        // A malformed one is answered from the parsed path, with its wording.
        Some(a) => Some(Arc::new(serde_json::from_str::<Auth>(a.get()).ok()?)),
    };
    Some(Request {
        method: method.to_owned(),
        kite,
        auth,
        args,
        response: response_id.map(|id| Callback::remote(id, sink.clone())),
    })
}

/// The outcome in a response's `error` and `result` (each `Some` when present, even if
/// `null`), as [`parse_response`] reads it. `None` when neither is there or the error is
/// malformed (the general path then words the error).
fn outcome(error: Option<&RawValue>, result: Option<&RawValue>) -> Option<Result<Args, KiteError>> {
    if error.is_none() && result.is_none() {
        return None;
    }
    if let Some(error) = error.filter(|e| e.get() != "null") {
        let error = match error.get().as_bytes().first() {
            Some(b'"') => KiteError::generic(serde_json::from_str::<String>(error.get()).ok()?),
            _ => serde_json::from_str::<KiteError>(error.get()).ok()?,
        };
        return Some(Err(error));
    }
    Some(Ok(match result {
        Some(text) => Args::from_raw(text.to_owned()),
        None => Args::from_value(Value::Null),
    }))
}

fn decode_request_value<P>(
    method: String,
    mut arguments: Value,
    callbacks: &[(u64, Path)],
    response: Option<Callback>,
    sink: &Arc<dyn CallbackSink>,
) -> Incoming<P> {
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
            Ok(a) => Some(Arc::new(a)),
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
        kite: Arc::new(kite),
        auth,
        args,
        response,
    }))
}

#[cfg(test)]
pub(crate) mod tests {
    //! The fast paths of [`Connection::receive`] must decide exactly what the parsed path
    //! decides: every captured message, and shapes chosen to stress the differences.

    use super::*;
    use crate::sockjs::{self, Frame};

    struct Nowhere;
    impl CallbackSink for Nowhere {
        fn invoke(&self, _id: u64, _args: Scrubbed) -> Result<(), KiteError> {
            Ok(())
        }
    }

    fn sink() -> Arc<dyn CallbackSink> {
        Arc::new(Nowhere)
    }

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
            let v: Value = serde_json::from_str(line).unwrap();
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
        ]
        .iter()
        .map(|s| (*s).to_owned())
        .collect()
    }

    /// What a decoded message amounts to, as comparable text.
    fn describe(incoming: &Result<Incoming<u64>, ProtocolError>) -> String {
        match incoming {
            Err(e) => format!("error {e}"),
            Ok(Incoming::Request(r)) => format!(
                "request {} kite={:?} auth={:?} args={} fns={} response={:?}",
                r.method,
                r.kite,
                r.auth,
                r.args.value(),
                r.args.callbacks().len(),
                r.response.as_ref().and_then(Callback::remote_id)
            ),
            Ok(Incoming::Response { pending, result }) => match result {
                Ok(a) => format!(
                    "response {pending} ok {} fns={} one={:?}",
                    a.value(),
                    a.callbacks().len(),
                    a.one::<Value>().map_err(|e| e.message)
                ),
                Err(e) => format!("response {pending} err {e:?}"),
            },
            Ok(Incoming::Callback { args, .. }) => format!(
                "callback {} fns={} first={:?}",
                args.value(),
                args.callbacks().len(),
                args.nth::<Value>(0).map_err(|e| e.message)
            ),
            Ok(Incoming::InvalidRequest { response, error }) => format!(
                "invalid {error:?} response={:?}",
                response.as_ref().and_then(Callback::remote_id)
            ),
            Ok(Incoming::UnknownCallback(id)) => format!("unknown {id}"),
        }
    }

    /// The reference: the same decision taken from a fully parsed message.
    fn parsed_path(
        text: &str,
        sink: &Arc<dyn CallbackSink>,
    ) -> Result<Incoming<u64>, ProtocolError> {
        let raw = RawMessage::decode(text)?;
        let callbacks = raw.callbacks()?;
        let mut arguments = raw.arguments_value()?;
        Ok(match &raw.method {
            Method::Callback(id) if *id < 5 => Incoming::Response {
                pending: *id,
                result: parse_response(
                    Args::from_message(&mut arguments, &callbacks, &[], sink).into_list(),
                ),
            },
            Method::Callback(_) => Incoming::Callback {
                callback: Callback::new(|_| {}),
                args: Args::from_message(&mut arguments, &callbacks, &[], sink).into_list(),
            },
            Method::Name(m) => {
                let response = callbacks
                    .iter()
                    .find(|(_, p)| {
                        p.len() == 2
                            && crate::dnode::path::strip_prefix(
                                p,
                                &[Segment::Index(0), Segment::Key("responseCallback".into())],
                            )
                            .is_some()
                    })
                    .map(|(id, _)| Callback::remote(*id, sink.clone()));
                decode_request_value(m.clone(), arguments, &callbacks, response, sink)
            }
        })
    }

    /// A connection whose ids 0..=4 are pending calls and 5..=9 functions.
    pub(crate) fn connection() -> Connection<u64> {
        let mut c = Connection::new();
        for i in 0..5 {
            c.table.insert_pending(i);
        }
        for _ in 5..10 {
            c.table.register(&Callback::new(|_| {}));
        }
        c
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
                crate::dnode::scrub_args(&(4,)).unwrap(),
                crate::dnode::scrub_args(&("<\"x\">\n", [1.5, -2.0])).unwrap(),
                crate::dnode::scrub_args(&(serde_json::json!({"a": "é"}), &cb)).unwrap(),
            ];
            for a in args {
                let (mut plain, mut quoted): (Connection<()>, Connection<()>) =
                    (Connection::new(), Connection::new());
                let (id1, text) = plain.request_with_head("sq\"uare", &head, a.clone(), ());
                let (id2, lit) = quoted.request_quoted("sq\"uare", &head, a, ());
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
            let args = crate::dnode::scrub_args(&(1,)).unwrap();
            let (_, text) = client.request("m", k, auth.as_ref(), args, ());
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
    fn fast_paths_agree_with_the_parsed_path() {
        let sink = sink();
        let messages: Vec<String> = captured().into_iter().chain(edge_cases()).collect();
        assert!(messages.len() > 100, "only {} messages", messages.len());
        for text in &messages {
            let fast = connection().receive(text, &sink);
            let slow = parsed_path(text, &sink);
            if let (Ok(Incoming::Request(r)), Err(e)) = (&fast, &slow)
                && e.to_string().contains("number out of range")
            {
                // The one intended difference: the parsed path cannot hold the number and
                // drops the message (the caller would wait for nothing); the fast path
                // delivers it and decoding answers with an argumentError.
                let err = r.args.one::<f64>().unwrap_err();
                assert_eq!(err.kind.as_str(), "argumentError", "{text}");
                continue;
            }
            assert_eq!(describe(&fast), describe(&slow), "{text}");
        }
    }
}
