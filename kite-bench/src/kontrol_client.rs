//! A Kontrol client for many kites on one connection: it speaks the kite dnode protocol itself
//! over a raw websocket (`ws://<addr>/kite/websocket`, one dnode message per text frame), with
//! kite-core's [`Connection`] keeping the protocol state, so that one connection can carry
//! requests from thousands of kite identities (a kite-native `Client` is one kite).
//!
//! It answers Kontrol's `kite.heartbeat` requests (one per registered kite: `[interval,
//! <function>]`) and then calls each kite's heartbeat function every interval, spread evenly
//! over it, as the kites themselves would.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use kite_core::dnode::CallbackSink;
use kite_core::{Connection, ErrorKind, Incoming, KiteError, RequestHead, Value};
use tokio::sync::{mpsc, oneshot};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;

/// Where the answer to one of our calls goes.
type Pending = oneshot::Sender<Result<Value, KiteError>>;

/// What the reader, the writer, the callers and the heartbeat task of one connection share.
struct Shared {
    /// The protocol state.
    conn: Mutex<Connection<Pending>>,
    /// Messages to write, in order.
    out: mpsc::UnboundedSender<Message>,
    /// Kontrol's heartbeat functions (its callback ids), one per registered kite.
    heartbeats: Mutex<Vec<u64>>,
    /// The interval Kontrol asked for, ms (0 until the first `kite.heartbeat`).
    interval_ms: AtomicU64,
    /// Heartbeat calls sent.
    pings: AtomicU64,
    /// Messages that could not be read, or requests we do not serve.
    protocol_errors: AtomicU64,
    /// Set when the websocket has ended.
    closed: AtomicBool,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Functions Kontrol sends us are called through [`Connection::invoke`] directly; nothing here
/// calls them through their [`kite_core::Callback`].
struct Unused;

impl CallbackSink for Unused {
    fn invoke(&self, _id: u64, _args: Value) -> Result<(), KiteError> {
        Err(KiteError::generic("not called through the sink"))
    }
}

/// One websocket to a Kontrol.
pub struct KontrolConn {
    shared: Arc<Shared>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl std::fmt::Debug for KontrolConn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KontrolConn")
            .field("heartbeats", &self.heartbeat_count())
            .finish_non_exhaustive()
    }
}

impl KontrolConn {
    /// Dials the Kontrol's raw websocket at `url` (`ws://127.0.0.1:PORT/kite/websocket`).
    pub async fn dial(url: &str) -> Result<KontrolConn, String> {
        // getKites of every kite is one message of tens of megabytes at 100,000 kites.
        let config = WebSocketConfig::default()
            .max_message_size(None)
            .max_frame_size(None);
        let (ws, _) = tokio_tungstenite::connect_async_with_config(url, Some(config), true)
            .await
            .map_err(|e| format!("{url}: {e}"))?;
        let (mut sink, mut stream) = ws.split();
        let (out, mut rx) = mpsc::unbounded_channel::<Message>();
        let shared = Arc::new(Shared {
            conn: Mutex::new(Connection::new()),
            out,
            heartbeats: Mutex::default(),
            interval_ms: AtomicU64::new(0),
            pings: AtomicU64::new(0),
            protocol_errors: AtomicU64::new(0),
            closed: AtomicBool::new(false),
        });
        // The writer: every message already queued goes out before one flush.
        let writer = tokio::spawn(async move {
            while let Some(first) = rx.recv().await {
                if sink.feed(first).await.is_err() {
                    return;
                }
                while let Ok(next) = rx.try_recv() {
                    if sink.feed(next).await.is_err() {
                        return;
                    }
                }
                if sink.flush().await.is_err() {
                    return;
                }
            }
            let _ = sink.close().await;
        });
        let reader_shared = shared.clone();
        let reader = tokio::spawn(async move {
            let sink: Arc<dyn CallbackSink> = Arc::new(Unused);
            while let Some(msg) = stream.next().await {
                match msg {
                    Ok(Message::Text(text)) => reader_shared.receive(&text, &sink),
                    Ok(Message::Close(_)) | Err(_) => break,
                    Ok(_) => {}
                }
            }
            reader_shared.closed.store(true, Ordering::Relaxed);
            for pending in lock(&reader_shared.conn).drain_pending() {
                let _ = pending.send(Err(KiteError::disconnect()));
            }
        });
        Ok(KontrolConn {
            shared,
            tasks: vec![writer, reader],
        })
    }

    /// Calls `method` as the kite of `head` with `args` (a list), waiting up to `timeout`.
    pub async fn call(
        &self,
        method: &str,
        head: &RequestHead,
        args: Value,
        timeout: Duration,
    ) -> Result<Value, KiteError> {
        if self.shared.closed.load(Ordering::Relaxed) {
            return Err(KiteError::disconnect());
        }
        let (tx, rx) = oneshot::channel();
        let (id, text) = lock(&self.shared.conn).request_with_head(method, head, args, tx)?;
        if self.shared.out.send(Message::Text(text.into())).is_err() {
            lock(&self.shared.conn).cancel(id);
            return Err(KiteError::disconnect());
        }
        match tokio::time::timeout(timeout, rx).await {
            Ok(Ok(result)) => result,
            Ok(Err(_)) => Err(KiteError::disconnect()),
            Err(_) => {
                lock(&self.shared.conn).cancel(id);
                Err(KiteError::new(
                    ErrorKind::Timeout,
                    format!("no answer to {method} within {timeout:?}"),
                ))
            }
        }
    }

    /// Kontrol's heartbeat functions received so far (one per kite registered here).
    pub fn heartbeat_count(&self) -> usize {
        lock(&self.shared.heartbeats).len()
    }

    /// Heartbeat calls sent so far.
    pub fn pings(&self) -> u64 {
        self.shared.pings.load(Ordering::Relaxed)
    }

    /// Messages that could not be read, and requests other than `kite.heartbeat`.
    pub fn protocol_errors(&self) -> u64 {
        self.shared.protocol_errors.load(Ordering::Relaxed)
    }

    /// Whether the websocket has ended.
    pub fn closed(&self) -> bool {
        self.shared.closed.load(Ordering::Relaxed)
    }

    /// Calls every heartbeat function once per interval (the one Kontrol asked for), spread
    /// evenly over it, until the connection is dropped: every 20 ms the functions due are
    /// called in turn, round and round, at (functions held) / interval per second, so the
    /// rate is steady from the start and follows kites as they register. The first call is
    /// `phase` (0..1) of 20 ms after Kontrol's first `kite.heartbeat`, so connections started
    /// together do not tick together.
    pub fn start_heartbeats(&mut self, phase: f64) {
        let shared = self.shared.clone();
        self.tasks.push(tokio::spawn(async move {
            let interval = loop {
                match shared.interval_ms.load(Ordering::Relaxed) {
                    0 => tokio::time::sleep(Duration::from_millis(20)).await,
                    ms => break Duration::from_millis(ms),
                }
            };
            const TICK: Duration = Duration::from_millis(20);
            tokio::time::sleep(TICK.mul_f64(phase.clamp(0.0, 1.0))).await;
            let mut tick = tokio::time::interval(TICK);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            let (mut cursor, mut credit) = (0usize, 0.0f64);
            let mut last = Instant::now();
            loop {
                tick.tick().await;
                if shared.closed.load(Ordering::Relaxed) {
                    return;
                }
                let now = Instant::now();
                let batch: Vec<u64> = {
                    let ids = lock(&shared.heartbeats);
                    credit +=
                        ids.len() as f64 * (now - last).as_secs_f64() / interval.as_secs_f64();
                    last = now;
                    let due = credit.floor() as usize;
                    if ids.is_empty() || due == 0 {
                        continue;
                    }
                    credit -= due as f64;
                    let batch = (0..due).map(|k| ids[(cursor + k) % ids.len()]).collect();
                    cursor = (cursor + due) % ids.len();
                    batch
                };
                shared.ping(&batch);
            }
        }));
    }
}

impl Drop for KontrolConn {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

impl Shared {
    /// One message from Kontrol.
    fn receive(&self, text: &str, sink: &Arc<dyn CallbackSink>) {
        let mut conn = lock(&self.conn);
        let incoming = match conn.receive(text, sink) {
            Ok(incoming) => incoming,
            Err(_) => {
                self.protocol_errors.fetch_add(1, Ordering::Relaxed);
                return;
            }
        };
        match incoming {
            Incoming::Response { pending, result } => {
                let _ = pending.send(result);
            }
            Incoming::Request(req) => {
                let answer = if req.method == "kite.heartbeat" {
                    self.heartbeat_request(&req.args)
                } else {
                    self.protocol_errors.fetch_add(1, Ordering::Relaxed);
                    Err(KiteError::new(
                        ErrorKind::MethodNotFound,
                        format!("method {:?} is not served by kite-bench", req.method),
                    ))
                };
                if let Some(id) = req.response_id() {
                    let text = conn.respond(id, answer);
                    let _ = self.out.send(Message::Text(text.into()));
                }
            }
            Incoming::InvalidRequest { response, error } => {
                self.protocol_errors.fetch_add(1, Ordering::Relaxed);
                if let Some(id) = response.as_ref().and_then(kite_core::Callback::remote_id) {
                    let text = conn.respond(id, Err(error));
                    let _ = self.out.send(Message::Text(text.into()));
                }
            }
            Incoming::Callback { .. } | Incoming::UnknownCallback(_) => {}
        }
    }

    /// `kite.heartbeat(interval_seconds, ping)`: the function is kept to be called every
    /// interval; answered with no error and no result, as Go's kite answers.
    fn heartbeat_request(&self, args: &Value) -> Result<Value, KiteError> {
        let secs: f64 = args.nth(0)?;
        let ping = args.callback(1)?;
        let id = ping
            .remote_id()
            .ok_or_else(|| KiteError::argument("the heartbeat function is not Kontrol's"))?;
        let ms = (secs * 1000.0).round().max(1.0) as u64;
        let _ = self
            .interval_ms
            .compare_exchange(0, ms, Ordering::Relaxed, Ordering::Relaxed);
        lock(&self.heartbeats).push(id);
        Ok(Value::null())
    }

    /// Calls the heartbeat functions `ids` (with no arguments, as Go's kite does).
    fn ping(&self, ids: &[u64]) {
        let mut conn = lock(&self.conn);
        for &id in ids {
            match conn.invoke(id, Value::list(std::iter::empty())) {
                Ok(text) => {
                    if self.out.send(Message::Text(text.into())).is_err() {
                        return;
                    }
                    self.pings.fetch_add(1, Ordering::Relaxed);
                }
                Err(_) => {
                    self.protocol_errors.fetch_add(1, Ordering::Relaxed);
                }
            }
        }
    }
}
