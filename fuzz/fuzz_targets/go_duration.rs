//! Go durations (`KITE_TIMEOUT`, `KITE_VERIFY_TTL`, kitectl flags, the PostgreSQL storage's
//! TTLs): `kite_native::config::parse_go_duration` against a model of Go's
//! `time.ParseDuration` (kite_fuzz::go_parse_duration). Ours trims surrounding whitespace and
//! takes no sign (a negative duration is no use); otherwise it accepts exactly what Go accepts,
//! with the same value to the nanosecond (up to f64 rounding).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let ours = kite_native::config::parse_go_duration(text);
    let trimmed = text.trim();
    let go = kite_fuzz::go_parse_duration(trimmed);
    let signed = trimmed.starts_with(['+', '-']);
    match (&ours, go) {
        (Ok(d), Some(n)) => {
            assert!(!signed, "{text:?}: a signed duration was accepted");
            let ours_ns = d.as_nanos() as i128;
            // f64 seconds: each term rounds to about 2^-52 of itself; Go truncates each term's
            // fraction to the nanosecond (ours keeps the fractions and sums them): a
            // nanosecond per term.
            let terms = trimmed
                .as_bytes()
                .windows(2)
                .filter(|w| {
                    (w[0].is_ascii_digit() || w[0] == b'.')
                        && !(w[1].is_ascii_digit() || w[1] == b'.')
                })
                .count() as i128;
            let tolerance = 2 + terms + (n as f64 * 1e-12) as i128;
            assert!(
                (ours_ns - n).abs() <= tolerance,
                "{text:?}: ours {ours_ns} ns, Go {n} ns"
            );
        }
        (Ok(d), None) => assert!(
            // Right at Go's limit (about 292 years) f64 rounding may decide either way.
            !signed && d.as_nanos().abs_diff(i64::MAX as u128) < 1_000_000_000_000,
            "{text:?}: ours accepts ({d:?}), Go refuses"
        ),
        (Err(_), Some(n)) => {
            // Only a sign, or a value right at Go's limit (f64 rounding decides), may differ.
            assert!(
                signed || n > i64::MAX as i128 - 1_000_000_000_000,
                "{text:?}: Go accepts ({n} ns), ours refuses: {ours:?}"
            );
        }
        (Err(_), None) => {}
    }
});
