//! Kite for the browser and Node, built on [`kite_core`] and compiled to WebAssembly.
//!
//! This crate is a placeholder in the workspace layout: the wasm-bindgen client arrives with its
//! own issue. It depends on `kite-core` only, never on `kite-native`.

pub use kite_core;
