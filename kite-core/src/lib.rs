//! The transport-agnostic core of Kite.
pub mod json;
pub mod sockjs;
