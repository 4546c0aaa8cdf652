//! Values crossing between JavaScript and the dnode protocol.
//!
//! Messages stay JavaScript values: the engine's `JSON.parse` and `JSON.stringify` read and write
//! the text, and kite-core's [`TreeConnection`](kite_core::tree::TreeConnection) applies the
//! protocol to the values through [`Js`], their [`Tree`] implementation. Values to send are
//! copied with every function inside turned into a dnode callback that the peer may call any
//! number of times; received values get every callback of the peer as a plain JavaScript
//! function (`f(...args)` sends the call and returns at once).

use std::cell::RefCell;

use js_sys::{Array, Function, JSON, Object, Reflect};
use kite_core::KiteError;
use kite_core::dnode::{Path, Segment};
use kite_core::identity::Kite;
use kite_core::tree::{Outgoing, Received, Tree};
use wasm_bindgen::prelude::*;

use crate::error;
use crate::kite::Inner;

/// How deep a value to send may nest: Go's limit (a cycle reaches it too, and is refused).
const MAX_DEPTH: usize = kite_core::dnode::depth::MAX_DEPTH;

/// What goes out: a JavaScript value with the page's functions in it.
pub(crate) type Wire = Outgoing<Js, Function>;

#[wasm_bindgen(
    inline_js = "export function variadic(f) { return function (...args) { return f(args); }; }
export function stringifyDeep(root) {
  const out = [], todo = [0, root];
  while (todo.length) {
    const v = todo.pop(), literal = todo.pop();
    if (literal) { out.push(v); continue; }
    if (Array.isArray(v)) {
      out.push('['); todo.push(1, ']');
      for (let i = v.length - 1; i >= 0; i--) { todo.push(0, v[i] === undefined ? null : v[i]); if (i) todo.push(1, ','); }
    } else if (v !== null && typeof v === 'object') {
      const keys = Object.keys(v).filter((k) => v[k] !== undefined);
      out.push('{'); todo.push(1, '}');
      for (let i = keys.length - 1; i >= 0; i--) { todo.push(0, v[keys[i]], 1, JSON.stringify(keys[i]) + ':'); if (i) todo.push(1, ','); }
    } else out.push(JSON.stringify(v) ?? 'null');
  }
  return out.join('');
}"
)]
extern "C" {
    /// Wraps a function of one array into a function of any number of arguments.
    fn variadic(f: &JsValue) -> Function;
    /// `JSON.stringify` of a message without recursion: for values nested deeper than the
    /// engine's own stringifier can go (a few thousand levels in V8), which its parser reads.
    #[wasm_bindgen(js_name = stringifyDeep)]
    fn stringify_deep(value: &JsValue) -> JsValue;
}

#[wasm_bindgen]
extern "C" {
    /// JavaScript's `Number(value)` (which, unlike `valueOf`, converts a `BigInt`).
    #[wasm_bindgen(js_name = Number)]
    fn to_number(value: &JsValue) -> f64;
}

/// A JavaScript value seen as a JSON document.
#[derive(Debug, Clone)]
pub(crate) struct Js(pub(crate) JsValue);

#[wasm_bindgen]
extern "C" {
    /// `JSON.parse` of a JavaScript string, which stays on the JavaScript side.
    #[wasm_bindgen(js_namespace = JSON, js_name = parse, catch)]
    pub(crate) fn parse_js(text: &JsValue) -> Result<JsValue, JsValue>;
}

impl Js {
    /// Parses a message (a JavaScript string) with the engine's parser.
    pub(crate) fn parse(text: &JsValue) -> Result<Js, JsValue> {
        parse_js(text).map(Js)
    }

    /// The value as JSON text in a JavaScript string, ready to send (the engine's
    /// `JSON.stringify`, or for a value too deep for it, the same text written without
    /// recursion).
    pub(crate) fn text(&self) -> JsValue {
        JSON::stringify(&self.0).map_or_else(|_| stringify_deep(&self.0), JsValue::from)
    }

    /// The value as JSON text.
    pub(crate) fn stringify(&self) -> String {
        self.text().as_string().unwrap_or_else(|| "null".to_owned())
    }
}

thread_local! {
    /// The strings every message reads or writes, made into JavaScript strings once: passing a
    /// Rust string to JavaScript decodes it each time.
    static COMMON: Vec<(&'static str, JsValue)> = [
        "method", "arguments", "callbacks", "kite", "authentication", "responseCallback",
        "withArgs", "error", "result", "[Function]", "type", "message", "code", "id", "key",
        "peer", "username",
    ]
    .into_iter()
    .map(|s| (s, JsValue::from_str(s)))
    .collect();
}

/// `s` as a JavaScript string, from [`COMMON`] when it is one of those.
fn js_str(s: &str) -> JsValue {
    COMMON
        .with(|common| common.iter().find(|(c, _)| *c == s).map(|(_, v)| v.clone()))
        .unwrap_or_else(|| JsValue::from_str(s))
}

fn key(segment: &Segment) -> JsValue {
    match segment {
        Segment::Index(i) => JsValue::from_f64(*i as f64),
        Segment::Key(k) => js_str(k),
    }
}

/// Whether `v` is an array.
fn is_array(v: &JsValue) -> bool {
    Array::is_array(v)
}

impl Tree for Js {
    fn null() -> Self {
        Js(JsValue::NULL)
    }

    fn string(s: &str) -> Self {
        Js(js_str(s))
    }

    fn number(n: f64) -> Self {
        Js(JsValue::from_f64(n))
    }

    fn list(items: Vec<Self>) -> Self {
        Js(items.into_iter().map(|i| i.0).collect::<Array>().into())
    }

    fn object(entries: Vec<(&str, Self)>) -> Self {
        let object = Object::new();
        for (k, v) in entries {
            let _ = Reflect::set(&object, &js_str(k), &v.0);
        }
        Js(object.into())
    }

    fn get(&self, key: &str) -> Option<Self> {
        if !self.0.is_object() || is_array(&self.0) {
            return None;
        }
        let key = js_str(key);
        // Own members only: a path naming `constructor` or `__proto__` must not reach (or
        // replace) what the object inherits.
        if !Object::has_own(self.0.unchecked_ref::<Object>(), &key) {
            return None;
        }
        Reflect::get(&self.0, &key).ok().map(Js)
    }

    fn item(&self, index: usize) -> Option<Self> {
        let array: &Array = self.0.dyn_ref()?;
        (index < array.length() as usize).then(|| Js(array.get(index as u32)))
    }

    fn list_len(&self) -> Option<usize> {
        self.0.dyn_ref::<Array>().map(|a| a.length() as usize)
    }

    fn keys(&self) -> Option<Vec<String>> {
        if !self.0.is_object() || is_array(&self.0) {
            return None;
        }
        Some(
            Object::keys(self.0.unchecked_ref::<Object>())
                .iter()
                .filter_map(|k| k.as_string())
                .collect(),
        )
    }

    fn as_str(&self) -> Option<String> {
        self.0.as_string()
    }

    fn as_f64(&self) -> Option<f64> {
        self.0.as_f64()
    }

    fn is_null(&self) -> bool {
        self.0.is_null() || self.0.is_undefined()
    }

    fn is_object(&self) -> bool {
        self.0.is_object() && !is_array(&self.0)
    }

    fn identity(&self) -> Kite {
        thread_local! {
            /// The identity read last, which `sameIdentity` (kite-extras.js) remembers too.
            static LAST: RefCell<Kite> = RefCell::default();
        }
        // One call into JavaScript, where reading is three per member.
        if crate::extras::same_identity(&self.0) {
            return LAST.with(|last| last.borrow().clone());
        }
        let kite = Kite::from_tree(self);
        LAST.with(|last| *last.borrow_mut() = kite.clone());
        kite
    }

    fn replace(&mut self, segment: &Segment, value: Self) -> bool {
        let exists = match self.0.dyn_ref::<Array>() {
            Some(array) => segment
                .as_index()
                .is_some_and(|i| i < array.length() as usize),
            None => {
                self.0.is_object()
                    && Object::has_own(self.0.unchecked_ref::<Object>(), &key(segment))
            }
        };
        exists && Reflect::set(&self.0, &key(segment), &value.0).unwrap_or(false)
    }

    fn to_json(&self) -> String {
        self.stringify()
    }
}

/// A JavaScript function calling the peer's callback `id` on connection `generation` of
/// `kite`. It throws a `KiteError` when that connection has ended or its arguments cannot be
/// sent.
fn remote_function(kite: u64, generation: u64, id: u64) -> JsValue {
    let call = Closure::<dyn Fn(Array) -> Result<JsValue, JsValue>>::new(move |args: Array| {
        let wire = list_to_wire(args.iter()).map_err(|e| error::to_js(&e))?;
        let inner = Inner::by_key(kite).ok_or_else(|| error::to_js(&KiteError::disconnect()))?;
        inner
            .send_invocation(generation, id, wire)
            .map_err(|e| error::to_js(&e))?;
        Ok(JsValue::UNDEFINED)
    });
    variadic(&call.into_js_value()).into()
}

/// A received value (a result, arguments) as a JavaScript value whose callbacks call the peer
/// on connection `generation` of `kite`.
pub(crate) fn from_wire(received: Received<Js>, kite: u64, generation: u64) -> JsValue {
    received
        .resolve(|id| Js(remote_function(kite, generation, id)))
        .0
}

/// Received arguments as a JavaScript array (a non-list becomes its only element).
pub(crate) fn args_from_wire(received: Received<Js>, kite: u64, generation: u64) -> Array {
    let value = from_wire(received.into_list(), kite, generation);
    value.dyn_into().unwrap_or_else(|v| Array::of1(&v))
}

/// JavaScript values as an argument list to send, functions turned into callbacks.
pub(crate) fn list_to_wire(items: impl Iterator<Item = JsValue>) -> Result<Wire, KiteError> {
    let mut functions = Vec::new();
    let mut path = vec![Segment::Index(0)];
    let list = Array::new();
    for (i, item) in items.enumerate() {
        path[0] = Segment::Index(i);
        list.push(&copy(&item, &mut path, &mut functions, 0)?);
    }
    Ok(Outgoing {
        value: Js(list.into()),
        functions,
    })
}

/// One JavaScript value to send (a result), functions turned into callbacks.
pub(crate) fn to_wire(value: &JsValue) -> Result<Wire, KiteError> {
    let mut functions = Vec::new();
    let value = copy(value, &mut Vec::new(), &mut functions, 0)?;
    Ok(Outgoing {
        value: Js(value),
        functions,
    })
}

/// What is left of a [`copy`]: a value to copy into a place of its parent, or the end of a
/// list or object (its path segment goes).
enum Step {
    Enter {
        value: JsValue,
        /// Where the copy goes: a parent and its key (the root has none).
        into: Option<(JsValue, JsValue)>,
        segment: Option<Segment>,
        depth: usize,
    },
    /// A list or object is done: its segment (if it was entered with one) leaves the path.
    Leave { pop: bool },
}

/// A copy of `v` as `JSON.stringify` would see it, except that functions are kept (replaced
/// by `"[Function]"`, their path, from `path`, recorded), `undefined` in a list is `null`,
/// and a `BigInt` is a number. Without recursion, so that values as deep as Go kites accept
/// ([`MAX_DEPTH`] levels below `depth`) are copied; deeper ones (a cycle, say) are an
/// `argumentError`.
fn copy(
    v: &JsValue,
    path: &mut Path,
    functions: &mut Vec<(Path, Function)>,
    depth: usize,
) -> Result<JsValue, KiteError> {
    let root = Array::of1(&JsValue::NULL);
    let mut todo = vec![Step::Enter {
        value: v.clone(),
        into: Some((root.clone().into(), JsValue::from_f64(0.0))),
        segment: None,
        depth,
    }];
    while let Some(step) = todo.pop() {
        let (value, into, segment, depth) = match step {
            Step::Enter {
                value,
                into,
                segment,
                depth,
            } => (value, into, segment, depth),
            Step::Leave { pop } => {
                if pop {
                    path.pop();
                }
                continue;
            }
        };
        if depth > MAX_DEPTH {
            return Err(KiteError::argument(format!(
                "cannot send arguments: nested more than {MAX_DEPTH} levels deep (a cycle?)"
            )));
        }
        let entered = segment.is_some();
        if let Some(segment) = segment {
            path.push(segment);
        }
        let set = |copy: &JsValue| {
            if let Some((parent, key)) = &into {
                let _ = Reflect::set(parent, key, copy);
            }
        };
        let container = if value.is_undefined() {
            set(&JsValue::NULL);
            false
        } else if value.is_bigint() {
            // Number(n): exact up to 2^53, the nearest double beyond (JSON has no big
            // integers that every peer reads exactly).
            set(&to_number(&value).into());
            false
        } else if let Some(f) = value.dyn_ref::<Function>() {
            functions.push((path.clone(), f.clone()));
            set(&JsValue::from_str("[Function]"));
            false
        } else if !value.is_object() {
            set(&value); // null, booleans, numbers, strings (symbols are dropped later)
            false
        } else if let Some(array) = value.dyn_ref::<Array>() {
            let out = Array::new_with_length(array.length());
            set(&out);
            todo.push(Step::Leave { pop: entered });
            let parent: JsValue = out.into();
            for i in (0..array.length()).rev() {
                todo.push(Step::Enter {
                    value: array.get(i),
                    into: Some((parent.clone(), JsValue::from_f64(f64::from(i)))),
                    segment: Some(Segment::Index(i as usize)),
                    depth: depth + 1,
                });
            }
            true
        } else if let Ok(to_json) = Reflect::get(&value, &JsValue::from_str("toJSON"))
            && let Some(to_json) = to_json.dyn_ref::<Function>()
        {
            // Dates and other objects that say how they serialize: their plain value, here.
            let plain = to_json.call0(&value).map_err(|e| error::from_js(&e))?;
            todo.push(Step::Leave { pop: entered });
            todo.push(Step::Enter {
                value: plain,
                into,
                segment: None,
                depth: depth + 1,
            });
            true
        } else {
            // Without a prototype, a member named `__proto__` is a member like any other.
            let out: Object = Object::create(JsValue::NULL.unchecked_ref());
            set(&out);
            todo.push(Step::Leave { pop: entered });
            let parent: JsValue = out.into();
            let entries = Object::entries(value.unchecked_ref::<Object>());
            for entry in entries.iter().collect::<Vec<_>>().into_iter().rev() {
                let pair: Array = entry.unchecked_into();
                let (k, item) = (pair.get(0), pair.get(1));
                if item.is_undefined() {
                    continue;
                }
                todo.push(Step::Enter {
                    segment: Some(Segment::Key(k.as_string().unwrap_or_default())),
                    value: item,
                    into: Some((parent.clone(), k)),
                    depth: depth + 1,
                });
            }
            true
        };
        // A container's segment goes at its `Leave`; a leaf's now.
        if !container && entered {
            path.pop();
        }
    }
    Ok(root.get(0))
}
