//! Event listeners of a `Kite` (`open`, `close`, `error`, `tokenExpired`, `tokenSet`,
//! `backOffFailed`, `info`), in the style of Node's `EventEmitter`.

use std::cell::RefCell;

use js_sys::{Array, Function};
use wasm_bindgen::JsValue;

use crate::extras::{Log, level};

/// Listeners by event name.
pub(crate) struct Events {
    listeners: RefCell<Vec<Listener>>,
    /// Where a listener that throws, or an `error` nobody listens to, is reported.
    log: Log,
}

struct Listener {
    event: String,
    f: Function,
    once: bool,
}

impl Events {
    /// No listeners yet; reports go to `log`.
    pub(crate) fn new(log: Log) -> Events {
        Events {
            listeners: RefCell::new(Vec::new()),
            log,
        }
    }

    /// Adds a listener.
    pub(crate) fn on(&self, event: &str, f: Function, once: bool) {
        self.listeners.borrow_mut().push(Listener {
            event: event.to_owned(),
            f,
            once,
        });
    }

    /// Removes a listener (every registration of that function for that event).
    pub(crate) fn off(&self, event: &str, f: &Function) {
        self.listeners
            .borrow_mut()
            .retain(|l| !(l.event == event && JsValue::from(&l.f) == JsValue::from(f)));
    }

    /// Whether anyone listens to `event`.
    pub(crate) fn has(&self, event: &str) -> bool {
        self.listeners.borrow().iter().any(|l| l.event == event)
    }

    /// Calls the listeners of `event` with `args`. A listener that throws is logged (`ERROR`)
    /// and does not stop the others; an `error` nobody listens to is logged.
    pub(crate) fn emit(&self, event: &str, args: &[JsValue]) {
        let targets: Vec<Function> = {
            let mut listeners = self.listeners.borrow_mut();
            let targets = listeners
                .iter()
                .filter(|l| l.event == event)
                .map(|l| l.f.clone())
                .collect();
            listeners.retain(|l| !(l.once && l.event == event));
            targets
        };
        if targets.is_empty() {
            if event == "error" {
                let extra = args.first().cloned().unwrap_or(JsValue::UNDEFINED);
                self.log.at(level::ERROR, || "error".to_owned(), &extra);
            }
            return;
        }
        let list: Array = args.iter().collect();
        for f in targets {
            if let Err(e) = f.apply(&JsValue::NULL, &list) {
                self.log
                    .at(level::ERROR, || format!("a '{event}' listener threw"), &e);
            }
        }
    }
}
