//! SockJS sessions over `fetch`: `xhr_streaming` (one long response read line by line as it
//! arrives, re-opened whenever the server ends it) or `xhr` polling (one response per batch).
//! Messages go out with `xhr_send`, one request at a time, so they arrive in order.

use std::cell::{Cell, RefCell};
use std::rc::Rc;

use js_sys::{Reflect, Uint8Array};
use kite_core::KiteError;
use wasm_bindgen::{JsCast, JsValue};
use wasm_bindgen_futures::{JsFuture, spawn_local};
use web_sys::{AbortController, ReadableStreamDefaultReader, Response};

use super::frame::{self, Read};
use super::{Event, Handler, TransportKind, failure};

struct Inner {
    /// `<url>/<server>/<session>`.
    url: String,
    kind: TransportKind,
    handler: Handler,
    /// Over: nothing more is sent or reported.
    done: Cell<bool>,
    /// Aborts the receiving request in flight.
    receiving: RefCell<Option<AbortController>>,
    /// The reader of the xhr-streaming response being read: cancelled on close. (Aborting
    /// alone is not enough in Node, whose fetch holds the controller only weakly through the
    /// request, which is gone once sent.)
    reader: RefCell<Option<ReadableStreamDefaultReader>>,
    /// Messages waiting for `xhr_send`.
    outbox: RefCell<Vec<JsValue>>,
    /// An `xhr_send` is in flight.
    sending: Cell<bool>,
}

/// An open xhr session. Dropping it ends the session.
pub(crate) struct Session {
    inner: Rc<Inner>,
}

impl Session {
    /// Opens a session at `url` (`<base>/<server>/<session>`) and waits for its open frame.
    pub(crate) async fn open(
        url: &str,
        kind: TransportKind,
        handler: Handler,
    ) -> Result<Session, KiteError> {
        let inner = Rc::new(Inner {
            url: url.to_owned(),
            kind,
            handler,
            done: Cell::new(false),
            receiving: RefCell::new(None),
            reader: RefCell::new(None),
            outbox: RefCell::new(Vec::new()),
            sending: Cell::new(false),
        });
        // Aborts the opening request if this future is dropped (a timeout).
        let session = Session {
            inner: inner.clone(),
        };
        if kind == TransportKind::XhrStreaming {
            let mut lines = inner.stream().await?;
            loop {
                match lines.next_line().await? {
                    None => return Err(KiteError::generic("xhr-streaming ended before opening")),
                    Some(line) => match frame::read_line(&line) {
                        Ok(Read::Open) => break,
                        Ok(Read::Heartbeat) => continue,
                        _ => return Err(unexpected(&line)),
                    },
                }
            }
            spawn_local(inner.clone().read_stream(lines));
        } else {
            let body = inner.poll().await?;
            let mut frames = body.lines();
            if !matches!(frames.next().map(frame::read_line), Some(Ok(Read::Open))) {
                return Err(unexpected(&body));
            }
            spawn_local(inner.clone().read_polls());
        }
        Ok(session)
    }

    pub(crate) fn kind(&self) -> TransportKind {
        self.inner.kind
    }

    /// Queues messages; they go out in order, batched while a send is in flight.
    pub(crate) fn send(&self, msgs: Vec<JsValue>) {
        let inner = &self.inner;
        if inner.done.get() {
            return;
        }
        inner.outbox.borrow_mut().extend(msgs);
        if !inner.sending.replace(true) {
            spawn_local(inner.clone().flush());
        }
    }

    /// Ends the session without reporting it.
    pub(crate) fn close(&self) {
        self.inner.done.set(true);
        self.inner.abort();
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        self.close();
    }
}

fn unexpected(body: &str) -> KiteError {
    let mut shown: String = body.chars().take(80).collect();
    if shown.len() < body.len() {
        shown.push('…');
    }
    KiteError::generic(format!("unexpected SockJS answer: \"{shown}\""))
}

impl Inner {
    fn abort(&self) {
        if let Some(c) = self.receiving.borrow_mut().take() {
            c.abort();
        }
        if let Some(r) = self.reader.borrow_mut().take() {
            // Awaited so that its rejection (the request was aborted first) is handled.
            let cancelled = JsFuture::from(r.cancel());
            spawn_local(async move {
                let _ = cancelled.await;
            });
        }
    }

    /// Ends the session and reports it (once).
    fn fail(&self, code: u16, reason: String) {
        if !self.done.replace(true) {
            self.abort();
            (self.handler)(Event::Closed { code, reason });
        }
    }

    /// Hands one frame to the owner.
    fn dispatch(&self, line: &str) {
        if self.done.get() || line.is_empty() {
            return;
        }
        match frame::read_line(line) {
            Ok(Read::Open) => {}
            Ok(Read::Heartbeat) => (self.handler)(Event::Heartbeat),
            Ok(Read::Messages(msgs)) => (self.handler)(Event::Messages(msgs)),
            Ok(Read::Close(code, reason)) => self.fail(code, reason),
            Err(e) => (self.handler)(Event::Broken(e)),
        }
    }

    /// A POST to `<url>/<suffix>` (aborted by [`Inner::abort`] when `receiving`).
    async fn post(
        &self,
        suffix: &str,
        body: Option<JsValue>,
        receiving: bool,
    ) -> Result<Response, KiteError> {
        let url = format!("{}/{suffix}", self.url);
        let mut signal = None;
        if receiving {
            let controller = AbortController::new().map_err(|e| failure(&url, &e))?;
            signal = Some(controller.signal());
            *self.receiving.borrow_mut() = Some(controller);
        }
        super::fetch_ok(&url, "POST", body.as_ref(), signal.as_ref()).await
    }

    /// One `xhr` poll: its frames, one per line.
    async fn poll(&self) -> Result<String, KiteError> {
        let response = self.post("xhr", None, true).await?;
        super::text(&response, &format!("{}/xhr", self.url)).await
    }

    /// Polls until the session ends.
    async fn read_polls(self: Rc<Self>) {
        while !self.done.get() {
            match self.poll().await {
                Ok(body) => body.lines().for_each(|line| self.dispatch(line)),
                Err(e) => self.fail(1006, format!("xhr-polling: {}", e.message)),
            }
        }
    }

    /// Starts an `xhr_streaming` response.
    async fn stream(&self) -> Result<Lines, KiteError> {
        let response = self.post("xhr_streaming", None, true).await?;
        let body = response
            .body()
            .ok_or_else(|| KiteError::generic("xhr-streaming: the response has no body"))?;
        let reader: ReadableStreamDefaultReader = body.get_reader().unchecked_into();
        *self.reader.borrow_mut() = Some(reader.clone());
        Ok(Lines {
            reader,
            buf: Vec::new(),
        })
    }

    /// Reads streamed frames until the session ends, starting a new response whenever the
    /// server ends one (it does after a few hundred KiB).
    async fn read_stream(self: Rc<Self>, mut lines: Lines) {
        loop {
            match lines.next_line().await {
                Ok(Some(line)) => self.dispatch(&line),
                Ok(None) if !self.done.get() => match self.stream().await {
                    Ok(next) => lines = next,
                    Err(e) => self.fail(1006, format!("xhr-streaming: {}", e.message)),
                },
                Err(e) => self.fail(1006, format!("xhr-streaming: {}", e.message)),
                Ok(None) => {}
            }
            if self.done.get() {
                return;
            }
        }
    }

    /// Sends what the outbox holds, batch after batch, until it is empty.
    async fn flush(self: Rc<Self>) {
        loop {
            let batch = std::mem::take(&mut *self.outbox.borrow_mut());
            if batch.is_empty() || self.done.get() {
                self.sending.set(false);
                return;
            }
            let body = frame::client_frame(&batch);
            if let Err(e) = self.post("xhr_send", Some(body), false).await {
                self.sending.set(false);
                self.fail(1006, format!("xhr_send: {}", e.message));
                return;
            }
        }
    }
}

/// Lines of a streamed response body.
struct Lines {
    reader: ReadableStreamDefaultReader,
    buf: Vec<u8>,
}

impl Lines {
    /// The next line without its newline; `None` when the body ended.
    async fn next_line(&mut self) -> Result<Option<String>, KiteError> {
        let mut searched = 0;
        loop {
            if let Some(pos) = self.buf[searched..].iter().position(|&b| b == b'\n') {
                let end = searched + pos;
                let mut rest = self.buf.split_off(end + 1);
                std::mem::swap(&mut rest, &mut self.buf);
                rest.pop(); // the newline
                // Not UTF-8 (a broken server): an empty line, which is skipped.
                return Ok(Some(String::from_utf8(rest).unwrap_or_default()));
            }
            searched = self.buf.len();
            let chunk = JsFuture::from(self.reader.read())
                .await
                .map_err(|e| failure("reading the stream", &e))?;
            if Reflect::get(&chunk, &JsValue::from_str("done"))
                .ok()
                .and_then(|d| d.as_bool())
                .unwrap_or(true)
            {
                return Ok(None);
            }
            if let Ok(value) = Reflect::get(&chunk, &JsValue::from_str("value")) {
                let bytes: Uint8Array = value.unchecked_into();
                self.buf.extend_from_slice(&bytes.to_vec());
            }
        }
    }
}
