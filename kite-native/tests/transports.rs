//! Client transports against a real kite: xhr-streaming calls and callbacks, stream rotation,
//! `Transport::Auto` falling back to xhr-streaming then xhr-polling, 100,000 back-to-back calls
//! over each XHR transport with none lost, and a dead peer noticed from its missing heartbeats,
//! followed by a reconnect.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use common::{TestKite, config, within};
use kite_native::session::TransportKind;
use kite_native::transport::{DialOptions, Transport};
use kite_native::{Callback, Client};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

fn client(server: &TestKite, transport: Transport) -> Client {
    let c = server.kite.new_client(&server.url);
    c.set_transport(transport);
    c
}

#[tokio::test]
async fn xhr_streaming_calls_callbacks_and_rotation() {
    let mut cfg = config();
    // Rotate the streaming response every few frames.
    cfg.sockjs.response_limit = 2048;
    let server = TestKite::start_with(cfg).await;
    let c = client(&server, Transport::XhrStreaming);
    within("dial", c.dial()).await.unwrap();
    assert_eq!(c.transport(), Some(TransportKind::XhrStreaming));
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let cb = Callback::new(move |args: kite_native::Args| {
        let _ = tx.send(args.one::<i64>().unwrap());
    });
    let r: i64 = within(
        "callback",
        c.call(
            "callback",
            kite_native::value!([{"value": 7, "times": 3, "cb": cb}]),
        ),
    )
    .await
    .unwrap();
    assert_eq!(r, 7);
    for _ in 0..3 {
        assert_eq!(within("cb", rx.recv()).await, Some(7));
    }
    // Far more than one response's worth: every answer arrives across rotations, in order.
    for i in 0..200 {
        let n: f64 = within("square", c.call("square", (i,))).await.unwrap();
        assert_eq!(n, f64::from(i * i));
    }
    let big = "é".repeat(50_000);
    let echoed: String = within("echo", c.call("kite.echo", (big.clone(),)))
        .await
        .unwrap();
    assert_eq!(echoed, big);
    c.close();
}

#[tokio::test]
async fn auto_falls_back_to_xhr_streaming_then_to_xhr_polling() {
    // Websocket off: Auto settles on xhr-streaming; xhr-streaming off as well: xhr-polling.
    for (streaming, want) in [
        (true, TransportKind::XhrStreaming),
        (false, TransportKind::XhrPolling),
    ] {
        let mut cfg = config();
        cfg.websocket = false;
        cfg.sockjs.xhr_streaming = streaming;
        let server = TestKite::start_with(cfg).await;
        let c = client(&server, Transport::Auto);
        within("dial", c.dial()).await.unwrap();
        assert_eq!(c.transport(), Some(want));
        let n: f64 = within("square", c.call("square", (5,))).await.unwrap();
        assert_eq!(n, 25.0, "{want}");
        c.close();
    }
}

/// `chains` tasks each making `calls / chains` calls one after the other on one connection;
/// every answer is checked.
async fn back_to_back(c: &Client, calls: u32, chains: u32) {
    let per_chain = calls / chains;
    let tasks: Vec<_> = (0..chains)
        .map(|chain| {
            let c = c.clone();
            tokio::spawn(async move {
                for i in 0..per_chain {
                    let x = f64::from(chain * per_chain + i);
                    let got: f64 = c.call("square", (x,)).await.unwrap();
                    assert_eq!(got, x * x);
                }
            })
        })
        .collect();
    for t in tasks {
        tokio::time::timeout(Duration::from_secs(300), t)
            .await
            .expect("back-to-back calls hung")
            .unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hundred_thousand_back_to_back_calls_over_each_xhr_transport() {
    let server = TestKite::start().await;
    for transport in [Transport::XhrPolling, Transport::XhrStreaming] {
        let c = client(&server, transport);
        within("dial", c.dial()).await.unwrap();
        let kind = c.transport();
        let start = std::time::Instant::now();
        back_to_back(&c, 100_000, 16).await;
        eprintln!("{transport}: 100000 calls in {:?}", start.elapsed());
        // Still the same session: nothing was lost to a `c[2010]`.
        assert_eq!(c.transport(), kind);
        assert!(c.is_connected());
        c.close();
    }
}

/// A TCP proxy to `target` that can freeze the connections it holds: frozen connections stay
/// open but carry nothing more, like a peer that died without closing.
struct Proxy {
    addr: std::net::SocketAddr,
    /// How many connections have been accepted.
    accepted: Arc<AtomicU64>,
    /// Connections numbered up to this one are frozen.
    frozen_upto: Arc<AtomicU64>,
}

impl Proxy {
    async fn start(target: std::net::SocketAddr) -> Proxy {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let frozen_upto = Arc::new(AtomicU64::new(0));
        let accepted = Arc::new(AtomicU64::new(0));
        let (frozen, count) = (frozen_upto.clone(), accepted.clone());
        tokio::spawn(async move {
            loop {
                let Ok((inbound, _)) = listener.accept().await else {
                    return;
                };
                let n = count.fetch_add(1, Ordering::SeqCst) + 1;
                let Ok(outbound) = tokio::net::TcpStream::connect(target).await else {
                    continue;
                };
                let (ri, wi) = inbound.into_split();
                let (ro, wo) = outbound.into_split();
                tokio::spawn(pipe(ri, wo, n, frozen.clone()));
                tokio::spawn(pipe(ro, wi, n, frozen.clone()));
            }
        });
        Proxy {
            addr,
            accepted,
            frozen_upto,
        }
    }

    /// Freezes every connection open now; later ones work.
    fn freeze(&self) {
        self.frozen_upto
            .store(self.accepted.load(Ordering::SeqCst), Ordering::SeqCst);
    }
}

async fn pipe(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    n: u64,
    frozen_upto: Arc<AtomicU64>,
) {
    let mut buf = vec![0; 16 * 1024];
    loop {
        let Ok(read) = from.read(&mut buf).await else {
            return;
        };
        if read == 0 {
            return;
        }
        if n <= frozen_upto.load(Ordering::SeqCst) {
            // Dead peer: hold both sockets open, carry nothing.
            std::future::pending::<()>().await;
        }
        if to.write_all(&buf[..read]).await.is_err() {
            return;
        }
    }
}

#[tokio::test]
async fn a_silent_peer_is_noticed_from_missing_heartbeats_and_the_client_reconnects() {
    let mut cfg = config();
    // Heartbeats every 50 ms keep an idle session alive under a 1 s silence limit.
    cfg.heartbeat_delay = Duration::from_millis(50);
    let server = TestKite::start_with(cfg).await;
    let target: std::net::SocketAddr = server
        .url
        .trim_start_matches("http://")
        .trim_end_matches("/kite")
        .parse()
        .unwrap();
    for transport in [
        Transport::WebSocket,
        Transport::XhrStreaming,
        Transport::XhrPolling,
    ] {
        let proxy = Proxy::start(target).await;
        let c = server
            .kite
            .new_client(&format!("http://{}/kite", proxy.addr));
        let mut opts = DialOptions::default();
        opts.transport = transport;
        opts.heartbeat_timeout = Some(Duration::from_secs(1));
        c.set_dial_options(opts);
        let (down_tx, mut down_rx) = tokio::sync::mpsc::unbounded_channel();
        c.on_disconnect(move |_| {
            let _ = down_tx.send(());
        });
        within("dial", c.dial_forever()).await;
        let pong: String = within("ping", c.call("kite.ping", ())).await.unwrap();
        assert_eq!(pong, "pong");
        // Idle for longer than the silence limit: heartbeats keep the session.
        let idle = tokio::time::timeout(Duration::from_millis(1500), down_rx.recv()).await;
        assert!(idle.is_err(), "{transport}: an idle session was dropped");

        proxy.freeze();
        within("silence noticed", down_rx.recv()).await.unwrap();
        // The reconnect goes through new, working connections.
        let pong: String = within("ping after reconnect", async {
            loop {
                c.dial_forever().await;
                match c.call::<String>("kite.ping", ()).await {
                    Ok(p) => break p,
                    Err(e) => tracing::debug!("{transport}: {e}"),
                }
            }
        })
        .await;
        assert_eq!(pong, "pong", "{transport}");
        c.close();
    }
}
