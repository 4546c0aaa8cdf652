//! One dnode message from a peer, read three ways — `Connection::receive` (the one-pass
//! reading of the usual messages, then the general path), the general path alone, and
//! `tree::TreeConnection` over the parsed document (what kite-wasm does) — on a connection
//! with calls waiting (ids 0..=4) and functions sent (5..=9): no panic, and the three decide
//! the same (`kite_core::fuzzing::check_message`).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        kite_core::fuzzing::check_message(text);
    }
});
