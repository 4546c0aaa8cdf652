//! The `kontrol` and `kitectl` binaries, as a user runs them: `kontrol --initial` writes
//! Kontrol's kite.key; `kontrol` serves on the embedded store; `kitectl register` gets a kite
//! key for a user; a kite of that user registers; `kitectl showkey`, `query`, `tell` and
//! `ping` see and call it; `kitectl keys` lists, adds and deletes Kontrol's key pairs.

use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

use kite_native::{Config, Kite};
use kite_test_kit::free_port;
use kite_test_kit::kites::add_square;
use kite_test_kit::net::temp_dir;

const KONTROL: &str = env!("CARGO_BIN_EXE_kontrol");
const KITECTL: &str = env!("CARGO_BIN_EXE_kitectl");
const KEYS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../testdata/keys");

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
    add_square(&first);
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

    // Key pairs, managed with Kontrol's own kite.key (its home's): the configured pair signs.
    let own = kontrol_home.join("kontrol");
    let table = run(kitectl(&own).args(["keys", "list"]));
    assert!(table.contains("* default"), "{table}");
    let out = run(kitectl(&own).args(["keys", "add", "--id", "second", "--current"]));
    assert!(out.contains("key pair second added, signing now"), "{out}");
    let out = run(kitectl(&own).args([
        "keys",
        "add",
        "--id",
        "given",
        "--public-key-file",
        &format!("{KEYS}/other.pub.pem"),
        "--private-key-file",
        &format!("{KEYS}/other.pem"),
    ]));
    assert!(out.contains("key pair given added"), "{out}");
    let json = run(kitectl(&own).args(["keys", "list", "--json"]));
    let pairs: serde_json::Value = serde_json::from_str(&json).unwrap();
    let current: Vec<&str> = pairs
        .as_array()
        .unwrap()
        .iter()
        .filter(|p| p["current"] == true)
        .map(|p| p["id"].as_str().unwrap())
        .collect();
    assert_eq!(current, ["second"], "{json}");
    assert_eq!(pairs.as_array().unwrap().len(), 3, "{json}");
    let out = run(kitectl(&own).args(["keys", "delete", "default"]));
    assert!(out.contains("key pair default deleted"), "{out}");
    // The signing pair stays; alice is not Kontrol's user.
    for (home, args, says) in [
        (&own, ["keys", "delete", "second"], "signing pair"),
        (&user_home, ["keys", "list", ""], "Kontrol's user"),
    ] {
        let args: Vec<&str> = args.into_iter().filter(|a| !a.is_empty()).collect();
        let bad = kitectl(home).args(&args).output().unwrap();
        assert!(!bad.status.success(), "{args:?}");
        let err = String::from_utf8_lossy(&bad.stderr);
        assert!(err.contains(says), "{args:?}: {err}");
    }
    // alice's kite key, of the deleted pair, still works: Kontrol re-keys it.
    let table =
        run(kitectl(&user_home).args(["query", "--environment", "test", "--name", "first"]));
    assert!(table.contains(&first_url), "{table}");

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

/// `kontrol` with the test's environment only: no KITE_* or KONTROL_* of the caller.
fn kontrol(kite_home: &Path) -> Command {
    let mut c = Command::new(KONTROL);
    for (name, _) in std::env::vars() {
        if name.starts_with("KITE_") || name.starts_with("KONTROL_") {
            c.env_remove(name);
        }
    }
    c.env("KITE_HOME", kite_home)
        .env("KONTROL_IP", "127.0.0.1")
        .env("KONTROL_PORT", "0");
    c
}

/// The run failed with one line on stderr, `kontrol: ...`, and no `Debug` output in it.
fn failed_with_sentence(out: &Output) -> String {
    assert!(!out.status.success(), "{out:?}");
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    let lines: Vec<&str> = stderr.lines().collect();
    assert_eq!(lines.len(), 1, "not one line: {stderr}");
    let line = lines[0];
    assert!(line.starts_with("kontrol: "), "{line}");
    for debug in ["{", "}", "kind:", "Os {", "Io {", "Some(", "Error("] {
        assert!(!line.contains(debug), "Debug output ({debug:?}): {line}");
    }
    line.to_owned()
}

#[test]
fn kontrol_errors_read_as_sentences() {
    let home = temp_dir("kontrol-errors");
    // No key pair in Kontrol's home: which file, and how to make one.
    let out = kontrol(&home).arg("--initial").output().unwrap();
    let line = failed_with_sentence(&out);
    let pub_pem = home.join("kontrol").join("kontrol.pub.pem");
    assert!(
        line.contains(&format!("cannot read the public key {}", pub_pem.display())),
        "{line}"
    );
    assert!(line.contains("--public-key-file"), "{line}");

    // A key pair but no kite.key yet: says to run --initial.
    let keys = |c: &mut Command| {
        c.env("KONTROL_PUBLICKEYFILE", format!("{KEYS}/kontrol.pub.pem"))
            .env("KONTROL_PRIVATEKEYFILE", format!("{KEYS}/kontrol.pem"));
    };
    let mut serve = kontrol(&home);
    keys(&mut serve);
    let line = failed_with_sentence(&serve.output().unwrap());
    assert!(line.contains("cannot read Kontrol's kite.key"), "{line}");
    assert!(line.contains("kontrol --initial"), "{line}");

    // --initial without a username.
    let mut initial = kontrol(&home);
    keys(&mut initial);
    let line = failed_with_sentence(&initial.arg("--initial").output().unwrap());
    assert!(line.contains("a username is needed"), "{line}");

    // A store that cannot be opened: a directory where the file should be.
    let mut initial = kontrol(&home);
    keys(&mut initial);
    run(initial.args(["--initial", "--username", "kontrol"]));
    let mut serve = kontrol(&home);
    keys(&mut serve);
    let line = failed_with_sentence(&serve.env("KONTROL_DATAFILE", &home).output().unwrap());
    assert!(line.contains("cannot open the embedded store"), "{line}");
    let _ = std::fs::remove_dir_all(&home);
}

#[cfg(unix)]
#[test]
fn kontrol_makes_its_home_private() {
    use std::os::unix::fs::PermissionsExt;
    let mode = |p: &Path| {
        std::fs::metadata(p)
            .unwrap_or_else(|e| panic!("{}: {e}", p.display()))
            .permissions()
            .mode()
            & 0o777
    };
    let root = temp_dir("kontrol-private");
    // Neither ~/.kite nor its kontrol directory exists yet; the key pair is elsewhere.
    let kite_home = root.join(".kite");
    let home = kite_home.join("kontrol");
    let keys = |c: &mut Command| {
        c.env("KONTROL_PUBLICKEYFILE", format!("{KEYS}/kontrol.pub.pem"))
            .env("KONTROL_PRIVATEKEYFILE", format!("{KEYS}/kontrol.pem"));
    };
    let mut initial = kontrol(&kite_home);
    keys(&mut initial);
    let out = run(initial.args(["--initial", "--username", "kontrol"]));
    assert!(
        out.contains(&home.join("kite.key").display().to_string()),
        "{out}"
    );
    assert_eq!(mode(&kite_home), 0o700);
    assert_eq!(mode(&home), 0o700);
    assert_eq!(mode(&home.join("kite.key")) & 0o077, 0);
    // --initial only writes the kite key: no store, and not the user's kite.key.
    assert!(!home.join("kontrol.db").exists());
    assert!(!kite_home.join("kite.key").exists());

    let mut serve = kontrol(&kite_home);
    keys(&mut serve);
    let mut child = Killed(
        serve
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let db = home.join("kontrol.db");
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while !db.exists() {
        assert!(child.0.try_wait().unwrap().is_none(), "kontrol exited");
        assert!(std::time::Instant::now() < deadline, "no kontrol.db");
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(mode(&db), 0o600);
    drop(child);

    // --kite-home names another home, made private too.
    let other = root.join("elsewhere").join("kontrol");
    let mut initial = kontrol(&kite_home);
    keys(&mut initial);
    initial.arg("--kite-home").arg(&other);
    run(initial.args(["--initial", "--username", "kontrol"]));
    assert_eq!(mode(&other), 0o700);
    assert!(other.join("kite.key").exists());
    let _ = std::fs::remove_dir_all(&root);
}

/// `s` as `application/x-www-form-urlencoded` writes it.
fn form_encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

#[tokio::test]
async fn kontrol_import_reads_a_go_registry_out_of_etcd_v2() {
    // A real etcd serving the v2 keys API, written as Go Kontrol writes it (G:kontrol/etcd.go):
    // each kite at its seven-field key and at /kites/<id>, with Go's {url, key_id} value.
    let Some(etcd) = kite_test_kit::servers::Etcd::start_with(&["--enable-v2"]).await else {
        return;
    };
    let http = reqwest::Client::new();
    let kites = [
        (
            "alice/prod/math/1.0.0/eu/h1",
            uuid::Uuid::new_v4(),
            "http://10.0.0.1:6000/kite",
        ),
        (
            "alice/prod/math/1.1.0/us/h2",
            uuid::Uuid::new_v4(),
            "http://10.0.0.2:6000/kite",
        ),
        (
            "bob/dev/db/0.1.0/eu/h3",
            uuid::Uuid::new_v4(),
            "http://10.0.0.3:6000/kite",
        ),
    ];
    for (path, id, url) in &kites {
        let value = format!(r#"{{"url":"{url}","key_id":"7e5b0f3a-0000-4000-8000-000000000001"}}"#);
        for key in [format!("kites/{path}/{id}"), format!("kites/{id}")] {
            let r = http
                .put(format!("{}/v2/keys/{key}", etcd.url()))
                .header("content-type", "application/x-www-form-urlencoded")
                .body(format!("value={}&ttl=90", form_encode(&value)))
                .send()
                .await
                .unwrap();
            assert!(r.status().is_success(), "PUT {key}: {}", r.status());
        }
    }
    let dump = http
        .get(format!("{}/v2/keys/kites?recursive=true", etcd.url()))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let dir = temp_dir("kontrol-import");
    std::fs::write(dir.join("dump.json"), &dump).unwrap();
    let db = dir.join("kontrol.db");
    let out = run(kontrol(&dir)
        .args(["--storage", "embedded", "--data-file"])
        .arg(&db)
        .arg("import")
        .arg(dir.join("dump.json")));
    assert_eq!(out.trim(), "imported 3 kites (0 skipped)", "{dump}");
    // Importing again replaces them (the same owners): nothing is lost or doubled.
    let again = run(kontrol(&dir)
        .args(["--storage", "embedded", "--data-file"])
        .arg(&db)
        .args(["import", "-"])
        .stdin(std::fs::File::open(dir.join("dump.json")).unwrap()));
    assert_eq!(again.trim(), "imported 3 kites (0 skipped)");

    let storage = kontrol::storage::EmbeddedStorage::open(&db).unwrap();
    use kontrol::storage::Storage;
    let query = kite_native::core::KontrolQuery {
        username: "alice".into(),
        name: "math".into(),
        ..Default::default()
    };
    let mut found = storage
        .get(&kontrol::query::Matcher::new(&query).unwrap())
        .await
        .unwrap();
    found.sort_by(|a, b| a.url.cmp(&b.url));
    let got: Vec<(String, String)> = found
        .iter()
        .map(|r| (r.kite.to_string(), r.url.clone()))
        .collect();
    assert_eq!(
        got,
        [
            (
                format!("/{}/{}", kites[0].0, kites[0].1),
                kites[0].2.to_owned()
            ),
            (
                format!("/{}/{}", kites[1].0, kites[1].1),
                kites[1].2.to_owned()
            ),
        ]
    );
    assert_eq!(found[0].key_id, "7e5b0f3a-0000-4000-8000-000000000001");
    drop(storage);
    let _ = std::fs::remove_dir_all(&dir);
}
