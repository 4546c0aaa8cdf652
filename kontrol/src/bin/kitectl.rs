//! `kitectl`: get a kite key from a Kontrol, show it, find kites and call them.
//!
//! ```sh
//! kitectl register --kontrol-url http://127.0.0.1:4000/kite --username alice
//! kitectl showkey
//! kitectl query --username alice --environment prod --name math
//! kitectl tell http://127.0.0.1:6000/kite square 4
//! kitectl ping http://127.0.0.1:6000/kite
//! KITE_HOME=~/.kite/kontrol kitectl keys list       # with a kite.key of Kontrol's own user
//! KITE_HOME=~/.kite/kontrol kitectl keys add --current
//! KITE_HOME=~/.kite/kontrol kitectl keys delete default
//! ```

use std::process::ExitCode;
use std::time::{Duration, Instant};

use clap::{Parser, Subcommand};
use kite_native::core::KontrolQuery;
use kite_native::{Auth, Config, Kite};
use kontrol::keys::{AddKeyPairArgs, DeleteKeyPairArgs, KeyPairInfo};
use serde_json::Value;

/// Talk to Kontrol and to kites.
#[derive(Debug, Parser)]
#[command(name = "kitectl", version)]
struct Cli {
    #[command(subcommand)]
    command: Command,
    /// Time limit of each call.
    #[arg(long, global = true, default_value = "4s", value_parser = parse_duration)]
    timeout: Duration,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Gets a kite key from a Kontrol (its `registerMachine`) and writes it to kite.key.
    Register {
        /// The Kontrol's URL.
        #[arg(long, env = "KITE_KONTROL_URL")]
        kontrol_url: String,
        /// The username the key is for.
        #[arg(long, env = "KITE_USERNAME")]
        username: String,
    },
    /// Prints the claims of the kite.key.
    Showkey,
    /// Lists the kites Kontrol knows that match the query.
    Query {
        #[command(flatten)]
        query: QueryArgs,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Calls a method of the kite at URL with JSON arguments (each argument one JSON value;
    /// anything that is not JSON is sent as a string).
    Tell {
        /// The kite's URL (`http://host:port/kite`).
        url: String,
        /// The method.
        method: String,
        /// The arguments.
        args: Vec<String>,
    },
    /// Pings the kite at URL and prints the round trip.
    Ping {
        /// The kite's URL.
        url: String,
    },
    /// Manages Kontrol's key pairs (`listKeyPairs`, `addKeyPair`, `deleteKeyPair`): only for a
    /// kite.key of the Kontrol's own user, such as the one `kontrol --initial` writes.
    Keys {
        #[command(subcommand)]
        command: KeysCommand,
        /// The Kontrol's URL (default: the kite.key's).
        #[arg(long, global = true)]
        kontrol_url: Option<String>,
    },
}

#[derive(Debug, Subcommand)]
enum KeysCommand {
    /// Lists the key pairs, deleted ones too; `*` marks the one that signs.
    List {
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Adds a key pair: a new 2048-bit one, or the one in the PEM files given.
    Add {
        /// The pair's id (default: a new UUID).
        #[arg(long)]
        id: Option<String>,
        /// Make it the pair that signs kite keys and tokens.
        #[arg(long)]
        current: bool,
        /// The public key (PEM), with --private-key-file.
        #[arg(long, requires = "private_key_file")]
        public_key_file: Option<std::path::PathBuf>,
        /// The private key (PEM), with --public-key-file.
        #[arg(long, requires = "public_key_file")]
        private_key_file: Option<std::path::PathBuf>,
    },
    /// Deletes key pair ID (a soft delete; the signing pair cannot be deleted).
    Delete {
        /// The pair's id.
        id: String,
    },
}

/// The seven query fields.
#[derive(Debug, clap::Args)]
struct QueryArgs {
    #[arg(long)]
    username: Option<String>,
    #[arg(long, default_value = "")]
    environment: String,
    #[arg(long, default_value = "")]
    name: String,
    #[arg(long, default_value = "")]
    version: String,
    #[arg(long, default_value = "")]
    region: String,
    #[arg(long, default_value = "")]
    hostname: String,
    #[arg(long, default_value = "")]
    id: String,
}

/// Prints key pairs as a table.
fn print_keys(keys: &[KeyPairInfo]) {
    println!(
        "  {:<38} {:<8} {:<14} {:<14} PUBLIC KEY",
        "ID", "SIGNING", "CREATED", "DELETED"
    );
    for k in keys {
        // The base64 line of the key, shortened: enough to tell keys apart.
        let body: String = k
            .public_key
            .lines()
            .filter(|l| !l.starts_with("-----"))
            .collect();
        let tail = &body[body.len().saturating_sub(16)..];
        println!(
            "{} {:<38} {:<8} {:<14} {:<14} ...{tail}",
            if k.current { "*" } else { " " },
            k.id,
            if k.signing { "yes" } else { "no" },
            k.created_ms,
            k.deleted_ms
                .map(|d| d.to_string())
                .unwrap_or_else(|| "-".into()),
        );
    }
}

/// Calls Kontrol's key pair `method` with `arg`, as the kite.key's user.
async fn keys_call<T: serde::de::DeserializeOwned>(
    kontrol_url: Option<String>,
    method: &str,
    arg: Value,
    limit: Duration,
) -> Result<T, String> {
    let kite = local_kite(true)?;
    let url = kontrol_url.unwrap_or_else(|| kite.config().kontrol_url.clone());
    if url.is_empty() {
        return Err("no Kontrol URL: pass --kontrol-url".into());
    }
    let client = kite.new_client(&url);
    client.set_auth(Some(Auth::new("kiteKey", kite.kite_key())));
    tokio::time::timeout(limit, client.dial())
        .await
        .map_err(|_| format!("dial: no answer in {limit:?}"))?
        .map_err(|e| e.kite_error().to_string())?;
    let answer = tokio::time::timeout(limit, client.call::<T>(method, (arg,)))
        .await
        .map_err(|_| format!("{method}: no answer in {limit:?}"))?
        .map_err(|e| e.kite_error().to_string());
    client.close();
    kite.close();
    answer
}

fn parse_duration(s: &str) -> Result<Duration, String> {
    kite_native::config::parse_go_duration(s)
}

/// A kite for kitectl itself: its identity and credentials from kite.key when there is one.
fn local_kite(require_key: bool) -> Result<Kite, String> {
    let config = match Config::get() {
        Ok(c) => c,
        Err(e) if require_key => return Err(e.to_string()),
        Err(_) => Config::from_env().map_err(|e| e.to_string())?,
    };
    Kite::with_config("kitectl", env!("CARGO_PKG_VERSION"), config).map_err(|e| e.to_string())
}

async fn run(cli: Cli) -> Result<(), String> {
    let limit = cli.timeout;
    let timed = |what: &'static str| move |_| format!("{what}: no answer in {limit:?}");
    match cli.command {
        Command::Register {
            kontrol_url,
            username,
        } => {
            let mut config = Config::from_env().map_err(|e| e.to_string())?;
            config.username = username;
            let kite = Kite::with_config("kitectl", env!("CARGO_PKG_VERSION"), config)
                .map_err(|e| e.to_string())?;
            let kontrol = kite.new_client(&kontrol_url);
            tokio::time::timeout(limit, kontrol.dial())
                .await
                .map_err(timed("dial"))?
                .map_err(|e| e.kite_error().to_string())?;
            let key: String = tokio::time::timeout(
                limit,
                kontrol.call(
                    "registerMachine",
                    (serde_json::json!({"authType": "kitectl"}),),
                ),
            )
            .await
            .map_err(timed("registerMachine"))?
            .map_err(|e| e.kite_error().to_string())?;
            kite_native::kitekey::parse(&key).map_err(|e| e.to_string())?;
            let path = kite_native::kitekey::write(&key).map_err(|e| e.to_string())?;
            println!("kite.key written to {}", path.display());
        }
        Command::Showkey => {
            let key = kite_native::kitekey::read().map_err(|e| e.to_string())?;
            let c = &key.claims;
            for (name, value) in [
                ("sub", c.sub.as_str()),
                ("iss", &c.iss),
                ("kontrolURL", &c.kontrol_url),
                ("aud", &c.aud),
                ("iat", &c.iat.map(|t| t.to_string()).unwrap_or_default()),
                ("jti", &c.jti),
                ("kontrolKey", &c.kontrol_key),
            ] {
                println!("{name:<11}{value}");
            }
        }
        Command::Query { query, json } => {
            let kite = local_kite(true)?;
            let q = KontrolQuery {
                username: query
                    .username
                    .unwrap_or_else(|| kite.config().username.clone()),
                environment: query.environment,
                name: query.name,
                version: query.version,
                region: query.region,
                hostname: query.hostname,
                id: query.id,
            };
            let clients = tokio::time::timeout(limit, kite.get_kites(&q))
                .await
                .map_err(timed("getKites"))?
                .map_err(|e| e.to_string())?;
            if json {
                let list: Vec<Value> = clients
                    .iter()
                    .map(|c| serde_json::json!({"kite": c.remote(), "url": c.url()}))
                    .collect();
                println!(
                    "{}",
                    serde_json::to_string_pretty(&list).unwrap_or_default()
                );
            } else {
                println!(
                    "{:<12} {:<12} {:<12} {:<8} {:<8} {:<16} {:<36} URL",
                    "USERNAME", "ENVIRONMENT", "NAME", "VERSION", "REGION", "HOSTNAME", "ID"
                );
                for c in &clients {
                    let k = c.remote();
                    println!(
                        "{:<12} {:<12} {:<12} {:<8} {:<8} {:<16} {:<36} {}",
                        k.username,
                        k.environment,
                        k.name,
                        k.version,
                        k.region,
                        k.hostname,
                        k.id,
                        c.url()
                    );
                }
            }
            kite.close();
        }
        Command::Tell { url, method, args } => {
            let kite = local_kite(false)?;
            let client = kite.new_client(&url);
            if !kite.kite_key().is_empty() {
                client.set_auth(Some(Auth::new("kiteKey", kite.kite_key())));
            }
            tokio::time::timeout(limit, client.dial())
                .await
                .map_err(timed("dial"))?
                .map_err(|e| e.kite_error().to_string())?;
            let args: Vec<Value> = args
                .iter()
                .map(|a| serde_json::from_str(a).unwrap_or_else(|_| Value::String(a.clone())))
                .collect();
            let result: Value = client
                .tell_with_timeout(&method, args, limit)
                .await
                .map_err(|e| e.kite_error().to_string())?
                .decode()
                .map_err(|e| e.to_string())?;
            println!(
                "{}",
                serde_json::to_string_pretty(&result).unwrap_or_default()
            );
            client.close();
        }
        Command::Ping { url } => {
            let kite = local_kite(false)?;
            let client = kite.new_client(&url);
            let start = Instant::now();
            tokio::time::timeout(limit, client.dial())
                .await
                .map_err(timed("dial"))?
                .map_err(|e| e.kite_error().to_string())?;
            let pong: String = tokio::time::timeout(limit, client.call("kite.ping", ()))
                .await
                .map_err(timed("kite.ping"))?
                .map_err(|e| e.kite_error().to_string())?;
            println!("{pong} from {url} in {:?}", start.elapsed());
            client.close();
        }
        Command::Keys {
            command,
            kontrol_url,
        } => match command {
            KeysCommand::List { json } => {
                let keys: Vec<KeyPairInfo> =
                    keys_call(kontrol_url, "listKeyPairs", Value::Null, limit).await?;
                if json {
                    println!(
                        "{}",
                        serde_json::to_string_pretty(&keys).unwrap_or_default()
                    );
                } else {
                    print_keys(&keys);
                }
            }
            KeysCommand::Add {
                id,
                current,
                public_key_file,
                private_key_file,
            } => {
                let args = match (public_key_file, private_key_file) {
                    (Some(public), Some(private)) => {
                        let read = |p: &std::path::Path| {
                            std::fs::read_to_string(p)
                                .map_err(|e| format!("cannot read {}: {e}", p.display()))
                        };
                        let pair = kite_native::auth::KeyPair {
                            public_pem: read(&public)?,
                            private_pem: read(&private)?,
                        };
                        AddKeyPairArgs::with_pair(id.as_deref(), &pair, current)
                    }
                    _ => {
                        let mut args = AddKeyPairArgs::generated(current);
                        args.id = id;
                        args
                    }
                };
                let arg = serde_json::to_value(&args).map_err(|e| e.to_string())?;
                // Making a pair takes a moment on the Kontrol.
                let added: KeyPairInfo = keys_call(
                    kontrol_url,
                    "addKeyPair",
                    arg,
                    limit.max(Duration::from_secs(30)),
                )
                .await?;
                println!(
                    "key pair {} added{}",
                    added.id,
                    if added.current { ", signing now" } else { "" }
                );
            }
            KeysCommand::Delete { id } => {
                let arg =
                    serde_json::to_value(DeleteKeyPairArgs::new(&id)).map_err(|e| e.to_string())?;
                let deleted: KeyPairInfo =
                    keys_call(kontrol_url, "deleteKeyPair", arg, limit).await?;
                println!("key pair {} deleted", deleted.id);
            }
        },
    }
    Ok(())
}

#[tokio::main]
async fn main() -> ExitCode {
    kite_native::init_logging_with_default("warn");
    match run(Cli::parse()).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("kitectl: {e}");
            ExitCode::FAILURE
        }
    }
}
