//! Go Kontrol registries read out of etcd v2 for `kontrol import`
//! (kontrol::import::parse_etcd_v2): a dump is the operator's file, but its keys and values
//! were written by every kite Go Kontrol registered.
//!
//! Checked: nothing panics (nor overflows the stack, however deep the directories); every
//! registration read names a valid kite whose seven fields came from its key, with a URL.
#![no_main]

use std::time::Duration;

use kontrol::import::parse_etcd_v2;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let Ok(dump) = parse_etcd_v2(&text, Duration::from_secs(90)) else {
        return;
    };
    for r in &dump.registrations {
        assert!(r.kite.validate().is_ok(), "{:?}", r.kite);
        assert!(!r.url.is_empty());
    }
});
