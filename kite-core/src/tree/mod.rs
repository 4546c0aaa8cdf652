//! The protocol over JSON documents the driver holds, instead of JSON text.
//!
//! [`crate::Connection`] reads and writes JSON text with serde, which suits a native kite: no
//! copy, no tree, one pass. A browser has a JSON parser and printer of its own (`JSON.parse`,
//! `JSON.stringify`) that cost WebAssembly no code at all, so kite-wasm keeps messages as
//! JavaScript values and applies the protocol to them through the [`Tree`] trait: what a
//! document offers (read a member, an item, a string; build lists and objects).
//! [`TreeConnection`] is the same protocol state as [`crate::Connection`] — callback ids,
//! response slots, the request and response envelopes, callback paths both ways — over any
//! `Tree`, and the [`convert`] functions read and write the protocol's records (identity,
//! credentials, the error object, Kontrol's answers) as trees.
//!
//! `serde_json::Value` is a `Tree` too; the tests check that both connections read every
//! captured message the same way.
//!
//! ```
//! use kite_core::tree::{Head, Outgoing, TreeConnection, TreeIncoming};
//! use kite_core::{Kite, KiteError};
//! use serde_json::{json, Value};
//!
//! // Functions are whatever the driver sends; here, names.
//! let mut client: TreeConnection<&str, &str> = TreeConnection::new();
//! let head: Head<Value> = Head::new(&Kite::new("second", "1.0.0"), None);
//! let (_, request) = client.request("square", &head, Outgoing::plain(json!([4])), "call #1").unwrap();
//!
//! let mut server: TreeConnection<(), &str> = TreeConnection::new();
//! let Ok(TreeIncoming::Request(req)) = server.receive(&request) else { panic!() };
//! assert_eq!(req.args.value, json!([4]));
//! let answer = server.respond(req.response.unwrap(), Ok(Outgoing::plain(json!(16))));
//! assert_eq!(answer, json!({"method": 0, "arguments": [{"error": null, "result": 16}], "callbacks": {}}));
//!
//! let Ok(TreeIncoming::Response { pending, result }) = client.receive(&answer) else { panic!() };
//! assert_eq!((pending, result.unwrap().value), ("call #1", json!(16)));
//! ```

mod connection;
pub mod convert;

pub use connection::{Head, Outgoing, Received, TreeConnection, TreeIncoming, TreeRequest};

use serde_json::Value;

use crate::dnode::Segment;
use crate::identity::Kite;

/// A JSON document: a value whose members and items can be read and built.
///
/// Reading returns owned handles (`Clone` should be cheap: a JavaScript value is a reference);
/// building creates new nodes. "Absent" and "not that kind of node" both read as `None`; a
/// present `null` member is `Some(null)`.
pub trait Tree: Clone {
    /// `null`.
    fn null() -> Self;
    /// A string.
    fn string(s: &str) -> Self;
    /// A number.
    fn number(n: f64) -> Self;
    /// A list of `items`.
    fn list(items: Vec<Self>) -> Self;
    /// An object with `entries`, in this order.
    fn object(entries: Vec<(&str, Self)>) -> Self;

    /// The member `key` of an object (its own, never an inherited one).
    fn get(&self, key: &str) -> Option<Self>;
    /// Item `index` of a list.
    fn item(&self, index: usize) -> Option<Self>;
    /// The length of a list; `None` for anything else.
    fn list_len(&self) -> Option<usize>;
    /// The keys of an object, in order; `None` for anything else (lists included).
    fn keys(&self) -> Option<Vec<String>>;
    /// The text of a string.
    fn as_str(&self) -> Option<String>;
    /// The value of a number.
    fn as_f64(&self) -> Option<f64>;
    /// Whether this is `null` (or a missing value of the driver's own, like `undefined`).
    fn is_null(&self) -> bool;
    /// Whether this is an object (not a list, not `null`).
    fn is_object(&self) -> bool;
    /// Replaces the existing child at `segment` (a list item or an object's own member) with
    /// `value`. `false`, changing nothing, if there is no such child.
    fn replace(&mut self, segment: &Segment, value: Self) -> bool;
    /// This value as JSON text (for an error code that is not a string).
    fn to_json(&self) -> String;
    /// The identity a request carries here ([`Kite::from_tree`], which is what this must
    /// give): every request of a connection carries the same one, and an implementation
    /// whose reads are costly may answer from the last one it read.
    fn identity(&self) -> Kite {
        Kite::from_tree(self)
    }
}

/// The child at `segment`: a list item (`0` or `"0"`), or an object's member.
pub(crate) fn child<T: Tree>(node: &T, segment: &Segment) -> Option<T> {
    if node.list_len().is_some() {
        node.item(segment.as_index()?)
    } else {
        match segment {
            Segment::Key(k) => node.get(k),
            Segment::Index(i) => node.get(&i.to_string()),
        }
    }
}

/// The node at `path` inside `root`.
pub(crate) fn at<T: Tree>(root: &T, path: &[Segment]) -> Option<T> {
    path.iter()
        .try_fold(root.clone(), |node, segment| child(&node, segment))
}

/// Replaces the node at `path` inside `root` (which must exist) with `value`.
///
/// Iterative, so that a peer's path cannot exhaust the stack however deep the document nests.
pub(crate) fn replace_at<T: Tree>(root: &mut T, path: &[Segment], value: T) -> bool {
    let Some((last, parents)) = path.split_last() else {
        *root = value;
        return true;
    };
    // The nodes from the root down to the target's parent.
    let mut chain = Vec::with_capacity(parents.len() + 1);
    let mut node = root.clone();
    for segment in parents {
        let Some(next) = child(&node, segment) else {
            return false;
        };
        chain.push(node);
        node = next;
    }
    if !node.replace(last, value) {
        return false;
    }
    // A tree of references (JavaScript) has changed in place; a tree of values (serde_json)
    // needs each changed child put back into its parent.
    for segment in parents.iter().rev() {
        let Some(mut parent) = chain.pop() else {
            return false;
        };
        parent.replace(segment, node);
        node = parent;
    }
    *root = node;
    true
}

impl Tree for Value {
    fn null() -> Self {
        Value::Null
    }

    fn string(s: &str) -> Self {
        Value::String(s.to_owned())
    }

    fn number(n: f64) -> Self {
        const SAFE: f64 = 9_007_199_254_740_992.0; // 2^53
        if n.fract() == 0.0 && n.abs() <= SAFE {
            return Value::from(n as i64);
        }
        serde_json::Number::from_f64(n).map_or(Value::Null, Value::Number)
    }

    fn list(items: Vec<Self>) -> Self {
        Value::Array(items)
    }

    fn object(entries: Vec<(&str, Self)>) -> Self {
        Value::Object(
            entries
                .into_iter()
                .map(|(k, v)| (k.to_owned(), v))
                .collect(),
        )
    }

    fn get(&self, key: &str) -> Option<Self> {
        self.as_object()?.get(key).cloned()
    }

    fn item(&self, index: usize) -> Option<Self> {
        self.as_array()?.get(index).cloned()
    }

    fn list_len(&self) -> Option<usize> {
        self.as_array().map(Vec::len)
    }

    fn keys(&self) -> Option<Vec<String>> {
        Some(self.as_object()?.keys().cloned().collect())
    }

    fn as_str(&self) -> Option<String> {
        Value::as_str(self).map(str::to_owned)
    }

    fn as_f64(&self) -> Option<f64> {
        Value::as_f64(self)
    }

    fn is_null(&self) -> bool {
        Value::is_null(self)
    }

    fn is_object(&self) -> bool {
        Value::is_object(self)
    }

    fn replace(&mut self, segment: &Segment, value: Self) -> bool {
        let slot = match self {
            Value::Array(items) => segment.as_index().and_then(|i| items.get_mut(i)),
            Value::Object(map) => map.get_mut(&segment.to_string()),
            _ => None,
        };
        match slot {
            Some(slot) => {
                *slot = value;
                true
            }
            None => false,
        }
    }

    fn to_json(&self) -> String {
        self.to_string()
    }
}
