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
        let mut args: Vec<String> = [
            "serve",
            "--system",
            system.name(),
            "--addr",
            "127.0.0.1:0",
            "--exit-with-stdin",
        ]
        .map(str::to_owned)
        .to_vec();
        if let Some(size) = options.read_buffer {
            args.extend(["--read-buffer".to_owned(), size.to_string()]);
        }
        let env: Vec<(&str, &str)> = options
            .token_public_key
            .as_deref()
            .map(|pem| ("KITE_BENCH_TOKEN_PUBLIC_KEY", pem))
            .into_iter()
            .collect();
        ServerProcess::start_with(system.name(), &args, &env)
    }

    /// Starts `kite-bench <args>` (a subcommand that prints `listening <addr>` first and exits
    /// when its stdin closes) and waits until it listens; `what` names it in errors.
    pub fn start_with(
        what: &str,
        args: &[String],
        env: &[(&str, &str)],
    ) -> Result<ServerProcess, String> {
        let exe = std::env::current_exe().map_err(|e| format!("own executable: {e}"))?;
        let mut cmd = Command::new(exe);
        cmd.args(args).envs(env.iter().copied());
        let mut child = cmd
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .map_err(|e| format!("start {what}: {e}"))?;
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
            return Err(format!("{what} server did not start (said {line:?})"));
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

/// Clock ticks per second of `/proc/<pid>/stat`'s times (`USER_HZ`, which Linux fixes at 100 on
/// every architecture this bench runs on, whatever the kernel's own tick rate).
pub const USER_HZ: f64 = 100.0;

/// CPU time process `pid` has used, user and system (`utime` + `stime` of `/proc/<pid>/stat`),
/// in clock ticks ([`USER_HZ`]); `None` if the process is gone.
pub fn cpu_ticks(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) is in parentheses and may hold spaces: count from the last `)`.
    let rest = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // After the name: state (3), ppid (4), ... utime (14), stime (15).
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some(utime + stime)
}

/// The parent of process `pid` (`ppid` of `/proc/<pid>/stat`).
fn parent_of(pid: u32) -> Option<u32> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &stat[stat.rfind(')')? + 1..];
    rest.split_whitespace().nth(1)?.parse().ok()
}

/// CPU ticks of process `pid` and of its children (one level: PostgreSQL's backends are
/// children of the postmaster). Children that ended between two readings take their ticks with
/// them, so compare readings of long-lived processes only.
pub fn tree_cpu_ticks(pid: u32) -> Option<u64> {
    let own = cpu_ticks(pid)?;
    let children: u64 = std::fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|&p| parent_of(p) == Some(pid))
        .filter_map(cpu_ticks)
        .sum();
    Some(own + children)
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
