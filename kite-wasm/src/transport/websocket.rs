//! A session over the WebSocket API: SockJS frames (`o`, `h`, `a[...]`, `c[...]`) or, for a
//! raw websocket, one dnode message per frame.

use std::cell::{Cell, RefCell};
use std::rc::Rc;

use futures_channel::oneshot;
use kite_core::KiteError;
use wasm_bindgen::prelude::*;
use web_sys::{CloseEvent, MessageEvent, WebSocket};

use super::frame::{self, Read};

#[wasm_bindgen(module = "/js/kite-extras.js")]
extern "C" {
    /// A WebSocket seen only as something to send JavaScript strings on (web-sys's
    /// `send_with_str` takes a Rust string, which would be one more copy of every frame).
    type Sender;
    /// `ws.send(data)`, with Node's socket corked until the next tick (`sendFrame` in
    /// kite-extras.js): the frames of one turn leave in one write.
    #[wasm_bindgen(catch, js_name = sendFrame)]
    fn send(ws: &Sender, data: &JsValue) -> Result<(), JsValue>;
}
use super::{Event, Handler, TransportKind, failure};

/// The state shared by the socket's event handlers.
struct Shared {
    kind: TransportKind,
    handler: Handler,
    /// Told whether the session opened (`o` for SockJS, the `open` event for a raw socket).
    opened: RefCell<Option<oneshot::Sender<Result<(), KiteError>>>>,
    /// The session is over: nothing more is reported.
    done: Cell<bool>,
}

impl Shared {
    fn finish(&self, code: u16, reason: String) {
        if let Some(tx) = self.opened.borrow_mut().take() {
            let _ = tx.send(Err(KiteError::generic(format!(
                "closed before opening: {code} {reason}"
            ))));
            self.done.set(true);
            return;
        }
        if !self.done.replace(true) {
            (self.handler)(Event::Closed { code, reason });
        }
    }

    fn on_text(&self, data: JsValue) {
        if self.done.get() {
            return;
        }
        if self.kind == TransportKind::RawWebSocket {
            (self.handler)(Event::Messages(vec![data]));
            return;
        }
        match frame::read(data.unchecked_ref()) {
            Ok(Read::Open) => {
                if let Some(tx) = self.opened.borrow_mut().take() {
                    let _ = tx.send(Ok(()));
                }
            }
            Ok(Read::Heartbeat) => (self.handler)(Event::Heartbeat),
            Ok(Read::Messages(msgs)) => (self.handler)(Event::Messages(msgs)),
            Ok(Read::Close(code, reason)) => self.finish(code, reason),
            // A frame we cannot read: the owner hears of it, the session goes on.
            Err(e) => (self.handler)(Event::Broken(e)),
        }
    }
}

/// An open websocket session. Dropping it closes the socket.
pub(crate) struct Socket {
    ws: WebSocket,
    shared: Rc<Shared>,
    _on_message: Closure<dyn Fn(MessageEvent)>,
    _on_close: Closure<dyn Fn(CloseEvent)>,
    _on_open: Closure<dyn Fn()>,
}

impl Socket {
    /// Connects to `url` and waits until the session is open.
    pub(crate) async fn open(
        url: &str,
        kind: TransportKind,
        handler: Handler,
    ) -> Result<Socket, KiteError> {
        let ws = WebSocket::new(url).map_err(|e| failure(url, &e))?;
        Self::adopt(ws, kind, handler).await
    }

    /// Takes over `ws`, a WebSocket opened by someone else (Kite.js's `connection` option),
    /// and waits until it is open; fails at once if it is closing or closed.
    pub(crate) async fn adopt(
        ws: WebSocket,
        kind: TransportKind,
        handler: Handler,
    ) -> Result<Socket, KiteError> {
        match ws.ready_state() {
            WebSocket::CLOSING | WebSocket::CLOSED => {
                return Err(KiteError::generic(
                    "the given connection is closed: give a live one, or a url",
                ));
            }
            _ => {}
        }
        let already_open = ws.ready_state() == WebSocket::OPEN;
        let (tx, rx) = oneshot::channel();
        let shared = Rc::new(Shared {
            kind,
            handler,
            opened: RefCell::new(Some(tx)),
            done: Cell::new(false),
        });
        let s = shared.clone();
        let on_message = Closure::<dyn Fn(MessageEvent)>::new(move |e: MessageEvent| {
            // Binary frames are not part of the protocol.
            let data = e.data();
            if data.is_string() {
                s.on_text(data);
            }
        });
        let s = shared.clone();
        let on_close = Closure::<dyn Fn(CloseEvent)>::new(move |e: CloseEvent| {
            s.finish(e.code(), e.reason());
        });
        let s = shared.clone();
        let on_open = Closure::<dyn Fn()>::new(move || {
            if s.kind == TransportKind::RawWebSocket
                && let Some(tx) = s.opened.borrow_mut().take()
            {
                let _ = tx.send(Ok(()));
            }
        });
        ws.set_onmessage(Some(on_message.as_ref().unchecked_ref()));
        ws.set_onclose(Some(on_close.as_ref().unchecked_ref()));
        ws.set_onopen(Some(on_open.as_ref().unchecked_ref()));
        // From here on the socket is closed if this future is dropped (a timeout).
        if already_open
            && kind == TransportKind::RawWebSocket
            && let Some(tx) = shared.opened.borrow_mut().take()
        {
            let _ = tx.send(Ok(()));
        }
        let socket = Socket {
            ws,
            shared,
            _on_message: on_message,
            _on_close: on_close,
            _on_open: on_open,
        };
        match rx.await {
            Ok(Ok(())) => Ok(socket),
            Ok(Err(e)) => Err(e),
            Err(_) => Err(KiteError::generic("websocket closed before opening")),
        }
    }

    pub(crate) fn kind(&self) -> TransportKind {
        self.shared.kind
    }

    /// Sends messages: one SockJS frame holding all, or one raw frame each.
    pub(crate) fn send(&self, msgs: Vec<JsValue>) {
        if self.shared.done.get() {
            return;
        }
        let ws: &Sender = self.ws.unchecked_ref();
        let sent = if self.shared.kind == TransportKind::RawWebSocket {
            msgs.iter().try_for_each(|m| send(ws, m))
        } else {
            send(ws, &frame::client_frame(&msgs))
        };
        if sent.is_err() {
            self.shared.finish(1006, "websocket send failed".into());
        }
    }

    /// Closes the socket without reporting it.
    pub(crate) fn close(&self) {
        self.shared.done.set(true);
        self.shared.opened.borrow_mut().take();
        let _ = self.ws.close_with_code(1000);
    }
}

impl Drop for Socket {
    fn drop(&mut self) {
        // The handlers are freed with the socket: detach them before anything can call them.
        self.ws.set_onmessage(None);
        self.ws.set_onclose(None);
        self.ws.set_onopen(None);
        self.close();
    }
}
