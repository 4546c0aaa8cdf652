//! `kontrol`: the Kite registry, configured by flags or by Go kontrol's environment variables.
//!
//! ```sh
//! kontrol --initial --username kontrol --kontrol-url http://127.0.0.1:4000/kite \
//!         --public-key-file kontrol.pub.pem --private-key-file kontrol.pem   # writes kite.key
//! kontrol --public-key-file kontrol.pub.pem --private-key-file kontrol.pem    # serves on :4000
//! ```

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use clap::{Parser, ValueEnum};
use kite_native::auth::KeyPair;
use kontrol::server::{Kontrol, KontrolOptions};
use kontrol::storage::{EmbeddedStorage, Storage};

/// Which storage keeps the registry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum StorageKind {
    /// One file on disk (the default): no server needed.
    Embedded,
    /// etcd v3 (`--machines`).
    Etcd,
    /// PostgreSQL (`KONTROL_POSTGRES_*`).
    Postgres,
}

/// The Kite registry and key authority.
#[derive(Debug, Parser)]
#[command(name = "kontrol", version)]
struct Args {
    /// Address to listen on.
    #[arg(long, env = "KONTROL_IP", default_value = "0.0.0.0")]
    ip: std::net::IpAddr,
    /// Port to listen on.
    #[arg(long, env = "KONTROL_PORT", default_value_t = 4000)]
    port: u16,
    /// Kontrol's username: the issuer of its kite keys and tokens.
    #[arg(long, env = "KONTROL_USERNAME")]
    username: Option<String>,
    /// The URL kites reach this Kontrol at (goes into kite keys).
    #[arg(long, env = "KONTROL_KONTROLURL")]
    kontrol_url: Option<String>,
    /// The public key (PEM) kite keys and tokens are verified with.
    #[arg(long, env = "KONTROL_PUBLICKEYFILE")]
    public_key_file: PathBuf,
    /// The private key (PEM) kite keys and tokens are signed with.
    #[arg(long, env = "KONTROL_PRIVATEKEYFILE")]
    private_key_file: PathBuf,
    /// Write Kontrol's own kite.key to $KITE_HOME (or ~/.kite) and exit.
    #[arg(long, env = "KONTROL_INITIAL")]
    initial: bool,
    /// Where the registry is kept.
    #[arg(
        long,
        env = "KONTROL_STORAGE",
        value_enum,
        ignore_case = true,
        default_value = "embedded"
    )]
    storage: StorageKind,
    /// The embedded store's file (default: kontrol.db in $KITE_HOME or ~/.kite).
    #[arg(long, env = "KONTROL_DATAFILE")]
    data_file: Option<PathBuf>,
    /// etcd endpoints, comma-separated (Go's KONTROL_MACHINES).
    #[arg(
        long,
        env = "KONTROL_MACHINES",
        value_delimiter = ',',
        default_value = "http://127.0.0.1:2379"
    )]
    machines: Vec<String>,
    /// Public keys (PEM files, comma-separated) of rotated-out key pairs: kites holding kite
    /// keys they signed get a new kite key when they register.
    #[arg(long, env = "KONTROL_RETIREDPUBLICKEYFILES", value_delimiter = ',')]
    retired_public_key_files: Vec<PathBuf>,
    /// Let anyone get a kite key with `kitectl register` (`registerMachine`), for development
    /// and closed networks; off by default, as in Go.
    #[arg(long, env = "KONTROL_OPEN_REGISTRATION")]
    open_registration: bool,
    /// TLS certificate (PEM).
    #[arg(long, env = "KONTROL_TLSCERTFILE", requires = "tls_key_file")]
    tls_cert_file: Option<PathBuf>,
    /// TLS private key (PEM).
    #[arg(long, env = "KONTROL_TLSKEYFILE", requires = "tls_cert_file")]
    tls_key_file: Option<PathBuf>,
}

fn read(path: &PathBuf) -> Result<String, String> {
    std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))
}

async fn run(args: Args) -> Result<(), String> {
    let key = KeyPair {
        public_pem: read(&args.public_key_file)?,
        private_pem: read(&args.private_key_file)?,
    };
    let kite_key = if args.initial {
        None
    } else {
        Some(kite_native::kitekey::read().map_err(|e| format!("cannot read kite.key: {e}"))?)
    };
    let username = args
        .username
        .clone()
        .or_else(|| kite_key.as_ref().map(|k| k.claims.sub.clone()))
        .filter(|u| !u.is_empty())
        .ok_or("a username is needed (--username or KONTROL_USERNAME)")?;
    let kontrol_url = args
        .kontrol_url
        .clone()
        .or_else(|| kite_key.as_ref().map(|k| k.claims.kontrol_url.clone()))
        .unwrap_or_else(|| format!("http://127.0.0.1:{}/kite", args.port));
    let mut options = KontrolOptions::new(&username, key, &kontrol_url);
    for file in &args.retired_public_key_files {
        options.retired_keys.push(read(file)?);
    }
    if args.open_registration {
        options.machine_authenticator = Some(Arc::new(|_| Ok(())));
    }
    let mut config = kite_native::Config::default();
    config
        .apply_env(|name| std::env::var(name).ok())
        .map_err(|e| e.to_string())?;
    config.ip = args.ip;
    config.port = args.port;
    if let (Some(cert_path), Some(key_path)) = (args.tls_cert_file, args.tls_key_file) {
        config.tls = Some(kite_native::config::TlsConfig {
            cert_path,
            key_path,
        });
    }
    let storage: Arc<dyn Storage> = match args.storage {
        StorageKind::Embedded => {
            let path = match args.data_file {
                Some(p) => p,
                None => kite_native::kitekey::kite_home()
                    .map_err(|e| e.to_string())?
                    .join("kontrol.db"),
            };
            Arc::new(EmbeddedStorage::open(&path).map_err(|e| e.to_string())?)
        }
        #[cfg(not(feature = "etcd"))]
        StorageKind::Etcd => {
            return Err(
                "this kontrol was built without the etcd storage (Cargo feature `etcd`)".into(),
            );
        }
        #[cfg(feature = "etcd")]
        StorageKind::Etcd => {
            // An etcd that is not up yet is waited for, with a clear message each time.
            let options = kontrol::storage::EtcdOptions::new(args.machines.clone());
            loop {
                match kontrol::storage::EtcdStorage::connect(options.clone()).await {
                    Ok(s) => break Arc::new(s),
                    Err(e) => {
                        tracing::error!(
                            machines = %args.machines.join(","),
                            error = %e,
                            "etcd unreachable, retrying in 2 s"
                        );
                        tokio::time::sleep(std::time::Duration::from_secs(2)).await;
                    }
                }
            }
        }
        #[cfg(not(feature = "postgres"))]
        StorageKind::Postgres => {
            return Err(
                "this kontrol was built without the PostgreSQL storage (Cargo feature `postgres`)"
                    .into(),
            );
        }
        #[cfg(feature = "postgres")]
        StorageKind::Postgres => {
            // KONTROL_POSTGRES_HOST, _PORT, _USERNAME, _PASSWORD, _DBNAME, _CONNECTTIMEOUT; a
            // database that is down is connected to on first use, and again after failures.
            let config = kontrol::storage::PostgresConfig::from_env().map_err(|e| e.to_string())?;
            Arc::new(kontrol::storage::PostgresStorage::new(config))
        }
    };
    let kontrol = Kontrol::new(config, options, storage).map_err(|e| e.to_string())?;
    if args.initial {
        let key = kontrol.kite_key_for(&username).map_err(|e| e.to_string())?;
        let path = kite_native::kitekey::write(&key).map_err(|e| e.to_string())?;
        println!("kite.key for {username} written to {}", path.display());
        return Ok(());
    }
    let kite = kontrol.kite().clone();
    let server = kite.clone();
    tokio::spawn(async move {
        let _ = tokio::signal::ctrl_c().await;
        server.close();
    });
    kite.run().await.map_err(|e| e.to_string())
}

#[tokio::main]
async fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("KITE_LOG_LEVEL")
                .unwrap_or_else(|_| "info".into()),
        )
        .init();
    match run(Args::parse()).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("kontrol: {e}");
            ExitCode::FAILURE
        }
    }
}
