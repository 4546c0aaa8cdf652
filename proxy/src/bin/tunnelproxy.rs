//! `tunnelproxy`: serves kites that cannot be dialed to public clients (Go's `tunnelproxy`).
//!
//! ```sh
//! tunnelproxy --public-host proxy.example.com:3999 \
//!             --public-key tunnel.pub.pem --private-key tunnel.pem
//! ```
//!
//! The configuration comes from the kite key and `KITE_*` variables (`Config::get`); with a kite
//! key, the proxy registers `http://<publicHost>/kite` with Kontrol (retrying until it is
//! accepted). Without `--public-key`/`--private-key` it signs tunnel tokens with a key pair
//! generated at start.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use kite_native::Config;
use kite_native::auth::KeyPair;
use kite_proxy::tunnel::{DEFAULT_MESSAGE_LIMIT, TunnelProxy, TunnelProxyOptions};
use tracing::{info, warn};

/// A tunnel proxy for kites behind NAT or a firewall.
#[derive(Debug, Parser)]
#[command(name = "tunnelproxy")]
struct Args {
    /// The public key (PEM) tunnel tokens are checked with.
    #[arg(long)]
    public_key: Option<PathBuf>,
    /// The private key (PEM) tunnel tokens are signed with.
    #[arg(long)]
    private_key: Option<PathBuf>,
    /// Address to listen on.
    #[arg(long, default_value = "0.0.0.0")]
    ip: std::net::IpAddr,
    /// Port to listen on.
    #[arg(long, default_value_t = kite_proxy::tunnel::DEFAULT_PORT)]
    port: u16,
    /// `host:port` at which clients and kites reach this proxy.
    #[arg(long, default_value = "127.0.0.1:3999")]
    public_host: String,
    /// The proxy kite's version.
    #[arg(long = "version", default_value = "0.0.1")]
    kite_version: String,
    /// Largest message relayed through a tunnel, in bytes.
    #[arg(long, default_value_t = DEFAULT_MESSAGE_LIMIT)]
    message_limit: usize,
    /// How long a public client waits for its kite to open a tunnel (a Go duration: `10s`).
    #[arg(long, default_value = "10s", value_parser = kite_native::config::parse_go_duration)]
    open_timeout: Duration,
}

fn read(path: &PathBuf) -> Result<String, String> {
    std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))
}

/// The kite key's configuration, or the defaults and `KITE_*` variables when there is no key.
fn config() -> Result<Config, String> {
    let have_key = std::env::var("KITE_KEY").is_ok_and(|k| !k.trim().is_empty())
        || kite_native::kitekey::kite_key_path().is_ok_and(|p| p.exists());
    if have_key {
        Config::get().map_err(|e| e.to_string())
    } else {
        warn!("no kite.key: not registering with Kontrol");
        Config::from_env().map_err(|e| e.to_string())
    }
}

async fn run(args: Args) -> Result<(), String> {
    let key = match (&args.public_key, &args.private_key) {
        (Some(public), Some(private)) => KeyPair {
            public_pem: read(public)?,
            private_pem: read(private)?,
        },
        (None, None) => {
            info!("no key pair given: generating one for tunnel tokens");
            KeyPair::generate(2048).map_err(|e| e.to_string())?
        }
        _ => return Err("give both --public-key and --private-key, or neither".into()),
    };
    let mut config = config()?;
    config.ip = args.ip;
    config.port = args.port;
    if config.kontrol_key.is_empty() && !config.disable_authentication {
        warn!("no Kontrol key (kite.key or KITE_KONTROL_KEY): every `register` will be refused");
    }
    let mut options = TunnelProxyOptions::new(key);
    options.public_host = Some(args.public_host.clone());
    options.message_limit = args.message_limit;
    options.open_timeout = args.open_timeout;
    let proxy = TunnelProxy::new(config, &args.kite_version, options).map_err(|e| e.to_string())?;
    let listener = kite_native::listen(std::net::SocketAddr::new(args.ip, args.port))
        .map_err(|e| format!("listen on {}:{}: {e}", args.ip, args.port))?;
    if !proxy.kite().kite_key().is_empty() && !proxy.kite().config().kontrol_url.is_empty() {
        let kite = proxy.kite().clone();
        let url = proxy.kite_url();
        tokio::spawn(async move {
            if let Ok(r) = kite.register_forever(&url).await {
                info!(url = %r.url, "registered with Kontrol");
            }
        });
    }
    let stop = proxy.clone();
    tokio::spawn(async move {
        if tokio::signal::ctrl_c().await.is_ok() {
            info!("interrupted, closing");
            stop.close();
        }
    });
    proxy.serve(listener).await.map_err(|e| e.to_string())
}

#[tokio::main]
async fn main() -> ExitCode {
    kite_native::init_logging();
    match run(Args::parse()).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("tunnelproxy: {e}");
            ExitCode::FAILURE
        }
    }
}
