//! Our SockJS server driven by the real `sockjs-client` 1.6.1 npm package under Node, once per
//! transport it can use there (websocket, xhr-streaming, xhr-polling, eventsource; htmlfile,
//! JSONP and the iframe and XDR transports need a browser), with the scripts of
//! `tests/interop`:
//!
//! * `sockjs-client-echo.js`: echoes from 0 B to 1 MiB (the largest message a kite takes),
//!   Unicode of every kind, bursts, sends while echoes stream back, round trips, an idle pause,
//!   a close by the server (what it queued first arrives first) and one by the client, through
//!   a server whose streaming responses end every 4 KiB with heartbeats every 100 ms, and one
//!   with the defaults; and, in its `close-while-sending` mode, sessions the server closes while
//!   the client is still sending;
//! * `sockjs-client-kite.js`: dnode requests written by hand as Go and Kite.js send them, to a
//!   kite at `/kite`, answered with the bytes the Go server answered (golden captures).
//!
//! Each node run prints one JSON line that the tests check; every transport runs even when one
//! fails, and a failure shows them all. Skipped outside CI when node or the npm packages are
//! missing (see `common::interop_dir`).

mod common;

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{TestKite, interop_dir};
use kite_native::session::Session;
use kite_native::sockjs::{SockJsOptions, SockJsServer};
use serde_json::{Value, json};

/// Every transport sockjs-client 1.6 can use under Node.
const NODE_TRANSPORTS: [&str; 4] = ["websocket", "xhr-streaming", "xhr-polling", "eventsource"];

/// The rest of sockjs-client's transports: they need a browser's DOM (`document`, iframes,
/// `XDomainRequest`), so under Node they are never enabled.
const BROWSER_TRANSPORTS: [&str; 7] = [
    "htmlfile",
    "jsonp-polling",
    "xdr-streaming",
    "xdr-polling",
    "iframe-eventsource",
    "iframe-htmlfile",
    "iframe-xhr-polling",
];

/// The message on which the echo service says goodbye (see `sockjs-client-echo.js`).
const CLOSE_ME: &str = "sockjs-client-echo: close me";

/// A SockJS echo service on 127.0.0.1 (`/echo`): its URL, its server, and the transport of
/// every session it has seen; and on the same port `/close`, whose sessions are closed with
/// `c[3000,"Go away!"]` as soon as they open (the protocol test suite's close service).
struct EchoService {
    url: String,
    close_url: String,
    server: SockJsServer,
    transports: Arc<Mutex<Vec<&'static str>>>,
    /// Requests to `/echo` by their last path segment (`xhr_streaming`, `eventsource`, ...).
    requests: Arc<Mutex<HashMap<String, usize>>>,
}

async fn echo_service(options: SockJsOptions) -> EchoService {
    let transports = Arc::new(Mutex::new(Vec::new()));
    let seen = transports.clone();
    let server = SockJsServer::new(options.clone(), move |mut session: Session| {
        seen.lock().unwrap().push(session.info.transport.name());
        tokio::spawn(async move {
            while let Some(msg) = session.rx.recv().await {
                if msg == CLOSE_ME {
                    let _ = session.tx.send("bye 1".into());
                    let _ = session.tx.send("bye 2".into());
                    session.tx.close(3000, "Go away!");
                    break;
                }
                if session.tx.send(msg).is_err() {
                    break;
                }
            }
        });
    });
    let close = SockJsServer::new(options, |session: Session| {
        session.tx.close(3000, "Go away!");
    });
    let requests = Arc::new(Mutex::new(HashMap::new()));
    let counts = requests.clone();
    let count = move |req: axum::extract::Request, next: axum::middleware::Next| {
        let path = req.uri().path();
        if path.starts_with("/echo/") {
            let last = path.rsplit('/').next().unwrap_or_default().to_owned();
            *counts.lock().unwrap().entry(last).or_insert(0) += 1;
        }
        next.run(req)
    };
    let app = server
        .router_at("/echo")
        .merge(close.router_at("/close"))
        .layer(axum::middleware::from_fn(count));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    EchoService {
        url: format!("http://{addr}/echo"),
        close_url: format!("http://{addr}/close"),
        server,
        transports,
        requests,
    }
}

/// Runs `node script URL TRANSPORT EXTRA...` (bounded by a timeout) and returns whether it
/// exited 0 and the JSON line it printed.
async fn node(
    dir: &std::path::Path,
    script: &str,
    url: &str,
    transport: &str,
    extra: &[&str],
) -> (bool, Value) {
    let out = tokio::time::timeout(
        Duration::from_secs(60),
        tokio::process::Command::new("node")
            .arg(dir.join(script))
            .arg(url)
            .arg(transport)
            .args(extra)
            .current_dir(dir)
            .kill_on_drop(true)
            .output(),
    )
    .await
    .unwrap_or_else(|_| panic!("{script} {transport}: node hung"))
    .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let v = serde_json::from_str(stdout.trim()).unwrap_or_else(|e| {
        panic!(
            "{script} {transport}: {e}: {stdout}\n{}",
            String::from_utf8_lossy(&out.stderr)
        )
    });
    (out.status.success(), v)
}

/// Waits (bounded) until the server holds no session: it has no notification for that, so the
/// count is polled.
async fn all_sessions_end(server: &SockJsServer) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    while server.live_sessions() > 0 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "{} sessions still alive",
            server.live_sessions()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// What is wrong with one echo run, if anything.
fn echo_run_problems(transport: &str, ok: bool, r: &Value, fast_heartbeats: bool) -> Vec<String> {
    let mut problems = Vec::new();
    let mut check = |good: bool, what: &str| {
        if !good {
            problems.push(what.to_owned());
        }
    };
    check(r["errors"] == json!([]), "errors");
    check(r["transport"] == transport, "transport");
    check(r["mismatches"] == json!([]), "mismatches");
    check(r["unexpected"] == json!([]), "unexpected messages");
    for (phase, n) in [
        ("sizes", 8),
        ("unicode", 24),
        ("burst", 500),
        ("trickle", 300),
        ("pingpong", 40),
        ("idle", 1),
        ("close", 2),
        ("second", 3),
    ] {
        check(r["phases"][phase]["received"] == n, phase);
    }
    // What the server queued before closing came first; send() in `onclose` is a no-op.
    check(
        r["close"]
            == json!({"code": 3000, "reason": "Go away!", "wasClean": true, "readyState": 3,
                      "owed": 0, "sendInCloseHandlerThrew": null}),
        "server close",
    );
    check(
        r["clientClose"] == json!({"code": 1000, "reason": "Normal closure", "wasClean": true}),
        "client close",
    );
    if fast_heartbeats {
        check(r["heartbeats"].as_u64().unwrap_or(0) > 0, "heartbeats");
    }
    check(ok, "exit code");
    problems
}

/// Runs the echo script once per transport; every transport runs even when one fails, and
/// the failure lists them all.
async fn echo_through_every_transport(
    options: SockJsOptions,
    fast_heartbeats: bool,
    min_streaming_responses: usize,
) {
    let Some(dir) = interop_dir() else { return };
    let service = echo_service(options).await;
    let mut failures = Vec::new();
    for transport in NODE_TRANSPORTS {
        let (ok, r) = node(&dir, "sockjs-client-echo.js", &service.url, transport, &[]).await;
        let mut problems = echo_run_problems(transport, ok, &r, fast_heartbeats);
        // The server saw both sessions on the transport the client was forced to.
        let seen = std::mem::take(&mut *service.transports.lock().unwrap());
        if seen != [transport, transport] {
            problems.push(format!("server saw {seen:?}"));
        }
        // Streaming responses ended at the response limit and the client opened new ones
        // mid-session (two sessions without rotation would make two).
        let requests = std::mem::take(&mut *service.requests.lock().unwrap());
        let receivers = match transport {
            "xhr-streaming" => requests.get("xhr_streaming"),
            "eventsource" => requests.get("eventsource"),
            _ => None,
        };
        if receivers.is_some_and(|&n| n < min_streaming_responses) {
            problems.push(format!("too few streaming responses: {requests:?}"));
        }
        if !problems.is_empty() {
            failures.push(format!("{transport}: {problems:?}: {r}"));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
    if fast_heartbeats {
        // Closed by either side, every session is gone once the disconnect delay has passed.
        all_sessions_end(&service.server).await;
    }
}

#[tokio::test]
async fn sockjs_client_echoes_through_every_node_transport_with_responses_rotating_every_4_kib() {
    echo_through_every_transport(
        SockJsOptions {
            response_limit: 4096,
            heartbeat_delay: Duration::from_millis(100),
            disconnect_delay: Duration::from_secs(2),
            ..SockJsOptions::default()
        },
        true,
        // Each phase but the last few sends more than 4 KiB back.
        6,
    )
    .await;
}

#[tokio::test]
async fn sockjs_client_echoes_through_every_node_transport_with_the_default_options() {
    // The 1 MiB message alone is over the default 128 KiB response limit.
    echo_through_every_transport(SockJsOptions::default(), false, 3).await;
}

#[tokio::test]
async fn sockjs_client_sees_the_servers_close_frame_while_it_is_still_sending() {
    // The server closes the session (c[3000,"Go away!"]) while the client's next messages are
    // on their way, after a few echoes or as soon as the session opens: the client must still
    // get what was queued before the close, then the close frame, on every transport (what it
    // sends meanwhile is dropped, and is no error). sockjs-node 0.3 passes this.
    let Some(dir) = interop_dir() else { return };
    let service = echo_service(SockJsOptions::default()).await;
    let mut failures = Vec::new();
    for transport in NODE_TRANSPORTS {
        let (ok, r) = node(
            &dir,
            "sockjs-client-echo.js",
            &service.url,
            transport,
            &["close-while-sending", &service.close_url],
        )
        .await;
        if !ok || r["errors"] != json!([]) || r["transport"] != transport {
            failures.push(format!("{transport}: {r}"));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}

#[tokio::test]
async fn sockjs_client_has_no_other_transport_under_node() {
    // If a sockjs-client update enables one of these under Node, it belongs in NODE_TRANSPORTS.
    let Some(dir) = interop_dir() else { return };
    let service = echo_service(SockJsOptions::default()).await;
    for transport in BROWSER_TRANSPORTS {
        let (ok, r) = node(&dir, "sockjs-client-echo.js", &service.url, transport, &[]).await;
        assert!(!ok, "{transport}: {r}");
        assert_eq!(
            r["errors"][0]
                .as_str()
                .unwrap_or_default()
                .split('\n')
                .next(),
            Some("Error: closed before opening: 2000 All transports failed"),
            "{transport}: {r}"
        );
    }
    assert!(service.transports.lock().unwrap().is_empty());
}

#[tokio::test]
async fn sockjs_client_calls_a_kite_with_hand_written_dnode_requests() {
    // Each case of `sockjs-client-kite.js`: Go's and Kite.js's requests for `kite.ping` and
    // `square(4)` answered with Go's bytes, callbacks called before the response, errors,
    // the kite calling back into the client, 100 calls in flight.
    const CASES: [&str; 11] = [
        "go-ping",
        "go-square",
        "kitejs-ping",
        "kitejs-square",
        "brief-square",
        "go-callback",
        "kitejs-callback",
        "argument-error",
        "method-not-found",
        "reverse-call",
        "many-in-flight",
    ];
    let Some(dir) = interop_dir() else { return };
    let server = TestKite::start().await;
    let mut failures = Vec::new();
    for transport in NODE_TRANSPORTS {
        let (ok, r) = node(&dir, "sockjs-client-kite.js", &server.url, transport, &[]).await;
        let passed: BTreeSet<&str> = r["passed"]
            .as_array()
            .map(|a| a.iter().filter_map(Value::as_str).collect())
            .unwrap_or_default();
        if !ok
            || r["errors"] != json!([])
            || r["transport"] != transport
            || r["failed"] != json!([])
            || r["unexpected"] != json!([])
            || passed != BTreeSet::from(CASES)
        {
            failures.push(format!("{transport}: {r}"));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}
