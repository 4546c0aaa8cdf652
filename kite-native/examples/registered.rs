//! The introduction's first kite, registered with Kontrol: "first" 1.0.0 with `square`, on
//! port 6000, using the kite key in `~/.kite/kite.key` (written by `kitectl register`) for its
//! username and Kontrol's URL. Callers need a token from Kontrol (`find` gets one).
//!
//! ```text
//! cargo run -p kite-native --example registered
//! ```

use kite_native::{Config, Kite, KiteError, Request};

mod support;

#[tokio::main]
async fn main() -> std::process::ExitCode {
    kite_native::init_logging();
    support::exit("registered", run().await)
}

async fn run() -> Result<(), Box<dyn std::error::Error>> {
    // Defaults, then the kite key (username, Kontrol URL and key), then KITE_* variables.
    let mut config = Config::get()
        .map_err(|e| format!("cannot read your kite key: {e} (get one with `kitectl register`)"))?;
    if std::env::var_os("KITE_PORT").is_none() {
        config.port = 6000;
    }
    let kite = Kite::with_config("first", "1.0.0", config)?;
    kite.handle("square", |req: Request| async move {
        let n: f64 = req.arg()?;
        Ok::<_, KiteError>(n * n)
    });

    let server = kite.clone();
    tokio::spawn(async move {
        let _ = tokio::signal::ctrl_c().await;
        server.close();
    });
    let running = {
        let kite = kite.clone();
        tokio::spawn(async move { kite.run().await })
    };
    kite.ready().await;
    let url = kite.url().ok_or("the kite has no URL")?;
    kite.register_forever(&url).await?;
    println!("registered {url} with {}", kite.config().kontrol_url);
    running.await??;
    Ok(())
}
