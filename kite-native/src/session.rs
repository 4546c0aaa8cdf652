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

use futures_util::Stream;
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
    /// One whole message already encoded as a JSON string literal (quotes and escapes
    /// included), the form in which SockJS frames carry messages: SockJS writers put it in a
    /// frame as it is, sparing the escaping of text the sender had escaped once and reuses.
    Quoted(String),
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

    /// Queues one message given as its JSON string literal (see [`Outgoing::Quoted`]).
    pub fn send_quoted(&self, literal: String) -> Result<(), SessionClosed> {
        self.tx
            .send(Outgoing::Quoted(literal))
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

/// The receiving half of a session: whole messages from the peer, in order; `None` once the
/// session has ended. Dropping it ends the session.
pub struct SessionReceiver {
    inner: Receiver,
}

enum Receiver {
    Channel(mpsc::Receiver<String>),
    Stream(Pin<Box<dyn Stream<Item = String> + Send>>),
}

impl fmt::Debug for SessionReceiver {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self.inner {
            Receiver::Channel(_) => "SessionReceiver(channel)",
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

    /// Messages that a transport produces when polled (it reads its socket then).
    pub fn from_stream(stream: impl Stream<Item = String> + Send + 'static) -> Self {
        SessionReceiver {
            inner: Receiver::Stream(Box::pin(stream)),
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
            rx: SessionReceiver::from_channel(in_rx),
            tx: SessionSender::new(out_tx),
            info,
        },
        in_tx,
        out_rx,
    )
}

/// Bytes of messages a transport writer puts in one frame (one websocket message, one
/// `xhr_send` body, one poll answer) before starting another; a single larger message still
/// goes alone. Keeps frames well under every peer's limit while batching many small calls.
pub const BATCH_BUDGET: usize = 64 * 1024;

/// One message of a [`Batch`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Text {
    /// The message itself.
    Plain(String),
    /// The message as a JSON string literal.
    Quoted(String),
}

impl Text {
    /// The message itself (a quoted one is decoded).
    pub fn into_plain(self) -> String {
        match self {
            Text::Plain(s) => s,
            Text::Quoted(literal) => kite_core::json::parse_string(&literal).unwrap_or(literal),
        }
    }

    /// Bytes it takes in a frame, about.
    pub fn len(&self) -> usize {
        match self {
            Text::Plain(s) | Text::Quoted(s) => s.len(),
        }
    }

    /// Whether it is empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Appends `texts` as the comma-separated JSON strings inside a SockJS frame's brackets
/// (quoted texts as they are).
pub fn write_frame_items(out: &mut Vec<u8>, texts: &[Text]) {
    for (i, t) in texts.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        match t {
            Text::Plain(s) => kite_core::json::write_str(out, s),
            Text::Quoted(literal) => out.extend_from_slice(literal.as_bytes()),
        }
    }
}

/// A batch of queued output for a transport writer.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Batch {
    /// Messages to send together, in order (may be empty before a close).
    pub messages: Vec<Text>,
    /// Close the session after sending `messages`.
    pub close: Option<(u16, String)>,
}

/// The writer's side of a session's outgoing queue: hands out batches of what is queued, at
/// most [`BATCH_BUDGET`] bytes each (a message that does not fit waits for the next batch).
#[derive(Debug)]
pub struct Outbox {
    rx: mpsc::UnboundedReceiver<Outgoing>,
    carry: Option<Outgoing>,
    budget: usize,
    yield_score: u8,
    batches: u32,
}

impl Outbox {
    /// Wraps the receiver of a session's [`SessionSender`].
    pub fn new(rx: mpsc::UnboundedReceiver<Outgoing>) -> Self {
        Outbox {
            rx,
            carry: None,
            budget: BATCH_BUDGET,
            yield_score: 0,
            batches: 0,
        }
    }

    /// Waits for output, then takes everything queued up to the budget. `None` when every
    /// sender is gone and nothing is left.
    ///
    /// Between the first message and taking the rest, the writer may let every task that is
    /// already runnable run first: callers woken by the same incoming frame then queue their
    /// calls before the frame is written, instead of each call leaving in its own frame (tokio
    /// runs a woken task, here the writer, before the other runnable ones).
    pub async fn next_batch(&mut self) -> Option<Batch> {
        let first = match self.carry.take() {
            Some(item) => item,
            None => self.rx.recv().await?,
        };
        if !matches!(first, Outgoing::Close(..)) && self.rx.is_empty() && self.should_yield() {
            tokio::task::yield_now().await;
            self.yielded(!self.rx.is_empty());
        }
        Some(self.batch_from(first))
    }

    /// Yielding costs a trip through the scheduler (tens of µs when nothing else runs), so the
    /// writer keeps doing it only while it pays: while it gathers more messages (many calls
    /// in flight), and once every 32 batches to notice when they come back.
    fn should_yield(&mut self) -> bool {
        self.batches = self.batches.wrapping_add(1);
        self.yield_score > 0 || self.batches % 32 == 0
    }

    fn yielded(&mut self, gathered: bool) {
        self.yield_score = if gathered {
            (self.yield_score + 2).min(8)
        } else {
            self.yield_score.saturating_sub(1)
        };
    }

    /// Takes what is queued right now, up to the budget, without waiting.
    pub fn try_batch(&mut self) -> Option<Batch> {
        let first = match self.carry.take() {
            Some(item) => item,
            None => self.rx.try_recv().ok()?,
        };
        Some(self.batch_from(first))
    }

    fn batch_from(&mut self, first: Outgoing) -> Batch {
        let mut batch = Batch::default();
        let mut size = 0;
        let mut next = Some(first);
        while let Some(item) = next.take() {
            let text = match item {
                Outgoing::Message(m) => Text::Plain(m),
                Outgoing::Quoted(q) => Text::Quoted(q),
                Outgoing::Close(code, reason) => {
                    batch.close = Some((code, reason));
                    break;
                }
            };
            if !batch.messages.is_empty() && size + text.len() > self.budget {
                self.carry = Some(match text {
                    Text::Plain(m) => Outgoing::Message(m),
                    Text::Quoted(q) => Outgoing::Quoted(q),
                });
                break;
            }
            size += text.len();
            batch.messages.push(text);
            next = self.rx.try_recv().ok();
        }
        batch
    }
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

    fn plain(texts: &[&str]) -> Vec<Text> {
        texts.iter().map(|t| Text::Plain((*t).to_owned())).collect()
    }

    #[test]
    fn quoted_and_plain_texts_make_the_same_frame() {
        let msg = "{\"method\":\"<x>\"}";
        let mut quoted = Vec::new();
        kite_core::json::write_str(&mut quoted, msg);
        let quoted = String::from_utf8(quoted).unwrap();
        let (mut a, mut b) = (Vec::new(), Vec::new());
        write_frame_items(&mut a, &[Text::Plain(msg.into()), Text::Plain("y".into())]);
        write_frame_items(
            &mut b,
            &[Text::Quoted(quoted.clone()), Text::Plain("y".into())],
        );
        assert_eq!(a, b);
        assert_eq!(Text::Quoted(quoted).into_plain(), msg);
    }

    fn queue(items: Vec<Outgoing>) -> Outbox {
        let (tx, rx) = mpsc::unbounded_channel();
        for i in items {
            tx.send(i).unwrap();
        }
        Outbox::new(rx)
    }

    #[tokio::test]
    async fn batches_stop_at_the_budget_and_at_a_close() {
        let big = "x".repeat(BATCH_BUDGET / 2 + 1);
        let mut out = queue(vec![
            Outgoing::Message("a".into()),
            Outgoing::Message(big.clone()),
            Outgoing::Message(big.clone()),
            Outgoing::Message("b".into()),
            Outgoing::Close(3000, "Go away!".into()),
            Outgoing::Message("after".into()),
        ]);
        let b = out.next_batch().await.unwrap();
        assert_eq!(b.messages, plain(&["a", &big]));
        assert_eq!(b.close, None);
        let b = out.next_batch().await.unwrap();
        assert_eq!(b.messages, plain(&[&big, "b"]));
        assert_eq!(b.close, Some((3000, "Go away!".to_owned())));
        let b = out.try_batch().unwrap();
        assert_eq!(b.messages, plain(&["after"]));
        assert!(out.try_batch().is_none());
    }

    #[tokio::test]
    async fn a_message_over_the_budget_goes_alone() {
        let huge = "y".repeat(BATCH_BUDGET * 3);
        let mut out = queue(vec![
            Outgoing::Message(huge.clone()),
            Outgoing::Message("z".into()),
        ]);
        assert_eq!(out.next_batch().await.unwrap().messages, plain(&[&huge]));
        assert_eq!(out.next_batch().await.unwrap().messages, plain(&["z"]));
    }
}
