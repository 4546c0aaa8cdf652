//! Kite for browsers and Node: a client that replaces Kite.js, built on [`kite_core`] and
//! compiled to WebAssembly with wasm-bindgen.
//!
//! The JavaScript API (see the package README and its declarations, kite-wasm/js/kite.d.ts):
//!
//! * [`Kite`]: `new Kite(url | options)`, `tell(method, ...args)` returning a promise,
//!   functions as callbacks in both directions, the page's own methods (`api`), events,
//!   reconnection with backoff, token renewal, and the SockJS transports with fallback
//!   (websocket → xhr-streaming → xhr-polling) or a raw websocket.
//! * [`Kontrol`]: `fetchKites`, `fetchKite`, `getToken`, `watchKites` against a Kontrol.
//! * With the `server` feature, `ServerCore`: a kite server (SockJS and a raw websocket, the
//!   methods of `api` with authentication) that the package's Node entry point
//!   `kite-wasm/server` drives with Node's `http` and `ws`.
//!
//! The crate depends on `kite-core` for everything protocol-shaped and never on `kite-native`.

mod api;
mod convert;
mod error;
mod events;
mod extras;
mod kite;
mod kontrol;
mod options;
#[cfg(feature = "server")]
mod server;
mod token;
pub mod transport;

pub use kite::Kite;
pub use kite_core;
pub use kontrol::Kontrol;
#[cfg(feature = "server")]
pub use server::ServerCore;

use std::future::Future;
use std::pin::Pin;

use wasm_bindgen::prelude::*;

/// A promise settled by `f`. Every promise of the API goes through here, boxed, so that
/// wasm-bindgen's `future_to_promise` (the task that drives the future and settles the
/// promise) is compiled once rather than once per method.
pub(crate) fn promise(
    f: impl Future<Output = Result<JsValue, JsValue>> + 'static,
) -> js_sys::Promise {
    let f: Pin<Box<dyn Future<Output = Result<JsValue, JsValue>>>> = Box::pin(f);
    wasm_bindgen_futures::future_to_promise(f)
}

/// Defines `Kite.prototype.tell` as soon as the module is loaded.
#[wasm_bindgen(start)]
fn start() {
    Kite::install_tell();
}
