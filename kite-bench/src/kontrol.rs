//! `kite-bench kontrol`: Kontrol with N kites registered and heartbeating (issue 21), for each
//! storage. For every storage and N it starts what the storage needs (etcd or PostgreSQL in a
//! fresh directory), a Kontrol as a child process (`kite-bench kontrol-serve`), registers N
//! kites over a few websocket connections with many registers in flight, keeps them all
//! heartbeating at the interval Kontrol asks for, and measures:
//!
//! - registers/s and register latency;
//! - `getKites` of one kite's query (`{username, name}`, `{username, hostname}`, `{id}`) at one
//!   call in flight on a connection of its own, and of all N (`{username}`);
//! - the Kontrol's RSS with all N registered, and its CPU (and the storage server's) while
//!   the kites only heartbeat.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use kite_core::kontrol::{GetKitesArgs, GetKitesResult, RegisterArgs, RegisterResult};
use kite_core::{Auth, Kite, KontrolQuery, RequestHead, Value};
use kite_test_kit::servers::{Etcd, Postgres};
use serde::Serialize;

use crate::child::{ServerProcess, USER_HZ, cpu_ticks, tree_cpu_ticks};

use crate::kontrol_client::KontrolConn;
use crate::kontrol_server::{KONTROL_USERNAME, StorageKind};
use crate::stats::{Recorder, Summary};
use crate::suite::Machine;
use crate::token::TestKeys;

/// The user every bench kite belongs to (the `sub` of their kite key).
const USERNAME: &str = "bench";

/// Kites sharing one name: a `{username, name}` query matches this many, whatever N.
const KITES_PER_NAME: usize = 10;

/// Distinct hostnames (`host-<i % 1000>`): a `{username, hostname}` query matches N/1000.
const HOSTNAMES: usize = 1000;

/// How long one register or one-kite lookup may take.
const CALL_TIMEOUT: Duration = Duration::from_secs(60);

/// How long a `getKites` of every kite may take.
const ALL_TIMEOUT: Duration = Duration::from_secs(300);

/// How much to run.
#[derive(Debug, Clone, Serialize)]
pub struct KontrolBenchOptions {
    /// Storages, in run order.
    pub storages: Vec<StorageKind>,
    /// Kite counts, in run order (each storage is run at each count).
    pub kites: Vec<usize>,
    /// Websocket connections the kites register and heartbeat over.
    pub connections: usize,
    /// Registers in flight on each connection.
    pub in_flight: usize,
    /// `getKites` calls per one-kite query.
    pub lookups: usize,
    /// `getKites` calls of every kite (`None`: 5, or 3 from 100,000 kites).
    pub all_lookups: Option<usize>,
    /// How long the Kontrol's CPU is measured while the kites only heartbeat.
    #[serde(serialize_with = "as_secs")]
    pub idle: Duration,
    /// The heartbeat interval Kontrol asks for, s (Go: 10).
    pub heartbeat_secs: u64,
    /// A smoke run: too small for its figures to mean anything.
    pub smoke: bool,
}

fn as_secs<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_f64(d.as_secs_f64())
}

impl KontrolBenchOptions {
    /// The measured run: every storage at 1,000 and 10,000 kites, Go's heartbeat timing.
    pub fn full() -> KontrolBenchOptions {
        KontrolBenchOptions {
            storages: vec![
                StorageKind::Memory,
                StorageKind::Embedded,
                StorageKind::Etcd,
                StorageKind::Postgres,
            ],
            kites: vec![1_000, 10_000],
            connections: 50,
            in_flight: 64,
            lookups: 200,
            all_lookups: None,
            idle: Duration::from_secs(30),
            heartbeat_secs: 10,
            smoke: false,
        }
    }

    /// A few seconds that show it works (CI): 200 kites over 2 connections, the in-process
    /// storages only.
    pub fn smoke() -> KontrolBenchOptions {
        KontrolBenchOptions {
            storages: vec![StorageKind::Memory, StorageKind::Embedded],
            kites: vec![200],
            connections: 2,
            in_flight: 16,
            lookups: 20,
            all_lookups: Some(2),
            idle: Duration::from_secs(2),
            heartbeat_secs: 10,
            smoke: true,
        }
    }
}

/// The figures of one kind of `getKites` call.
#[derive(Debug, Clone, Serialize)]
pub struct Lookup {
    /// The query's fields, e.g. `username+name`.
    pub query: &'static str,
    /// Calls made.
    pub calls: u64,
    /// The median number of kites a call found.
    pub matched: usize,
    /// Median latency, ms.
    pub p50_ms: f64,
    /// 99th percentile latency, ms.
    pub p99_ms: f64,
    /// Failed calls.
    pub errors: u64,
    /// The first error seen.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub first_error: Option<String>,
}

/// One storage at one N.
#[derive(Debug, Clone, Serialize)]
pub struct KontrolRow {
    /// The storage.
    pub storage: StorageKind,
    /// Kites registered (asked for).
    pub kites: usize,
    /// Connections they registered over.
    pub connections: usize,
    /// Registers answered without error.
    pub registered: u64,
    /// Registers per second, from the first sent to the last answered.
    pub registers_per_sec: f64,
    /// Register latency (with `in_flight` in flight per connection), ms.
    pub register_p50_ms: f64,
    /// The same, 99th percentile.
    pub register_p99_ms: f64,
    /// Failed registers (budget refusals, timeouts, ...).
    pub register_errors: u64,
    /// The first register error.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub first_register_error: Option<String>,
    /// `kite.heartbeat` requests Kontrol sent (one per registered kite expected).
    pub heartbeat_requests: usize,
    /// One-kite queries, then the query of every kite.
    pub lookups: Vec<Lookup>,
    /// Kites the last `getKites` of every kite found (after the idle phase: fewer than
    /// `registered` means registrations expired).
    pub found_at_end: usize,
    /// Kontrol's RSS with every kite registered, KiB.
    pub kontrol_rss_kib: u64,
    /// Kontrol's CPU while the kites only heartbeat, % of one core.
    pub idle_cpu_percent: f64,
    /// The storage server's CPU (etcd; PostgreSQL with its backends) over the same time, % of
    /// one core.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub storage_cpu_percent: Option<f64>,
    /// Heartbeat calls per second over the idle phase (N / interval expected).
    pub pings_per_sec: f64,
    /// Messages the client could not read, or requests it does not serve.
    pub protocol_errors: u64,
    /// `/proc/loadavg` (1, 5, 15 min) at the start of the idle phase.
    pub load_average: String,
}

/// Everything one `kite-bench kontrol` measured.
#[derive(Debug, Clone, Serialize)]
pub struct KontrolReport {
    /// Where it ran.
    pub machine: Machine,
    /// How it ran.
    pub options: KontrolBenchOptions,
    /// One row per storage and N.
    pub rows: Vec<KontrolRow>,
}

impl KontrolReport {
    /// Failed calls of every kind, and protocol errors.
    pub fn errors(&self) -> u64 {
        self.rows
            .iter()
            .map(|r| {
                r.register_errors
                    + r.protocol_errors
                    + r.lookups.iter().map(|l| l.errors).sum::<u64>()
            })
            .sum()
    }
}

/// The 1-, 5- and 15-minute load averages.
pub fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}

/// Runs every storage at every N. Progress goes to stderr.
pub async fn run(options: KontrolBenchOptions) -> Result<KontrolReport, String> {
    let machine = Machine::read();
    let mut rows = Vec::new();
    for &n in &options.kites {
        for &storage in &options.storages {
            eprintln!(
                "kontrol {} x{n}: load average {}",
                storage.name(),
                load_average()
            );
            let row = one(storage, n, &options).await?;
            eprintln!(
                "kontrol {} x{n}: {:.0} registers/s, {} errors, RSS {:.1} MiB, idle CPU {:.1} %",
                storage.name(),
                row.registers_per_sec,
                row.register_errors,
                row.kontrol_rss_kib as f64 / 1024.0,
                row.idle_cpu_percent
            );
            rows.push(row);
        }
    }
    Ok(KontrolReport {
        machine,
        options,
        rows,
    })
}

/// What a storage needs running beside the Kontrol; stopped (and its files removed) on drop.
#[derive(Debug)]
enum Backing {
    /// Nothing (memory).
    None,
    /// The embedded store's directory.
    Dir(PathBuf),
    /// etcd.
    Etcd(Etcd),
    /// PostgreSQL.
    Postgres(Postgres),
}

impl Backing {
    /// Starts what `storage` needs and says how `kontrol-serve` reaches it.
    async fn start(storage: StorageKind) -> Result<(Backing, Vec<String>), String> {
        Ok(match storage {
            StorageKind::Memory => (Backing::None, Vec::new()),
            StorageKind::Embedded => {
                let dir = kite_test_kit::net::temp_dir("kite-bench-embedded");
                let file = dir.join("kontrol.db").display().to_string();
                (Backing::Dir(dir), vec!["--data-file".into(), file])
            }
            StorageKind::Etcd => {
                let etcd = Etcd::start()
                    .await
                    .ok_or("etcd is not installed (scripts/setup installs etcd-server)")?;
                let url = etcd.url();
                (Backing::Etcd(etcd), vec!["--etcd-url".into(), url])
            }
            StorageKind::Postgres => {
                let pg = Postgres::start()
                    .ok_or("PostgreSQL is not installed (scripts/setup installs it)")?;
                let port = pg.port().to_string();
                (Backing::Postgres(pg), vec!["--postgres-port".into(), port])
            }
        })
    }

    /// The storage server's process, if it has one.
    fn pid(&self) -> Option<u32> {
        match self {
            Backing::Etcd(e) => e.pid(),
            Backing::Postgres(p) => p.pid(),
            Backing::None | Backing::Dir(_) => None,
        }
    }
}

impl Drop for Backing {
    fn drop(&mut self) {
        if let Backing::Dir(dir) = self {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}

/// Kite `i` of the run: the bench user's, named so that [`KITES_PER_NAME`] share a name, on
/// one of [`HOSTNAMES`] hosts, with a fresh id.
fn bench_kite(i: usize) -> Kite {
    Kite {
        name: format!("svc-{}", i / KITES_PER_NAME),
        username: USERNAME.into(),
        id: uuid::Uuid::new_v4().to_string(),
        environment: "prod".into(),
        region: "eu".into(),
        version: "1.0.0".into(),
        hostname: format!("host-{}", i % HOSTNAMES),
    }
}

/// One storage at `n` kites.
async fn one(
    storage: StorageKind,
    n: usize,
    options: &KontrolBenchOptions,
) -> Result<KontrolRow, String> {
    let (backing, mut args) = Backing::start(storage).await?;
    args.splice(
        0..0,
        [
            "kontrol-serve".to_owned(),
            "--storage".to_owned(),
            storage.name().to_owned(),
            "--max-kites".to_owned(),
            n.to_string(),
            "--heartbeat-secs".to_owned(),
            options.heartbeat_secs.to_string(),
            "--exit-with-stdin".to_owned(),
        ],
    );
    let kontrol = ServerProcess::start_with("kontrol", &args, &[])?;
    let url = format!("ws://{}/kite/websocket", kontrol.addr);
    let keys = TestKeys::generate()?;
    let key = keys.kite_key(
        KONTROL_USERNAME,
        USERNAME,
        &format!("http://{}/kite", kontrol.addr),
    )?;
    let auth = Auth::new("kiteKey", key);

    // Connections, each heartbeating its kites from the start, offset from one another.
    let c = options.connections.clamp(1, n.max(1));
    let mut conns = Vec::with_capacity(c);
    for k in 0..c {
        let mut conn = KontrolConn::dial(&url).await?;
        conn.start_heartbeats(k as f64 / c as f64);
        conns.push(Arc::new(conn));
    }
    let kites: Arc<Vec<Kite>> = Arc::new((0..n).map(bench_kite).collect());

    // Registers: kite i goes over connection i % c, `in_flight` at a time on each.
    let reg_url = Value::from_serialize(&(RegisterArgs {
        url: "http://127.0.0.1:1/kite".into(),
    },))
    .map_err(|e| e.to_string())?;
    let start = Instant::now();
    let mut tasks = Vec::new();
    for (k, conn) in conns.iter().enumerate() {
        let cursor = Arc::new(AtomicUsize::new(0));
        let count = n / c + usize::from(k < n % c);
        for _ in 0..options.in_flight.max(1) {
            let (conn, cursor, kites, auth, reg_url) = (
                conn.clone(),
                cursor.clone(),
                kites.clone(),
                auth.clone(),
                reg_url.clone(),
            );
            tasks.push(tokio::spawn(async move {
                let mut rec = Recorder::default();
                loop {
                    let j = cursor.fetch_add(1, Ordering::Relaxed);
                    if j >= count {
                        return rec;
                    }
                    let kite = &kites[k + j * c];
                    let head = RequestHead::new(kite, Some(&auth));
                    let t = Instant::now();
                    let answer = conn
                        .call("register", &head, reg_url.clone(), CALL_TIMEOUT)
                        .await
                        .and_then(|v| v.decode::<RegisterResult>());
                    match answer {
                        Ok(r) if r.url == "http://127.0.0.1:1/kite" => rec.record(t.elapsed()),
                        Ok(r) => rec.error(format!("register answered url {:?}", r.url)),
                        Err(e) => rec.error(format!("register: {e}")),
                    }
                }
            }));
        }
    }
    let mut registers = Recorder::default();
    for t in tasks {
        registers.merge(&t.await.map_err(|e| e.to_string())?);
    }
    let registers = registers.summary(start.elapsed());

    // Every registered kite should be asked for heartbeats.
    let deadline = Instant::now() + Duration::from_secs(30);
    let heartbeat_requests = loop {
        let got: usize = conns.iter().map(|c| c.heartbeat_count()).sum();
        if got as u64 >= registers.calls || Instant::now() > deadline {
            break got;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let kontrol_rss_kib = kontrol.rss_kib().ok_or("the Kontrol has exited")?;
    eprintln!(
        "  registered {} of {n} in {:.1} s ({} errors), {heartbeat_requests} heartbeat requests, RSS {:.1} MiB",
        registers.calls,
        registers.seconds,
        registers.errors,
        kontrol_rss_kib as f64 / 1024.0
    );

    // One-kite lookups, one at a time on a connection of its own.
    let lookup_conn = KontrolConn::dial(&url).await?;
    let me = Kite {
        name: "bench-lookup".into(),
        id: uuid::Uuid::new_v4().to_string(),
        hostname: "lookup".into(),
        ..bench_kite(0)
    };
    let head = RequestHead::new(&me, Some(&auth));
    let mut lookups = Vec::new();
    let by_name = |j: usize| KontrolQuery {
        username: USERNAME.into(),
        name: format!("svc-{}", (j * 7919) % n.div_ceil(KITES_PER_NAME)),
        ..KontrolQuery::default()
    };
    let by_host = |j: usize| KontrolQuery {
        username: USERNAME.into(),
        hostname: format!("host-{}", (j * 7919) % HOSTNAMES.min(n)),
        ..KontrolQuery::default()
    };
    let by_id = |j: usize| KontrolQuery {
        id: kites[(j * 7919) % n].id.clone(),
        ..KontrolQuery::default()
    };
    let one_kite: [(&'static str, &dyn Fn(usize) -> KontrolQuery); 3] = [
        ("username+name", &by_name),
        ("username+hostname", &by_host),
        ("id", &by_id),
    ];
    for (name, query) in one_kite {
        let (lookup, _) = lookup_calls(
            &lookup_conn,
            &head,
            name,
            options.lookups,
            CALL_TIMEOUT,
            query,
        )
        .await;
        lookups.push(lookup);
    }

    eprintln!(
        "  one-kite lookups done: {}",
        lookups
            .iter()
            .map(|l| format!("{} p50 {:.2} ms", l.query, l.p50_ms))
            .collect::<Vec<_>>()
            .join(", ")
    );
    // The Kontrol's CPU while the kites only heartbeat.
    let load = load_average();
    let pings_before: u64 = conns.iter().map(|c| c.pings()).sum();
    let storage_pid = backing.pid();
    let cpu_before = cpu_ticks(kontrol.pid()).ok_or("the Kontrol has exited")?;
    let storage_before = storage_pid.and_then(tree_cpu_ticks);
    let idle_start = Instant::now();
    tokio::time::sleep(options.idle).await;
    let cpu_after = cpu_ticks(kontrol.pid()).ok_or("the Kontrol has exited")?;
    let storage_after = storage_pid.and_then(tree_cpu_ticks);
    let idle_secs = idle_start.elapsed().as_secs_f64();
    let pings_after: u64 = conns.iter().map(|c| c.pings()).sum();
    let percent = |ticks: u64| ticks as f64 / USER_HZ / idle_secs * 100.0;
    let storage_cpu_percent = match (storage_before, storage_after) {
        (Some(b), Some(a)) => Some(percent(a.saturating_sub(b))),
        _ => None,
    };

    eprintln!(
        "  idle: CPU {:.1} % of a core, {:.0} heartbeats/s",
        percent(cpu_after.saturating_sub(cpu_before)),
        pings_after.saturating_sub(pings_before) as f64 / idle_secs
    );
    // getKites of every kite.
    let all_calls = options
        .all_lookups
        .unwrap_or(if n >= 100_000 { 3 } else { 5 });
    let everyone = |_: usize| KontrolQuery {
        username: USERNAME.into(),
        ..KontrolQuery::default()
    };
    let (all, found_at_end) = lookup_calls(
        &lookup_conn,
        &head,
        "username (all)",
        all_calls,
        ALL_TIMEOUT,
        &everyone,
    )
    .await;
    lookups.push(all);

    let protocol_errors = conns.iter().map(|c| c.protocol_errors()).sum::<u64>()
        + lookup_conn.protocol_errors()
        + conns.iter().filter(|c| c.closed()).count() as u64;
    drop(lookup_conn);
    drop(conns);
    drop(kontrol);
    drop(backing);
    Ok(KontrolRow {
        storage,
        kites: n,
        connections: c,
        registered: registers.calls,
        registers_per_sec: registers.calls_per_sec,
        register_p50_ms: registers.p50_us / 1000.0,
        register_p99_ms: registers.p99_us / 1000.0,
        register_errors: registers.errors,
        first_register_error: registers.first_error,
        heartbeat_requests,
        lookups,
        found_at_end,
        kontrol_rss_kib,
        idle_cpu_percent: percent(cpu_after.saturating_sub(cpu_before)),
        storage_cpu_percent,
        pings_per_sec: pings_after.saturating_sub(pings_before) as f64 / idle_secs,
        protocol_errors,
        load_average: load,
    })
}

/// `calls` sequential `getKites` calls of `query(j)` for call `j`: their figures, and how many
/// kites the last one found.
async fn lookup_calls(
    conn: &KontrolConn,
    head: &RequestHead,
    name: &'static str,
    calls: usize,
    timeout: Duration,
    query: &dyn Fn(usize) -> KontrolQuery,
) -> (Lookup, usize) {
    let mut rec = Recorder::default();
    let mut matched = Vec::with_capacity(calls);
    let start = Instant::now();
    for j in 0..calls {
        let args = Value::from_serialize(&(GetKitesArgs {
            query: Some(query(j)),
        },));
        let t = Instant::now();
        let answer = match args {
            Ok(args) => conn.call("getKites", head, args, timeout).await,
            Err(e) => Err(e),
        };
        let latency = t.elapsed();
        match answer.and_then(|v| v.decode::<GetKitesResult>()) {
            Ok(r) => {
                rec.record(latency);
                matched.push(r.kites.len());
            }
            Err(e) => rec.error(format!("getKites: {e}")),
        }
    }
    let s: Summary = rec.summary(start.elapsed());
    let last = matched.last().copied().unwrap_or(0);
    matched.sort_unstable();
    (
        Lookup {
            query: name,
            calls: s.calls,
            matched: matched.get(matched.len() / 2).copied().unwrap_or(0),
            p50_ms: s.p50_us / 1000.0,
            p99_ms: s.p99_us / 1000.0,
            errors: s.errors,
            first_error: s.first_error,
        },
        last,
    )
}

/// The report as a Markdown table, one row per storage and N.
pub fn markdown(report: &KontrolReport) -> String {
    use std::fmt::Write;
    let mut out = String::new();
    let m = &report.machine;
    let o = &report.options;
    let _ = writeln!(
        out,
        "Machine: {} CPUs, {}, Linux {}. Kites registered over {} websocket connections, {} registers in flight on each; heartbeat every {} s; one-kite getKites {} calls each at 1 in flight; idle CPU over {:.0} s.\n",
        m.cpus,
        m.cpu,
        m.kernel,
        o.connections,
        o.in_flight,
        o.heartbeat_secs,
        o.lookups,
        o.idle.as_secs_f64()
    );
    if o.smoke {
        out.push_str("Smoke run (--smoke): these figures are not measurements (200 kites, a few calls, 2 s of idle); they only show the scenario runs.\n\n");
    }
    let ms = |v: f64| {
        if v >= 100.0 {
            format!("{v:.0}")
        } else if v >= 10.0 {
            format!("{v:.1}")
        } else {
            format!("{v:.2}")
        }
    };
    out.push_str("| storage | kites | registers/s | register p50 / p99 ms | register errors | getKites {username, name} p50 / p99 ms (found) | {username, hostname} | {id} | all N p50 / p99 ms (calls) | found at end | Kontrol RSS MiB | idle CPU % of a core | storage CPU % | heartbeats/s | load avg |\n");
    out.push_str("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|\n");
    for r in &report.rows {
        let cell = |l: Option<&Lookup>, count_calls: bool| match l {
            None => String::new(),
            Some(l) if l.calls == 0 => format!("failed ({} errors)", l.errors),
            Some(l) => {
                let extra = if count_calls {
                    format!("{}", l.calls)
                } else {
                    format!("{}", l.matched)
                };
                let errors = if l.errors > 0 {
                    format!(", {} errors", l.errors)
                } else {
                    String::new()
                };
                format!("{} / {} ({extra}{errors})", ms(l.p50_ms), ms(l.p99_ms))
            }
        };
        let find = |q: &str| r.lookups.iter().find(|l| l.query == q);
        let _ = writeln!(
            out,
            "| {} | {} | {:.0} | {} / {} | {} | {} | {} | {} | {} | {} | {:.1} | {:.1} | {} | {:.0} | {} |",
            r.storage.name(),
            r.kites,
            r.registers_per_sec,
            ms(r.register_p50_ms),
            ms(r.register_p99_ms),
            r.register_errors,
            cell(find("username+name"), false),
            cell(find("username+hostname"), false),
            cell(find("id"), false),
            cell(find("username (all)"), true),
            r.found_at_end,
            r.kontrol_rss_kib as f64 / 1024.0,
            r.idle_cpu_percent,
            r.storage_cpu_percent
                .map_or_else(String::new, |p| format!("{p:.1}")),
            r.pings_per_sec,
            r.load_average,
        );
    }
    let errors: Vec<String> = report
        .rows
        .iter()
        .flat_map(|r| {
            let row = format!("{} x{}", r.storage.name(), r.kites);
            r.first_register_error
                .iter()
                .map(move |e| format!("{row}: {e}"))
                .chain(r.lookups.iter().filter_map(move |l| {
                    l.first_error
                        .as_ref()
                        .map(|e| format!("{} x{} {}: {e}", r.storage.name(), r.kites, l.query))
                }))
                .collect::<Vec<_>>()
        })
        .collect();
    if !errors.is_empty() {
        out.push_str("\nFirst errors:\n\n");
        for e in errors {
            let _ = writeln!(out, "- {e}");
        }
    }
    out
}
