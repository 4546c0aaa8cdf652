//! README.md's Kontrol walk-through (steps 4 and 5 of "From the introduction"), run as written:
//! the `sh` blocks between its `walkthrough: begin` and `walkthrough: end` markers are read from
//! README.md itself, so the page and this test cannot drift apart. Each command runs in `sh`
//! with `HOME` a fresh directory; `cargo run -p P --bin B -- ARGS` and `cargo run -p P --example
//! E -- ARGS` run the binaries and examples this build made. A command marked `# in a terminal
//! of its own` keeps running in the background; the same command again is a restart (Ctrl-C,
//! that is SIGINT, then the command), which the walk-through must contain. Other commands must
//! succeed (each retried for a while, as a user types them again while a server comes up), and
//! one marked `# prints X` must print the line X. The fixed ports of the page (4000 for Kontrol,
//! 6000 for the kite) become free ones.
//!
//! Before Kontrol had a home of its own, `kitectl register` overwrote the kite.key Kontrol's
//! `--initial` had written; Kontrol, restarted, took alice's identity, and `find` failed with
//! `token: issuer is not trusted: alice`.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use kite_test_kit::bin;
use kite_test_kit::free_port;

const README: &str = include_str!("../../README.md");
const KONTROL: &str = env!("CARGO_BIN_EXE_kontrol");
const KITECTL: &str = env!("CARGO_BIN_EXE_kitectl");

/// One command of the walk-through.
#[derive(Debug, Clone, PartialEq)]
struct Step {
    /// The command line as README.md writes it (continuation lines joined).
    command: String,
    /// Marked `# in a terminal of its own`: a server that keeps running.
    background: bool,
    /// Marked `# prints X`: the line it must print.
    prints: Option<String>,
}

/// The commands of the `sh` blocks between the walk-through markers of `readme`.
fn walkthrough(readme: &str) -> Vec<Step> {
    let begin = readme
        .find("<!-- walkthrough: begin")
        .expect("README.md has no `<!-- walkthrough: begin` marker");
    let end = readme[begin..]
        .find("<!-- walkthrough: end -->")
        .map(|e| begin + e)
        .expect("README.md has no `<!-- walkthrough: end -->` marker");
    let mut steps = Vec::new();
    let mut in_sh = false;
    let mut pending = String::new();
    for line in readme[begin..end].lines() {
        let line = line.trim();
        if line.starts_with("```") {
            in_sh = !in_sh && line == "```sh";
            continue;
        }
        if !in_sh || line.is_empty() || line.starts_with('#') {
            continue;
        }
        if let Some(head) = line.strip_suffix('\\') {
            pending.push_str(head);
            continue;
        }
        pending.push_str(line);
        let full = std::mem::take(&mut pending);
        let (command, comment) = match full.find(" # ") {
            Some(at) => (full[..at].trim(), full[at + 3..].trim()),
            None => (full.trim(), ""),
        };
        steps.push(Step {
            command: command.split_whitespace().collect::<Vec<_>>().join(" "),
            background: comment.contains("in a terminal of its own"),
            prints: comment.strip_prefix("prints ").map(|p| {
                p.split([',', ';', ' '])
                    .next()
                    .unwrap_or_default()
                    .to_owned()
            }),
        });
    }
    steps
}

/// Where the binaries are (`target/<profile>`), with the examples the walk-through runs.
/// `cargo test --workspace` (as scripts/test runs it) has built them fresh. When they are
/// missing (`cargo test -p kontrol` on a fresh target directory) they are built here, with
/// the workspace's bins and examples (minutes, once). Present ones are used as they are, so
/// after editing kite-native's examples alone, `cargo test -p kontrol` runs the old ones:
/// build them (`cargo build --profile test --workspace --examples --bins`) or test the
/// workspace. A nested build is not a no-op (its features and environment differ from the
/// test run's), so it is not run every time.
fn binaries() -> PathBuf {
    let dir = bin::profile_dir();
    assert_eq!(Path::new(KONTROL).parent(), Some(dir.as_path()));
    assert_eq!(Path::new(KITECTL).parent(), Some(dir.as_path()));
    if ["registered", "find"]
        .iter()
        .all(|e| bin::example_path(e).exists())
    {
        return dir;
    }
    let target = dir.parent().unwrap();
    let mut build = Command::new(env!("CARGO"));
    build
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .args(["build", "-q", "--workspace", "--examples", "--bins"])
        .arg("--target-dir")
        .arg(target);
    if dir.file_name().is_some_and(|n| n == "release") {
        build.arg("--release");
    } else {
        build.args(["--profile", "test"]);
    }
    let status = build.status().unwrap();
    assert!(status.success(), "building the examples failed: {build:?}");
    dir
}

/// `cargo run` as the walk-through uses it, mapped to the built binaries.
const PRELUDE: &str = r#"
cargo() {
  if [ "$1" != run ] || [ "$2" != -p ]; then
    echo "walkthrough: not a cargo run -p command: cargo $*" >&2; exit 2
  fi
  case $4 in
    --bin) exe="$WALK_BIN/$5" ;;
    --example) exe="$WALK_BIN/examples/$5" ;;
    *) echo "walkthrough: neither --bin nor --example: cargo $*" >&2; exit 2 ;;
  esac
  shift 5
  if [ "${1-}" = -- ]; then shift; fi
  exec "$exe" "$@"
}
"#;

struct Walk {
    home: PathBuf,
    work: PathBuf,
    bin: PathBuf,
    kontrol_port: u16,
    kite_port: u16,
}

impl Walk {
    /// The README's command, on this walk's ports.
    fn command(&self, step: &Step) -> String {
        step.command
            .replace(":4000", &format!(":{}", self.kontrol_port))
            .replace(":6000", &format!(":{}", self.kite_port))
    }

    fn sh(&self, step: &Step) -> Command {
        let mut c = Command::new("sh");
        c.arg("-c")
            .arg(format!("{PRELUDE}\n{}", self.command(step)))
            .current_dir(&self.work)
            .stdin(Stdio::null());
        for (name, _) in std::env::vars() {
            if name.starts_with("KITE_") || name.starts_with("KONTROL_") {
                c.env_remove(name);
            }
        }
        c.env("HOME", &self.home)
            .env("WALK_BIN", &self.bin)
            .env("KONTROL_PORT", self.kontrol_port.to_string())
            .env("KITE_PORT", self.kite_port.to_string());
        c
    }
}

struct Server {
    step: Step,
    child: Child,
    log: PathBuf,
}

impl Server {
    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Ctrl-C, as in its terminal, then waits for it to end.
    fn interrupt(&mut self) {
        let pid = self.child.id().to_string();
        let _ = Command::new("kill").args(["-INT", &pid]).status();
        let deadline = Instant::now() + Duration::from_secs(10);
        while self.child.try_wait().unwrap().is_none() {
            if Instant::now() > deadline {
                let _ = self.child.kill();
                panic!("`{}` ignored Ctrl-C:\n{}", self.step.command, self.log());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn text(out: &Output) -> String {
    format!(
        "exit {}\nstdout:\n{}\nstderr:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

#[cfg(unix)]
fn mode(path: &Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .permissions()
        .mode()
        & 0o777
}

#[test]
fn the_walkthrough_reads_its_commands_from_readme() {
    let steps = walkthrough(README);
    let commands: Vec<&str> = steps.iter().map(|s| s.command.as_str()).collect();
    assert!(
        commands.iter().any(|c| c.contains("--initial")),
        "{commands:#?}"
    );
    assert!(
        commands.iter().any(|c| c.contains("kitectl -- register")),
        "{commands:#?}"
    );
    assert!(steps.iter().any(|s| s.background), "{steps:#?}");
    assert_eq!(
        steps.iter().rev().find_map(|s| s.prints.as_deref()),
        Some("16"),
        "{steps:#?}"
    );
    // The ports the test moves are the ones the page names.
    assert!(commands.iter().any(|c| c.contains("127.0.0.1:4000")));
    // Continuation lines are joined, comments dropped.
    let parsed = walkthrough(
        "<!-- walkthrough: begin -->\n```sh\na \\\n  b   # in a terminal of its own\n# note\nc # prints 16, then\n```\n```text\nnot a command\n```\n<!-- walkthrough: end -->",
    );
    assert_eq!(
        parsed,
        vec![
            Step {
                command: "a b".into(),
                background: true,
                prints: None
            },
            Step {
                command: "c".into(),
                background: false,
                prints: Some("16".into())
            },
        ]
    );
}

#[test]
fn the_readme_walkthrough_works_as_written_and_survives_a_kontrol_restart() {
    let steps = walkthrough(README);
    let root = std::env::temp_dir().join(format!("kite-walkthrough-{}", uuid::Uuid::new_v4()));
    let walk = Walk {
        home: root.join("home"),
        work: root.join("checkout"),
        bin: binaries(),
        kontrol_port: free_port(),
        kite_port: free_port(),
    };
    std::fs::create_dir_all(&walk.home).unwrap();
    std::fs::create_dir_all(&walk.work).unwrap();
    // The walk-through starts from a home with no ~/.kite at all.
    let mut servers: Vec<Server> = Vec::new();
    let mut restarts = 0;
    let mut printed = Vec::new();
    for (i, step) in steps.iter().enumerate() {
        if step.background {
            if let Some(at) = servers.iter().position(|s| s.step.command == step.command) {
                let mut old = servers.remove(at);
                old.interrupt();
                restarts += 1;
            }
            let log = root.join(format!("server-{i}.log"));
            let file = std::fs::File::create(&log).unwrap();
            let child = walk
                .sh(step)
                .stdout(file.try_clone().unwrap())
                .stderr(file)
                .spawn()
                .unwrap();
            servers.push(Server {
                step: step.clone(),
                child,
                log,
            });
            continue;
        }
        // A server that has already exited will not come up: say so with its log.
        for s in &mut servers {
            if let Some(status) = s.child.try_wait().unwrap() {
                panic!("`{}` exited ({status}):\n{}", s.step.command, s.log());
            }
        }
        let deadline = Instant::now() + Duration::from_secs(30);
        let out = loop {
            let out = walk.sh(step).output().unwrap();
            let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
            let ok = out.status.success()
                && step
                    .prints
                    .as_ref()
                    .is_none_or(|p| stdout.lines().any(|l| l.trim() == p));
            if ok {
                break out;
            }
            if Instant::now() > deadline {
                let logs: Vec<String> = servers
                    .iter()
                    .map(|s| format!("--- `{}`:\n{}", s.step.command, s.log()))
                    .collect();
                panic!(
                    "`{}` did not succeed{}:\n{}\n{}",
                    step.command,
                    step.prints
                        .as_ref()
                        .map(|p| format!(" printing {p}"))
                        .unwrap_or_default(),
                    text(&out),
                    logs.join("\n")
                );
            }
            std::thread::sleep(Duration::from_millis(250));
        };
        printed.push((
            step.command.clone(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
        ));
    }
    assert!(
        restarts >= 1,
        "the walk-through must restart Kontrol (the same command, in a terminal of its own, twice)"
    );
    for s in &mut servers {
        assert!(
            s.child.try_wait().unwrap().is_none(),
            "`{}` exited:\n{}",
            s.step.command,
            s.log()
        );
    }
    let query = printed
        .iter()
        .find(|(c, _)| c.contains("kitectl -- query"))
        .map(|(_, out)| out.clone())
        .unwrap_or_default();
    assert!(query.contains("first"), "kitectl query: {query}");

    // Kontrol's kite key and the user's are two files, each with its own subject.
    let kite = walk.home.join(".kite");
    let kontrol_home = kite.join("kontrol");
    let own = kite_native::kitekey::read_from(&kontrol_home.join("kite.key")).unwrap();
    let user = kite_native::kitekey::read_from(&kite.join("kite.key")).unwrap();
    assert_eq!(own.claims.sub, "kontrol");
    assert_eq!(user.claims.sub, "alice");
    assert_eq!(user.claims.iss, "kontrol");
    #[cfg(unix)]
    {
        assert_eq!(mode(&kite), 0o700);
        assert_eq!(mode(&kontrol_home), 0o700);
        assert_eq!(mode(&kontrol_home.join("kontrol.db")), 0o600);
        assert_eq!(mode(&kontrol_home.join("kite.key")) & 0o077, 0);
        assert_eq!(mode(&kontrol_home.join("kontrol.pem")) & 0o077, 0);
    }
    // Nothing is left in the directory the commands ran in (the checkout, for a user).
    let left: Vec<_> = std::fs::read_dir(&walk.work)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert!(left.is_empty(), "left in the checkout: {left:?}");

    drop(servers);
    let _ = std::fs::remove_dir_all(&root);
}
