//! Client transports against the fake servers of [`super::fake`].

use std::time::Duration;

use kite_test_kit::within;
use tokio::net::TcpListener;

use super::fake::{
    StreamServer, WsEvent, WsMode, refused_url, stream_server, ws_server, xhr_server,
};
use super::*;
use crate::session::TransportKind;

fn options(transport: Transport) -> DialOptions {
    DialOptions {
        transport,
        ..DialOptions::default()
    }
}

// ---- names and URLs ----

#[test]
fn transport_names() {
    for (name, want) in [
        ("WebSocket", Transport::WebSocket),
        ("websocket", Transport::WebSocket),
        ("XHRPolling", Transport::XhrPolling),
        ("xhr-polling", Transport::XhrPolling),
        ("XHRStreaming", Transport::XhrStreaming),
        ("xhr-streaming", Transport::XhrStreaming),
        ("xhr_streaming", Transport::XhrStreaming),
        ("XhrStreaming", Transport::XhrStreaming),
        ("auto", Transport::Auto),
        ("Auto", Transport::Auto),
        ("raw-websocket", Transport::RawWebSocket),
    ] {
        assert_eq!(name.parse(), Ok(want), "{name}");
        assert_eq!(want.to_string().parse(), Ok(want));
    }
    assert!("pigeon".parse::<Transport>().is_err());
    assert!("".parse::<Transport>().is_err());
    assert_eq!(Transport::default(), Transport::Auto);
}

#[test]
fn websocket_urls_like_go() {
    // Go's sockjsclient_test cases.
    for (base, want) in [
        (
            "https://koding.com/kloud/kite",
            "wss://koding.com:443/kloud/kite/server/session/websocket",
        ),
        (
            "http://127.0.0.1:56789/kite",
            "ws://127.0.0.1:56789/kite/server/session/websocket",
        ),
        (
            "http://rjeczalik.koding.team/kontrol/kite",
            "ws://rjeczalik.koding.team:80/kontrol/kite/server/session/websocket",
        ),
        // Trailing slash, query, ws/wss schemes, IPv6, no path.
        (
            "https://example.com:8443/kite/?x=1&y=2",
            "wss://example.com:8443/kite/server/session/websocket?x=1&y=2",
        ),
        (
            "ws://[::1]:6000/kite",
            "ws://[::1]:6000/kite/server/session/websocket",
        ),
        (
            "wss://example.com/kite",
            "wss://example.com:443/kite/server/session/websocket",
        ),
        (
            "http://example.com",
            "ws://example.com:80/server/session/websocket",
        ),
    ] {
        assert_eq!(
            sockjs_websocket_url(base, "server", "session").unwrap(),
            want
        );
    }
    for bad in [
        "not a url",
        "ftp://example.com/kite",
        "http://",
        "mailto:a@b",
        "",
    ] {
        assert!(
            matches!(
                sockjs_websocket_url(bad, "1", "s"),
                Err(DialError::InvalidUrl(_))
            ),
            "{bad}"
        );
    }
}

#[test]
fn origin_xhr_and_raw_urls() {
    let url = parse_base_url("http://127.0.0.1:4736/kite").unwrap();
    assert_eq!(url::origin_of(&url), "http://127.0.0.1:4736");
    let url = parse_base_url("https://koding.com/kite").unwrap();
    assert_eq!(url::origin_of(&url), "https://koding.com");

    let base = parse_base_url("wss://h:1/kite/?q=1").unwrap();
    let session = url::xhr_session_url(&base, "123", "abc");
    assert_eq!(session.as_str(), "https://h:1/kite/123/abc?q=1");
    assert_eq!(
        url::endpoint(&session, "xhr_send").as_str(),
        "https://h:1/kite/123/abc/xhr_send?q=1"
    );

    assert_eq!(
        url::raw_websocket_url("http://h:1/kite/websocket").unwrap(),
        "ws://h:1/kite/websocket"
    );
    assert_eq!(
        url::raw_websocket_url("https://h/ws").unwrap(),
        "wss://h/ws"
    );
    assert_eq!(url::raw_websocket_url("ws://h/").unwrap(), "ws://h/");

    let (server, session) = url::sockjs_ids();
    assert!((100..1000).contains(&server.parse::<u32>().unwrap()));
    assert_eq!(session.len(), 20);
    assert!(session.bytes().all(|b| b.is_ascii_hexdigit()));
}

#[test]
fn close_frames_carry_valid_codes() {
    assert_eq!(
        u16::from(websocket::close_frame(3000, "Go away!").code),
        3000
    );
    assert_eq!(u16::from(websocket::close_frame(2010, "x").code), 1000);
    assert_eq!(
        websocket::close_frame(1000, &"é".repeat(100)).reason.len(),
        122
    );
}

// ---- websocket ----

#[tokio::test]
async fn websocket_echo_batches_and_sends_go_headers() {
    let mut server = ws_server(WsMode::Sockjs).await;
    let mut opts = options(Transport::WebSocket);
    opts.headers = vec![("Cookie".into(), "a=b".into())];
    let mut session = within("dial", dial(&server.base, &opts)).await.unwrap();
    assert_eq!(session.info.transport, TransportKind::WebSocket);
    assert!(session.info.remote_addr.is_some());

    let Some(WsEvent::Request(path, origin, cookie)) = server.events.recv().await else {
        panic!("no upgrade request");
    };
    let port = server
        .base
        .split(':')
        .nth(2)
        .unwrap()
        .split('/')
        .next()
        .unwrap();
    assert_eq!(
        origin.as_deref(),
        Some(format!("http://127.0.0.1:{port}").as_str())
    );
    assert_eq!(cookie.as_deref(), Some("a=b"));
    let parts: Vec<&str> = path.split('/').collect();
    assert_eq!(parts.len(), 5, "{path}");
    assert_eq!((parts[1], parts[4]), ("kite", "websocket"));
    assert_eq!(parts[2].len(), 3);
    assert_eq!(parts[3], session.info.id);

    // Queued together, sent together as one client frame.
    for m in ["one", "two \"<quoted>\"", "three"] {
        session.tx.send(m.into()).unwrap();
    }
    for want in ["one", "two \"<quoted>\"", "three"] {
        assert_eq!(
            within("echo", session.rx.recv()).await.as_deref(),
            Some(want)
        );
    }
    assert_eq!(
        server.events.recv().await,
        Some(WsEvent::Text(
            r#"["one","two \"\u003cquoted\u003e\"","three"]"#.into()
        ))
    );

    // A batched a["x","y"] is two messages in order; m"..." is one.
    session.tx.send("pair".into()).unwrap();
    assert_eq!(within("x", session.rx.recv()).await.as_deref(), Some("x"));
    assert_eq!(within("y", session.rx.recv()).await.as_deref(), Some("y"));
    session.tx.send("legacy".into()).unwrap();
    assert_eq!(
        within("m", session.rx.recv()).await.as_deref(),
        Some("single")
    );

    // Closing from our side sends a websocket close frame with the SockJS code.
    session.tx.close(3000, "Go away!");
    assert_eq!(within("eof", session.rx.recv()).await, None);
    let mut events = Vec::new();
    while let Some(e) = within("close seen", server.events.recv()).await {
        let closed = matches!(e, WsEvent::Closed(_));
        events.push(e);
        if closed {
            break;
        }
    }
    assert_eq!(events.last(), Some(&WsEvent::Closed(Some(3000))));
}

#[tokio::test]
async fn websocket_close_frame_ends_the_session() {
    let server = ws_server(WsMode::Sockjs).await;
    let mut session = within(
        "dial",
        dial_websocket(&server.base, &options(Transport::WebSocket)),
    )
    .await
    .unwrap();
    session.tx.send("before".into()).unwrap();
    session.tx.send("close".into()).unwrap();
    assert_eq!(
        within("echo", session.rx.recv()).await.as_deref(),
        Some("before")
    );
    assert_eq!(within("eof", session.rx.recv()).await, None);
    within("writer stops", session.tx.closed()).await;
    assert!(session.tx.send("late".into()).is_err());
}

#[tokio::test]
async fn websocket_broken_or_oversized_frames_end_the_session() {
    let server = ws_server(WsMode::Sockjs).await;
    let mut opts = options(Transport::WebSocket);
    opts.max_message_size = 100;

    let mut session = within("dial", dial(&server.base, &opts)).await.unwrap();
    session.tx.send("big:100".into()).unwrap();
    assert_eq!(
        within("at limit", session.rx.recv()).await.map(|m| m.len()),
        Some(100)
    );
    session.tx.send("big:101".into()).unwrap();
    assert_eq!(within("over limit", session.rx.recv()).await, None);

    // Far over the limit: tungstenite's frame limit ends it.
    let mut session = within("dial", dial(&server.base, &opts)).await.unwrap();
    session.tx.send("big:2000000".into()).unwrap();
    assert_eq!(within("huge", session.rx.recv()).await, None);

    let mut session = within("dial", dial(&server.base, &opts)).await.unwrap();
    session.tx.send("broken".into()).unwrap();
    assert_eq!(within("broken", session.rx.recv()).await, None);
}

#[tokio::test]
async fn websocket_without_open_frame_is_a_protocol_error() {
    let server = ws_server(WsMode::NoOpen).await;
    let err = within("dial", dial(&server.base, &options(Transport::Auto)))
        .await
        .unwrap_err();
    assert!(matches!(err, DialError::Protocol(_)), "{err}");
}

#[tokio::test]
async fn raw_websocket_uses_the_url_verbatim() {
    let mut server = ws_server(WsMode::Raw).await;
    let url = format!("{}/websocket?token=t", server.base);
    let mut opts = options(Transport::RawWebSocket);
    opts.max_message_size = 50;
    let mut session = within("dial", dial(&url, &opts)).await.unwrap();
    assert_eq!(session.info.transport, TransportKind::RawWebSocket);
    let Some(WsEvent::Request(path, _, _)) = server.events.recv().await else {
        panic!("no upgrade request");
    };
    assert_eq!(path, "/kite/websocket?token=t");

    session.tx.send("[\"not a sockjs frame\"]".into()).unwrap();
    session.tx.send("{}".into()).unwrap();
    assert_eq!(
        within("echo", session.rx.recv()).await.as_deref(),
        Some("[\"not a sockjs frame\"]")
    );
    assert_eq!(
        within("echo", session.rx.recv()).await.as_deref(),
        Some("{}")
    );
    session.tx.send("big:51".into()).unwrap();
    assert_eq!(within("over limit", session.rx.recv()).await, None);
}

// ---- xhr-polling ----

#[tokio::test]
async fn xhr_echo_through_polls() {
    let (base, state) = xhr_server(None).await;
    let mut session = within("dial", dial_xhr(&base, &options(Transport::XhrPolling)))
        .await
        .unwrap();
    assert_eq!(session.info.transport, TransportKind::XhrPolling);
    session.tx.send("one".into()).unwrap();
    session.tx.send("two".into()).unwrap();
    assert_eq!(
        within("one", session.rx.recv()).await.as_deref(),
        Some("one")
    );
    assert_eq!(
        within("two", session.rx.recv()).await.as_deref(),
        Some("two")
    );
    session.tx.send("pair".into()).unwrap();
    assert_eq!(within("x", session.rx.recv()).await.as_deref(), Some("x"));
    assert_eq!(within("y", session.rx.recv()).await.as_deref(), Some("y"));
    {
        let st = state.0.lock().unwrap();
        assert_eq!(
            st.sends[0],
            ("text/plain;charset=UTF-8".into(), r#"["one","two"]"#.into())
        );
        assert!(st.poll_types.iter().all(|t| t == "text/plain"));
    }

    // The server's close frame ends the session, and the sender with it.
    session.tx.send("close".into()).unwrap();
    assert_eq!(within("eof", session.rx.recv()).await, None);
    within("sender stops", session.tx.closed()).await;
}

#[tokio::test]
async fn xhr_404_ends_the_session() {
    let (base, _state) = xhr_server(None).await;
    let mut session = within("dial", dial_xhr(&base, &options(Transport::XhrPolling)))
        .await
        .unwrap();
    session.tx.send("gone".into()).unwrap();
    assert_eq!(within("eof", session.rx.recv()).await, None);
    within("sender stops", session.tx.closed()).await;
}

#[tokio::test]
async fn xhr_close_request_ends_the_session() {
    let (base, _state) = xhr_server(None).await;
    let mut session = within("dial", dial_xhr(&base, &options(Transport::XhrPolling)))
        .await
        .unwrap();
    session.tx.close(3000, "Go away!");
    assert_eq!(within("eof", session.rx.recv()).await, None);
}

#[tokio::test]
async fn xhr_unanswered_poll_is_reissued() {
    let (base, state) = xhr_server(Some(2)).await;
    let mut opts = options(Transport::XhrPolling);
    opts.timeout = Duration::from_millis(300);
    let mut session = within("dial", dial_xhr(&base, &opts)).await.unwrap();
    session.tx.send("hello".into()).unwrap();
    assert_eq!(
        within("echo", session.rx.recv()).await.as_deref(),
        Some("hello")
    );
    assert!(state.0.lock().unwrap().polls >= 3);
}

// ---- auto, refused, timeouts ----

#[tokio::test]
async fn auto_falls_back_to_xhr_when_websocket_is_404() {
    let (base, _state) = xhr_server(None).await;
    let err = within("ws only", dial(&base, &options(Transport::WebSocket)))
        .await
        .unwrap_err();
    assert!(
        matches!(&err, DialError::Handshake(why) if why.contains("404")),
        "{err}"
    );
    let mut session = within("auto", dial(&base, &options(Transport::Auto)))
        .await
        .unwrap();
    assert_eq!(session.info.transport, TransportKind::XhrPolling);
    session.tx.send("via xhr".into()).unwrap();
    assert_eq!(
        within("echo", session.rx.recv()).await.as_deref(),
        Some("via xhr")
    );
}

#[tokio::test]
async fn refused_connection_is_an_error_without_fallback() {
    let url = refused_url().await;
    for transport in [
        Transport::Auto,
        Transport::WebSocket,
        Transport::XhrPolling,
        Transport::RawWebSocket,
    ] {
        let err = within("refused", dial(&url, &options(transport)))
            .await
            .unwrap_err();
        assert!(matches!(err, DialError::Io(_)), "{transport}: {err}");
    }
}

#[tokio::test]
async fn silent_server_times_out() {
    // Accepts TCP (the kernel's backlog does) and never answers.
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}/kite", listener.local_addr().unwrap());
    let mut opts = options(Transport::WebSocket);
    opts.handshake_timeout = Duration::from_millis(200);
    opts.timeout = Duration::from_millis(200);
    for transport in [Transport::WebSocket, Transport::XhrPolling] {
        opts.transport = transport;
        let err = within("timeout", dial(&base, &opts)).await.unwrap_err();
        assert!(matches!(err, DialError::Timeout), "{transport}: {err}");
    }
    drop(listener);
}

// ---- a second `o` ----

#[tokio::test]
async fn a_second_open_frame_ends_the_session() {
    // The server forgot our session and made a new one: what it held for us is lost.
    let server = ws_server(WsMode::Sockjs).await;
    let mut session = within("dial", dial(&server.base, &options(Transport::WebSocket)))
        .await
        .unwrap();
    session.tx.send("reopen".into()).unwrap();
    assert_eq!(within("ws eof", session.rx.recv()).await, None);

    let (base, _state) = xhr_server(None).await;
    let mut session = within("dial", dial_xhr(&base, &options(Transport::XhrPolling)))
        .await
        .unwrap();
    session.tx.send("reopen".into()).unwrap();
    assert_eq!(within("xhr eof", session.rx.recv()).await, None);
}

// ---- xhr-streaming ----

const PRELUDE_LEN: usize = 2048;

/// Dials `server` over xhr-streaming, answering the opening request with the prelude and `o`
/// in the chunks given; returns the session and the open response.
async fn open_stream(
    server: &mut StreamServer,
    opts: &DialOptions,
    opening: &[&[u8]],
) -> (
    crate::session::Session,
    tokio::sync::mpsc::UnboundedSender<Vec<u8>>,
) {
    let dialing = tokio::spawn({
        let base = server.base.clone();
        let opts = opts.clone();
        async move { dial_xhr_streaming(&base, &opts).await }
    });
    let response = within("opening request", server.responses.recv())
        .await
        .unwrap();
    for chunk in opening {
        response.send(chunk.to_vec()).unwrap();
    }
    let session = within("dial", dialing).await.unwrap().unwrap();
    (session, response)
}

fn prelude_and_open() -> Vec<u8> {
    let mut v = vec![b'h'; PRELUDE_LEN];
    v.extend_from_slice(b"\no\n");
    v
}

#[tokio::test]
async fn xhr_streaming_lines_split_across_chunks_or_sharing_them() {
    let mut server = stream_server().await;
    let opts = options(Transport::XhrStreaming);
    // The prelude in two chunks, `o` and the first frames sharing the second.
    let (mut session, response) = open_stream(
        &mut server,
        &opts,
        &[
            &[b'h'; 1000],
            format!("{}\no\na[\"one\"]\na[\"tw", "h".repeat(PRELUDE_LEN - 1000)).as_bytes(),
        ],
    )
    .await;
    assert_eq!(session.info.transport, TransportKind::XhrStreaming);
    assert!(session.info.remote_addr.is_some());
    for chunk in [
        &b"o\"]\nh\na[\"thr"[..],
        b"ee\",\"fo",
        b"ur\"]\n",
        // A UTF-8 character cut between chunks.
        b"a[\"\xc3",
        b"\xa9\"]\nh\n\na[\"last\"]\n",
    ] {
        response.send(chunk.to_vec()).unwrap();
    }
    for want in ["one", "two", "three", "four", "é", "last"] {
        assert_eq!(within(want, session.rx.recv()).await.as_deref(), Some(want));
    }

    // Sending goes through xhr_send, batched.
    session.tx.send("m1".into()).unwrap();
    session.tx.send("m2".into()).unwrap();
    assert_eq!(
        within("xhr_send", server.sends.recv()).await.as_deref(),
        Some(r#"["m1","m2"]"#)
    );
}

#[tokio::test]
async fn xhr_streaming_rotates_to_a_new_response_in_order() {
    let mut server = stream_server().await;
    let (mut session, first) = open_stream(
        &mut server,
        &options(Transport::XhrStreaming),
        &[&prelude_and_open()],
    )
    .await;
    first.send(b"a[\"1\",\"2\"]\n".to_vec()).unwrap();
    first.send(b"a[\"3\"]\n".to_vec()).unwrap();
    // The server ends the response (its limit): the client posts again on the same session.
    drop(first);
    for round in 0..3 {
        let next = within("re-opened request", server.responses.recv())
            .await
            .unwrap();
        let mut body = vec![b'h'; PRELUDE_LEN];
        body.extend_from_slice(format!("\na[\"r{round}\"]\n").as_bytes());
        next.send(body).unwrap();
    }
    for want in ["1", "2", "3", "r0", "r1", "r2"] {
        assert_eq!(within(want, session.rx.recv()).await.as_deref(), Some(want));
    }
    // Each rotation waited for the previous response to end: there is exactly one more.
    let last = within("fourth request", server.responses.recv())
        .await
        .unwrap();
    assert!(server.responses.try_recv().is_err());
    last.send(b"a[\"still here\"]\n".to_vec()).unwrap();
    assert_eq!(
        within("after rotations", session.rx.recv())
            .await
            .as_deref(),
        Some("still here")
    );
}

#[tokio::test]
async fn xhr_streaming_close_frame_ends_the_session() {
    let mut server = stream_server().await;
    let (mut session, response) = open_stream(
        &mut server,
        &options(Transport::XhrStreaming),
        &[&prelude_and_open()],
    )
    .await;
    response
        .send(b"a[\"bye\"]\nc[3000,\"Go away!\"]\n".to_vec())
        .unwrap();
    assert_eq!(
        within("bye", session.rx.recv()).await.as_deref(),
        Some("bye")
    );
    assert_eq!(within("eof", session.rx.recv()).await, None);
    within("sender stops", session.tx.closed()).await;
    // Nothing was re-opened after the close frame.
    drop(response);
    assert!(server.responses.try_recv().is_err());
}

#[tokio::test]
async fn xhr_streaming_404_ends_the_session() {
    let mut server = stream_server().await;
    let (mut session, response) = open_stream(
        &mut server,
        &options(Transport::XhrStreaming),
        &[&prelude_and_open()],
    )
    .await;
    server.gone.store(true, std::sync::atomic::Ordering::SeqCst);
    drop(response);
    assert_eq!(within("eof", session.rx.recv()).await, None);
    within("sender stops", session.tx.closed()).await;
}

#[tokio::test]
async fn xhr_streaming_close_request_ends_the_session() {
    let mut server = stream_server().await;
    let (mut session, _response) = open_stream(
        &mut server,
        &options(Transport::XhrStreaming),
        &[&prelude_and_open()],
    )
    .await;
    session.tx.close(3000, "Go away!");
    assert_eq!(within("eof", session.rx.recv()).await, None);
}

#[tokio::test]
async fn xhr_streaming_refused_or_broken_openings() {
    let mut server = stream_server().await;
    let mut opts = options(Transport::XhrStreaming);
    opts.timeout = Duration::from_millis(300);

    server.gone.store(true, std::sync::atomic::Ordering::SeqCst);
    let err = within("404", dial_xhr_streaming(&server.base, &opts))
        .await
        .unwrap_err();
    assert!(
        matches!(&err, DialError::Handshake(why) if why.contains("404")),
        "{err}"
    );
    server
        .gone
        .store(false, std::sync::atomic::Ordering::SeqCst);

    // (what the opening response carries, whether it then ends, the error)
    let prelude = vec![b'h'; PRELUDE_LEN];
    let mut another = prelude.clone();
    another.extend_from_slice(b"\nc[2010,\"Another connection still open\"]\n");
    let mut prelude_line = prelude.clone();
    prelude_line.push(b'\n');
    for (body, end, protocol) in [
        (another, false, true),
        (prelude_line.clone(), true, true),
        // A buffering proxy: the prelude, and `o` never comes.
        (prelude_line, false, false),
        (b"garbage".to_vec(), false, false),
    ] {
        let dialing = tokio::spawn({
            let base = server.base.clone();
            let opts = opts.clone();
            async move { dial_xhr_streaming(&base, &opts).await }
        });
        let response = within("opening", server.responses.recv()).await.unwrap();
        response.send(body).unwrap();
        if end {
            drop(response);
        } else {
            // Held open until the dial is over.
            tokio::spawn(async move {
                tokio::time::sleep(Duration::from_secs(5)).await;
                drop(response);
            });
        }
        let err = within("dial", dialing).await.unwrap().unwrap_err();
        if protocol {
            assert!(matches!(err, DialError::Protocol(_)), "{err}");
        } else {
            assert!(matches!(err, DialError::Timeout), "{err}");
        }
    }
}

#[tokio::test]
async fn xhr_streaming_bad_frames_end_the_session() {
    let mut opts = options(Transport::XhrStreaming);
    opts.max_message_size = 100;
    let limit = frame_limit(100);
    let mut over_limit = b"a[\"".to_vec();
    over_limit.extend(std::iter::repeat_n(b'x', limit));
    let cases: Vec<(&str, Vec<Vec<u8>>)> = vec![
        ("broken", vec![b"a[\"unterminated\n".to_vec()]),
        ("second o", vec![b"o\n".to_vec()]),
        (
            "message over the limit",
            vec![format!("a[\"{}\"]\n", "x".repeat(101)).into_bytes()],
        ),
        // Ends the session before the newline arrives.
        ("frame over the limit", vec![over_limit]),
        ("not UTF-8", vec![b"a[\"\xff\"]\n".to_vec()]),
    ];
    for (what, chunks) in cases {
        let mut server = stream_server().await;
        let (mut session, response) = open_stream(&mut server, &opts, &[&prelude_and_open()]).await;
        response.send(b"a[\"ok\"]\n".to_vec()).unwrap();
        assert_eq!(within(what, session.rx.recv()).await.as_deref(), Some("ok"));
        for chunk in chunks {
            response.send(chunk).unwrap();
        }
        assert_eq!(within(what, session.rx.recv()).await, None, "{what}");
        drop(response);
    }

    // A response that ends inside a frame.
    let mut server = stream_server().await;
    let (mut session, response) = open_stream(&mut server, &opts, &[&prelude_and_open()]).await;
    response.send(b"a[\"cut".to_vec()).unwrap();
    drop(response);
    assert_eq!(within("cut", session.rx.recv()).await, None);
}

#[test]
fn lines_survive_any_chunking() {
    let text = "hhhh\no\na[\"one\"]\n\na[\"é€😀\"]\nh\nc[3000,\"Go away!\"]\n";
    let want: Vec<&str> = text.split_terminator('\n').collect();
    let bytes = text.as_bytes();
    for size in 1..=bytes.len() {
        let mut lines = xhr_streaming::Lines::new(64);
        let mut got = Vec::new();
        for chunk in bytes.chunks(size) {
            lines.push(chunk);
            while let Some(line) = lines.next_line().unwrap() {
                got.push(line);
            }
        }
        assert_eq!(got, want, "chunks of {size}");
        assert!(!lines.has_partial());
    }
    let mut lines = xhr_streaming::Lines::new(4);
    lines.push(b"1234\n12");
    assert_eq!(lines.next_line().unwrap().as_deref(), Some("1234"));
    assert_eq!(lines.next_line().unwrap(), None);
    assert!(lines.has_partial());
    lines.push(b"345");
    assert!(
        lines.next_line().is_err(),
        "over the limit before its newline"
    );
    let mut lines = xhr_streaming::Lines::new(4);
    lines.push(b"12345\n");
    assert!(lines.next_line().is_err());
}

// ---- auto ----

#[tokio::test]
async fn auto_falls_back_to_xhr_streaming_when_websocket_is_404() {
    let mut server = stream_server().await;
    let (mut session, response) = open_stream(
        &mut server,
        &options(Transport::Auto),
        &[&prelude_and_open()],
    )
    .await;
    assert_eq!(session.info.transport, TransportKind::XhrStreaming);
    session.tx.send("via streaming".into()).unwrap();
    let sent = within("xhr_send", server.sends.recv()).await.unwrap();
    assert_eq!(sent, r#"["via streaming"]"#);
    response.send(b"a[\"answer\"]\n".to_vec()).unwrap();
    assert_eq!(
        within("answer", session.rx.recv()).await.as_deref(),
        Some("answer")
    );
}

#[tokio::test]
async fn auto_falls_back_to_xhr_polling_when_streaming_never_opens() {
    // Websocket 404, xhr_streaming stalled (a buffering proxy): xhr-polling after the timeout.
    let (base, state) = xhr_server(None).await;
    state.0.lock().unwrap().stall_streaming = true;
    let mut opts = options(Transport::Auto);
    opts.timeout = Duration::from_millis(300);
    let mut session = within("auto", dial(&base, &opts)).await.unwrap();
    assert_eq!(session.info.transport, TransportKind::XhrPolling);
    session.tx.send("via polling".into()).unwrap();
    assert_eq!(
        within("echo", session.rx.recv()).await.as_deref(),
        Some("via polling")
    );
}

// ---- dead peers ----

/// How long `session` takes to end, failing after 10 s.
async fn time_to_end(session: &mut crate::session::Session) -> Duration {
    let start = tokio::time::Instant::now();
    while within("session end", session.rx.recv()).await.is_some() {}
    start.elapsed()
}

#[tokio::test]
async fn silent_servers_end_the_session_after_the_heartbeat_timeout() {
    let silence = Duration::from_millis(300);
    // Each ends the session after `silence`, not sooner, and not much later (a debug build on
    // a busy machine: 3 s of slack).
    let check = |what: &str, took: Duration| {
        assert!(
            took >= silence - Duration::from_millis(20),
            "{what}: {took:?}"
        );
        assert!(took < silence + Duration::from_secs(3), "{what}: {took:?}");
    };

    let server = ws_server(WsMode::Mute).await;
    let mut opts = options(Transport::WebSocket);
    opts.heartbeat_timeout = Some(silence);
    let mut session = within("dial", dial(&server.base, &opts)).await.unwrap();
    session.tx.send("unanswered".into()).unwrap();
    check("websocket", time_to_end(&mut session).await);
    within("writer stops", session.tx.closed()).await;

    // Polls are re-issued after `timeout` each; the silence limit spans them.
    let (base, state) = xhr_server(None).await;
    state.0.lock().unwrap().hang_from = Some(2);
    let mut opts = options(Transport::XhrPolling);
    opts.heartbeat_timeout = Some(silence);
    opts.timeout = Duration::from_millis(80);
    let mut session = within("dial", dial(&base, &opts)).await.unwrap();
    check("xhr-polling", time_to_end(&mut session).await);
    within("sender stops", session.tx.closed()).await;
    assert!(state.0.lock().unwrap().polls >= 3, "polls were re-issued");

    let mut server = stream_server().await;
    let mut opts = options(Transport::XhrStreaming);
    opts.heartbeat_timeout = Some(silence);
    let (mut session, _response) = open_stream(&mut server, &opts, &[&prelude_and_open()]).await;
    check("xhr-streaming", time_to_end(&mut session).await);
    within("sender stops", session.tx.closed()).await;
}

#[tokio::test]
async fn heartbeats_keep_a_quiet_session_and_raw_websockets_have_none() {
    let silence = Duration::from_millis(300);
    let mut server = stream_server().await;
    let mut opts = options(Transport::XhrStreaming);
    opts.heartbeat_timeout = Some(silence);
    let (mut session, response) = open_stream(&mut server, &opts, &[&prelude_and_open()]).await;
    // A heartbeat every 100 ms for four times the limit; a frame cut in two counts as well.
    let beats = tokio::spawn(async move {
        for i in 0..12 {
            tokio::time::sleep(Duration::from_millis(100)).await;
            let chunk: &[u8] = match i {
                5 => b"a[\"ha",
                6 => b"lf\"]\n",
                _ => b"h\n",
            };
            response.send(chunk.to_vec()).unwrap();
        }
        response
    });
    assert_eq!(
        within("half", session.rx.recv()).await.as_deref(),
        Some("half")
    );
    let response = within("beats", beats).await.unwrap();
    response.send(b"a[\"alive\"]\n".to_vec()).unwrap();
    assert_eq!(
        within("alive", session.rx.recv()).await.as_deref(),
        Some("alive")
    );
    // Then silence.
    assert!(time_to_end(&mut session).await >= silence - Duration::from_millis(20));

    // A raw websocket has no heartbeats: quiet is fine.
    let server = ws_server(WsMode::Raw).await;
    let mut opts = options(Transport::RawWebSocket);
    opts.heartbeat_timeout = Some(Duration::from_millis(100));
    let mut session = within("dial", dial(&format!("{}/websocket", server.base), &opts))
        .await
        .unwrap();
    let quiet = tokio::time::timeout(Duration::from_millis(500), session.rx.recv()).await;
    assert!(quiet.is_err(), "a quiet raw websocket was ended: {quiet:?}");
    session.tx.send("still open".into()).unwrap();
    assert_eq!(
        within("echo", session.rx.recv()).await.as_deref(),
        Some("still open")
    );
}

#[test]
fn heartbeat_timeout_defaults_to_45_seconds() {
    assert_eq!(
        DialOptions::default().heartbeat_timeout,
        Some(Duration::from_secs(45))
    );
}
