//! Callbacks inside arguments, both directions, and the bad inputs a connection must survive.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use kite_core::connection::{Connection, Incoming};
use kite_core::dnode::CallbackSink;
use kite_core::envelope::response_args;
use kite_core::{Callback, ErrorKind, Kite, KiteError, value};
use serde::Deserialize;
use serde_json::{Value, json};

/// A sink that encodes invocations on a connection and collects the text, like a socket would.
struct Outbox(Arc<Mutex<Connection<()>>>, Arc<Mutex<Vec<String>>>);
impl CallbackSink for Outbox {
    fn invoke(&self, id: u64, args: kite_core::Value) -> Result<(), KiteError> {
        let text = self.0.lock().unwrap().invoke(id, args)?;
        self.1.lock().unwrap().push(text);
        Ok(())
    }
}

type Peer = (
    Arc<Mutex<Connection<()>>>,
    Arc<Mutex<Vec<String>>>,
    Arc<dyn CallbackSink>,
);

fn peer() -> Peer {
    let conn = Arc::new(Mutex::new(Connection::new()));
    let out = Arc::new(Mutex::new(Vec::new()));
    let sink: Arc<dyn CallbackSink> = Arc::new(Outbox(conn.clone(), out.clone()));
    (conn, out, sink)
}

/// The data of the options the callback comes in.
#[derive(Deserialize)]
struct Options {
    value: i64,
    times: u32,
}

#[test]
fn callback_inside_struct_is_invoked_many_times_and_can_take_callbacks() {
    let (client, _client_out, client_sink) = peer();
    let (server, server_out, server_sink) = peer();

    let seen = Arc::new(Mutex::new(Vec::<Value>::new()));
    let replies = Arc::new(AtomicUsize::new(0));
    let seen2 = seen.clone();
    let replies2 = replies.clone();
    let cb = Callback::new(move |args| {
        seen2.lock().unwrap().push(args.nth::<Value>(0).unwrap());
        // The server passed a function back: call it.
        if let Ok(reply) = args.nth::<Callback>(1) {
            reply.call(("thanks",)).unwrap();
            replies2.fetch_add(1, Ordering::SeqCst);
        }
    });
    let args = value!([{"value": 42, "cb": cb, "times": 3}]);
    let (_, request) = client
        .lock()
        .unwrap()
        .request("callback", &Kite::new("c", "1.0.0"), None, args, ())
        .unwrap();
    assert!(
        request.ends_with(r#""callbacks":{"0":[0,"responseCallback"],"1":[0,"withArgs",0,"cb"]}}"#),
        "{request}"
    );

    // Server side: decode, call cb three times with a function of its own.
    let incoming = server
        .lock()
        .unwrap()
        .receive(&request, &server_sink)
        .unwrap();
    let Incoming::Request(req) = incoming else {
        panic!()
    };
    let opts: Options = req.args.one().unwrap();
    let cb = req.args.callback_at(&[0.into(), "cb".into()]).unwrap();
    let thanks = Arc::new(AtomicUsize::new(0));
    let thanks2 = thanks.clone();
    let back = Callback::new(move |a| {
        assert_eq!(a.one::<String>().unwrap(), "thanks");
        thanks2.fetch_add(1, Ordering::SeqCst);
    });
    for _ in 0..opts.times {
        cb.call(value!([opts.value, &back])).unwrap();
    }
    req.response
        .unwrap()
        .call_with(response_args(Ok(value!(opts.value))))
        .unwrap();

    // The same local function keeps one id on the server's connection.
    let msgs = server_out.lock().unwrap().clone();
    assert_eq!(msgs.len(), 4);
    assert_eq!(
        msgs[0],
        r#"{"method":1,"arguments":[42,"[Function]"],"callbacks":{"0":[1]}}"#
    );
    assert_eq!(msgs[1], msgs[0]);

    // Client side: deliver the server's messages.
    for m in &msgs[..3] {
        // Release the lock before running the callback: it sends through the same connection.
        let incoming = client.lock().unwrap().receive(m, &client_sink).unwrap();
        match incoming {
            Incoming::Callback { callback, args } => callback.call_with(args).unwrap(),
            other => panic!("{other:?}"),
        }
    }
    assert_eq!(seen.lock().unwrap().len(), 3);
    assert_eq!(replies.load(Ordering::SeqCst), 3);
    let incoming = client
        .lock()
        .unwrap()
        .receive(&msgs[3], &client_sink)
        .unwrap();
    match incoming {
        Incoming::Response { result, .. } => {
            assert_eq!(result.unwrap().decode::<i64>().unwrap(), 42)
        }
        other => panic!("{other:?}"),
    }
    // The response slot is gone; the callback stays until the connection ends.
    assert_eq!(client.lock().unwrap().pending_len(), 0);
    assert_eq!(client.lock().unwrap().callbacks_len(), 1);

    // The client's "thanks" calls reach the server's function.
    let thanks_msgs = _client_out.lock().unwrap().clone();
    assert_eq!(thanks_msgs.len(), 3);
    for m in thanks_msgs {
        let incoming = server.lock().unwrap().receive(&m, &server_sink).unwrap();
        match incoming {
            Incoming::Callback { callback, args } => callback.call_with(args).unwrap(),
            other => panic!("{other:?}"),
        }
    }
    assert_eq!(thanks.load(Ordering::SeqCst), 3);
}

#[test]
fn answered_response_callbacks_are_freed_and_repeats_are_unknown() {
    let (_, _, sink) = peer();
    let mut client: Connection<u32> = Connection::new();
    let (id, _) = client
        .request("x", &Kite::default(), None, value!([]), 7)
        .unwrap();
    let answer = r#"{"method":0,"arguments":[{"error":null,"result":1}],"callbacks":{}}"#;
    assert!(matches!(
        client.receive(answer, &sink).unwrap(),
        Incoming::Response { pending: 7, .. }
    ));
    assert!(matches!(
        client.receive(answer, &sink).unwrap(),
        Incoming::UnknownCallback(0)
    ));
    assert_eq!(id, 0);
    assert_eq!(client.callbacks_len(), 0);

    // Many answered calls leave nothing behind (the Go client keeps one entry per call).
    for i in 0..200_000u32 {
        let (id, _) = client
            .request("x", &Kite::default(), None, value!(null), i)
            .unwrap();
        let text = format!(r#"{{"method":{id},"arguments":[{{"result":null}}],"callbacks":{{}}}}"#);
        assert!(matches!(
            client.receive(&text, &sink).unwrap(),
            Incoming::Response { .. }
        ));
    }
    assert_eq!(client.callbacks_len(), 0);
}

#[test]
fn malformed_responses_are_invalid_response_errors() {
    let (_, _, sink) = peer();
    for (args, kind) in [
        ("[]", ErrorKind::InvalidResponse),
        ("[1,2,3]", ErrorKind::InvalidResponse),
        ("[{}]", ErrorKind::InvalidResponse),
        ("[5]", ErrorKind::InvalidResponse),
        (
            r#"[{"error":{"type":"myType","message":"m","code":"E1","id":"x"}}]"#,
            ErrorKind::Other("myType".into()),
        ),
        (r#"["boom", null]"#, ErrorKind::Generic),
    ] {
        let mut client: Connection<()> = Connection::new();
        client
            .request("x", &Kite::default(), None, value!(null), ())
            .unwrap();
        let text = format!(r#"{{"method":0,"arguments":{args},"callbacks":{{}}}}"#);
        match client.receive(&text, &sink).unwrap() {
            Incoming::Response { result, .. } => {
                assert_eq!(result.unwrap_err().kind, kind, "{args}")
            }
            other => panic!("{other:?}"),
        }
    }
    // Kite.js browser kites answer node-style [null, result].
    let mut client: Connection<()> = Connection::new();
    client
        .request("x", &Kite::default(), None, value!(null), ())
        .unwrap();
    match client
        .receive(r#"{"method":0,"arguments":[null,9]}"#, &sink)
        .unwrap()
    {
        Incoming::Response { result, .. } => {
            assert_eq!(result.unwrap().decode::<i32>().unwrap(), 9)
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn bad_requests_are_answered_when_possible() {
    let (_, _, sink) = peer();
    let mut server: Connection<()> = Connection::new();
    // No arguments at all (kills a Go kite): nobody to answer, but no panic.
    match server
        .receive(
            r#"{"method":"kite.ping","arguments":[],"callbacks":{}}"#,
            &sink,
        )
        .unwrap()
    {
        Incoming::InvalidRequest { response, error } => {
            assert!(response.is_none());
            assert_eq!(error.kind, ErrorKind::Argument);
        }
        other => panic!("{other:?}"),
    }
    // Two arguments but a response callback: answered with argumentError.
    match server
        .receive(
            r#"{"method":"square","arguments":[{"withArgs":[1]},2],"callbacks":{"0":[0,"responseCallback"]}}"#,
            &sink,
        )
        .unwrap()
    {
        Incoming::InvalidRequest { response, error } => {
            assert_eq!(response.unwrap().remote_id(), Some(0));
            assert_eq!(error.kind, ErrorKind::Argument);
        }
        other => panic!("{other:?}"),
    }
    for bad in [
        r#"{"method":"x","arguments":"nope"}"#,
        r#"{"method":"x","arguments":[5],"callbacks":{"0":[0,"responseCallback"]}}"#,
        r#"{"method":"x","arguments":[{"authentication":5}],"callbacks":{"0":[0,"responseCallback"]}}"#,
    ] {
        assert!(
            matches!(
                server.receive(bad, &sink).unwrap(),
                Incoming::InvalidRequest { .. }
            ),
            "{bad}"
        );
    }
    // A callback path that leads nowhere is ignored, like Go.
    let Incoming::Request(req) = server
        .receive(
            r#"{"method":"x","arguments":[{"withArgs":[1]}],"callbacks":{"0":[0,"responseCallback"],"1":[0,"withArgs",9,"z"]}}"#,
            &sink,
        )
        .unwrap()
    else {
        panic!()
    };
    assert!(req.args.functions().is_empty());
    // Wrong argument types are argumentError, never a panic.
    let err = req.args.one::<String>().unwrap_err();
    assert_eq!(err.kind, ErrorKind::Argument);
    assert!(err.message.contains("Data: 1"), "{}", err.message);
    assert!(req.args.nth::<Callback>(0).is_err());
    assert!(req.args.nth::<i32>(3).is_err());
}

#[test]
fn a_forged_marker_string_is_not_a_function() {
    let (_, _, sink) = peer();
    let mut server: Connection<()> = Connection::new();
    let text = "{\"method\":\"x\",\"arguments\":[{\"withArgs\":[\"\\u0000kite-callback:0\"]}],\"callbacks\":{\"0\":[0,\"responseCallback\"]}}";
    let Incoming::Request(req) = server.receive(text, &sink).unwrap() else {
        panic!()
    };
    assert!(req.args.one::<Callback>().is_err());
}

#[test]
fn callbacks_inside_value_macro_values_are_functions_and_nothing_else_is() {
    let cb = Callback::new(|_| {});
    let v = value!([{"value": 1, "cb": &cb, "text": "\u{0}kite-callback:0"}]);
    assert_eq!(v.functions().len(), 1);
    assert!(v.functions()[0].1.ptr_eq(&cb));
    assert_eq!(
        v.to_json().unwrap(),
        json!([{"value": 1, "cb": "[Function]", "text": "\u{0}kite-callback:0"}])
    );
    // A function built and never sent is freed with its last handle: nothing keeps it.
    let weak = {
        let held = Arc::new(());
        let w = Arc::downgrade(&held);
        let f = Callback::new(move |_| {
            let _ = &held;
        });
        let _v = value!({"f": f});
        w
    };
    assert!(weak.upgrade().is_none());
}
