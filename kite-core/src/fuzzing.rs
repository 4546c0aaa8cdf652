//! The checks that the decoding paths decide alike, shared by the unit tests and the fuzz
//! targets in `fuzz/` (cargo feature `fuzzing`). Not an API.
//!
//! [`check_message`] reads one peer message three ways — [`Connection::receive`] (the one-pass
//! reading of the usual messages, else the general path), the general path alone, and
//! [`TreeConnection`] over the `serde_json::Value` a driver would parse — and panics if they
//! decide differently. [`check_value`] reads a peer's value as a handler would and compares
//! the one-pass callback-path scan with a walk of the parsed tree.
//! [`sockjs_server()`] drives a [`crate::sockjs::server::Server`] with calls decoded from bytes and
//! checks its outputs against a model of its peers and application.

use std::sync::Arc;

mod sockjs_server;

pub use sockjs_server::{sockjs_server, sockjs_server_config};

use serde_json::Value as Json;

use crate::connection::{Connection, Incoming};
use crate::dnode::{CallbackSink, Path, Segment, Value};
use crate::error::{KiteError, ProtocolError};
use crate::tree::{Received, TreeConnection, TreeIncoming};

struct Nowhere;

impl CallbackSink for Nowhere {
    fn invoke(&self, _id: u64, _args: Value) -> Result<(), KiteError> {
        Ok(())
    }
}

/// A sink that sends nothing.
pub fn sink() -> Arc<dyn CallbackSink> {
    Arc::new(Nowhere)
}

/// A connection whose ids 0..=4 are calls waiting for their answer and 5..=9 functions.
pub fn connection() -> Connection<u64> {
    let mut c = Connection::new();
    for i in 0..5 {
        c.table.insert_pending(i);
    }
    for _ in 5..10 {
        let _ = c.table.register(&crate::Callback::new(|_| {}));
    }
    c
}

/// The same state over trees.
pub fn tree_connection() -> TreeConnection<u64, ()> {
    let mut tree = TreeConnection::new();
    for i in 0..5 {
        tree.table.insert_pending(i);
    }
    for _ in 5..10 {
        let _ = tree.table.insert_all([()].into_iter());
    }
    tree
}

/// A value's JSON with each function written as `"[Function <id>]"` where it landed (paths
/// that lead nowhere land nowhere).
pub fn landed(v: &Value) -> Json {
    let mut json = v.to_json().unwrap_or(Json::Null);
    for (path, cb) in v.functions() {
        if let Some(slot) = crate::dnode::path::get_mut(&mut json, path) {
            *slot = Json::String(format!("[Function {}]", cb.remote_id().unwrap_or(u64::MAX)));
        }
    }
    json
}

fn tree_landed(args: Received<Json>) -> Json {
    let mut value = args.value;
    for (path, id) in args.callbacks {
        if let Some(slot) = crate::dnode::path::get_mut(&mut value, &path) {
            *slot = Json::String(format!("[Function {id}]"));
        }
    }
    value
}

/// Everything a native decision holds, as comparable text (errors worded as they are).
pub fn describe(incoming: &Result<Incoming<u64>, ProtocolError>) -> String {
    match incoming {
        Err(e) => format!("error {e}"),
        Ok(Incoming::Request(r)) => format!(
            "request {} kite={:?} auth={:?} args={} all={:?} one={:?} response={:?}",
            r.method,
            r.kite,
            r.auth,
            landed(&r.args),
            r.args
                .functions()
                .iter()
                .map(|(p, cb)| (p.clone(), cb.remote_id()))
                .collect::<Vec<_>>(),
            r.args.one::<Json>().map_err(|e| e.message),
            r.response_id()
        ),
        Ok(Incoming::Response { pending, result }) => match result {
            Ok(a) => format!(
                "response {pending} ok {} one={:?}",
                landed(a),
                a.one::<Json>().map_err(|e| e.message)
            ),
            Err(e) => format!("response {pending} err {e:?}"),
        },
        Ok(Incoming::Callback { args, .. }) => format!(
            "callback {} first={:?}",
            landed(args),
            args.nth::<Json>(0).map_err(|e| e.message)
        ),
        Ok(Incoming::InvalidRequest { response, error }) => format!(
            "invalid {error:?} response={:?}",
            response.as_ref().and_then(crate::Callback::remote_id)
        ),
        Ok(Incoming::UnknownCallback(id)) => format!("unknown {id}"),
    }
}

/// What a native decision amounts to, comparably with a tree decision (wordings aside).
pub fn native(incoming: Result<Incoming<u64>, ProtocolError>) -> String {
    match incoming {
        Err(_) => "dropped".into(),
        Ok(Incoming::Request(r)) => format!(
            "request {} kite={:?} auth={:?} args={} response={:?}",
            r.method,
            r.kite,
            r.auth.as_deref(),
            landed(&r.args),
            r.response_id()
        ),
        Ok(Incoming::Response { pending, result }) => match result {
            Ok(a) => format!("response {pending} ok {}", landed(&a)),
            Err(e) => format!("response {pending} err {:?} {:?}", e.kind, e.code),
        },
        Ok(Incoming::Callback { args, .. }) => format!("callback {}", landed(&args)),
        Ok(Incoming::InvalidRequest { response, error }) => format!(
            "invalid {:?} response={:?}",
            error.kind,
            response.as_ref().and_then(crate::Callback::remote_id)
        ),
        Ok(Incoming::UnknownCallback(id)) => format!("unknown {id}"),
    }
}

/// What a tree decision amounts to (see [`native`]).
pub fn tree(incoming: Result<TreeIncoming<Json, u64, ()>, ProtocolError>) -> String {
    match incoming {
        Err(_) => "dropped".into(),
        Ok(TreeIncoming::Request(r)) => format!(
            "request {} kite={:?} auth={:?} args={} response={:?}",
            r.method,
            r.kite,
            r.auth.as_ref(),
            tree_landed(r.args),
            r.response
        ),
        Ok(TreeIncoming::Response { pending, result }) => match result {
            Ok(a) => format!("response {pending} ok {}", tree_landed(a)),
            Err(e) => format!("response {pending} err {:?} {:?}", e.kind, e.code),
        },
        Ok(TreeIncoming::Callback { args, .. }) => format!("callback {}", tree_landed(args)),
        Ok(TreeIncoming::InvalidRequest { response, error }) => {
            format!("invalid {:?} response={response:?}", error.kind)
        }
        Ok(TreeIncoming::UnknownCallback(id)) => format!("unknown {id}"),
    }
}

/// Reads `text` as a peer's message on every path and panics if they disagree. Values nested
/// deeper than serde_json parses (128 levels) are compared on the text paths only, as a
/// browser's parser would take them but this check's cannot.
pub fn check_message(text: &str) {
    let sink = sink();
    let fast = connection().receive(text, &sink);
    let general = connection().receive_general_path(text, &sink);
    assert_eq!(
        describe(&fast),
        describe(&general),
        "one-pass and general paths: {text}"
    );
    if let Ok(json) = serde_json::from_str::<Json>(text) {
        let via_tree = tree_connection().receive(&json);
        assert_eq!(
            tree(via_tree),
            native(fast),
            "tree and text connections: {text}"
        );
    }
}

/// Reads `text` (a JSON value) as received arguments with callbacks at `paths`: no reader
/// panics, and the one-pass scan finds exactly the paths a walk of the parsed tree finds.
pub fn check_value(text: &str, paths: &[Path]) {
    let Ok(raw) = serde_json::from_str::<Box<serde_json::value::RawValue>>(text) else {
        return;
    };
    let refs: Vec<&[Segment]> = paths.iter().map(Vec::as_slice).collect();
    let found = crate::dnode::existing(raw.get(), &refs);
    if let Ok(tree) = serde_json::from_str::<Json>(text) {
        let walked: Vec<bool> = paths
            .iter()
            .map(|p| crate::tree::at(&tree, p).is_some())
            .collect();
        assert_eq!(found, walked, "scan and tree walk: {text} {paths:?}");
    }
    let functions = paths
        .iter()
        .zip(&found)
        .filter(|(_, f)| **f)
        .enumerate()
        .map(|(i, (p, _))| (p.clone(), crate::Callback::remote(i as u64, sink())))
        .collect();
    let v = Value::received(raw, functions);
    let len = v.len();
    let _ = v.decode::<Json>();
    let _ = v.one::<Json>();
    for i in 0..len.min(4) {
        let _ = v.nth::<Json>(i);
        let _ = v.callback(i);
        if let Some(item) = v.get(i) {
            let _ = item.to_json_string();
        }
    }
    let _ = v.args::<(Json, Json)>();
    let list = v.clone().into_list();
    assert!(list.is_list());
    let _ = Connection::<()>::new().respond(0, Ok(v));
}

/// Sends `text` (a JSON value) with local functions at those of `paths` that exist (one
/// function may take several places), as a callback invocation, a response and a request, and
/// reads each back as the peer would: the same JSON, a function at every place and only there,
/// one id per place, and no duplicate key in any `callbacks` object.
pub fn check_round_trip(text: &str, paths: &[Path]) {
    let Ok(json) = serde_json::from_str::<Json>(text) else {
        return;
    };
    // Two functions, placed alternately, so that one function takes several places.
    let (a, b) = (crate::Callback::new(|_| {}), crate::Callback::new(|_| {}));
    let mut places: Vec<Path> = Vec::new();
    for p in paths {
        let there = crate::tree::at(&json, p).is_some();
        // One function per place: a place named twice (`0` and `"0"`) is one place.
        let new = !places
            .iter()
            .any(|q| q.len() == p.len() && crate::dnode::path::strip_prefix(q, p).is_some());
        if there && new {
            places.push(p.clone());
        }
    }
    let functions: Vec<(Path, crate::Callback)> = places
        .iter()
        .enumerate()
        .map(|(i, p)| (p.clone(), if i % 2 == 0 { a.clone() } else { b.clone() }))
        .collect();
    let value = Value::from_parts(json.clone(), functions);
    let sink = sink();
    let mut sender: Connection<()> = Connection::new();
    let texts = [
        sender.invoke(7, Value::list([value.clone()])).ok(),
        Some(sender.respond(3, Ok(value.clone()))),
    ];
    for text in texts.into_iter().flatten() {
        assert_unique_callback_keys(&text);
        let mut receiver = connection();
        // Id 7 is a function there and 3 a call waiting for its answer.
        let got = match receiver.receive(&text, &sink) {
            Ok(Incoming::Callback { args, .. }) => args.get(0),
            Ok(Incoming::Response { result: Ok(v), .. }) => Some(v),
            other => panic!("{text}: {}", describe(&other)),
        }
        .expect("the value is there");
        let back = got.to_json().expect("the value arrives as JSON");
        assert!(same_json(&back, &json), "JSON changed: {text}");
        let mut got_paths: Vec<Path> = got.functions().iter().map(|(p, _)| p.clone()).collect();
        let mut want = places.clone();
        got_paths.sort_by_key(|p| format!("{p:?}"));
        want.sort_by_key(|p| format!("{p:?}"));
        assert_eq!(
            got_paths.len(),
            want.len(),
            "functions lost or added: {text}"
        );
        let ids: std::collections::HashSet<Option<u64>> = got
            .functions()
            .iter()
            .map(|(_, cb)| cb.remote_id())
            .collect();
        assert_eq!(ids.len(), places.len(), "one id per place: {text}");
    }
}

/// Whether two JSON values are the same, numbers compared by value (`1` and `1.0` are one
/// number: Go writes an integral float without its `.0`, and so do we).
fn same_json(a: &Json, b: &Json) -> bool {
    match (a, b) {
        (Json::Number(x), Json::Number(y)) => x.as_f64() == y.as_f64(),
        (Json::Array(x), Json::Array(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(a, b)| same_json(a, b))
        }
        (Json::Object(x), Json::Object(y)) => {
            x.len() == y.len()
                && x.iter()
                    .zip(y)
                    .all(|((ka, va), (kb, vb))| ka == kb && same_json(va, vb))
        }
        _ => a == b,
    }
}

/// Panics if a `callbacks` object of the message `text` names an id twice.
fn assert_unique_callback_keys(text: &str) {
    use serde::de::{Deserializer, MapAccess, Visitor};
    struct Keys;
    impl<'de> Visitor<'de> for Keys {
        type Value = Vec<String>;
        fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("an object")
        }
        fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Vec<String>, A::Error> {
            let mut keys = Vec::new();
            while let Some(k) = map.next_key::<String>()? {
                map.next_value::<serde::de::IgnoredAny>()?;
                keys.push(k);
            }
            Ok(keys)
        }
    }
    #[derive(serde::Deserialize)]
    struct Envelope<'a> {
        #[serde(borrow)]
        callbacks: &'a serde_json::value::RawValue,
    }
    let envelope: Envelope<'_> = serde_json::from_str(text).expect("our message is JSON");
    let mut de = serde_json::Deserializer::from_str(envelope.callbacks.get());
    let keys = de.deserialize_map(Keys).expect("callbacks is an object");
    let unique: std::collections::HashSet<&String> = keys.iter().collect();
    assert_eq!(
        unique.len(),
        keys.len(),
        "a callback id named twice: {text}"
    );
}
