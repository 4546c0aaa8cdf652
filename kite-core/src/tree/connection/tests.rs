//! [`TreeConnection`] takes the decisions [`crate::Connection`] takes, on every captured message
//! and on the edge cases, and writes the same messages.

use serde_json::{Value, json};

use super::*;
use crate::connection::tests::{captured, edge_cases};

use crate::{Callback, Connection, RequestHead};

use crate::fuzzing::{native, tree};

fn connections() -> (Connection<u64>, TreeConnection<u64, ()>) {
    (
        crate::fuzzing::connection(),
        crate::fuzzing::tree_connection(),
    )
}

#[test]
fn decides_as_the_text_connection_does() {
    let sink = crate::fuzzing::sink();
    let messages: Vec<String> = captured().into_iter().chain(edge_cases()).collect();
    let mut compared = 0;
    for text in &messages {
        // A browser parses the text itself; what JSON.parse refuses never reaches the tree.
        let Ok(value) = serde_json::from_str::<Value>(text) else {
            continue;
        };
        let (mut n, mut t) = connections();
        assert_eq!(
            tree(t.receive(&value)),
            native(n.receive(text, &sink)),
            "{text}"
        );
        compared += 1;
    }
    assert!(compared > 100, "only {compared} messages compared");
}

#[test]
fn writes_what_the_text_connection_writes() {
    let kite = Kite {
        username: "u<&>".into(),
        name: "n\"q".into(),
        ..Kite::default()
    };
    let auth = Auth::new("token", "eyJ.abc");
    let cb = Callback::new(|_| {});
    for auth in [None, Some(&auth)] {
        let mut n: Connection<()> = Connection::new();
        let mut t: TreeConnection<(), &str> = TreeConnection::new();
        // A plain call, then one carrying a function.
        let (id_n, text) = n
            .request("square", &kite, auth, crate::value!([4]), ())
            .unwrap();
        let (id_t, msg) = t
            .request(
                "square",
                &Head::new(&kite, auth),
                Outgoing::plain(json!([4])),
                (),
            )
            .unwrap();
        assert_eq!(id_n, id_t);
        assert_eq!(msg, serde_json::from_str::<Value>(&text).unwrap());
        let args = crate::value!([{"a": [1.5]}, &cb]);
        let (_, text) = n
            .request_with_head("m", &RequestHead::new(&kite, auth), args, ())
            .unwrap();
        let (_, msg) = t
            .request(
                "m",
                &Head::new(&kite, auth),
                Outgoing {
                    value: json!([{"a": [1.5]}, "[Function]"]),
                    functions: vec![(vec![Segment::Index(1)], "f")],
                },
                (),
            )
            .unwrap();
        assert_eq!(msg, serde_json::from_str::<Value>(&text).unwrap());
    }

    // Invocations and answers, with functions inside.
    let mut n: Connection<()> = Connection::new();
    let mut t: TreeConnection<(), &str> = TreeConnection::new();
    let text = n.invoke(7, crate::value!([1, &cb])).unwrap();
    let msg = t
        .invoke(
            7,
            Outgoing {
                value: json!([1, "[Function]"]),
                functions: vec![(vec![Segment::Index(1)], "f")],
            },
        )
        .unwrap();
    assert_eq!(msg, serde_json::from_str::<Value>(&text).unwrap());
    let text = n.respond(3, Ok(crate::value!({"x": "<y>"})));
    let msg = t.respond(3, Ok(Outgoing::plain(json!({"x": "<y>"}))));
    assert_eq!(msg, serde_json::from_str::<Value>(&text).unwrap());
    let e = KiteError::method_not_found("nope").with_id("1");
    let text = n.respond(4, Err(e.clone()));
    let msg = t.respond::<Value>(4, Err(e));
    assert_eq!(msg, serde_json::from_str::<Value>(&text).unwrap());
}

#[test]
fn a_round_trip_with_callbacks_both_ways() {
    let mut client: TreeConnection<&str, &str> = TreeConnection::new();
    let mut server: TreeConnection<(), &str> = TreeConnection::new();
    let head = Head::<Value>::new(&Kite::new("c", "1.0.0"), Some(&Auth::new("token", "t")));
    let (_, request) = client
        .request(
            "subscribe",
            &head,
            Outgoing {
                value: json!([{"every": 2, "tick": "[Function]"}]),
                functions: vec![(vec![Segment::Index(0), Segment::Key("tick".into())], "tick")],
            },
            "call",
        )
        .unwrap();
    let Ok(TreeIncoming::Request(req)) = server.receive(&request) else {
        panic!("{request}")
    };
    assert_eq!(req.auth, Some(Auth::new("token", "t")));
    assert_eq!(req.args.len(), 1);
    let first = req.args.item(0).unwrap();
    let tick_id = first.callbacks[0].1;
    let resolved = first.resolve(|id| json!(format!("remote {id}")));
    assert_eq!(
        resolved,
        json!({"every": 2, "tick": format!("remote {tick_id}")})
    );

    // The server calls the client's function, then answers with a function of its own.
    let call = server
        .invoke(tick_id, Outgoing::plain(json!(["hi"])))
        .unwrap();
    match client.receive(&call) {
        Ok(TreeIncoming::Callback { function, args }) => {
            assert_eq!((function, args.value), ("tick", json!(["hi"])));
        }
        other => panic!("{other:?}"),
    }
    let answer = server.respond(
        req.response.unwrap(),
        Ok(Outgoing {
            value: json!({"stop": "[Function]"}),
            functions: vec![(vec![Segment::Key("stop".into())], "stop")],
        }),
    );
    let Ok(TreeIncoming::Response { pending, result }) = client.receive(&answer) else {
        panic!("{answer}")
    };
    let result = result.unwrap();
    assert_eq!(pending, "call");
    assert_eq!(result.callbacks.len(), 1);
    let stop = server
        .invoke(result.callbacks[0].1, Outgoing::plain(Value::Null))
        .unwrap();
    // The client invoking the server's `stop`, seen from the server.
    assert!(matches!(
        server.receive(&json!({"method": result.callbacks[0].1, "arguments": []})),
        Ok(TreeIncoming::Callback {
            function: "stop",
            ..
        })
    ));
    assert_eq!(stop["arguments"], json!([]));
    // A second answer to the same call is unknown; ending the connection frees everything.
    assert!(matches!(
        client.receive(&answer),
        Ok(TreeIncoming::UnknownCallback(_))
    ));
    assert_eq!(client.functions_len(), 1);
    client.drain_pending();
    assert_eq!(client.functions_len(), 0);
}

#[test]
fn paths_that_lead_nowhere_or_into_prototypes_are_skipped() {
    let mut t: TreeConnection<(), ()> = TreeConnection::new();
    let msg = json!({"method": "m", "arguments": [{"withArgs": [{"a": 1}]}],
        "callbacks": {"1": [0, "withArgs", 0, "constructor"], "2": [0, "withArgs", 5],
                      "3": [0, "withArgs", 0, "a", "deeper"], "4": [0, "withArgs", "0", "a"]}});
    let Ok(TreeIncoming::Request(req)) = t.receive(&msg) else {
        panic!()
    };
    assert_eq!(req.args.resolve(|id| json!(id)), json!([{"a": 4}]));
}

#[test]
fn callbacks_deep_inside_deep_documents_are_found() {
    // A list nested 400 deep with a callback at the bottom, and a path that long. (The walk
    // is iterative; serde_json's own clone and drop of such a value recurse, which bounds the
    // depth a native test can use.)
    let depth = 400;
    let mut value = json!("[Function]");
    for _ in 0..depth {
        value = Value::Array(vec![value]);
    }
    let mut path: Vec<Value> = vec![json!(0), json!("withArgs")];
    path.extend(std::iter::repeat_n(json!(0), depth));
    let msg = json!({"method": "m", "arguments": [{"withArgs": value}], "callbacks": {"1": path}});
    let mut t: TreeConnection<(), ()> = TreeConnection::new();
    let Ok(TreeIncoming::Request(req)) = t.receive(&msg) else {
        panic!()
    };
    assert_eq!(req.args.callbacks.len(), 1);
    let mut resolved = req.args.resolve(|id| json!(id));
    for _ in 0..depth {
        resolved = resolved.as_array_mut().unwrap().pop().unwrap();
    }
    assert_eq!(resolved, json!(1));
}
