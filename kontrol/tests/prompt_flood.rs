//! A flood of `kite.prompt` on a running `kontrol` (the binary, on its embedded store, with
//! stdin a pipe that never delivers a line, as when started from a shell): Kontrol does not
//! serve the terminal built-ins, so every call is `methodNotFound`, and `register` and
//! `getKites` go on answering meanwhile.

use std::io::BufRead;
use std::path::PathBuf;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use kite_native::auth::KeyPair;
use kite_native::core::KontrolQuery;
use kite_native::core::auth::Claims;
use kite_native::{Auth, Client, Config, ErrorKind, Kite};
use kite_test_kit::kites::add_square;
use kite_test_kit::net::temp_dir;
use kite_test_kit::within;
use serde_json::Value;

const KONTROL: &str = env!("CARGO_BIN_EXE_kontrol");
const KEYS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../testdata/keys");

/// Prompts sent in the flood, over a few connections, a bounded number in flight on each.
const FLOOD: usize = 10_000;
const FLOOD_CONNECTIONS: usize = 4;
const FLOOD_IN_FLIGHT: usize = 256;
const FLOOD_BOUND: Duration = Duration::from_secs(120);

/// A `kontrol` process, killed when dropped.
struct Running {
    child: Child,
    /// Held open and never written: a read of stdin blocks.
    _stdin: ChildStdin,
    url: String,
    home: PathBuf,
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.home);
    }
}

fn kontrol_command(home: &PathBuf) -> Command {
    let mut c = Command::new(KONTROL);
    for (name, _) in std::env::vars() {
        if name.starts_with("KITE_") || name.starts_with("KONTROL_") {
            c.env_remove(name);
        }
    }
    c.env("KITE_HOME", home)
        .env("KITE_LOG_LEVEL", "info")
        .env("KONTROL_PUBLICKEYFILE", format!("{KEYS}/kontrol.pub.pem"))
        .env("KONTROL_PRIVATEKEYFILE", format!("{KEYS}/kontrol.pem"))
        .env("KONTROL_IP", "127.0.0.1")
        .env("KONTROL_PORT", "0")
        .env("KONTROL_DATAFILE", home.join("kontrol.db"));
    c
}

/// `kontrol --initial`, then `kontrol` serving; returns once it listens.
async fn start_kontrol() -> Running {
    let home = temp_dir("kontrol-prompt-flood");
    let initial = kontrol_command(&home)
        .args(["--initial", "--username", "kontrol"])
        .output()
        .unwrap();
    assert!(initial.status.success(), "kontrol --initial: {initial:?}");
    let mut child = kontrol_command(&home)
        .stdin(Stdio::piped())
        .stdout(Stdio::inherit())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stdin = child.stdin.take().unwrap();
    // Its log (on stderr, as Go kite's) says where it serves; the rest of the log is drained.
    let log = child.stderr.take().unwrap();
    let (tx, rx) = tokio::sync::oneshot::channel();
    std::thread::spawn(move || {
        let mut tx = Some(tx);
        for line in std::io::BufReader::new(log).lines() {
            let Ok(line) = line else { break };
            if let Some(at) = line.find("serving at http://") {
                let url = line[at + "serving at ".len()..]
                    .split_whitespace()
                    .next()
                    .unwrap_or_default()
                    .to_owned();
                if let Some(tx) = tx.take() {
                    let _ = tx.send(url);
                }
            }
        }
    });
    let url = within("kontrol to listen", rx)
        .await
        .expect("kontrol exited before it listened");
    Running {
        child,
        _stdin: stdin,
        url,
        home,
    }
}

/// A kite key for `username` signed by the test Kontrol's key, as `kite_key_for` makes them.
fn kite_key(kontrol_url: &str, username: &str) -> String {
    let key = KeyPair {
        public_pem: std::fs::read_to_string(format!("{KEYS}/kontrol.pub.pem")).unwrap(),
        private_pem: std::fs::read_to_string(format!("{KEYS}/kontrol.pem")).unwrap(),
    };
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    let claims = Claims {
        iss: "kontrol".into(),
        sub: username.into(),
        iat: Some(now - 300),
        jti: uuid::Uuid::new_v4().to_string(),
        kontrol_url: kontrol_url.into(),
        kontrol_key: key.public_pem.trim().to_owned(),
        ..Claims::default()
    };
    key.sign(&claims).unwrap()
}

/// A kite of `username` configured from its kite key, as `Config::get` would.
fn kite_of(kontrol_url: &str, name: &str, username: &str) -> Kite {
    let mut cfg = Config::default();
    cfg.apply_kite_key(&kite_native::kitekey::parse(&kite_key(kontrol_url, username)).unwrap());
    cfg.kontrol_url = kontrol_url.into();
    cfg.ip = [127, 0, 0, 1].into();
    cfg.port = 0;
    cfg.environment = "test".into();
    Kite::with_config(name, "1.0.0", cfg).unwrap()
}

type Answers = Vec<(&'static str, Result<Value, kite_native::ClientError>)>;

async fn flood(clients: Vec<Client>) -> Answers {
    let per_client = FLOOD / clients.len();
    let tasks: Vec<_> = clients
        .into_iter()
        .map(|client| {
            tokio::spawn(async move {
                futures_util::stream::iter(0..per_client)
                    .map(|i| {
                        let client = client.clone();
                        // Mostly prompts, a password prompt now and then.
                        let method = if i % 100 == 0 {
                            "kite.getPass"
                        } else {
                            "kite.prompt"
                        };
                        async move { (method, client.call::<Value>(method, ("> ",)).await) }
                    })
                    .buffer_unordered(FLOOD_IN_FLIGHT)
                    .collect::<Answers>()
                    .await
            })
        })
        .collect();
    let mut answers = Answers::new();
    for t in tasks {
        answers.extend(t.await.unwrap());
    }
    answers
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kontrol_does_not_serve_prompts_and_goes_on_registering_during_a_flood() {
    let kontrol = start_kontrol().await;

    // alice's kite registers; another of her kites looks it up.
    let first = kite_of(&kontrol.url, "first", "alice");
    add_square(&first);
    let server = first.clone();
    tokio::spawn(async move { server.run().await.unwrap() });
    let first_url = format!("http://{}/kite", within("first up", first.ready()).await);
    within("register", first.register(&first_url))
        .await
        .unwrap();
    let second = kite_of(&kontrol.url, "second", "alice");
    let query = KontrolQuery {
        username: "alice".into(),
        environment: "test".into(),
        name: "first".into(),
        ..Default::default()
    };

    // mallory holds a valid kite key and floods Kontrol with prompts.
    let mallory = kite_of(&kontrol.url, "mallory", "mallory");
    let key = mallory.kite_key();
    let mut clients = Vec::new();
    for _ in 0..FLOOD_CONNECTIONS {
        let c = mallory.new_client(&kontrol.url);
        c.set_auth(Some(Auth::new("kiteKey", key.clone())));
        within("dial kontrol", c.dial()).await.unwrap();
        clients.push(c);
    }
    let flood = tokio::spawn(flood(clients));

    let started = Instant::now();
    let mut rounds = 0;
    loop {
        let again = within(
            "register while prompts are in flight",
            first.register(&first_url),
        )
        .await
        .unwrap();
        assert_eq!(again.url, first_url);
        let found = within(
            "getKites while prompts are in flight",
            second.get_kites(&query),
        )
        .await
        .unwrap();
        assert_eq!(found.len(), 1);
        assert_eq!(found[0].url(), first_url);
        rounds += 1;
        if flood.is_finished() || started.elapsed() > FLOOD_BOUND {
            break;
        }
    }
    let answers = tokio::time::timeout(FLOOD_BOUND, flood)
        .await
        .expect("timed out: the flood of prompts was not answered")
        .unwrap();
    eprintln!("register and getKites answered {rounds} times during the flood");
    assert_eq!(answers.len(), FLOOD);
    for (method, answer) in &answers {
        let e = answer.as_ref().expect_err("Kontrol must not prompt");
        assert_eq!(e.kind(), ErrorKind::MethodNotFound, "{method}: {e}");
    }
    first.close();
}
