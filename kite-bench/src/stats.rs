//! Latency histograms, the warm-up/measure/stop phases of a run, and the summary of a run.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, Ordering};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use serde::Serialize;

/// The phase of a run, shared by its load tasks: warm-up (the default), measuring, stopped.
/// Calls finishing while measuring are counted.
#[derive(Debug, Default)]
pub struct Phase(AtomicU8);

const MEASURE: u8 = 1;
const STOP: u8 = 2;

impl Phase {
    /// Whether results finishing now are counted.
    pub fn measuring(&self) -> bool {
        self.0.load(Ordering::Relaxed) == MEASURE
    }

    /// Whether load tasks should end.
    pub fn stopped(&self) -> bool {
        self.0.load(Ordering::Relaxed) == STOP
    }

    fn set(&self, phase: u8) {
        self.0.store(phase, Ordering::Relaxed);
    }
}

/// How long to warm up and how long to measure.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct Window {
    /// Calls before this are not counted.
    #[serde(serialize_with = "as_secs")]
    pub warmup: Duration,
    /// Calls finishing in this window are counted.
    #[serde(serialize_with = "as_secs")]
    pub measure: Duration,
}

fn as_secs<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_f64(d.as_secs_f64())
}

/// The latencies and errors seen by one load task.
#[derive(Debug, Clone)]
pub struct Recorder {
    hist: Histogram<u64>,
    errors: u64,
    first_error: Option<String>,
}

impl Default for Recorder {
    fn default() -> Self {
        Recorder {
            // 1 ns .. 60 s at 3 significant digits.
            hist: Histogram::new_with_bounds(1, 60_000_000_000, 3).expect("valid bounds"),
            errors: 0,
            first_error: None,
        }
    }
}

impl Recorder {
    /// Records one successful call.
    pub fn record(&mut self, latency: Duration) {
        self.hist
            .saturating_record(u64::try_from(latency.as_nanos()).unwrap_or(u64::MAX).max(1));
    }

    /// Records one failed call.
    pub fn error(&mut self, message: impl Into<String>) {
        self.errors += 1;
        if self.first_error.is_none() {
            self.first_error = Some(message.into());
        }
    }

    /// Adds another task's figures to these.
    pub fn merge(&mut self, other: &Recorder) {
        let _ = self.hist.add(&other.hist);
        self.errors += other.errors;
        if self.first_error.is_none() {
            self.first_error.clone_from(&other.first_error);
        }
    }

    /// The figures over `elapsed` of measuring.
    pub fn summary(&self, elapsed: Duration) -> Summary {
        let us = |q: f64| self.hist.value_at_quantile(q) as f64 / 1000.0;
        let secs = elapsed.as_secs_f64().max(1e-9);
        Summary {
            calls: self.hist.len(),
            errors: self.errors,
            first_error: self.first_error.clone(),
            seconds: secs,
            calls_per_sec: self.hist.len() as f64 / secs,
            p50_us: us(0.5),
            p99_us: us(0.99),
            p999_us: us(0.999),
            max_us: self.hist.max() as f64 / 1000.0,
        }
    }
}

/// The outcome of one measured run.
#[derive(Debug, Clone, Serialize)]
pub struct Summary {
    /// Successful calls counted.
    pub calls: u64,
    /// Failed calls counted.
    pub errors: u64,
    /// The first error seen, if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub first_error: Option<String>,
    /// Length of the measuring window.
    pub seconds: f64,
    /// Successful calls per second.
    pub calls_per_sec: f64,
    /// Median latency, µs.
    pub p50_us: f64,
    /// 99th percentile latency, µs.
    pub p99_us: f64,
    /// 99.9th percentile latency, µs.
    pub p999_us: f64,
    /// Largest latency, µs.
    pub max_us: f64,
}

/// Runs `tasks` load tasks (each given the shared [`Phase`]) through warm-up and measuring, then
/// stops them and merges what they recorded. Tasks still busy 10 s after the stop are aborted
/// and counted as errors (a hung server shows as errors, not as a hung benchmark).
pub async fn drive<F, Fut>(tasks: usize, window: Window, mut make: F) -> Summary
where
    F: FnMut(usize, Arc<Phase>) -> Fut,
    Fut: Future<Output = Recorder> + Send + 'static,
{
    let phase = Arc::new(Phase::default());
    let handles: Vec<_> = (0..tasks)
        .map(|i| tokio::spawn(make(i, phase.clone())))
        .collect();
    tokio::time::sleep(window.warmup).await;
    phase.set(MEASURE);
    let start = Instant::now();
    tokio::time::sleep(window.measure).await;
    phase.set(STOP);
    let elapsed = start.elapsed();
    let mut total = Recorder::default();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    for mut h in handles {
        match tokio::time::timeout_at(deadline, &mut h).await {
            Ok(Ok(rec)) => total.merge(&rec),
            Ok(Err(e)) => total.error(format!("load task failed: {e}")),
            Err(_) => {
                h.abort();
                total.error("load task still waiting 10 s after the end");
            }
        }
    }
    total.summary(elapsed)
}

/// The usual load task: calls `call` back to back until the run stops, recording each call
/// that finishes while measuring.
pub async fn call_loop<F, Fut>(phase: Arc<Phase>, mut call: F) -> Recorder
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<(), String>>,
{
    let mut rec = Recorder::default();
    while !phase.stopped() {
        let start = Instant::now();
        let result = call().await;
        let latency = start.elapsed();
        let failed = result.is_err();
        if phase.measuring() {
            match result {
                Ok(()) => rec.record(latency),
                Err(e) => rec.error(e),
            }
        }
        if failed {
            // A failing call may not have waited on anything (a closed connection fails at
            // once): let the timers that end the run make progress.
            tokio::task::yield_now().await;
        }
    }
    rec
}

/// The median of `values` (0 when empty).
pub fn median(values: &mut [f64]) -> f64 {
    if values.is_empty() {
        return 0.0;
    }
    values.sort_by(f64::total_cmp);
    let mid = values.len() / 2;
    if values.len() % 2 == 1 {
        values[mid]
    } else {
        (values[mid - 1] + values[mid]) / 2.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn summary_percentiles_and_rate() {
        let mut r = Recorder::default();
        for us in 1..=1000u64 {
            r.record(Duration::from_micros(us));
        }
        r.error("boom");
        let s = r.summary(Duration::from_secs(2));
        assert_eq!(s.calls, 1000);
        assert_eq!(s.errors, 1);
        assert_eq!(s.first_error.as_deref(), Some("boom"));
        assert!((s.calls_per_sec - 500.0).abs() < 1e-9);
        assert!((s.p50_us - 500.0).abs() < 1.0, "{}", s.p50_us);
        assert!((s.p99_us - 990.0).abs() < 1.0, "{}", s.p99_us);
    }

    #[test]
    fn medians() {
        assert_eq!(median(&mut []), 0.0);
        assert_eq!(median(&mut [3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(&mut [4.0, 1.0, 2.0, 3.0]), 2.5);
    }
}
