//! Memory benchmarks: server RSS per idle websocket connection, and server RSS over a long run
//! of calls on one connection.

use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use futures_util::StreamExt;
use serde::Serialize;
use tokio_tungstenite::tungstenite::Message;

use crate::System;
use crate::child::{ServerProcess, own_rss_kib};
use crate::load::{self, Payload, Target};
use crate::server::ServeOptions;

/// What [`idle`] measured.
#[derive(Debug, Clone, Serialize)]
pub struct IdleReport {
    /// The system holding the connections.
    pub system: &'static str,
    /// Connections opened (and held) at once.
    pub connections: usize,
    /// Connections that failed to open.
    pub failed: usize,
    /// Server RSS before, KiB (after one connection was opened, used and closed).
    pub rss_before_kib: u64,
    /// Server RSS with every connection open, KiB.
    pub rss_open_kib: u64,
    /// (open − before) / connections, KiB.
    pub kib_per_connection: f64,
    /// Seconds taken to open them all.
    pub open_seconds: f64,
}

/// Opens `connections` websocket sessions to a fresh `system` server and holds them idle; reports
/// the server's RSS growth per connection. Kite sessions are real SockJS sessions (the `o` frame
/// has arrived, so the server has set the session up).
pub async fn idle(
    system: System,
    connections: usize,
    options: &ServeOptions,
) -> Result<IdleReport, String> {
    let server = ServerProcess::start(system, options)?;
    let target = Target {
        system,
        addr: server.addr,
        transport: kite_native::transport::Transport::WebSocket,
        token: None,
        url: None,
    };
    // Warm the server up (runtime threads, first-connection allocations) before the baseline.
    let mut warm = load::dial(&target, Payload::Square).await?;
    warm.call(Payload::Square, 1).await?;
    warm.close().await;
    let rss_before_kib = server.rss_kib().ok_or("no /proc RSS for the server")?;

    let url = match system {
        System::Kite => format!("ws://{}/kite/000/", server.addr),
        _ => format!("ws://{}/", server.addr),
    };
    let start = Instant::now();
    let opened: Vec<Result<_, String>> = futures_util::stream::iter(0..connections)
        .map(|i| {
            let url = url.clone();
            async move {
                let url = if system == System::Kite {
                    format!("{url}{i:08x}/websocket")
                } else {
                    url
                };
                let (mut ws, _) = tokio_tungstenite::connect_async_with_config(url, None, true)
                    .await
                    .map_err(|e| e.to_string())?;
                if system == System::Kite {
                    match ws.next().await {
                        Some(Ok(Message::Text(t))) if t.as_str() == "o" => {}
                        other => return Err(format!("no SockJS open frame: {other:?}")),
                    }
                }
                Ok(ws)
            }
        })
        .buffer_unordered(200)
        .collect()
        .await;
    let open_seconds = start.elapsed().as_secs_f64();
    let failed = opened.iter().filter(|r| r.is_err()).count();
    if let Some(Err(e)) = opened.iter().find(|r| r.is_err()) {
        eprintln!(
            "idle {}: {failed} connections failed, first: {e}",
            system.name()
        );
    }
    let rss_open_kib = server.rss_kib().ok_or("no /proc RSS for the server")?;
    let held = connections - failed;
    drop(opened);
    Ok(IdleReport {
        system: system.name(),
        connections: held,
        failed,
        rss_before_kib,
        rss_open_kib,
        kib_per_connection: rss_open_kib.saturating_sub(rss_before_kib) as f64 / held.max(1) as f64,
        open_seconds,
    })
}

/// One memory sample of [`soak`].
#[derive(Debug, Clone, Serialize)]
pub struct SoakSample {
    /// Calls completed so far.
    pub calls: u64,
    /// Server RSS, KiB.
    pub server_rss_kib: u64,
    /// Client (this process) RSS, KiB.
    pub client_rss_kib: u64,
}

/// What [`soak`] measured.
#[derive(Debug, Clone, Serialize)]
pub struct SoakReport {
    /// Calls made.
    pub calls: u64,
    /// Failed calls.
    pub errors: u64,
    /// Calls in flight at once, on one connection.
    pub concurrency: usize,
    /// Seconds taken.
    pub seconds: f64,
    /// RSS every tenth of the run.
    pub samples: Vec<SoakSample>,
    /// Server RSS at the end minus at the first sample (after a tenth of the calls), KiB.
    pub server_growth_kib: i64,
    /// The same for the client, KiB.
    pub client_growth_kib: i64,
}

/// Makes `calls` `square` calls over one websocket connection to a fresh kite server with
/// `concurrency` in flight, sampling both processes' RSS every tenth of the way.
pub async fn soak(calls: u64, concurrency: usize) -> Result<SoakReport, String> {
    let server = Arc::new(ServerProcess::start(
        System::Kite,
        &ServeOptions::default(),
    )?);
    let target = Target {
        system: System::Kite,
        addr: server.addr,
        transport: kite_native::transport::Transport::WebSocket,
        token: None,
        url: None,
    };
    let load::Conn::Kite(client) = load::dial(&target, Payload::Square).await? else {
        unreachable!("a kite target dials a kite client")
    };
    let next = Arc::new(AtomicU64::new(0));
    let errors = Arc::new(AtomicU64::new(0));
    let samples = Arc::new(Mutex::new(Vec::new()));
    let step = (calls / 10).max(1);
    let start = Instant::now();
    let tasks: Vec<_> = (0..concurrency)
        .map(|_| {
            let (client, next, errors, samples, server) = (
                client.clone(),
                next.clone(),
                errors.clone(),
                samples.clone(),
                server.clone(),
            );
            tokio::spawn(async move {
                loop {
                    let n = next.fetch_add(1, Ordering::Relaxed);
                    if n >= calls {
                        return;
                    }
                    let x = (n % 1000) as f64;
                    match client.call::<f64>("square", (x,)).await {
                        Ok(y) if y == x * x => {}
                        _ => {
                            errors.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                    if (n + 1) % step == 0 {
                        let sample = SoakSample {
                            calls: n + 1,
                            server_rss_kib: server.rss_kib().unwrap_or(0),
                            client_rss_kib: own_rss_kib().unwrap_or(0),
                        };
                        samples
                            .lock()
                            .unwrap_or_else(|e| e.into_inner())
                            .push(sample);
                    }
                }
            })
        })
        .collect();
    for t in tasks {
        t.await.map_err(|e| e.to_string())?;
    }
    let seconds = start.elapsed().as_secs_f64();
    client.close();
    let mut samples = std::mem::take(&mut *samples.lock().unwrap_or_else(|e| e.into_inner()));
    samples.sort_by_key(|s| s.calls);
    let growth = |f: fn(&SoakSample) -> u64| match (samples.first(), samples.last()) {
        (Some(a), Some(b)) => f(b) as i64 - f(a) as i64,
        _ => 0,
    };
    Ok(SoakReport {
        calls,
        errors: errors.load(Ordering::Relaxed),
        concurrency,
        seconds,
        server_growth_kib: growth(|s| s.server_rss_kib),
        client_growth_kib: growth(|s| s.client_rss_kib),
        samples,
    })
}
