//! A peer's value with callbacks at paths: the first line is the JSON, each further line a
//! path (a JSON list of keys and indices). Every reader of received arguments (`len`, `nth`,
//! `one`, `get`, `callback`, `args`, `decode`) takes it without panicking, the one-pass scan
//! of callback paths finds what a walk of the parsed tree finds, and the value sent back with
//! functions at those paths (one function at several places among them) arrives with the same
//! JSON, one id per place and no id named twice (`kite_core::fuzzing`).
#![no_main]

use kite_core::dnode::Path;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let mut lines = text.split('\n');
    let value = lines.next().unwrap_or_default();
    let paths: Vec<Path> = lines
        .take(64)
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect();
    kite_core::fuzzing::check_value(value, &paths);
    kite_core::fuzzing::check_round_trip(value, &paths);
});
