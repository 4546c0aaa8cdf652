//! Kite for native targets: a tokio runtime that serves methods over SockJS and calls other
//! kites, wire-compatible with Go kite and Kite.js.
//!
//! The introduction's two programs, in Rust:
//!
//! ```no_run
//! use kite_native::{Kite, KiteError, Request};
//!
//! # async fn first() -> Result<(), Box<dyn std::error::Error>> {
//! // "first" serves square on port 6000.
//! let mut config = kite_native::Config::from_env()?;
//! config.port = 6000;
//! config.disable_authentication = true;
//! let kite = Kite::with_config("first", "1.0.0", config)?;
//! kite.handle("square", |req: Request| async move {
//!     let n: f64 = req.arg()?;
//!     Ok::<_, KiteError>(n * n)
//! });
//! kite.run().await?;
//! # Ok(()) }
//!
//! # async fn second() -> Result<(), Box<dyn std::error::Error>> {
//! // "second" dials it and calls square(4).
//! let kite = Kite::new("second", "1.0.0")?;
//! let client = kite.new_client("http://localhost:6000/kite");
//! client.dial().await?;
//! let n: f64 = client.call("square", (4,)).await?;
//! println!("{n}");
//! # Ok(()) }
//! ```
//!
//! Layers: [`session`] is the transport-independent message session; [`sockjs`] serves SockJS
//! (websocket, raw websocket, xhr-polling, xhr-streaming); [`server`] is the HTTP serve loop
//! with its connection budgets and timeouts; [`transport`] dials them; [`Kite`], [`Client`] and
//! [`Request`] are the runtime; protocol logic comes from [`kite_core`]. A client's calls and
//! dials fail with a [`ClientError`], which says where the failure came from (the dial, the
//! clock, the connection, the peer, this side) and stands for the wire [`KiteError`] a handler
//! forwards with `?`.
//!
//! # Cargo features
//!
//! All on by default; with `default-features = false` a program takes only the parts it uses:
//!
//! - `client`: dialing kites — [`Kite::new_client`], [`Client::dial`], the dialers of
//!   [`transport`] (tokio-tungstenite, reqwest), Kontrol's client side ([`Kite::register`],
//!   [`Kite::get_kites`], ...) and registering through reverse and tunnel proxies.
//! - `server`: serving kites — [`Kite::run`], [`Kite::serve`], [`Kite::router`] and
//!   [`Kite::route`], [`server`] and [`sockjs`] (axum, hyper).
//! - `tls`: rustls for `Config::tls` (the server) and `https`/`wss` URLs (the client), and
//!   [`tls`]. Without it those fail with an error.
//!
//! A client-only build (`features = ["client"]`) links no axum and no HTTP server. Either way a
//! kite answers the calls its peer makes on a connection: methods, authentication and the
//! `kite.*` built-ins are always there.

// With neither `client` nor `server` a kite makes no connections, and what serves one is unused.
#![cfg_attr(not(any(feature = "client", feature = "server")), allow(dead_code))]

pub use kite_core as core;
pub use kite_core::{
    Args, Auth, Callback, ErrorKind, IntoArgs, IntoValue, KiteError, Value, value,
};

pub mod auth;
pub mod builtins;
mod client;
pub mod config;
#[cfg(feature = "fuzzing")]
#[doc(hidden)]
pub mod fuzzing;
mod kite;
pub mod kitekey;
#[cfg(feature = "client")]
mod kontrol;
mod link;
#[cfg(feature = "logging")]
pub mod logging;
pub mod method;
#[cfg(feature = "client")]
mod proxy;
mod request;
#[cfg(feature = "server")]
pub mod server;
pub mod session;
#[cfg(feature = "server")]
pub mod sockjs;
#[cfg(feature = "server")]
mod tally;
mod terminal;
#[cfg(feature = "tls")]
pub mod tls;
pub mod transport;
#[cfg(feature = "client")]
mod tunnel;
pub mod webrtc;

pub use client::{Client, ClientError};
pub use config::{Config, Limits};
pub use kite::{Authenticator, Error, Kite};
#[cfg(feature = "server")]
pub use kite::{LISTEN_BACKLOG, listen};
#[cfg(feature = "client")]
pub use kontrol::KeyRenewer;
#[cfg(feature = "logging")]
pub use logging::{init_logging, init_logging_with_default};
pub use method::{Method, MethodHandling};
pub use request::Request;
