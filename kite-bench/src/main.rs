//! `kite-bench`: calls/s, latency and memory of a kite, with the peers that bound it measured in
//! the same run: a raw tokio-tungstenite echo (the ceiling for any websocket RPC) and jsonrpsee
//! (the Rust RPC library a user would otherwise pick).
//!
//! ```text
//! kite-bench run                      # every scenario, 3 interleaved repetitions (~10 min)
//! kite-bench run --smoke              # a few seconds: shows that everything works (CI)
//! kite-bench run --groups concurrency --repeat 1 --json out.json
//! kite-bench load --url http://127.0.0.1:6000/kite --concurrency 64   # an existing kite
//! kite-bench serve --system kite --addr 127.0.0.1:6000                # a server to target
//! kite-bench idle --connections 10000
//! kite-bench soak --calls 1000000
//! kite-bench kontrol --storage memory,embedded,etcd,postgres --kites 1000,10000   # issue 21
//! kite-bench kontrol --smoke          # a few seconds: 200 kites, memory and embedded (CI)
//! ```
//!
//! Servers run as child processes of `run` (so their RSS is theirs), on 127.0.0.1. See
//! `docs/BENCHMARKS.md` for what each scenario does and the latest figures.

mod child;
mod kontrol;
mod kontrol_client;
mod kontrol_server;
mod load;
mod memory;
mod report;
mod server;
mod stats;
mod suite;
mod token;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Parser, Subcommand, ValueEnum};
use kite_native::transport::Transport;

use crate::kontrol::KontrolBenchOptions;
use crate::kontrol_server::{KontrolServeArgs, StorageKind};
use crate::load::{Payload, Target};
use crate::stats::Window;
use crate::suite::{Group, SuiteOptions};

/// A system under test.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, ValueEnum)]
pub enum System {
    /// Our kite (`square`, `echo`).
    Kite,
    /// A raw tokio-tungstenite echo: one write per message.
    Echo,
    /// The raw echo writing every answer it can before one flush.
    EchoBatched,
    /// jsonrpsee's WebSocket server and client.
    Jsonrpsee,
}

impl System {
    /// The name used on the command line and in reports.
    pub fn name(self) -> &'static str {
        match self {
            System::Kite => "kite",
            System::Echo => "echo",
            System::EchoBatched => "echo-batched",
            System::Jsonrpsee => "jsonrpsee",
        }
    }
}

#[derive(Debug, Parser)]
#[command(
    name = "kite-bench",
    about = "Load and memory benchmarks for Kite, with peers"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Runs the benchmark suite and prints Markdown tables (and JSON with --json).
    Run {
        /// A few seconds of everything, to show it works.
        #[arg(long)]
        smoke: bool,
        /// Groups to run (default: all).
        #[arg(long, value_delimiter = ',')]
        groups: Vec<Group>,
        /// Interleaved repetitions (default 3; 1 with --smoke).
        #[arg(long)]
        repeat: Option<usize>,
        /// Measuring window of each scenario, ms.
        #[arg(long)]
        measure_ms: Option<u64>,
        /// Warm-up before each scenario, ms.
        #[arg(long)]
        warmup_ms: Option<u64>,
        /// Connections of the `connections` group.
        #[arg(long)]
        connections: Option<usize>,
        /// Connections of the `idle` group.
        #[arg(long)]
        idle_connections: Option<usize>,
        /// Calls of the `soak` group.
        #[arg(long)]
        soak_calls: Option<u64>,
        /// Plain/token pairs per repetition in the `auth` group.
        #[arg(long)]
        auth_pairs: Option<usize>,
        /// Also write the report as JSON to this file.
        #[arg(long)]
        json: Option<PathBuf>,
    },
    /// Loads an existing kite (any kite serving `square` and `echo`, such as `serve`'s).
    Load {
        /// The kite's SockJS base URL (dialled as given; with `raw-websocket`, the websocket's
        /// URL, such as `ws://127.0.0.1:6000/kite/websocket` or a Kite.js server's `ws://…/`).
        #[arg(long, default_value = "http://127.0.0.1:6000/kite")]
        url: String,
        /// `websocket`, `xhr-streaming`, `xhr-polling` or `raw-websocket`.
        #[arg(long, default_value = "websocket")]
        transport: Transport,
        /// Calls in flight on the one connection.
        #[arg(long, default_value_t = 64)]
        concurrency: usize,
        /// `square`, or a byte count for `echo` calls.
        #[arg(long, default_value = "square")]
        payload: String,
        /// Measuring window, ms.
        #[arg(long, default_value_t = 5000)]
        measure_ms: u64,
        /// A token to send with every call.
        #[arg(long)]
        token: Option<String>,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Serves one system until killed, printing `listening <addr>` first.
    Serve {
        /// What to serve.
        #[arg(long, value_enum)]
        system: System,
        /// Where to listen.
        #[arg(long, default_value = "127.0.0.1:6000")]
        addr: SocketAddr,
        /// Echo servers: tungstenite's read buffer size (default 128 KiB). The kite: the most
        /// bytes a websocket reads per system call (`SockJsOptions::read_buffer_size`, default
        /// 64 KiB; an idle websocket holds at most 1 KiB of it).
        #[arg(long)]
        read_buffer: Option<usize>,
        /// Kite: require tokens verified with this PEM public key.
        #[arg(long, env = "KITE_BENCH_TOKEN_PUBLIC_KEY")]
        token_public_key: Option<String>,
        /// Exit when stdin closes (how `run` keeps no server alive after it).
        #[arg(long)]
        exit_with_stdin: bool,
    },
    /// Prints a token that `serve --system kite --token-public-key "$(cat
    /// testdata/keys/kontrol.pub.pem)"` accepts, for `load --token`.
    Token,
    /// Holds idle websocket connections to a fresh server and reports its RSS per connection.
    Idle {
        /// What to connect to.
        #[arg(long, value_enum, default_value = "kite")]
        system: System,
        /// How many.
        #[arg(long, default_value_t = 10_000)]
        connections: usize,
        /// The server's websocket read buffer (echo servers: 4 KiB; the kite: its default), as
        /// `serve --read-buffer`.
        #[arg(long)]
        read_buffer: Option<usize>,
    },
    /// Makes many calls on one connection to a fresh kite and reports RSS along the way.
    Soak {
        /// How many calls.
        #[arg(long, default_value_t = 1_000_000)]
        calls: u64,
        /// Calls in flight.
        #[arg(long, default_value_t = 64)]
        concurrency: usize,
    },
    /// Kontrol with N kites registered and heartbeating, per storage: registers/s, getKites
    /// latency, Kontrol RSS and idle CPU (issue 21). Prints a Markdown table (and JSON with
    /// --json).
    Kontrol {
        /// 200 kites over 2 connections, memory and embedded only, 2 s idle: shows it works.
        #[arg(long)]
        smoke: bool,
        /// Storages, in run order (default: memory, embedded, etcd, postgres; etcd and
        /// PostgreSQL are started by the bench in a temporary directory).
        #[arg(long, value_enum, value_delimiter = ',')]
        storage: Vec<StorageKind>,
        /// Kite counts (default 1000,10000).
        #[arg(long, value_delimiter = ',')]
        kites: Vec<usize>,
        /// Websocket connections the kites register and heartbeat over (default 50).
        #[arg(long)]
        connections: Option<usize>,
        /// Registers in flight per connection (default 64).
        #[arg(long)]
        in_flight: Option<usize>,
        /// getKites calls per one-kite query (default 200).
        #[arg(long)]
        lookups: Option<usize>,
        /// getKites calls of every kite (default 5; 3 from 100,000 kites).
        #[arg(long)]
        all_lookups: Option<usize>,
        /// Seconds of heartbeats only, over which Kontrol's CPU is measured (default 30).
        #[arg(long)]
        idle_secs: Option<u64>,
        /// The heartbeat interval Kontrol asks for, s (default 10, as Go).
        #[arg(long)]
        heartbeat_secs: Option<u64>,
        /// Also write the report as JSON to this file.
        #[arg(long)]
        json: Option<PathBuf>,
    },
    /// The Kontrol that `kontrol` measures, printing `listening <addr>` first.
    #[command(hide = true)]
    KontrolServe(KontrolServeArgs),
}

fn parse_payload(s: &str) -> Result<Payload, String> {
    if s == "square" {
        return Ok(Payload::Square);
    }
    s.parse()
        .map(Payload::Bytes)
        .map_err(|_| format!("payload {s:?}: want `square` or a byte count"))
}

fn parse_url(url: &str) -> Result<SocketAddr, String> {
    use std::net::ToSocketAddrs;
    let rest = url
        .split_once("://")
        .map_or(url, |(_, r)| r)
        .split('/')
        .next()
        .unwrap_or_default();
    rest.to_socket_addrs()
        .map_err(|e| format!("{url}: {e}"))?
        .next()
        .ok_or_else(|| format!("{url}: no address"))
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("KITE_LOG_LEVEL")
                .unwrap_or_else(|_| "warn".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    // Thousands of sockets per process: lift the soft open-file limit to the hard one.
    let _ = rlimit::increase_nofile_limit(u64::MAX);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    match runtime.block_on(run(cli.command)) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("kite-bench: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn run(command: Command) -> Result<(), String> {
    match command {
        Command::Run {
            smoke,
            groups,
            repeat,
            measure_ms,
            warmup_ms,
            connections,
            idle_connections,
            soak_calls,
            auth_pairs,
            json,
        } => {
            let mut options = if smoke {
                SuiteOptions::smoke()
            } else {
                SuiteOptions::full()
            };
            if !groups.is_empty() {
                options.groups = groups;
            }
            options.repeat = repeat.unwrap_or(options.repeat).max(1);
            if let Some(ms) = measure_ms {
                options.window.measure = Duration::from_millis(ms);
            }
            if let Some(ms) = warmup_ms {
                options.window.warmup = Duration::from_millis(ms);
            }
            options.connections = connections.unwrap_or(options.connections);
            options.idle_connections = idle_connections.unwrap_or(options.idle_connections);
            options.soak_calls = soak_calls.unwrap_or(options.soak_calls);
            options.auth_pairs = auth_pairs.unwrap_or(options.auth_pairs);
            let report = suite::run(options).await?;
            println!("{}", report::markdown(&report));
            if let Some(path) = json {
                let text = serde_json::to_string_pretty(&report).map_err(|e| e.to_string())?;
                std::fs::write(&path, text).map_err(|e| format!("{}: {e}", path.display()))?;
            }
            let errors: u64 = report.rows.iter().map(|r| r.errors).sum::<u64>()
                + report.connections.iter().map(|c| c.errors).sum::<u64>()
                + report.soak.as_ref().map_or(0, |s| s.errors);
            if errors > 0 {
                return Err(format!("{errors} calls failed"));
            }
            Ok(())
        }
        Command::Load {
            url,
            transport,
            concurrency,
            payload,
            measure_ms,
            token,
            json,
        } => {
            let target = Target {
                system: System::Kite,
                addr: parse_url(&url)?,
                transport,
                token,
                url: Some(url),
            };
            let window = Window {
                warmup: Duration::from_millis(500),
                measure: Duration::from_millis(measure_ms),
            };
            let summary =
                load::one_connection(&target, parse_payload(&payload)?, concurrency, window)
                    .await?;
            if json {
                println!(
                    "{}",
                    serde_json::to_string_pretty(&summary).map_err(|e| e.to_string())?
                );
            } else {
                println!(
                    "{:.0} calls/s, p50 {:.0} µs, p99 {:.0} µs, p99.9 {:.0} µs, {} errors",
                    summary.calls_per_sec,
                    summary.p50_us,
                    summary.p99_us,
                    summary.p999_us,
                    summary.errors
                );
            }
            Ok(())
        }
        Command::Serve {
            system,
            addr,
            read_buffer,
            token_public_key,
            exit_with_stdin,
        } => {
            if exit_with_stdin {
                child::exit_with_parent();
            }
            let options = server::ServeOptions {
                read_buffer,
                token_public_key,
            };
            server::serve(system, addr, options)
                .await
                .map_err(|e| e.to_string())
        }
        Command::Token => {
            println!("{}", token::TestKeys::generate()?.token_for_bench_kite()?);
            Ok(())
        }
        Command::Idle {
            system,
            connections,
            read_buffer,
        } => {
            let read_buffer = read_buffer
                .or((system != System::Kite && system != System::Jsonrpsee).then_some(4096));
            let serve = server::ServeOptions {
                read_buffer,
                token_public_key: None,
            };
            let r = memory::idle(system, connections, &serve).await?;
            println!(
                "{}",
                serde_json::to_string_pretty(&r).map_err(|e| e.to_string())?
            );
            Ok(())
        }
        Command::Kontrol {
            smoke,
            storage,
            kites,
            connections,
            in_flight,
            lookups,
            all_lookups,
            idle_secs,
            heartbeat_secs,
            json,
        } => {
            let mut options = if smoke {
                KontrolBenchOptions::smoke()
            } else {
                KontrolBenchOptions::full()
            };
            if !storage.is_empty() {
                options.storages = storage;
            }
            if !kites.is_empty() {
                options.kites = kites;
            }
            options.connections = connections.unwrap_or(options.connections).max(1);
            options.in_flight = in_flight.unwrap_or(options.in_flight).max(1);
            options.lookups = lookups.unwrap_or(options.lookups);
            options.all_lookups = all_lookups.or(options.all_lookups);
            if let Some(secs) = idle_secs {
                options.idle = Duration::from_secs(secs);
            }
            options.heartbeat_secs = heartbeat_secs.unwrap_or(options.heartbeat_secs).max(1);
            let report = kontrol::run(options).await?;
            println!("{}", kontrol::markdown(&report));
            if let Some(path) = json {
                let text = serde_json::to_string_pretty(&report).map_err(|e| e.to_string())?;
                std::fs::write(&path, text).map_err(|e| format!("{}: {e}", path.display()))?;
            }
            match report.errors() {
                0 => Ok(()),
                n => Err(format!("{n} calls or messages failed")),
            }
        }
        Command::KontrolServe(args) => kontrol_server::serve(args).await,
        Command::Soak { calls, concurrency } => {
            let r = memory::soak(calls, concurrency).await?;
            println!(
                "{}",
                serde_json::to_string_pretty(&r).map_err(|e| e.to_string())?
            );
            Ok(())
        }
    }
}
