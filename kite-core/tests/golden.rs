//! Test vectors: real traffic captured between Go kites and Kite.js (see
//! `../shared/reference/golden/README.md`; the files used here are copied into `tests/golden/`).
//!
//! Requests sent by Go and Kite.js clients must decode; requests we encode must equal Go's bytes;
//! responses Go servers sent must equal what our server encodes for the same result.

use std::sync::{Arc, Mutex};

use kite_core::connection::{Connection, Incoming};
use kite_core::dnode::{CallbackSink, Value as KiteValue};
use kite_core::envelope::response_args;
use kite_core::sockjs::{self, Frame};
use kite_core::{Callback, IntoValue, Kite, KiteError};
use serde_json::Value;

#[derive(Debug)]
struct Line {
    case: String,
    dir: String,
    kind: String,
    payload: String,
}

fn load(name: &str) -> Vec<Line> {
    let path = format!("{}/tests/golden/{name}", env!("CARGO_MANIFEST_DIR"));
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
    text.lines()
        .map(|l| {
            let v: Value = serde_json::from_str(l).unwrap();
            Line {
                case: v["case"].as_str().unwrap_or_default().to_owned(),
                dir: v["dir"].as_str().unwrap_or_default().to_owned(),
                kind: v["kind"].as_str().unwrap_or_default().to_owned(),
                payload: v["payload"].as_str().unwrap_or_default().to_owned(),
            }
        })
        .collect()
}

/// Records what callbacks are invoked with.
#[derive(Default)]
struct Recorder(Mutex<Vec<(u64, Value)>>);

impl CallbackSink for Recorder {
    fn invoke(&self, id: u64, args: KiteValue) -> Result<(), KiteError> {
        self.0.lock().unwrap().push((id, args.to_json().unwrap()));
        Ok(())
    }
}

fn sink() -> Arc<dyn CallbackSink> {
    Arc::new(Recorder::default())
}

fn ws_messages<'a>(lines: &'a [Line], dir: &'a str) -> impl Iterator<Item = (&'a str, String)> {
    lines
        .iter()
        .filter(move |l| l.kind == "ws-message" && l.dir == dir && !l.payload.is_empty())
        .flat_map(move |l| {
            let msgs = if dir == "c2s" {
                sockjs::decode_client_frame(&l.payload).unwrap()
            } else {
                match Frame::decode(&l.payload).unwrap() {
                    Frame::Messages(m) => m,
                    _ => Vec::new(),
                }
            };
            msgs.into_iter().map(move |m| (l.case.as_str(), m))
        })
}

#[test]
fn go_client_requests_decode_and_reencode_byte_for_byte() {
    let lines = load("s1-go-go-websocket.jsonl");
    let mut checked = 0;
    let mut conns: std::collections::HashMap<&str, Connection<()>> = Default::default();
    for (case, text) in ws_messages(&lines, "c2s") {
        let mut server: Connection<()> = Connection::new();
        let Incoming::Request(req) = server.receive(&text, &sink()).unwrap() else {
            panic!("{case}: not a request: {text}");
        };
        assert!(req.response.is_some(), "{case}: response callback");
        assert_eq!(req.kite.name, "math-client");
        assert_eq!(req.kite.username, "testuser");

        // Re-encode the same call as a client on a connection with the same history.
        let original: Value = serde_json::from_str(&text).unwrap();
        let with_args = original["arguments"][0]["withArgs"].clone();
        let callback_positions: Vec<Vec<Value>> = original["callbacks"]
            .as_object()
            .unwrap()
            .values()
            .filter_map(|p| {
                let p = p.as_array().unwrap();
                (p.get(1) == Some(&Value::from("withArgs"))).then(|| p[2..].to_vec())
            })
            .collect();
        // Put real functions where Go had them.
        let mut args = with_args.clone();
        let mut functions = Vec::new();
        for pos in &callback_positions {
            let mut node = &mut args;
            for seg in pos {
                node = match seg {
                    Value::Number(n) => &mut node[n.as_u64().unwrap() as usize],
                    Value::String(s) => &mut node[s.as_str()],
                    _ => unreachable!(),
                };
            }
            *node = Value::Null;
            functions.push(Callback::new(|_| {}));
        }
        let scrubbed = if functions.is_empty() {
            KiteValue::from_json(with_args.clone())
        } else {
            // The same JSON with the functions at their places.
            let functions = callback_positions
                .iter()
                .zip(&functions)
                .map(|(pos, f)| {
                    let path = pos
                        .iter()
                        .map(|seg| match seg {
                            Value::Number(n) => (n.as_u64().unwrap() as usize).into(),
                            Value::String(k) => k.as_str().into(),
                            _ => unreachable!(),
                        })
                        .collect();
                    (path, f.clone())
                })
                .collect();
            KiteValue::from_parts(with_args.clone(), functions)
        };
        let kite: Kite = serde_json::from_value(original["arguments"][0]["kite"].clone()).unwrap();
        let conn = conns.entry(case).or_default();
        let (_, ours) = conn
            .request(&req.method, &kite, req.auth.as_deref(), scrubbed, ())
            .unwrap();
        if case == "echo-nested" {
            // The Go client passed raw JSON text (`-1.5e-07`); compare values there.
            let a: Value = serde_json::from_str(&ours).unwrap();
            assert_eq!(a, original, "{case}");
        } else {
            assert_eq!(ours, text, "{case}");
        }
        checked += 1;
    }
    assert!(checked >= 15, "only {checked} requests checked");
}

#[test]
fn go_server_responses_match_our_encoding() {
    let lines = load("s1-go-go-websocket.jsonl");
    let mut checked = 0;
    for (case, text) in ws_messages(&lines, "s2c") {
        let msg: Value = serde_json::from_str(&text).unwrap();
        let id = msg["method"].as_u64().unwrap();
        let args = &msg["arguments"];
        let is_response = args.as_array().unwrap().len() == 1
            && args[0].is_object()
            && args[0].get("error").is_some();
        let mut conn: Connection<()> = Connection::new();
        let ours = if is_response {
            let result = if args[0]["error"].is_null() {
                Ok(KiteValue::from_json(args[0]["result"].clone()))
            } else {
                Err(serde_json::from_value::<KiteError>(args[0]["error"].clone()).unwrap())
            };
            // The direct encoder a server uses gives the same text as the generic one.
            let direct = Connection::<()>::new().respond(id, result.clone());
            let generic = conn.invoke(id, response_args(result)).unwrap();
            assert_eq!(direct, generic, "{case}");
            generic
        } else {
            conn.invoke(id, KiteValue::from_json(args.clone())).unwrap()
        };
        if case == "echo-nested" {
            assert_eq!(serde_json::from_str::<Value>(&ours).unwrap(), msg, "{case}");
        } else {
            assert_eq!(ours, text, "{case}");
        }
        checked += 1;
    }
    assert!(checked >= 20, "only {checked} responses checked");
}

#[test]
fn kitejs_requests_decode() {
    for file in [
        "s2-kitejs-go-sockjs-websocket.jsonl",
        "s2-kitejs-kitejs-rawws.jsonl",
    ] {
        let lines = load(file);
        let raw = file.contains("rawws");
        let mut checked = 0;
        for l in lines
            .iter()
            .filter(|l| l.kind == "ws-message" && l.dir == "c2s" && !l.payload.is_empty())
        {
            let msgs = if raw {
                vec![l.payload.clone()]
            } else {
                sockjs::decode_client_frame(&l.payload).unwrap()
            };
            for text in msgs {
                let recorder = Arc::new(Recorder::default());
                let s: Arc<dyn CallbackSink> = recorder.clone();
                let mut server: Connection<()> = Connection::new();
                match server.receive(&text, &s).unwrap() {
                    Incoming::Request(req) => {
                        assert_eq!(req.kite.environment, "browser-environment");
                        assert!(req.response.is_some());
                        // Functions inside arguments (string paths) are callable.
                        if req.method.starts_with("callback") {
                            let cb: Callback = match req.args.nth::<Callback>(1) {
                                Ok(cb) => cb,
                                // A function inside an object: `[{"cb": f}]`.
                                Err(_) => req.args.callback_at(&[0.into(), "cb".into()]).unwrap(),
                            };
                            cb.call((42,)).unwrap();
                            let calls = recorder.0.lock().unwrap();
                            assert_eq!(calls.len(), 1);
                            assert_eq!(calls[0].1, serde_json::json!([42]));
                        }
                        checked += 1;
                    }
                    Incoming::UnknownCallback(_) => {} // answers to the server's callbacks
                    other => panic!("{file} {}: {other:?}", l.case),
                }
            }
        }
        assert!(checked >= 8, "{file}: only {checked} requests");
    }
}

#[test]
fn kitejs_scalar_with_args_becomes_a_list() {
    let text = r#"{"arguments":[{"kite":{"id":"x"},"withArgs":5,"responseCallback":"[Function]"}],"callbacks":{"1":["0","responseCallback"]},"links":[],"method":"square"}"#;
    let mut server: Connection<()> = Connection::new();
    let Incoming::Request(req) = server.receive(text, &sink()).unwrap() else {
        panic!()
    };
    assert_eq!(req.args.one::<i64>().unwrap(), 5);
    assert!(req.auth.is_none());
    assert_eq!(req.response.unwrap().remote_id(), Some(1));
}

#[test]
fn go_no_arg_call_has_empty_list_and_we_never_send_null() {
    let text = r#"{"method":"kite.ping","arguments":[{"kite":{},"authentication":null,"responseCallback":"[Function]","withArgs":null}],"callbacks":{"0":[0,"responseCallback"]}}"#;
    let mut server: Connection<()> = Connection::new();
    let Incoming::Request(req) = server.receive(text, &sink()).unwrap() else {
        panic!()
    };
    assert!(req.args.is_empty());
    let mut client: Connection<()> = Connection::new();
    let (_, ours) = client
        .request(
            "kite.ping",
            &Kite::default(),
            None,
            ().into_value().unwrap().into_list(),
            (),
        )
        .unwrap();
    assert!(ours.contains(r#""withArgs":[]"#), "{ours}");
    assert!(ours.contains(r#""authentication":null"#), "{ours}");
}
