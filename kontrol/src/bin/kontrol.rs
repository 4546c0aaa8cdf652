//! `kontrol`: the Kite registry, configured by flags or by Go kontrol's environment variables.
//!
//! Kontrol keeps what is its own in a home of its own, `--kite-home` (`KONTROL_KITEHOME`,
//! default `$KITE_HOME/kontrol`, i.e. `~/.kite/kontrol`): its kite.key, its key pair by default
//! (`kontrol.pem`, `kontrol.pub.pem`) and the embedded store (`kontrol.db`). The user's own
//! `~/.kite/kite.key`, which `kitectl register` writes, is never Kontrol's.
//!
//! ```sh
//! kontrol --initial --username kontrol --kontrol-url http://127.0.0.1:4000/kite   # writes kite.key
//! kontrol                                                                          # serves on :4000
//! ```

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use clap::{Parser, ValueEnum};
use kite_native::auth::KeyPair;
use kontrol::server::{Kontrol, KontrolOptions};
use kontrol::storage::{EmbeddedStorage, MemoryStorage, Storage};

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

/// Whose tables the PostgreSQL storage uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum PostgresTables {
    /// Ours, created and migrated by Kontrol.
    Ours,
    /// Go Kontrol's kite.kite and kite.key, shared with Go Kontrols on the same database.
    Go,
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
    /// Kontrol's own directory: its kite.key, its key pair by default and the embedded store
    /// (default: $KITE_HOME/kontrol, or ~/.kite/kontrol); created with mode 0700.
    #[arg(long, env = "KONTROL_KITEHOME")]
    kite_home: Option<PathBuf>,
    /// The public key (PEM) kite keys and tokens are verified with (default: kontrol.pub.pem
    /// in Kontrol's home).
    #[arg(long, env = "KONTROL_PUBLICKEYFILE")]
    public_key_file: Option<PathBuf>,
    /// The private key (PEM) kite keys and tokens are signed with (default: kontrol.pem in
    /// Kontrol's home).
    #[arg(long, env = "KONTROL_PRIVATEKEYFILE")]
    private_key_file: Option<PathBuf>,
    /// Write Kontrol's own kite.key to its home and exit (no store is opened).
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
    /// With `--storage postgres`: whose tables, ours or Go Kontrol's (default: ours, or
    /// KONTROL_POSTGRES_SCHEMA).
    #[arg(long, value_enum, ignore_case = true)]
    postgres_schema: Option<PostgresTables>,
    /// With `--postgres-schema go`: create Go's tables in a database that has none (also
    /// KONTROL_POSTGRES_CREATEGOSCHEMA=true).
    #[arg(long)]
    postgres_create_go_schema: bool,
    /// The embedded store's file (default: kontrol.db in Kontrol's home).
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
    /// Instead of serving, one task on the storage.
    #[command(subcommand)]
    command: Option<Task>,
}

/// What `kontrol` does instead of serving.
#[derive(Debug, clap::Subcommand)]
enum Task {
    /// Registers the kites of a Go Kontrol's etcd v2 registry in the storage: FILE is what
    /// `curl -s 'http://ETCD:2379/v2/keys/kites?recursive=true'` answers (the storage flags
    /// go before `import`).
    Import {
        /// The dump (`-` for standard input).
        file: PathBuf,
        /// How long the imported registrations live unless their kites register again (Go's
        /// KeyTTL).
        #[arg(long, default_value_t = 90)]
        ttl_secs: u64,
    },
}

/// Reads a PEM file of Kontrol's key pair, saying which one is missing and how to make it.
fn read_key(what: &str, path: &Path, flag: &str) -> Result<String, String> {
    std::fs::read_to_string(path).map_err(|e| {
        format!(
            "cannot read the {what} {}: {e} (make a key pair with openssl, see README.md, \
             or name the file with {flag})",
            path.display()
        )
    })
}

/// Kontrol's home: `--kite-home`, else `kontrol` in the user's kite home.
fn kontrol_home(flag: Option<PathBuf>) -> Result<PathBuf, String> {
    match flag.filter(|p| !p.as_os_str().is_empty()) {
        Some(p) => Ok(p),
        None => kite_native::kitekey::kite_home()
            .map(|h| h.join("kontrol"))
            .map_err(|e| {
                format!("cannot find Kontrol's home: {e} (set --kite-home or KONTROL_KITEHOME)")
            }),
    }
}

/// Creates Kontrol's home if it is missing, with mode 0700 (and so any missing parent, such as
/// `~/.kite`), and warns when an existing one is open to others.
fn make_private_dir(dir: &Path) -> Result<(), String> {
    let mut builder = std::fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
    builder
        .create(dir)
        .map_err(|e| format!("cannot create Kontrol's home {}: {e}", dir.display()))?;
    #[cfg(unix)]
    if let Ok(meta) = std::fs::metadata(dir) {
        use std::os::unix::fs::PermissionsExt;
        let mode = meta.permissions().mode() & 0o777;
        if mode & 0o077 != 0 {
            tracing::warn!(
                home = %dir.display(),
                mode = format!("{mode:o}"),
                "Kontrol's home is open to other users; it holds private keys (chmod 700 it)"
            );
        }
    }
    Ok(())
}

async fn run(mut args: Args) -> Result<(), String> {
    let home = kontrol_home(args.kite_home.clone())?;
    make_private_dir(&home)?;
    if let Some(Task::Import { file, ttl_secs }) = args.command.take() {
        let storage = open_storage(&args, &home).await?;
        return import(storage.as_ref(), &file, Duration::from_secs(ttl_secs)).await;
    }
    let public_key_file = args
        .public_key_file
        .clone()
        .unwrap_or_else(|| home.join("kontrol.pub.pem"));
    let private_key_file = args
        .private_key_file
        .clone()
        .unwrap_or_else(|| home.join("kontrol.pem"));
    let key = KeyPair {
        public_pem: read_key("public key", &public_key_file, "--public-key-file")?,
        private_pem: read_key("private key", &private_key_file, "--private-key-file")?,
    };
    let kite_key_path = home.join("kite.key");
    let kite_key = if args.initial {
        None
    } else {
        Some(
            kite_native::kitekey::read_from(&kite_key_path).map_err(|e| {
                format!(
                    "cannot read Kontrol's kite.key: {e} (write it once with kontrol --initial)"
                )
            })?,
        )
    };
    let username = args
        .username
        .clone()
        .or_else(|| kite_key.as_ref().map(|k| k.claims.sub.clone()))
        .filter(|u| !u.is_empty())
        .ok_or("a username is needed: pass --username or set KONTROL_USERNAME")?;
    let kontrol_url = args
        .kontrol_url
        .clone()
        .or_else(|| kite_key.as_ref().map(|k| k.claims.kontrol_url.clone()))
        .unwrap_or_else(|| format!("http://127.0.0.1:{}/kite", args.port));
    let mut options = KontrolOptions::new(&username, key, &kontrol_url);
    for file in &args.retired_public_key_files {
        options.retired_keys.push(read_key(
            "retired public key",
            file,
            "--retired-public-key-files",
        )?);
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
    if let (Some(cert_path), Some(key_path)) =
        (args.tls_cert_file.clone(), args.tls_key_file.clone())
    {
        config.tls = Some(kite_native::config::TlsConfig {
            cert_path,
            key_path,
        });
    }
    let storage: Arc<dyn Storage> = if args.initial {
        // `--initial` only signs a kite key: it needs no registry, and creates no store.
        Arc::new(MemoryStorage::new())
    } else {
        open_storage(&args, &home).await?
    };
    let kontrol = Kontrol::new(config, options, storage).map_err(|e| e.to_string())?;
    if args.initial {
        let key = kontrol.kite_key_for(&username).map_err(|e| e.to_string())?;
        kite_native::kitekey::write_to(&kite_key_path, &key)
            .map_err(|e| format!("cannot write Kontrol's kite.key: {e}"))?;
        println!(
            "kite.key for {username} written to {}",
            kite_key_path.display()
        );
        return Ok(());
    }
    let kite = kontrol.kite().clone();
    let server = kite.clone();
    tokio::spawn(async move {
        let _ = tokio::signal::ctrl_c().await;
        server.close();
    });
    let (ip, port) = (kite.config().ip, kite.config().port);
    kite.run()
        .await
        .map_err(|e| format!("cannot serve on {ip}:{port}: {e}"))
}

/// The storage the flags name (an etcd that is not up yet is waited for).
async fn open_storage(args: &Args, home: &Path) -> Result<Arc<dyn Storage>, String> {
    Ok(match args.storage {
        StorageKind::Embedded => {
            let path = args
                .data_file
                .clone()
                .unwrap_or_else(|| home.join("kontrol.db"));
            Arc::new(
                EmbeddedStorage::open(&path)
                    .map_err(|e| format!("cannot open the embedded store: {e}"))?,
            )
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
            // KONTROL_POSTGRES_SCHEMA, _CREATEGOSCHEMA, or the flags: Go Kontrol's tables.
            let mut config =
                kontrol::storage::PostgresConfig::from_env().map_err(|e| e.to_string())?;
            match args.postgres_schema {
                Some(PostgresTables::Ours) => {
                    config.schema = kontrol::storage::PostgresSchema::Ours;
                }
                Some(PostgresTables::Go) => config.schema = kontrol::storage::PostgresSchema::Go,
                None => {}
            }
            config.create_go_schema |= args.postgres_create_go_schema;
            Arc::new(kontrol::storage::PostgresStorage::new(config))
        }
    })
}

/// `kontrol import`: the kites of the Go etcd v2 dump `file`, registered in `storage`.
async fn import(storage: &dyn Storage, file: &Path, ttl: Duration) -> Result<(), String> {
    let text = if file == Path::new("-") {
        let mut text = String::new();
        std::io::Read::read_to_string(&mut std::io::stdin(), &mut text)
            .map_err(|e| format!("cannot read the dump from standard input: {e}"))?;
        text
    } else {
        std::fs::read_to_string(file)
            .map_err(|e| format!("cannot read the dump {}: {e}", file.display()))?
    };
    let dump = kontrol::import::parse_etcd_v2(&text, ttl).map_err(|e| e.to_string())?;
    let (mut imported, mut refused) = (0, 0);
    for r in &dump.registrations {
        match storage.upsert(r).await {
            Ok(()) => imported += 1,
            Err(kontrol::storage::StorageError::OwnedByAnother { .. }) => {
                eprintln!("skipped {}: its id is registered by another user", r.kite);
                refused += 1;
            }
            Err(kontrol::storage::StorageError::Rejected(why)) => {
                eprintln!("skipped {}: {why}", r.kite);
                refused += 1;
            }
            Err(e) => return Err(format!("cannot register {}: {e}", r.kite)),
        }
    }
    for (key, why) in &dump.skipped {
        eprintln!("skipped {key}: {why}");
    }
    println!(
        "imported {imported} kites ({} skipped)",
        refused + dump.skipped.len()
    );
    Ok(())
}

#[tokio::main]
async fn main() -> ExitCode {
    kite_native::init_logging();
    match run(Args::parse()).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("kontrol: {e}");
            ExitCode::FAILURE
        }
    }
}
