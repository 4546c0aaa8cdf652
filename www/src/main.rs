//! `kite-demo`: the one-command demo. Starts a Kontrol on the embedded store, registers the
//! example kites with it, and serves the page in `www/static` (with the kite-wasm package from
//! `kite-wasm/pkg`) on `KITE_DEMO_PORT` (default 8080). Stop it with Ctrl-C.

mod kites;
mod site;

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use clap::Parser;
use kite_native::auth::KeyPair;
use kontrol::server::{Kontrol, KontrolOptions};
use kontrol::storage::{EmbeddedStorage, Storage};

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Command line.
#[derive(Debug, Parser)]
#[command(
    name = "kite-demo",
    about = "Kontrol, example kites and the browser page, on localhost"
)]
struct Args {
    /// The page's port.
    #[arg(long, env = "KITE_DEMO_PORT", default_value_t = 8080)]
    port: u16,
    /// The address everything listens on.
    #[arg(long, env = "KITE_DEMO_IP", default_value = "127.0.0.1")]
    ip: IpAddr,
    /// Kontrol's port (0: any free one).
    #[arg(long, env = "KITE_DEMO_KONTROL_PORT", default_value_t = 0)]
    kontrol_port: u16,
    /// Where the page and the npm package are (the repository root).
    #[arg(long, env = "KITE_DEMO_ROOT", default_value = ".")]
    root: PathBuf,
    /// Kontrol's embedded store (default: a fresh file in a temporary directory).
    #[arg(long, env = "KITE_DEMO_DATAFILE")]
    data_file: Option<PathBuf>,
}

#[tokio::main]
async fn main() -> Result<(), BoxError> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "warn,kite_demo=info".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let args = Args::parse();
    let pkg = args.root.join("kite-wasm/pkg/web/kite.js");
    if !pkg.exists() {
        return Err(format!(
            "{} is missing: build the package with scripts/build-wasm (scripts/demo does)",
            pkg.display()
        )
        .into());
    }

    // Kontrol, on the embedded store.
    let temp = std::env::temp_dir().join(format!("kite-demo-{}", std::process::id()));
    std::fs::create_dir_all(&temp)?;
    let data_file = args
        .data_file
        .clone()
        .unwrap_or_else(|| temp.join("kontrol.db"));
    let storage: Arc<dyn Storage> = Arc::new(EmbeddedStorage::open(&data_file)?);
    let listener = kite_native::listen(SocketAddr::new(args.ip, args.kontrol_port))?;
    let kontrol_url = format!("http://{}/kite", listener.local_addr()?);
    let mut options = KontrolOptions::new("kontrol", KeyPair::generate(2048)?, &kontrol_url);
    options.heartbeat_interval = Duration::from_secs(2);
    options.registration_ttl = Duration::from_secs(6);
    let kontrol = Kontrol::new(kites::config(args.ip, "kontrol"), options, storage)?;
    let server = kontrol.kite().clone();
    tokio::spawn(async move {
        if let Err(e) = server.serve(listener).await {
            tracing::error!("kontrol stopped: {e}");
        }
    });

    // The example kites, registered with it.
    let running = kites::start_all(&kontrol, args.ip, &kontrol_url).await?;

    // The page.
    let site = site::Site {
        root: args.root.clone(),
        kontrol_url: kontrol_url.clone(),
        kite_key: kontrol.kite_key_for("browser")?,
    };
    let listener = tokio::net::TcpListener::bind(SocketAddr::new(args.ip, args.port))
        .await
        .map_err(|e| {
            format!(
                "cannot listen on {}:{}: {e} (set KITE_DEMO_PORT)",
                args.ip, args.port
            )
        })?;
    let page = format!("http://{}/", listener.local_addr()?);
    println!("Kontrol:   {kontrol_url}");
    for kite in &running {
        println!(
            "kite:      {:<8} {}",
            kite.identity().name,
            kite.url().unwrap_or_default()
        );
    }
    println!("Open {page} in a browser. Ctrl-C stops everything.");
    // The kites' serve loop, with their default budgets and timeouts.
    let options = kite_native::server::ServeOptions::default();
    kite_native::server::serve(listener, site.router(), options, async {
        let _ = tokio::signal::ctrl_c().await;
    })
    .await?;
    for kite in running {
        kite.close();
    }
    kontrol.kite().close();
    let _ = std::fs::remove_dir_all(&temp);
    Ok(())
}
