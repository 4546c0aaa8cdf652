//! The introduction's first kite with a `square` method: "first" 1.0.0 on port 6000 with
//! authentication disabled.
//!
//! ```text
//! cargo run -p kite-native --example square
//! ```

use kite_native::{Config, Kite, KiteError, Request};

mod support;

#[tokio::main]
async fn main() -> std::process::ExitCode {
    kite_native::init_logging();
    support::exit("square", run().await)
}

async fn run() -> Result<(), Box<dyn std::error::Error>> {
    let mut config = Config::from_env()?;
    if std::env::var_os("KITE_PORT").is_none() {
        config.port = 6000;
    }
    config.disable_authentication = true;
    let kite = Kite::with_config("first", "1.0.0", config)?;

    kite.handle("square", |req: Request| async move {
        let n: f64 = req.arg()?;
        Ok::<_, KiteError>(n * n)
    });

    let stopper = kite.clone();
    tokio::spawn(async move {
        let _ = tokio::signal::ctrl_c().await;
        stopper.close();
    });
    kite.run().await?;
    Ok(())
}
