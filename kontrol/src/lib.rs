//! Kontrol, the Kite registry and key authority, built on [`kite_native`].
//!
//! The query rule and version constraints every storage shares ([`query`], [`version`]), the
//! Kontrol kite ([`server`]), its storages ([`storage`]: embedded, etcd, PostgreSQL) and its key
//! pairs ([`keys`]); the `kontrol` and `kitectl` binaries.

mod http;
pub mod import;
pub mod keys;
mod ledger;
pub mod query;
pub mod server;
pub mod storage;
pub mod version;

pub use kite_native;

/// The Rust examples of the workspace's README.md, compiled as doctests so that they stay
/// whole programs that build (`cargo test -p kontrol --doc`); this crate has what they use.
#[cfg(doctest)]
#[doc = include_str!("../../README.md")]
struct ReadmeDoctests;
