//! Logging set up the way Go kite users expect: `KITE_LOG_LEVEL` and `KITE_LOG_NOCOLOR`.
//!
//! [`init_logging`] installs a [`tracing`] subscriber writing to stderr, at the level
//! `KITE_LOG_LEVEL` names. Go's level names are understood in any letter case (`DEBUG`,
//! `INFO`, `WARNING`, `ERROR`, `FATAL`, and koding/logging's `NOTICE` and `CRITICAL`), so are
//! tracing's (`trace`, `warn`, `off`), and so is a tracing filter (`info,kite_native=debug`,
//! see [`tracing_subscriber::EnvFilter`]). Anything else falls back to the default level, as
//! Go falls back to `INFO` (with a warning here). Output is coloured unless `KITE_LOG_NOCOLOR`
//! (Go's) or `NO_COLOR` is set to a non-empty value. Only with the cargo feature `logging`
//! (on by default).

use tracing_subscriber::EnvFilter;

/// The tracing level of a level name: Go kite's (`DEBUG`, `INFO`, `WARNING`, `ERROR`,
/// `FATAL`), koding/logging's (`NOTICE`, `CRITICAL`) and tracing's (`trace`, `warn`, `off`),
/// in any letter case. Go has no level above `ERROR` but `FATAL`, which tracing has not:
/// `FATAL` and `CRITICAL` are `error`; `NOTICE` is `info`.
pub fn go_level(name: &str) -> Option<&'static str> {
    Some(match name.trim().to_ascii_uppercase().as_str() {
        "TRACE" => "trace",
        "DEBUG" => "debug",
        "INFO" | "NOTICE" => "info",
        "WARNING" | "WARN" => "warn",
        "ERROR" | "CRITICAL" | "FATAL" => "error",
        "OFF" => "off",
        _ => return None,
    })
}

/// The filter directives `KITE_LOG_LEVEL` = `value` stands for, with `default` (a level or
/// filter) when it is unset or empty; `Err` with the default's directives when it is neither
/// a level name ([`go_level`]) nor a valid tracing filter.
pub fn directives(value: Option<&str>, default: &str) -> Result<String, String> {
    let value = value.map(str::trim).unwrap_or_default();
    if value.is_empty() {
        return Ok(go_level(default).unwrap_or(default).to_owned());
    }
    if let Some(level) = go_level(value) {
        return Ok(level.to_owned());
    }
    // A bare word parses as a tracing target (everything it logs, nothing else): taken as a
    // filter only when it looks like one, so `VERBOSE` means the default, as in Go.
    let filter_like = value.contains(['=', ',', '[', ':']);
    if filter_like && EnvFilter::try_new(value).is_ok() {
        return Ok(value.to_owned());
    }
    Err(go_level(default).unwrap_or(default).to_owned())
}

/// Installs the logging of [`crate::logging`] at Go kite's default level, `INFO`. Returns
/// `false`, changing nothing, when a global subscriber is set already.
pub fn init_logging() -> bool {
    init_logging_with_default("info")
}

/// Like [`init_logging`], at `default` (a level name or tracing filter) when
/// `KITE_LOG_LEVEL` is unset: for tools whose output is their answer, such as `kitectl`,
/// which log `warn` by default.
pub fn init_logging_with_default(default: &str) -> bool {
    let value = std::env::var("KITE_LOG_LEVEL").ok();
    let (directives, refused) = match directives(value.as_deref(), default) {
        Ok(d) => (d, false),
        Err(d) => (d, true),
    };
    let filter = EnvFilter::try_new(&directives).unwrap_or_else(|_| EnvFilter::new("info"));
    let set = |name: &str| std::env::var_os(name).is_some_and(|v| !v.is_empty());
    let color = !set("KITE_LOG_NOCOLOR") && !set("NO_COLOR");
    let installed = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(color)
        .with_writer(std::io::stderr)
        .try_init()
        .is_ok();
    if installed && refused {
        tracing::warn!(
            value = value.as_deref().unwrap_or_default(),
            using = %directives,
            "KITE_LOG_LEVEL is neither a level (DEBUG, INFO, WARNING, ERROR, FATAL) nor a filter"
        );
    }
    installed
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn go_levels_map_to_tracing_levels() {
        for (go, tracing) in [
            ("DEBUG", "debug"),
            ("debug", "debug"),
            ("INFO", "info"),
            ("NOTICE", "info"),
            ("WARNING", "warn"),
            ("Warn", "warn"),
            ("ERROR", "error"),
            ("CRITICAL", "error"),
            ("FATAL", "error"),
            ("trace", "trace"),
            ("OFF", "off"),
        ] {
            assert_eq!(go_level(go), Some(tracing), "{go}");
            assert_eq!(directives(Some(go), "info"), Ok(tracing.to_owned()));
        }
        assert_eq!(go_level("VERBOSE"), None);
    }

    #[test]
    fn filters_pass_and_anything_else_is_the_default() {
        assert_eq!(directives(None, "info"), Ok("info".into()));
        assert_eq!(directives(Some("  "), "WARNING"), Ok("warn".into()));
        assert_eq!(
            directives(Some("info,kite_native=debug"), "info"),
            Ok("info,kite_native=debug".into())
        );
        assert_eq!(
            directives(Some("kite_native::client=trace"), "warn"),
            Ok("kite_native::client=trace".into())
        );
        // Go falls back to INFO for a name it does not know; here to the default.
        assert_eq!(directives(Some("VERBOSE"), "info"), Err("info".into()));
        assert_eq!(directives(Some("a=b=c"), "warn"), Err("warn".into()));
    }
}
