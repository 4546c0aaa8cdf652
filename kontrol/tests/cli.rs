//! The `kontrol` and `kitectl` binaries, as a user runs them: `kontrol --initial` writes
//! Kontrol's kite.key; `kontrol` serves on the embedded store; `kitectl register` gets a kite
//! key for a user; a kite of that user registers; `kitectl showkey`, `query`, `tell` and
//! `ping` see and call it.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

use kite_native::{Config, Kite, KiteError, Request};

const KONTROL: &str = env!("CARGO_BIN_EXE_kontrol");
const KITECTL: &str = env!("CARGO_BIN_EXE_kitectl");
const KEYS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../testdata/keys");

fn temp_dir(what: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("{what}-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Runs a command to completion (bounded), failing the test with its output if it fails.
fn run(cmd: &mut Command) -> String {
    let child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let out = wait_output(child, Duration::from_secs(30));
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{cmd:?} failed: {stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

fn wait_output(mut child: Child, limit: Duration) -> Output {
    let deadline = std::time::Instant::now() + limit;
    loop {
        if child.try_wait().unwrap().is_some() {
            return child.wait_with_output().unwrap();
        }
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            panic!("command hung: {:?}", child.wait_with_output().unwrap());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn kitectl(home: &Path) -> Command {
    let mut c = Command::new(KITECTL);
    c.env("KITE_HOME", home).env_remove("KITE_KEY");
    c
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kontrol_and_kitectl_from_the_shell() {
    let kontrol_home = temp_dir("kontrol-home");
    let user_home = temp_dir("user-home");
    let port = free_port();
    let url = format!("http://127.0.0.1:{port}/kite");
    let keys = |c: &mut Command| {
        c.env("KITE_HOME", &kontrol_home)
            .env("KONTROL_PUBLICKEYFILE", format!("{KEYS}/kontrol.pub.pem"))
            .env("KONTROL_PRIVATEKEYFILE", format!("{KEYS}/kontrol.pem"))
            .env("KONTROL_KONTROLURL", &url)
            .env("KONTROL_PORT", port.to_string())
            .env("KONTROL_IP", "127.0.0.1");
    };
    let mut initial = Command::new(KONTROL);
    keys(&mut initial);
    let out = run(initial.args(["--initial", "--username", "kontrol"]));
    assert!(out.contains("kite.key for kontrol written"), "{out}");
    // Kontrol's own kite.key is in its own home, $KITE_HOME/kontrol, and no store was made.
    assert!(kontrol_home.join("kontrol/kite.key").exists());
    assert!(!kontrol_home.join("kite.key").exists());
    assert!(!kontrol_home.join("kontrol/kontrol.db").exists());

    let mut serve = Command::new(KONTROL);
    keys(&mut serve);
    serve
        .arg("--open-registration")
        .env("KONTROL_DATAFILE", kontrol_home.join("kontrol.db"))
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    let _kontrol = Killed(serve.spawn().unwrap());
    // Up when kitectl can ping it.
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        let ping = kitectl(&user_home).args(["ping", &url]).output().unwrap();
        if ping.status.success() {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "kontrol did not come up"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    let out =
        run(kitectl(&user_home).args(["register", "--kontrol-url", &url, "--username", "alice"]));
    assert!(out.contains("kite.key written"), "{out}");
    let show = run(kitectl(&user_home).arg("showkey"));
    assert!(show.contains("sub        alice"), "{show}");
    assert!(show.contains(&format!("kontrolURL {url}")), "{show}");

    // A kite of alice's, configured from her kite.key, registers itself.
    let key = kite_native::kitekey::read_from(&user_home.join("kite.key")).unwrap();
    let mut cfg = Config::default();
    cfg.apply_kite_key(&key);
    cfg.ip = [127, 0, 0, 1].into();
    cfg.environment = "test".into();
    let first = Kite::with_config("first", "1.0.0", cfg).unwrap();
    first.handle("square", |req: Request| async move {
        let n: f64 = req.arg()?;
        Ok::<_, KiteError>(n * n)
    });
    let server = first.clone();
    tokio::spawn(async move { server.run().await.unwrap() });
    let addr = first.ready().await;
    let first_url = format!("http://{addr}/kite");
    first.register(&first_url).await.unwrap();

    let table =
        run(kitectl(&user_home).args(["query", "--environment", "test", "--name", "first"]));
    assert!(
        table.contains("first") && table.contains(&first_url),
        "{table}"
    );
    let json = run(kitectl(&user_home).args(["query", "--environment", "test", "--json"]));
    let list: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(list[0]["kite"]["name"], "first");
    assert_eq!(list[0]["url"], first_url);

    let answer = run(kitectl(&user_home).args(["tell", &first_url, "square", "4"]));
    assert_eq!(answer.trim(), "16");
    let pong = run(kitectl(&user_home).args(["ping", &first_url]));
    assert!(pong.starts_with("pong"), "{pong}");

    // Errors are clear and exit non-zero.
    let bad = kitectl(&user_home)
        .args(["tell", &first_url, "nope"])
        .output()
        .unwrap();
    assert!(!bad.status.success());
    assert!(
        String::from_utf8_lossy(&bad.stderr).contains("nope"),
        "{bad:?}"
    );

    first.close();
    let _ = std::fs::remove_dir_all(&kontrol_home);
    let _ = std::fs::remove_dir_all(&user_home);
}
