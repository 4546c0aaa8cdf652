//! `terminal-kite`: a small kite serving the terminal built-ins (`kite.prompt`, `kite.getPass`)
//! beside `square`, to try them by hand and for kite-native's terminal tests
//! (`tests/terminal.rs`), which run it without a terminal and under a pseudo-terminal.
//!
//! Configured by the `KITE_*` variables ([`kite_native::Config::from_env`]; it logs at
//! `KITE_LOG_LEVEL`, default `WARNING`) and by flags:
//!
//! - `--disable-authentication`: methods other than the terminal ones need no credentials;
//! - `--prompt-timeout-ms N`: `Config::prompt_timeout`;
//! - `--exit-after-secs N`: stop serving after N seconds (tests use it so that a kite they
//!   lost track of does not outlive them).
//!
//! Prints `listening <url>` on stdout once it serves.

use std::io::Write;
use std::process::ExitCode;
use std::time::Duration;

use kite_native::{Config, Kite, KiteError, Request};

#[derive(Debug, Default)]
struct Flags {
    disable_authentication: bool,
    prompt_timeout: Option<Duration>,
    exit_after: Option<Duration>,
}

fn parse(mut args: impl Iterator<Item = String>) -> Result<Flags, String> {
    let mut flags = Flags::default();
    let number = |flag: &str, value: Option<String>| {
        value
            .and_then(|v| v.parse::<u64>().ok())
            .ok_or_else(|| format!("{flag} needs a whole number"))
    };
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--disable-authentication" => flags.disable_authentication = true,
            "--prompt-timeout-ms" => {
                flags.prompt_timeout = Some(Duration::from_millis(number(&arg, args.next())?));
            }
            "--exit-after-secs" => {
                flags.exit_after = Some(Duration::from_secs(number(&arg, args.next())?));
            }
            _ => return Err(format!("unknown argument {arg:?}")),
        }
    }
    Ok(flags)
}

async fn run(flags: Flags) -> Result<(), String> {
    let mut config = Config::from_env().map_err(|e| e.to_string())?;
    config.disable_authentication = flags.disable_authentication;
    if let Some(timeout) = flags.prompt_timeout {
        config.prompt_timeout = timeout;
    }
    let kite = Kite::with_config("terminal", "1.0.0", config).map_err(|e| e.to_string())?;
    kite.handle("square", |req: Request| async move {
        let n: f64 = req.arg()?;
        Ok::<_, KiteError>(n * n)
    });
    let server = kite.clone();
    let mut serving = tokio::spawn(async move { server.run().await });
    // Up, or failed to bind.
    tokio::select! {
        _ = kite.ready() => {}
        done = &mut serving => {
            return match done {
                Ok(Ok(())) => Ok(()),
                Ok(Err(e)) => Err(e.to_string()),
                Err(e) => Err(e.to_string()),
            };
        }
    }
    let url = kite.url().unwrap_or_default();
    let mut out = std::io::stdout().lock();
    writeln!(out, "listening {url}")
        .and_then(|()| out.flush())
        .map_err(|e| e.to_string())?;
    drop(out);
    match flags.exit_after {
        Some(after) => tokio::time::sleep(after).await,
        None => std::future::pending().await,
    }
    kite.close();
    Ok(())
}

#[tokio::main]
async fn main() -> ExitCode {
    // Quiet unless asked (KITE_LOG_LEVEL): the tests read what it writes on its terminal.
    #[cfg(feature = "logging")]
    kite_native::init_logging_with_default("warn");
    let flags = match parse(std::env::args().skip(1)) {
        Ok(flags) => flags,
        Err(e) => {
            eprintln!("terminal-kite: {e}");
            return ExitCode::from(2);
        }
    };
    match run(flags).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("terminal-kite: {e}");
            ExitCode::FAILURE
        }
    }
}
