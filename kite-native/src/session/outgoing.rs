//! The outgoing side of a session: [`SessionSender`] queues messages and close requests, the
//! transport's writer takes them from its [`Outbox`] in [`Batch`]es.
//!
//! The queue is a mutex around a `VecDeque` and the writer's waker. It allocates nothing until
//! a message is queued, which matters for servers holding many idle connections (an unbounded
//! tokio channel reserves a block of 32 slots per connection up front).
//!
//! A server's queues have a budget ([`outgoing_within`]): the bytes of the messages queued and not
//! yet taken by the writer. A peer that asks for answers and does not read them makes the queue
//! grow; past the budget the queue is dropped at once (its memory returned), the writer is told
//! to close the session with [`QUEUE_OVERFLOW`], and every later send fails with
//! [`SessionClosed`]. A message is always queued when the queue is empty, so one message larger
//! than the budget still goes; the budget bounds what waits behind it.

use std::collections::VecDeque;
use std::future::poll_fn;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Poll, Waker};

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

impl Outgoing {
    /// Bytes it holds, as counted against a queue's budget.
    pub fn len(&self) -> usize {
        match self {
            Outgoing::Message(s) | Outgoing::Quoted(s) => s.len(),
            Outgoing::Close(..) => 0,
        }
    }

    /// Whether it holds no bytes (a close, or an empty message).
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// The error returned when sending on a session that has ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("session is closed")]
pub struct SessionClosed;

/// The close of a session whose peer let more than its budget of output queue up without
/// reading it: SockJS `c[1008,"..."]`, and websocket close code 1008 (policy violation).
pub const QUEUE_OVERFLOW: (u16, &str) = (1008, "Too much output queued: the peer does not read");

struct Shared {
    state: Mutex<State>,
}

struct State {
    items: VecDeque<Outgoing>,
    /// The writer, waiting for an item.
    writer: Option<Waker>,
    /// The writer, waiting in [`Outbox::overflowed`].
    overflow_waiter: Option<Waker>,
    /// Tasks waiting in [`SessionSender::closed`].
    closed_waiters: Vec<Waker>,
    senders: usize,
    writer_gone: bool,
    /// Bytes of the messages in `items`.
    queued: usize,
    /// Past this many bytes queued the session is closed.
    budget: usize,
    /// The budget was exceeded: the queue was dropped, senders are refused.
    overflowed: bool,
    /// What the queue counts for in its server's [`Backlog`].
    backlog: Reported,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl State {
    /// The next item, no longer counted as queued.
    fn pop(&mut self) -> Option<Outgoing> {
        let item = self.items.pop_front()?;
        self.queued -= item.len();
        self.backlog.update(self.queued);
        Some(item)
    }

    /// Drops everything queued; returns the items (to free outside the lock).
    fn clear(&mut self) -> VecDeque<Outgoing> {
        self.queued = 0;
        self.backlog.update(0);
        std::mem::take(&mut self.items)
    }

    fn refuses(&self) -> bool {
        self.writer_gone || self.overflowed
    }
}

/// A new outgoing queue without a budget: the sender for the runtime, the outbox for the
/// transport's writer. Clients use it: the peer is a server they chose to dial.
pub fn outgoing() -> (SessionSender, Outbox) {
    outgoing_within(usize::MAX, None)
}

/// A new outgoing queue that holds at most `max_bytes` of messages, counted in `backlog` while it
/// holds [`BACKLOG_THRESHOLD`] or more. A send that would take it past `max_bytes` drops the
/// queue at once (its memory returned), leaves the writer a close with [`QUEUE_OVERFLOW`]
/// (see [`Outbox::overflowed`]) and fails with [`SessionClosed`], as does every later send. A
/// message is always queued when the queue is empty, so one message larger than `max_bytes`
/// still goes; the budget bounds what waits behind it.
pub fn outgoing_within(max_bytes: usize, backlog: Option<Backlog>) -> (SessionSender, Outbox) {
    let shared = Arc::new(Shared {
        state: Mutex::new(State {
            items: VecDeque::new(),
            writer: None,
            overflow_waiter: None,
            closed_waiters: Vec::new(),
            senders: 1,
            writer_gone: false,
            queued: 0,
            budget: max_bytes,
            overflowed: false,
            backlog: Reported::new(backlog),
        }),
    });
    (
        SessionSender {
            shared: shared.clone(),
        },
        Outbox {
            shared,
            carry: None,
            budget: BATCH_BUDGET,
            yield_score: 0,
            batches: 0,
        },
    )
}

/// The sending half of a session. Cheap to clone; sends never block.
pub struct SessionSender {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for SessionSender {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SessionSender")
            .field("closed", &self.is_closed())
            .finish()
    }
}

impl Clone for SessionSender {
    fn clone(&self) -> Self {
        self.shared.lock().senders += 1;
        SessionSender {
            shared: self.shared.clone(),
        }
    }
}

impl Drop for SessionSender {
    fn drop(&mut self) {
        let mut state = self.shared.lock();
        state.senders -= 1;
        // The last sender gone: the writer sees the end once the queue is drained.
        let writer = (state.senders == 0).then(|| state.writer.take()).flatten();
        drop(state);
        if let Some(w) = writer {
            w.wake();
        }
    }
}

impl SessionSender {
    fn push(&self, item: Outgoing) -> Result<(), SessionClosed> {
        let mut state = self.shared.lock();
        if state.refuses() {
            return Err(SessionClosed);
        }
        let len = item.len();
        if state.queued > 0 && state.queued.saturating_add(len) > state.budget {
            return self.overflow(state);
        }
        state.items.push_back(item);
        state.queued += len;
        let queued = state.queued;
        state.backlog.update(queued);
        let writer = state.writer.take();
        drop(state);
        if let Some(w) = writer {
            w.wake();
        }
        Ok(())
    }

    /// The budget is exceeded: drops the queue, leaves the writer the close, refuses senders.
    fn overflow(&self, mut state: MutexGuard<'_, State>) -> Result<(), SessionClosed> {
        let bytes = state.queued;
        let dropped = state.clear();
        state.overflowed = true;
        let (code, reason) = QUEUE_OVERFLOW;
        state
            .items
            .push_back(Outgoing::Close(code, reason.to_owned()));
        let wake: Vec<Waker> = state
            .writer
            .take()
            .into_iter()
            .chain(state.overflow_waiter.take())
            .chain(std::mem::take(&mut state.closed_waiters))
            .collect();
        drop(state);
        drop(dropped);
        tracing::debug!(bytes, "session closed: output over its budget");
        for w in wake {
            w.wake();
        }
        Err(SessionClosed)
    }

    /// Queues one message for the peer.
    pub fn send(&self, msg: String) -> Result<(), SessionClosed> {
        self.push(Outgoing::Message(msg))
    }

    /// Queues one message given as its JSON string literal (see [`Outgoing::Quoted`]).
    pub fn send_quoted(&self, literal: String) -> Result<(), SessionClosed> {
        self.push(Outgoing::Quoted(literal))
    }

    /// Asks the transport to close the session with a SockJS close frame.
    pub fn close(&self, code: u16, reason: impl Into<String>) {
        let _ = self.push(Outgoing::Close(code, reason.into()));
    }

    /// Whether the session is closed for senders: the transport's writer is gone, or the
    /// queue went over its budget.
    pub fn is_closed(&self) -> bool {
        self.shared.lock().refuses()
    }

    /// Bytes queued now and not yet taken by the writer.
    pub fn queued_bytes(&self) -> usize {
        self.shared.lock().queued
    }

    /// Resolves when the session is closed for senders (see [`SessionSender::is_closed`]).
    pub async fn closed(&self) {
        poll_fn(|cx| {
            let mut state = self.shared.lock();
            if state.refuses() {
                return Poll::Ready(());
            }
            if !state.closed_waiters.iter().any(|w| w.will_wake(cx.waker())) {
                state.closed_waiters.push(cx.waker().clone());
            }
            Poll::Pending
        })
        .await
    }
}

/// Bytes queued for one session at or over which it counts in its server's [`Backlog`]
/// (64 KiB): below it, the session's queue is not counted, so that the count costs nothing on the
/// send path of sessions that keep up.
pub const BACKLOG_THRESHOLD: usize = 64 << 10;

/// The bytes queued for the sessions of a server that have fallen behind: those holding
/// [`BACKLOG_THRESHOLD`] or more (each counted whole). A peer that does not read shows here
/// until its session is closed past its budget; every session keeping up counts 0. Cloning
/// shares the count.
#[derive(Debug, Clone, Default)]
pub struct Backlog(Arc<AtomicUsize>);

impl Backlog {
    /// A count of nothing.
    pub fn new() -> Self {
        Backlog::default()
    }

    /// Bytes queued now for the sessions that have fallen behind.
    pub fn bytes(&self) -> usize {
        self.0.load(Ordering::Relaxed)
    }
}

/// What one queue counts for in a [`Backlog`].
#[derive(Debug, Default)]
pub(crate) struct Reported {
    backlog: Option<Backlog>,
    counted: usize,
}

impl Reported {
    pub(crate) fn new(backlog: Option<Backlog>) -> Self {
        Reported {
            backlog,
            counted: 0,
        }
    }

    /// The queue holds `queued` bytes now.
    pub(crate) fn update(&mut self, queued: usize) {
        let now = if queued >= BACKLOG_THRESHOLD {
            queued
        } else {
            0
        };
        if now == self.counted {
            return;
        }
        if let Some(b) = &self.backlog {
            if now > self.counted {
                b.0.fetch_add(now - self.counted, Ordering::Relaxed);
            } else {
                b.0.fetch_sub(self.counted - now, Ordering::Relaxed);
            }
        }
        self.counted = now;
    }
}

impl Drop for Reported {
    fn drop(&mut self) {
        self.update(0);
    }
}

/// Bytes of messages a transport writer puts in one frame (one websocket message, one
/// `xhr_send` body, one poll answer) before starting another; a single larger message still
/// goes alone. Keeps frames well under every peer's limit while batching many small calls.
pub const BATCH_BUDGET: usize = 128 * 1024;

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
            Text::Plain(s) => kite_core::json::write_sockjs_str(out, s),
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
/// Dropping it tells the senders the session is closed.
pub struct Outbox {
    shared: Arc<Shared>,
    carry: Option<Outgoing>,
    budget: usize,
    yield_score: u8,
    batches: u32,
}

impl std::fmt::Debug for Outbox {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Outbox")
            .field("queued", &self.shared.lock().items.len())
            .finish()
    }
}

impl Drop for Outbox {
    fn drop(&mut self) {
        let mut state = self.shared.lock();
        state.writer_gone = true;
        let dropped = state.clear();
        let waiters = std::mem::take(&mut state.closed_waiters);
        drop(state);
        drop(dropped);
        for w in waiters {
            w.wake();
        }
    }
}

impl Outbox {
    /// The next item, waiting for one; `None` when every sender is gone and nothing is left.
    pub async fn recv(&mut self) -> Option<Outgoing> {
        if let Some(item) = self.carry.take() {
            return Some(item);
        }
        poll_fn(|cx| {
            let mut state = self.shared.lock();
            if let Some(item) = state.pop() {
                return Poll::Ready(Some(item));
            }
            if state.senders == 0 {
                return Poll::Ready(None);
            }
            match &state.writer {
                Some(w) if w.will_wake(cx.waker()) => {}
                _ => state.writer = Some(cx.waker().clone()),
            }
            Poll::Pending
        })
        .await
    }

    fn queue_is_empty(&self) -> bool {
        self.shared.lock().items.is_empty()
    }

    /// Resolves once the queue has gone over its budget (see [`outgoing_within`]): a
    /// writer busy with a peer that does not read waits for this beside its write, and closes
    /// the session with [`QUEUE_OVERFLOW`] when it comes.
    pub async fn overflowed(&self) {
        poll_fn(|cx| {
            let mut state = self.shared.lock();
            if state.overflowed {
                return Poll::Ready(());
            }
            match &state.overflow_waiter {
                Some(w) if w.will_wake(cx.waker()) => {}
                _ => state.overflow_waiter = Some(cx.waker().clone()),
            }
            Poll::Pending
        })
        .await
    }

    /// Whether the queue has gone over its budget.
    pub fn is_overflowed(&self) -> bool {
        self.shared.lock().overflowed
    }

    /// Waits for output, then takes everything queued up to the budget. `None` when every
    /// sender is gone and nothing is left.
    ///
    /// Between the first message and taking the rest, the writer may let every task that is
    /// already runnable run first: callers woken by the same incoming frame then queue their
    /// calls before the frame is written, instead of each call leaving in its own frame (tokio
    /// runs a woken task, here the writer, before the other runnable ones).
    ///
    /// Cancel-safe: a writer that drops the future (its `select!` took another branch while
    /// this one let tasks run) loses nothing; the message already taken waits in `carry` for
    /// the next batch.
    pub async fn next_batch(&mut self) -> Option<Batch> {
        let first = self.recv().await?;
        if !matches!(first, Outgoing::Close(..)) && self.queue_is_empty() && self.should_yield() {
            self.carry = Some(first);
            tokio::task::yield_now().await;
            let gathered = !self.queue_is_empty();
            self.yielded(gathered);
            let first = self.carry.take()?;
            return Some(self.batch_from(first));
        }
        Some(self.batch_from(first))
    }

    /// Takes what is queued right now, up to the budget, without waiting.
    pub fn try_batch(&mut self) -> Option<Batch> {
        let first = match self.carry.take() {
            Some(item) => item,
            None => self.shared.lock().pop()?,
        };
        Some(self.batch_from(first))
    }

    /// Yielding costs a trip through the scheduler (tens of µs when nothing else runs), so the
    /// writer keeps doing it only while it pays: while it gathers more messages (many calls
    /// in flight), and once every 32 batches to notice when they come back.
    fn should_yield(&mut self) -> bool {
        self.batches = self.batches.wrapping_add(1);
        self.yield_score > 0 || self.batches.is_multiple_of(32)
    }

    fn yielded(&mut self, gathered: bool) {
        self.yield_score = if gathered {
            (self.yield_score + 2).min(8)
        } else {
            self.yield_score.saturating_sub(1)
        };
    }

    fn batch_from(&mut self, first: Outgoing) -> Batch {
        let mut batch = Batch::default();
        let mut size = 0;
        let mut state = self.shared.lock();
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
            next = state.pop();
        }
        batch
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plain(texts: &[&str]) -> Vec<Text> {
        texts.iter().map(|t| Text::Plain((*t).to_owned())).collect()
    }

    fn queue(items: Vec<Outgoing>) -> (SessionSender, Outbox) {
        let (tx, rx) = outgoing();
        for i in items {
            tx.push(i).unwrap();
        }
        (tx, rx)
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

    #[tokio::test]
    async fn batches_stop_at_the_budget_and_at_a_close() {
        let big = "x".repeat(BATCH_BUDGET / 2 + 1);
        let (_tx, mut out) = queue(vec![
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

    /// A writer waits for a batch beside its heartbeat timer (`select!`): when the timer wins
    /// while the batch is letting other tasks run, the message it already took is kept for the
    /// next batch, not dropped with the future (a SockJS echo lost one message in CI this way).
    #[tokio::test]
    async fn a_batch_dropped_while_it_gathers_loses_nothing() {
        let (tx, mut out) = outgoing();
        // Every 32nd batch lets runnable tasks go first: reach one.
        for i in 0..31 {
            tx.send(format!("m{i}")).unwrap();
            out.next_batch().await.unwrap();
        }
        tx.send("kept".into()).unwrap();
        {
            let gathering = out.next_batch();
            tokio::pin!(gathering);
            tokio::select! {
                biased;
                b = &mut gathering => panic!("the batch did not yield: {b:?}"),
                () = std::future::ready(()) => {}
            }
        }
        let b = tokio::time::timeout(std::time::Duration::from_secs(5), out.next_batch())
            .await
            .expect("the message was lost with the dropped batch")
            .unwrap();
        assert_eq!(b.messages, plain(&["kept"]));
    }

    #[tokio::test]
    async fn a_message_over_the_budget_goes_alone() {
        let huge = "y".repeat(BATCH_BUDGET * 3);
        let (_tx, mut out) = queue(vec![
            Outgoing::Message(huge.clone()),
            Outgoing::Message("z".into()),
        ]);
        assert_eq!(out.next_batch().await.unwrap().messages, plain(&[&huge]));
        assert_eq!(out.next_batch().await.unwrap().messages, plain(&["z"]));
    }

    #[tokio::test]
    async fn the_writer_waits_for_messages_and_sees_the_last_sender_go() {
        let (tx, mut out) = outgoing();
        let writer = tokio::spawn(async move {
            let mut got = Vec::new();
            while let Some(b) = out.next_batch().await {
                got.extend(b.messages.into_iter().map(Text::into_plain));
            }
            got
        });
        let tx2 = tx.clone();
        tokio::task::yield_now().await;
        tx.send("one".into()).unwrap();
        tx2.send("two".into()).unwrap();
        drop(tx);
        tx2.send("three".into()).unwrap();
        drop(tx2);
        assert_eq!(writer.await.unwrap(), ["one", "two", "three"]);
    }

    #[tokio::test]
    async fn senders_learn_when_the_writer_is_gone() {
        let (tx, out) = outgoing();
        let tx2 = tx.clone();
        let waiting = tokio::spawn(async move { tx2.closed().await });
        tokio::task::yield_now().await;
        assert!(!tx.is_closed());
        tx.send("queued".into()).unwrap();
        drop(out);
        waiting.await.unwrap();
        assert!(tx.is_closed());
        assert_eq!(tx.send("late".into()), Err(SessionClosed));
    }

    #[tokio::test]
    async fn past_its_budget_the_queue_is_dropped_and_senders_refused() {
        let (tx, mut out) = outgoing_within(10, None);
        tx.send("12345".into()).unwrap();
        tx.send_quoted("\"123\"".into()).unwrap();
        assert_eq!(tx.queued_bytes(), 10);
        let b = out.next_batch().await.unwrap();
        assert_eq!(b.messages.len(), 2);
        assert_eq!(tx.queued_bytes(), 0);

        // A message larger than the budget still goes into an empty queue.
        tx.send("x".repeat(50)).unwrap();
        assert!(!out.is_overflowed());
        assert_eq!(tx.send("y".into()), Err(SessionClosed));
        assert!(out.is_overflowed() && tx.is_closed());
        assert_eq!(tx.queued_bytes(), 0, "the queue was dropped");
        out.overflowed().await;
        tx.closed().await;
        let b = out.next_batch().await.unwrap();
        assert!(b.messages.is_empty(), "the queue was dropped");
        let (code, reason) = QUEUE_OVERFLOW;
        assert_eq!(b.close, Some((code, reason.to_owned())));
        assert_eq!(tx.send("late".into()), Err(SessionClosed));
    }

    #[tokio::test]
    async fn queues_behind_by_the_threshold_count_in_the_backlog() {
        let backlog = Backlog::new();
        let (tx, mut out) = outgoing_within(1 << 20, Some(backlog.clone()));
        let (tx2, out2) = outgoing_within(1 << 20, Some(backlog.clone()));
        let half = "x".repeat(BACKLOG_THRESHOLD / 2);
        tx.send(half.clone()).unwrap();
        assert_eq!(backlog.bytes(), 0, "keeping up");
        tx.send(half.clone()).unwrap();
        tx.send("y".into()).unwrap();
        assert_eq!(backlog.bytes(), BACKLOG_THRESHOLD + 1);
        tx2.send("z".repeat(BACKLOG_THRESHOLD)).unwrap();
        assert_eq!(backlog.bytes(), 2 * BACKLOG_THRESHOLD + 1);
        let _ = out.recv().await;
        assert_eq!(
            backlog.bytes(),
            BACKLOG_THRESHOLD,
            "back under the threshold"
        );
        drop(out2);
        assert_eq!(backlog.bytes(), 0, "a dropped queue counts no more");
        assert_eq!(tx2.send("late".into()), Err(SessionClosed));
        drop((tx, tx2));
    }
}
