//! Values crossing between JavaScript and the dnode protocol.
//!
//! Messages stay JavaScript values: the engine's `JSON.parse` and `JSON.stringify` read and write
//! the text, and kite-core's [`TreeConnection`](kite_core::tree::TreeConnection) applies the
//! protocol to the values through [`Js`], their [`Tree`] implementation. Values to send are
//! copied with every function inside turned into a dnode callback that the peer may call any
//! number of times; received values get every callback of the peer as a plain JavaScript
//! function (`f(...args)` sends the call and returns at once).

use js_sys::{Array, Function, JSON, Object, Reflect};
use kite_core::KiteError;
use kite_core::dnode::{Path, Segment};
use kite_core::tree::{Outgoing, Received, Tree};
use wasm_bindgen::prelude::*;

use crate::error;
use crate::kite::Inner;

/// How deep a value may nest before it is refused (a cycle would recurse forever).
const MAX_DEPTH: usize = 100;

/// What goes out: a JavaScript value with the page's functions in it.
pub(crate) type Wire = Outgoing<Js, Function>;

#[wasm_bindgen(
    inline_js = "export function variadic(f) { return function (...args) { return f(args); }; }"
)]
extern "C" {
    /// Wraps a function of one array into a function of any number of arguments.
    fn variadic(f: &JsValue) -> Function;
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

    /// The value as JSON text in a JavaScript string, ready to send.
    pub(crate) fn text(&self) -> JsValue {
        JSON::stringify(&self.0).map_or(JsValue::NULL, JsValue::from)
    }

    /// The value as JSON text (the engine's `JSON.stringify`).
    pub(crate) fn stringify(&self) -> String {
        JSON::stringify(&self.0)
            .ok()
            .and_then(|s| s.as_string())
            .unwrap_or_else(|| "null".to_owned())
    }
}

thread_local! {
    /// The strings every message reads or writes, made into JavaScript strings once: passing a
    /// Rust string to JavaScript decodes it each time.
    static COMMON: Vec<(&'static str, JsValue)> = [
        "method", "arguments", "callbacks", "kite", "authentication", "responseCallback",
        "withArgs", "error", "result", "[Function]", "type", "message", "code", "id", "key",
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

/// A copy of `v` as `JSON.stringify` would see it, except that functions are kept (replaced
/// by `"[Function]"`, their path recorded), `undefined` in a list is `null`, and a `BigInt`
/// is a number.
fn copy(
    v: &JsValue,
    path: &mut Path,
    functions: &mut Vec<(Path, Function)>,
    depth: usize,
) -> Result<JsValue, KiteError> {
    if depth > MAX_DEPTH {
        return Err(KiteError::argument(
            "cannot send arguments: nested too deeply (a cycle?)",
        ));
    }
    if v.is_undefined() {
        return Ok(JsValue::NULL);
    }
    if v.is_bigint() {
        // Number(n): exact up to 2^53, the nearest double beyond (JSON has no big integers
        // that every peer reads exactly).
        return Ok(to_number(v).into());
    }
    if let Some(f) = v.dyn_ref::<Function>() {
        functions.push((path.clone(), f.clone()));
        return Ok(JsValue::from_str("[Function]"));
    }
    if !v.is_object() {
        return Ok(v.clone()); // null, booleans, numbers, strings (symbols are dropped later)
    }
    if let Some(array) = v.dyn_ref::<Array>() {
        let out = Array::new_with_length(array.length());
        for (i, item) in array.iter().enumerate() {
            path.push(Segment::Index(i));
            out.set(i as u32, copy(&item, path, functions, depth + 1)?);
            path.pop();
        }
        return Ok(out.into());
    }
    // Dates and other objects that say how they serialize.
    if let Ok(to_json) = Reflect::get(v, &JsValue::from_str("toJSON"))
        && let Some(to_json) = to_json.dyn_ref::<Function>()
    {
        let plain = to_json.call0(v).map_err(|e| error::from_js(&e))?;
        return copy(&plain, path, functions, depth + 1);
    }
    // Without a prototype, a member named `__proto__` is a member like any other.
    let out: Object = Object::create(JsValue::NULL.unchecked_ref());
    for entry in Object::entries(v.unchecked_ref::<Object>()).iter() {
        let pair: Array = entry.unchecked_into();
        let (k, item) = (pair.get(0), pair.get(1));
        if item.is_undefined() {
            continue;
        }
        path.push(Segment::Key(k.as_string().unwrap_or_default()));
        let value = copy(&item, path, functions, depth + 1)?;
        path.pop();
        let _ = Reflect::set(&out, &k, &value);
    }
    Ok(out.into())
}
