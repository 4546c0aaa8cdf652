//! Watch events between Kontrols (kontrol::storage::events::Change), as another Kontrol, or
//! anything else with access to the shared database, may send them through PostgreSQL's
//! `NOTIFY` or an etcd key.
//!
//! Checked: nothing panics; whatever decodes names a valid kite and is at most the payload
//! limit; a decoded change encodes to text that decodes to the same change.
#![no_main]

use kontrol::storage::events::{Change, MAX_CHANGE_BYTES};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let Some(change) = Change::decode(&text) else {
        return;
    };
    assert!(text.len() <= MAX_CHANGE_BYTES);
    assert!(change.kite.validate().is_ok(), "{change:?}");
    let again = change.encode();
    assert_eq!(Change::decode(&again).as_ref(), Some(&change), "{again}");
});
