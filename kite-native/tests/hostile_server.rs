//! Hostile peers against the HTTP and SockJS servers of a kite, over real sockets: a slow reader
//! (websocket and xhr), a session flood, slowloris, and websocket and TCP connection floods.
//! Each is held to a small budget of `Config::limits`, gets the documented outcome, and leaves
//! everyone else served and the memory returned.
//!
//! Peers of different addresses are told apart by binding clients to other loopback addresses
//! (127.0.0.2, 127.0.0.3: Linux routes all of 127/8 to the loopback interface).

mod common;

use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use common::{TestKite, client_for, config, within};
use futures_util::{SinkExt, StreamExt};
use kite_native::Kite;
use kite_native::core::sockjs::{self, Frame};
use kite_native::transport::Transport;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};
use tokio_tungstenite::tungstenite::{self, Message as WsMessage};

type Ws = tokio_tungstenite::WebSocketStream<TcpStream>;

const FLOODER: [u8; 4] = [127, 0, 0, 2];
const OTHER_FLOODER: [u8; 4] = [127, 0, 0, 3];

/// What the kite's peers hold, as the tests watch it.
fn backlog_bytes(kite: &Kite) -> usize {
    kite.occupancy().backlog_bytes()
}

fn sessions_from(kite: &Kite, ip: [u8; 4]) -> usize {
    kite.occupancy().sessions_from(IpAddr::from(ip))
}

fn websockets_from(kite: &Kite, ip: [u8; 4]) -> usize {
    kite.occupancy().websockets_from(IpAddr::from(ip))
}

/// Waits until `cond` holds (nothing announces these counts, so it looks every 10 ms), for at
/// most the time `within` allows.
async fn until(what: &str, mut cond: impl FnMut() -> bool) {
    within(what, async {
        while !cond() {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await
}

fn server_addr(t: &TestKite) -> SocketAddr {
    let rest = t.url.strip_prefix("http://").unwrap();
    rest.trim_end_matches("/kite").parse().unwrap()
}

/// A TCP connection to the kite from `from`, with a receive buffer of `recv_buffer` bytes if
/// given (a small one makes a peer that does not read fill up at once).
async fn tcp_from(t: &TestKite, from: [u8; 4], recv_buffer: Option<u32>) -> TcpStream {
    let socket = TcpSocket::new_v4().unwrap();
    socket.bind(SocketAddr::from((from, 0))).unwrap();
    if let Some(size) = recv_buffer {
        socket.set_recv_buffer_size(size).unwrap();
    }
    within("connect", socket.connect(server_addr(t)))
        .await
        .unwrap()
}

/// A websocket to `path` (under `/kite`) from `from`.
async fn ws_from(
    t: &TestKite,
    from: [u8; 4],
    path: &str,
    recv_buffer: Option<u32>,
) -> Result<Ws, tungstenite::Error> {
    let tcp = tcp_from(t, from, recv_buffer).await;
    let url = format!("ws://{}/kite{path}", server_addr(t));
    within(
        "websocket handshake",
        tokio_tungstenite::client_async(url, tcp),
    )
    .await
    .map(|(ws, _)| ws)
}

/// A SockJS websocket session from `from`, its `o` frame read.
async fn sockjs_ws_from(t: &TestKite, from: [u8; 4], recv_buffer: Option<u32>) -> Ws {
    let mut ws = ws_from(t, from, "/000/slowread/websocket", recv_buffer)
        .await
        .unwrap();
    match within("open frame", ws.next()).await {
        Some(Ok(WsMessage::Text(t))) => assert_eq!(t.as_str(), "o"),
        other => panic!("expected the open frame, got {other:?}"),
    }
    ws
}

/// A dnode call of `method` with `args`, as a raw client writes it.
fn request(method: &str, args: Value) -> String {
    json!({
        "method": method,
        "arguments": [{"kite": {"name": "hostile"}, "authentication": null,
                        "responseCallback": "[Function]", "withArgs": args}],
        "callbacks": {"0": [0, "responseCallback"]},
    })
    .to_string()
}

/// An HTTP client whose connections come from `from`.
fn http_from(from: [u8; 4]) -> reqwest::Client {
    reqwest::Client::builder()
        .local_address(IpAddr::from(from))
        .timeout(Duration::from_secs(20))
        .build()
        .unwrap()
}

/// Opens the xhr-polling session `id`: the status and body of its first poll.
async fn open_xhr(http: &reqwest::Client, t: &TestKite, id: &str) -> (u16, String) {
    let r = within(
        "open an xhr session",
        http.post(format!("{}/000/{id}/xhr", t.url)).send(),
    )
    .await
    .unwrap();
    let status = r.status().as_u16();
    (status, r.text().await.unwrap())
}

/// A client kite over `transport` still gets answers.
async fn still_served(t: &TestKite, transport: Transport) {
    let (_kite, client) = client_for(&t.url, transport).await;
    let n: f64 = within("square", client.call("square", (7,))).await.unwrap();
    assert_eq!(n, 49.0);
    client.close();
}

/// 256 KiB of `<`: every one is escaped to six bytes in a SockJS frame.
fn big_echo() -> String {
    request("kite.echo", json!(["<".repeat(256 << 10)]))
}

/// A SockJS websocket peer that asks for large answers and does not read them is closed past
/// `max_queued_bytes` with `c[1008,...]` and close code 1008, its queue is dropped, and other
/// peers keep being answered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_websocket_reader_is_closed_past_its_queue_budget() {
    let mut c = config();
    c.limits.max_queued_bytes = 1 << 20;
    let t = TestKite::start_with(c).await;
    let mut ws = sockjs_ws_from(&t, [127, 0, 0, 1], Some(4096)).await;
    let frame = sockjs::encode_client_frame([big_echo().as_str()]);
    for _ in 0..24 {
        if within("send a call", ws.send(WsMessage::text(frame.clone())))
            .await
            .is_err()
        {
            break;
        }
    }
    until("the slow reader's session is closed", || {
        t.kite.connections() == 0
    })
    .await;
    assert_eq!(
        backlog_bytes(&t.kite),
        0,
        "what was queued for it is dropped"
    );

    // Reading now (the closing frames wait a moment for it), it finds the answers that had
    // left, then the close.
    let mut sockjs_close = None;
    let mut ws_close = None;
    while let Some(msg) = within("the rest of the stream", ws.next()).await {
        match msg {
            Ok(WsMessage::Text(text)) => {
                if let Ok(Frame::Close { code, reason }) = Frame::decode(&text) {
                    sockjs_close = Some((code, reason));
                }
            }
            Ok(WsMessage::Close(frame)) => {
                ws_close = frame.map(|f| u16::from(f.code));
                break;
            }
            Ok(_) => {}
            Err(_) => break,
        }
    }
    let (code, reason) = kite_native::session::QUEUE_OVERFLOW;
    assert_eq!(sockjs_close, Some((code, reason.to_owned())));
    assert_eq!(ws_close, Some(1008));
    still_served(&t, Transport::WebSocket).await;
}

/// The same over xhr-polling: a peer that sends calls and never polls for the answers is
/// closed past `max_queued_bytes`; its next poll gets `c[1008,...]`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_xhr_reader_is_closed_past_its_queue_budget() {
    let mut c = config();
    c.limits.max_queued_bytes = 1 << 20;
    c.disconnect_delay = Duration::from_secs(60);
    let t = TestKite::start_with(c).await;
    let http = http_from([127, 0, 0, 1]);
    assert_eq!(open_xhr(&http, &t, "slow").await, (200, "o\n".to_owned()));
    let frame = sockjs::encode_client_frame([big_echo().as_str()]);
    for _ in 0..12 {
        let r = within(
            "xhr_send",
            http.post(format!("{}/000/slow/xhr_send", t.url))
                .body(frame.clone())
                .send(),
        )
        .await
        .unwrap();
        assert_eq!(r.status().as_u16(), 204);
    }
    until("the slow reader's session is closed", || {
        t.kite.connections() == 0
    })
    .await;
    until("what was queued for it is dropped", || {
        backlog_bytes(&t.kite) == 0
    })
    .await;
    let (status, body) = open_xhr(&http, &t, "slow").await;
    assert_eq!(status, 200);
    let (code, reason) = kite_native::session::QUEUE_OVERFLOW;
    assert_eq!(body, format!("{}\n", sockjs::encode_close(code, reason)));
    still_served(&t, Transport::XhrPolling).await;
}

/// Many xhr-polling sessions from one address: past the per-address budget they are refused
/// with 503 and nothing is kept for them; others are still served; once the flood's sessions
/// expire, that address gets sessions again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn session_flood_is_refused_past_the_per_address_budget() {
    let mut c = config();
    c.limits.max_sessions_per_ip = 20;
    c.disconnect_delay = Duration::from_millis(500);
    let t = TestKite::start_with(c).await;
    let flood = http_from(FLOODER);
    for i in 0..20 {
        let opened = open_xhr(&flood, &t, &format!("flood{i}")).await;
        assert_eq!(opened, (200, "o\n".to_owned()), "session {i}");
    }
    for i in 20..30 {
        let (status, _) = open_xhr(&flood, &t, &format!("flood{i}")).await;
        assert_eq!(status, 503, "session {i}, past the per-address budget");
    }
    assert_eq!(sessions_from(&t.kite, FLOODER), 20);
    still_served(&t, Transport::XhrPolling).await;
    let (status, _) = open_xhr(&http_from(OTHER_FLOODER), &t, "other").await;
    assert_eq!(status, 200, "another address has its own budget");

    until("the flood's sessions expire", || {
        sessions_from(&t.kite, FLOODER) == 0
    })
    .await;
    let opened = open_xhr(&flood, &t, "again").await;
    assert_eq!(opened, (200, "o\n".to_owned()), "accepted again");
}

/// Reads an HTTP/1.1 response with a `content-length` off `tcp`; its status line.
async fn read_response(tcp: &mut TcpStream) -> String {
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        let n = within("a response", tcp.read(&mut buf)).await.unwrap();
        assert!(n > 0, "closed before a whole response: {got:?}");
        got.extend_from_slice(&buf[..n]);
        let text = String::from_utf8_lossy(&got).into_owned();
        if let Some(end) = text.find("\r\n\r\n") {
            let length: usize = text[..end]
                .lines()
                .find_map(|l| {
                    let (name, value) = l.split_once(':')?;
                    name.eq_ignore_ascii_case("content-length")
                        .then(|| value.trim().parse().ok())?
                })
                .unwrap_or(0);
            if got.len() >= end + 4 + length {
                return text.lines().next().unwrap_or_default().to_owned();
            }
        }
    }
}

/// Waits for the server to close `tcp`: `true` when it did (end of stream or reset).
async fn closed_by_server(tcp: &mut TcpStream) -> bool {
    let mut buf = [0u8; 1024];
    loop {
        match tcp.read(&mut buf).await {
            Ok(0) | Err(_) => return true,
            Ok(_) => {}
        }
    }
}

/// Slowloris: connections that send a header a byte at a time are closed after
/// `header_read_timeout`; a keep-alive connection idle after its answer is closed after
/// `idle_timeout` (not before: the two are separate), and so is one whose request body stops
/// coming; and neither cuts a long poll or a websocket.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slowloris_and_idle_connections_are_closed() {
    let mut c = config();
    c.limits.header_read_timeout = Duration::from_secs(1);
    c.limits.idle_timeout = Duration::from_secs(3);
    c.heartbeat_delay = Duration::from_secs(4);
    let t = TestKite::start_with(c).await;
    let mut raw = ws_from(&t, [127, 0, 0, 1], "/websocket", None)
        .await
        .unwrap();

    let slow: Vec<_> = (0..20)
        .map(|_| {
            let addr = server_addr(&t);
            tokio::spawn(async move {
                let mut tcp = TcpStream::connect(addr).await.unwrap();
                let head = "GET /kite/info HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: ";
                if tcp.write_all(head.as_bytes()).await.is_err() {
                    return true;
                }
                let mut buf = [0u8; 64];
                loop {
                    tokio::select! {
                        read = tcp.read(&mut buf) => match read {
                            Ok(0) | Err(_) => return true,
                            // An answer: the header was taken as complete.
                            Ok(_) => return false,
                        },
                        () = tokio::time::sleep(Duration::from_millis(100)) => {
                            if tcp.write_all(b"a").await.is_err() {
                                return true;
                            }
                        }
                    }
                }
            })
        })
        .collect();

    // A send whose body stops after its first bytes.
    let http = http_from([127, 0, 0, 1]);
    assert_eq!(open_xhr(&http, &t, "stall").await, (200, "o\n".to_owned()));
    let mut stalled = TcpStream::connect(server_addr(&t)).await.unwrap();
    let head = "POST /kite/000/stall/xhr_send HTTP/1.1\r\nHost: 127.0.0.1\r\n\
                Content-Length: 1000\r\n\r\n[\"abc";
    stalled.write_all(head.as_bytes()).await.unwrap();

    let mut idle = TcpStream::connect(server_addr(&t)).await.unwrap();
    idle.write_all(b"GET /kite/info HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        .await
        .unwrap();
    assert_eq!(read_response(&mut idle).await, "HTTP/1.1 200 OK");
    let answered = Instant::now();

    // A poll that waits longer than both timeouts for its heartbeat.
    assert_eq!(open_xhr(&http, &t, "poll").await, (200, "o\n".to_owned()));
    let poll = {
        let (http, url) = (http.clone(), t.url.clone());
        tokio::spawn(async move {
            let r = http.post(format!("{url}/000/poll/xhr")).send().await?;
            r.text().await
        })
    };

    for s in slow {
        let closed = within("a slowloris connection is closed", s).await.unwrap();
        assert!(closed, "a slowloris connection was answered");
    }
    assert!(
        within("the idle connection is closed", closed_by_server(&mut idle)).await,
        "idle connection"
    );
    let idle_for = answered.elapsed();
    assert!(
        within(
            "the stalled body's connection is closed",
            closed_by_server(&mut stalled)
        )
        .await,
        "stalled body"
    );
    assert!(
        idle_for >= Duration::from_secs(2),
        "closed after {idle_for:?} idle: the idle timeout is 3 s, not the header timeout"
    );
    let heartbeat = within("the long poll", poll).await.unwrap().unwrap();
    assert_eq!(heartbeat, "h\n");

    // The websocket, idle all along, still works.
    let call = request("kite.echo", json!(["still here"]));
    within("send on the websocket", raw.send(WsMessage::text(call)))
        .await
        .unwrap();
    let answer = match within("the websocket's answer", raw.next()).await {
        Some(Ok(WsMessage::Text(t))) => serde_json::from_str::<Value>(&t).unwrap(),
        other => panic!("expected an answer, got {other:?}"),
    };
    assert_eq!(
        answer["arguments"][0]["result"],
        json!("still here"),
        "{answer}"
    );
}

/// Websockets from one address past the per-address budget are refused with 503; others still
/// connect; a closed one gives its place back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn websocket_flood_is_refused_past_the_per_address_budget() {
    let mut c = config();
    c.limits.max_websockets_per_ip = 10;
    let t = TestKite::start_with(c).await;
    let mut open = Vec::new();
    for i in 0..10 {
        let path = if i % 2 == 0 {
            "/websocket".to_owned()
        } else {
            format!("/000/ws{i}/websocket")
        };
        open.push(ws_from(&t, FLOODER, &path, None).await.unwrap());
    }
    for path in ["/websocket", "/000/past/websocket"] {
        match ws_from(&t, FLOODER, path, None).await {
            Err(tungstenite::Error::Http(response)) => {
                assert_eq!(response.status().as_u16(), 503, "{path}");
            }
            other => panic!("{path}: expected a 503 past the budget, got {other:?}"),
        }
    }
    assert_eq!(websockets_from(&t.kite, FLOODER), 10);
    still_served(&t, Transport::WebSocket).await;

    drop(open.pop());
    until("the closed websocket gives its place back", || {
        websockets_from(&t.kite, FLOODER) < 10
    })
    .await;
    ws_from(&t, FLOODER, "/websocket", None)
        .await
        .expect("a websocket within the budget again");
}

/// TCP connections from one address past the per-address budget are answered 503 and closed
/// at once; others are still served; a closed one gives its place back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connection_flood_is_refused_past_the_per_address_budget() {
    let mut c = config();
    c.limits.max_connections_per_ip = 8;
    let t = TestKite::start_with(c).await;
    let mut held = Vec::new();
    for _ in 0..8 {
        held.push(tcp_from(&t, FLOODER, None).await);
    }
    // A request on a held connection is served: they were accepted.
    held[0]
        .write_all(b"GET /kite/info HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        .await
        .unwrap();
    assert_eq!(read_response(&mut held[0]).await, "HTTP/1.1 200 OK");

    let mut past = tcp_from(&t, FLOODER, None).await;
    assert_eq!(
        read_response(&mut past).await,
        "HTTP/1.1 503 Service Unavailable"
    );
    assert!(within("closed at once", closed_by_server(&mut past)).await);
    still_served(&t, Transport::WebSocket).await;

    drop(held.pop());
    // Nothing announces the server noticed: a new connection is tried until it is served.
    within("a connection within the budget again", async {
        loop {
            let fresh = http_from(FLOODER);
            let answer = fresh.get(format!("{}/info", t.url)).send().await;
            if answer.is_ok_and(|r| r.status().as_u16() == 200) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
}
