//! Kite for native targets.
pub use kite_core as core;

pub mod session;
