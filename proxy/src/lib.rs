//! Kite proxies: [`tunnel`], the tunnel proxy through which kites that cannot be dialed serve
//! public clients, and [`reverse`], the path-based reverse proxy.

pub mod reverse;
pub mod tunnel;
