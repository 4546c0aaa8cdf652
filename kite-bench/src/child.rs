//! Servers under test run as child processes (`kite-bench serve ...`), so that their memory is
//! their own and can be read from `/proc`.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Child, ChildStdin, Command, Stdio};

use crate::System;
use crate::server::ServeOptions;

/// A running server process; killed when dropped.
#[derive(Debug)]
pub struct ServerProcess {
    child: Child,
    /// Kept open: the server exits when it closes (so no server outlives its `kite-bench run`).
    _stdin: Option<ChildStdin>,
    /// Where it listens.
    pub addr: SocketAddr,
}

impl ServerProcess {
    /// Starts `kite-bench serve` for `system` on a free loopback port and waits until it listens.
    pub fn start(system: System, options: &ServeOptions) -> Result<ServerProcess, String> {
        let exe = std::env::current_exe().map_err(|e| format!("own executable: {e}"))?;
        let mut cmd = Command::new(exe);
        cmd.args([
            "serve",
            "--system",
            system.name(),
            "--addr",
            "127.0.0.1:0",
            "--exit-with-stdin",
        ]);
        if let Some(size) = options.read_buffer {
            cmd.args(["--read-buffer", &size.to_string()]);
        }
        if let Some(pem) = &options.token_public_key {
            cmd.env("KITE_BENCH_TOKEN_PUBLIC_KEY", pem);
        }
        let mut child = cmd
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .map_err(|e| format!("start {}: {e}", system.name()))?;
        let stdin = child.stdin.take();
        let stdout = child.stdout.take().expect("piped stdout");
        let mut line = String::new();
        let read = BufReader::new(stdout).read_line(&mut line);
        let addr = match read {
            Ok(n) if n > 0 => line
                .trim()
                .strip_prefix("listening ")
                .and_then(|a| a.parse().ok()),
            _ => None,
        };
        let Some(addr) = addr else {
            let _ = child.kill();
            let _ = child.wait();
            return Err(format!(
                "{} server did not start (said {line:?})",
                system.name()
            ));
        };
        Ok(ServerProcess {
            child,
            _stdin: stdin,
            addr,
        })
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Resident memory of the server, KiB.
    pub fn rss_kib(&self) -> Option<u64> {
        rss_kib(self.pid())
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `VmRSS` of process `pid` in KiB (Linux; `None` elsewhere or if the process is gone).
pub fn rss_kib(pid: u32) -> Option<u64> {
    status_field(&format!("/proc/{pid}/status"), "VmRSS:")
}

/// `VmRSS` of this process in KiB.
pub fn own_rss_kib() -> Option<u64> {
    status_field("/proc/self/status", "VmRSS:")
}

fn status_field(path: &str, field: &str) -> Option<u64> {
    let status = std::fs::read_to_string(path).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix(field))?
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()
}

/// Makes a `serve` process exit when its parent closes its stdin (or dies).
pub fn exit_with_parent() {
    std::thread::spawn(|| {
        let mut sink = Vec::new();
        let _ = std::io::Read::read_to_end(&mut std::io::stdin(), &mut sink);
        std::process::exit(0);
    });
}
