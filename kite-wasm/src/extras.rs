//! The plain-JavaScript part of the API (kite-wasm/js/kite-extras.js, a wasm-bindgen snippet):
//! `KiteError`, the logger behind the `logLevel` and `logger` options, and the methods that only
//! compose exported ones (`Kite#tell`, `Kontrol#register`, `#cancelWatcher`, `#watch`).

use wasm_bindgen::prelude::*;

#[wasm_bindgen(module = "/js/kite-extras.js")]
extern "C" {
    /// `new KiteError(message, type, code, id)`.
    #[wasm_bindgen(js_name = newKiteError)]
    pub(crate) fn new_kite_error(message: &str, kind: &str, code: &str, id: &str) -> JsValue;

    /// A logger of `name` at `level` (a number, a name, or undefined for `$KITE_LOG_LEVEL` or
    /// `ERROR`) writing to `sink` (default `console`).
    #[wasm_bindgen(js_name = makeLogger)]
    pub(crate) fn make_logger(name: &str, level: &JsValue, sink: &JsValue) -> JsValue;

    /// `logger.log(level, message, extra)`; `extra` undefined is left out.
    #[wasm_bindgen(js_name = logTo)]
    pub(crate) fn log_to(logger: &JsValue, level: i32, message: &str, extra: &JsValue);

    /// Whether `o` holds the identity read last (see [`crate::convert::Js`]'s `identity`);
    /// if not, it is remembered as the one read last.
    #[wasm_bindgen(js_name = sameIdentity)]
    pub(crate) fn same_identity(o: &JsValue) -> bool;

    /// What a method is told of a call (its last argument): `{username, peer, kite,
    /// authentication, method}`, `username` and `peer` only when defined, `kite` a copy.
    #[wasm_bindgen(js_name = callMeta)]
    pub(crate) fn call_meta(
        username: Option<&str>,
        peer: &JsValue,
        kite: &js_sys::Object,
        authentication: &JsValue,
        method: &str,
    ) -> js_sys::Object;

    /// A pending promise for a call of `Kite#request`, settled by [`settle_call`].
    #[wasm_bindgen(js_name = newCall)]
    pub(crate) fn new_call() -> js_sys::Promise;

    /// Resolves (`ok`) or rejects `promise`, one of [`new_call`]'s, with `value`; once.
    #[wasm_bindgen(js_name = settleCall)]
    pub(crate) fn settle_call(promise: &js_sys::Promise, ok: bool, value: &JsValue);

    /// Defines the composed methods on the prototypes of `Kite` and `Kontrol`.
    #[wasm_bindgen(js_name = defineExtras)]
    pub(crate) fn define_extras(kite: &JsValue, kontrol: &JsValue);
}

/// Kite.js's debug levels.
pub(crate) mod level {
    pub(crate) const ERROR: i32 = 1;
    pub(crate) const NOTICE: i32 = 3;
    pub(crate) const INFO: i32 = 4;
    pub(crate) const DEBUG: i32 = 5;
}

/// A logger and its level, which is checked before any message is made.
#[derive(Debug, Clone)]
pub(crate) struct Log {
    logger: JsValue,
    level: i32,
}

impl Log {
    /// The logger of the options object `obj` (`logLevel`, `logger`), named `name`.
    pub(crate) fn from_options(name: &str, level: &JsValue, sink: &JsValue) -> Log {
        let logger = make_logger(name, level, sink);
        let level = js_sys::Reflect::get(&logger, &"level".into())
            .ok()
            .and_then(|l| l.as_f64())
            .map_or(level::ERROR, |l| l as i32);
        Log { logger, level }
    }

    /// Whether messages of `level` are written.
    pub(crate) fn enabled(&self, level: i32) -> bool {
        level <= self.level
    }

    /// Writes `message` (and `extra`) at `level`; `message` is only made when it is written.
    pub(crate) fn at(&self, level: i32, message: impl FnOnce() -> String, extra: &JsValue) {
        if self.enabled(level) {
            log_to(&self.logger, level, &message(), extra);
        }
    }
}
