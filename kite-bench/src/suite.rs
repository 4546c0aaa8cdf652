//! `kite-bench run`: every scenario, for our kite and its peers, in one run, interleaved over
//! repetitions; medians are reported, with every figure also given as a ratio to the peers.

use std::time::Duration;

use clap::ValueEnum;
use kite_native::transport::Transport;
use serde::Serialize;

use crate::System;
use crate::child::ServerProcess;
use crate::load::{self, ManySummary, Payload, Target};
use crate::memory::{self, IdleReport, SoakReport};
use crate::server::ServeOptions;
use crate::stats::{Summary, Window, median};

/// A group of scenarios.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, ValueEnum, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Group {
    /// `square` at concurrency 1, 16, 64 and 256 on one websocket connection, every system.
    Concurrency,
    /// `echo` of 16 B, 1 KiB and 64 KiB at concurrency 16, every system.
    Payload,
    /// The kite with and without token authentication, at concurrency 1 and 64.
    Auth,
    /// The kite over xhr-polling at concurrency 1, 16, 64 and 256.
    Xhr,
    /// 1,000 connections (by default) making a few calls each.
    Connections,
    /// 10,000 (by default) idle websocket connections: server RSS per connection.
    Idle,
    /// 1,000,000 (by default) calls on one connection: server RSS along the way.
    Soak,
}

impl Group {
    /// Every group, in run order.
    pub const ALL: [Group; 7] = [
        Group::Concurrency,
        Group::Payload,
        Group::Auth,
        Group::Xhr,
        Group::Connections,
        Group::Idle,
        Group::Soak,
    ];

    fn name(self) -> &'static str {
        match self {
            Group::Concurrency => "concurrency",
            Group::Payload => "payload",
            Group::Auth => "auth",
            Group::Xhr => "xhr",
            Group::Connections => "connections",
            Group::Idle => "idle",
            Group::Soak => "soak",
        }
    }
}

/// How much of everything to run.
#[derive(Debug, Clone, Serialize)]
pub struct SuiteOptions {
    /// Warm-up and measuring time of each one-connection scenario.
    pub window: Window,
    /// Interleaved repetitions (medians are reported).
    pub repeat: usize,
    /// The groups to run.
    pub groups: Vec<Group>,
    /// Connections of the `connections` group.
    pub connections: usize,
    /// Calls per connection in the `connections` group.
    pub calls_each: usize,
    /// Connections of the `idle` group.
    pub idle_connections: usize,
    /// Calls of the `soak` group.
    pub soak_calls: u64,
    /// Plain/token pairs of the `auth` group per repetition (run back to back: the token
    /// target is the median of the pairs' ratios).
    pub auth_pairs: usize,
    /// A smoke run ([`SuiteOptions::smoke`]): its windows and counts are too small for its
    /// figures to mean anything, so the report checks no target against them.
    pub smoke: bool,
}

impl SuiteOptions {
    /// The full run that `docs/BENCHMARKS.md` reports.
    pub fn full() -> Self {
        SuiteOptions {
            window: Window {
                warmup: Duration::from_millis(500),
                measure: Duration::from_secs(2),
            },
            repeat: 3,
            groups: Group::ALL.to_vec(),
            connections: 1000,
            calls_each: 5,
            idle_connections: 10_000,
            soak_calls: 1_000_000,
            auth_pairs: 4,
            smoke: false,
        }
    }

    /// A run of a few seconds that only shows everything works (CI).
    pub fn smoke() -> Self {
        SuiteOptions {
            window: Window {
                warmup: Duration::from_millis(30),
                measure: Duration::from_millis(120),
            },
            repeat: 1,
            groups: Group::ALL.to_vec(),
            connections: 20,
            calls_each: 2,
            idle_connections: 50,
            soak_calls: 2_000,
            auth_pairs: 1,
            smoke: true,
        }
    }
}

/// One one-connection scenario.
#[derive(Debug, Clone, PartialEq)]
struct Case {
    group: Group,
    system: System,
    transport: Transport,
    concurrency: usize,
    payload: Payload,
    token: bool,
}

impl Case {
    fn label(&self) -> String {
        let mut s = self.system.name().to_owned();
        if self.system == System::Kite {
            s.push(' ');
            s.push_str(transport_name(self.transport));
            if self.token {
                s.push_str(" +token");
            }
        }
        s
    }
}

/// The SockJS name of a client transport.
fn transport_name(t: Transport) -> &'static str {
    match t {
        Transport::XhrPolling => "xhr-polling",
        Transport::XhrStreaming => "xhr-streaming",
        Transport::RawWebSocket => "raw-websocket",
        _ => "websocket",
    }
}

fn cases(groups: &[Group]) -> Vec<Case> {
    let case = |group, system, concurrency, payload| Case {
        group,
        system,
        transport: Transport::WebSocket,
        concurrency,
        payload,
        token: false,
    };
    let peers = [
        System::Kite,
        System::Echo,
        System::EchoBatched,
        System::Jsonrpsee,
    ];
    let mut out = Vec::new();
    for &group in groups {
        match group {
            Group::Concurrency => {
                for c in [1, 16, 64, 256] {
                    for s in peers {
                        out.push(case(group, s, c, Payload::Square));
                    }
                }
            }
            Group::Payload => {
                for n in [16, 1024, 64 * 1024] {
                    for s in peers {
                        out.push(case(group, s, 16, Payload::Bytes(n)));
                    }
                }
            }
            Group::Auth => {
                for c in [1, 64] {
                    for token in [false, true] {
                        out.push(Case {
                            token,
                            ..case(group, System::Kite, c, Payload::Square)
                        });
                    }
                }
            }
            Group::Xhr => {
                for c in [1, 16, 64, 256] {
                    out.push(Case {
                        transport: Transport::XhrPolling,
                        ..case(group, System::Kite, c, Payload::Square)
                    });
                }
            }
            Group::Connections | Group::Idle | Group::Soak => {}
        }
    }
    out
}

/// One row of the report: the medians of a scenario over the repetitions.
#[derive(Debug, Clone, Serialize)]
pub struct Row {
    /// Scenario group.
    pub group: Group,
    /// System and transport, e.g. `kite websocket +token`.
    pub system: String,
    /// Calls in flight on the one connection.
    pub concurrency: usize,
    /// What each call carries.
    pub payload: String,
    /// Median calls/s.
    pub calls_per_sec: f64,
    /// Median of the p50 latencies, µs.
    pub p50_us: f64,
    /// Median of the p99 latencies, µs.
    pub p99_us: f64,
    /// Median of the p99.9 latencies, µs.
    pub p999_us: f64,
    /// Failed calls over all repetitions.
    pub errors: u64,
    /// The first error seen.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub first_error: Option<String>,
    /// Median server RSS at the end of the run, KiB.
    pub server_rss_kib: u64,
    /// calls/s as a ratio to the raw echo's message rate for the same traffic.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub vs_echo: Option<f64>,
    /// calls/s as a ratio to the batched raw echo.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub vs_echo_batched: Option<f64>,
    /// calls/s as a ratio to jsonrpsee.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub vs_jsonrpsee: Option<f64>,
    /// p50 latency as a ratio to the raw echo's.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub p50_vs_echo: Option<f64>,
    /// Every repetition's calls/s.
    pub runs: Vec<f64>,
}

/// One row of the `connections` group (medians over repetitions).
#[derive(Debug, Clone, Serialize)]
pub struct ConnectionsRow {
    /// System and transport.
    pub system: String,
    /// Connections opened.
    pub connections: usize,
    /// Calls per connection.
    pub calls_each: usize,
    /// Connections opened per second.
    pub dials_per_sec: f64,
    /// Median dial latency, µs.
    pub dial_p50_us: f64,
    /// p99 dial latency, µs.
    pub dial_p99_us: f64,
    /// Calls per second with all connections calling at once.
    pub calls_per_sec: f64,
    /// Median call latency, µs.
    pub p50_us: f64,
    /// p99 call latency, µs.
    pub p99_us: f64,
    /// Failed dials and calls.
    pub errors: u64,
    /// The first error seen.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub first_error: Option<String>,
    /// Server RSS with every connection open, KiB.
    pub server_rss_kib: u64,
}

/// A target of issue #3, checked against this run.
#[derive(Debug, Clone, Serialize)]
pub struct TargetCheck {
    /// What is measured.
    pub name: String,
    /// The figure.
    pub value: f64,
    /// The bound, with its sense in `name`.
    pub bound: f64,
    /// Whether the figure meets the bound; `None` for figures shown for information.
    pub met: Option<bool>,
}

/// Everything one `kite-bench run` measured.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// Where it ran.
    pub machine: Machine,
    /// How it ran.
    pub options: SuiteOptions,
    /// One-connection scenarios.
    pub rows: Vec<Row>,
    /// Many-connection scenarios.
    pub connections: Vec<ConnectionsRow>,
    /// Idle connections.
    pub idle: Vec<IdleReport>,
    /// The long run.
    pub soak: Option<SoakReport>,
    /// The targets.
    pub targets: Vec<TargetCheck>,
}

/// Facts about the machine.
#[derive(Debug, Clone, Serialize)]
pub struct Machine {
    /// CPUs available to this process.
    pub cpus: usize,
    /// CPU model (`/proc/cpuinfo`).
    pub cpu: String,
    /// Kernel release.
    pub kernel: String,
    /// Seconds since the Unix epoch at the start.
    pub unix_time: u64,
}

impl Machine {
    /// Reads them from `/proc`.
    pub fn read() -> Machine {
        let cpu = std::fs::read_to_string("/proc/cpuinfo")
            .ok()
            .and_then(|s| {
                s.lines()
                    .find_map(|l| l.strip_prefix("model name"))
                    .map(|l| l.trim_start_matches([' ', '\t', ':']).to_owned())
            })
            .unwrap_or_default();
        Machine {
            cpus: std::thread::available_parallelism().map_or(1, usize::from),
            cpu,
            kernel: std::fs::read_to_string("/proc/sys/kernel/osrelease")
                .map(|s| s.trim().to_owned())
                .unwrap_or_default(),
            unix_time: std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_secs()),
        }
    }
}

/// Runs the suite. Progress goes to stderr.
pub async fn run(options: SuiteOptions) -> Result<Report, String> {
    let machine = Machine::read();
    let cases = cases(&options.groups);
    let keys = if options.groups.contains(&Group::Auth) {
        Some(crate::token::TestKeys::generate()?)
    } else {
        None
    };
    let mut results: Vec<Vec<(Summary, u64)>> = vec![Vec::new(); cases.len()];
    let mut conn_results: Vec<Vec<(ManySummary, u64)>> = Vec::new();
    let conn_targets = [
        (System::Kite, Transport::WebSocket),
        (System::Kite, Transport::XhrPolling),
        (System::Echo, Transport::WebSocket),
        (System::Jsonrpsee, Transport::WebSocket),
    ];
    // Each repetition runs every case once, and the auth group's plain/token pairs back to
    // back `auth_pairs` times, in alternating order.
    let mut schedule = Vec::new();
    let mut i = 0;
    while i < cases.len() {
        let pair = cases[i].group == Group::Auth
            && cases.get(i + 1).is_some_and(|next| {
                next.group == Group::Auth && next.concurrency == cases[i].concurrency
            });
        if pair {
            // Alternate which runs first: the second run of a pair is a little slower on
            // these machines (an A/A test gives a median ratio of about 0.97).
            for k in 0..options.auth_pairs.max(1) {
                if k % 2 == 0 {
                    schedule.extend([i, i + 1]);
                } else {
                    schedule.extend([i + 1, i]);
                }
            }
            i += 2;
        } else {
            schedule.push(i);
            i += 1;
        }
    }
    for rep in 0..options.repeat {
        for &i in &schedule {
            let case = &cases[i];
            eprintln!(
                "[{}/{}] {} {} c={} {}",
                rep + 1,
                options.repeat,
                case.group.name(),
                case.label(),
                case.concurrency,
                case.payload
            );
            let serve = ServeOptions {
                read_buffer: None,
                token_public_key: case
                    .token
                    .then(|| keys.as_ref().map(|k| k.public_pem.clone()))
                    .flatten(),
            };
            let server = ServerProcess::start(case.system, &serve)?;
            let target = Target {
                system: case.system,
                addr: server.addr,
                transport: case.transport,
                token: if case.token {
                    Some(keys.as_ref().ok_or("no keys")?.token_for_bench_kite()?)
                } else {
                    None
                },
                url: None,
            };
            let summary =
                load::one_connection(&target, case.payload, case.concurrency, options.window)
                    .await?;
            let rss = server.rss_kib().unwrap_or(0);
            results[i].push((summary, rss));
        }
        if options.groups.contains(&Group::Connections) {
            for (k, (system, transport)) in conn_targets.iter().enumerate() {
                eprintln!(
                    "[{}/{}] connections {} {} x{}",
                    rep + 1,
                    options.repeat,
                    system.name(),
                    transport,
                    options.connections
                );
                let server = ServerProcess::start(*system, &ServeOptions::default())?;
                let target = Target {
                    system: *system,
                    addr: server.addr,
                    transport: *transport,
                    token: None,
                    url: None,
                };
                let mut rss = 0;
                let summary = load::many_connections(
                    &target,
                    Payload::Square,
                    options.connections,
                    options.calls_each,
                    || rss = server.rss_kib().unwrap_or(0),
                )
                .await?;
                if conn_results.len() <= k {
                    conn_results.push(Vec::new());
                }
                conn_results[k].push((summary, rss));
            }
        }
    }

    let mut rows: Vec<Row> = cases
        .iter()
        .zip(&results)
        .map(|(case, runs)| aggregate(case, runs))
        .collect();
    add_ratios(&cases, &mut rows);

    let connections = conn_targets
        .iter()
        .zip(&conn_results)
        .map(|((system, transport), runs)| {
            let mut label = system.name().to_owned();
            if *system == System::Kite {
                label = format!("{label} {}", transport_name(*transport));
            }
            aggregate_connections(label, &options, runs)
        })
        .collect();

    // The soak runs before the idle group: ten thousand clients dropped leave this process's
    // RSS high, which would blur the soak's client figures.
    let soak = if options.groups.contains(&Group::Soak) {
        eprintln!("soak: {} calls", options.soak_calls);
        Some(memory::soak(options.soak_calls, 64).await?)
    } else {
        None
    };
    let mut idle = Vec::new();
    if options.groups.contains(&Group::Idle) {
        for (system, read_buffer) in [
            (System::Kite, None),
            (System::Echo, Some(4096)),
            (System::Jsonrpsee, None),
        ] {
            eprintln!("idle {} x{}", system.name(), options.idle_connections);
            let serve = ServeOptions {
                read_buffer,
                token_public_key: None,
            };
            idle.push(memory::idle(system, options.idle_connections, &serve).await?);
        }
    }
    let targets = check_targets(&cases, &rows, &idle, soak.as_ref());
    Ok(Report {
        machine,
        options,
        rows,
        connections,
        idle,
        soak,
        targets,
    })
}

fn aggregate(case: &Case, runs: &[(Summary, u64)]) -> Row {
    let pick =
        |f: fn(&Summary) -> f64| median(&mut runs.iter().map(|(s, _)| f(s)).collect::<Vec<_>>());
    Row {
        group: case.group,
        system: case.label(),
        concurrency: case.concurrency,
        payload: case.payload.to_string(),
        calls_per_sec: pick(|s| s.calls_per_sec),
        p50_us: pick(|s| s.p50_us),
        p99_us: pick(|s| s.p99_us),
        p999_us: pick(|s| s.p999_us),
        errors: runs.iter().map(|(s, _)| s.errors).sum(),
        first_error: runs.iter().find_map(|(s, _)| s.first_error.clone()),
        server_rss_kib: median(&mut runs.iter().map(|(_, r)| *r as f64).collect::<Vec<_>>()) as u64,
        vs_echo: None,
        vs_echo_batched: None,
        vs_jsonrpsee: None,
        p50_vs_echo: None,
        runs: runs.iter().map(|(s, _)| s.calls_per_sec).collect(),
    }
}

fn aggregate_connections(
    system: String,
    options: &SuiteOptions,
    runs: &[(ManySummary, u64)],
) -> ConnectionsRow {
    let pick = |f: fn(&ManySummary) -> f64| {
        median(&mut runs.iter().map(|(s, _)| f(s)).collect::<Vec<_>>())
    };
    ConnectionsRow {
        system,
        connections: options.connections,
        calls_each: options.calls_each,
        dials_per_sec: pick(|s| s.dial.calls_per_sec),
        dial_p50_us: pick(|s| s.dial.p50_us),
        dial_p99_us: pick(|s| s.dial.p99_us),
        calls_per_sec: pick(|s| s.calls.calls_per_sec),
        p50_us: pick(|s| s.calls.p50_us),
        p99_us: pick(|s| s.calls.p99_us),
        errors: runs
            .iter()
            .map(|(s, _)| s.dial.errors + s.calls.errors)
            .sum(),
        first_error: runs.iter().find_map(|(s, _)| {
            s.dial
                .first_error
                .clone()
                .or_else(|| s.calls.first_error.clone())
        }),
        server_rss_kib: median(&mut runs.iter().map(|(_, r)| *r as f64).collect::<Vec<_>>()) as u64,
    }
}

/// Fills the ratio columns: each row against the peers of the same group, concurrency and
/// payload.
fn add_ratios(cases: &[Case], rows: &mut [Row]) {
    // (calls/s, p50) of `system` in the same scenario as `case`.
    let peer = |case: &Case, system: System, rows: &[Row]| -> Option<(f64, f64)> {
        cases
            .iter()
            .position(|c| {
                c.group == case.group
                    && c.system == system
                    && c.concurrency == case.concurrency
                    && c.payload == case.payload
            })
            .map(|i| (rows[i].calls_per_sec, rows[i].p50_us))
            .filter(|(r, p)| *r > 0.0 && *p > 0.0)
    };
    let ratios: Vec<_> = cases
        .iter()
        .enumerate()
        .map(|(i, case)| {
            let (rate, p50) = (rows[i].calls_per_sec, rows[i].p50_us);
            let vs = |s: System| {
                (case.system != s)
                    .then(|| peer(case, s, rows).map(|(r, _)| rate / r))
                    .flatten()
            };
            let p50_vs_echo = (case.system != System::Echo)
                .then(|| peer(case, System::Echo, rows).map(|(_, p)| p50 / p))
                .flatten();
            (
                vs(System::Echo),
                vs(System::EchoBatched),
                vs(System::Jsonrpsee),
                p50_vs_echo,
            )
        })
        .collect();
    for (row, (e, eb, j, p)) in rows.iter_mut().zip(ratios) {
        row.vs_echo = e;
        row.vs_echo_batched = eb;
        row.vs_jsonrpsee = j;
        row.p50_vs_echo = p;
    }
}

fn check_targets(
    cases: &[Case],
    rows: &[Row],
    idle: &[IdleReport],
    soak: Option<&SoakReport>,
) -> Vec<TargetCheck> {
    let find = |group: Group, system: System, c: usize, token: bool| {
        cases
            .iter()
            .position(|k| {
                k.group == group
                    && k.system == system
                    && k.concurrency == c
                    && k.token == token
                    && k.transport == Transport::WebSocket
            })
            .map(|i| &rows[i])
    };
    let mut out = Vec::new();
    let mut info = Vec::new();
    let mut check = |name: &str, value: f64, bound: f64, met: bool| {
        out.push(TargetCheck {
            name: name.to_owned(),
            value,
            bound,
            met: Some(met),
        });
    };
    if let Some(kite) = find(Group::Concurrency, System::Kite, 64, false) {
        if let Some(r) = kite.vs_echo {
            check(
                "c=64 kite calls/s ÷ raw echo messages/s ≥",
                r,
                0.5,
                r >= 0.5,
            );
        }
        if let Some(r) = kite.vs_echo_batched {
            // For information: an echo that batches its writes is not the peer.
            info.push(TargetCheck {
                name: "c=64 kite calls/s ÷ batched raw echo messages/s (information)".into(),
                value: r,
                bound: 0.5,
                met: None,
            });
        }
        if let Some(r) = kite.vs_jsonrpsee {
            check("c=64 kite calls/s ÷ jsonrpsee calls/s ≥", r, 1.5, r >= 1.5);
        }
    }
    if let (Some(kite), Some(echo)) = (
        find(Group::Concurrency, System::Kite, 1, false),
        find(Group::Concurrency, System::Echo, 1, false),
    ) && echo.p50_us > 0.0
    {
        let r = kite.p50_us / echo.p50_us;
        check("c=1 kite p50 ÷ raw echo p50 ≤", r, 1.5, r <= 1.5);
    }
    for c in [1, 64] {
        if let (Some(plain), Some(token)) = (
            find(Group::Auth, System::Kite, c, false),
            find(Group::Auth, System::Kite, c, true),
        ) {
            // The median of the ratios of runs made back to back.
            let mut ratios: Vec<f64> = plain
                .runs
                .iter()
                .zip(&token.runs)
                .filter(|(p, _)| **p > 0.0)
                .map(|(p, t)| t / p)
                .collect();
            if !ratios.is_empty() {
                let n = ratios.len();
                let r = median(&mut ratios);
                check(
                    &format!(
                        "c={c} token calls/s ÷ unauthenticated calls/s, median of {n} pairs ≥"
                    ),
                    r,
                    0.9,
                    r >= 0.9,
                );
            }
        }
    }
    if let Some(kite) = idle.iter().find(|i| i.system == System::Kite.name()) {
        check(
            &format!(
                "idle KiB per connection at {} connections <",
                kite.connections
            ),
            kite.kib_per_connection,
            16.0,
            kite.kib_per_connection < 16.0,
        );
    }
    if let Some(soak) = soak {
        // "Flat": the server grows by less than 1 MiB from the first tenth of the calls to
        // the end (allocator noise is a few hundred KiB; a leak of even 8 bytes per call
        // would be 7 MiB).
        check(
            &format!("server RSS growth over {} calls, KiB <", soak.calls),
            soak.server_growth_kib as f64,
            1024.0,
            soak.server_growth_kib < 1024,
        );
    }
    out.extend(info);
    out
}
