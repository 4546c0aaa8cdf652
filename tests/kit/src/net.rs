//! Free ports and fresh directories.

use std::path::PathBuf;

/// A TCP port on 127.0.0.1 that was free a moment ago (the listener that found it is closed),
/// for a server that must be told its port before it starts.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A new, empty directory `<temp>/<what>-<uuid>`; the test removes it if it wants to.
pub fn temp_dir(what: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("{what}-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&d).unwrap();
    d
}
