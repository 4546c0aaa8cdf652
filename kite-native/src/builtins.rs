//! The methods every kite serves: `kite.ping`, `kite.systemInfo`, `kite.heartbeat`, `kite.log`,
//! `kite.print`, `kite.prompt`, `kite.getPass`, `kite.echo`, `kite.tunnel` (see
//! [`crate::Kite::register_to_tunnel`]).

use std::io::Write;
use std::time::Duration;

use kite_core::{Callback, KiteError};
use serde::Serialize;
use serde_json::Value;
use tracing::info;

use crate::kite::Kite;
use crate::request::Request;

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

fn read_line() -> Result<String, KiteError> {
    let mut line = String::new();
    std::io::stdin()
        .read_line(&mut line)
        .map_err(|e| KiteError::generic(format!("cannot read stdin: {e}")))?;
    Ok(line.trim_end_matches(['\n', '\r']).to_owned())
}

pub(crate) fn register(kite: &Kite) {
    kite.handle("kite.ping", |_req: Request| async {
        Ok::<_, KiteError>("pong")
    })
    .disable_authentication();

    kite.handle("kite.systemInfo", |_req: Request| async {
        tokio::task::spawn_blocking(system_info)
            .await
            .map_err(|e| KiteError::generic(e.to_string()))
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
            if let Some(old) =
                k.0.heartbeat
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .replace(task)
            {
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

    kite.handle("kite.prompt", |req: Request| async move {
        let prompt: String = req.arg()?;
        tokio::task::spawn_blocking(move || {
            print!("{prompt}");
            let _ = std::io::stdout().flush();
            read_line()
        })
        .await
        .map_err(|e| KiteError::generic(e.to_string()))?
    });

    kite.handle("kite.getPass", |req: Request| async move {
        let prompt: String = req.arg()?;
        tokio::task::spawn_blocking(move || {
            rpassword::prompt_password(prompt)
                .map_err(|e| KiteError::generic(format!("cannot read password: {e}")))
        })
        .await
        .map_err(|e| KiteError::generic(e.to_string()))?
    });

    kite.handle("kite.echo", |req: Request| async move {
        // The first argument as it came, functions included (an echoed callback is that
        // callback), however deep: it is passed back without being parsed.
        Ok::<_, KiteError>(req.args.get(0).unwrap_or_default())
    });

    crate::tunnel::register_builtin(kite);
}
