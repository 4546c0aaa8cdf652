//! Values crossing between JavaScript and the dnode protocol.
//!
//! JavaScript values become JSON with every function inside them turned into a dnode callback
//! that the peer may call any number of times; received values become JavaScript values with
//! every callback of the peer turned into a plain JavaScript function (`f(...args)` sends the
//! call and returns at once).

use std::cell::{Cell, RefCell};
use std::collections::HashMap;

use js_sys::{Array, Function, Object, Reflect};
use kite_core::dnode::{Path, Scrubbed, Segment};
use kite_core::{Args, Callback, KiteError};
use serde_json::{Map, Number, Value};
use wasm_bindgen::prelude::*;

use crate::error;

/// How deep a value may nest before it is refused (a cycle would recurse forever).
const MAX_DEPTH: usize = 100;

#[wasm_bindgen(
    inline_js = "export function variadic(f) { return function (...args) { return f(args); }; }"
)]
extern "C" {
    /// Wraps a function of one array into a function of any number of arguments.
    fn variadic(f: &JsValue) -> Function;
}

thread_local! {
    /// The JavaScript functions we sent to peers, by key. A [`Callback`] refers to its function
    /// by key (callbacks must be `Send`, JavaScript values are not) and removes it when the
    /// last copy of the callback is dropped, i.e. when the connection that held it ends.
    static FUNCTIONS: RefCell<HashMap<u64, Function>> = RefCell::new(HashMap::new());
    static NEXT_KEY: Cell<u64> = const { Cell::new(0) };
}

/// Removes its function from [`FUNCTIONS`] when dropped.
struct FunctionKey(u64);

impl FunctionKey {
    /// The key (a method, so that closures capture the whole `FunctionKey`, not its `u64`).
    fn get(&self) -> u64 {
        self.0
    }
}

impl Drop for FunctionKey {
    fn drop(&mut self) {
        let _ = FUNCTIONS.try_with(|f| f.borrow_mut().remove(&self.0));
    }
}

/// JavaScript functions currently reachable by peers (for tests of leaks).
pub(crate) fn live_functions() -> usize {
    FUNCTIONS.with(|f| f.borrow().len())
}

/// A callback that runs the JavaScript function `f` with the received arguments.
fn local_callback(f: Function) -> Callback {
    let key = NEXT_KEY.with(|n| {
        let k = n.get();
        n.set(k + 1);
        k
    });
    FUNCTIONS.with(|m| m.borrow_mut().insert(key, f));
    let key = FunctionKey(key);
    Callback::new(move |args: Args| {
        let Some(f) = FUNCTIONS.with(|m| m.borrow().get(&key.get()).cloned()) else {
            return;
        };
        if let Err(e) = f.apply(&JsValue::NULL, &args_to_js(args)) {
            web_sys::console::error_2(&"kite: a callback threw".into(), &e);
        }
    })
}

/// A JavaScript function calling the peer's callback `cb`. It throws a `KiteError` when the
/// connection it came on has ended or its arguments cannot be sent.
fn remote_function(cb: Callback) -> JsValue {
    let call = Closure::<dyn Fn(Array) -> Result<JsValue, JsValue>>::new(move |args: Array| {
        let scrubbed = list_from_js(args.iter()).map_err(|e| error::to_js(&e))?;
        cb.call_scrubbed(scrubbed).map_err(|e| error::to_js(&e))?;
        Ok(JsValue::UNDEFINED)
    });
    variadic(&call.into_js_value()).into()
}

/// Received arguments as a JavaScript array (a non-list becomes its only element).
pub(crate) fn args_to_js(args: Args) -> Array {
    let value = to_js(args);
    if Array::is_array(&value) {
        value.unchecked_into()
    } else {
        Array::of1(&value)
    }
}

/// A received value (a result, an argument) as a JavaScript value with callable functions.
pub(crate) fn to_js(args: Args) -> JsValue {
    let Scrubbed { value, callbacks } = args.into_scrubbed();
    let mut root = json_to_js(&value);
    for (path, cb) in callbacks {
        let f = remote_function(cb);
        let Some((last, parents)) = path.split_last() else {
            root = f;
            continue;
        };
        let mut node = root.clone();
        for segment in parents {
            node = Reflect::get(&node, &key(segment)).unwrap_or(JsValue::UNDEFINED);
        }
        if node.is_object() {
            let _ = Reflect::set(&node, &key(last), &f);
        }
    }
    root
}

/// A JSON value as a JavaScript value (through `JSON.parse`, which is fast and small).
pub(crate) fn json_to_js(value: &Value) -> JsValue {
    js_sys::JSON::parse(&value.to_string()).unwrap_or(JsValue::NULL)
}

fn key(segment: &Segment) -> JsValue {
    match segment {
        Segment::Index(i) => JsValue::from_f64(*i as f64),
        Segment::Key(k) => JsValue::from_str(k),
    }
}

/// JavaScript values as an argument list to send, functions turned into callbacks.
pub(crate) fn list_from_js(items: impl Iterator<Item = JsValue>) -> Result<Scrubbed, KiteError> {
    let mut callbacks = Vec::new();
    let mut path = vec![Segment::Index(0)];
    let mut list = Vec::new();
    for (i, item) in items.enumerate() {
        path[0] = Segment::Index(i);
        list.push(walk(&item, &mut path, &mut callbacks, 0)?);
    }
    Ok(Scrubbed {
        value: Value::Array(list),
        callbacks,
    })
}

/// One JavaScript value to send (a result), functions turned into callbacks.
pub(crate) fn from_js(value: &JsValue) -> Result<Scrubbed, KiteError> {
    let mut callbacks = Vec::new();
    let value = walk(value, &mut Vec::new(), &mut callbacks, 0)?;
    Ok(Scrubbed { value, callbacks })
}

/// A JavaScript value as JSON, as `JSON.stringify` would write it, except that functions are
/// kept (as `"[Function]"` with their path recorded) and `undefined` in a list is `null`.
fn walk(
    v: &JsValue,
    path: &mut Path,
    callbacks: &mut Vec<(Path, Callback)>,
    depth: usize,
) -> Result<Value, KiteError> {
    if depth > MAX_DEPTH {
        return Err(KiteError::argument(
            "cannot send arguments: nested too deeply (a cycle?)",
        ));
    }
    if v.is_null() || v.is_undefined() {
        return Ok(Value::Null);
    }
    if let Some(b) = v.as_bool() {
        return Ok(Value::Bool(b));
    }
    if let Some(n) = v.as_f64() {
        return Ok(number(n));
    }
    if let Some(s) = v.as_string() {
        return Ok(Value::String(s));
    }
    if v.is_bigint() {
        let text = String::from(
            js_sys::BigInt::unchecked_from_js_ref(v)
                .to_string(10)
                .unwrap_or_else(|_| "0".into()),
        );
        return Ok(text
            .parse::<Number>()
            .map_or(Value::String(text), Value::Number));
    }
    if let Some(f) = v.dyn_ref::<Function>() {
        callbacks.push((path.clone(), local_callback(f.clone())));
        return Ok(Value::String("[Function]".into()));
    }
    if Array::is_array(v) {
        let array: &Array = v.unchecked_ref();
        let mut out = Vec::with_capacity(array.length() as usize);
        for (i, item) in array.iter().enumerate() {
            path.push(Segment::Index(i));
            out.push(walk(&item, path, callbacks, depth + 1)?);
            path.pop();
        }
        return Ok(Value::Array(out));
    }
    if v.is_object() {
        // Dates and other objects that say how they serialize.
        if let Ok(to_json) = Reflect::get(v, &JsValue::from_str("toJSON"))
            && let Some(to_json) = to_json.dyn_ref::<Function>()
        {
            let plain = to_json.call0(v).map_err(|e| error::from_js(&e))?;
            return walk(&plain, path, callbacks, depth + 1);
        }
        let mut out = Map::new();
        for entry in Object::entries(v.unchecked_ref()).iter() {
            let pair: Array = entry.unchecked_into();
            let (k, item) = (pair.get(0).as_string().unwrap_or_default(), pair.get(1));
            if item.is_undefined() {
                continue;
            }
            path.push(Segment::Key(k.clone()));
            let value = walk(&item, path, callbacks, depth + 1)?;
            path.pop();
            out.insert(k, value);
        }
        return Ok(Value::Object(out));
    }
    // Symbols and the like: what JSON.stringify does (nothing sensible), as null.
    Ok(Value::Null)
}

/// A JavaScript number as JSON: whole numbers without a fraction (`16`, not `16.0`), NaN and
/// infinities as `null` (as `JSON.stringify`).
fn number(n: f64) -> Value {
    const SAFE: f64 = 9_007_199_254_740_992.0; // 2^53
    if n.fract() == 0.0 && n.abs() <= SAFE {
        return Value::Number((n as i64).into());
    }
    Number::from_f64(n).map_or(Value::Null, Value::Number)
}
