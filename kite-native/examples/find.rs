//! The introduction's second kite, finding the first through Kontrol: asks Kontrol for kites
//! named "first" of the same user and environment, then calls `square(4)` on the first one
//! found with the token Kontrol gave. Uses the kite key in `~/.kite/kite.key`.
//!
//! ```text
//! cargo run -p kite-native --example find
//! ```

use kite_native::core::KontrolQuery;
use kite_native::{Config, Kite};

mod support;

#[tokio::main]
async fn main() -> std::process::ExitCode {
    kite_native::init_logging_with_default("warn");
    support::exit("find", run().await)
}

async fn run() -> Result<(), Box<dyn std::error::Error>> {
    let config = Config::get()
        .map_err(|e| format!("cannot read your kite key: {e} (get one with `kitectl register`)"))?;
    let kite = Kite::with_config("second", "1.0.0", config)?;
    let query = KontrolQuery {
        username: kite.config().username.clone(),
        environment: kite.config().environment.clone(),
        name: "first".into(),
        ..KontrolQuery::default()
    };
    let kites = kite.get_kites(&query).await?;
    let first = kites.first().ok_or("Kontrol knows no kite named first")?;
    println!("found {} kite(s); calling {}", kites.len(), first.url());
    first.dial().await?;
    let n: f64 = first.call("square", (4,)).await?;
    println!("{n}");
    Ok(())
}
