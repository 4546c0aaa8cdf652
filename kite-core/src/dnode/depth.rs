//! Deeply nested values: decoded and encoded up to Go kite's nesting limit without exhausting
//! the stack.
//!
//! serde_json refuses input nested more than 128 levels deep, and serde's (de)serializers
//! recurse once per level. Go's `encoding/json` accepts 10,000 levels ([`MAX_DEPTH`]), so a
//! Go kite may send, and expect back intact, values this deep. Decoding first tries serde_json
//! as it is (every ordinary value); only input it refuses for its nesting is measured and, when
//! within [`MAX_DEPTH`], decoded again without serde_json's limit on a stack grown as needed
//! (`serde_stacker`). Deeper input is an error, which a kite answers as an `argumentError`.
//! Serializing a program's values into a [`Value`](super::Value) uses the same growable stack.
//! Received text is never parsed merely to be passed on, so it has no limit at all.

use serde::Serialize;
use serde::de::{DeserializeOwned, DeserializeSeed};

/// The deepest nesting decoded: Go's `encoding/json` limit (10,000 levels of lists and
/// objects). Past it, decoding fails with an `argumentError`.
pub const MAX_DEPTH: usize = 10_000;

/// Why decoding JSON text failed.
#[derive(Debug)]
pub(crate) enum DecodeError {
    /// Nested deeper than [`MAX_DEPTH`].
    TooDeep,
    /// Not the expected shape (serde's message).
    Json(serde_json::Error),
}

impl std::fmt::Display for DecodeError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            DecodeError::TooDeep => write!(
                f,
                "the value is nested more than {MAX_DEPTH} levels deep (Go kite's limit)"
            ),
            DecodeError::Json(e) => e.fmt(f),
        }
    }
}

fn is_recursion_limit(e: &serde_json::Error) -> bool {
    e.to_string().starts_with("recursion limit exceeded")
}

/// The deepest nesting of lists and objects in JSON text (strings skipped), stopping early
/// once past `limit`.
pub(crate) fn depth_exceeds(text: &str, limit: usize) -> bool {
    let mut depth = 0usize;
    let mut in_string = false;
    let mut escaped = false;
    for &b in text.as_bytes() {
        if in_string {
            match (escaped, b) {
                (true, _) => escaped = false,
                (false, b'\\') => escaped = true,
                (false, b'"') => in_string = false,
                _ => {}
            }
            continue;
        }
        match b {
            b'"' => in_string = true,
            b'[' | b'{' => {
                depth += 1;
                if depth > limit {
                    return true;
                }
            }
            b']' | b'}' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    false
}

/// Decodes `text` with `seed`, falling back to the deep decoder for input serde_json refuses
/// only for its nesting.
pub(crate) fn decode_seed<S, T>(text: &str, seed: impl Fn() -> S) -> Result<T, DecodeError>
where
    S: for<'de> DeserializeSeed<'de, Value = T>,
{
    let mut de = serde_json::Deserializer::from_str(text);
    match seed()
        .deserialize(&mut de)
        .and_then(|v| de.end().map(|()| v))
    {
        Ok(v) => Ok(v),
        Err(e) if is_recursion_limit(&e) => deep(text, seed()),
        Err(e) => Err(DecodeError::Json(e)),
    }
}

/// Decodes `text` into `T` (see [`decode_seed`]).
pub(crate) fn from_str<T: DeserializeOwned>(text: &str) -> Result<T, DecodeError> {
    decode_seed(text, || std::marker::PhantomData::<T>)
}

fn deep<S, T>(text: &str, seed: S) -> Result<T, DecodeError>
where
    S: for<'de> DeserializeSeed<'de, Value = T>,
{
    if depth_exceeds(text, MAX_DEPTH) {
        return Err(DecodeError::TooDeep);
    }
    let mut de = serde_json::Deserializer::from_str(text);
    // On a stack grown as needed; without one (wasm32) serde_json's own limit stands, and
    // kite-wasm decodes with the engine's JSON parser instead.
    #[cfg(not(target_arch = "wasm32"))]
    let value = {
        de.disable_recursion_limit();
        seed.deserialize(serde_stacker::Deserializer::new(&mut de))
    };
    #[cfg(target_arch = "wasm32")]
    let value = seed.deserialize(&mut de);
    let value = value.map_err(DecodeError::Json)?;
    de.end().map_err(DecodeError::Json)?;
    Ok(value)
}

/// Serializes `value` into a tree, on a stack grown as needed.
pub(crate) fn to_tree<T: Serialize + ?Sized>(
    value: &T,
) -> Result<serde_json::Value, serde_json::Error> {
    #[cfg(not(target_arch = "wasm32"))]
    {
        value.serialize(serde_stacker::Serializer::new(
            serde_json::value::Serializer,
        ))
    }
    #[cfg(target_arch = "wasm32")]
    {
        serde_json::to_value(value)
    }
}

/// Decodes a tree into `T`, on a stack grown as needed.
pub(crate) fn from_tree<T: DeserializeOwned>(
    value: &serde_json::Value,
) -> Result<T, serde_json::Error> {
    #[cfg(not(target_arch = "wasm32"))]
    {
        T::deserialize(serde_stacker::Deserializer::new(value))
    }
    #[cfg(target_arch = "wasm32")]
    {
        T::deserialize(value)
    }
}

/// Drops a tree without recursion (a tree from a peer may be thousands of levels deep).
#[cfg(test)]
pub(crate) fn drop_tree(value: serde_json::Value) {
    let mut stack = vec![value];
    while let Some(v) = stack.pop() {
        match v {
            serde_json::Value::Array(items) => stack.extend(items),
            serde_json::Value::Object(map) => stack.extend(map.into_iter().map(|(_, v)| v)),
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nested(depth: usize) -> String {
        "[".repeat(depth) + &"]".repeat(depth)
    }

    #[test]
    fn depth_is_measured_outside_strings() {
        assert!(!depth_exceeds(r#"["[[[[", {"a": "]]]"}]"#, 2));
        assert!(depth_exceeds(r#"[{"a": [1]}]"#, 2));
        assert!(!depth_exceeds(r#"["\"[[[", 1]"#, 1));
    }

    #[test]
    fn values_as_deep_as_go_allows_decode_and_deeper_ones_fail() {
        let v: serde_json::Value = from_str(&nested(MAX_DEPTH)).unwrap();
        let mut back = Vec::new();
        crate::json::write_value(&mut back, &v);
        assert_eq!(back.len(), 2 * MAX_DEPTH);
        let tree = to_tree(&v).unwrap();
        drop_tree(v);
        drop_tree(tree);
        assert!(matches!(
            from_str::<serde_json::Value>(&nested(MAX_DEPTH + 1)),
            Err(DecodeError::TooDeep)
        ));
        // Ordinary errors keep serde's wording.
        let e = from_str::<u32>("\"x\"").unwrap_err().to_string();
        assert!(e.contains("invalid type"), "{e}");
    }
}
