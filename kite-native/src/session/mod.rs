//! A message-oriented session with one peer, independent of the transport under it.
//!
//! Every transport (SockJS websocket, raw websocket, xhr-polling, xhr-streaming; server side and
//! client side) ends in a [`Session`]: a [`SessionReceiver`] of whole text messages from the peer
//! (dnode JSON, SockJS framing already removed) and a [`SessionSender`] that queues messages and
//! closes. The kite runtime only ever sees sessions, so it runs unchanged over any transport.
//!
//! Websocket sessions are pulled: receiving reads the socket in the receiver's own task, so a
//! message goes from the socket to its handler without a hop between tasks. Messages of the XHR
//! transports arrive through a channel from the HTTP handlers.

use std::fmt;
use std::future::poll_fn;
use std::net::SocketAddr;
use std::pin::Pin;
use std::task::{Context, Poll};

use std::sync::Arc;

use futures_util::Stream;
use tokio::sync::{Semaphore, mpsc};

mod outgoing;

#[cfg(feature = "server")]
pub(crate) use outgoing::Reported;

pub use outgoing::{
    BACKLOG_THRESHOLD, BATCH_BUDGET, Backlog, Batch, Outbox, Outgoing, QUEUE_OVERFLOW,
    SessionClosed, SessionSender, Text, outgoing, outgoing_within, write_frame_items,
};

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
    /// SockJS eventsource (`eventsource` + `xhr_send`).
    EventSource,
    /// SockJS htmlfile (`htmlfile` + `xhr_send`).
    HtmlFile,
    /// SockJS JSONP polling (`jsonp` + `jsonp_send`).
    JsonpPolling,
}

impl TransportKind {
    /// The SockJS name of the transport (`websocket`, `xhr-polling`, ...).
    pub fn name(self) -> &'static str {
        match self {
            TransportKind::WebSocket => "websocket",
            TransportKind::RawWebSocket => "raw-websocket",
            TransportKind::XhrPolling => "xhr-polling",
            TransportKind::XhrStreaming => "xhr-streaming",
            TransportKind::EventSource => "eventsource",
            TransportKind::HtmlFile => "htmlfile",
            TransportKind::JsonpPolling => "jsonp-polling",
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

/// The receiving half of a session: whole messages from the peer, in order; `None` once the
/// session has ended. Dropping it ends the session.
pub struct SessionReceiver {
    inner: Receiver,
}

enum Receiver {
    Channel(mpsc::Receiver<String>),
    /// Each message holds its share of the session's incoming budget until taken.
    Budgeted(Budgeted),
    Stream(Pin<Box<dyn Stream<Item = String> + Send>>),
}

impl fmt::Debug for SessionReceiver {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self.inner {
            Receiver::Channel(_) | Receiver::Budgeted(_) => "SessionReceiver(channel)",
            Receiver::Stream(_) => "SessionReceiver(stream)",
        })
    }
}

impl SessionReceiver {
    /// Messages that a transport pushes into a channel.
    pub fn from_channel(rx: mpsc::Receiver<String>) -> Self {
        SessionReceiver {
            inner: Receiver::Channel(rx),
        }
    }

    /// Messages that a transport produces when polled (it reads its socket then). Fused: once
    /// it has ended it keeps answering `None` (some streams panic when polled again).
    pub fn from_stream(stream: impl Stream<Item = String> + Send + 'static) -> Self {
        SessionReceiver {
            inner: Receiver::Stream(Box::pin(futures_util::StreamExt::fuse(stream))),
        }
    }

    /// The next message; `None` when the session has ended.
    pub async fn recv(&mut self) -> Option<String> {
        poll_fn(|cx| self.poll_recv(cx)).await
    }

    /// Polls for the next message.
    pub fn poll_recv(&mut self, cx: &mut Context<'_>) -> Poll<Option<String>> {
        match &mut self.inner {
            Receiver::Channel(rx) => rx.poll_recv(cx),
            Receiver::Budgeted(b) => {
                b.rx.poll_recv(cx)
                    .map(|m| m.inspect(|m| b.room.add_permits(cost(m, b.max) as usize)))
            }
            Receiver::Stream(s) => s.as_mut().poll_next(cx),
        }
    }
}

impl Stream for SessionReceiver {
    type Item = String;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<String>> {
        self.get_mut().poll_recv(cx)
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
    pub rx: SessionReceiver,
    /// Queue messages to the peer.
    pub tx: SessionSender,
    /// Transport, peer address, session id.
    pub info: SessionInfo,
}

/// Capacity of the incoming message channel of a session. A full channel makes the transport
/// stop reading, which pushes back on the peer through TCP.
pub const INCOMING_CAPACITY: usize = 256;

/// Creates the channels of a new session whose messages arrive through a channel (the XHR
/// transports). The transport keeps the returned `mpsc::Sender<String>` (for incoming messages)
/// and [`Outbox`] (for outgoing ones) and hands the [`Session`] to the runtime.
pub fn channel(info: SessionInfo) -> (Session, mpsc::Sender<String>, Outbox) {
    let (in_tx, in_rx) = mpsc::channel(INCOMING_CAPACITY);
    let (tx, outbox) = outgoing();
    (
        Session {
            rx: SessionReceiver::from_channel(in_rx),
            tx,
            info,
        },
        in_tx,
        outbox,
    )
}

/// Bytes a message is charged in an [`IncomingSender`]'s budget besides its text: what holding
/// it costs, so that many empty messages cannot hold more memory than the budget says.
const MESSAGE_OVERHEAD: usize = 64;

/// What `m` is charged in a budget of `max` bytes (at most the whole budget).
fn cost(m: &str, max: usize) -> u32 {
    let cost = m.len().saturating_add(MESSAGE_OVERHEAD).min(max);
    u32::try_from(cost).unwrap_or(u32::MAX)
}

/// The runtime's side of a budgeted channel: taking a message gives its share of the budget
/// back; dropping it closes the budget, so that a transport waiting for room learns the
/// runtime is gone.
struct Budgeted {
    rx: mpsc::UnboundedReceiver<String>,
    room: Arc<Semaphore>,
    max: usize,
}

impl Drop for Budgeted {
    fn drop(&mut self) {
        self.room.close();
    }
}

/// The transport's side of a session's incoming messages, holding at most a budget of bytes of
/// messages that the runtime has not taken yet (see [`channel_within`]). Cheap to clone.
#[derive(Debug, Clone)]
pub struct IncomingSender {
    tx: mpsc::UnboundedSender<String>,
    room: Arc<Semaphore>,
    max: usize,
}

impl IncomingSender {
    /// Hands `msgs` to the runtime in order, waiting while they would not fit in the budget
    /// (a message larger than the whole budget waits for the queue to be empty). `false` when
    /// the runtime has dropped the session.
    pub async fn deliver(&self, msgs: Vec<String>) -> bool {
        for m in msgs {
            if self.tx.is_closed() {
                return false;
            }
            match self.room.acquire_many(cost(&m, self.max)).await {
                // Given back when the runtime takes the message.
                Ok(permit) => permit.forget(),
                Err(_) => return false,
            }
            if self.tx.send(m).is_err() {
                return false;
            }
        }
        true
    }
}

/// Like [`channel`], but the incoming messages waiting for the runtime hold at most
/// `max_bytes` (each charged its length plus a small overhead), whatever their number: the
/// transport's [`IncomingSender::deliver`] waits for room, which pushes back on the peer. The
/// SockJS server's HTTP sessions use it.
pub fn channel_within(info: SessionInfo, max_bytes: usize) -> (Session, IncomingSender, Outbox) {
    let max = max_bytes.clamp(MESSAGE_OVERHEAD, u32::MAX as usize);
    let room = Arc::new(Semaphore::new(max));
    let (tx, rx) = mpsc::unbounded_channel();
    let (out, outbox) = outgoing();
    (
        Session {
            rx: SessionReceiver {
                inner: Receiver::Budgeted(Budgeted {
                    rx,
                    room: room.clone(),
                    max,
                }),
            },
            tx: out,
            info,
        },
        IncomingSender { tx, room, max },
        outbox,
    )
}

/// For channel transports: hands `msgs` to the runtime in order, waiting while its queue is
/// full. `false` when the runtime has dropped the session.
pub async fn deliver(tx: &mpsc::Sender<String>, msgs: Vec<String>) -> bool {
    for m in msgs {
        if tx.send(m).await.is_err() {
            return false;
        }
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A receiver that has ended answers `None` again, even over a stream that panics when
    /// polled after its end (as websocket sessions' `unfold` streams do).
    #[tokio::test]
    async fn an_ended_stream_receiver_keeps_answering_none() {
        let stream = futures_util::stream::unfold(0u8, |n| async move {
            (n == 0).then(|| ("only".to_owned(), 1))
        });
        let mut rx = SessionReceiver::from_stream(stream);
        assert_eq!(rx.recv().await.as_deref(), Some("only"));
        assert_eq!(rx.recv().await, None);
        assert_eq!(rx.recv().await, None);
    }

    fn info() -> SessionInfo {
        SessionInfo {
            transport: TransportKind::XhrPolling,
            remote_addr: None,
            id: "test".into(),
        }
    }

    /// What waits for the runtime holds at most the budget: a send waits for room (the clock is
    /// paused, so "still waiting" is certain, not a guess).
    #[tokio::test(start_paused = true)]
    async fn incoming_messages_wait_within_their_byte_budget() {
        let wait = std::time::Duration::from_secs(60);
        let (mut session, tx, _out) = channel_within(info(), 1000);
        assert!(tx.deliver(vec!["a".repeat(500)]).await);
        let mut second = Box::pin(tx.deliver(vec!["b".repeat(500)]));
        assert!(
            tokio::time::timeout(wait, &mut second).await.is_err(),
            "no room for a second one yet"
        );
        assert_eq!(session.rx.recv().await.map(|m| m.len()), Some(500));
        assert!(second.await, "room once the first was taken");

        // Larger than the whole budget: it waits for the queue to be empty, then goes.
        let mut huge = Box::pin(tx.deliver(vec!["c".repeat(5000)]));
        assert!(tokio::time::timeout(wait, &mut huge).await.is_err());
        assert_eq!(session.rx.recv().await.map(|m| m.len()), Some(500));
        assert!(huge.await);
        assert_eq!(session.rx.recv().await.map(|m| m.len()), Some(5000));

        // Many empty messages are charged too.
        let mut empties = Box::pin(tx.deliver(vec![String::new(); 100]));
        assert!(tokio::time::timeout(wait, &mut empties).await.is_err());
        drop(session);
        assert!(!empties.await, "the runtime is gone");
        assert!(!tx.deliver(vec!["late".into()]).await);
    }
}
