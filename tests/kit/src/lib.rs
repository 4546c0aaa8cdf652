//! What the workspace's tests share, so that each helper is written once: a deadline for
//! futures ([`within`]), free ports and temporary directories ([`net`]), the binaries of
//! examples ([`bin`]), a skip that says so ([`skip()`]), real etcd and PostgreSQL servers
//! ([`servers`]), a hand-written dnode peer (module `raw`, feature `kites`), the `square`/`echo` test kites
//! (module `kites`, feature `kites`) and a Kontrol to test against (module `kontrol`, feature
//! `kontrol`; it turns on `kites`).
//!
//! A dev-dependency only (`publish = false`). kite-native's tests use it without features, so
//! the kit they link does not depend on kite-native or kontrol; the `kontrol` feature is for
//! integration tests (in a crate's unit tests it would bring a second copy of that crate's
//! types).
//!
//! # Skipped tests
//!
//! libtest has no "skipped" result: a test that cannot run here (no etcd, no PostgreSQL, no
//! Node packages) calls [`skip()`] and returns early, which libtest counts as passed. [`skip()`]
//! is what tells them apart: it prints `SKIPPED: <test>: <why>` to stderr and appends that
//! line to the file named by `KITE_SKIP_LOG` (scripts/test sets it and lists the skips in its
//! tally). Under `CI=true` it panics instead: there a missing part is a failure.
//!
//! ```no_run
//! fn etcd() -> Option<std::path::PathBuf> {
//!     None
//! }
//!
//! #[test]
//! fn against_etcd() {
//!     let Some(_etcd) = etcd() else {
//!         return kite_test_kit::skip("no etcd on PATH");
//!     };
//!     // ...
//! }
//! ```

pub mod bin;
#[cfg(feature = "kites")]
pub mod kites;
#[cfg(feature = "kontrol")]
pub mod kontrol;
pub mod net;
#[cfg(feature = "kites")]
pub mod raw;
pub mod servers;
mod skip;
pub mod time;

pub use net::free_port;
pub use skip::skip;
pub use time::{within, within_secs};
