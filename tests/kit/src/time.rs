//! Deadlines: a test fails with a message instead of hanging.

use std::future::Future;
use std::time::Duration;

/// How long [`within`] waits.
pub const DEFAULT: Duration = Duration::from_secs(20);

/// `f`'s output, or a panic naming `what` after [`DEFAULT`] (20 s).
pub async fn within<F: Future>(what: &str, f: F) -> F::Output {
    within_secs(DEFAULT.as_secs(), what, f).await
}

/// `f`'s output, or a panic naming `what` after `secs` seconds.
pub async fn within_secs<F: Future>(secs: u64, what: &str, f: F) -> F::Output {
    tokio::time::timeout(Duration::from_secs(secs), f)
        .await
        .unwrap_or_else(|_| panic!("timed out: {what}"))
}
