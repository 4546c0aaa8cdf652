//! [`Value`]: JSON that may hold functions — what a call sends, what a handler answers, what a
//! peer's message carries — and [`value!`](crate::value!) to write one like `json!`.
//!
//! A `Value` is a JSON document plus the functions inside it, each by its path. The JSON keeps
//! `"[Function]"` (or whatever the peer put) where a function is, exactly as it goes on the
//! wire; the functions never become JSON. A connection gives each of them an id when it sends
//! the value, and turns the peer's `callbacks` into [`Callback`]s when it receives one. Nothing
//! a peer sends can become, select or name a function other than through its own message's
//! `callbacks`, and no string is ever read as anything but a string.
//!
//! Received values keep the peer's JSON text as it came and decode it only when asked, so
//! values of any depth and size within the message limit pass through (forwarded, echoed)
//! without being parsed, and nothing is ever lost to a parser's nesting limit.

use serde::Serialize;
use serde_json::value::RawValue;

use super::callback::Callback;
use super::path::{Path, Segment};
use crate::error::KiteError;

/// A JSON value and the functions inside it.
///
/// Build one with [`crate::value!`] (like `serde_json::json!`, and any expression inside may
/// be a [`Callback`]), from any serde value ([`Value::from_serialize`], or the [`IntoValue`]
/// conversions every call and handler takes), or from parts ([`Value::list`],
/// [`Value::object`], [`Value::function`]). Received arguments and results are `Value`s too
/// ([`Args`](super::Args) is the same type): decode them with [`Value::decode`],
/// [`Value::nth`], [`Value::one`], and take their functions with [`Value::callback`].
///
/// ```
/// use kite_core::{value, Callback, Value};
/// let done = Callback::new(|_| {});
/// let v: Value = value!({"n": 4, "tags": ["a", "b"], "done": done});
/// assert_eq!(v.to_string(), r#"{"n":4,"tags":["a","b"],"done":"[Function]"}"#);
/// assert_eq!(v.functions().len(), 1);
/// ```
#[derive(Clone, Default)]
pub struct Value {
    pub(crate) json: Json,
    /// Each function with its path from the root of `json`.
    pub(crate) functions: Vec<(Path, Callback)>,
}

/// How a [`Value`]'s JSON is held.
#[derive(Clone)]
pub(crate) enum Json {
    /// A tree (data given by the program).
    Tree(serde_json::Value),
    /// JSON text as a peer sent it, kept verbatim.
    Raw(Box<RawValue>),
    /// A list built from parts.
    List(Vec<Json>),
    /// An object built from parts, in this order.
    Object(Vec<(String, Json)>),
}

impl Default for Json {
    fn default() -> Self {
        Json::Tree(serde_json::Value::Null)
    }
}

/// What a slot holding a function says on the wire.
pub(crate) const FUNCTION: &str = "[Function]";

impl Value {
    /// `null`.
    pub fn null() -> Value {
        Value::default()
    }

    /// Plain JSON, without functions.
    pub fn from_json(json: serde_json::Value) -> Value {
        Value {
            json: Json::Tree(json),
            functions: Vec::new(),
        }
    }

    /// Any serde value, without functions. Fails (`argumentError`) only where serde_json does,
    /// e.g. for a map whose keys are not strings. Values nested deeper than serde allows on
    /// one stack are serialized on a grown stack.
    pub fn from_serialize<T: Serialize + ?Sized>(value: &T) -> Result<Value, KiteError> {
        crate::dnode::depth::to_tree(value)
            .map(Value::from_json)
            .map_err(|e| KiteError::argument(format!("cannot serialize arguments: {e}")))
    }

    /// JSON with functions at `functions`' paths (whatever the JSON holds there, normally
    /// `"[Function]"`, is what goes on the wire at that place).
    pub fn from_parts(json: serde_json::Value, functions: Vec<(Path, Callback)>) -> Value {
        Value {
            json: Json::Tree(json),
            functions,
        }
    }

    /// A peer's JSON text with the peer's functions in it (paths from its root).
    pub(crate) fn received(text: Box<RawValue>, functions: Vec<(Path, Callback)>) -> Value {
        Value {
            json: Json::Raw(text),
            functions,
        }
    }

    /// A function.
    pub fn function(callback: Callback) -> Value {
        Value {
            json: Json::Tree(serde_json::Value::String(FUNCTION.to_owned())),
            functions: vec![(Vec::new(), callback)],
        }
    }

    /// A list of `items`, with their functions.
    pub fn list(items: impl IntoIterator<Item = Value>) -> Value {
        let mut functions = Vec::new();
        let json = items
            .into_iter()
            .enumerate()
            .map(|(i, item)| {
                functions.extend(prefixed(item.functions, Segment::Index(i)));
                item.json
            })
            .collect();
        Value {
            json: Json::List(json),
            functions,
        }
    }

    /// An object with `entries` (in this order; a repeated key keeps its last value when
    /// decoded, as in any JSON parser), with their functions.
    pub fn object<K: Into<String>>(entries: impl IntoIterator<Item = (K, Value)>) -> Value {
        let mut functions = Vec::new();
        let json = entries
            .into_iter()
            .map(|(key, item)| {
                let key = key.into();
                functions.extend(prefixed(item.functions, Segment::Key(key.clone())));
                (key, item.json)
            })
            .collect();
        Value {
            json: Json::Object(json),
            functions,
        }
    }

    /// The functions inside, each with its path from the root.
    pub fn functions(&self) -> &[(Path, Callback)] {
        &self.functions
    }

    /// Whether this is `null`.
    pub fn is_null(&self) -> bool {
        match &self.json {
            Json::Tree(v) => v.is_null(),
            Json::Raw(text) => text.get() == "null",
            Json::List(_) | Json::Object(_) => false,
        }
    }

    /// Whether this is a list.
    pub fn is_list(&self) -> bool {
        match &self.json {
            Json::Tree(v) => v.is_array(),
            Json::Raw(text) => text.get().starts_with('['),
            Json::List(_) => true,
            Json::Object(_) => false,
        }
    }

    /// Made an argument list: a list stays, `null` becomes `[]`, anything else `[value]` (Go
    /// sends `withArgs: null` for no arguments; Kite.js sends a bare value for one).
    pub fn into_list(self) -> Value {
        if self.is_list() {
            return self;
        }
        if self.is_null() {
            return Value {
                json: Json::List(Vec::new()),
                functions: Vec::new(),
            };
        }
        Value {
            json: Json::List(vec![self.json]),
            functions: prefixed(self.functions, Segment::Index(0)),
        }
    }

    /// The JSON text, functions shown as their slots (`"[Function]"`), Go's escaping for data
    /// given by the program, a peer's text as it came.
    pub fn to_json_string(&self) -> String {
        let mut out = Vec::with_capacity(64);
        self.write(&mut out);
        String::from_utf8(out).expect("JSON output is UTF-8")
    }

    /// Appends the JSON text to `out` (see [`Value::to_json_string`]).
    pub fn write(&self, out: &mut Vec<u8>) {
        write_json(out, &self.json);
    }

    /// The parts, for a connection sending the value.
    pub(crate) fn into_parts(self) -> (Json, Vec<(Path, Callback)>) {
        (self.json, self.functions)
    }
}

fn prefixed(functions: Vec<(Path, Callback)>, head: Segment) -> Vec<(Path, Callback)> {
    functions
        .into_iter()
        .map(move |(mut path, cb)| {
            path.insert(0, head.clone());
            (path, cb)
        })
        .collect()
}

impl std::fmt::Display for Value {
    /// The JSON text (see [`Value::to_json_string`]).
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.to_json_string())
    }
}

impl std::fmt::Debug for Value {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut text = self.to_json_string();
        if text.len() > 512 {
            let mut end = 512;
            while !text.is_char_boundary(end) {
                end -= 1;
            }
            text.truncate(end);
            text.push('…');
        }
        let paths: Vec<String> = self
            .functions
            .iter()
            .map(|(p, _)| {
                let segs: Vec<String> = p.iter().map(|s| s.to_string()).collect();
                format!("/{}", segs.join("/"))
            })
            .collect();
        f.debug_struct("Value")
            .field("json", &text)
            .field("functions", &paths)
            .finish()
    }
}

/// Writes `json` without recursion, so that no value, however deep, exhausts the stack.
pub(crate) fn write_json(out: &mut Vec<u8>, json: &Json) {
    enum Step<'a> {
        Node(&'a Json),
        Items(std::slice::Iter<'a, Json>, bool),
        Entries(std::slice::Iter<'a, (String, Json)>, bool),
    }
    let mut stack = vec![Step::Node(json)];
    while let Some(step) = stack.pop() {
        match step {
            Step::Node(Json::Tree(v)) => crate::json::write_value(out, v),
            Step::Node(Json::Raw(text)) => out.extend_from_slice(text.get().as_bytes()),
            Step::Node(Json::List(items)) => {
                out.push(b'[');
                stack.push(Step::Items(items.iter(), true));
            }
            Step::Node(Json::Object(entries)) => {
                out.push(b'{');
                stack.push(Step::Entries(entries.iter(), true));
            }
            Step::Items(mut rest, first) => match rest.next() {
                Some(item) => {
                    if !first {
                        out.push(b',');
                    }
                    stack.push(Step::Items(rest, false));
                    stack.push(Step::Node(item));
                }
                None => out.push(b']'),
            },
            Step::Entries(mut rest, first) => match rest.next() {
                Some((key, item)) => {
                    if !first {
                        out.push(b',');
                    }
                    crate::json::write_str(out, key);
                    out.push(b':');
                    stack.push(Step::Entries(rest, false));
                    stack.push(Step::Node(item));
                }
                None => out.push(b'}'),
            },
        }
    }
}

/// What can be sent as a [`Value`]: every serde value, and the types that hold functions.
///
/// Calls ([`Callback::call`], kite-native's `Client::tell`) and handler results take
/// `impl IntoValue`: a tuple `(4, "x")`, a struct, `()`, a `serde_json::Value`, a [`Value`]
/// (from [`crate::value!`], with functions), a [`Callback`], or received arguments to forward.
/// (A list of `Value`s or an optional `Callback` goes in through [`Value::list`] or
/// [`crate::value!`].)
pub trait IntoValue {
    /// The value.
    fn into_value(self) -> Result<Value, KiteError>;
}

impl<T: Serialize> IntoValue for T {
    fn into_value(self) -> Result<Value, KiteError> {
        Value::from_serialize(&self)
    }
}

impl IntoValue for Value {
    fn into_value(self) -> Result<Value, KiteError> {
        Ok(self)
    }
}

impl IntoValue for Callback {
    fn into_value(self) -> Result<Value, KiteError> {
        Ok(Value::function(self))
    }
}

impl IntoValue for &Callback {
    fn into_value(self) -> Result<Value, KiteError> {
        Ok(Value::function(self.clone()))
    }
}

/// What can be sent as an argument list: a tuple of [`IntoValue`]s (`(4,)`, `("a", cb)` —
/// functions included), `()` for none, a `Vec` of them, or a [`Value`] / `serde_json::Value`
/// (a list is the arguments; anything else is the only argument, `null` none).
///
/// ```
/// use kite_core::dnode::IntoArgs;
/// use kite_core::Callback;
/// let list = ("resize", 3, Callback::new(|_| {})).into_args().unwrap();
/// assert_eq!(list.to_string(), r#"["resize",3,"[Function]"]"#);
/// assert_eq!(().into_args().unwrap().to_string(), "[]");
/// ```
pub trait IntoArgs {
    /// The argument list.
    fn into_args(self) -> Result<Value, KiteError>;
}

impl IntoArgs for () {
    fn into_args(self) -> Result<Value, KiteError> {
        Ok(Value::list([]))
    }
}

impl IntoArgs for Value {
    fn into_args(self) -> Result<Value, KiteError> {
        Ok(self.into_list())
    }
}

impl IntoArgs for serde_json::Value {
    fn into_args(self) -> Result<Value, KiteError> {
        Ok(Value::from_json(self).into_list())
    }
}

impl<T: IntoValue> IntoArgs for Vec<T> {
    fn into_args(self) -> Result<Value, KiteError> {
        let items = self
            .into_iter()
            .map(IntoValue::into_value)
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Value::list(items))
    }
}

macro_rules! tuple_into_args {
    ($($name:ident),+) => {
        impl<$($name: IntoValue),+> IntoArgs for ($($name,)+) {
            #[allow(non_snake_case)]
            fn into_args(self) -> Result<Value, KiteError> {
                let ($($name,)+) = self;
                Ok(Value::list([$($name.into_value()?,)+]))
            }
        }
    };
}

tuple_into_args!(A);
tuple_into_args!(A, B);
tuple_into_args!(A, B, C);
tuple_into_args!(A, B, C, D);
tuple_into_args!(A, B, C, D, E);
tuple_into_args!(A, B, C, D, E, F);
tuple_into_args!(A, B, C, D, E, F, G);
tuple_into_args!(A, B, C, D, E, F, G, H);

impl From<Callback> for Value {
    fn from(cb: Callback) -> Value {
        Value::function(cb)
    }
}

impl From<serde_json::Value> for Value {
    fn from(json: serde_json::Value) -> Value {
        Value::from_json(json)
    }
}

/// Used by [`crate::value!`]: one interpolated expression as a [`Value`].
///
/// # Panics
///
/// If serde_json cannot represent it (a map with non-string keys), as `serde_json::json!` does.
#[doc(hidden)]
pub fn __from(v: impl IntoValue) -> Value {
    match v.into_value() {
        Ok(v) => v,
        Err(e) => panic!("value!: {}", e.message),
    }
}

/// Builds a [`Value`](crate::Value) with `serde_json::json!`'s syntax, where any expression may
/// also be a [`Callback`](crate::Callback), a `Value`, or received arguments.
///
/// Keys are string literals or `(expressions)`. Expressions go through
/// [`IntoValue`](crate::dnode::IntoValue): any serde value, or a type that holds functions.
///
/// ```
/// use kite_core::{value, Callback};
/// let on_tick = Callback::new(|_| {});
/// let name = "clock";
/// let v = value!([{"name": name, "every": 1.5, "onTick": on_tick, "tags": [null, true]}]);
/// assert_eq!(
///     v.to_string(),
///     r#"[{"name":"clock","every":1.5,"onTick":"[Function]","tags":[null,true]}]"#
/// );
/// let path: Vec<String> = v.functions()[0].0.iter().map(|s| s.to_string()).collect();
/// assert_eq!(path, ["0", "onTick"]);
/// ```
#[macro_export]
macro_rules! value {
    (null) => { $crate::dnode::Value::null() };
    ([ $($tt:tt)* ]) => { $crate::value!(@list [] $($tt)*) };
    ({ $($tt:tt)* }) => { $crate::value!(@object [] $($tt)*) };
    ($e:expr) => { $crate::dnode::__from($e) };

    // A list: items done so far, then the rest.
    (@list [$($done:expr,)*]) => { $crate::dnode::Value::list(vec![$($done,)*]) };
    (@list [$($done:expr,)*] null $(, $($rest:tt)*)?) => {
        $crate::value!(@list [$($done,)* $crate::dnode::Value::null(),] $($($rest)*)?)
    };
    (@list [$($done:expr,)*] [$($inner:tt)*] $(, $($rest:tt)*)?) => {
        $crate::value!(@list [$($done,)* $crate::value!([$($inner)*]),] $($($rest)*)?)
    };
    (@list [$($done:expr,)*] {$($inner:tt)*} $(, $($rest:tt)*)?) => {
        $crate::value!(@list [$($done,)* $crate::value!({$($inner)*}),] $($($rest)*)?)
    };
    (@list [$($done:expr,)*] $e:expr $(, $($rest:tt)*)?) => {
        $crate::value!(@list [$($done,)* $crate::dnode::__from($e),] $($($rest)*)?)
    };

    // An object: entries done so far, then the rest.
    (@object [$(($k:expr, $v:expr),)*]) => {
        $crate::dnode::Value::object(::std::vec![$(($k, $v),)*])
    };
    (@object [$($done:tt)*] $key:literal : $($rest:tt)*) => {
        $crate::value!(@entry [$($done)*] ($key) $($rest)*)
    };
    (@object [$($done:tt)*] ($key:expr) : $($rest:tt)*) => {
        $crate::value!(@entry [$($done)*] ($key) $($rest)*)
    };
    (@entry [$($done:tt)*] ($key:expr) null $(, $($rest:tt)*)?) => {
        $crate::value!(@object [$($done)* (::std::string::String::from($key), $crate::dnode::Value::null()),] $($($rest)*)?)
    };
    (@entry [$($done:tt)*] ($key:expr) [$($inner:tt)*] $(, $($rest:tt)*)?) => {
        $crate::value!(@object [$($done)* (::std::string::String::from($key), $crate::value!([$($inner)*])),] $($($rest)*)?)
    };
    (@entry [$($done:tt)*] ($key:expr) {$($inner:tt)*} $(, $($rest:tt)*)?) => {
        $crate::value!(@object [$($done)* (::std::string::String::from($key), $crate::value!({$($inner)*})),] $($($rest)*)?)
    };
    (@entry [$($done:tt)*] ($key:expr) $e:expr $(, $($rest:tt)*)?) => {
        $crate::value!(@object [$($done)* (::std::string::String::from($key), $crate::dnode::__from($e)),] $($($rest)*)?)
    };
}
