//! The dnode message: `{"method", "arguments", "callbacks"}` (+ `links`, tolerated).

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::fmt;

use serde::Deserialize;
use serde::de::{self, Visitor};
use serde_json::Value;
use serde_json::value::RawValue;

use super::path::Path;
use crate::error::ProtocolError;
use crate::json;

/// The integers a double holds exactly, as Go's decoder and JavaScript read numbers: ids and
/// indices are below this (2^53).
pub(crate) const MAX_EXACT: u64 = 9_007_199_254_740_992;

/// The `method` of a dnode message: a method name, or the id of a callback to invoke.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Method {
    /// Call the named method (a kite request).
    Name(String),
    /// Invoke the callback with this id (a response, or any other callback).
    Callback(u64),
}

impl<'de> Deserialize<'de> for Method {
    fn deserialize<D: de::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct MethodVisitor;
        impl<'de> Visitor<'de> for MethodVisitor {
            type Value = Method;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a method name or a callback id")
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Method, E> {
                // Go and JavaScript read numbers as doubles: an id is exact below 2^53.
                if v < MAX_EXACT {
                    Ok(Method::Callback(v))
                } else {
                    Err(E::custom("callback id is not exact in a double"))
                }
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Method, E> {
                u64::try_from(v)
                    .map_err(|_| E::custom("negative callback id"))
                    .and_then(|v| self.visit_u64(v))
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<Method, E> {
                // Go decodes numbers as float64; integral values are callback ids.
                if v >= 0.0 && v.fract() == 0.0 && v < 9_007_199_254_740_992.0 {
                    Ok(Method::Callback(v as u64))
                } else {
                    Err(E::custom("callback id is not a non-negative integer"))
                }
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Method, E> {
                Ok(Method::Name(v.to_owned()))
            }
            fn visit_string<E: de::Error>(self, v: String) -> Result<Method, E> {
                Ok(Method::Name(v))
            }
        }
        d.deserialize_any(MethodVisitor)
    }
}

/// A decoded incoming dnode message.
#[derive(Debug, Clone, PartialEq)]
pub struct Message {
    /// Method name or callback id.
    pub method: Method,
    /// The arguments (a JSON array for every well-formed message).
    pub arguments: Value,
    /// Callback id → path into `arguments`, in ascending id order.
    pub callbacks: Vec<(u64, Path)>,
}

/// The members `names` of a JSON object, each as its text (`Some` when present, even `null`).
/// A key given twice keeps its last value, as Go's decoder and `JSON.parse` keep it (serde's
/// derived structs would refuse the object); other keys are skipped unread.
pub(crate) struct Members<const N: usize>(pub(crate) [&'static str; N]);

impl<'de, const N: usize> de::DeserializeSeed<'de> for Members<N> {
    type Value = [Option<&'de RawValue>; N];

    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_map(self)
    }
}

impl<'de, const N: usize> Visitor<'de> for Members<N> {
    type Value = [Option<&'de RawValue>; N];

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "an object with {:?}", self.0)
    }

    fn visit_map<A: de::MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut found = [None; N];
        while let Some(key) = map.next_key::<Cow<'de, str>>()? {
            match self.0.iter().position(|name| *name == key) {
                Some(i) => found[i] = Some(map.next_value()?),
                None => {
                    map.next_value::<de::IgnoredAny>()?;
                }
            }
        }
        Ok(found)
    }
}

/// The envelope's parts as text (`None` when missing or `null`).
struct Wire<'a> {
    method: Option<&'a RawValue>,
    arguments: Option<&'a RawValue>,
    callbacks: Option<&'a RawValue>,
    // `links` (dnode-protocol's cycle list) is tolerated and ignored, like Go does.
}

impl<'a> Wire<'a> {
    fn read(text: &'a str) -> serde_json::Result<Wire<'a>> {
        let mut de = serde_json::Deserializer::from_str(text);
        let [method, arguments, callbacks] = de::DeserializeSeed::deserialize(
            Members(["method", "arguments", "callbacks"]),
            &mut de,
        )?;
        de.end()?;
        let given = |raw: Option<&'a RawValue>| raw.filter(|r| r.get() != "null");
        Ok(Wire {
            method: given(method),
            arguments: given(arguments),
            callbacks: given(callbacks),
        })
    }
}

/// Decodes `text` into `T`, a key given twice keeping its last value (serde's derived structs
/// refuse duplicate fields; Go's decoder and `JSON.parse` keep the last).
pub(crate) fn last_wins<T: serde::de::DeserializeOwned>(text: &str) -> serde_json::Result<T> {
    match serde_json::from_str(text) {
        Err(e) if e.to_string().starts_with("duplicate field") => {
            serde_json::from_value(serde_json::from_str::<Value>(text)?)
        }
        other => other,
    }
}

/// A dnode message whose `arguments` and `callbacks` are still JSON text borrowed from the
/// input: the envelope is checked, the rest is only parsed as far as a reader needs.
#[derive(Debug, Clone)]
pub(crate) struct RawMessage<'a> {
    pub(crate) method: Method,
    /// `None` when missing or `null`.
    pub(crate) arguments: Option<&'a RawValue>,
    callbacks: Option<&'a RawValue>,
}

impl<'a> RawMessage<'a> {
    pub(crate) fn decode(text: &'a str) -> Result<RawMessage<'a>, ProtocolError> {
        // serde's derived structs also accept arrays; a dnode message is always an object.
        if !text.trim_ascii_start().starts_with('{') {
            return Err(ProtocolError::InvalidMessage(
                "a dnode message is a JSON object".into(),
            ));
        }
        let wire = Wire::read(text).map_err(|e| ProtocolError::InvalidMessage(e.to_string()))?;
        let method = match wire.method {
            Some(raw) => serde_json::from_str::<Method>(raw.get())
                .map_err(|_| ProtocolError::InvalidMethod)?,
            None => return Err(ProtocolError::InvalidMethod),
        };
        Ok(RawMessage {
            method,
            arguments: wire.arguments,
            callbacks: wire.callbacks,
        })
    }

    /// The callbacks, id → path in ascending id order.
    pub(crate) fn callbacks(&self) -> Result<Vec<(u64, Path)>, ProtocolError> {
        let Some(raw) = self.callbacks else {
            return Ok(Vec::new());
        };
        let map: Option<BTreeMap<Cow<'_, str>, Path>> = serde_json::from_str(raw.get())
            .map_err(|e| ProtocolError::InvalidMessage(e.to_string()))?;
        let mut callbacks = Vec::new();
        for (key, path) in map.unwrap_or_default() {
            let id: u64 = key.parse().map_err(|_| {
                ProtocolError::InvalidCallbacks(format!("callback id {key:?} is not an integer"))
            })?;
            callbacks.push((id, path));
        }
        callbacks.sort_by_key(|(id, _)| *id);
        Ok(callbacks)
    }

    /// Recognises, without allocating, the callbacks of nearly every message: none
    /// (`Some(None)`), or only a request's response callback at `[0,"responseCallback"]`
    /// (`Some(Some(id))`). `None` for anything else, malformed included: then
    /// [`RawMessage::callbacks`] decides.
    pub(crate) fn only_response_callback(&self) -> Option<Option<u64>> {
        only_response_callback(self.callbacks)
    }

    /// The arguments parsed (`null` when missing).
    pub(crate) fn arguments_value(&self) -> Result<Value, ProtocolError> {
        match self.arguments {
            None => Ok(Value::Null),
            Some(raw) => serde_json::from_str(raw.get())
                .map_err(|e| ProtocolError::InvalidMessage(e.to_string())),
        }
    }
}

/// [`RawMessage::only_response_callback`] for the JSON text of a `callbacks` object.
pub(crate) fn only_response_callback(callbacks: Option<&RawValue>) -> Option<Option<u64>> {
    let Some(raw) = callbacks else {
        return Some(None);
    };
    let mut de = serde_json::Deserializer::from_str(raw.get());
    let found = serde::Deserializer::deserialize_any(&mut de, OnlyResponse).ok()?;
    de.end().ok()?;
    Some(found)
}

/// Visits a callbacks object holding at most one entry, a response callback path.
struct OnlyResponse;

impl<'de> Visitor<'de> for OnlyResponse {
    type Value = Option<u64>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("callbacks holding only a response callback")
    }

    fn visit_unit<E: de::Error>(self) -> Result<Option<u64>, E> {
        Ok(None)
    }

    fn visit_map<A: de::MapAccess<'de>>(self, mut map: A) -> Result<Option<u64>, A::Error> {
        let mut found = None;
        while let Some(key) = map.next_key::<&'de str>()? {
            let id: u64 = key
                .parse()
                .map_err(|_| de::Error::custom("callback id is not an integer"))?;
            map.next_value::<ResponsePath>()?;
            if found.replace(id).is_some() {
                return Err(de::Error::custom("more than one callback"));
            }
        }
        Ok(found)
    }
}

/// Accepts exactly the path `[0, "responseCallback"]` (`0` may be `"0"` or `0.0`).
struct ResponsePath;

impl<'de> de::Deserialize<'de> for ResponsePath {
    fn deserialize<D: de::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Seq;
        impl<'de> Visitor<'de> for Seq {
            type Value = ResponsePath;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("[0, \"responseCallback\"]")
            }
            fn visit_seq<A: de::SeqAccess<'de>>(
                self,
                mut seq: A,
            ) -> Result<ResponsePath, A::Error> {
                let zero = seq.next_element::<super::path::Segment>()?;
                let name = seq.next_element::<&'de str>()?;
                let more = seq.next_element::<de::IgnoredAny>()?;
                match (zero.and_then(|z| z.as_index()), name, more) {
                    (Some(0), Some("responseCallback"), None) => Ok(ResponsePath),
                    _ => Err(de::Error::custom("not a response callback path")),
                }
            }
        }
        d.deserialize_seq(Seq)
    }
}

impl Message {
    /// Decodes one dnode message from JSON text.
    pub fn decode(text: &str) -> Result<Message, ProtocolError> {
        let raw = RawMessage::decode(text)?;
        let callbacks = raw.callbacks()?;
        let arguments = raw.arguments_value()?;
        Ok(Message {
            method: raw.method,
            arguments,
            callbacks,
        })
    }
}

/// Writes the `"callbacks":{...}` object the way Go does: keys sorted as strings.
pub(crate) fn write_callbacks(out: &mut Vec<u8>, callbacks: &[(u64, Path)]) {
    out.extend_from_slice(b"\"callbacks\":{");
    let write_one = |out: &mut Vec<u8>, id: u64, path: &Path| {
        out.push(b'"');
        out.extend_from_slice(id.to_string().as_bytes());
        out.extend_from_slice(b"\":");
        let _ = json::write_into(out, path);
    };
    match callbacks {
        [] => {}
        [(id, path)] => write_one(out, *id, path),
        _ => {
            let mut keyed: Vec<(String, &Path)> = callbacks
                .iter()
                .map(|(id, path)| (id.to_string(), path))
                .collect();
            keyed.sort_by(|a, b| a.0.cmp(&b.0));
            for (i, (key, path)) in keyed.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                json::write_str(out, key);
                out.push(b':');
                let _ = json::write_into(out, path);
            }
        }
    }
    out.push(b'}');
}

/// Encodes a message `{"method":..,"arguments":..,"callbacks":{..}}` in Go's key order, with
/// `write_arguments` writing the JSON array of the arguments in place (`size_hint`: about how
/// many bytes it writes).
pub(crate) fn encode_with(
    method: &Method,
    callbacks: &[(u64, Path)],
    size_hint: usize,
    write_arguments: impl FnOnce(&mut Vec<u8>),
) -> String {
    let mut out = Vec::with_capacity(size_hint + 96);
    out.extend_from_slice(b"{\"method\":");
    match method {
        Method::Name(name) => json::write_str(&mut out, name),
        Method::Callback(id) => out.extend_from_slice(id.to_string().as_bytes()),
    }
    out.extend_from_slice(b",\"arguments\":");
    write_arguments(&mut out);
    out.push(b',');
    write_callbacks(&mut out, callbacks);
    out.push(b'}');
    String::from_utf8(out).expect("JSON output is UTF-8")
}

#[cfg(test)]
mod tests {
    use super::super::path::Segment;
    use super::*;

    #[test]
    fn decodes_go_and_kitejs_layouts() {
        let go = Message::decode(
            r#"{"method":"square","arguments":[{"withArgs":[3]}],"callbacks":{"0":[0,"responseCallback"]}}"#,
        )
        .unwrap();
        assert_eq!(go.method, Method::Name("square".into()));
        assert_eq!(
            go.callbacks,
            vec![(
                0,
                vec![Segment::Index(0), Segment::Key("responseCallback".into())]
            )]
        );
        let js = Message::decode(
            r#"{"arguments":[1],"callbacks":{"1":["0","responseCallback"]},"links":[],"method":0}"#,
        )
        .unwrap();
        assert_eq!(js.method, Method::Callback(0));
        let float = Message::decode(r#"{"method":3.0,"arguments":[]}"#).unwrap();
        assert_eq!(float.method, Method::Callback(3));
        assert!(float.callbacks.is_empty());
    }

    #[test]
    fn rejects_bad_messages() {
        for bad in [
            "",
            "\"hello\"",
            "[1]",
            "{",
            r#"{"method":true,"arguments":[]}"#,
            r#"{"method":-1,"arguments":[]}"#,
            r#"{"method":1.5,"arguments":[]}"#,
            r#"{"method":{},"arguments":[]}"#,
            r#"{"arguments":[]}"#,
            r#"{"method":"x","arguments":[],"callbacks":{"a":[0]}}"#,
            r#"{"method":"x","arguments":[],"callbacks":{"1":[true]}}"#,
            r#"{"method":"x","arguments":[],"callbacks":[1]}"#,
        ] {
            assert!(Message::decode(bad).is_err(), "{bad:?} must fail");
        }
    }

    #[test]
    fn encodes_callbacks_sorted_as_strings() {
        let cbs = vec![(2, vec![Segment::Index(1)]), (10, vec![Segment::Index(0)])];
        assert_eq!(
            encode_with(&Method::Callback(5), &cbs, 0, |out| out
                .extend_from_slice(b"[]")),
            r#"{"method":5,"arguments":[],"callbacks":{"10":[0],"2":[1]}}"#
        );
    }
}
