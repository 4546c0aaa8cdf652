//! Helpers shared by the browser tests: the fixtures' URLs, kites, calls with deadlines,
//! JavaScript functions made from Rust closures, and waiting for events.
//!
//! Every wait has a deadline, so that a test that goes wrong fails with a message instead of
//! hanging the whole run.

use std::cell::RefCell;
use std::future::Future;
use std::rc::Rc;

use futures_channel::{mpsc, oneshot};
use futures_util::StreamExt;
use futures_util::future::{Either, select};
use gloo_timers::future::TimeoutFuture;
use js_sys::{Array, Function, Reflect};
use kite_wasm::Kite;
use serde_json::Value;
use wasm_bindgen::JsCast;
use wasm_bindgen::convert::TryFromJsValue;
use wasm_bindgen::prelude::*;
use wasm_bindgen_futures::JsFuture;

/// The SockJS transports a kite can be forced to use.
pub const TRANSPORTS: [&str; 3] = ["websocket", "xhr-streaming", "xhr-polling"];

/// How long a call may take before the test gives up on it (calls that should time out
/// themselves use much shorter per-call timeouts).
pub const CALL_DEADLINE_MS: u32 = 15_000;

/// How long connecting may take.
pub const CONNECT_DEADLINE_MS: u32 = 10_000;

/// How long an awaited event may take.
pub const EVENT_DEADLINE_MS: u32 = 10_000;

// ---- fixtures ----

/// The fixtures' URLs, as `scripts/test-wasm` exported them when the tests were compiled.
pub fn fixtures() -> Value {
    let Some(raw) = option_env!("KITE_FIXTURES") else {
        panic!("KITE_FIXTURES is not set: run scripts/test-wasm (it starts the fixtures)");
    };
    serde_json::from_str(raw).unwrap_or_else(|e| panic!("KITE_FIXTURES is not JSON ({e}): {raw:?}"))
}

/// One fixture's URL: `control`, `math`, `noWebsocket`, `rawWebsocket`, `auth`, `kontrol`,
/// `restart` or `bad`.
pub fn fixture(name: &str) -> String {
    let all = fixtures();
    all[name]
        .as_str()
        .unwrap_or_else(|| panic!("KITE_FIXTURES has no {name:?} URL: {all}"))
        .to_owned()
}

/// The control server's URL with `path` (which starts with `/`).
pub fn control(path: &str) -> String {
    format!("{}{path}", fixture("control"))
}

// ---- deadlines ----

/// Runs `f`, panicking with `what` if it takes longer than `ms`.
pub async fn within<F: Future>(ms: u32, what: &str, f: F) -> F::Output {
    let f = std::pin::pin!(f);
    match select(f, TimeoutFuture::new(ms)).await {
        Either::Left((v, _)) => v,
        Either::Right(_) => panic!("timed out after {ms} ms: {what}"),
    }
}

/// Polls `check` every 20 ms until it holds, panicking after `ms` (for states that no event
/// announces).
pub async fn eventually(ms: u32, what: &str, mut check: impl FnMut() -> bool) {
    let deadline = now() + f64::from(ms);
    while !check() {
        if now() > deadline {
            panic!("not true after {ms} ms: {what}");
        }
        TimeoutFuture::new(20).await;
    }
}

/// Milliseconds since the epoch.
pub fn now() -> f64 {
    js_sys::Date::now()
}

// ---- values ----

/// A JSON value as a JavaScript value.
pub fn js(v: Value) -> JsValue {
    js_sys::JSON::parse(&v.to_string()).expect("JSON.parse of serde_json output")
}

/// A JavaScript value as JSON (`undefined` as `null`; functions are dropped, as
/// `JSON.stringify` does).
pub fn json(v: impl AsRef<JsValue>) -> Value {
    let v = v.as_ref();
    if v.is_undefined() {
        return Value::Null;
    }
    let text = js_sys::JSON::stringify(v)
        .unwrap_or_else(|e| panic!("JSON.stringify failed: {e:?}"))
        .as_string()
        .unwrap_or_else(|| "null".into());
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("not JSON ({e}): {text}"))
}

/// `obj[key]`.
pub fn get(obj: &JsValue, key: &str) -> JsValue {
    Reflect::get(obj, &JsValue::from_str(key)).unwrap_or(JsValue::UNDEFINED)
}

/// `obj[key] = value`.
pub fn set(obj: &JsValue, key: &str, value: &JsValue) {
    Reflect::set(obj, &JsValue::from_str(key), value).expect("Reflect.set");
}

/// A JavaScript function of `params` with `body` (for page methods, whose declared
/// parameters matter: a method that declares the callback answers through it).
pub fn js_function(params: &str, body: &str) -> Function {
    Function::new_with_args(params, body)
}

/// A JavaScript function of any number of arguments that runs `f` with them (as an array)
/// and returns what it returns.
pub fn js_fn(f: impl FnMut(Array) -> JsValue + 'static) -> Function {
    let closure = Closure::<dyn FnMut(Array) -> JsValue>::new(f);
    let wrap = Function::new_with_args("f", "return function (...args) { return f(args); };");
    wrap.call1(&JsValue::NULL, &closure.into_js_value())
        .expect("wrapping a closure")
        .unchecked_into()
}

/// A JavaScript function that records every argument list it is called with.
pub fn recorder() -> (Function, Rc<RefCell<Vec<Value>>>) {
    let seen = Rc::new(RefCell::new(Vec::new()));
    let s = seen.clone();
    let f = js_fn(move |args| {
        s.borrow_mut().push(json(&args));
        JsValue::UNDEFINED
    });
    (f, seen)
}

/// A JavaScript function that hands its first call's arguments to the receiver.
pub fn one_call() -> (Function, oneshot::Receiver<Array>) {
    let (tx, rx) = oneshot::channel();
    let mut tx = Some(tx);
    let f = js_fn(move |args| {
        if let Some(tx) = tx.take() {
            let _ = tx.send(args);
        }
        JsValue::UNDEFINED
    });
    (f, rx)
}

/// Awaits what [`one_call`]'s function was called with.
pub async fn called(rx: oneshot::Receiver<Array>, what: &str) -> Array {
    within(EVENT_DEADLINE_MS, what, rx)
        .await
        .unwrap_or_else(|_| panic!("{what}: the function was dropped without being called"))
}

// ---- kites ----

/// A kite with `options` (a JSON object; add functions with [`set`] and [`new_kite_js`]).
pub fn new_kite(options: Value) -> Kite {
    new_kite_js(js(options))
}

/// A kite with options given as a JavaScript object.
pub fn new_kite_js(options: JsValue) -> Kite {
    Kite::new(options).unwrap_or_else(|e| panic!("new Kite failed: {e:?}"))
}

/// The Rust `Kite` behind a JavaScript `Kite` object (which gives it up).
pub fn kite_from_js(v: JsValue) -> Kite {
    Kite::try_from_js_value(v).unwrap_or_else(|v| panic!("not a Kite: {v:?}"))
}

/// Waits until `kite` is connected.
pub async fn ready(kite: &Kite) {
    within(
        CONNECT_DEADLINE_MS,
        "kite.ready()",
        JsFuture::from(kite.ready(None)),
    )
    .await
    .expect("ready() rejected");
    assert_eq!(kite.state(), 1, "state once ready");
}

/// `kite.tell(method, ...args)`.
pub async fn call(kite: &Kite, method: &str, args: &[JsValue]) -> Result<JsValue, JsValue> {
    call_with(kite, method, args, JsValue::UNDEFINED).await
}

/// `kite.request(method, args, options)` (options such as `{timeout}`).
pub async fn call_with(
    kite: &Kite,
    method: &str,
    args: &[JsValue],
    options: JsValue,
) -> Result<JsValue, JsValue> {
    let list: Array = args.iter().collect();
    let promise = kite.request(method.to_owned(), Some(list), options);
    within(
        CALL_DEADLINE_MS,
        &format!("call {method}"),
        JsFuture::from(promise),
    )
    .await
}

/// A call that must succeed: its result as JSON.
pub async fn ok(kite: &Kite, method: &str, args: &[JsValue]) -> Value {
    match call(kite, method, args).await {
        Ok(v) => json(&v),
        Err(e) => panic!("{method} rejected: {:?}", KiteErr::from_js(&e)),
    }
}

/// `square(n)`, which must succeed.
pub async fn square(kite: &Kite, n: f64) -> f64 {
    let v = ok(kite, "square", &[JsValue::from_f64(n)]).await;
    v.as_f64()
        .unwrap_or_else(|| panic!("square({n}) answered {v}"))
}

/// A rejection's `KiteError` fields.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KiteErr {
    /// `name` (`KiteError` for every error of the client).
    pub name: String,
    /// `type`, e.g. `timeout`.
    pub kind: String,
    /// `message`.
    pub message: String,
    /// `code`.
    pub code: String,
}

impl KiteErr {
    /// Reads the fields of a rejection value.
    pub fn from_js(v: &JsValue) -> KiteErr {
        let text = |key: &str| get(v, key).as_string().unwrap_or_default();
        KiteErr {
            name: text("name"),
            kind: text("type"),
            message: text("message"),
            code: text("code"),
        }
    }
}

/// The error a call that must fail failed with; checks that it is a `KiteError` and an `Error`.
pub fn rejected(result: Result<JsValue, JsValue>, what: &str) -> KiteErr {
    match result {
        Ok(v) => panic!("{what}: resolved with {} instead of rejecting", json(&v)),
        Err(e) => {
            assert!(
                e.is_instance_of::<js_sys::Error>(),
                "{what}: rejected with a non-Error {e:?}"
            );
            let err = KiteErr::from_js(&e);
            assert_eq!(err.name, "KiteError", "{what}: {err:?}");
            err
        }
    }
}

// ---- events ----

/// Every emission of one event of a kite, in order.
#[derive(Debug)]
pub struct Events {
    name: String,
    rx: mpsc::UnboundedReceiver<Array>,
    /// The listener, for `off`.
    pub listener: Function,
}

/// Listens to `event` on `kite` from now on.
pub fn listen(kite: &Kite, event: &str) -> Events {
    let (tx, rx) = mpsc::unbounded();
    let listener = js_fn(move |args| {
        let _ = tx.unbounded_send(args);
        JsValue::UNDEFINED
    });
    kite.on(event.to_owned(), listener.clone());
    Events {
        name: event.to_owned(),
        rx,
        listener,
    }
}

impl Events {
    /// The arguments of the next emission (waits up to `ms`).
    pub async fn next_within(&mut self, ms: u32) -> Array {
        let name = self.name.clone();
        within(ms, &format!("the {name:?} event"), self.rx.next())
            .await
            .unwrap_or_else(|| panic!("the {name:?} listener was dropped"))
    }

    /// The arguments of the next emission.
    pub async fn next(&mut self) -> Array {
        self.next_within(EVENT_DEADLINE_MS).await
    }

    /// The next emission, `None` if the listener is gone (for use with [`within`] and a
    /// deadline of one's own).
    pub async fn rx_next(&mut self) -> Option<Array> {
        self.rx.next().await
    }

    /// The emissions received so far and not read yet.
    pub fn drain(&mut self) -> Vec<Array> {
        let mut out = Vec::new();
        while let Ok(args) = self.rx.try_recv() {
            out.push(args);
        }
        out
    }
}

/// Waits for the next emission of `event` (a `once` listener), up to `ms`.
pub fn once(kite: &Kite, event: &str) -> oneshot::Receiver<Array> {
    let (f, rx) = one_call();
    kite.once(event.to_owned(), f);
    rx
}

// ---- HTTP (the control server) ----

/// `GET url`, which must answer 2xx: its body.
pub async fn http_get(url: &str) -> String {
    within(CALL_DEADLINE_MS, &format!("GET {url}"), async {
        let r = gloo_net::http::Request::get(url)
            .send()
            .await
            .unwrap_or_else(|e| panic!("GET {url}: {e}"));
        let status = r.status();
        let body = r.text().await.unwrap_or_default();
        assert!(r.ok(), "GET {url}: HTTP {status}: {body}");
        body
    })
    .await
}

/// `POST url` with no body, which must answer 2xx: its body.
pub async fn http_post(url: &str) -> String {
    within(CALL_DEADLINE_MS, &format!("POST {url}"), async {
        let r = gloo_net::http::Request::post(url)
            .send()
            .await
            .unwrap_or_else(|e| panic!("POST {url}: {e}"));
        let status = r.status();
        let body = r.text().await.unwrap_or_default();
        assert!(r.ok(), "POST {url}: HTTP {status}: {body}");
        body
    })
    .await
}

/// A token for the `auth` kite valid for `ttl` seconds (negative: already expired).
pub async fn token(ttl: i64) -> String {
    http_get(&control(&format!("/token?ttl={ttl}"))).await
}

/// A name no other run has used (for kites spawned in Kontrol).
pub fn unique(prefix: &str) -> String {
    format!(
        "{prefix}-{}-{}",
        now() as u64,
        (js_sys::Math::random() * 1e9) as u64
    )
}
