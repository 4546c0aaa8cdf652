//! A test that cannot run here says so (see the crate's docs, "Skipped tests").

use std::io::Write;

/// Says that the running test is skipped because of `why` (a missing server or tool, and how
/// to get it); the test returns right after. Prints `SKIPPED: <test>: <why>` to stderr (past
/// libtest's output capture, so `cargo test` shows it) and appends it to the file
/// `KITE_SKIP_LOG` names, if set. Under `CI=true` it panics instead: CI has everything, so a
/// missing part there is a failure.
///
/// libtest cannot mark a test skipped: the test still counts as passed, and this line (and
/// scripts/test's tally of them) is what shows it did not run.
pub fn skip(why: &str) {
    if std::env::var("CI").as_deref() == Ok("true") {
        panic!("{why} (under CI=true a missing part is a failure, not a skip)");
    }
    let line = format!("SKIPPED: {}: {why}", test_name());
    // Straight to the process's stderr: libtest captures `eprintln!` of a passing test, which
    // would hide the line in `cargo test`'s output.
    let _ = writeln!(std::io::stderr(), "{line}");
    if let Some(path) = std::env::var_os("KITE_SKIP_LOG") {
        let written = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .and_then(|mut f| f.write_all(format!("{line}\n").as_bytes()));
        if let Err(e) = written {
            eprintln!(
                "cannot append to KITE_SKIP_LOG {}: {e}",
                path.to_string_lossy()
            );
        }
    }
}

/// `<test binary>::<test path>`: libtest runs each test on a thread named after it, and the
/// binary (`interop-<hash>`, `kontrol-<hash>`) tells the crate or test file.
fn test_name() -> String {
    let binary = std::env::current_exe()
        .ok()
        .and_then(|p| p.file_stem().map(|s| s.to_string_lossy().into_owned()))
        .map(|stem| match stem.rsplit_once('-') {
            Some((name, hash)) if hash.chars().all(|c| c.is_ascii_hexdigit()) => name.to_owned(),
            _ => stem,
        })
        .unwrap_or_else(|| "?".into());
    let thread = std::thread::current();
    match thread.name() {
        Some(test) if test != "main" => format!("{binary}::{test}"),
        _ => binary,
    }
}
