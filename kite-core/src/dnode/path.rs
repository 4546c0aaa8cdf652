//! Callback paths: where inside the arguments a function sits.

use std::fmt;

use serde::de::{self, Visitor};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::Value;

/// One step of a callback path: an array index or an object key.
///
/// Go sends indices as JSON numbers, Kite.js (dnode-protocol) as strings (`"0"`). Both are
/// accepted: a [`Segment::Key`] that parses as an integer also indexes arrays. We send numbers for
/// indices and strings for keys, like Go.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Segment {
    /// An array index.
    Index(usize),
    /// An object key.
    Key(String),
}

/// A path from the root of an argument list to a callback.
pub type Path = Vec<Segment>;

impl Segment {
    /// The array index this segment names, if any (`Index(n)`, or a `Key` holding digits).
    pub fn as_index(&self) -> Option<usize> {
        match self {
            Segment::Index(i) => Some(*i),
            Segment::Key(k) => k.parse().ok(),
        }
    }

    /// Whether two segments name the same step (`0` and `"0"` do).
    pub fn same_as(&self, other: &Segment) -> bool {
        match (self, other) {
            (Segment::Key(a), Segment::Key(b)) => a == b,
            _ => self.as_index().is_some() && self.as_index() == other.as_index(),
        }
    }
}

impl fmt::Display for Segment {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Segment::Index(i) => write!(f, "{i}"),
            Segment::Key(k) => f.write_str(k),
        }
    }
}

impl From<usize> for Segment {
    fn from(i: usize) -> Self {
        Segment::Index(i)
    }
}

impl From<&str> for Segment {
    fn from(k: &str) -> Self {
        Segment::Key(k.to_owned())
    }
}

impl Serialize for Segment {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Segment::Index(i) => s.serialize_u64(*i as u64),
            Segment::Key(k) => s.serialize_str(k),
        }
    }
}

impl<'de> Deserialize<'de> for Segment {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct SegmentVisitor;
        impl<'de> Visitor<'de> for SegmentVisitor {
            type Value = Segment;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a string or a non-negative integer path segment")
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Segment, E> {
                // Exact in a double (below 2^53), as Go and JavaScript read indices.
                if v >= super::message::MAX_EXACT {
                    return Err(E::custom("path index out of range"));
                }
                usize::try_from(v)
                    .map(Segment::Index)
                    .map_err(|_| E::custom("path index out of range"))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Segment, E> {
                u64::try_from(v)
                    .map_err(|_| E::custom("negative path index"))
                    .and_then(|v| self.visit_u64(v))
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<Segment, E> {
                if v >= 0.0 && v.fract() == 0.0 && v < 9_007_199_254_740_992.0 {
                    Ok(Segment::Index(v as usize))
                } else {
                    Err(E::custom("path index is not a non-negative integer"))
                }
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Segment, E> {
                Ok(Segment::Key(v.to_owned()))
            }
            fn visit_string<E: de::Error>(self, v: String) -> Result<Segment, E> {
                Ok(Segment::Key(v))
            }
        }
        d.deserialize_any(SegmentVisitor)
    }
}

/// The value at `path` inside `root`, if it exists.
pub fn get<'a>(root: &'a Value, path: &[Segment]) -> Option<&'a Value> {
    path.iter().try_fold(root, |node, seg| match node {
        Value::Array(items) => items.get(seg.as_index()?),
        Value::Object(map) => map.get(&seg.to_string()),
        _ => None,
    })
}

/// The value at `path` inside `root`, mutably, if it exists.
pub fn get_mut<'a>(root: &'a mut Value, path: &[Segment]) -> Option<&'a mut Value> {
    path.iter().try_fold(root, |node, seg| match node {
        Value::Array(items) => items.get_mut(seg.as_index()?),
        Value::Object(map) => map.get_mut(&seg.to_string()),
        _ => None,
    })
}

/// If `path` starts with `prefix` (segment by segment, `0` matching `"0"`), the rest of it.
pub fn strip_prefix<'a>(path: &'a [Segment], prefix: &[Segment]) -> Option<&'a [Segment]> {
    if path.len() < prefix.len() {
        return None;
    }
    let (head, rest) = path.split_at(prefix.len());
    head.iter()
        .zip(prefix)
        .all(|(a, b)| a.same_as(b))
        .then_some(rest)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn parses_numbers_and_strings() {
        let p: Path = serde_json::from_str(r#"[0,"withArgs","1",2.0]"#).unwrap();
        assert_eq!(
            p,
            vec![
                Segment::Index(0),
                Segment::Key("withArgs".into()),
                Segment::Key("1".into()),
                Segment::Index(2)
            ]
        );
        assert!(serde_json::from_str::<Path>("[-1]").is_err());
        assert!(serde_json::from_str::<Path>("[1.5]").is_err());
        assert!(serde_json::from_str::<Path>("[null]").is_err());
        assert!(serde_json::from_str::<Path>("[{}]").is_err());
    }

    #[test]
    fn walks_with_either_segment_kind() {
        let v = json!([{"withArgs": [1, {"cb": "[Function]"}]}]);
        let p: Path = serde_json::from_str(r#"["0","withArgs",1,"cb"]"#).unwrap();
        assert_eq!(get(&v, &p), Some(&json!("[Function]")));
        let missing: Path = serde_json::from_str(r#"[0,"nope"]"#).unwrap();
        assert_eq!(get(&v, &missing), None);
        let prefix = [Segment::Index(0), Segment::Key("withArgs".into())];
        assert_eq!(strip_prefix(&p, &prefix).unwrap().len(), 2);
    }
}
