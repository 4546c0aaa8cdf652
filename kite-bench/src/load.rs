//! Load generators: one connection with C calls in flight, and many connections making a few
//! calls each. Each system is driven by its own client: ours for the kite, jsonrpsee's
//! `WsClient` for jsonrpsee, and a tokio-tungstenite client for the raw echo.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use futures_util::{FutureExt, SinkExt, StreamExt};
use jsonrpsee::core::client::ClientT;
use jsonrpsee::rpc_params;
use jsonrpsee::ws_client::{WsClient, WsClientBuilder};
use kite_native::transport::Transport;
use kite_native::{Auth, Client, Config, Kite};
use serde::Serialize;
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::{Message, Utf8Bytes};
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

use crate::System;
use crate::stats::{Phase, Recorder, Summary, Window, call_loop, drive};

/// What each call carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Payload {
    /// `square(n)`: a number in, a number out.
    Square,
    /// `echo(s)` with a string of this many bytes, returned as is.
    Bytes(usize),
}

impl std::fmt::Display for Payload {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Payload::Square => f.write_str("square"),
            Payload::Bytes(n) if n % 1024 == 0 => write!(f, "{} KiB", n / 1024),
            Payload::Bytes(n) => write!(f, "{n} B"),
        }
    }
}

/// Who is called and how.
#[derive(Debug, Clone)]
pub struct Target {
    /// The system serving.
    pub system: System,
    /// Its address.
    pub addr: SocketAddr,
    /// For the kite: the transport.
    pub transport: Transport,
    /// For the kite: a token sent with every call.
    pub token: Option<String>,
    /// For the kite: the URL to dial, when not `http://<addr>/kite` (`load --url` keeps the
    /// one it is given, so a raw websocket can be dialled at the path its server takes it).
    pub url: Option<String>,
}

/// The ASCII string `echo` calls carry: `n` bytes of readable text.
pub fn payload_string(n: usize) -> String {
    const TEXT: &[u8] = b"The quick brown fox jumps over the lazy dog 0123456789. ";
    TEXT.iter()
        .copied()
        .cycle()
        .take(n)
        .map(char::from)
        .collect()
}

/// The kite that our bench clients belong to (one per process, as in a real program).
fn bench_kite() -> &'static Kite {
    static KITE: OnceLock<Kite> = OnceLock::new();
    KITE.get_or_init(|| {
        let mut config = Config::default();
        config.ip = [127, 0, 0, 1].into();
        Kite::with_config("kite-bench", "1.0.0", config).expect("valid kite name and version")
    })
}

/// The SockJS frame our client sends for one call of `payload`: the raw echo moves exactly
/// these bytes, so its figures are the ceiling for the same traffic.
pub fn kite_request_frame(payload: Payload) -> String {
    let mut conn: kite_core::Connection<()> = kite_core::Connection::new();
    let me = bench_kite().identity();
    let (method, args) = match payload {
        Payload::Square => ("square", kite_core::Value::from_serialize(&(4.0,))),
        Payload::Bytes(n) => (
            "echo",
            kite_core::Value::from_serialize(&(payload_string(n),)),
        ),
    };
    let (_, text) = conn
        .request(method, me, None, args.expect("plain arguments"), ())
        .expect("no functions to limit");
    kite_core::sockjs::encode_client_frame([text.as_str()])
}

/// A connected client of any system, for sequential calls.
pub enum Conn {
    /// Our client.
    Kite(Client),
    /// jsonrpsee's client.
    Jsonrpsee(WsClient),
    /// A raw websocket and the message it echoes.
    Echo(Box<Ws>, Utf8Bytes),
}

type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

impl std::fmt::Debug for Conn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Conn::Kite(_) => "Conn::Kite",
            Conn::Jsonrpsee(_) => "Conn::Jsonrpsee",
            Conn::Echo(..) => "Conn::Echo",
        })
    }
}

/// Dials `target` once.
pub async fn dial(target: &Target, payload: Payload) -> Result<Conn, String> {
    match target.system {
        System::Kite => {
            let url = target
                .url
                .clone()
                .unwrap_or_else(|| format!("http://{}/kite", target.addr));
            let client = bench_kite().new_client(&url);
            client.set_transport(target.transport);
            if let Some(token) = &target.token {
                client.set_auth(Some(Auth::new("token", token.clone())));
            }
            client.dial().await.map_err(|e| e.to_string())?;
            Ok(Conn::Kite(client))
        }
        System::Jsonrpsee => WsClientBuilder::default()
            .max_concurrent_requests(100_000)
            .request_timeout(Duration::from_secs(60))
            .build(format!("ws://{}", target.addr))
            .await
            .map(Conn::Jsonrpsee)
            .map_err(|e| e.to_string()),
        System::Echo | System::EchoBatched => {
            let ws = echo_connect(target.addr).await?;
            Ok(Conn::Echo(Box::new(ws), kite_request_frame(payload).into()))
        }
    }
}

async fn echo_connect(addr: SocketAddr) -> Result<Ws, String> {
    let (ws, _) = tokio_tungstenite::connect_async_with_config(format!("ws://{addr}/"), None, true)
        .await
        .map_err(|e| e.to_string())?;
    Ok(ws)
}

impl Conn {
    /// One call, checked: the answer must be the expected one.
    pub async fn call(&mut self, payload: Payload, n: u32) -> Result<(), String> {
        match self {
            Conn::Kite(client) => kite_call(client, payload, n).await,
            Conn::Jsonrpsee(client) => rpc_call(client, payload, n).await,
            Conn::Echo(ws, msg) => {
                ws.send(Message::Text(msg.clone()))
                    .await
                    .map_err(|e| e.to_string())?;
                match ws.next().await {
                    Some(Ok(Message::Text(t))) if t.len() == msg.len() => Ok(()),
                    other => Err(format!("bad echo: {other:?}")),
                }
            }
        }
    }

    /// Ends the connection.
    pub async fn close(self) {
        match self {
            Conn::Kite(client) => client.close(),
            Conn::Jsonrpsee(client) => drop(client),
            Conn::Echo(mut ws, _) => {
                let _ = SinkExt::close(&mut ws).await;
            }
        }
    }
}

/// Payload strings by length, made once.
type PayloadCache = std::sync::Mutex<Vec<(usize, Arc<str>)>>;

fn payload_arg(payload: Payload) -> Arc<str> {
    static CACHE: OnceLock<PayloadCache> = OnceLock::new();
    let Payload::Bytes(n) = payload else {
        return Arc::from("");
    };
    let mut cache = CACHE
        .get_or_init(Default::default)
        .lock()
        .unwrap_or_else(|e| e.into_inner());
    if let Some((_, s)) = cache.iter().find(|(len, _)| *len == n) {
        return s.clone();
    }
    let s: Arc<str> = payload_string(n).into();
    cache.push((n, s.clone()));
    s
}

async fn kite_call(client: &Client, payload: Payload, n: u32) -> Result<(), String> {
    match payload {
        Payload::Square => {
            let x = f64::from(n % 1000);
            let got: f64 = client
                .call("square", (x,))
                .await
                .map_err(|e| e.to_string())?;
            check(got == x * x, || format!("square({x}) = {got}"))
        }
        Payload::Bytes(len) => {
            let s = payload_arg(payload);
            let got: String = client
                .call("echo", (&*s,))
                .await
                .map_err(|e| e.to_string())?;
            check(got.len() == len, || {
                format!("echo returned {} bytes", got.len())
            })
        }
    }
}

async fn rpc_call(client: &WsClient, payload: Payload, n: u32) -> Result<(), String> {
    match payload {
        Payload::Square => {
            let x = f64::from(n % 1000);
            let got: f64 = client
                .request("square", rpc_params![x])
                .await
                .map_err(|e| e.to_string())?;
            check(got == x * x, || format!("square({x}) = {got}"))
        }
        Payload::Bytes(len) => {
            let s = payload_arg(payload);
            let got: String = client
                .request("echo", rpc_params![&*s])
                .await
                .map_err(|e| e.to_string())?;
            check(got.len() == len, || {
                format!("echo returned {} bytes", got.len())
            })
        }
    }
}

fn check(ok: bool, what: impl FnOnce() -> String) -> Result<(), String> {
    if ok { Ok(()) } else { Err(what()) }
}

/// `concurrency` calls kept in flight on one connection for the whole window.
pub async fn one_connection(
    target: &Target,
    payload: Payload,
    concurrency: usize,
    window: Window,
) -> Result<Summary, String> {
    match target.system {
        System::Echo | System::EchoBatched => {
            let ws = echo_connect(target.addr).await?;
            let msg: Utf8Bytes = kite_request_frame(payload).into();
            let batched = target.system == System::EchoBatched;
            let mut ws = Some(ws);
            Ok(drive(1, window, |_, phase| {
                echo_window(
                    ws.take().expect("one task"),
                    msg.clone(),
                    concurrency,
                    batched,
                    phase,
                )
            })
            .await)
        }
        System::Kite => {
            let Conn::Kite(client) = dial(target, payload).await? else {
                unreachable!("a kite target dials a kite client")
            };
            let summary = drive(concurrency, window, |i, phase| {
                let client = client.clone();
                async move {
                    let mut n = i as u32;
                    call_loop(phase, move || {
                        n = n.wrapping_add(1);
                        let client = client.clone();
                        async move { kite_call(&client, payload, n).await }
                    })
                    .await
                }
            })
            .await;
            client.close();
            Ok(summary)
        }
        System::Jsonrpsee => {
            let Conn::Jsonrpsee(client) = dial(target, payload).await? else {
                unreachable!("a jsonrpsee target dials a jsonrpsee client")
            };
            let client = Arc::new(client);
            Ok(drive(concurrency, window, |i, phase| {
                let client = client.clone();
                async move {
                    let mut n = i as u32;
                    call_loop(phase, move || {
                        n = n.wrapping_add(1);
                        let client = client.clone();
                        async move { rpc_call(&client, payload, n).await }
                    })
                    .await
                }
            })
            .await)
        }
    }
}

/// The raw echo client: `concurrency` messages in flight on one websocket; each echo received is
/// timed and replaced by a new message. Batched: every echo already received is answered
/// before one flush.
async fn echo_window(
    mut ws: Ws,
    msg: Utf8Bytes,
    concurrency: usize,
    batched: bool,
    phase: Arc<Phase>,
) -> Recorder {
    let mut rec = Recorder::default();
    let mut sent: VecDeque<Instant> = VecDeque::with_capacity(concurrency);
    for _ in 0..concurrency {
        if ws.feed(Message::Text(msg.clone())).await.is_err() {
            rec.error("send failed");
            return rec;
        }
        sent.push_back(Instant::now());
    }
    if ws.flush().await.is_err() {
        rec.error("send failed");
        return rec;
    }
    let mut on_echo = |echo: Message, rec: &mut Recorder| -> bool {
        let Some(start) = sent.pop_front() else {
            rec.error("unexpected echo");
            return false;
        };
        if phase.measuring() {
            match echo {
                Message::Text(t) if t.len() == msg.len() => rec.record(start.elapsed()),
                other => rec.error(format!("bad echo: {} bytes", other.len())),
            }
        }
        if phase.stopped() {
            return false;
        }
        sent.push_back(Instant::now());
        true
    };
    loop {
        let Some(Ok(echo)) = ws.next().await else {
            rec.error("connection closed");
            return rec;
        };
        if !on_echo(echo, &mut rec) {
            break;
        }
        if !batched {
            if ws.send(Message::Text(msg.clone())).await.is_err() {
                rec.error("send failed");
                break;
            }
            continue;
        }
        if ws.feed(Message::Text(msg.clone())).await.is_err() {
            rec.error("send failed");
            break;
        }
        let mut more = true;
        while more {
            match ws.next().now_or_never() {
                Some(Some(Ok(echo))) => {
                    more = on_echo(echo, &mut rec);
                    if more && ws.feed(Message::Text(msg.clone())).await.is_err() {
                        rec.error("send failed");
                        return rec;
                    }
                }
                _ => break,
            }
        }
        if ws.flush().await.is_err() {
            rec.error("send failed");
            break;
        }
        if !more {
            break;
        }
    }
    let _ = ws.close(None).await;
    rec
}

/// What [`many_connections`] measured.
#[derive(Debug, Clone, Serialize)]
pub struct ManySummary {
    /// Dial latencies; `calls_per_sec` is connections opened per second.
    pub dial: Summary,
    /// All calls of all connections; `calls_per_sec` over the calling phase.
    pub calls: Summary,
}

/// Opens `conns` connections (at most 100 dials at a time), runs `on_open` while all are open,
/// then lets every connection make `calls_each` sequential calls at once, and closes them.
pub async fn many_connections(
    target: &Target,
    payload: Payload,
    conns: usize,
    calls_each: usize,
    on_open: impl FnOnce(),
) -> Result<ManySummary, String> {
    let start = Instant::now();
    let dials: Vec<(Duration, Result<Conn, String>)> = futures_util::stream::iter(0..conns)
        .map(|_| async {
            let t = Instant::now();
            let c = dial(target, payload).await;
            (t.elapsed(), c)
        })
        .buffer_unordered(100)
        .collect()
        .await;
    let dial_elapsed = start.elapsed();
    let mut dial_rec = Recorder::default();
    let mut open = Vec::with_capacity(conns);
    for (latency, conn) in dials {
        match conn {
            Ok(c) => {
                dial_rec.record(latency);
                open.push(c);
            }
            Err(e) => dial_rec.error(e),
        }
    }
    on_open();
    let start = Instant::now();
    let tasks: Vec<_> = open
        .into_iter()
        .enumerate()
        .map(|(i, mut conn)| {
            tokio::spawn(async move {
                let mut rec = Recorder::default();
                for k in 0..calls_each {
                    let t = Instant::now();
                    match conn.call(payload, (i * calls_each + k) as u32).await {
                        Ok(()) => rec.record(t.elapsed()),
                        Err(e) => rec.error(e),
                    }
                }
                (rec, conn)
            })
        })
        .collect();
    let mut call_rec = Recorder::default();
    let mut done = Vec::with_capacity(tasks.len());
    for t in tasks {
        match t.await {
            Ok((rec, conn)) => {
                call_rec.merge(&rec);
                done.push(conn);
            }
            Err(e) => call_rec.error(e.to_string()),
        }
    }
    let call_elapsed = start.elapsed();
    for conn in done {
        conn.close().await;
    }
    Ok(ManySummary {
        dial: dial_rec.summary(dial_elapsed),
        calls: call_rec.summary(call_elapsed),
    })
}
