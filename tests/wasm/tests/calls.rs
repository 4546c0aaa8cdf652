//! Calls to the native `math` kite over each SockJS transport: results, errors, timeouts, and
//! callbacks in both directions.
#![cfg(target_arch = "wasm32")]

#[allow(dead_code)]
mod common;

use common::*;
use js_sys::{Array, Function};
use serde_json::json;
use wasm_bindgen::prelude::*;
use wasm_bindgen_test::*;

wasm_bindgen_test_configure!(run_in_browser);

fn math_kite(transport: &str) -> kite_wasm::Kite {
    new_kite(json!({ "url": fixture("math"), "transports": [transport] }))
}

/// A value with every kind of JSON inside, and text that SockJS and JSON must escape.
fn nested() -> serde_json::Value {
    json!({
        "text": "héllo wörld 🎉 日本語 Ω",
        "emoji": ["😀", "👍🏽", "🇫🇷", "\u{1F600}x"],
        "escapes": "quote \" backslash \\ newline \n tab \t nul \u{0} ls \u{2028} ps \u{2029} del \u{7f}",
        "numbers": [0, -1, 1.5, -2.25, 1e21, 9007199254740991_u64],
        "flags": [true, false, null],
        "nested": { "deep": { "deeper": { "list": [[], {}, [[1]], { "k": "v" }] } } },
        "empty": "",
        "ключ": "значение",
    })
}

async fn calls(transport: &str) {
    let kite = math_kite(transport);
    ready(&kite).await;
    assert_eq!(kite.transport().as_deref(), Some(transport));

    assert_eq!(square(&kite, 4.0).await, 16.0);
    assert_eq!(square(&kite, -1.5).await, 2.25);

    // echo: a nested value with unicode comes back unchanged.
    let echoed = ok(&kite, "echo", &[js(nested())]).await;
    assert_eq!(echoed, nested(), "echo over {transport}");

    // echoArgs: many arguments of every kind, in order.
    let many: Vec<serde_json::Value> = (0..40)
        .map(|i| match i % 5 {
            0 => json!(i),
            1 => json!(format!("arg {i} ✓")),
            2 => json!(null),
            3 => json!({ "i": i, "list": [i, i + 1] }),
            _ => json!(i % 2 == 0),
        })
        .collect();
    let args: Vec<JsValue> = many.iter().cloned().map(js).collect();
    assert_eq!(ok(&kite, "echoArgs", &args).await, json!(many));
    // Zero arguments: an empty list.
    assert_eq!(ok(&kite, "echoArgs", &[]).await, json!([]));
    let none = kite.request("echoArgs".into(), None, JsValue::UNDEFINED);
    let none = within(
        CALL_DEADLINE_MS,
        "echoArgs without a list",
        wasm_bindgen_futures::JsFuture::from(none),
    )
    .await
    .expect("echoArgs without args");
    assert_eq!(json(&none), json!([]));

    // fail: the kite's error, all fields.
    let err = rejected(
        call(&kite, "fail", &["boom 💥".into()]).await,
        "fail(\"boom\")",
    );
    assert_eq!(
        (err.kind.as_str(), err.message.as_str(), err.code.as_str()),
        ("testError", "boom 💥", "E42"),
        "{err:?}"
    );

    // An unknown method.
    let err = rejected(call(&kite, "noSuchMethod", &[]).await, "noSuchMethod");
    assert_eq!(err.kind, "methodNotFound", "{err:?}");
    assert!(err.message.contains("noSuchMethod"), "{err:?}");

    // A per-call timeout: slow(5000) with {timeout: 200} gives up after about 200 ms.
    let started = now();
    let err = rejected(
        call_with(
            &kite,
            "slow",
            &[JsValue::from(5000)],
            js(json!({ "timeout": 200 })),
        )
        .await,
        "slow(5000) with timeout 200",
    );
    let took = now() - started;
    assert_eq!(err.kind, "timeout", "{err:?}");
    assert!((150.0..2500.0).contains(&took), "timed out after {took} ms");
    // The connection is still usable, and a short slow call answers.
    assert_eq!(kite.state(), 1);
    assert_eq!(square(&kite, 7.0).await, 49.0);
    assert_eq!(ok(&kite, "slow", &[JsValue::from(30)]).await, json!(30));

    // The kite's own default timeout applies to every call.
    let quick = new_kite(json!({
        "url": fixture("math"), "transports": [transport], "timeout": 150,
    }));
    let err = rejected(
        call(&quick, "slow", &[JsValue::from(3000)]).await,
        "slow(3000) with the kite's timeout 150",
    );
    assert_eq!(err.kind, "timeout", "{err:?}");
    assert_eq!(square(&quick, 3.0).await, 9.0);
    quick.disconnect(None);

    kite.disconnect(None);
    assert_eq!(kite.state(), 3);
    assert_eq!(kite.transport(), None);
}

/// Values as deep as a Go kite accepts (10,000 levels in a message; this one sits a few
/// levels in), with a function at the bottom, echoed by the native kite, and one function of
/// the native kite in two places of an answer.
async fn deep_values_and_shared_functions(transport: &str) {
    let kite = math_kite(transport);
    ready(&kite).await;
    let depth = 9_000;
    let called = std::rc::Rc::new(std::cell::RefCell::new(Vec::<serde_json::Value>::new()));
    let seen = called.clone();
    let leaf = js(json!({ "leaf": "bottom" }));
    set(
        &leaf,
        "fn",
        &js_fn(move |args| {
            seen.borrow_mut().push(json(args.get(0)));
            JsValue::UNDEFINED
        })
        .into(),
    );
    let mut deep: JsValue = leaf;
    for _ in 0..depth {
        deep = Array::of1(&deep).into();
    }
    let back = call(&kite, "echo", &[deep])
        .await
        .expect("echo of a deep value");
    let mut node = back;
    let mut levels = 0;
    while Array::is_array(&node) {
        node = Array::from(&node).get(0);
        levels += 1;
    }
    assert_eq!(levels, depth, "over {transport}");
    assert_eq!(get(&node, "leaf").as_string().as_deref(), Some("bottom"));
    let f: Function = get(&node, "fn")
        .dyn_into()
        .expect("a function at the bottom");
    f.call1(&JsValue::NULL, &JsValue::from_str("from the bottom"))
        .unwrap();
    eventually(2000, "the bottom function is called", || {
        !called.borrow().is_empty()
    })
    .await;
    assert_eq!(called.borrow()[0], json!("from the bottom"));

    let pair = call(&kite, "adderTwice", &[JsValue::from(100)])
        .await
        .expect("adderTwice");
    let add: Function = get(&pair, "add").dyn_into().expect("add is a function");
    let again: Function = Array::from(&get(&pair, "again"))
        .get(0)
        .dyn_into()
        .expect("again[0] is a function");
    let sums = std::rc::Rc::new(std::cell::RefCell::new(Vec::new()));
    for (f, x) in [(add, 1.0), (again, 2.0)] {
        let sums = sums.clone();
        let cb = js_fn(move |args| {
            sums.borrow_mut()
                .push(args.get(0).as_f64().unwrap_or(f64::NAN));
            JsValue::UNDEFINED
        });
        f.call2(&JsValue::NULL, &JsValue::from(x), &cb).unwrap();
    }
    eventually(2000, "both places answer", || sums.borrow().len() == 2).await;
    let mut got = sums.borrow().clone();
    got.sort_by(f64::total_cmp);
    assert_eq!(got, [101.0, 102.0]);
    kite.disconnect(None);
}

#[wasm_bindgen_test]
async fn deep_values_and_shared_functions_over_websocket() {
    deep_values_and_shared_functions("websocket").await;
}

#[wasm_bindgen_test]
async fn deep_values_and_shared_functions_over_xhr_polling() {
    deep_values_and_shared_functions("xhr-polling").await;
}

#[wasm_bindgen_test]
async fn calls_over_websocket() {
    calls("websocket").await;
}

#[wasm_bindgen_test]
async fn calls_over_xhr_streaming() {
    calls("xhr-streaming").await;
}

#[wasm_bindgen_test]
async fn calls_over_xhr_polling() {
    calls("xhr-polling").await;
}

async fn callbacks(transport: &str) {
    let kite = math_kite(transport);
    ready(&kite).await;

    // count(3, f): f(1), f(2), f(3), all before the promise resolves.
    let (f, seen) = recorder();
    let n = ok(&kite, "count", &[JsValue::from(3), f.into()]).await;
    assert_eq!(n, json!(3));
    assert_eq!(
        *seen.borrow(),
        vec![json!([1]), json!([2]), json!([3])],
        "count's callbacks by the time it answered, over {transport}"
    );

    // A larger count keeps the order.
    let (f, seen) = recorder();
    assert_eq!(
        ok(&kite, "count", &[JsValue::from(200), f.into()]).await,
        json!(200)
    );
    let expected: Vec<_> = (1..=200).map(|i| json!([i])).collect();
    assert_eq!(*seen.borrow(), expected);

    // adder(10) returns a function of the kite: f(5, cb) calls cb(15).
    let add10 = call(&kite, "adder", &[JsValue::from(10)])
        .await
        .expect("adder(10)");
    let add10: Function = add10
        .dyn_into()
        .unwrap_or_else(|v| panic!("adder(10) answered a non-function {v:?}"));
    let (cb, got) = one_call();
    let returned = add10
        .call2(&JsValue::NULL, &JsValue::from(5), &cb)
        .expect("calling the remote function");
    assert!(returned.is_undefined());
    let args = called(got, "adder's callback").await;
    assert_eq!(json(&args), json!([15]));
    // The same function works again (callbacks may be called many times).
    let (cb, got) = one_call();
    add10
        .call2(&JsValue::NULL, &JsValue::from(-2.5), &cb)
        .expect("calling the remote function again");
    assert_eq!(json(&called(got, "adder's callback").await), json!([7.5]));

    // callCallback(f, "a", 2) calls f("a", 2), and answers null.
    let (cb, got) = one_call();
    let answer = ok(
        &kite,
        "callCallback",
        &[cb.into(), "a".into(), JsValue::from(2)],
    )
    .await;
    assert_eq!(answer, json!(null));
    assert_eq!(
        json(&called(got, "callCallback's f").await),
        json!(["a", 2])
    );

    // A function nested in an argument is called too; echo gives back a callable copy.
    let (cb, got) = one_call();
    let holder = js(json!({ "label": "x", "list": [1] }));
    set(&holder, "fn", &cb);
    let echoed = call(&kite, "echo", &[holder]).await.expect("echo");
    assert_eq!(get(&echoed, "label").as_string().as_deref(), Some("x"));
    let remote: Function = get(&echoed, "fn")
        .dyn_into()
        .expect("echo's fn is a function");
    remote
        .call2(&JsValue::NULL, &"round".into(), &"trip".into())
        .expect("calling the echoed function");
    assert_eq!(
        json(&called(got, "the echoed function").await),
        json!(["round", "trip"])
    );

    // Functions in a list argument.
    let (first, got_first) = one_call();
    let (second, got_second) = one_call();
    let list = Array::of2(&first, &second);
    let echoed = call(&kite, "echo", &[list.into()]).await.expect("echo");
    let echoed: Array = echoed.dyn_into().expect("a list");
    assert_eq!(echoed.length(), 2);
    let f1: Function = echoed.get(1).dyn_into().expect("a function");
    f1.call1(&JsValue::NULL, &JsValue::from(2)).expect("second");
    let f0: Function = echoed.get(0).dyn_into().expect("a function");
    f0.call1(&JsValue::NULL, &JsValue::from(1)).expect("first");
    assert_eq!(json(&called(got_second, "second").await), json!([2]));
    assert_eq!(json(&called(got_first, "first").await), json!([1]));

    kite.disconnect(None);
    // A remote function of a closed connection throws instead of sending.
    assert!(
        add10
            .call2(
                &JsValue::NULL,
                &JsValue::from(1),
                &Function::new_no_args("")
            )
            .is_err(),
        "calling a function of a closed connection should throw"
    );
}

#[wasm_bindgen_test]
async fn callbacks_over_websocket() {
    callbacks("websocket").await;
}

#[wasm_bindgen_test]
async fn callbacks_over_xhr_streaming() {
    callbacks("xhr-streaming").await;
}

#[wasm_bindgen_test]
async fn callbacks_over_xhr_polling() {
    callbacks("xhr-polling").await;
}

/// Calls made before connecting wait in order and go out once connected.
#[wasm_bindgen_test]
async fn calls_before_connecting_are_queued() {
    let kite = new_kite(json!({ "url": fixture("math"), "autoConnect": false }));
    assert_eq!(kite.state(), 0);
    let first = kite.request(
        "square".into(),
        Some(Array::of1(&JsValue::from(2))),
        JsValue::UNDEFINED,
    );
    let second = kite.request(
        "echo".into(),
        Some(Array::of1(&"second".into())),
        JsValue::UNDEFINED,
    );
    assert_eq!(kite.state(), 0, "a call does not connect by itself");
    kite.connect();
    let first = within(
        CALL_DEADLINE_MS,
        "queued square",
        wasm_bindgen_futures::JsFuture::from(first),
    )
    .await
    .expect("queued square");
    let second = within(
        CALL_DEADLINE_MS,
        "queued echo",
        wasm_bindgen_futures::JsFuture::from(second),
    )
    .await
    .expect("queued echo");
    assert_eq!(json(&first), json!(4));
    assert_eq!(json(&second), json!("second"));
    assert_eq!(kite.transport().as_deref(), Some("websocket"));
    kite.disconnect(None);
}

/// Many calls in flight at once are each answered with their own result.
#[wasm_bindgen_test]
async fn concurrent_calls_get_their_own_answers() {
    for transport in TRANSPORTS {
        let kite = math_kite(transport);
        ready(&kite).await;
        let promises: Vec<_> = (0..50)
            .map(|i| {
                kite.request(
                    "square".into(),
                    Some(Array::of1(&JsValue::from(i))),
                    JsValue::UNDEFINED,
                )
            })
            .collect();
        let all = js_sys::Promise::all(&promises.into_iter().collect::<Array>());
        let results = within(
            CALL_DEADLINE_MS,
            "50 concurrent squares",
            wasm_bindgen_futures::JsFuture::from(all),
        )
        .await
        .expect("concurrent squares");
        let expected: Vec<_> = (0..50).map(|i| json!(i * i)).collect();
        assert_eq!(json(&results), json!(expected), "over {transport}");
        kite.disconnect(None);
    }
}

/// JavaScript values go out as `JSON.stringify` would write them; values JSON cannot hold are
/// refused before sending.
#[wasm_bindgen_test]
async fn javascript_values_are_sent_as_json() {
    let kite = math_kite("websocket");
    ready(&kite).await;
    let echo = |v: JsValue| {
        let kite = &kite;
        async move { ok(kite, "echo", &[v]).await }
    };
    assert_eq!(
        ok(
            &kite,
            "echoArgs",
            &[
                JsValue::from(1),
                JsValue::UNDEFINED,
                JsValue::NULL,
                JsValue::from(3)
            ]
        )
        .await,
        json!([1, null, null, 3])
    );
    let with_undefined = js(json!({ "b": 1 }));
    set(&with_undefined, "a", &JsValue::UNDEFINED);
    assert_eq!(echo(with_undefined).await, json!({ "b": 1 }));
    assert_eq!(
        echo(js_sys::Date::new(&JsValue::from(0)).into()).await,
        json!("1970-01-01T00:00:00.000Z")
    );
    assert_eq!(echo(JsValue::from(f64::NAN)).await, json!(null));
    assert_eq!(echo(JsValue::from(f64::INFINITY)).await, json!(null));
    assert_eq!(echo(JsValue::from(-0.0)).await, json!(0));
    assert_eq!(echo(js_sys::BigInt::from(42u32).into()).await, json!(42));
    assert_eq!(echo(JsValue::from(0.1)).await, json!(0.1));
    assert_eq!(
        echo(JsValue::from(2f64.powi(53))).await,
        json!(9007199254740992u64)
    );
    assert_eq!(echo(JsValue::from(-123456.789)).await, json!(-123456.789));

    // A cycle cannot be sent: the call rejects at once, and the connection is not affected.
    let cycle = js(json!({ "name": "loop" }));
    set(&cycle, "self", &cycle);
    let err = rejected(call(&kite, "echo", &[cycle]).await, "echo of a cycle");
    assert_eq!(err.kind, "argumentError", "{err:?}");

    // The kite's argument errors come back as such.
    let err = rejected(
        call(&kite, "square", &["four".into()]).await,
        "square(\"four\")",
    );
    assert_eq!(err.kind, "argumentError", "{err:?}");
    assert_eq!(square(&kite, 1.0).await, 1.0);
    kite.disconnect(None);
}

/// Values larger than SockJS's streaming response limit: the xhr-streaming response is
/// renewed, and big sends arrive whole.
async fn large_values(transport: &str) {
    let kite = math_kite(transport);
    ready(&kite).await;
    for i in 0..4 {
        let text: String = std::iter::repeat_n("é🎉x", 40_000)
            .map(|s| format!("{s}{i}"))
            .collect();
        let echoed = ok(&kite, "echo", &[text.clone().into()]).await;
        assert_eq!(echoed.as_str().map(str::len), Some(text.len()), "echo {i}");
        assert_eq!(echoed, json!(text), "echo {i} over {transport}");
    }
    assert_eq!(square(&kite, 11.0).await, 121.0);
    kite.disconnect(None);
}

#[wasm_bindgen_test]
async fn large_values_over_websocket() {
    large_values("websocket").await;
}

#[wasm_bindgen_test]
async fn large_values_over_xhr_streaming() {
    large_values("xhr-streaming").await;
}

#[wasm_bindgen_test]
async fn large_values_over_xhr_polling() {
    large_values("xhr-polling").await;
}

/// `tell(method, ...args)` is defined on `Kite.prototype` in JavaScript.
#[wasm_bindgen_test]
async fn tell_from_javascript() {
    let kite = math_kite("websocket");
    assert_eq!(kite.state(), 5, "connecting right after new Kite");
    let object: JsValue = kite.into();
    let tell: Function = get(&object, "tell")
        .dyn_into()
        .expect("Kite.prototype.tell is a function");
    let promise: js_sys::Promise = tell
        .call2(&object, &"square".into(), &JsValue::from(4))
        .expect("tell")
        .dyn_into()
        .expect("tell returns a promise");
    let v = within(
        CALL_DEADLINE_MS,
        "tell square",
        wasm_bindgen_futures::JsFuture::from(promise),
    )
    .await
    .expect("tell square");
    assert_eq!(json(&v), json!(16));
    let args = Array::of4(
        &"echoArgs".into(),
        &JsValue::from(1),
        &"two".into(),
        &JsValue::TRUE,
    );
    let promise: js_sys::Promise = tell
        .apply(&object, &args)
        .expect("tell")
        .dyn_into()
        .expect("a promise");
    let v = within(
        CALL_DEADLINE_MS,
        "tell echoArgs",
        wasm_bindgen_futures::JsFuture::from(promise),
    )
    .await
    .expect("tell echoArgs");
    assert_eq!(json(&v), json!([1, "two", true]));
    // Back to Rust, to close it.
    let kite = kite_from_js(object);
    assert_eq!(kite.state(), 1);
    kite.disconnect(None);
}

/// The identity options are sent with every call; `prefix` is appended to the URL.
#[wasm_bindgen_test]
async fn identity_and_prefix_options() {
    let math = fixture("math");
    let base = math
        .strip_suffix("/kite")
        .expect("math URL ends with /kite");
    let identity = json!({
        "name": "my-page",
        "username": "alice",
        "environment": "test-env",
        "version": "2.3.4",
        "region": "eu-west",
        "hostname": "page-host",
        "id": "6e0f9c47-5d3c-4f8b-9a43-0e7f3c1b2a10",
    });
    let mut options = identity.clone();
    options["url"] = json!(base);
    options["prefix"] = json!("/kite");
    let kite = new_kite(options);
    assert_eq!(kite.url(), math);
    assert_eq!(json(kite.kite_info()), identity);
    let who = ok(&kite, "whoami", &[]).await;
    assert_eq!(who["caller"], identity, "{who}");
    kite.disconnect(None);
}
