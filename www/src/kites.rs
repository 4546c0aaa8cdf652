//! The demo's kites: `first` (the introduction's, with `square`; it relays WebRTC signals too), `clock` (pushes the time into
//! a callback every second) and `greeter` (calls methods the page itself serves).

use std::net::IpAddr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use kite_native::{Callback, Config, Kite, KiteError, Request};
use kontrol::server::Kontrol;
use serde_json::json;
use tracing::info;

use crate::BoxError;

/// The owner of the demo's kites.
const OWNER: &str = "demo";
/// Their environment.
const ENVIRONMENT: &str = "demo";

/// A kite configuration listening on `ip` at any free port.
pub fn config(ip: IpAddr, username: &str) -> Config {
    let mut c = Config::default();
    c.ip = ip;
    c.port = 0;
    c.username = username.to_owned();
    c.environment = ENVIRONMENT.to_owned();
    c
}

/// Starts the kites and registers each with Kontrol; returns them once registered.
pub async fn start_all(
    kontrol: &Kontrol,
    ip: IpAddr,
    kontrol_url: &str,
) -> Result<Vec<Kite>, BoxError> {
    let mut kites = Vec::new();
    for (name, install) in [
        ("first", first as fn(&Kite)),
        ("clock", clock),
        ("greeter", greeter),
    ] {
        let mut c = config(ip, OWNER);
        c.apply_kite_key(&kite_native::kitekey::parse(&kontrol.kite_key_for(OWNER)?)?);
        c.kontrol_url = kontrol_url.to_owned();
        // `first` also relays WebRTC signals, for the two-page demo (www/static/webrtc.html).
        c.use_webrtc = name == "first";
        let kite = Kite::with_config(name, "1.0.0", c)?;
        install(&kite);
        let server = kite.clone();
        tokio::spawn(async move {
            if let Err(e) = server.run().await {
                tracing::error!("{e}");
            }
        });
        kite.ready().await;
        let url = kite.url().ok_or("the kite has no URL")?;
        kite.register(&url).await?;
        info!(%name, %url, "registered");
        kites.push(kite);
    }
    Ok(kites)
}

/// The introduction's first kite: `square(n)`.
fn first(kite: &Kite) {
    kite.handle("square", |req: Request| async move {
        let n: f64 = req.args.nth(0)?;
        Ok::<_, KiteError>(n * n)
    });
}

/// `subscribe(cb)`: calls `cb({tick, time})` every second until the caller goes away.
/// `now()`: the time as a string.
fn clock(kite: &Kite) {
    kite.handle("subscribe", |req: Request| async move {
        let cb: Callback = req.args.nth(0)?;
        let context = req.context.clone();
        tokio::spawn(async move {
            let mut every = tokio::time::interval(Duration::from_secs(1));
            for tick in 1u64.. {
                tokio::select! {
                    _ = context.cancelled() => return,
                    _ = every.tick() => {}
                }
                if cb.call(json!({ "tick": tick, "time": now() })).is_err() {
                    return;
                }
            }
        });
        Ok::<_, KiteError>("subscribed: a tick every second")
    });
    kite.handle(
        "now",
        |_req: Request| async move { Ok::<_, KiteError>(now()) },
    );
}

/// `askPage(question)`: logs to the page (its `kite.log`), asks the page's own `answer`
/// method, and returns what the page said.
fn greeter(kite: &Kite) {
    kite.handle("askPage", |req: Request| async move {
        let question: String = req.args.nth(0)?;
        let name = req.caller.name.clone();
        req.client
            .tell("kite.log", (format!("greeter asks {name}: {question}"),))
            .await?;
        let answer: String = req
            .client
            .tell_with_timeout("answer", (question,), Duration::from_secs(10))
            .await?
            .decode()?;
        Ok::<_, KiteError>(format!("the page answered: {answer}"))
    });
}

/// UTC time of day, `HH:MM:SS`.
fn now() -> String {
    let secs = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    format!(
        "{:02}:{:02}:{:02} UTC",
        secs / 3600 % 24,
        secs / 60 % 60,
        secs % 60
    )
}
