//! The Kontrol under test (`kite-bench kontrol-serve`, run as a child of `kite-bench kontrol`):
//! `kontrol::server::Kontrol` over one storage, signing with the repository's test key pair
//! (`testdata/keys`, so the bench signs its kites' keys itself), with registration budgets
//! raised so that every kite of the run fits, and Go's timings (heartbeat every 10 s, a
//! registration lives 90 s after the last one) unless told otherwise.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use clap::ValueEnum;
use kontrol::server::{Kontrol, KontrolOptions};
use kontrol::storage::{
    EmbeddedStorage, EtcdOptions, EtcdStorage, MemoryStorage, PostgresConfig, PostgresStorage,
    Storage,
};
use serde::Serialize;

use crate::token::TestKeys;

/// The Kontrol's username: the issuer of its kite keys.
pub const KONTROL_USERNAME: &str = "kontrol";

/// Where the Kontrol keeps registrations.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, ValueEnum, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum StorageKind {
    /// `MemoryStorage`: in process.
    Memory,
    /// `EmbeddedStorage`: one redb file in a temporary directory.
    Embedded,
    /// `EtcdStorage` on an etcd the bench starts.
    Etcd,
    /// `PostgresStorage` on a PostgreSQL the bench starts.
    Postgres,
}

impl StorageKind {
    /// The name used on the command line and in reports.
    pub fn name(self) -> &'static str {
        match self {
            StorageKind::Memory => "memory",
            StorageKind::Embedded => "embedded",
            StorageKind::Etcd => "etcd",
            StorageKind::Postgres => "postgres",
        }
    }
}

/// How `kontrol-serve` is configured (its command-line flags).
#[derive(Debug, Clone, clap::Args)]
pub struct KontrolServeArgs {
    /// Where to listen.
    #[arg(long, default_value = "127.0.0.1:0")]
    pub addr: SocketAddr,
    /// The storage.
    #[arg(long, value_enum)]
    pub storage: StorageKind,
    /// `embedded`: the file.
    #[arg(long)]
    pub data_file: Option<PathBuf>,
    /// `etcd`: the client URL.
    #[arg(long)]
    pub etcd_url: Option<String>,
    /// `postgres`: the server's port on 127.0.0.1 (user and database `postgres`, no password).
    #[arg(long)]
    pub postgres_port: Option<u16>,
    /// Registrations the budgets must allow: per user, per kite key and per connection.
    #[arg(long, default_value_t = 100_000)]
    pub max_kites: usize,
    /// Seconds between the heartbeats Kontrol asks for (Go: 10).
    #[arg(long, default_value_t = 10)]
    pub heartbeat_secs: u64,
    /// Exit when stdin closes (how `kite-bench kontrol` keeps no Kontrol alive after it).
    #[arg(long)]
    pub exit_with_stdin: bool,
}

/// Builds the storage, binds, prints `listening <addr>` on stdout, and serves until killed.
pub async fn serve(args: KontrolServeArgs) -> Result<(), String> {
    if args.exit_with_stdin {
        crate::child::exit_with_parent();
    }
    let storage: Arc<dyn Storage> = match args.storage {
        StorageKind::Memory => Arc::new(MemoryStorage::new()),
        StorageKind::Embedded => {
            let path = args.data_file.ok_or("--data-file is needed for embedded")?;
            Arc::new(EmbeddedStorage::open(&path).map_err(|e| format!("{}: {e}", path.display()))?)
        }
        StorageKind::Etcd => {
            let url = args.etcd_url.ok_or("--etcd-url is needed for etcd")?;
            Arc::new(
                EtcdStorage::connect(EtcdOptions::new([url]))
                    .await
                    .map_err(|e| format!("etcd: {e}"))?,
            )
        }
        StorageKind::Postgres => {
            let port = args
                .postgres_port
                .ok_or("--postgres-port is needed for postgres")?;
            let config = PostgresConfig {
                host: "127.0.0.1".into(),
                port,
                user: "postgres".into(),
                dbname: "postgres".into(),
                ..PostgresConfig::default()
            };
            // Connected (and the schema created) now, so that the first register does not pay.
            Arc::new(
                PostgresStorage::connect(config)
                    .await
                    .map_err(|e| format!("postgres: {e}"))?,
            )
        }
    };
    let listener = kite_native::listen(args.addr).map_err(|e| format!("{}: {e}", args.addr))?;
    let local = listener.local_addr().map_err(|e| e.to_string())?;
    let keys = TestKeys::generate()?;
    let mut options = KontrolOptions::new(
        KONTROL_USERNAME,
        keys.key_pair(),
        &format!("http://{local}/kite"),
    );
    options.heartbeat_interval = Duration::from_secs(args.heartbeat_secs.max(1));
    // Every kite of the run is the bench user's, signed with one kite key, over a few
    // connections: the budgets must hold them all (the lookup connection registers nothing).
    let budget = args.max_kites.max(1);
    options.max_registrations_per_user = options.max_registrations_per_user.max(budget);
    options.max_registrations_per_key = options.max_registrations_per_key.max(budget);
    options.max_registrations_per_connection = options.max_registrations_per_connection.max(budget);
    let mut config = kite_native::Config::default();
    config.ip = local.ip();
    config.port = local.port();
    // Every bench connection comes from 127.0.0.1: one address may use the whole budgets.
    let limits = &mut config.limits;
    limits.max_connections_per_ip = limits.max_connections;
    limits.max_websockets_per_ip = limits.max_websockets;
    limits.max_sessions_per_ip = limits.max_sessions;
    // Kontrol keeps one heartbeat function per kite for the connection it came over.
    limits.max_callbacks = limits.max_callbacks.max(budget + 1_000);
    let kontrol = Kontrol::new(config, options, storage).map_err(|e| e.to_string())?;
    println!("listening {local}");
    use std::io::Write;
    std::io::stdout().flush().map_err(|e| e.to_string())?;
    kontrol
        .kite()
        .serve(listener)
        .await
        .map_err(|e| e.to_string())
}
