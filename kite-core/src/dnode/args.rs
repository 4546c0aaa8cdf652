//! [`Args`]: received arguments (or a result) with their callbacks, decoded with serde.

use std::fmt;
use std::marker::PhantomData;
use std::sync::{Arc, OnceLock};

use serde::de::{self, DeserializeOwned, DeserializeSeed, IgnoredAny, SeqAccess, Visitor};
use serde::{Deserialize, Serialize, Serializer};
use serde_json::Value;
use serde_json::value::RawValue;

use super::callback::{
    Callback, CallbackSink, Scrubbed, marker, parse_marker, replace_markers, with_decoding,
};
use super::path::{self, Path, Segment};
use crate::error::KiteError;

/// Arguments received from a peer (or a result), with the functions inside them.
///
/// Decode into any serde type with [`Args::decode`]; a [`Callback`] field or element receives the
/// peer's function at that place. Decoding never panics: a wrong shape is an `argumentError`.
///
/// ```
/// use kite_core::dnode::Args;
/// let args = Args::from_value(serde_json::json!([4]));
/// let (n,): (f64,) = args.decode().unwrap();
/// assert_eq!(n, 4.0);
/// assert_eq!(args.one::<f64>().unwrap(), 4.0);
/// assert_eq!(args.decode::<(String,)>().unwrap_err().kind.as_str(), "argumentError");
/// ```
#[derive(Debug, Clone, Default)]
pub struct Args {
    repr: Repr,
    callbacks: Vec<Callback>,
}

/// How the JSON is held.
#[derive(Debug, Clone)]
enum Repr {
    /// A parsed value; functions inside it are marker strings indexing `callbacks`.
    Value(Value),
    /// The JSON text as received, holding no functions: decoding reads the text directly, and
    /// the parsed [`Value`] is only built if someone asks for it.
    Raw {
        text: Box<RawValue>,
        parsed: OnceLock<Value>,
    },
}

impl Default for Repr {
    fn default() -> Self {
        Repr::Value(Value::Null)
    }
}

impl Args {
    /// Arguments without callbacks.
    pub fn from_value(value: Value) -> Self {
        Args {
            repr: Repr::Value(value),
            callbacks: Vec::new(),
        }
    }

    /// Arguments from JSON text received from a peer, holding no functions.
    pub fn from_raw(text: Box<RawValue>) -> Self {
        Args {
            repr: Repr::Raw {
                text,
                parsed: OnceLock::new(),
            },
            callbacks: Vec::new(),
        }
    }

    pub(crate) fn from_parts(value: Value, callbacks: Vec<Callback>) -> Self {
        Args {
            repr: Repr::Value(value),
            callbacks,
        }
    }

    /// Takes the subtree at `prefix` of a received message's `arguments`, turning the callbacks
    /// under it into remote functions reached through `sink`. Callbacks elsewhere are ignored;
    /// paths that lead nowhere are ignored (as Go does).
    pub fn from_message(
        arguments: &mut Value,
        callbacks: &[(u64, Path)],
        prefix: &[Segment],
        sink: &Arc<dyn CallbackSink>,
    ) -> Self {
        let Some(root) = path::get_mut(arguments, prefix) else {
            return Args::default();
        };
        let mut value = root.take();
        let mut list = Vec::new();
        for (id, full) in callbacks {
            let Some(rest) = path::strip_prefix(full, prefix) else {
                continue;
            };
            if let Some(slot) = path::get_mut(&mut value, rest) {
                *slot = Value::String(marker(list.len()));
                list.push(Callback::remote(*id, sink.clone()));
            }
        }
        Args::from_parts(value, list)
    }

    /// Makes these arguments an argument list (`null` → `[]`, a scalar `x` → `[x]`), keeping
    /// callbacks. Used for `withArgs`, which Go sends as `null` and Kite.js as a bare value.
    pub fn into_list(self) -> Self {
        let Args { repr, callbacks } = self;
        let repr = match repr {
            Repr::Value(v) => Repr::Value(super::callback::normalize_args(v)),
            Repr::Raw { text, parsed } => {
                let json = text.get();
                let listed = match json.as_bytes().first() {
                    Some(b'[') => None,
                    _ if json == "null" => Some("[]".to_owned()),
                    _ => Some(format!("[{json}]")),
                };
                match listed.map(RawValue::from_string) {
                    None => Repr::Raw { text, parsed },
                    Some(Ok(text)) => Repr::Raw {
                        text,
                        parsed: OnceLock::new(),
                    },
                    // Cannot happen: a valid JSON value inside brackets is a valid list.
                    Some(Err(_)) => Repr::Value(super::callback::normalize_args(parse(&text))),
                }
            }
        };
        Args { repr, callbacks }
    }

    /// Decodes the whole value (for a list of arguments, a tuple or `Vec` fits).
    pub fn decode<T: DeserializeOwned>(&self) -> Result<T, KiteError> {
        if let Repr::Raw { text, .. } = &self.repr
            && let Ok(v) = serde_json::from_str(text.get())
        {
            return Ok(v);
        }
        // The parsed value gives the same answer; errors are worded from it.
        with_decoding(&self.callbacks, || T::deserialize(self.value()))
            .map_err(|e| KiteError::argument(format!("{e}. Data: {}", self.value_for_error())))
    }

    /// Decodes the only argument; fails unless there is exactly one (Go's `One()`).
    pub fn one<T: DeserializeOwned>(&self) -> Result<T, KiteError> {
        self.nth_checked(0, Some(1))
    }

    /// Decodes argument `index`; fails if it is missing.
    pub fn nth<T: DeserializeOwned>(&self, index: usize) -> Result<T, KiteError> {
        self.nth_checked(index, None)
    }

    fn nth_checked<T: DeserializeOwned>(
        &self,
        index: usize,
        exact_len: Option<usize>,
    ) -> Result<T, KiteError> {
        if let Repr::Raw { text, .. } = &self.repr {
            let mut de = serde_json::Deserializer::from_str(text.get());
            let seed = Nth::<T> {
                index,
                exact_len,
                item: PhantomData,
            };
            if let Ok(Some(v)) = seed.deserialize(&mut de) {
                return Ok(v);
            }
        }
        let Value::Array(items) = self.value() else {
            return Err(KiteError::argument(format!(
                "arguments are not a list. Data: {}",
                self.value_for_error()
            )));
        };
        if exact_len.is_some_and(|n| items.len() != n) || index >= items.len() {
            return Err(KiteError::argument("Invalid array length"));
        }
        with_decoding(&self.callbacks, || T::deserialize(&items[index])).map_err(|e| {
            KiteError::argument(format!("{e}. Data: {}", truncate(items[index].to_string())))
        })
    }

    /// The number of arguments (0 unless this is a list).
    pub fn len(&self) -> usize {
        self.value().as_array().map_or(0, Vec::len)
    }

    /// Whether there are no arguments.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The raw JSON. Functions show as internal marker strings; decode into [`Callback`] to use
    /// them.
    pub fn value(&self) -> &Value {
        match &self.repr {
            Repr::Value(v) => v,
            Repr::Raw { text, parsed } => parsed.get_or_init(|| parse(text)),
        }
    }

    fn into_value(self) -> (Value, Vec<Callback>) {
        let value = match self.repr {
            Repr::Value(v) => v,
            Repr::Raw { text, parsed } => parsed.into_inner().unwrap_or_else(|| parse(&text)),
        };
        (value, self.callbacks)
    }

    /// The functions inside these arguments.
    pub fn callbacks(&self) -> &[Callback] {
        &self.callbacks
    }

    /// The JSON with functions shown as `"[Function]"` and their paths, ready to send on.
    pub fn into_scrubbed(self) -> Scrubbed {
        let (mut value, callbacks) = self.into_value();
        let mut out = Vec::new();
        if !callbacks.is_empty() {
            replace_markers(&mut value, &mut Vec::new(), &callbacks, &mut out);
        }
        Scrubbed {
            value,
            callbacks: out,
        }
    }

    /// Argument `index` as its own `Args`, keeping the functions inside it.
    pub fn get(&self, index: usize) -> Option<Args> {
        let item = self.value().as_array()?.get(index)?;
        Some(Args::from_parts(item.clone(), self.callbacks.clone()))
    }

    fn value_for_error(&self) -> String {
        truncate(self.value().to_string())
    }
}

/// Serializes the value with its functions as functions: returning or sending received `Args`
/// (or part of them, see [`Args::get`]) forwards the peer's callbacks.
impl Serialize for Args {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        WithCallbacks(self.value(), &self.callbacks).serialize(s)
    }
}

/// Parses received JSON text (valid by construction; `null` if a number is out of range).
fn parse(text: &RawValue) -> Value {
    serde_json::from_str(text.get()).unwrap_or(Value::Null)
}

/// Picks element `index` of a JSON list while checking its length, skipping the other elements
/// without building them. `Ok(None)`: not that long (or not `exact_len` long).
struct Nth<T> {
    index: usize,
    exact_len: Option<usize>,
    item: PhantomData<T>,
}

impl<'de, T: Deserialize<'de>> DeserializeSeed<'de> for Nth<T> {
    type Value = Option<T>;

    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<Option<T>, D::Error> {
        d.deserialize_seq(self)
    }
}

impl<'de, T: Deserialize<'de>> Visitor<'de> for Nth<T> {
    type Value = Option<T>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a list of arguments")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Option<T>, A::Error> {
        let mut found = None;
        let mut len = 0;
        loop {
            let more = if len == self.index {
                seq.next_element::<T>()?.map(|v| found = Some(v)).is_some()
            } else {
                seq.next_element::<IgnoredAny>()?.is_some()
            };
            if !more {
                break;
            }
            len += 1;
        }
        Ok(found.filter(|_| self.exact_len.is_none_or(|n| n == len)))
    }
}

struct WithCallbacks<'a>(&'a Value, &'a [Callback]);

impl Serialize for WithCallbacks<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::{SerializeMap, SerializeSeq};
        match self.0 {
            Value::String(text) => match parse_marker(text).and_then(|i| self.1.get(i)) {
                Some(cb) => cb.serialize(s),
                None => s.serialize_str(text),
            },
            Value::Array(items) => {
                let mut seq = s.serialize_seq(Some(items.len()))?;
                for item in items {
                    seq.serialize_element(&WithCallbacks(item, self.1))?;
                }
                seq.end()
            }
            Value::Object(map) => {
                let mut m = s.serialize_map(Some(map.len()))?;
                for (k, v) in map {
                    m.serialize_entry(k, &WithCallbacks(v, self.1))?;
                }
                m.end()
            }
            other => other.serialize(s),
        }
    }
}

fn truncate(mut s: String) -> String {
    const MAX: usize = 256;
    if s.len() > MAX {
        let mut end = MAX;
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        s.truncate(end);
        s.push('…');
    }
    s
}
