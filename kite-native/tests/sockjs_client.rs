//! Our SockJS server driven by the real `sockjs-client` npm package under Node, once per
//! transport it can use there: echoes of many sizes and Unicode content (through a server whose
//! streaming responses rotate every 4 KiB, and one with the defaults), and kite calls made by
//! hand with dnode requests.

mod common;

use std::time::Duration;

use common::{TestKite, interop_dir};
use kite_native::session::Session;
use kite_native::sockjs::{SockJsOptions, SockJsServer};
use serde_json::Value;

/// Every transport sockjs-client 1.6 offers under Node (htmlfile, JSONP and the iframe ones need
/// a browser's DOM).
const NODE_TRANSPORTS: [&str; 4] = ["websocket", "xhr-streaming", "xhr-polling", "eventsource"];

fn echo(mut session: Session) {
    tokio::spawn(async move {
        while let Some(msg) = session.rx.recv().await {
            if session.tx.send(msg).is_err() {
                break;
            }
        }
    });
}

async fn echo_service(options: SockJsOptions) -> String {
    let app = SockJsServer::new(options, echo).router_at("/echo");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    format!("http://{addr}/echo")
}

/// Runs `script URL TRANSPORT` under node and returns the JSON line it printed, failing the
/// test with its output if it did not succeed.
async fn node(dir: &std::path::Path, script: &str, url: &str, transport: &str) -> Value {
    let out = tokio::time::timeout(
        Duration::from_secs(60),
        tokio::process::Command::new("node")
            .arg(dir.join(script))
            .arg(url)
            .arg(transport)
            .current_dir(dir)
            .kill_on_drop(true)
            .output(),
    )
    .await
    .unwrap_or_else(|_| panic!("{script} {transport}: node hung"))
    .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{script} {transport}: {stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_str(stdout.trim()).unwrap_or_else(|e| panic!("{transport}: {e}: {stdout}"))
}

#[tokio::test]
async fn sockjs_client_echoes_through_every_transport_it_has_under_node() {
    let Some(dir) = interop_dir() else { return };
    let rotating = echo_service(SockJsOptions {
        response_limit: 4096,
        ..SockJsOptions::default()
    })
    .await;
    let defaults = echo_service(SockJsOptions::default()).await;
    for url in [rotating, defaults] {
        for transport in NODE_TRANSPORTS {
            let r = node(&dir, "sockjs-client-echo.js", &url, transport).await;
            assert_eq!(r["transport"], transport, "{url}: {r}");
            assert_eq!(r["received"], r["sent"], "{url}: {r}");
            assert_eq!(r["mismatches"], serde_json::json!([]), "{url}: {r}");
        }
    }
}

#[tokio::test]
async fn sockjs_client_calls_a_kite_with_dnode_requests() {
    let Some(dir) = interop_dir() else { return };
    let server = TestKite::start().await;
    for transport in NODE_TRANSPORTS {
        let r = node(&dir, "sockjs-client-kite.js", &server.url, transport).await;
        assert_eq!(r["transport"], transport, "{r}");
        assert_eq!(r["answers"]["1"]["result"], "pong", "{r}");
        assert_eq!(r["answers"]["2"]["result"], 16, "{r}");
        assert_eq!(r["answers"]["3"]["error"]["type"], "argumentError", "{r}");
    }
}
