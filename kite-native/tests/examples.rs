//! The examples end on an error with one sentence on stderr, as the `kontrol` and `kitectl`
//! binaries do (`examples/support/mod.rs`), not with the `Debug` struct a `main` returning
//! `Result` prints. `cargo test` builds the examples next to this test's binary.

use std::path::PathBuf;
use std::process::{Command, Output};

use kite_test_kit::free_port;

/// An example's binary: `target/<profile>/examples/<name>`, beside this test's `deps/`.
fn example(name: &str) -> PathBuf {
    kite_test_kit::bin::example("kite-native", name)
}

/// Checks that the run failed with exactly one line on stderr, `name: ...`, reading as a
/// sentence: no `Debug` braces, field names or enum variants.
fn assert_sentence(name: &str, out: &Output) -> String {
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(!out.status.success(), "{name} succeeded: {out:?}");
    let lines: Vec<&str> = stderr.lines().collect();
    assert_eq!(lines.len(), 1, "{name}: not one line: {stderr}");
    let line = lines[0];
    assert!(line.starts_with(&format!("{name}: ")), "{line}");
    // What `main` returning `Err` prints: `Error: ` and the value's `Debug`.
    assert!(!line.starts_with(&format!("{name}: Error: ")), "{line}");
    for debug in ["{", "}", "kind:", "message:", "Os {", "Io {", "Some("] {
        assert!(
            !line.contains(debug),
            "{name} printed Debug ({debug:?}): {line}"
        );
    }
    line.to_owned()
}

#[test]
fn second_says_in_a_sentence_that_it_cannot_dial() {
    let url = format!("http://127.0.0.1:{}/kite", free_port());
    let out = Command::new(example("second"))
        .arg(&url)
        .env_remove("KITE_LOG_LEVEL")
        .env("KITE_TIMEOUT", "2s")
        .output()
        .unwrap();
    let line = assert_sentence("second", &out);
    assert!(line.contains(&format!("dial {url}")), "{line}");
    assert!(line.contains("refused"), "{line}");
}

#[test]
fn find_says_in_a_sentence_that_there_is_no_kite_key() {
    let home = std::env::temp_dir().join(format!("examples-home-{}", std::process::id()));
    std::fs::create_dir_all(&home).unwrap();
    for name in ["find", "registered"] {
        let out = Command::new(example(name))
            .env("HOME", &home)
            .env_remove("KITE_HOME")
            .env_remove("KITE_KEY")
            .env_remove("KITE_LOG_LEVEL")
            .output()
            .unwrap();
        let line = assert_sentence(name, &out);
        assert!(line.contains("cannot read your kite key"), "{line}");
        assert!(line.contains("kite.key"), "{line}");
        assert!(line.contains("kitectl register"), "{line}");
    }
    let _ = std::fs::remove_dir_all(&home);
}

#[test]
fn sockjs_echo_says_in_a_sentence_what_its_argument_should_be() {
    let out = Command::new(example("sockjs_echo"))
        .arg("not-a-port")
        .output()
        .unwrap();
    let line = assert_sentence("sockjs_echo", &out);
    assert!(line.contains("usage: sockjs_echo [PORT]"), "{line}");
}

/// `second`'s stderr when it fails to dial a closed port, with `vars` set.
fn second_log(vars: &[(&str, &str)]) -> String {
    let url = format!("http://127.0.0.1:{}/kite", free_port());
    let mut cmd = Command::new(example("second"));
    cmd.arg(&url)
        .env_remove("KITE_LOG_NOCOLOR")
        .env_remove("NO_COLOR")
        .env("KITE_TIMEOUT", "2s");
    for (name, value) in vars {
        cmd.env(name, value);
    }
    let out = cmd.output().unwrap();
    assert!(!out.status.success(), "{out:?}");
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn examples_log_at_go_levels_and_without_colour_when_asked() {
    // Go's level name turns kite-native's debug lines on; KITE_LOG_NOCOLOR takes the colours off.
    let plain = second_log(&[("KITE_LOG_LEVEL", "DEBUG"), ("KITE_LOG_NOCOLOR", "1")]);
    assert!(
        plain
            .lines()
            .any(|l| l.contains(" DEBUG ") && l.contains("dial failed")),
        "{plain}"
    );
    assert!(!plain.contains('\u{1b}'), "escape codes: {plain:?}");
    // Coloured otherwise, as Go's logger is.
    let coloured = second_log(&[("KITE_LOG_LEVEL", "debug")]);
    assert!(coloured.contains("dial failed"), "{coloured}");
    assert!(coloured.contains('\u{1b}'), "no colours: {coloured:?}");
    // `second` logs warnings only by default: no debug line without the variable.
    let quiet = second_log(&[("KITE_LOG_LEVEL", "")]);
    assert!(!quiet.contains("dial failed"), "{quiet}");
}
