//! What the examples share: how they end on an error. (They log with
//! [`kite_native::init_logging`], `KITE_LOG_LEVEL` and `KITE_LOG_NOCOLOR` as in Go.)
//!
//! An example's `main` returns [`ExitCode`] through [`exit`], so that an error reads as a
//! sentence on stderr (`second: dial http://…: connection refused`), as the `kontrol` and
//! `kitectl` binaries print theirs, never as the `Debug` struct `main` returning a `Result`
//! would print.

#![allow(dead_code)] // Each example uses its own part.

use std::error::Error;
use std::process::ExitCode;

/// The error as one line: its `Display`, then each source whose text is not already in it.
pub fn sentence(e: &(dyn Error + 'static)) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let more = s.to_string();
        if !more.is_empty() && !text.contains(&more) {
            text.push_str(": ");
            text.push_str(&more);
        }
        source = s.source();
    }
    text
}

/// Success, or `name: <the error as a sentence>` on stderr and a failing exit code.
pub fn exit(name: &str, result: Result<(), Box<dyn Error>>) -> ExitCode {
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("{name}: {}", sentence(e.as_ref()));
            ExitCode::FAILURE
        }
    }
}
