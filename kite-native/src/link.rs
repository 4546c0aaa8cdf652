//! The driver of one session: protocol state, outgoing queue, the read loop.

use std::future::poll_fn;
use std::sync::{Arc, Mutex};
use std::task::Poll;

use kite_core::connection::{Connection, Incoming, Limits};
use kite_core::dnode::{CallbackSink, Value};
use kite_core::session::CallId;
use kite_core::{ErrorKind, KiteError, RequestHead};
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

use crate::method::BoxFuture;
use crate::session::{SessionInfo, SessionReceiver, SessionSender, TransportKind};

/// What a response callback stands for: the client session's call (its answer goes to
/// [`Dispatch::answered`]).
pub(crate) type Pending = CallId;

/// One live session with a peer.
pub(crate) struct Link {
    pub(crate) conn: Mutex<Connection<Pending>>,
    pub(crate) tx: SessionSender,
    pub(crate) info: SessionInfo,
    /// Cancelled when the session ends.
    pub(crate) context: CancellationToken,
}

impl std::fmt::Debug for Link {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Link").field("info", &self.info).finish()
    }
}

pub(crate) fn send_error(message: impl Into<String>) -> KiteError {
    KiteError::new(ErrorKind::Send, message)
}

impl Link {
    pub(crate) fn new(tx: SessionSender, info: SessionInfo, limits: Limits) -> Arc<Self> {
        Arc::new(Link {
            conn: Mutex::new(Connection::with_limits(limits)),
            tx,
            info,
            context: CancellationToken::new(),
        })
    }

    pub(crate) fn conn(&self) -> std::sync::MutexGuard<'_, Connection<Pending>> {
        self.conn.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub(crate) fn is_closed(&self) -> bool {
        self.context.is_cancelled() || self.tx.is_closed()
    }

    /// Sends `call`, a request made by the caller whose identity and credentials `head` holds;
    /// returns the id of its response callback.
    pub(crate) fn request(
        &self,
        method: &str,
        head: &RequestHead,
        args: Value,
        call: CallId,
    ) -> Result<u64, KiteError> {
        if self.is_closed() {
            return Err(send_error("can't send, client is closed"));
        }
        // SockJS transports carry messages as JSON strings: encode the request that way once,
        // with the head escaped in advance, instead of escaping all of it per call.
        let sent = if self.info.transport == TransportKind::RawWebSocket {
            let (id, text) = self.conn().request_with_head(method, head, args, call)?;
            (id, self.tx.send(text))
        } else {
            let (id, literal) = self.conn().request_quoted(method, head, args, call)?;
            (id, self.tx.send_quoted(literal))
        };
        if let (id, Err(_)) = sent {
            self.conn().cancel(id);
            return Err(send_error("can't send, client is closed"));
        }
        Ok(sent.0)
    }

    /// Answers the peer's request whose response callback is `id`.
    pub(crate) fn respond(
        &self,
        id: u64,
        result: Result<Value, KiteError>,
    ) -> Result<(), KiteError> {
        if self.is_closed() {
            return Err(send_error("can't send, client is closed"));
        }
        let text = self.conn().respond(id, result);
        self.tx
            .send(text)
            .map_err(|_| send_error("can't send, client is closed"))
    }

    /// Ends the session's context and drops the functions registered on it. The calls in
    /// flight on it are the client session's to fail (with `disconnect`).
    pub(crate) fn shut(&self) {
        self.context.cancel();
        drop(self.conn().drain_pending());
    }
}

impl CallbackSink for Link {
    fn invoke(&self, id: u64, args: Value) -> Result<(), KiteError> {
        if self.is_closed() {
            return Err(send_error("can't send, client is closed"));
        }
        let text = self.conn().invoke(id, args)?;
        self.tx
            .send(text)
            .map_err(|_| send_error("can't send, client is closed"))
    }
}

/// Where the read loop hands what it read: each request to the kite (the future that serves
/// it), each answer to the client session.
pub(crate) trait Dispatch: Send + Sync + 'static {
    fn dispatch(&self, link: &Arc<Link>, request: Box<kite_core::Request>) -> BoxFuture<()>;
    fn answered(&self, call: CallId, result: Result<Value, KiteError>);
    /// Whether requests are served one at a time in arrival order
    /// (`Config::disable_concurrency`).
    fn ordered(&self) -> bool {
        false
    }
}

/// The requests of a connection served one at a time, in arrival order: the one being served
/// and those waiting for it run in one task, which ends with the read loop.
struct Ordered {
    queue: Option<tokio::sync::mpsc::UnboundedSender<BoxFuture<()>>>,
    /// Requests handed to the task and not yet finished.
    busy: Arc<std::sync::atomic::AtomicUsize>,
}

impl Ordered {
    fn new() -> Self {
        Ordered {
            queue: None,
            busy: Arc::default(),
        }
    }

    /// Whether an earlier request is still being served (or waits), so `serve` must queue.
    fn is_busy(&self) -> bool {
        self.busy.load(std::sync::atomic::Ordering::Acquire) > 0
    }

    /// Queues `serve` behind the requests handed over before it.
    fn push(&mut self, serve: BoxFuture<()>) {
        use std::sync::atomic::Ordering::AcqRel;
        let busy = self.busy.clone();
        let queue = self.queue.get_or_insert_with(|| {
            let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<BoxFuture<()>>();
            tokio::spawn(async move {
                while let Some(serve) = rx.recv().await {
                    serve.await;
                    busy.fetch_sub(1, AcqRel);
                }
            });
            tx
        });
        self.busy.fetch_add(1, AcqRel);
        if let Err(lost) = queue.send(serve) {
            // The task ended before the queue, which only a panic does: serve on its own.
            tokio::spawn(lost.0);
        }
    }
}

/// Reads messages until the session ends. Responses complete their calls, callbacks run here
/// in order (as Go does by default), requests are served by `dispatch`: a handler that
/// finishes without waiting (most do) runs right here, so its answer leaves without a hop
/// between tasks; one that waits goes on in a task of its own, so calls never wait for each
/// other, unless [`Dispatch::ordered`]: then a request that waits keeps the next ones waiting
/// (in a task beside the read loop, which goes on reading answers and callbacks).
pub(crate) async fn read_loop(
    link: Arc<Link>,
    mut rx: SessionReceiver,
    dispatch: Arc<dyn Dispatch>,
) {
    let sink: Arc<dyn CallbackSink> = link.clone();
    let mut ordered = dispatch.ordered().then(Ordered::new);
    while let Some(text) = rx.recv().await {
        let incoming = link.conn().receive(&text, &sink);
        match incoming {
            Ok(Incoming::Request(req)) => {
                let mut serve = dispatch.dispatch(&link, req);
                if let Some(ordered) = ordered.as_mut().filter(|o| o.is_busy()) {
                    ordered.push(serve);
                    continue;
                }
                let finished = poll_fn(|cx| Poll::Ready(serve.as_mut().poll(cx).is_ready())).await;
                if !finished {
                    match ordered.as_mut() {
                        Some(ordered) => ordered.push(serve),
                        None => drop(tokio::spawn(serve)),
                    }
                }
            }
            Ok(Incoming::Response { pending, result }) => dispatch.answered(pending, result),
            Ok(Incoming::Callback { callback, args }) => {
                let run = std::panic::AssertUnwindSafe(|| callback.call_with(args));
                match std::panic::catch_unwind(run) {
                    Ok(Ok(())) => {}
                    Ok(Err(e)) => debug!(error = %e, "forwarding a callback failed"),
                    Err(_) => warn!("a callback panicked; the connection goes on"),
                }
            }
            Ok(Incoming::InvalidRequest { response, error }) => {
                warn!(session = %link.info.id, error = %error, "invalid request");
                if let Some(id) = response.as_ref().and_then(kite_core::Callback::remote_id) {
                    let _ = link.respond(id, Err(error));
                }
            }
            Ok(Incoming::UnknownCallback(id)) => {
                // A late answer to a call that timed out, or a peer invoking a response
                // callback twice: nothing waits for it any more.
                debug!(session = %link.info.id, id, "unknown or already answered callback");
            }
            Err(e) => {
                warn!(session = %link.info.id, error = %e, "dropping malformed message");
            }
        }
    }
    link.shut();
}
