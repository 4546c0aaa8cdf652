//! The introduction's first kite: "first" 1.0.0 on port 6000, serving only the built-in
//! methods (`kite.ping`, `kite.systemInfo`, ...).
//!
//! ```text
//! cargo run -p kite-native --example first
//! ```

use kite_native::{Config, Kite};

mod support;

#[tokio::main]
async fn main() -> std::process::ExitCode {
    kite_native::init_logging();
    support::exit("first", run().await)
}

async fn run() -> Result<(), Box<dyn std::error::Error>> {
    let mut config = Config::from_env()?;
    if std::env::var_os("KITE_PORT").is_none() {
        config.port = 6000;
    }
    let kite = Kite::with_config("first", "1.0.0", config)?;
    let stopper = kite.clone();
    tokio::spawn(async move {
        let _ = tokio::signal::ctrl_c().await;
        stopper.close();
    });
    kite.run().await?;
    Ok(())
}
