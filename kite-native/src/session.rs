//! A message-oriented session with one peer, independent of the transport under it.
//!
//! Every transport (SockJS websocket, raw websocket, xhr-polling, xhr-streaming; server side and
//! client side) ends in a [`Session`]: a stream of whole text messages from the peer (dnode JSON,
//! SockJS framing already removed) and a [`SessionSender`] that queues messages and closes. The kite
//! runtime only ever sees sessions, so it runs unchanged over any transport.

use std::fmt;
use std::net::SocketAddr;

use tokio::sync::mpsc;

/// Which transport carries a session.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TransportKind {
    /// SockJS over websocket (`/kite/<server>/<session>/websocket`).
    WebSocket,
    /// Plain websocket with no SockJS framing (`/kite/websocket`, Kite.js's default transport).
    RawWebSocket,
    /// SockJS xhr-polling (`xhr` + `xhr_send`).
    XhrPolling,
    /// SockJS xhr-streaming (`xhr_streaming` + `xhr_send`).
    XhrStreaming,
}

impl TransportKind {
    /// The SockJS name of the transport (`websocket`, `xhr-polling`, ...).
    pub fn name(self) -> &'static str {
        match self {
            TransportKind::WebSocket => "websocket",
            TransportKind::RawWebSocket => "raw-websocket",
            TransportKind::XhrPolling => "xhr-polling",
            TransportKind::XhrStreaming => "xhr-streaming",
        }
    }
}

impl fmt::Display for TransportKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Facts about a session, for logs and hooks.
#[derive(Debug, Clone)]
pub struct SessionInfo {
    /// The transport in use.
    pub transport: TransportKind,
    /// The peer's address, when the transport knows it.
    pub remote_addr: Option<SocketAddr>,
    /// The SockJS session id (random for websocket sessions).
    pub id: String,
}

/// What a [`SessionSender`] queues for the transport's writer.
#[derive(Debug)]
pub enum Outgoing {
    /// One whole message (dnode JSON). The transport frames it (`a[...]`), possibly batched
    /// with other queued messages.
    Message(String),
    /// Close the session with this SockJS close code and reason (`c[code,"reason"]`).
    Close(u16, String),
}

/// The error returned when sending on a session that has ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("session is closed")]
pub struct SessionClosed;

/// The sending half of a session. Cheap to clone; sends never block.
#[derive(Debug, Clone)]
pub struct SessionSender {
    tx: mpsc::UnboundedSender<Outgoing>,
}

impl SessionSender {
    /// Wraps the channel a transport's writer task drains.
    pub fn new(tx: mpsc::UnboundedSender<Outgoing>) -> Self {
        SessionSender { tx }
    }

    /// Queues one message for the peer.
    pub fn send(&self, msg: String) -> Result<(), SessionClosed> {
        self.tx
            .send(Outgoing::Message(msg))
            .map_err(|_| SessionClosed)
    }

    /// Asks the transport to close the session with a SockJS close frame.
    pub fn close(&self, code: u16, reason: impl Into<String>) {
        let _ = self.tx.send(Outgoing::Close(code, reason.into()));
    }

    /// Whether the transport's writer is gone.
    pub fn is_closed(&self) -> bool {
        self.tx.is_closed()
    }

    /// Resolves when the transport's writer is gone.
    pub async fn closed(&self) {
        self.tx.closed().await
    }
}

/// One session with a peer: incoming messages, a sender, and facts about it.
///
/// The transport owns the socket. It ends the session (so [`Session::rx`] yields `None`) when the
/// peer goes away, on a transport error, on a broken or oversized frame, or after it has written
/// a close frame queued with [`SessionSender::close`].
#[derive(Debug)]
pub struct Session {
    /// Whole messages from the peer, in order.
    pub rx: mpsc::Receiver<String>,
    /// Queue messages to the peer.
    pub tx: SessionSender,
    /// Transport, peer address, session id.
    pub info: SessionInfo,
}

/// Capacity of the incoming message channel of a session. A full channel makes the transport
/// stop reading, which pushes back on the peer through TCP.
pub const INCOMING_CAPACITY: usize = 256;

/// Creates the channels of a new session. The transport keeps the returned
/// `(mpsc::Sender<String>, mpsc::UnboundedReceiver<Outgoing>)` and hands the [`Session`] to the
/// runtime.
pub fn channel(
    info: SessionInfo,
) -> (
    Session,
    mpsc::Sender<String>,
    mpsc::UnboundedReceiver<Outgoing>,
) {
    let (in_tx, in_rx) = mpsc::channel(INCOMING_CAPACITY);
    let (out_tx, out_rx) = mpsc::unbounded_channel();
    (
        Session {
            rx: in_rx,
            tx: SessionSender::new(out_tx),
            info,
        },
        in_tx,
        out_rx,
    )
}

/// For transport writers: `first` plus every message queued right now, to send as one batch.
/// Stops at a close request, which is returned so the writer sends the batch and then closes.
pub fn drain_batch(
    first: String,
    rx: &mut mpsc::UnboundedReceiver<Outgoing>,
) -> (Vec<String>, Option<(u16, String)>) {
    let mut batch = vec![first];
    while let Ok(next) = rx.try_recv() {
        match next {
            Outgoing::Message(m) => batch.push(m),
            Outgoing::Close(code, reason) => return (batch, Some((code, reason))),
        }
    }
    (batch, None)
}

/// For transport readers: hands `msgs` to the runtime in order, waiting while its queue is
/// full. `false` when the runtime has dropped the session.
pub async fn deliver(tx: &mpsc::Sender<String>, msgs: Vec<String>) -> bool {
    for m in msgs {
        if tx.send(m).await.is_err() {
            return false;
        }
    }
    true
}
