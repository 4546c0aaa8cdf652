//! Reading a [`Value`]: decoding its JSON into serde types, taking its functions, and the
//! [`FromArg`] / [`FromArgs`] conversions handlers use for argument lists.

use std::fmt;
use std::marker::PhantomData;

use serde::de::{self, DeserializeOwned, DeserializeSeed, IgnoredAny, SeqAccess, Visitor};
use serde_json::value::RawValue;

use super::callback::Callback;
use super::depth::{self, DecodeError};
use super::path::{Segment, strip_prefix};
use super::value::{Json, Value};
use crate::error::KiteError;

impl Value {
    /// Decodes the whole value (for a list of arguments, a tuple or `Vec` fits). Functions are
    /// not data: at their place the JSON holds what the peer put there (`"[Function]"`); take
    /// them with [`Value::callback`]. Never panics: a wrong shape is an `argumentError`.
    ///
    /// ```
    /// use kite_core::Value;
    /// let args = Value::from_json(serde_json::json!([4, "x"]));
    /// let (n, s): (f64, String) = args.decode().unwrap();
    /// assert_eq!((n, s.as_str()), (4.0, "x"));
    /// assert_eq!(args.decode::<(String,)>().unwrap_err().kind.as_str(), "argumentError");
    /// ```
    pub fn decode<T: DeserializeOwned>(&self) -> Result<T, KiteError> {
        decode_json(&self.json).map_err(|e| argument_error(e, &self.json))
    }

    /// Decodes the only argument of a list; fails unless there is exactly one (Go's `One()`).
    /// `T` may be any serde type, a [`Callback`], or a `Value`.
    pub fn one<T: FromArg>(&self) -> Result<T, KiteError> {
        T::from_arg(self, 0, Some(1))
    }

    /// Decodes argument `index` of a list; fails if it is missing. `T` may be any serde type,
    /// a [`Callback`] (the function at that place), or a `Value`.
    ///
    /// ```
    /// use kite_core::{value, Callback, Value};
    /// let args = value!([2.5, Callback::new(|_| {})]);
    /// let n: f64 = args.nth(0).unwrap();
    /// let cb: Callback = args.nth(1).unwrap();
    /// assert!(args.nth::<Callback>(0).is_err());
    /// # let _ = (n, cb);
    /// ```
    pub fn nth<T: FromArg>(&self, index: usize) -> Result<T, KiteError> {
        T::from_arg(self, index, None)
    }

    /// Decodes the argument list into a tuple whose items are any [`FromArg`] (serde types,
    /// [`Callback`]s, `Value`s), or into a `Vec` of them; a tuple must match the list's length.
    ///
    /// ```
    /// use kite_core::{value, Callback};
    /// let args = value!([10, Callback::new(|_| {})]);
    /// let (interval, ping): (f64, Callback) = args.args().unwrap();
    /// # let _ = (interval, ping);
    /// ```
    pub fn args<T: FromArgs>(&self) -> Result<T, KiteError> {
        T::from_args(self)
    }

    /// Item `index` of a list with the functions inside it; `None` if there is no such item.
    pub fn get(&self, index: usize) -> Option<Value> {
        let json = item(&self.json, index)?;
        let prefix = [Segment::Index(index)];
        let functions = self
            .functions
            .iter()
            .filter_map(|(path, cb)| {
                strip_prefix(path, &prefix).map(|rest| (rest.to_vec(), cb.clone()))
            })
            .collect();
        Some(Value { json, functions })
    }

    /// The function that is item `index` of a list (`argumentError` if that item is missing
    /// or is not a function).
    pub fn callback(&self, index: usize) -> Result<Callback, KiteError> {
        if index < self.len() {
            if let Some(cb) = self.callback_at(&[Segment::Index(index)]) {
                return Ok(cb);
            }
            return Err(KiteError::argument(format!(
                "argument {index} is not a function"
            )));
        }
        Err(KiteError::argument("Invalid array length"))
    }

    /// The function at `path` (from the root), if one is there. A peer naming two functions
    /// for one place gets the one with the higher id, as a receiver setting them in order does.
    pub fn callback_at(&self, path: &[Segment]) -> Option<Callback> {
        self.functions
            .iter()
            .rev()
            .find(|(p, _)| p.len() == path.len() && strip_prefix(p, path).is_some())
            .map(|(_, cb)| cb.clone())
    }

    /// The number of items of a list (0 for anything else).
    pub fn len(&self) -> usize {
        match &self.json {
            Json::Tree(v) => v.as_array().map_or(0, Vec::len),
            Json::List(items) => items.len(),
            Json::Object(_) => 0,
            Json::Raw(text) => {
                if !text.get().starts_with('[') {
                    return 0;
                }
                let mut de = serde_json::Deserializer::from_str(text.get());
                de::Deserializer::deserialize_seq(&mut de, Count).unwrap_or(0)
            }
        }
    }

    /// Whether this is an empty list (or not a list).
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The JSON as a `serde_json::Value` tree (functions show as their slots). Fails with an
    /// `argumentError` past [`depth::MAX_DEPTH`] levels of nesting.
    pub fn to_json(&self) -> Result<serde_json::Value, KiteError> {
        self.decode()
    }
}

/// Decodes a whole [`Json`] into `T`.
fn decode_json<T: DeserializeOwned>(json: &Json) -> Result<T, DecodeError> {
    match json {
        Json::Raw(text) => depth::from_str(text.get()),
        Json::Tree(v) => depth::from_tree(v).map_err(DecodeError::Json),
        Json::List(_) | Json::Object(_) => {
            let text = Value {
                json: json.clone(),
                functions: Vec::new(),
            }
            .to_json_string();
            depth::from_str(&text)
        }
    }
}

/// Item `index` of a list, as its own [`Json`].
fn item(json: &Json, index: usize) -> Option<Json> {
    match json {
        Json::Tree(v) => v.as_array()?.get(index).cloned().map(Json::Tree),
        Json::List(items) => items.get(index).cloned(),
        Json::Object(_) => None,
        Json::Raw(text) => {
            if !text.get().starts_with('[') {
                return None;
            }
            let found = depth::decode_seed(text.get(), || Nth::<Box<RawValue>> {
                index,
                exact_len: None,
                item: PhantomData,
            })
            .ok()??;
            Some(Json::Raw(found))
        }
    }
}

/// Decodes item `index` of a list into `T`, checking the list's length against `exact_len`.
fn decode_item<T: DeserializeOwned>(
    value: &Value,
    index: usize,
    exact_len: Option<usize>,
) -> Result<T, KiteError> {
    if let Json::Raw(text) = &value.json {
        if !text.get().starts_with('[') {
            return Err(not_a_list(&value.json));
        }
        let decoded = depth::decode_seed(text.get(), || Nth::<T> {
            index,
            exact_len,
            item: PhantomData,
        });
        return match decoded {
            Ok(Some(v)) => Ok(v),
            Ok(None) => Err(KiteError::argument("Invalid array length")),
            Err(e) => {
                // Word the error from the item alone, as it was decoded.
                let item = item(&value.json, index).unwrap_or_default();
                Err(argument_error(e, &item))
            }
        };
    }
    if !value.is_list() {
        return Err(not_a_list(&value.json));
    }
    let len = value.len();
    if exact_len.is_some_and(|n| n != len) || index >= len {
        return Err(KiteError::argument("Invalid array length"));
    }
    let item = item(&value.json, index).unwrap_or_default();
    decode_json(&item).map_err(|e| argument_error(e, &item))
}

fn not_a_list(json: &Json) -> KiteError {
    KiteError::argument(format!("arguments are not a list. Data: {}", data(json)))
}

fn argument_error(e: DecodeError, json: &Json) -> KiteError {
    match e {
        DecodeError::TooDeep => KiteError::argument(e.to_string()),
        DecodeError::Json(_) => KiteError::argument(format!("{e}. Data: {}", data(json))),
    }
}

/// The JSON text for an error message, cut to 256 bytes.
fn data(json: &Json) -> String {
    const MAX: usize = 256;
    let mut s = Value {
        json: json.clone(),
        functions: Vec::new(),
    }
    .to_json_string();
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

/// What one argument of a list can be decoded into: any serde type, or one of the types that
/// hold functions ([`Callback`], [`Value`]).
pub trait FromArg: Sized {
    /// Decodes item `index` of `list`; when `exact_len` is given, the list must have that many
    /// items.
    fn from_arg(list: &Value, index: usize, exact_len: Option<usize>) -> Result<Self, KiteError>;
}

impl<T: DeserializeOwned> FromArg for T {
    fn from_arg(list: &Value, index: usize, exact_len: Option<usize>) -> Result<T, KiteError> {
        decode_item(list, index, exact_len)
    }
}

fn check_len(list: &Value, index: usize, exact_len: Option<usize>) -> Result<(), KiteError> {
    let len = list.len();
    if exact_len.is_some_and(|n| n != len) || index >= len {
        return Err(KiteError::argument("Invalid array length"));
    }
    Ok(())
}

impl FromArg for Callback {
    fn from_arg(list: &Value, index: usize, exact_len: Option<usize>) -> Result<Self, KiteError> {
        check_len(list, index, exact_len)?;
        list.callback(index)
    }
}

impl FromArg for Value {
    fn from_arg(list: &Value, index: usize, exact_len: Option<usize>) -> Result<Self, KiteError> {
        if !list.is_list() {
            return Err(not_a_list(&list.json));
        }
        check_len(list, index, exact_len)?;
        list.get(index)
            .ok_or_else(|| KiteError::argument("Invalid array length"))
    }
}

/// What a whole value (a call's result, say) can be decoded into: any serde type, a
/// [`Callback`] (the value is a function), or the [`Value`] itself.
pub trait FromValue: Sized {
    /// Decodes `value`.
    fn from_value(value: Value) -> Result<Self, KiteError>;
}

impl<T: DeserializeOwned> FromValue for T {
    fn from_value(value: Value) -> Result<T, KiteError> {
        value.decode()
    }
}

impl FromValue for Callback {
    fn from_value(value: Value) -> Result<Self, KiteError> {
        value
            .callback_at(&[])
            .ok_or_else(|| KiteError::argument("the value is not a function"))
    }
}

impl FromValue for Value {
    fn from_value(value: Value) -> Result<Self, KiteError> {
        Ok(value)
    }
}

/// A whole argument list decoded item by item: tuples of [`FromArg`] types (their length must
/// match) and `Vec`s of them.
pub trait FromArgs: Sized {
    /// Decodes `list`.
    fn from_args(list: &Value) -> Result<Self, KiteError>;
}

impl<T: FromArg> FromArgs for Vec<T> {
    fn from_args(list: &Value) -> Result<Self, KiteError> {
        if !list.is_list() {
            return Err(not_a_list(&list.json));
        }
        (0..list.len())
            .map(|i| T::from_arg(list, i, None))
            .collect()
    }
}

macro_rules! tuple_from_args {
    ($len:expr => $($name:ident $index:tt),+) => {
        impl<$($name: FromArg),+> FromArgs for ($($name,)+) {
            fn from_args(list: &Value) -> Result<Self, KiteError> {
                if !list.is_list() {
                    return Err(not_a_list(&list.json));
                }
                if list.len() != $len {
                    return Err(KiteError::argument("Invalid array length"));
                }
                Ok(($($name::from_arg(list, $index, None)?,)+))
            }
        }
    };
}

tuple_from_args!(1 => A 0);
tuple_from_args!(2 => A 0, B 1);
tuple_from_args!(3 => A 0, B 1, C 2);
tuple_from_args!(4 => A 0, B 1, C 2, D 3);
tuple_from_args!(5 => A 0, B 1, C 2, D 3, E 4);
tuple_from_args!(6 => A 0, B 1, C 2, D 3, E 4, F 5);
tuple_from_args!(7 => A 0, B 1, C 2, D 3, E 4, F 5, G 6);
tuple_from_args!(8 => A 0, B 1, C 2, D 3, E 4, F 5, G 6, H 7);

/// Counts the items of a JSON list without building them.
struct Count;

impl<'de> Visitor<'de> for Count {
    type Value = usize;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a list")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<usize, A::Error> {
        let mut n = 0;
        while seq.next_element::<IgnoredAny>()?.is_some() {
            n += 1;
        }
        Ok(n)
    }
}

/// Picks item `index` of a JSON list while checking its length, skipping the other items
/// without building them. `Ok(None)`: not that long (or not `exact_len` long).
struct Nth<T> {
    index: usize,
    exact_len: Option<usize>,
    item: PhantomData<T>,
}

impl<'de, T: de::Deserialize<'de>> DeserializeSeed<'de> for Nth<T> {
    type Value = Option<T>;

    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<Option<T>, D::Error> {
        d.deserialize_seq(self)
    }
}

impl<'de, T: de::Deserialize<'de>> Visitor<'de> for Nth<T> {
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
