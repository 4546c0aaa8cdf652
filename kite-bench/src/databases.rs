//! The database servers behind Kontrol's shared storages, started by the bench itself on
//! 127.0.0.1 with their data in a fresh temporary directory: etcd (`/usr/bin/etcd`, or `etcd`
//! on `PATH`) and PostgreSQL (`initdb` and `pg_ctl` of the newest `/usr/lib/postgresql/*/bin`,
//! else on `PATH`). Each is stopped and its directory removed when dropped. They are started as
//! kontrol's own storage tests start theirs (`kontrol/src/storage/{etcd,postgres}.rs`).

use std::ffi::OsString;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A fresh directory under the system's temporary directory, named after `what`.
pub fn temp_dir(what: &str) -> Result<PathBuf, String> {
    let dir = std::env::temp_dir().join(format!("kite-bench-{what}-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    Ok(dir)
}

/// A free port on 127.0.0.1 (free when looked at: the server may still lose it to another).
fn free_port() -> Result<u16, String> {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .map_err(|e| format!("no free port: {e}"))
}

/// The first of `candidates`, else `name` on `PATH`, that is a file.
fn find_binary(candidates: &[&str], name: &str) -> Option<PathBuf> {
    candidates
        .iter()
        .map(PathBuf::from)
        .find(|p| p.is_file())
        .or_else(|| {
            std::env::split_paths(&std::env::var_os("PATH")?)
                .map(|dir| dir.join(name))
                .find(|p| p.is_file())
        })
}

/// A single-member etcd on 127.0.0.1; killed and its directory removed on drop.
#[derive(Debug)]
pub struct EtcdServer {
    child: Child,
    dir: PathBuf,
    client_port: u16,
}

impl EtcdServer {
    /// Starts etcd with its data in a fresh directory and waits (up to 20 s) until it is
    /// healthy.
    pub fn start() -> Result<EtcdServer, String> {
        let bin = find_binary(&["/usr/bin/etcd"], "etcd")
            .ok_or("etcd is not installed (no /usr/bin/etcd, none on PATH)")?;
        let dir = temp_dir("etcd")?;
        let (client_port, peer_port) = (free_port()?, free_port()?);
        let log = std::fs::File::create(dir.join("etcd.log")).map_err(|e| e.to_string())?;
        let client = format!("http://127.0.0.1:{client_port}");
        let peer = format!("http://127.0.0.1:{peer_port}");
        let child = Command::new(bin)
            .args(["--name", "kite-bench", "--data-dir"])
            .arg(dir.join("data"))
            .args(["--listen-client-urls", &client])
            .args(["--advertise-client-urls", &client])
            .args(["--listen-peer-urls", &peer])
            .args(["--initial-advertise-peer-urls", &peer])
            .args(["--initial-cluster", &format!("kite-bench={peer}")])
            .stdin(Stdio::null())
            .stdout(log.try_clone().map_err(|e| e.to_string())?)
            .stderr(log)
            .spawn()
            .map_err(|e| format!("start etcd: {e}"))?;
        let mut etcd = EtcdServer {
            child,
            dir,
            client_port,
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        while !etcd.healthy() {
            if let Ok(Some(status)) = etcd.child.try_wait() {
                return Err(format!("etcd exited ({status}):\n{}", etcd.log()));
            }
            if Instant::now() > deadline {
                return Err(format!("etcd not healthy within 20 s:\n{}", etcd.log()));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(etcd)
    }

    /// Its client URL.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.client_port)
    }

    /// Its process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Whether it answers `GET /health` with `"health":"true"`.
    fn healthy(&self) -> bool {
        let probe = || -> std::io::Result<bool> {
            let mut s = TcpStream::connect(("127.0.0.1", self.client_port))?;
            s.set_read_timeout(Some(Duration::from_secs(2)))?;
            s.write_all(b"GET /health HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n")?;
            let mut answer = String::new();
            s.read_to_string(&mut answer)?;
            Ok(answer.contains(r#""health":"true""#))
        };
        probe().unwrap_or(false)
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("etcd.log")).unwrap_or_default()
    }
}

impl Drop for EtcdServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A PostgreSQL server of its own on 127.0.0.1 (trust authentication, user `postgres`,
/// durability off as in kontrol's tests: `fsync`, `synchronous_commit` and `full_page_writes`);
/// stopped and its directory removed on drop. As root (which `initdb` refuses) it runs as the
/// `postgres` user.
#[derive(Debug)]
pub struct PgServer {
    bin: PathBuf,
    dir: PathBuf,
    port: u16,
    as_postgres: bool,
}

impl PgServer {
    /// Creates a cluster in a fresh directory and starts it.
    pub fn start() -> Result<PgServer, String> {
        let bin = pg_bin().ok_or(
            "PostgreSQL is not installed (no initdb and pg_ctl under /usr/lib/postgresql/*/bin \
             or on PATH)",
        )?;
        let dir = temp_dir("postgres")?;
        let as_postgres = is_root();
        let mut server = PgServer {
            bin,
            dir,
            port: 0,
            as_postgres,
        };
        if as_postgres {
            run(Command::new("chown").arg("postgres").arg(&server.dir))?;
        }
        let data = server.data();
        run(&mut server.tool(&[
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
        ]))?;
        // A free port can be taken between our look and the server's bind: try a few.
        let mut last = String::new();
        for _ in 0..4 {
            server.port = free_port()?;
            match server.try_start() {
                Ok(()) => return Ok(server),
                Err(e) => last = e,
            }
        }
        Err(last)
    }

    /// Its port on 127.0.0.1.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The postmaster's process id (its backends are its children).
    pub fn pid(&self) -> Option<u32> {
        std::fs::read_to_string(self.data().join("postmaster.pid"))
            .ok()?
            .lines()
            .next()?
            .trim()
            .parse()
            .ok()
    }

    fn data(&self) -> PathBuf {
        self.dir.join("data")
    }

    /// The command running PostgreSQL tool `args[0]` as the data directory's owner.
    fn tool(&self, args: &[OsString]) -> Command {
        let program = self.bin.join(&args[0]);
        if self.as_postgres {
            let line = std::iter::once(program.as_os_str())
                .chain(args[1..].iter().map(|a| a.as_os_str()))
                .map(|a| format!("'{}'", a.to_string_lossy().replace('\'', r"'\''")))
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

    fn pg_ctl(&self, action: &[&str]) -> Command {
        let mut args: Vec<OsString> = vec!["pg_ctl".into(), "-D".into(), self.data().into()];
        args.extend(action.iter().map(OsString::from));
        self.tool(&args)
    }

    fn try_start(&self) -> Result<(), String> {
        let options = format!(
            "-c listen_addresses=127.0.0.1 -p {} -k {} -c fsync=off \
             -c synchronous_commit=off -c full_page_writes=off",
            self.port,
            self.dir.display()
        );
        let log = self.dir.join("log").display().to_string();
        run(&mut self.pg_ctl(&["-l", &log, "-o", &options, "-w", "-t", "30", "start"]))
            .map(drop)
            .map_err(|e| {
                format!(
                    "{e}\n{}",
                    std::fs::read_to_string(self.dir.join("log")).unwrap_or_default()
                )
            })
    }
}

impl Drop for PgServer {
    fn drop(&mut self) {
        let _ = self
            .pg_ctl(&["-m", "immediate", "-w", "stop"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
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
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata("/proc/self").is_ok_and(|m| m.uid() == 0)
}

/// Runs `cmd`; its output, or an error with everything it said.
fn run(cmd: &mut Command) -> Result<String, String> {
    let out = cmd.output().map_err(|e| format!("{cmd:?}: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "{cmd:?}: {}\n{}\n{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}
