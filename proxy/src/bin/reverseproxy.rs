//! `reverseproxy`: Go's `reverseproxy` command. Serves the proxy kite at `/kite` and the kites
//! registered with it at `/proxy/<kiteID>/`, and registers
//! `<scheme>://<publicHost>:<publicPort>/kite` with Kontrol (the kite key comes from
//! `kite.key` or `KITE_KEY`, as for every kite).
//!
//! ```text
//! reverseproxy --region eu --port 3999 --public-host proxy.example.com \
//!     --cert cert.pem --key key.pem --allow-origin https://app.example.com
//! ```

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;

use clap::Parser;
use kite_native::config::TlsConfig;
use kite_proxy::reverse::{ReverseProxy, ReverseProxyOptions, VERSION};
use tracing::{error, info};

/// A reverse proxy for kites: one public address (optionally TLS) in front of many kites.
#[derive(Debug, Parser)]
#[command(name = "reverseproxy", version = VERSION)]
struct Args {
    /// Certificate (PEM) for serving HTTPS; needs --key.
    #[arg(long, requires = "key")]
    cert: Option<PathBuf>,
    /// Private key (PEM) for serving HTTPS; needs --cert.
    #[arg(long, requires = "cert")]
    key: Option<PathBuf>,
    /// Listening IP.
    #[arg(long, default_value = "0.0.0.0")]
    ip: IpAddr,
    /// Server port to bind.
    #[arg(long, default_value_t = 3999)]
    port: u16,
    /// Public host of the proxy, in the URLs it hands out (must match the certificate).
    #[arg(
        long = "public-host",
        alias = "publicHost",
        default_value = "127.0.0.1"
    )]
    public_host: String,
    /// Public port of the proxy (default: --port).
    #[arg(long = "public-port", alias = "publicPort")]
    public_port: Option<u16>,
    /// Region of the proxy kite.
    #[arg(long, required = true)]
    region: String,
    /// Environment of the proxy kite.
    #[arg(long = "env", default_value = "development")]
    environment: String,
    /// Origins served besides the proxy's own (repeatable, or comma-separated).
    #[arg(
        long = "allow-origin",
        value_delimiter = ',',
        long_help = "Origins served besides the proxy's own (repeat or separate with commas): \
                     full origins (https://app.example.com), hosts (app.example.com, host:port), \
                     or * for every origin"
    )]
    allow_origin: Vec<String>,
    /// Largest websocket message piped through, in bytes.
    #[arg(long = "max-message-size", default_value_t = 16 << 20)]
    max_message_size: usize,
}

#[tokio::main]
async fn main() {
    kite_native::init_logging();
    let args = Args::parse();
    if let Err(e) = run(args).await {
        error!("{e}");
        eprintln!("reverseproxy: {e}");
        std::process::exit(1);
    }
}

async fn run(args: Args) -> Result<(), Box<dyn std::error::Error>> {
    let mut config = kite_native::Config::get()?;
    config.ip = args.ip;
    config.port = args.port;
    config.region = args.region;
    config.environment = args.environment;
    // The proxy registers itself directly, never through another proxy.
    config.proxy_url.clear();
    match (args.cert, args.key) {
        (Some(cert_path), Some(key_path)) => {
            config.tls = Some(TlsConfig {
                cert_path,
                key_path,
            });
        }
        _ => info!("no --cert/--key: serving plain HTTP"),
    }
    let listener = kite_native::listen(SocketAddr::new(args.ip, args.port))?;
    let mut options = ReverseProxyOptions::default();
    options.public_host = args.public_host;
    // The port bound (`--port 0` picks one) unless told otherwise.
    options.public_port = Some(match args.public_port {
        Some(p) => p,
        None => listener.local_addr()?.port(),
    });
    options.allowed_origins = args.allow_origin;
    options.max_message_size = args.max_message_size;
    let proxy = ReverseProxy::new(config, VERSION, options)?;

    let kite_url = proxy.kite_url().ok_or("no public port")?;
    let kite = proxy.kite().clone();
    tokio::spawn(async move {
        info!(url = %kite_url, "registering with Kontrol");
        if let Err(e) = kite.register_forever(&kite_url).await {
            error!(error = %e, "registering with Kontrol");
        }
    });
    let stopper = proxy.clone();
    tokio::spawn(async move {
        if tokio::signal::ctrl_c().await.is_ok() {
            info!("interrupted, closing");
            stopper.close();
        }
    });
    proxy.serve(listener).await?;
    Ok(())
}
