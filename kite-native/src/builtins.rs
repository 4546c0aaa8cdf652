//! The methods every kite serves: `kite.ping`, `kite.systemInfo`, `kite.heartbeat`, `kite.log`,
//! `kite.print`, `kite.prompt`, `kite.getPass`, `kite.echo`, `kite.tunnel` (see
//! [`crate::Kite::register_to_tunnel`]).
//!
//! # The terminal methods
//!
//! `kite.prompt` shows its argument on stdout and answers the line then typed on stdin;
//! `kite.getPass` does the same on the controlling terminal (`/dev/tty`) with echo off. Both
//! ask the person at this process's terminal, so no peer can make them hold anything for long:
//!
//! - **Credentials always.** Their callers authenticate even when
//!   `Config::disable_authentication` is set, and on trusted connections
//!   ([`crate::Client::set_trusted`]) too ([`crate::Method::require_authentication`]); a call
//!   without valid credentials gets `authenticationError`.
//! - **Switched off** with `Config::serve_prompts = false`: not registered at all, callers get
//!   `methodNotFound`. They are on by default, as in Go kite; Kontrol turns them off.
//! - **No terminal, no wait.** When stdin is not a terminal (`kite.prompt`), when there is no
//!   controlling terminal (`kite.getPass`), or when the kite runs in the background of its
//!   terminal (reading would stop the process), the call fails at once with a `genericError`:
//!   `kite.prompt: no terminal attached (stdin is not a terminal)`.
//! - **One question at a time**, in arrival order, read by one thread of the process (not
//!   tokio's blocking pool, which other methods need): the terminal is shared by every kite of
//!   the process. At most `Config::max_waiting_prompts` calls (16) wait behind the one shown; a
//!   call past them gets `requestLimitError` at once (`16 prompts are already waiting for the
//!   terminal`).
//! - **A deadline.** A call takes at most `Config::prompt_timeout` (60 s), its wait included;
//!   past it the caller gets a `timeout` error: `kite.prompt: no answer within 60s`, or `... the
//!   terminal stayed busy for 60s` when it never had its turn. The read ends with its caller
//!   (its deadline, or its connection closing): no read is left waiting on the terminal and no
//!   thread is held, echo is back on, a newline ends the abandoned prompt, and the next
//!   question has the terminal.
//! - **No stale answers.** What was typed before a question is shown is discarded when it is
//!   shown: a question only gets a line typed while it is on screen. A line typed for a prompt
//!   that gave up is never handed to the next one; an answer completed just as its caller gave
//!   up is dropped.
//! - The prompt is shown with control characters other than tab and newline escaped
//!   (`\u{1b}`), so that a caller cannot send escape sequences to the terminal; answers are
//!   read up to 64 KiB.
//!
//! A stdout that does not take the prompt (a full pipe nobody reads) holds the terminal's one
//! thread until it does: that call ends a second past its deadline, and later ones with `the
//! terminal stayed busy`.

use std::io::Write;
use std::sync::Arc;
use std::time::Duration;

use kite_core::{Callback, KiteError};
use serde::Serialize;
use serde_json::Value;
use tracing::info;

use crate::kite::Kite;
use crate::request::Request;
use crate::terminal::{Budget, Question};

/// `kite.systemInfo`'s answer, with Go's keys.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct SystemInfo {
    /// Always `RUNNING`.
    pub state: String,
    /// Used disk space of the home directory's file system, in KiB.
    pub disk_usage: u64,
    /// Size of that file system, in KiB.
    pub disk_total: u64,
    /// Used memory in bytes.
    pub memory_usage: u64,
    /// Total memory in bytes.
    pub total_memory_limit: u64,
    /// The home directory.
    pub home_dir: String,
    /// The operating system (`linux`, like Go's GOOS).
    pub uname: String,
}

/// Reads real figures from the OS.
pub fn system_info() -> SystemInfo {
    let mut sys = sysinfo::System::new();
    sys.refresh_memory();
    let home = std::env::var("HOME").unwrap_or_else(|_| "/".into());
    let disks = sysinfo::Disks::new_with_refreshed_list();
    // The disk holding the home directory: the longest mount point that prefixes it.
    let disk = disks
        .list()
        .iter()
        .filter(|d| std::path::Path::new(&home).starts_with(d.mount_point()))
        .max_by_key(|d| d.mount_point().as_os_str().len());
    let (total, available) = disk.map_or((0, 0), |d| (d.total_space(), d.available_space()));
    SystemInfo {
        state: "RUNNING".into(),
        disk_usage: total.saturating_sub(available) / 1024,
        disk_total: total / 1024,
        memory_usage: sys.used_memory(),
        total_memory_limit: sys.total_memory(),
        home_dir: home,
        uname: std::env::consts::OS.into(),
    }
}

/// How long a `kite.systemInfo` answer is given again instead of computed.
const SYSTEM_INFO_REUSE: Duration = Duration::from_secs(1);

/// The last `kite.systemInfo` answer of a kite and when it was computed. Computing one reads
/// `/proc` and the file system on a blocking thread: calls take turns (waiting without a
/// thread), and those within [`SYSTEM_INFO_REUSE`] of the last computation share it, so a peer
/// flooding the method holds at most one blocking thread, once a second.
#[derive(Default)]
struct Latest(tokio::sync::Mutex<Option<(tokio::time::Instant, SystemInfo)>>);

impl Latest {
    async fn get(&self, compute: fn() -> SystemInfo) -> Result<SystemInfo, KiteError> {
        let mut latest = self.0.lock().await;
        if let Some((at, info)) = latest.as_ref()
            && at.elapsed() < SYSTEM_INFO_REUSE
        {
            return Ok(info.clone());
        }
        let info = tokio::task::spawn_blocking(compute)
            .await
            .map_err(|e| KiteError::generic(e.to_string()))?;
        *latest = Some((tokio::time::Instant::now(), info.clone()));
        Ok(info)
    }
}

pub(crate) fn register(kite: &Kite) {
    kite.handle("kite.ping", |_req: Request| async {
        Ok::<_, KiteError>("pong")
    })
    .disable_authentication();

    let latest = Arc::new(Latest::default());
    kite.handle("kite.systemInfo", move |_req: Request| {
        let latest = latest.clone();
        async move { latest.get(system_info).await }
    });

    let k = kite.clone();
    kite.handle("kite.heartbeat", move |req: Request| {
        let k = k.clone();
        async move {
            if req.args.is_empty() {
                return Err(KiteError::argument("empty heartbeat request"));
            }
            let (interval, ping): (f64, Callback) = req.args()?;
            if !(interval.is_finite() && interval > 0.0) {
                return Err(KiteError::argument("heartbeat interval must be positive"));
            }
            let interval = Duration::from_secs_f64(interval.min(86_400.0));
            ping.call(())?;
            let context = req.context.clone();
            let task = tokio::spawn(async move {
                let mut tick =
                    tokio::time::interval_at(tokio::time::Instant::now() + interval, interval);
                loop {
                    tokio::select! {
                        _ = tick.tick() => if ping.call(()).is_err() { return },
                        () = context.cancelled() => return,
                    }
                }
            });
            // One heartbeat per kite, as in Go: a new one replaces the old.
            let old = crate::kite::lock(&k.0.live).heartbeat.replace(task);
            if let Some(old) = old {
                old.abort();
            }
            Ok::<_, KiteError>(Value::Null)
        }
    });

    kite.handle("kite.log", |req: Request| async move {
        let msg: String = req.arg()?;
        info!("{}: {}", req.caller.name, msg);
        Ok::<_, KiteError>(Value::Null)
    });

    kite.handle("kite.print", |req: Request| async move {
        let msg: String = req.arg()?;
        let mut out = std::io::stdout().lock();
        out.write_all(msg.as_bytes())
            .and_then(|()| out.flush())
            .map_err(|e| KiteError::generic(e.to_string()))?;
        Ok::<_, KiteError>(msg.len())
    });

    if kite.config().serve_prompts {
        let budget = Budget {
            timeout: kite.config().prompt_timeout,
            max_waiting: kite.config().max_waiting_prompts,
        };
        for (name, question) in [
            ("kite.prompt", Question::Line),
            ("kite.getPass", Question::Password),
        ] {
            kite.handle(name, move |req: Request| async move {
                let prompt: String = req.arg()?;
                // A caller whose connection ends gives the terminal up at once.
                tokio::select! {
                    answer = crate::terminal::ask(question, &prompt, budget) => answer,
                    () = req.context.cancelled() => Err(KiteError::generic("the caller went away")),
                }
            })
            .require_authentication();
        }
    }

    kite.handle("kite.echo", |req: Request| async move {
        // The first argument as it came, functions included (an echoed callback is that
        // callback), however deep: it is passed back without being parsed.
        Ok::<_, KiteError>(req.args.get(0).unwrap_or_default())
    });

    #[cfg(feature = "client")]
    crate::tunnel::register_builtin(kite);
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    static COMPUTED: AtomicUsize = AtomicUsize::new(0);

    fn counted() -> SystemInfo {
        COMPUTED.fetch_add(1, Ordering::SeqCst);
        // Slow enough that the calls below overlap it.
        std::thread::sleep(Duration::from_millis(20));
        system_info()
    }

    /// A flood of `kite.systemInfo` computes one answer a second, on one blocking thread.
    #[tokio::test(start_paused = true)]
    async fn a_flood_of_system_info_calls_computes_once_a_second() {
        let latest = Arc::new(Latest::default());
        let flood = |n| {
            futures_util::future::join_all((0..n).map(|_| {
                let latest = latest.clone();
                tokio::spawn(async move { latest.get(counted).await.unwrap() })
            }))
        };
        for answer in flood(64).await {
            assert_eq!(answer.unwrap().state, "RUNNING");
        }
        assert_eq!(COMPUTED.load(Ordering::SeqCst), 1);
        tokio::time::advance(SYSTEM_INFO_REUSE).await;
        flood(8).await;
        assert_eq!(COMPUTED.load(Ordering::SeqCst), 2);
    }
}
