//! `kite.prompt` and `kite.getPass` against hostile callers, over real sockets, on a real
//! `terminal-kite` process: once with no terminal at all (stdin a pipe nobody writes, no
//! controlling terminal), once under a pseudo-terminal (util-linux `script`) where nobody types.
//! A flood of 10,000 prompts must leave every other method answering; prompts need
//! credentials even where the kite's other methods do not; they take turns on the terminal, time
//! out with a `timeout` error, and a line typed while a prompt is on screen is its answer.

mod common;

use std::process::Stdio;
use std::time::{Duration, Instant};

use common::within;
use futures_util::StreamExt;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use kite_native::transport::Transport;
use kite_native::{Auth, Client, ErrorKind, Kite, KiteError, Request};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::process::{Child, ChildStdin, Command};
use tokio::sync::watch;
use tokio::task::JoinHandle;

const TERMINAL_KITE: &str = env!("CARGO_BIN_EXE_terminal-kite");
const KONTROL_PEM: &str = include_str!("../../testdata/keys/kontrol.pem");
const KONTROL_PUB: &str = include_str!("../../testdata/keys/kontrol.pub.pem");

/// Prompts sent in each flood.
const FLOOD: usize = 10_000;
/// Connections the flood is spread over.
const FLOOD_CONNECTIONS: usize = 4;
/// Calls of one flood connection in flight at once (under the per-connection budget).
const FLOOD_IN_FLIGHT: usize = 256;
/// Upper bound for a flood to be answered.
const FLOOD_BOUND: Duration = Duration::from_secs(120);

/// A running `terminal-kite` with its output so far.
struct TerminalKite {
    _child: Child,
    stdin: ChildStdin,
    output: watch::Receiver<String>,
    url: String,
}

impl TerminalKite {
    /// Starts `cmd` (which runs `terminal-kite`, perhaps through `setsid` or `script`) with a
    /// pipe as stdin that only [`TerminalKite::type_line`] writes to.
    async fn start(mut cmd: Command) -> TerminalKite {
        common::init_tracing();
        for (name, _) in std::env::vars() {
            if name.starts_with("KITE_") {
                cmd.env_remove(name);
            }
        }
        cmd.env("KITE_IP", "127.0.0.1")
            .env("KITE_PORT", "0")
            .env("KITE_KONTROL_USER", "kontrol")
            .env("KITE_KONTROL_KEY", KONTROL_PUB)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true);
        let mut child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
        let stdin = child.stdin.take().unwrap();
        let mut stdout = child.stdout.take().unwrap();
        let (tx, output) = watch::channel(String::new());
        tokio::spawn(async move {
            let mut buf = [0u8; 4096];
            while let Ok(n @ 1..) = stdout.read(&mut buf).await {
                tx.send_modify(|text| text.push_str(&String::from_utf8_lossy(&buf[..n])));
            }
        });
        let mut kite = TerminalKite {
            _child: child,
            stdin,
            output,
            url: String::new(),
        };
        let at = kite.wait_for("the kite to listen", 0, "listening ").await;
        let end = kite.wait_for("the kite's URL", at, "/kite").await;
        kite.url = kite.text()[at..end].to_owned();
        kite
    }

    /// Everything the kite wrote so far.
    fn text(&self) -> String {
        self.output.borrow().clone()
    }

    /// Waits until `pattern` appears in the output at or after byte `from`; returns the offset
    /// just past it.
    async fn wait_for(&self, what: &str, from: usize, pattern: &str) -> usize {
        let mut rx = self.output.clone();
        let found = within(
            what,
            rx.wait_for(|text| text.get(from..).is_some_and(|t| t.contains(pattern))),
        )
        .await
        .map(|text| from + text[from..].find(pattern).unwrap() + pattern.len());
        found.unwrap_or_else(|_| panic!("the kite exited waiting for {what}: {}", self.text()))
    }

    /// Types `line` and Enter.
    async fn type_line(&mut self, line: &str) {
        self.stdin
            .write_all(format!("{line}\n").as_bytes())
            .await
            .unwrap();
        self.stdin.flush().await.unwrap();
    }
}

fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

/// A token Kontrol would give alice for calling the terminal kite.
fn token() -> Auth {
    let claims = json!({
        "iss": "kontrol",
        "sub": "alice",
        "aud": "/unknown/unknown/terminal",
        "iat": now() - 300,
        "nbf": now() - 300,
        "exp": now() + 3600,
        "jti": "terminal-test",
    });
    let key = EncodingKey::from_rsa_pem(KONTROL_PEM.as_bytes()).unwrap();
    Auth::new(
        "token",
        jsonwebtoken::encode(&Header::new(Algorithm::RS256), &claims, &key).unwrap(),
    )
}

/// A client kite dialed to `url`, sending `auth` with every call.
async fn connect(url: &str, auth: Option<Auth>) -> (Kite, Client) {
    let kite = Kite::with_config("tester", "1.0.0", common::config()).unwrap();
    let client = kite.new_client(url);
    client.set_auth(auth);
    within("dial", client.dial()).await.unwrap();
    (kite, client)
}

type Answers = Vec<(&'static str, Result<Value, kite_native::ClientError>)>;

/// Sends `total` calls, cycling through `methods`, over `clients`, and collects the answers.
fn flood(
    clients: &[Client],
    total: usize,
    methods: &'static [&'static str],
) -> JoinHandle<Answers> {
    let per_client = total / clients.len();
    let tasks: Vec<_> = clients
        .iter()
        .enumerate()
        .map(|(c, client)| {
            let client = client.clone();
            tokio::spawn(async move {
                futures_util::stream::iter(0..per_client)
                    .map(|i| {
                        let client = client.clone();
                        let method = methods[i % methods.len()];
                        async move {
                            let prompt = format!("flood {c}.{i}> ");
                            (method, client.call::<Value>(method, (prompt,)).await)
                        }
                    })
                    .buffer_unordered(FLOOD_IN_FLIGHT)
                    .collect::<Answers>()
                    .await
            })
        })
        .collect();
    tokio::spawn(async move {
        let mut answers = Answers::new();
        for t in tasks {
            answers.extend(t.await.unwrap());
        }
        answers
    })
}

/// `kite.systemInfo`, `kite.ping` and a user method answer on `client`.
async fn others_answer(client: &Client) {
    let info: Value = within(
        "kite.systemInfo while prompts are in flight",
        client.call("kite.systemInfo", ()),
    )
    .await
    .unwrap();
    assert_eq!(info["state"], "RUNNING", "{info}");
    let pong: String = within(
        "kite.ping while prompts are in flight",
        client.call("kite.ping", ()),
    )
    .await
    .unwrap();
    assert_eq!(pong, "pong");
    let n: f64 = within(
        "square while prompts are in flight",
        client.call("square", (4,)),
    )
    .await
    .unwrap();
    assert_eq!(n, 16.0);
}

/// Checks that the other methods answer on `client`, again and again, until `flood` is
/// answered; returns its answers.
async fn others_answer_during(client: &Client, flood: JoinHandle<Answers>) -> Answers {
    let started = Instant::now();
    let mut rounds = 0;
    loop {
        others_answer(client).await;
        rounds += 1;
        if flood.is_finished() || started.elapsed() > FLOOD_BOUND {
            break;
        }
    }
    let answers = tokio::time::timeout(FLOOD_BOUND, flood)
        .await
        .expect("timed out: the flood of prompts was not answered")
        .unwrap();
    eprintln!(
        "{} prompts answered; the other methods answered {rounds} times meanwhile",
        answers.len()
    );
    assert_eq!(answers.len(), FLOOD);
    answers
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_terminal_a_prompt_flood_is_refused_and_every_other_method_answers() {
    // No controlling terminal (setsid), and stdin a pipe that never delivers a line.
    let mut cmd = Command::new("setsid");
    cmd.arg(TERMINAL_KITE)
        .args(["--disable-authentication", "--exit-after-secs", "300"]);
    let kite = TerminalKite::start(cmd).await;
    let mut clients = Vec::new();
    let mut keep = Vec::new();
    for _ in 0..FLOOD_CONNECTIONS {
        let (k, c) = connect(&kite.url, Some(token())).await;
        keep.push(k);
        clients.push(c);
    }
    // Authentication is off on this kite: this client sends no credentials.
    let (_open_kite, open) = connect(&kite.url, None).await;

    let answers = others_answer_during(
        &open,
        flood(&clients, FLOOD, &["kite.prompt", "kite.getPass"]),
    )
    .await;
    for (method, answer) in &answers {
        let e = answer
            .as_ref()
            .expect_err("a prompt without a terminal must fail");
        assert_eq!(e.kind(), ErrorKind::Generic, "{method}: {e}");
        let why = match *method {
            "kite.prompt" => "kite.prompt: no terminal attached (stdin is not a terminal)",
            _ => "kite.getPass: no terminal attached (no controlling terminal",
        };
        assert!(e.to_string().starts_with(why), "{method}: {e}");
    }

    // Every other method of this kite is open, the terminal ones are not.
    for method in ["kite.prompt", "kite.getPass"] {
        let e = within(method, open.call::<Value>(method, ("who are you? ",)))
            .await
            .expect_err("an unauthenticated prompt must be refused");
        assert_eq!(e.kind(), ErrorKind::Authentication, "{method}: {e}");
    }
    others_answer(&open).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_a_terminal_prompts_take_turns_time_out_and_get_the_line_typed_for_them() {
    // A pseudo-terminal for stdin, stdout and the controlling terminal; what the test writes
    // to `script`'s stdin is typed on it, and what the kite writes on it comes out of
    // `script`'s stdout.
    let mut cmd = Command::new("script");
    cmd.args([
        "-qfec",
        &format!("exec '{TERMINAL_KITE}' --prompt-timeout-ms 5000 --exit-after-secs 300"),
        "/dev/null",
    ]);
    let mut kite = TerminalKite::start(cmd).await;
    let mut clients = Vec::new();
    let mut keep = Vec::new();
    for _ in 0..FLOOD_CONNECTIONS {
        let (k, c) = connect(&kite.url, Some(token())).await;
        keep.push(k);
        clients.push(c);
    }
    let (_asker_kite, asker) = connect(&kite.url, Some(token())).await;

    // Nobody types: one prompt of the flood is on screen, waiting.
    let flood = flood(&clients, FLOOD, &["kite.prompt", "kite.getPass"]);
    kite.wait_for("a prompt of the flood on screen", 0, "flood ")
        .await;
    let answers = others_answer_during(&asker, flood).await;
    let (mut unanswered, mut busy, mut refused) = (0, 0, 0);
    for (method, answer) in &answers {
        let e = answer.as_ref().expect_err("nobody answered");
        match e.kind() {
            ErrorKind::Timeout if e.to_string().ends_with(": no answer within 5s") => {
                unanswered += 1
            }
            ErrorKind::Timeout if e.to_string().contains(": the terminal stayed busy for 5s") => {
                busy += 1;
            }
            ErrorKind::RequestLimit
                if e.to_string()
                    .contains("prompts are already waiting for the terminal") =>
            {
                refused += 1;
            }
            _ => panic!("{method}: {e}"),
        }
    }
    eprintln!("{unanswered} prompts unanswered, {busy} found the terminal busy, {refused} refused");
    // One at a time on screen, a few waiting in line behind it, the rest refused at once.
    let waiting = kite_native::Config::default().max_waiting_prompts;
    assert!(unanswered >= 1, "no prompt was shown");
    assert!(unanswered + busy <= 1 + waiting, "too many prompts waited");
    assert!(refused >= FLOOD - 1 - waiting);

    // A password is read with echo off.
    let from = kite.text().len();
    let ask = asker.clone();
    let call =
        tokio::spawn(async move { ask.call::<String>("kite.getPass", ("password? ",)).await });
    let shown = kite
        .wait_for("the password prompt", from, "password? ")
        .await;
    kite.type_line("s3cret").await;
    let password = within("kite.getPass", call).await.unwrap().unwrap();
    assert_eq!(password, "s3cret");
    within(
        "kite.print",
        asker.call::<Value>("kite.print", ("<after the password>\n",)),
    )
    .await
    .unwrap();
    let end = kite
        .wait_for("what kite.print wrote", shown, "<after the password>")
        .await;
    let echoed = &kite.text()[shown..end];
    assert!(
        !echoed.contains("s3cret"),
        "the password was echoed: {echoed:?}"
    );

    // An unanswered password prompt times out and gives the terminal back as it was.
    let from = kite.text().len();
    let ask = asker.clone();
    let call =
        tokio::spawn(async move { ask.call::<String>("kite.getPass", ("ignored? ",)).await });
    kite.wait_for("the ignored password prompt", from, "ignored? ")
        .await;
    let e = within("an unanswered kite.getPass", call)
        .await
        .unwrap()
        .expect_err("nobody answered");
    assert_eq!(e.kind(), ErrorKind::Timeout, "{e}");
    assert_eq!(e.to_string(), "kite.getPass: no answer within 5s");

    // A line typed when no prompt is on screen (its prompt gave up) is echoed again, and is
    // not the answer to the next prompt: only what is typed while a prompt is shown is.
    let from = kite.text().len();
    kite.type_line("stale").await;
    kite.wait_for("the echo of a line typed for nobody", from, "stale")
        .await;
    let from = kite.text().len();
    let ask = asker.clone();
    let call =
        tokio::spawn(async move { ask.call::<String>("kite.prompt", ("your name? ",)).await });
    kite.wait_for("the prompt", from, "your name? ").await;
    kite.type_line("bob").await;
    let name = within("kite.prompt", call).await.unwrap().unwrap();
    assert_eq!(name, "bob");
    others_answer(&asker).await;
}

#[tokio::test]
async fn prompts_need_credentials_even_from_trusted_peers_and_can_be_switched_off() {
    // b calls back, on the same connection, whoever calls its `ask_back`.
    let b = common::TestKite::start().await;
    b.kite.handle("ask_back", |req: Request| async move {
        let method: String = req.arg()?;
        Ok::<_, KiteError>(
            match req.client.call::<Value>(&method, ("who are you? ",)).await {
                Ok(v) => json!({ "ok": v }),
                Err(e) => json!({ "type": e.kind().as_str(), "message": e.to_string() }),
            },
        )
    });
    // a has authentication off and trusts the peer it dials: b's calls back need no
    // credentials, except the terminal ones.
    let a = Kite::with_config("a", "1.0.0", common::config()).unwrap();
    let to_b = a.new_client(&b.url);
    to_b.set_trusted(true);
    within("dial b", to_b.dial()).await.unwrap();
    for method in ["kite.prompt", "kite.getPass"] {
        let answer: Value = within(method, to_b.call("ask_back", (method,)))
            .await
            .unwrap();
        assert_eq!(answer["type"], "authenticationError", "{method}: {answer}");
    }
    let answer: Value = within(
        "kite.systemInfo",
        to_b.call("ask_back", ("kite.systemInfo",)),
    )
    .await
    .unwrap();
    assert_eq!(answer["ok"]["state"], "RUNNING", "{answer}");

    // Switched off, they are not served at all.
    let mut config = common::config();
    config.serve_prompts = false;
    let off = common::TestKite::start_with(config).await;
    assert!(off.kite.method("kite.prompt").is_none());
    let (_k, client) = common::client_for(&off.url, Transport::WebSocket).await;
    for method in ["kite.prompt", "kite.getPass"] {
        let e = within(method, client.call::<Value>(method, ("who are you? ",)))
            .await
            .expect_err("not served");
        assert_eq!(e.kind(), ErrorKind::MethodNotFound, "{method}: {e}");
    }
    let pong: String = within("kite.ping", client.call("kite.ping", ()))
        .await
        .unwrap();
    assert_eq!(pong, "pong");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_a_terminal_a_prompt_whose_caller_went_away_gives_the_terminal_up() {
    // Prompts wait two minutes here: the next one must not have to wait that long.
    let mut cmd = Command::new("script");
    cmd.args([
        "-qfec",
        &format!("exec '{TERMINAL_KITE}' --prompt-timeout-ms 120000 --exit-after-secs 300"),
        "/dev/null",
    ]);
    let mut kite = TerminalKite::start(cmd).await;
    let (_k1, leaving) = connect(&kite.url, Some(token())).await;
    let (_k2, staying) = connect(&kite.url, Some(token())).await;

    let ask = leaving.clone();
    let call = tokio::spawn(async move { ask.call::<String>("kite.prompt", ("first? ",)).await });
    kite.wait_for("the first prompt", 0, "first? ").await;
    // Its caller goes away without an answer.
    leaving.close();
    let e = within("the abandoned prompt", call)
        .await
        .unwrap()
        .expect_err("its connection closed");
    assert_eq!(e.kind(), ErrorKind::Disconnect, "{e}");
    let ask = staying.clone();
    let from = kite.text().len();
    let second =
        tokio::spawn(async move { ask.call::<String>("kite.prompt", ("second? ",)).await });
    // Well before the first prompt's two minutes.
    kite.wait_for("the next prompt", from, "second? ").await;
    kite.type_line("bob").await;
    let name = within("kite.prompt", second).await.unwrap().unwrap();
    assert_eq!(name, "bob");
}
