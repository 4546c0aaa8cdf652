//! Printing a [`Report`] as Markdown tables (the same tables `docs/BENCHMARKS.md` carries).

use std::fmt::Write;

use crate::suite::Report;

fn ratio(r: Option<f64>) -> String {
    r.map_or_else(|| "".to_owned(), |r| format!("{r:.2}×"))
}

fn rate(r: f64) -> String {
    if r >= 10_000.0 {
        format!("{:.1}k", r / 1000.0)
    } else {
        format!("{r:.0}")
    }
}

fn mib(kib: u64) -> String {
    format!("{:.1}", kib as f64 / 1024.0)
}

/// The line above the targets of a smoke run: its figures come from windows of milliseconds
/// and a handful of connections, so comparing them with the targets would say nothing.
pub const SMOKE_NOTE: &str = "Smoke run (--smoke): these figures are not measurements (windows of milliseconds, a few connections); they only show every scenario runs, and no target is checked. Figures come from a full `kite-bench run` (docs/BENCHMARKS.md).";

/// The report as Markdown.
pub fn markdown(report: &Report) -> String {
    let mut out = String::new();
    let m = &report.machine;
    let _ = writeln!(
        out,
        "Machine: {} CPUs, {}, Linux {}. Window {:.1} s (after {:.1} s warm-up), {} repetition(s), medians.\n",
        m.cpus,
        m.cpu,
        m.kernel,
        report.options.window.measure.as_secs_f64(),
        report.options.window.warmup.as_secs_f64(),
        report.options.repeat
    );
    if !report.rows.is_empty() {
        out.push_str("| group | system | C | payload | calls/s | p50 µs | p99 µs | p99.9 µs | errors | server RSS MiB | vs echo | vs echo-batched | vs jsonrpsee | p50 vs echo |\n");
        out.push_str("|---|---|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n");
        for r in &report.rows {
            let _ = writeln!(
                out,
                "| {} | {} | {} | {} | {} | {:.0} | {:.0} | {:.0} | {} | {} | {} | {} | {} | {} |",
                serde_json::to_value(r.group)
                    .ok()
                    .and_then(|v| v.as_str().map(str::to_owned))
                    .unwrap_or_default(),
                r.system,
                r.concurrency,
                r.payload,
                rate(r.calls_per_sec),
                r.p50_us,
                r.p99_us,
                r.p999_us,
                r.errors,
                mib(r.server_rss_kib),
                ratio(r.vs_echo),
                ratio(r.vs_echo_batched),
                ratio(r.vs_jsonrpsee),
                ratio(r.p50_vs_echo),
            );
        }
        out.push('\n');
    }
    if !report.connections.is_empty() {
        out.push_str("| connections | system | calls each | dials/s | dial p50 µs | dial p99 µs | calls/s | p50 µs | p99 µs | errors | server RSS MiB (all open) |\n");
        out.push_str("|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n");
        for c in &report.connections {
            let _ = writeln!(
                out,
                "| {} | {} | {} | {} | {:.0} | {:.0} | {} | {:.0} | {:.0} | {} | {} |",
                c.connections,
                c.system,
                c.calls_each,
                rate(c.dials_per_sec),
                c.dial_p50_us,
                c.dial_p99_us,
                rate(c.calls_per_sec),
                c.p50_us,
                c.p99_us,
                c.errors,
                mib(c.server_rss_kib),
            );
        }
        out.push('\n');
    }
    if !report.idle.is_empty() {
        out.push_str("| idle connections | system | server RSS before MiB | with all open MiB | KiB per connection | failed |\n");
        out.push_str("|---:|---|---:|---:|---:|---:|\n");
        for i in &report.idle {
            let _ = writeln!(
                out,
                "| {} | {} | {} | {} | {:.1} | {} |",
                i.connections,
                i.system,
                mib(i.rss_before_kib),
                mib(i.rss_open_kib),
                i.kib_per_connection,
                i.failed
            );
        }
        out.push('\n');
    }
    if let Some(s) = &report.soak {
        let _ = writeln!(
            out,
            "Soak: {} `square` calls on one websocket connection at C={} in {:.1} s, {} errors; server RSS growth {} KiB, client {} KiB from the first tenth to the end.\n",
            s.calls, s.concurrency, s.seconds, s.errors, s.server_growth_kib, s.client_growth_kib
        );
        out.push_str("| calls | server RSS KiB | client RSS KiB |\n|---:|---:|---:|\n");
        for p in &s.samples {
            let _ = writeln!(
                out,
                "| {} | {} | {} |",
                p.calls, p.server_rss_kib, p.client_rss_kib
            );
        }
        out.push('\n');
    }
    if !report.targets.is_empty() {
        if report.options.smoke {
            out.push_str(SMOKE_NOTE);
            out.push('\n');
        }
        out.push_str("| target | value | bound | met |\n|---|---:|---:|---|\n");
        for t in &report.targets {
            let _ = writeln!(
                out,
                "| {} | {:.2} | {} | {} |",
                t.name,
                t.value,
                t.bound,
                match t.met {
                    Some(_) if report.options.smoke => "n/a (smoke)",
                    Some(true) => "yes",
                    Some(false) => "**no**",
                    None => "information",
                }
            );
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::suite::{Machine, SuiteOptions, TargetCheck};

    fn report(options: SuiteOptions) -> Report {
        let target = |name: &str, met| TargetCheck {
            name: name.into(),
            value: 0.1,
            bound: 0.5,
            met,
        };
        Report {
            machine: Machine {
                cpus: 2,
                cpu: "test".into(),
                kernel: "6.0".into(),
                unix_time: 0,
            },
            options,
            rows: Vec::new(),
            connections: Vec::new(),
            idle: Vec::new(),
            soak: None,
            targets: vec![
                target("missed ≥", Some(false)),
                target("met ≥", Some(true)),
                target("shown (information)", None),
            ],
        }
    }

    #[test]
    fn a_smoke_run_checks_no_target_and_says_why() {
        let text = markdown(&report(SuiteOptions::smoke()));
        assert!(!text.contains("**no**"), "{text}");
        assert!(!text.contains("| yes |"), "{text}");
        assert_eq!(text.matches("| n/a (smoke) |").count(), 2, "{text}");
        assert!(text.contains("| information |"), "{text}");
        // The note comes right before the table, where scripts/test starts printing.
        let note = text.find(SMOKE_NOTE).expect("the smoke note");
        let table = text.find("| target |").unwrap();
        assert!(note < table, "{text}");
        assert!(SMOKE_NOTE.contains("not measurements"));
    }

    #[test]
    fn a_full_run_gives_verdicts() {
        let text = markdown(&report(SuiteOptions::full()));
        assert!(!text.contains(SMOKE_NOTE), "{text}");
        assert!(!text.contains("n/a (smoke)"), "{text}");
        assert!(text.contains("| **no** |"), "{text}");
        assert!(text.contains("| yes |"), "{text}");
    }
}
