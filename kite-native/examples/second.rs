//! The introduction's second kite: dials a kite, calls `kite.ping` and prints `pong`, then
//! calls `square` with 4 and prints `16` if the kite has that method.
//!
//! ```text
//! cargo run -p kite-native --example second [URL]     # default http://localhost:6000/kite
//! KITE_TRANSPORT=XHRPolling cargo run -p kite-native --example second
//! ```

use kite_native::{ErrorKind, Kite};

mod support;

#[tokio::main]
async fn main() -> std::process::ExitCode {
    kite_native::init_logging_with_default("warn");
    support::exit("second", run().await)
}

async fn run() -> Result<(), Box<dyn std::error::Error>> {
    let url = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "http://localhost:6000/kite".to_owned());
    let kite = Kite::new("second", "1.0.0")?;
    let client = kite.new_client(&url);
    client.dial().await?; // its error names the URL

    let pong: String = client.call("kite.ping", ()).await?;
    println!("{pong}");

    match client.call::<f64>("square", (4,)).await {
        Ok(n) => println!("{n}"),
        Err(e) if e.kind() == ErrorKind::MethodNotFound => {
            eprintln!("the kite at {url} has no square method (run the `square` example)");
        }
        Err(e) => return Err(e.into()),
    }
    client.close();
    Ok(())
}
