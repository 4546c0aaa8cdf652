//! Client transports against the fake servers of [`super::fake`].

use std::future::Future;
use std::time::Duration;

use tokio::net::TcpListener;

use super::fake::{WsEvent, WsMode, refused_url, ws_server, xhr_server};
use super::*;
use crate::session::TransportKind;

/// Awaits `fut`, failing the test instead of hanging.
async fn within<T>(what: &str, fut: impl Future<Output = T>) -> T {
    tokio::time::timeout(Duration::from_secs(10), fut)
        .await
        .unwrap_or_else(|_| panic!("{what}: timed out"))
}

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
