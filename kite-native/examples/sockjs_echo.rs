//! The SockJS layer on its own: the four services the SockJS protocol test suite
//! (`github.com/sockjs/sockjs-protocol`) expects, on port 8081 (or the first argument).
//!
//! ```sh
//! cargo run -p kite-native --example sockjs_echo            # http://127.0.0.1:8081/echo
//! ```
//!
//! - `/echo`: every message comes back;
//! - `/close`: every session is closed with `c[3000,"Go away!"]` as soon as it opens;
//! - `/disabled_websocket_echo`: the echo with the websocket transports off;
//! - `/cookie_needed_echo`: the echo with `JSESSIONID` cookies.
//!
//! As the suite asks of its test server, streaming responses end after 4 KiB.

use kite_native::session::Session;
use kite_native::sockjs::{SockJsOptions, SockJsServer};

mod support;

fn echo(mut session: Session) {
    tokio::spawn(async move {
        while let Some(msg) = session.rx.recv().await {
            if session.tx.send(msg).is_err() {
                break;
            }
        }
    });
}

fn close(session: Session) {
    let (code, reason) = kite_core::sockjs::GO_AWAY;
    session.tx.close(code, reason);
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    kite_native::init_logging();
    support::exit("sockjs_echo", run().await.map_err(Into::into))
}

async fn run() -> std::io::Result<()> {
    let port: u16 = match std::env::args().nth(1) {
        Some(p) => p.parse().map_err(|_| {
            std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                "usage: sockjs_echo [PORT]",
            )
        })?,
        None => 8081,
    };
    // sockjs-node's timings, and the response limit the suite asks of its test server.
    let options = SockJsOptions {
        response_limit: 4096,
        heartbeat_delay: std::time::Duration::from_secs(25),
        disconnect_delay: std::time::Duration::from_secs(5),
        ..SockJsOptions::default()
    };
    let no_websocket = SockJsOptions {
        websocket: false,
        raw_websocket: false,
        ..options.clone()
    };
    let cookie = SockJsOptions {
        cookie_needed: true,
        ..options.clone()
    };

    let app = axum::Router::new()
        .merge(SockJsServer::new(options.clone(), echo).router_at("/echo"))
        .merge(SockJsServer::new(options, close).router_at("/close"))
        .merge(SockJsServer::new(no_websocket, echo).router_at("/disabled_websocket_echo"))
        .merge(SockJsServer::new(cookie, echo).router_at("/cookie_needed_echo"));
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port)).await?;
    println!(
        "SockJS echo services on http://{}/echo",
        listener.local_addr()?
    );
    let options = kite_native::server::ServeOptions::default();
    kite_native::server::serve(listener, app, options, std::future::pending()).await
}
