//! Real database servers for tests: an etcd ([`Etcd`]) and a PostgreSQL ([`Postgres`]) of
//! their own on 127.0.0.1, with their data in a temporary directory, stopped and removed on
//! drop. Where the server is not installed, `start` says so through [`crate::skip()`] (which
//! fails under `CI=true`) and returns `None`.

use std::ffi::{OsStr, OsString};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// The `etcd` on `PATH` (Debian's `etcd-server`, which scripts/setup installs).
fn etcd_binary() -> Option<PathBuf> {
    let found = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|dir| dir.join("etcd"))
            .find(|p| p.is_file())
    });
    if found.is_none() {
        crate::skip("no etcd on PATH (scripts/setup installs it: Debian etcd-server)");
    }
    found
}

/// A real etcd on 127.0.0.1 (free client and peer ports); killed and its directory removed
/// on drop.
#[derive(Debug)]
pub struct Etcd {
    bin: PathBuf,
    dir: PathBuf,
    client_port: u16,
    peer_port: u16,
    extra: Vec<String>,
    child: Option<Child>,
}

impl Etcd {
    /// A running, healthy etcd; `None` when there is no etcd to run.
    pub async fn start() -> Option<Etcd> {
        Etcd::start_with(&[]).await
    }

    /// [`Etcd::start`] with `extra` arguments (`--enable-v2`, to serve Go Kontrol's v2 API).
    pub async fn start_with(extra: &[&str]) -> Option<Etcd> {
        let bin = etcd_binary()?;
        let dir = crate::net::temp_dir("etcd");
        let client = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let peer = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let mut etcd = Etcd {
            bin,
            dir,
            client_port: client.local_addr().unwrap().port(),
            peer_port: peer.local_addr().unwrap().port(),
            extra: extra.iter().map(|a| (*a).to_owned()).collect(),
            child: None,
        };
        drop((client, peer));
        etcd.run().await;
        Some(etcd)
    }

    /// Its client URL, `http://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.client_port)
    }

    /// Starts etcd on this one's ports and data directory (again, after [`Etcd::kill`]), and
    /// waits until it is healthy.
    pub async fn run(&mut self) {
        let log = std::fs::File::options()
            .create(true)
            .append(true)
            .open(self.dir.join("etcd.log"))
            .unwrap();
        let client = self.url();
        let peer = format!("http://127.0.0.1:{}", self.peer_port);
        let cluster = format!("kite-test={peer}");
        let data = self.dir.join("data");
        let child = Command::new(&self.bin)
            .args(["--name", "kite-test", "--data-dir"])
            .arg(&data)
            .args(["--listen-client-urls", &client])
            .args(["--advertise-client-urls", &client])
            .args(["--listen-peer-urls", &peer])
            .args(["--initial-advertise-peer-urls", &peer])
            .args(["--initial-cluster", &cluster])
            .args(&self.extra)
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap();
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(15);
        while !self.healthy().await {
            if let Some(status) = self.child.as_mut().and_then(|c| c.try_wait().unwrap()) {
                panic!("etcd exited ({status}):\n{}", self.log());
            }
            assert!(
                Instant::now() < deadline,
                "etcd not healthy within 15 s:\n{}",
                self.log()
            );
            // etcd announces readiness only through its health endpoint: poll it.
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Whether etcd answers `GET /health` with `"health":"true"`.
    pub async fn healthy(&self) -> bool {
        let probe = async {
            let mut s = tokio::net::TcpStream::connect(("127.0.0.1", self.client_port))
                .await
                .ok()?;
            s.write_all(b"GET /health HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n")
                .await
                .ok()?;
            let mut answer = String::new();
            s.read_to_string(&mut answer).await.ok()?;
            Some(answer.contains(r#""health":"true""#))
        };
        tokio::time::timeout(Duration::from_secs(1), probe)
            .await
            .ok()
            .flatten()
            .unwrap_or(false)
    }

    /// Its process id, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Kills it (its data stays for [`Etcd::run`]).
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Sends `SIG<name>` to etcd (`STOP`, `CONT`).
    pub fn signal(&self, name: &str) {
        let pid = self.child.as_ref().unwrap().id().to_string();
        let status = Command::new("kill")
            .args([&format!("-{name}"), &pid])
            .status()
            .unwrap();
        assert!(status.success(), "kill -{name} {pid}: {status}");
        if name == "STOP" {
            // The signal is delivered to each thread as it next enters the kernel: until all
            // are stopped, one may still answer a request sent after `kill` returned.
            let deadline = Instant::now() + Duration::from_secs(10);
            while !all_threads_stopped(&pid) {
                assert!(
                    Instant::now() < deadline,
                    "etcd {pid} not stopped within 10 s"
                );
                std::thread::yield_now();
            }
        }
    }

    /// The last lines of its log.
    pub fn log(&self) -> String {
        let log = std::fs::read_to_string(self.dir.join("etcd.log")).unwrap_or_default();
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(30)..].join("\n")
    }
}

impl Drop for Etcd {
    fn drop(&mut self) {
        self.kill();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// The directory holding `initdb` and `pg_ctl`: the newest under /usr/lib/postgresql/*/bin
/// (Debian), else the one on `PATH`.
fn pg_bin() -> Option<PathBuf> {
    let has_tools = |dir: &Path| dir.join("initdb").is_file() && dir.join("pg_ctl").is_file();
    let mut debian: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let version = e.file_name().to_str()?.parse::<u32>().ok()?;
            let bin = e.path().join("bin");
            has_tools(&bin).then_some((version, bin))
        })
        .collect();
    debian.sort();
    debian
        .pop()
        .map(|(_, bin)| bin)
        .or_else(|| std::env::split_paths(&std::env::var_os("PATH")?).find(|dir| has_tools(dir)))
}

fn is_root() -> bool {
    std::fs::metadata("/proc/self").is_ok_and(|m| m.uid() == 0)
}

fn shell_quote(s: &OsStr) -> String {
    format!("'{}'", s.to_string_lossy().replace('\'', r"'\''"))
}

/// A PostgreSQL server of its own on 127.0.0.1, user `postgres` with trust authentication,
/// tuned for tests (no fsync). As root (which `initdb` refuses) the server runs as `postgres`.
#[derive(Debug)]
pub struct Postgres {
    bin: PathBuf,
    dir: PathBuf,
    port: u16,
    as_postgres: bool,
}

impl Postgres {
    /// A running server, or `None` (after saying why) where PostgreSQL is not installed.
    pub fn start() -> Option<Postgres> {
        let Some(bin) = pg_bin() else {
            crate::skip(
                "PostgreSQL is not installed (no initdb and pg_ctl under \
                 /usr/lib/postgresql/*/bin or on PATH; scripts/setup installs it)",
            );
            return None;
        };
        let dir = crate::net::temp_dir("pg");
        let as_postgres = is_root();
        let mut server = Postgres {
            bin,
            dir,
            port: 0,
            as_postgres,
        };
        if as_postgres {
            server.run(Command::new("chown").arg("postgres").arg(&server.dir));
        }
        let data = server.data();
        server.tool(&[
            "initdb".into(),
            "-D".into(),
            data.into(),
            "-U".into(),
            "postgres".into(),
            "--auth=trust".into(),
            "-E".into(),
            "UTF8".into(),
            "--no-locale".into(),
            "-N".into(),
        ]);
        // A free port can be taken between our look and the server's bind: try a few.
        for attempt in 0.. {
            server.port = crate::free_port();
            match server.try_start() {
                Ok(()) => break,
                Err(e) if attempt < 3 => eprintln!("retrying on another port: {e}"),
                Err(e) => panic!("{e}"),
            }
        }
        Some(server)
    }

    /// Its port on 127.0.0.1.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The postmaster's process id (the first line of `postmaster.pid`), while it runs.
    pub fn pid(&self) -> Option<u32> {
        let text = std::fs::read_to_string(self.data().join("postmaster.pid")).ok()?;
        text.lines().next()?.trim().parse().ok()
    }

    /// Its temporary directory (the data directory is `data` inside it).
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn data(&self) -> PathBuf {
        self.dir.join("data")
    }

    /// Runs `cmd`, panicking with its output if it fails.
    fn run(&self, cmd: &mut Command) -> String {
        let out = cmd.output().unwrap();
        assert!(
            out.status.success(),
            "{cmd:?}: {}\n{}\n{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// The command running the PostgreSQL tool `args[0]` as the data directory's owner.
    fn tool_command(&self, args: &[OsString]) -> Command {
        let program = self.bin.join(&args[0]);
        if self.as_postgres {
            let line = std::iter::once(program.as_os_str())
                .chain(args[1..].iter().map(|a| a.as_os_str()))
                .map(shell_quote)
                .collect::<Vec<_>>()
                .join(" ");
            let mut cmd = Command::new("su");
            cmd.args(["postgres", "-s", "/bin/sh", "-c", &line]);
            cmd
        } else {
            let mut cmd = Command::new(program);
            cmd.args(&args[1..]);
            cmd
        }
    }

    fn tool(&self, args: &[OsString]) -> String {
        self.run(&mut self.tool_command(args))
    }

    fn pg_ctl(&self, action: &[&str]) -> Command {
        let mut args: Vec<OsString> = vec!["pg_ctl".into(), "-D".into(), self.data().into()];
        args.extend(action.iter().map(OsString::from));
        self.tool_command(&args)
    }

    fn try_start(&self) -> Result<(), String> {
        let options = format!(
            "-c listen_addresses=127.0.0.1 -p {} -k {} -c fsync=off \
             -c synchronous_commit=off -c full_page_writes=off",
            self.port,
            self.dir.display()
        );
        let log = self.dir.join("log").display().to_string();
        let out = self
            .pg_ctl(&["-l", &log, "-o", &options, "-w", "-t", "30", "start"])
            .output()
            .unwrap();
        if out.status.success() {
            return Ok(());
        }
        Err(format!(
            "pg_ctl start on port {}: {}\n{}",
            self.port,
            String::from_utf8_lossy(&out.stderr),
            std::fs::read_to_string(self.dir.join("log")).unwrap_or_default()
        ))
    }

    /// Starts it again (same data directory and port) after [`Postgres::stop`].
    pub fn restart(&self) {
        self.try_start().unwrap();
    }

    /// Stops it (fast shutdown: clients are disconnected).
    pub fn stop(&self) {
        self.run(&mut self.pg_ctl(&["-m", "fast", "-w", "-t", "30", "stop"]));
    }

    /// Creates the database `name` (user `postgres`, on 127.0.0.1 at [`Postgres::port`]).
    pub fn create_database(&self, name: &str) {
        let port = self.port.to_string();
        self.run(Command::new(self.bin.join("createdb")).args([
            "-h",
            "127.0.0.1",
            "-p",
            &port,
            "-U",
            "postgres",
            name,
        ]));
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        let _ = self.pg_ctl(&["-m", "immediate", "-w", "stop"]).output();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Whether every thread of process `pid` is stopped (state `T` in `/proc/<pid>/task/*/stat`).
fn all_threads_stopped(pid: &str) -> bool {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return false;
    };
    tasks.flatten().all(|task| {
        std::fs::read_to_string(task.path().join("stat")).is_ok_and(|stat| {
            // `pid (comm) state ...`: the state follows the last `)`.
            stat.rsplit_once(')')
                .and_then(|(_, rest)| rest.split_whitespace().next())
                .is_some_and(|state| state == "T" || state == "t")
        })
    })
}
