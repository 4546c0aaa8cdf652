//! Kontrol, the Kite registry and key authority.
//!
//! This crate is a placeholder in the workspace layout: the Kontrol server, its storages and
//! `kitectl` arrive with their own issue. Kontrol is a kite built on [`kite_native`].

pub use kite_native;
