//! Methods served by the page (`api` option and `handle`), called by the native `math` kite
//! through its `callPage(method, ...args)`, over each SockJS transport.
#![cfg(target_arch = "wasm32")]

#[allow(dead_code)]
mod common;

use common::*;
use js_sys::Object;
use serde_json::json;
use wasm_bindgen::prelude::*;
use wasm_bindgen_test::*;

wasm_bindgen_test_configure!(run_in_browser);

/// The page's methods, written in JavaScript (their declared parameters matter).
fn api() -> JsValue {
    let api: JsValue = Object::new().into();
    let method = |name: &str, params: &str, body: &str| {
        set(&api, name, &js_function(params, body));
    };
    method("greet", "name", "return 'hi ' + name;");
    method(
        "failing",
        "",
        "throw { type: 'pageError', message: 'page failed ✗', code: 'P1' };",
    );
    method(
        "throwsError",
        "",
        "const e = new Error('a real Error'); e.type = 'pageError'; e.code = 'P4'; throw e;",
    );
    method(
        "later",
        "x",
        "return new Promise(function (resolve) { setTimeout(function () { resolve(x * 2); }, 30); });",
    );
    method(
        "laterFails",
        "",
        "return Promise.reject({ type: 'pageError', message: 'rejected', code: 'P3' });",
    );
    method(
        "callbackStyle",
        "name, cb",
        "setTimeout(function () { cb(null, 'cb ' + name); }, 10);",
    );
    method(
        "callbackError",
        "cb",
        "cb({ type: 'pageError', message: 'callback failed', code: 'P2' });",
    );
    method(
        "sum",
        "",
        "let s = 0; for (let i = 0; i < arguments.length - 2; i++) s += arguments[i]; return s;",
    );
    method(
        "meta",
        "cb, meta",
        "return { method: meta.method, caller: meta.kite.name, username: meta.kite.username };",
    );
    method("nothing", "", "return undefined;");
    method("throwsString", "", "throw 'just a string';");
    method("makeAdder", "n", "return function (x, cb) { cb(x + n); };");
    // Requires authentication, and the page has no `authenticate` function.
    let secret = Object::new();
    set(&secret, "func", &js_function("", "return 'secret';"));
    set(&secret, "auth", &JsValue::TRUE);
    set(&api, "secret", &secret);
    // Its own check, which refuses.
    let guarded = Object::new();
    set(&guarded, "func", &js_function("", "return 'guarded';"));
    set(
        &guarded,
        "auth",
        &js_function("auth, kite", "return false;"),
    );
    set(&api, "guarded", &guarded);
    api
}

async fn page_methods(transport: &str) {
    let options = js(json!({ "url": fixture("math"), "transports": [transport] }));
    set(&options, "api", &api());
    let kite = new_kite_js(options);
    ready(&kite).await;
    let call_page = |args: Vec<JsValue>| {
        let kite = &kite;
        async move { call(kite, "callPage", &args).await }
    };

    assert_eq!(
        json(
            call_page(vec!["greet".into(), "bob".into()])
                .await
                .expect("greet")
        ),
        json!("hi bob"),
        "over {transport}"
    );

    // A thrown error object reaches the caller, and back to us, with its fields.
    let err = rejected(call_page(vec!["failing".into()]).await, "failing");
    assert_eq!(
        (err.kind.as_str(), err.message.as_str(), err.code.as_str()),
        ("pageError", "page failed ✗", "P1"),
        "{err:?}"
    );
    let err = rejected(call_page(vec!["throwsError".into()]).await, "throwsError");
    assert_eq!(
        (err.kind.as_str(), err.message.as_str(), err.code.as_str()),
        ("pageError", "a real Error", "P4"),
        "{err:?}"
    );

    // A returned promise is awaited.
    assert_eq!(
        json(
            call_page(vec!["later".into(), JsValue::from(21)])
                .await
                .expect("later")
        ),
        json!(42)
    );
    let err = rejected(call_page(vec!["laterFails".into()]).await, "laterFails");
    assert_eq!(
        (err.kind.as_str(), err.message.as_str(), err.code.as_str()),
        ("pageError", "rejected", "P3"),
        "{err:?}"
    );

    // A method declaring the callback answers through it.
    assert_eq!(
        json(
            call_page(vec!["callbackStyle".into(), "ann".into()])
                .await
                .expect("callbackStyle")
        ),
        json!("cb ann")
    );
    let err = rejected(
        call_page(vec!["callbackError".into()]).await,
        "callbackError",
    );
    assert_eq!(
        (err.kind.as_str(), err.message.as_str(), err.code.as_str()),
        ("pageError", "callback failed", "P2"),
        "{err:?}"
    );

    // Every argument arrives; the callback and the meta object follow them.
    let args: Vec<JsValue> = std::iter::once("sum".into())
        .chain((1..=10).map(JsValue::from))
        .collect();
    assert_eq!(json(call_page(args).await.expect("sum")), json!(55));
    assert_eq!(
        json(call_page(vec!["meta".into()]).await.expect("meta")),
        json!({ "method": "meta", "caller": "math", "username": "fixture" })
    );
    assert_eq!(
        json(call_page(vec!["nothing".into()]).await.expect("nothing")),
        json!(null)
    );

    let err = rejected(call_page(vec!["throwsString".into()]).await, "throwsString");
    assert_eq!(err.message, "just a string", "{err:?}");

    // A function returned by the page reaches us through the native kite, and calls back.
    let adder: js_sys::Function = call_page(vec!["makeAdder".into(), JsValue::from(100)])
        .await
        .expect("makeAdder")
        .dyn_into()
        .expect("makeAdder answers a function");
    let (cb, got) = one_call();
    adder
        .call2(&JsValue::NULL, &JsValue::from(5), &cb)
        .expect("calling the page's function through the kite");
    assert_eq!(json(called(got, "the page's adder").await), json!([105]));

    // Authentication of the page's methods.
    let err = rejected(call_page(vec!["secret".into()]).await, "secret");
    assert_eq!(err.kind, "authenticationError", "{err:?}");
    let err = rejected(call_page(vec!["guarded".into()]).await, "guarded");
    assert_eq!(err.kind, "authenticationError", "{err:?}");

    // Unknown methods.
    let err = rejected(call_page(vec!["nope".into()]).await, "nope");
    assert_eq!(err.kind, "methodNotFound", "{err:?}");

    // The built-ins.
    assert_eq!(
        json(
            call_page(vec!["kite.ping".into()])
                .await
                .expect("kite.ping")
        ),
        json!("pong")
    );
    assert_eq!(
        json(
            call_page(vec!["kite.echo".into(), js(json!({ "a": [1, "é"] }))])
                .await
                .expect("kite.echo")
        ),
        json!({ "a": [1, "é"] })
    );
    let mut info = listen(&kite, "info");
    let logged = call_page(vec!["kite.log".into(), "a message 📝".into()])
        .await
        .expect("kite.log");
    assert_eq!(json(&logged), json!(null));
    let args = info.next().await;
    assert_eq!(json(&args), json!(["a message 📝"]));

    // A method added after connecting, replacing one.
    kite.handle(
        "greet".into(),
        js_function("name", "return 'hello again ' + name;"),
        JsValue::UNDEFINED,
    )
    .expect("handle greet");
    kite.handle(
        "added".into(),
        js_function("a, b", "return [b, a];"),
        JsValue::FALSE,
    )
    .expect("handle added");
    assert_eq!(
        json(
            call_page(vec!["greet".into(), "bob".into()])
                .await
                .expect("greet")
        ),
        json!("hello again bob")
    );
    assert_eq!(
        json(
            call_page(vec!["added".into(), JsValue::from(1), "two".into()])
                .await
                .expect("added")
        ),
        json!(["two", 1])
    );
    assert!(
        kite.handle("bad".into(), js_function("", ""), JsValue::from(3))
            .is_err(),
        "auth must be true, false or a function"
    );

    kite.disconnect(None);
}

#[wasm_bindgen_test]
async fn page_methods_over_websocket() {
    page_methods("websocket").await;
}

#[wasm_bindgen_test]
async fn page_methods_over_xhr_streaming() {
    page_methods("xhr-streaming").await;
}

#[wasm_bindgen_test]
async fn page_methods_over_xhr_polling() {
    page_methods("xhr-polling").await;
}

/// A page method written in Rust (a closure) gets the arguments, callback and meta object.
#[wasm_bindgen_test]
async fn page_method_from_a_rust_closure() {
    let (f, seen) = recorder();
    let options = js(json!({ "url": fixture("math") }));
    let api = Object::new();
    set(&api, "record", &f);
    set(&options, "api", &api);
    let kite = new_kite_js(options);
    ready(&kite).await;
    // The recorder returns undefined and declares no parameters: it answers null at once.
    let answer = call(
        &kite,
        "callPage",
        &["record".into(), "x".into(), JsValue::from(1)],
    )
    .await
    .expect("record");
    assert_eq!(json(&answer), json!(null));
    let seen = seen.borrow();
    assert_eq!(seen.len(), 1);
    // JSON drops the callback function: ["x", 1, null, {meta}].
    let args = seen[0].as_array().expect("a list");
    assert_eq!(args.len(), 4, "{args:?}");
    assert_eq!(args[0], json!("x"));
    assert_eq!(args[1], json!(1));
    assert_eq!(args[3]["method"], json!("record"));
    assert_eq!(args[3]["kite"]["name"], json!("math"));
    kite.disconnect(None);
}

/// The built-in `kite.heartbeat(seconds, ping)` calls `ping` now and every `seconds`.
#[wasm_bindgen_test]
async fn the_heartbeat_built_in() {
    let kite = new_kite(json!({ "url": fixture("math") }));
    ready(&kite).await;
    let (ping, pings) = recorder();
    let answer = call(
        &kite,
        "callPage",
        &["kite.heartbeat".into(), JsValue::from(0.05), ping.into()],
    )
    .await
    .expect("kite.heartbeat");
    assert_eq!(json(&answer), json!(null));
    eventually(3000, "three heartbeat pings", || pings.borrow().len() >= 3).await;
    assert!(pings.borrow().iter().all(|args| *args == json!([])));
    let err = rejected(
        call(
            &kite,
            "callPage",
            &["kite.heartbeat".into(), JsValue::from(0)],
        )
        .await,
        "kite.heartbeat without a ping",
    );
    assert_eq!(err.kind, "argumentError", "{err:?}");
    kite.disconnect(None);
}
