//! Functions that travel inside arguments: [`Callback`], and how they are scrubbed into paths
//! when sent and turned back into callable values when received.
//!
//! Serializing a [`Callback`] inside [`scrub`] records it and leaves a marker that the scrub pass
//! replaces with `"[Function]"`, remembering the path. Receiving does the reverse: each callback
//! path of an incoming message is replaced by a marker, and deserializing a [`Callback`] from
//! [`Args`](super::Args) turns the marker into a callable remote function. So callbacks can sit
//! anywhere inside ordinary serde types, in both directions.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::fmt;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use serde::de::{self, Deserialize, Deserializer};
use serde::{Serialize, Serializer};
use serde_json::Value;

use super::args::Args;
use super::path::{Path, Segment};
use crate::error::KiteError;

/// Where calls to a received (remote) function go: the connection it arrived on.
///
/// A driver (native or wasm) implements this for its connection handle. `invoke` must not block:
/// it encodes and queues `{"method": id, "arguments": ..., "callbacks": ...}`.
pub trait CallbackSink: Send + Sync {
    /// Sends an invocation of the peer's callback `id` with already scrubbed arguments.
    fn invoke(&self, id: u64, args: Scrubbed) -> Result<(), KiteError>;
}

type LocalFn = dyn Fn(Args) + Send + Sync;

enum Inner {
    Local(Box<LocalFn>),
    Remote {
        id: u64,
        sink: Arc<dyn CallbackSink>,
    },
}

/// A function that can be sent to a peer or has been received from one.
///
/// * [`Callback::new`] wraps a Rust closure. Put it in the arguments of a call (or in a result)
///   and the peer can invoke it, any number of times, until the connection ends.
/// * A callback received from a peer (deserialized from [`Args`]) calls the peer's function.
///   Sending a received callback on to another peer forwards calls through this kite.
///
/// Cloning is cheap; clones are the same function.
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
    /// Wraps a closure that the peer may invoke with any arguments.
    pub fn new(f: impl Fn(Args) + Send + Sync + 'static) -> Self {
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

    /// Calls the function with `args`, serialized as the argument list (a tuple or array is
    /// spread into arguments; `()` is none; any other value is one argument). Callbacks inside
    /// `args` are passed along. For a remote function this queues a message and returns at once;
    /// it fails if the connection has ended.
    pub fn call(&self, args: impl Serialize) -> Result<(), KiteError> {
        self.call_scrubbed(scrub_args(&args)?)
    }

    /// Calls the function with arguments that are already scrubbed.
    pub fn call_scrubbed(&self, args: Scrubbed) -> Result<(), KiteError> {
        match &*self.0 {
            Inner::Local(f) => {
                f(args.into_args());
                Ok(())
            }
            Inner::Remote { id, sink } => sink.invoke(*id, args),
        }
    }

    /// Calls the function with received arguments (used when a peer invokes it).
    pub fn call_with(&self, args: Args) -> Result<(), KiteError> {
        match &*self.0 {
            Inner::Local(f) => {
                f(args);
                Ok(())
            }
            Inner::Remote { id, sink } => sink.invoke(*id, args.into_scrubbed()),
        }
    }

    /// Whether two handles are the same function.
    pub fn ptr_eq(&self, other: &Callback) -> bool {
        Arc::ptr_eq(&self.0, &other.0)
    }

    /// An identity for deduplication (the address of the shared function).
    pub(crate) fn key(&self) -> usize {
        Arc::as_ptr(&self.0) as *const () as usize
    }
}

/// Marker prefix for a function inside a value being scrubbed or decoded. It starts with NUL so
/// that no ordinary argument string is mistaken for it by accident.
pub(crate) const MARKER: &str = "\u{0}kite-callback:";

/// Marker prefix for a function serialized outside a scrub (e.g. inside `serde_json::json!`):
/// it waits in [`PARKED`] until a scrub claims it.
const PARKED_MARKER: &str = "\u{0}kite-callback-parked:";

/// Functions serialized outside any scrub, by marker number, until a scrub claims them.
static PARKED: Mutex<BTreeMap<u64, Callback>> = Mutex::new(BTreeMap::new());
static PARKED_NEXT: AtomicU64 = AtomicU64::new(0);
static PARKED_LEN: AtomicUsize = AtomicUsize::new(0);

fn park(cb: &Callback) -> String {
    let n = PARKED_NEXT.fetch_add(1, Ordering::Relaxed);
    let mut parked = PARKED.lock().unwrap_or_else(|e| e.into_inner());
    parked.insert(n, cb.clone());
    PARKED_LEN.store(parked.len(), Ordering::Relaxed);
    format!("{PARKED_MARKER}{n}")
}

fn claim(s: &str) -> Option<Callback> {
    let n: u64 = s.strip_prefix(PARKED_MARKER)?.parse().ok()?;
    let mut parked = PARKED.lock().unwrap_or_else(|e| e.into_inner());
    let cb = parked.remove(&n);
    PARKED_LEN.store(parked.len(), Ordering::Relaxed);
    cb
}

/// Functions serialized outside a scrub that no scrub has claimed yet.
pub fn parked_len() -> usize {
    PARKED_LEN.load(Ordering::Relaxed)
}

pub(crate) fn marker(index: usize) -> String {
    format!("{MARKER}{index}")
}

pub(crate) fn parse_marker(s: &str) -> Option<usize> {
    s.strip_prefix(MARKER)?.parse().ok()
}

thread_local! {
    /// Callbacks met while serializing inside [`scrub`].
    static COLLECTOR: RefCell<Option<Vec<Callback>>> = const { RefCell::new(None) };
    /// Callbacks that markers refer to while decoding [`Args`].
    static DECODING: RefCell<Option<Vec<Callback>>> = const { RefCell::new(None) };
}

impl Serialize for Callback {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let index = COLLECTOR.with(|c| {
            c.borrow_mut().as_mut().map(|v| {
                v.push(self.clone());
                v.len() - 1
            })
        });
        match index {
            Some(i) => s.serialize_str(&marker(i)),
            // Outside a scrub (`json!({"cb": cb})` builds a Value first): park the function so
            // that scrubbing that Value later still finds it.
            None => s.serialize_str(&park(self)),
        }
    }
}

impl<'de> Deserialize<'de> for Callback {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)
            .map_err(|_| de::Error::custom("expected a function"))?;
        let found = parse_marker(&s).and_then(|i| {
            DECODING.with(|ctx| ctx.borrow().as_ref().and_then(|v| v.get(i).cloned()))
        });
        found.ok_or_else(|| de::Error::custom("expected a function"))
    }
}

/// Runs `f` with `callbacks` as the targets of markers met while deserializing.
pub(crate) fn with_decoding<R>(callbacks: &[Callback], f: impl FnOnce() -> R) -> R {
    if callbacks.is_empty() {
        return f();
    }
    struct Restore(Option<Vec<Callback>>);
    impl Drop for Restore {
        fn drop(&mut self) {
            let prev = self.0.take();
            DECODING.with(|ctx| *ctx.borrow_mut() = prev);
        }
    }
    let prev = DECODING.with(|ctx| ctx.borrow_mut().replace(callbacks.to_vec()));
    let _restore = Restore(prev);
    f()
}

/// A value ready to send: JSON with `"[Function]"` where callbacks were, and their paths.
#[derive(Debug, Clone, Default)]
pub struct Scrubbed {
    /// The JSON value, with `"[Function]"` in place of each callback.
    pub value: Value,
    /// Each callback with its path inside `value`.
    pub callbacks: Vec<(Path, Callback)>,
}

impl Scrubbed {
    /// A value with no callbacks.
    pub fn plain(value: Value) -> Self {
        Scrubbed {
            value,
            callbacks: Vec::new(),
        }
    }

    /// Turns this into received-style [`Args`] (for calling a local function directly).
    pub fn into_args(self) -> Args {
        let Scrubbed {
            mut value,
            callbacks,
        } = self;
        let mut list = Vec::with_capacity(callbacks.len());
        for (path, cb) in callbacks {
            if let Some(slot) = super::path::get_mut(&mut value, &path) {
                *slot = Value::String(marker(list.len()));
                list.push(cb);
            }
        }
        Args::from_parts(value, list)
    }
}

/// Serializes `value`, collecting every [`Callback`] inside it with its path.
pub fn scrub(value: &impl Serialize) -> Result<Scrubbed, KiteError> {
    struct Restore(Option<Vec<Callback>>);
    impl Drop for Restore {
        fn drop(&mut self) {
            let prev = self.0.take();
            COLLECTOR.with(|c| *c.borrow_mut() = prev);
        }
    }
    let prev = COLLECTOR.with(|c| c.borrow_mut().replace(Vec::new()));
    let restore = Restore(prev);
    let result = serde_json::to_value(value);
    let found = COLLECTOR
        .with(|c| c.borrow_mut().take())
        .unwrap_or_default();
    drop(restore);
    let mut value =
        result.map_err(|e| KiteError::argument(format!("cannot serialize arguments: {e}")))?;
    let mut callbacks = Vec::with_capacity(found.len());
    if !found.is_empty() || parked_len() > 0 {
        let mut path = Vec::new();
        replace_markers(&mut value, &mut path, &found, &mut callbacks);
    }
    Ok(Scrubbed { value, callbacks })
}

/// Like [`scrub`], and makes the value an argument list (see [`normalize_args`]).
pub fn scrub_args(args: &impl Serialize) -> Result<Scrubbed, KiteError> {
    let mut s = scrub(args)?;
    if !s.value.is_array() {
        s.value = normalize_args(s.value);
        for (path, _) in &mut s.callbacks {
            path.insert(0, Segment::Index(0));
        }
    }
    Ok(s)
}

/// Makes a value an argument list: arrays stay, `null` becomes `[]`, anything else `[value]`.
/// (Go sends `withArgs: null` for no arguments; Kite.js sends a bare value for one.)
pub fn normalize_args(value: Value) -> Value {
    match value {
        Value::Array(_) => value,
        Value::Null => Value::Array(Vec::new()),
        other => Value::Array(vec![other]),
    }
}

/// Replaces each marker inside `node` by `"[Function]"`, collecting the function and its path:
/// local markers index `found`, parked markers are claimed.
pub(crate) fn replace_markers(
    node: &mut Value,
    path: &mut Path,
    found: &[Callback],
    out: &mut Vec<(Path, Callback)>,
) {
    match node {
        Value::String(s) => {
            let cb = match parse_marker(s).and_then(|i| found.get(i)) {
                Some(cb) => Some(cb.clone()),
                None if s.starts_with('\u{0}') => claim(s),
                None => None,
            };
            if let Some(cb) = cb {
                out.push((path.clone(), cb));
                *s = "[Function]".to_owned();
            }
        }
        Value::Array(items) => {
            for (i, item) in items.iter_mut().enumerate() {
                path.push(Segment::Index(i));
                replace_markers(item, path, found, out);
                path.pop();
            }
        }
        Value::Object(map) => {
            for (k, v) in map.iter_mut() {
                path.push(Segment::Key(k.clone()));
                replace_markers(v, path, found, out);
                path.pop();
            }
        }
        _ => {}
    }
}
