//! Calls over a real socket, over websocket and over xhr-polling.

mod common;

use std::time::Duration;

use common::{TRANSPORTS, TestKite, client_for, within};
use kite_native::session::TransportKind;
use kite_native::transport::Transport;
use kite_native::{ClientError, ErrorKind, KiteError, Request};
use serde_json::{Value, json};

#[tokio::test]
async fn square_ping_and_builtins() {
    let server = TestKite::start().await;
    for transport in TRANSPORTS {
        let (_k, client) = client_for(&server.url, transport).await;
        let expected = match transport {
            Transport::XhrPolling => TransportKind::XhrPolling,
            _ => TransportKind::WebSocket,
        };
        assert_eq!(client.transport(), Some(expected));
        let pong: String = within("ping", client.call("kite.ping", ())).await.unwrap();
        assert_eq!(pong, "pong");
        let n: f64 = within("square", client.call("square", (4,))).await.unwrap();
        assert_eq!(n, 16.0);
        let echoed: Value = within(
            "echo",
            client.call("kite.echo", (json!({"a": [1, "<>&"]}),)),
        )
        .await
        .unwrap();
        assert_eq!(echoed, json!({"a": [1, "<>&"]}));
        let info: Value = within("systemInfo", client.call("kite.systemInfo", ()))
            .await
            .unwrap();
        assert_eq!(info["state"], "RUNNING");
        assert!(info["totalMemoryLimit"].as_u64().unwrap() > 0);
        assert!(info["memoryUsage"].as_u64().unwrap() > 0);
        assert_eq!(info["uname"], "linux");
        let printed: usize = within("print", client.call("kite.print", ("",)))
            .await
            .unwrap();
        assert_eq!(printed, 0);
        let logged: Value = within("log", client.call("kite.log", ("hello from a test",)))
            .await
            .unwrap();
        assert_eq!(logged, Value::Null);
        client.close();
    }
}

#[tokio::test]
async fn errors_come_back_as_kite_errors() {
    let server = TestKite::start().await;
    for transport in TRANSPORTS {
        let (_k, client) = client_for(&server.url, transport).await;
        let e = within("unknown", client.tell("nosuch", (1,)))
            .await
            .unwrap_err();
        assert!(matches!(e, ClientError::Remote(_)), "{e:?}");
        assert_eq!(e.kind(), ErrorKind::MethodNotFound);
        assert_eq!(e.to_string(), "Method not found: nosuch");
        assert_eq!(
            e.kite_error().id,
            "",
            "Go sends methodNotFound without an id"
        );

        let e = within("fail", client.tell("fail", ())).await.unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Generic);
        assert_eq!(e.to_string(), "intentional error");
        assert_eq!(e.kite_error().id.len(), 16, "request id: {e:?}");
        assert!(e.kite_error().id.chars().all(|c| c.is_ascii_hexdigit()));

        let e = within("custom", client.tell("custom", ()))
            .await
            .unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Other("myType".into()));
        assert_eq!(e.kite_error().code, "E42");

        let e = within("wrong type", client.tell("square", ("four",)))
            .await
            .unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Argument);
        let e = within("no args", client.tell("square", ()))
            .await
            .unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Argument);

        // A panicking handler is an error for that call only.
        let e = within("panic", client.tell("panic", ())).await.unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Generic);
        assert!(e.to_string().contains("intentional panic"), "{e}");
        let n: f64 = within("after panic", client.call("square", (3,)))
            .await
            .unwrap();
        assert_eq!(n, 9.0);
        client.close();
    }
}

#[tokio::test]
async fn no_head_of_line_blocking_and_many_calls_in_flight() {
    let server = TestKite::start().await;
    for transport in TRANSPORTS {
        let (_k, client) = client_for(&server.url, transport).await;
        // A call that waits until released...
        let c = client.clone();
        let slow = tokio::spawn(async move { c.call::<String>("wait", ()).await });
        // ...does not hold up later calls on the same connection.
        for i in 0..5 {
            let n: f64 = within("fast call", client.call("square", (i,)))
                .await
                .unwrap();
            assert_eq!(n, f64::from(i * i));
        }
        assert!(!slow.is_finished());
        server.release.notify_one();
        assert_eq!(
            within("slow call", slow).await.unwrap().unwrap(),
            "released"
        );

        // 200 concurrent calls on one connection, each gets its own answer.
        let calls = (0..200).map(|i| {
            let c = client.clone();
            async move { c.call::<f64>("square", (i,)).await.map(|v| (i, v)) }
        });
        let results = within("concurrent", futures_util::future::join_all(calls)).await;
        for r in results {
            let (i, v) = r.unwrap();
            assert_eq!(v, f64::from(i * i));
        }
        client.close();
    }
}

#[tokio::test]
async fn large_calls_in_flight_together_stay_under_the_message_limit() {
    // Sixteen 200 KiB calls queued at once must not be batched into one SockJS frame over the
    // server's 1 MiB limit (each would then fail with `1009 Message too big`), in either
    // direction: requests and answers.
    let server = TestKite::start().await;
    let big = "x".repeat(200 * 1024);
    for transport in TRANSPORTS {
        let (_k, client) = client_for(&server.url, transport).await;
        let calls = (0..16).map(|_| {
            let (c, big) = (client.clone(), big.clone());
            async move { c.call::<String>("kite.echo", (big,)).await }
        });
        let results = within("large calls", futures_util::future::join_all(calls)).await;
        for r in results {
            assert_eq!(r.unwrap().len(), big.len(), "{transport}");
        }
        assert!(client.is_connected(), "{transport}");
        client.close();
    }
}

#[tokio::test]
async fn timeouts_are_timeout_errors_and_late_answers_are_ignored() {
    let server = TestKite::start().await;
    for transport in TRANSPORTS {
        let (_k, client) = client_for(&server.url, transport).await;
        let e = within(
            "timeout",
            client.tell_with_timeout("wait", (), Duration::from_millis(50)),
        )
        .await
        .unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Timeout);
        let ClientError::Timeout { method, after } = &e else {
            panic!("not a timeout: {e:?}");
        };
        assert_eq!(
            (method.as_str(), *after),
            ("wait", Duration::from_millis(50))
        );
        assert!(e.to_string().contains("No response to \"wait\""), "{e}");
        // The late answer arrives for a freed slot and changes nothing.
        server.release.notify_one();
        let n: f64 = within("after timeout", client.call("square", (2,)))
            .await
            .unwrap();
        assert_eq!(n, 4.0);
        client.close();
    }
}

#[tokio::test]
async fn authentication_is_required_unless_disabled() {
    let mut config = common::config();
    config.disable_authentication = false;
    let server = TestKite::start_with(config).await;
    server
        .kite
        .authenticator("sessionID", |req: Request| async move {
            match req.auth.as_ref().map(|a| a.key.as_str()) {
                Some("good") => Ok("alice".to_owned()),
                _ => Err(KiteError::generic("bad session")),
            }
        });
    for transport in TRANSPORTS {
        let (_k, client) = client_for(&server.url, transport).await;
        // kite.ping stays open.
        let pong: String = within("ping", client.call("kite.ping", ())).await.unwrap();
        assert_eq!(pong, "pong");
        let e = within("no auth", client.tell("square", (2,)))
            .await
            .unwrap_err();
        assert!(matches!(e, ClientError::Authentication(_)), "{e:?}");
        assert_eq!(e.kind(), ErrorKind::Authentication);
        assert_eq!(e.to_string(), "No authentication information is provided");

        client.set_auth(Some(kite_native::Auth::new("carrierPigeon", "x")));
        let e = within("unknown type", client.tell("square", (2,)))
            .await
            .unwrap_err();
        assert_eq!(e.to_string(), "Unknown authentication type: carrierPigeon");

        client.set_auth(Some(kite_native::Auth::new("sessionID", "bad")));
        let e = within("bad key", client.tell("square", (2,)))
            .await
            .unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Authentication);
        assert_eq!(e.to_string(), "sessionID: bad session");

        client.set_auth(Some(kite_native::Auth::new("sessionID", "good")));
        let who: Value = within("whoami", client.call("whoami", ())).await.unwrap();
        assert_eq!(
            who["username"], "alice",
            "authenticated username replaces the declared one"
        );
        assert_eq!(who["caller"]["username"], "alice");
        assert_eq!(who["caller"]["name"], "tester");
        client.close();
    }
}

#[tokio::test]
async fn throttle_pre_post_and_final_handlers() {
    let server = TestKite::start().await;
    let kite = &server.kite;
    kite.handle("limited", |_r: Request| async { Ok::<_, KiteError>(1) })
        .throttle(Duration::from_secs(3600), 2);
    kite.handle("chain", |r: Request| async move {
        let seen = r.get::<&'static str>().map(|s| *s).unwrap_or("nothing");
        Ok::<_, KiteError>(format!("handler saw {seen}"))
    })
    .pre_handle(|r: Request| async move {
        r.insert("pre value");
        Ok::<_, KiteError>(Value::Null)
    })
    .post_handle(|_r: Request| async move { Ok::<_, KiteError>("post result") })
    .final_func(|_r, result| match result {
        Ok(v) => Ok(v),
        Err(e) => Ok(kite_native::Value::from_json(Value::String(format!(
            "recovered: {}",
            e.message
        )))),
    });
    kite.handle("stopped", |_r: Request| async {
        Ok::<_, KiteError>("never")
    })
    .pre_handle(|_r: Request| async { Err::<Value, _>(KiteError::generic("pre said no")) });

    let (_k, client) = client_for(&server.url, TRANSPORTS[0]).await;
    for _ in 0..2 {
        let _: i32 = within("limited", client.call("limited", ())).await.unwrap();
    }
    let e = within("limited 3", client.tell("limited", ()))
        .await
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::RequestLimit);
    assert_eq!(e.to_string(), "The maximum request rate is exceeded.");

    let v: String = within("chain", client.call("chain", ())).await.unwrap();
    assert_eq!(v, "handler saw pre value");
    kite.set_method_handling(kite_native::MethodHandling::ReturnLatest);
    let v: String = within("chain latest", client.call("chain", ()))
        .await
        .unwrap();
    assert_eq!(v, "post result");
    kite.set_method_handling(kite_native::MethodHandling::ReturnMethod);

    let e = within("stopped", client.tell("stopped", ()))
        .await
        .unwrap_err();
    assert_eq!(e.to_string(), "pre said no");
    client.close();
}

#[tokio::test]
async fn extra_http_routes_are_served_beside_kite() {
    let kite = kite_native::Kite::with_config("web", "1.0.0", common::config()).unwrap();
    kite.route(
        "/hello",
        axum::routing::get(|| async { "hello from a route" }),
    );
    let server = kite.clone();
    tokio::spawn(async move { server.run().await.unwrap() });
    let addr = within("ready", kite.ready()).await;
    assert_eq!(kite.port(), Some(addr.port()));
    let http = reqwest::Client::new();
    let body = http
        .get(format!("http://{addr}/hello"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert_eq!(body, "hello from a route");
    for path in ["/kite", "/kite/"] {
        let body = http
            .get(format!("http://{addr}{path}"))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        assert_eq!(body, "Welcome to SockJS!\n", "{path}");
    }
    // The kite still answers calls.
    let (_k, client) = client_for(&kite.url().unwrap(), TRANSPORTS[0]).await;
    let pong: String = within("ping", client.call("kite.ping", ())).await.unwrap();
    assert_eq!(pong, "pong");
    kite.close();
}

#[tokio::test]
async fn tls_serves_websocket_and_xhr() {
    common::init_tracing();
    let cert =
        rcgen::generate_simple_self_signed(vec!["localhost".into(), "127.0.0.1".into()]).unwrap();
    let dir = std::env::temp_dir().join(format!("kite-tls-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&dir).unwrap();
    let (cert_path, key_path) = (dir.join("cert.pem"), dir.join("key.pem"));
    std::fs::write(&cert_path, cert.cert.pem()).unwrap();
    std::fs::write(&key_path, cert.signing_key.serialize_pem()).unwrap();

    let mut config = common::config();
    config.tls = Some(kite_native::config::TlsConfig {
        cert_path,
        key_path,
    });
    let server = TestKite::start_with(config).await;
    assert!(server.kite.url().unwrap().starts_with("https://127.0.0.1:"));
    let url = server.url.replacen("http://", "https://", 1);
    for transport in TRANSPORTS {
        let kite = kite_native::Kite::with_config("tester", "1.0.0", common::config()).unwrap();
        let client = kite.new_client(&url);
        let mut options = kite_native::transport::DialOptions::default();
        options.transport = transport;
        options.root_certificates = vec![cert.cert.pem()];
        client.set_dial_options(options);
        within("dial tls", client.dial()).await.unwrap();
        let n: f64 = within("square", client.call("square", (4,))).await.unwrap();
        assert_eq!(n, 16.0);
        client.close();

        // Without trusting the certificate the dial fails.
        let untrusting = kite.new_client(&url);
        untrusting.set_transport(transport);
        let e = within("untrusted", untrusting.dial()).await.unwrap_err();
        assert!(
            matches!(&e, ClientError::Dial { url: dialed, .. } if *dialed == url),
            "{e:?}"
        );
        assert!(std::error::Error::source(&e).is_some(), "{e:?}");
        assert_eq!(e.kite_error().kind, ErrorKind::Send);
        assert!(e.to_string().starts_with(&format!("dial {url}: ")), "{e}");
    }
    // Plain HTTP to a TLS port is refused without harming the server.
    let plain = reqwest::Client::new()
        .get(format!("{}/info", server.url))
        .send()
        .await;
    assert!(plain.is_err() || !plain.unwrap().status().is_success());
    let _ = std::fs::remove_dir_all(&dir);
}
