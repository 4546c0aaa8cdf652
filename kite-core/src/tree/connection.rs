//! [`TreeConnection`]: the protocol state of one connection over [`Tree`] messages.

use std::sync::Arc;
use std::sync::atomic::AtomicUsize;

use super::{Tree, at, replace_at};
use crate::connection::{InFlight, Limits};
use crate::dnode::{CallbackTable, Entry, Method, Path, Segment};
use crate::envelope::Auth;
use crate::error::{ErrorKind, KiteError, ProtocolError};
use crate::identity::Kite;

/// Values to send: `value` with the driver's functions inside it already replaced by
/// `"[Function]"`, and those functions by path (from the root of `value`).
#[derive(Debug, Clone)]
pub struct Outgoing<T, F> {
    /// The value as it goes on the wire.
    pub value: T,
    /// The functions inside it.
    pub functions: Vec<(Path, F)>,
}

impl<T, F> Outgoing<T, F> {
    /// A value without functions.
    pub fn plain(value: T) -> Self {
        Outgoing {
            value,
            functions: Vec::new(),
        }
    }
}

/// A received value and the peer's callbacks inside it: path (from the root of `value`) → the
/// peer's callback id. [`Received::resolve`] puts the driver's callable stand-ins in place.
#[derive(Debug, Clone, PartialEq)]
pub struct Received<T> {
    /// The value as it came (each callback is the string `"[Function]"`, or whatever the peer
    /// put there).
    pub value: T,
    /// The callbacks inside it.
    pub callbacks: Vec<(Path, u64)>,
}

impl<T: Tree> Received<T> {
    /// The subtree at `prefix`, with the callbacks under it; `None` if there is no such node.
    fn under(&self, prefix: &[Segment]) -> Option<Self> {
        let value = at(&self.value, prefix)?;
        let callbacks = self
            .callbacks
            .iter()
            .filter_map(|(path, id)| {
                crate::dnode::path::strip_prefix(path, prefix).map(|rest| (rest.to_vec(), *id))
            })
            .collect();
        Some(Received { value, callbacks })
    }

    /// [`Received::under`], `null` when there is no such node.
    fn under_or_null(&self, prefix: &[Segment]) -> Self {
        self.under(prefix).unwrap_or_else(|| Received {
            value: T::null(),
            callbacks: Vec::new(),
        })
    }

    /// Made an argument list: a list stays, `null` becomes `[]`, anything else `[value]` (Go
    /// sends `withArgs: null` for no arguments, Kite.js a bare value for one).
    pub fn into_list(self) -> Self {
        if self.value.list_len().is_some() {
            return self;
        }
        if self.value.is_null() {
            return Received {
                value: T::list(Vec::new()),
                callbacks: Vec::new(),
            };
        }
        Received {
            value: T::list(vec![self.value]),
            callbacks: self
                .callbacks
                .into_iter()
                .map(|(mut path, id)| {
                    path.insert(0, Segment::Index(0));
                    (path, id)
                })
                .collect(),
        }
    }

    /// Item `index` of a list, with its callbacks.
    pub fn item(&self, index: usize) -> Option<Received<T>> {
        self.value.list_len()?;
        self.under(&[Segment::Index(index)])
    }

    /// The length of a list (0 for anything else).
    pub fn len(&self) -> usize {
        self.value.list_len().unwrap_or(0)
    }

    /// Whether this is an empty list (or not a list).
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The value with each callback replaced by `make(id)`, the driver's callable stand-in for
    /// the peer's function. Paths that lead nowhere are skipped, as Go does.
    pub fn resolve(self, mut make: impl FnMut(u64) -> T) -> T {
        let mut value = self.value;
        for (path, id) in self.callbacks {
            replace_at(&mut value, &path, make(id));
        }
        value
    }
}

/// A request of the peer.
#[derive(Debug)]
pub struct TreeRequest<T> {
    /// The method called.
    pub method: String,
    /// Who calls (empty fields when the caller sent no identity).
    pub kite: Kite,
    /// The caller's credentials, if any.
    pub auth: Option<Auth>,
    /// The arguments (`withArgs`), always a list.
    pub args: Received<T>,
    /// The peer's response callback id; `None` when the caller wants no answer.
    pub response: Option<u64>,
    /// This request's slot among the connection's calls in flight
    /// ([`Limits::max_calls_in_flight`]): keep it until the answer is sent.
    pub in_flight: Option<InFlight>,
}

/// What an incoming message means.
#[derive(Debug)]
pub enum TreeIncoming<T, P, F> {
    /// The peer calls one of our methods.
    Request(Box<TreeRequest<T>>),
    /// The answer to one of our calls; its slot is freed.
    Response {
        /// The driver's handle given to [`TreeConnection::request`].
        pending: P,
        /// The result, or the error the peer sent (or `invalidResponse`).
        result: Result<Received<T>, KiteError>,
    },
    /// The peer invokes a function we sent.
    Callback {
        /// The function.
        function: F,
        /// Its arguments, a list.
        args: Received<T>,
    },
    /// A request we cannot run; if the peer gave a response callback, answer with `error`.
    InvalidRequest {
        /// The peer's response callback id, if any.
        response: Option<u64>,
        /// The error to send.
        error: KiteError,
    },
    /// The peer invoked an id we do not know, or a response callback already answered (or
    /// given up on).
    UnknownCallback(u64),
}

/// What every request of one client starts with: its identity and credentials, built once.
#[derive(Debug, Clone)]
pub struct Head<T> {
    kite: T,
    auth: T,
}

impl<T: Tree> Head<T> {
    /// The head of calls made by `kite` with `auth`.
    pub fn new(kite: &Kite, auth: Option<&Auth>) -> Self {
        Head {
            kite: kite.to_tree(),
            auth: auth.map_or_else(T::null, Auth::to_tree),
        }
    }
}

/// The protocol state of one connection whose messages are [`Tree`]s: the counterpart of
/// [`crate::Connection`] for drivers that parse and print JSON themselves.
///
/// `P` is the driver's handle for a call waiting for its response; `F` the functions it sends
/// (kept while the connection lives, handed back when the peer invokes them). The budgets of
/// [`Limits`] apply as in [`crate::Connection`].
#[derive(Debug)]
pub struct TreeConnection<P, F> {
    pub(crate) table: CallbackTable<P, F>,
    limits: Limits,
    in_flight: Arc<AtomicUsize>,
}

impl<P, F: Clone> Default for TreeConnection<P, F> {
    fn default() -> Self {
        TreeConnection::with_limits(Limits::default())
    }
}

const RESPONSE_CALLBACK: &str = "responseCallback";

impl<P, F: Clone> TreeConnection<P, F> {
    /// A fresh connection with the default [`Limits`].
    pub fn new() -> Self {
        Self::default()
    }

    /// A fresh connection with these budgets.
    pub fn with_limits(limits: Limits) -> Self {
        TreeConnection {
            table: CallbackTable::with_limit(limits.max_functions),
            limits,
            in_flight: Arc::default(),
        }
    }

    /// A call of `method` with `args` (a list), registering its response slot holding
    /// `pending`. Returns the response callback id (for [`TreeConnection::cancel`]) and the
    /// message: `{"method", "arguments": [{"kite", "authentication", "responseCallback",
    /// "withArgs"}], "callbacks"}`, Go's layout. Fails (`requestLimitError`) when its
    /// functions would pass [`Limits::max_functions`]; nothing is registered then.
    pub fn request<T: Tree>(
        &mut self,
        method: &str,
        head: &Head<T>,
        args: Outgoing<T, F>,
        pending: P,
    ) -> Result<(u64, T), KiteError> {
        let prefix = [Segment::Index(0), Segment::Key("withArgs".into())];
        // Go gives the response callback the first id, then the functions inside `withArgs`.
        self.table.check_room_for(args.functions.len())?;
        let id = self.table.insert_pending(pending);
        let functions = self.register(args.functions, &prefix)?;
        let mut callbacks = vec![(
            id,
            vec![Segment::Index(0), Segment::Key(RESPONSE_CALLBACK.into())],
        )];
        callbacks.extend(functions);
        let options = T::object(vec![
            ("kite", head.kite.clone()),
            ("authentication", head.auth.clone()),
            (RESPONSE_CALLBACK, T::string("[Function]")),
            ("withArgs", args.value),
        ]);
        let message = encode(T::string(method), T::list(vec![options]), &callbacks);
        Ok((id, message))
    }

    /// An invocation of the peer's callback `id` with `args` as the argument list (a value
    /// that is not a list is sent as the only argument). Fails (`requestLimitError`) when its
    /// functions would pass [`Limits::max_functions`].
    pub fn invoke<T: Tree>(&mut self, id: u64, args: Outgoing<T, F>) -> Result<T, KiteError> {
        let (value, prefix) = if args.value.list_len().is_some() {
            (args.value, Vec::new())
        } else if args.value.is_null() {
            (T::list(Vec::new()), Vec::new())
        } else {
            (T::list(vec![args.value]), vec![Segment::Index(0)])
        };
        let callbacks = self.register(args.functions, &prefix)?;
        Ok(encode(T::number(id as f64), value, &callbacks))
    }

    /// The answer to a request whose response callback is the peer's `id`:
    /// `{"method": id, "arguments": [{"error", "result"}], "callbacks"}`. A result whose
    /// functions would pass [`Limits::max_functions`] is answered with that
    /// `requestLimitError` instead.
    pub fn respond<T: Tree>(&mut self, id: u64, result: Result<Outgoing<T, F>, KiteError>) -> T {
        let prefix = [Segment::Index(0), Segment::Key("result".into())];
        let (error, value, callbacks) = match result {
            Ok(out) => match self.register(out.functions, &prefix) {
                Ok(callbacks) => (T::null(), out.value, callbacks),
                Err(e) => (e.to_tree(), T::null(), Vec::new()),
            },
            Err(e) => (e.to_tree(), T::null(), Vec::new()),
        };
        let arguments = T::list(vec![T::object(vec![("error", error), ("result", value)])]);
        encode(T::number(id as f64), arguments, &callbacks)
    }

    /// Gives each function an id, its path put under `prefix`.
    fn register(
        &mut self,
        functions: Vec<(Path, F)>,
        prefix: &[Segment],
    ) -> Result<Vec<(u64, Path)>, KiteError> {
        let (paths, functions): (Vec<Path>, Vec<F>) = functions.into_iter().unzip();
        let ids = self.table.insert_all(functions.into_iter())?;
        Ok(paths
            .into_iter()
            .zip(ids)
            .map(|(path, id)| {
                let mut full = prefix.to_vec();
                full.extend(path);
                (id, full)
            })
            .collect())
    }

    /// Reads one incoming message. Errors mean the message is unusable and there is no one to
    /// answer.
    pub fn receive<T: Tree>(
        &mut self,
        message: &T,
    ) -> Result<TreeIncoming<T, P, F>, ProtocolError> {
        let (method, arguments) = decode(message)?;
        match method {
            Method::Callback(id) => Ok(match self.table.take(id) {
                Some(Entry::Pending(pending)) => TreeIncoming::Response {
                    pending,
                    result: response(arguments.into_list()),
                },
                Some(Entry::Callback(function)) => TreeIncoming::Callback {
                    function,
                    args: arguments.into_list(),
                },
                None => TreeIncoming::UnknownCallback(id),
            }),
            Method::Name(method) => Ok(self.admit(request(method, &arguments))),
        }
    }

    /// Gives a request its slot among the calls in flight, or turns it into a
    /// `requestLimitError` answer when there is none.
    fn admit<T: Tree>(&mut self, incoming: TreeIncoming<T, P, F>) -> TreeIncoming<T, P, F> {
        let TreeIncoming::Request(mut req) = incoming else {
            return incoming;
        };
        match InFlight::take(&self.in_flight, self.limits.max_calls_in_flight) {
            Some(slot) => {
                req.in_flight = Some(slot);
                TreeIncoming::Request(req)
            }
            None => TreeIncoming::InvalidRequest {
                response: req.response,
                error: crate::connection::too_many_calls(self.limits.max_calls_in_flight),
            },
        }
    }

    /// Requests of the peer being served now (their [`InFlight`]s not yet dropped).
    pub fn calls_in_flight(&self) -> usize {
        self.in_flight.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Frees the response slot of a call whose caller gave up, returning its handle. A late
    /// answer then arrives as [`TreeIncoming::UnknownCallback`].
    pub fn cancel(&mut self, id: u64) -> Option<P> {
        self.table.cancel(id)
    }

    /// The connection is gone: returns every call still waiting and drops every function sent.
    pub fn drain_pending(&mut self) -> Vec<P> {
        self.table.drain_pending()
    }

    /// Calls waiting for a response.
    pub fn pending_len(&self) -> usize {
        self.table.pending_len()
    }

    /// Functions sent on this connection that the peer may still call.
    pub fn functions_len(&self) -> usize {
        self.table.functions_len()
    }
}

/// `{"method", "arguments", "callbacks"}`.
fn encode<T: Tree>(method: T, arguments: T, callbacks: &[(u64, Path)]) -> T {
    let ids: Vec<String> = callbacks.iter().map(|(id, _)| id.to_string()).collect();
    let entries = ids
        .iter()
        .zip(callbacks)
        .map(|(id, (_, path))| {
            let segments = path
                .iter()
                .map(|s| match s {
                    Segment::Index(i) => T::number(*i as f64),
                    Segment::Key(k) => T::string(k),
                })
                .collect();
            (id.as_str(), T::list(segments))
        })
        .collect();
    T::object(vec![
        ("method", method),
        ("arguments", arguments),
        ("callbacks", T::object(entries)),
    ])
}

/// The largest integer a JSON number carries exactly in every implementation (2^53).
const MAX_EXACT: f64 = 9_007_199_254_740_992.0;

/// A non-negative integer below 2^53.
fn exact_u64(n: f64) -> Option<u64> {
    (n >= 0.0 && n.fract() == 0.0 && n < MAX_EXACT).then_some(n as u64)
}

/// A message's method, and its arguments with the callbacks in them.
type Envelope<T> = (Method, Received<T>);

/// Checks the envelope of a dnode message: method, arguments (`null` when missing),
/// callbacks (in the document's key order, which for a JavaScript object is ascending id), with
/// [`crate::dnode::Message::decode`]'s rules.
fn decode<T: Tree>(message: &T) -> Result<Envelope<T>, ProtocolError> {
    if !message.is_object() {
        return Err(ProtocolError::InvalidMessage(
            "a dnode message is a JSON object".into(),
        ));
    }
    let method = message.get("method").ok_or(ProtocolError::InvalidMethod)?;
    let method = match (method.as_str(), method.as_f64()) {
        (Some(name), _) => Method::Name(name),
        (None, Some(n)) => Method::Callback(exact_u64(n).ok_or(ProtocolError::InvalidMethod)?),
        _ => return Err(ProtocolError::InvalidMethod),
    };
    let mut callbacks = Vec::new();
    if let Some(map) = message.get("callbacks").filter(|c| !c.is_null()) {
        let keys = map.keys().ok_or_else(|| {
            ProtocolError::InvalidMessage("callbacks is not an object of paths".into())
        })?;
        for key in keys {
            let id: u64 = key.parse().map_err(|_| {
                ProtocolError::InvalidCallbacks(format!("callback id \"{key}\" is not an integer"))
            })?;
            let path = map.get(&key).and_then(|p| path(&p)).ok_or_else(|| {
                ProtocolError::InvalidMessage(format!(
                    "the path of callback {id} is not a list of keys and indices"
                ))
            })?;
            callbacks.push((path, id));
        }
    }
    let value = message.get("arguments").unwrap_or_else(T::null);
    Ok((method, Received { value, callbacks }))
}

/// A callback path: strings (keys, or indices as Kite.js sends them) and non-negative integers.
fn path<T: Tree>(list: &T) -> Option<Path> {
    (0..list.list_len()?)
        .map(|i| {
            let segment = list.item(i)?;
            match (segment.as_str(), segment.as_f64()) {
                (Some(key), _) => Some(Segment::Key(key)),
                (None, Some(n)) => exact_u64(n).map(|i| Segment::Index(i as usize)),
                _ => None,
            }
        })
        .collect()
}

/// A request: exactly one options object, its identity, credentials and `withArgs`.
fn request<T: Tree, P, F>(method: String, arguments: &Received<T>) -> TreeIncoming<T, P, F> {
    let response_path = [Segment::Index(0), Segment::Key(RESPONSE_CALLBACK.into())];
    // Several at that path (a confused peer): the lowest id, as the text connection picks.
    let response = arguments
        .callbacks
        .iter()
        .filter(|(p, _)| {
            p.len() == 2 && crate::dnode::path::strip_prefix(p, &response_path).is_some()
        })
        .map(|(_, id)| *id)
        .min();
    let options = match (arguments.value.list_len(), arguments.value.item(0)) {
        (Some(1), Some(options)) if options.is_object() => options,
        (len, _) => {
            let what = match len {
                Some(1) => "an argument that is not an object".to_owned(),
                Some(n) => format!("{n} arguments"),
                None => "arguments that are not a list".to_owned(),
            };
            return TreeIncoming::InvalidRequest {
                response,
                error: KiteError::argument(format!(
                    "invalid request to \"{method}\": a kite request has exactly one argument object, got {what}"
                )),
            };
        }
    };
    let kite = options
        .get("kite")
        .map(|k| k.identity())
        .unwrap_or_default();
    let auth = match options.get("authentication").filter(|a| !a.is_null()) {
        None => None,
        Some(a) => match Auth::from_tree(&a) {
            Ok(auth) => Some(auth),
            Err(why) => {
                return TreeIncoming::InvalidRequest {
                    response,
                    error: KiteError::new(
                        ErrorKind::Authentication,
                        format!("malformed authentication: {why}"),
                    ),
                };
            }
        },
    };
    let prefix = [Segment::Index(0), Segment::Key("withArgs".into())];
    TreeIncoming::Request(Box::new(TreeRequest {
        method,
        kite,
        auth,
        args: arguments.under_or_null(&prefix).into_list(),
        response,
        in_flight: None,
    }))
}

/// The outcome carried by an invocation of a response callback, as Go's client reads it:
/// exactly one object with `error` and/or `result`; Kite.js's node-style `[error, result]` is
/// accepted too. Anything else is `invalidResponse`.
fn response<T: Tree>(args: Received<T>) -> Result<Received<T>, KiteError> {
    let arguments = &args.value;
    let invalid = |msg: String| KiteError::new(ErrorKind::InvalidResponse, msg);
    let shape = || invalid("Server has sent invalid response arguments".into());
    let len = arguments.list_len().ok_or_else(shape)?;
    let (error, prefix) = match len {
        1 => {
            let only = arguments.item(0).filter(T::is_object).ok_or_else(shape)?;
            let (error, result) = (only.get("error"), only.get("result"));
            if error.is_none() && result.is_none() {
                return Err(shape());
            }
            (
                error,
                vec![Segment::Index(0), Segment::Key("result".into())],
            )
        }
        2 => (arguments.item(0), vec![Segment::Index(1)]),
        n => return Err(invalid(format!("Invalid response arguments length: {n}"))),
    };
    if let Some(error) = error.filter(|e| !e.is_null()) {
        return Err(match error.as_str() {
            Some(message) => KiteError::generic(message),
            None => KiteError::from_tree(&error)
                .map_err(|why| invalid(format!("malformed error in response: {why}")))?,
        });
    }
    Ok(args.under_or_null(&prefix))
}

#[cfg(test)]
mod tests;
