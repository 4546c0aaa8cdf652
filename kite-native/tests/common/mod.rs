//! A test kite on 127.0.0.1 with the methods the tests call, and clients for each transport.
#![allow(dead_code)]

use std::sync::Arc;

use kite_native::transport::Transport;
use kite_native::{Client, Config, Kite, KiteError, Request};
use serde::Deserialize;
use serde_json::Value;
use tokio::sync::Notify;

/// Both transports a Go client uses.
pub const TRANSPORTS: [Transport; 2] = [Transport::WebSocket, Transport::XhrPolling];

pub fn init_tracing() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("KITE_LOG_LEVEL")
                .unwrap_or_else(|_| "warn".into()),
        )
        .with_test_writer()
        .try_init();
}

/// Fails the test instead of hanging.
pub use kite_test_kit::within;

pub fn config() -> Config {
    let mut c = Config::default();
    c.ip = [127, 0, 0, 1].into();
    c.port = 0;
    c.disable_authentication = true;
    c
}

/// The data of `callback`'s options; its function comes beside it, at `cb`.
#[derive(Deserialize)]
struct CallbackArgs {
    value: Value,
    times: u32,
}

/// The server side of the tests.
pub struct TestKite {
    pub kite: Kite,
    pub url: String,
    /// `wait` returns once this is notified.
    pub release: Arc<Notify>,
}

impl TestKite {
    pub async fn start() -> TestKite {
        Self::start_with(config()).await
    }

    pub async fn start_with(config: Config) -> TestKite {
        init_tracing();
        let kite = Kite::with_config("math", "1.0.0", config).unwrap();
        let release = Arc::new(Notify::new());
        kite.handle("square", |req: Request| async move {
            let n: f64 = req.arg()?;
            Ok::<_, KiteError>(n * n)
        });
        kite.handle("callback", |req: Request| async move {
            let a: CallbackArgs = req.arg()?;
            let cb = req
                .args
                .callback_at(&[0.into(), "cb".into()])
                .ok_or_else(|| KiteError::argument("options.cb is not a function"))?;
            for _ in 0..a.times {
                cb.call((a.value.clone(),))?;
            }
            Ok::<_, KiteError>(a.value)
        });
        kite.handle("fail", |_req: Request| async move {
            Err::<(), _>(KiteError::generic("intentional error"))
        });
        kite.handle("custom", |_req: Request| async move {
            Err::<(), _>(
                KiteError::new(kite_native::ErrorKind::Other("myType".into()), "custom")
                    .with_code("E42"),
            )
        });
        kite.handle("panic", |_req: Request| async move {
            if true {
                panic!("intentional panic");
            }
            Ok::<(), KiteError>(())
        });
        let r = release.clone();
        kite.handle("wait", move |_req: Request| {
            let r = r.clone();
            async move {
                r.notified().await;
                Ok::<_, KiteError>("released")
            }
        });
        kite.handle("whoami", |req: Request| async move {
            Ok::<_, KiteError>(serde_json::json!({
                "username": req.username,
                "caller": req.caller,
            }))
        });
        // Bidirectional: ask the caller's own `client.hello` method.
        kite.handle("ask", |req: Request| async move {
            let name: String = req.arg()?;
            let answer: String = req.client.call("client.hello", (name,)).await?;
            Ok::<_, KiteError>(format!("client said: {answer}"))
        });
        // Cancelled when the caller disconnects.
        kite.handle("until_disconnect", |req: Request| async move {
            req.context.cancelled().await;
            Ok::<_, KiteError>(())
        });
        let server = kite.clone();
        tokio::spawn(async move { server.run().await.unwrap() });
        let addr = within("server start", kite.ready()).await;
        TestKite {
            url: format!("http://{addr}/kite"),
            kite,
            release,
        }
    }
}

/// A dialed client kite using `transport`, with `client.hello` served.
pub async fn client_for(url: &str, transport: Transport) -> (Kite, Client) {
    let kite = Kite::with_config("tester", "1.0.0", config()).unwrap();
    kite.handle("client.hello", |req: Request| async move {
        let name: String = req.arg()?;
        Ok::<_, KiteError>(format!("hello {name}"))
    });
    let client = kite.new_client(url);
    client.set_transport(transport);
    within("dial", client.dial()).await.unwrap();
    (kite, client)
}

/// The npm project of `tests/interop` (the real Kite.js and sockjs-client), when node and its
/// packages are installed; `None` (skip) on a developer machine without them, a panic under CI.
pub fn interop_dir() -> Option<std::path::PathBuf> {
    let dir = std::env::var_os("KITE_INTEROP_DIR")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| {
            std::path::PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../tests/interop"))
        });
    let ready = dir.join("node_modules/kite.js").is_dir()
        && dir.join("node_modules/sockjs-client").is_dir()
        && std::process::Command::new("node")
            .arg("--version")
            .output()
            .is_ok();
    if ready {
        return Some(dir);
    }
    kite_test_kit::skip(&format!(
        "Kite.js interop needs node and `npm ci` in {} (run scripts/setup)",
        dir.display()
    ));
    None
}
