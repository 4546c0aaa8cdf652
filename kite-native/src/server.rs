//! One HTTP serve loop for every server kite-native runs: kites ([`crate::Kite::serve`]), Kontrol,
//! both proxies and the demo's page server.
//!
//! [`Server`] serves an axum [`Router`] on a [`TcpListener`], in plain HTTP or in TLS, with
//! HTTP/1.1 keep-alive and upgrades (websockets), `TCP_NODELAY` on every connection, and the
//! peer's address for handlers as `ConnectInfo<`[`PeerAddr`]`>` (what the SockJS server reads).
//! Unlike `axum::serve` it holds every connection to the budgets of [`ServeOptions`]:
//!
//! * **Connections** in total and per remote address ([`ServeOptions::max_connections`],
//!   [`ServeOptions::max_connections_per_ip`]). A connection past either is closed as soon as it is
//!   accepted; a plain-HTTP one first gets `HTTP/1.1 503 Service Unavailable` (one non-blocking
//!   write, never waited on). A websocket keeps its connection counted for as long as it is open.
//! * **Header read timeout** ([`ServeOptions::header_read_timeout`]): from the moment a client
//!   starts a request (its first byte; for a new connection, from the accept, and for TLS, from
//!   the end of the handshake, which itself has this long) to the end of the request's header.
//!   A client that sends its header a byte at a time (slowloris) is cut off after it.
//! * **Idle timeout** ([`ServeOptions::idle_timeout`]): how long a keep-alive connection may wait,
//!   with no request in progress, for the first byte of its next request; and how long a request
//!   body may stall (no byte while the server waits for more of it).
//!
//! No timeout runs while a request is being served once its body is in (a long poll, a
//! streaming response), nor on an upgraded connection (a websocket keeps itself alive with its
//! own heartbeats).
//!
//! hyper's own `header_read_timeout` is not used: in hyper 1.12 its timer starts whenever the
//! connection waits for a request head, including the idle time between keep-alive requests
//! (`Conn::poll_read_head` arms it, and the connection re-arms it when it goes idle), so one
//! duration would bound both the idle wait and a slow header, and a 15 s header budget would
//! close every keep-alive connection idle for 15 s. The two timeouts here are kept apart the
//! way Go's `ReadHeaderTimeout` and `IdleTimeout` are: the connection's I/O watches when
//! requests start and end, and keeps one tokio timer while the connection speaks HTTP (hyper is
//! given no timer). A connection that pipelines a whole request and the start of the next in one
//! go gets the idle timeout, not the header timeout, for the rest of that next header.
//!
//! Shutdown is graceful: when the `shutdown` future of [`Server::serve`] completes, the listener
//! is closed, idle connections are closed, connections serving a request finish it, and
//! [`Server::serve`] returns once they are gone or after [`ServeOptions::shutdown_grace`],
//! whichever comes first (upgraded connections belong to their handlers and are not waited for).
//!
//! ```no_run
//! # async fn demo() -> std::io::Result<()> {
//! use kite_native::server::{ServeOptions, serve};
//! let app = axum::Router::new().route("/", axum::routing::get(|| async { "hello" }));
//! let listener = kite_native::listen("127.0.0.1:8080".parse().unwrap())?;
//! serve(listener, app, ServeOptions::default(), async {
//!     let _ = tokio::signal::ctrl_c().await;
//! })
//! .await
//! # }
//! ```

use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use axum::Router;
use axum::extract::ConnectInfo;
use hyper::body::{Body as _, Frame, Incoming, SizeHint};
use hyper::server::conn::http1;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::time::{Instant, Sleep};
#[cfg(feature = "tls")]
use tokio_rustls::TlsAcceptor;
#[cfg(feature = "tls")]
use tokio_rustls::rustls::ServerConfig;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tower::ServiceExt;
use tracing::{debug, trace};

use crate::config::Limits;
use crate::sockjs::PeerAddr;
use crate::tally::{Held, Tally};

/// Budgets and settings of a [`Server`]. The default takes its budgets from
/// [`Limits::default`], serves plain HTTP and gives connections 2 s at shutdown.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct ServeOptions {
    /// TCP connections held at once (default 16,384); connections past it are closed when
    /// accepted (plain HTTP ones after a `503`).
    pub max_connections: usize,
    /// The same, from one remote address (default 4,096).
    pub max_connections_per_ip: usize,
    /// Time a client has to send a request's whole header once it starts one (default 15 s);
    /// the connection is closed after it. Also bounds the TLS handshake.
    pub header_read_timeout: Duration,
    /// Time a keep-alive connection may wait for its next request, and a request body may
    /// stall (default 60 s); the connection is closed after it.
    pub idle_timeout: Duration,
    /// How long [`Server::serve`] waits at shutdown for connections serving a request
    /// (default 2 s).
    pub shutdown_grace: Duration,
    /// Serve HTTPS with this configuration (default: plain HTTP; feature `tls`).
    #[cfg(feature = "tls")]
    pub tls: Option<Arc<ServerConfig>>,
}

impl Default for ServeOptions {
    fn default() -> Self {
        ServeOptions::from_limits(&Limits::default())
    }
}

impl ServeOptions {
    /// The connection budgets and timeouts of `limits`, plain HTTP, a 2 s shutdown grace.
    pub fn from_limits(limits: &Limits) -> Self {
        ServeOptions {
            max_connections: limits.max_connections,
            max_connections_per_ip: limits.max_connections_per_ip,
            header_read_timeout: limits.header_read_timeout,
            idle_timeout: limits.idle_timeout,
            shutdown_grace: Duration::from_secs(2),
            #[cfg(feature = "tls")]
            tls: None,
        }
    }

    /// These options, serving HTTPS with `config`.
    #[cfg(feature = "tls")]
    pub fn with_tls(mut self, config: ServerConfig) -> Self {
        self.tls = Some(Arc::new(config));
        self
    }
}

/// Serves `router` on `listener` with `options` until `shutdown` completes (shorthand for
/// [`Server::new`] and [`Server::serve`]).
pub async fn serve(
    listener: TcpListener,
    router: Router,
    options: ServeOptions,
    shutdown: impl Future<Output = ()>,
) -> io::Result<()> {
    Server::new(router, options).serve(listener, shutdown).await
}

/// An HTTP server: a router, its budgets, and the count of the connections it holds. Cloning is
/// cheap; clones are the same server. See the [module docs](self).
#[derive(Clone)]
pub struct Server {
    shared: Arc<Shared>,
}

struct Shared {
    router: Router,
    http: http1::Builder,
    #[cfg(feature = "tls")]
    tls: Option<TlsAcceptor>,
    timeouts: Timeouts,
    max_connections: usize,
    max_connections_per_ip: usize,
    shutdown_grace: Duration,
    connections: Tally,
}

impl Shared {
    fn is_tls(&self) -> bool {
        #[cfg(feature = "tls")]
        return self.tls.is_some();
        #[cfg(not(feature = "tls"))]
        false
    }
}

impl std::fmt::Debug for Server {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Server")
            .field("connections", &self.connections())
            .field("tls", &self.shared.is_tls())
            .finish()
    }
}

/// The response to a connection past a budget (plain HTTP only).
const SERVICE_UNAVAILABLE: &[u8] =
    b"HTTP/1.1 503 Service Unavailable\r\ncontent-length: 0\r\nconnection: close\r\n\r\n";

impl Server {
    /// A server of `router` with `options`; nothing listens until [`Server::serve`].
    pub fn new(router: Router, options: ServeOptions) -> Server {
        let mut http = http1::Builder::new();
        http.keep_alive(true);
        Server {
            shared: Arc::new(Shared {
                router,
                http,
                #[cfg(feature = "tls")]
                tls: options.tls.map(TlsAcceptor::from),
                timeouts: Timeouts {
                    header: options.header_read_timeout,
                    idle: options.idle_timeout,
                },
                max_connections: options.max_connections,
                max_connections_per_ip: options.max_connections_per_ip,
                shutdown_grace: options.shutdown_grace,
                connections: Tally::default(),
            }),
        }
    }

    /// TCP connections held now (upgraded ones included).
    pub fn connections(&self) -> usize {
        self.shared.connections.total()
    }

    /// TCP connections from `ip` held now.
    pub fn connections_from(&self, ip: IpAddr) -> usize {
        self.shared.connections.from(ip)
    }

    /// Accepts and serves connections on `listener` until `shutdown` completes, then shuts
    /// down gracefully (see the [module docs](self)).
    pub async fn serve(
        &self,
        listener: TcpListener,
        shutdown: impl Future<Output = ()>,
    ) -> io::Result<()> {
        let tracker = TaskTracker::new();
        let stop = CancellationToken::new();
        let shared = &self.shared;
        tokio::pin!(shutdown);
        loop {
            let (tcp, peer) = tokio::select! {
                biased;
                () = &mut shutdown => break,
                accepted = listener.accept() => match accepted {
                    Ok(x) => x,
                    Err(e) => {
                        accept_failed(e).await;
                        continue;
                    }
                },
            };
            let Some(held) = shared.connections.take(
                Some(peer.ip()),
                shared.max_connections,
                shared.max_connections_per_ip,
            ) else {
                debug!(%peer, "connection refused: over the connection budget");
                refuse(tcp, !shared.is_tls());
                continue;
            };
            let _ = tcp.set_nodelay(true);
            // Two tasks of their own sizes: a plain connection's does not hold a TLS one's state.
            #[cfg(not(feature = "tls"))]
            tracker.spawn(plain(shared.clone(), tcp, peer, held, stop.clone()));
            #[cfg(feature = "tls")]
            match &shared.tls {
                None => tracker.spawn(plain(shared.clone(), tcp, peer, held, stop.clone())),
                Some(acceptor) => tracker.spawn(tls(
                    shared.clone(),
                    acceptor.clone(),
                    tcp,
                    peer,
                    held,
                    stop.clone(),
                )),
            };
        }
        drop(listener);
        stop.cancel();
        tracker.close();
        let _ = tokio::time::timeout(shared.shutdown_grace, tracker.wait()).await;
        Ok(())
    }
}

/// Backs off after an accept error that is not the peer's (out of file descriptors, say), so
/// the loop does not spin.
async fn accept_failed(e: io::Error) {
    use io::ErrorKind::{ConnectionAborted, ConnectionRefused, ConnectionReset};
    if matches!(
        e.kind(),
        ConnectionAborted | ConnectionRefused | ConnectionReset
    ) {
        return;
    }
    debug!(error = %e, "accept failed");
    tokio::time::sleep(Duration::from_millis(100)).await;
}

/// Closes a connection past a budget at once; a plain one first gets a `503` if the socket
/// takes it without waiting. What the client already sent is read first (without waiting), so
/// that closing sends a FIN rather than a reset that could destroy the answer.
fn refuse(tcp: TcpStream, plain: bool) {
    use std::io::{Read, Write};
    if !plain {
        return;
    }
    let Ok(mut tcp) = tcp.into_std() else {
        return;
    };
    let mut scratch = [0u8; 2048];
    let _ = tcp.read(&mut scratch);
    let _ = tcp.write(SERVICE_UNAVAILABLE);
}

/// Serves one plain connection.
async fn plain(
    shared: Arc<Shared>,
    tcp: TcpStream,
    peer: SocketAddr,
    held: Held,
    stop: CancellationToken,
) {
    let (io, service) = prepare(&shared, tcp, peer, held);
    serve_connection(&shared.http, io, service, stop).await;
}

/// Serves one TLS connection: its handshake (within the header read timeout), then HTTP.
#[cfg(feature = "tls")]
async fn tls(
    shared: Arc<Shared>,
    acceptor: TlsAcceptor,
    tcp: TcpStream,
    peer: SocketAddr,
    held: Held,
    stop: CancellationToken,
) {
    let handshake = tokio::time::timeout(shared.timeouts.header, acceptor.accept(tcp));
    let tls = tokio::select! {
        tls = handshake => tls,
        () = stop.cancelled() => return,
    };
    match tls {
        Ok(Ok(tls)) => {
            let (io, service) = prepare(&shared, tls, peer, held);
            serve_connection(&shared.http, io, service, stop).await;
        }
        Ok(Err(e)) => debug!(%peer, error = %e, "TLS handshake failed"),
        Err(_) => debug!(%peer, "TLS handshake timed out"),
    }
}

/// A connection's guarded I/O and its service.
fn prepare<IO>(
    shared: &Shared,
    io: IO,
    peer: SocketAddr,
    held: Held,
) -> (Guarded<IO>, ConnService) {
    let watch = Arc::new(Watch::default());
    let service = ConnService {
        router: shared.router.clone(),
        peer: PeerAddr(peer),
        watch: watch.clone(),
    };
    (Guarded::new(io, watch, shared.timeouts, held), service)
}

async fn serve_connection<IO>(
    http: &http1::Builder,
    io: Guarded<IO>,
    service: ConnService,
    stop: CancellationToken,
) where
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let conn = http
        .serve_connection(TokioIo::new(io), service)
        .with_upgrades();
    tokio::pin!(conn);
    tokio::select! {
        ended = conn.as_mut() => {
            if let Err(e) = ended {
                trace!(error = %e, "connection ended");
            }
            return;
        }
        () = stop.cancelled() => {}
    }
    conn.as_mut().graceful_shutdown();
    let _ = conn.await;
}

/// What a connection's I/O and its service share: whether a request is being served, and
/// whether the connection was upgraded.
#[derive(Default)]
struct Watch {
    /// Requests started on the connection so far.
    started: AtomicUsize,
    /// Requests whose response has not been sent whole yet.
    in_flight: AtomicUsize,
    /// Request bodies still coming in.
    bodies: AtomicUsize,
    upgraded: AtomicBool,
    /// The connection's task, waiting to read, to wake when the last request in flight ends.
    reader: Mutex<Option<Waker>>,
}

impl Watch {
    fn register(&self, waker: &Waker) {
        let mut r = self.reader.lock().unwrap_or_else(|e| e.into_inner());
        match &*r {
            Some(w) if w.will_wake(waker) => {}
            _ => *r = Some(waker.clone()),
        }
    }

    fn busy(&self) -> bool {
        self.in_flight.load(Ordering::Acquire) > 0
    }

    fn receiving(&self) -> bool {
        self.bodies.load(Ordering::Acquire) > 0
    }
}

/// A request body still coming in; dropped at its end (or when abandoned).
struct BodyOpen(Arc<Watch>);

impl BodyOpen {
    fn new(watch: &Arc<Watch>) -> Self {
        watch.bodies.fetch_add(1, Ordering::AcqRel);
        BodyOpen(watch.clone())
    }
}

impl Drop for BodyOpen {
    fn drop(&mut self) {
        self.0.bodies.fetch_sub(1, Ordering::AcqRel);
    }
}

/// A request body that ends its [`BodyOpen`] when it has all come in.
struct Receiving {
    body: Incoming,
    open: Option<BodyOpen>,
}

impl hyper::body::Body for Receiving {
    type Data = bytes::Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let frame = Pin::new(&mut self.body).poll_frame(cx);
        if matches!(frame, Poll::Ready(None | Some(Err(_)))) || self.body.is_end_stream() {
            self.open = None;
        }
        frame
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

/// One request being served; dropped when its response has been sent whole (or abandoned).
struct InFlight(Arc<Watch>);

impl InFlight {
    fn new(watch: &Arc<Watch>) -> Self {
        watch.in_flight.fetch_add(1, Ordering::AcqRel);
        watch.started.fetch_add(1, Ordering::AcqRel);
        InFlight(watch.clone())
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        if self.0.in_flight.fetch_sub(1, Ordering::AcqRel) == 1 {
            // The connection is idle now: its reader arms the idle timeout.
            let waker = self
                .0
                .reader
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .take();
            if let Some(w) = waker {
                w.wake();
            }
        }
    }
}

/// The per-connection service: the router, with the peer's address for extractors, and the
/// requests counted for the connection's timeouts.
#[derive(Clone)]
struct ConnService {
    router: Router,
    peer: PeerAddr,
    watch: Arc<Watch>,
}

type ServiceFuture =
    Pin<Box<dyn Future<Output = Result<hyper::Response<Tracked>, Infallible>> + Send>>;

impl hyper::service::Service<hyper::Request<Incoming>> for ConnService {
    type Response = hyper::Response<Tracked>;
    type Error = Infallible;
    type Future = ServiceFuture;

    fn call(&self, req: hyper::Request<Incoming>) -> Self::Future {
        let in_flight = InFlight::new(&self.watch);
        let mut req = req.map(|body| Receiving {
            open: (!body.is_end_stream()).then(|| BodyOpen::new(&self.watch)),
            body,
        });
        req.extensions_mut().insert(ConnectInfo(self.peer));
        let response = self.router.clone().oneshot(req);
        Box::pin(async move {
            let response = match response.await {
                Ok(r) => r,
                Err(never) => match never {},
            };
            if response.status() == axum::http::StatusCode::SWITCHING_PROTOCOLS {
                in_flight.0.upgraded.store(true, Ordering::Release);
            }
            Ok(response.map(|body| Tracked {
                body,
                _in_flight: in_flight,
            }))
        })
    }
}

/// A response body that ends its request's [`InFlight`] when hyper is done with it.
struct Tracked {
    body: axum::body::Body,
    _in_flight: InFlight,
}

impl hyper::body::Body for Tracked {
    type Data = bytes::Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        Pin::new(&mut self.body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

#[derive(Debug, Clone, Copy)]
struct Timeouts {
    header: Duration,
    idle: Duration,
}

/// Where an HTTP connection is, for its timeouts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Reading a request's header: the header read timeout runs.
    Header,
    /// Serving a request; `read` when bytes came in meanwhile (a pipelined request). While a
    /// request body is coming in, the idle timeout runs from the last byte.
    Busy { read: bool },
    /// Waiting for the next request: the idle timeout runs.
    Idle,
}

/// A connection's I/O, which enforces its timeouts while it speaks HTTP and holds its place in
/// the connection budget for as long as the connection lives (an upgraded one included).
struct Guarded<IO> {
    io: IO,
    /// The timeouts' state; dropped on upgrade, when only the budget's place is left to hold.
    http: Option<Box<Timing>>,
    _held: Held,
}

/// The timeouts of a connection speaking HTTP.
struct Timing {
    watch: Arc<Watch>,
    phase: Phase,
    /// `Watch::started` when last looked at.
    seen: usize,
    /// The deadline of the phase, reset from phase to phase.
    timer: Pin<Box<Sleep>>,
    timeouts: Timeouts,
}

/// A deadline `after` from now, or about a century away for durations too long to add.
fn deadline(after: Duration) -> Instant {
    let now = Instant::now();
    now.checked_add(after)
        .unwrap_or_else(|| now + Duration::from_secs(100 * 365 * 86_400))
}

impl<IO> Guarded<IO> {
    fn new(io: IO, watch: Arc<Watch>, timeouts: Timeouts, held: Held) -> Self {
        let timing = Timing {
            watch,
            phase: Phase::Header,
            seen: 0,
            timer: Box::pin(tokio::time::sleep_until(deadline(timeouts.header))),
            timeouts,
        };
        Guarded {
            io,
            http: Some(Box::new(timing)),
            _held: held,
        }
    }
}

impl Timing {
    fn enter(&mut self, phase: Phase) {
        self.phase = phase;
        match phase {
            Phase::Header => self.arm(self.timeouts.header),
            Phase::Idle => self.arm(self.timeouts.idle),
            Phase::Busy { .. } => {}
        }
    }

    /// Sets the deadline `after` from now.
    fn arm(&mut self, after: Duration) {
        self.timer.as_mut().reset(deadline(after));
    }

    /// Follows the requests the service has started and finished since the last read (a
    /// whole request may have come and gone without a read in between); `false` once the
    /// connection is upgraded.
    fn observe(&mut self) -> bool {
        if self.watch.upgraded.load(Ordering::Acquire) {
            return false;
        }
        let busy = self.watch.busy();
        let started = self.watch.started.load(Ordering::Acquire);
        if started != self.seen {
            self.seen = started;
            if busy {
                self.phase = Phase::Busy { read: false };
                if self.watch.receiving() {
                    self.arm(self.timeouts.idle);
                }
            } else {
                self.enter(Phase::Idle);
            }
        } else if let Phase::Busy { read } = self.phase
            && !busy
        {
            self.enter(if read { Phase::Header } else { Phase::Idle });
        }
        true
    }

    /// Bytes came in.
    fn read(&mut self) {
        match self.phase {
            Phase::Idle => self.enter(Phase::Header),
            Phase::Busy { .. } => {
                self.phase = Phase::Busy { read: true };
                if self.watch.receiving() {
                    self.arm(self.timeouts.idle);
                }
            }
            Phase::Header => {}
        }
    }

    /// Nothing to read now: the error that closes the connection if its phase's deadline has
    /// passed (registering for the deadline and the end of requests otherwise).
    fn waiting(&mut self, cx: &mut Context<'_>) -> Option<io::Error> {
        self.watch.register(cx.waker());
        if matches!(self.phase, Phase::Busy { .. }) && !self.watch.busy() {
            // The last request ended before we registered: look again at once.
            cx.waker().wake_by_ref();
            return None;
        }
        let what = match self.phase {
            Phase::Header => "header read timeout",
            Phase::Idle => "idle timeout",
            Phase::Busy { .. } if self.watch.receiving() => "request body stalled",
            Phase::Busy { .. } => return None,
        };
        self.timer.as_mut().poll(cx).is_ready().then(|| {
            debug!("closing a connection: {what}");
            io::Error::new(io::ErrorKind::TimedOut, what)
        })
    }
}

impl<IO: AsyncRead + Unpin> AsyncRead for Guarded<IO> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let Some(timing) = &mut this.http else {
            return Pin::new(&mut this.io).poll_read(cx, buf);
        };
        if !timing.observe() {
            this.http = None;
            return Pin::new(&mut this.io).poll_read(cx, buf);
        }
        let before = buf.filled().len();
        match Pin::new(&mut this.io).poll_read(cx, buf) {
            Poll::Ready(Ok(())) => {
                if buf.filled().len() > before {
                    timing.read();
                }
                Poll::Ready(Ok(()))
            }
            Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
            Poll::Pending => match timing.waiting(cx) {
                Some(e) => Poll::Ready(Err(e)),
                None => Poll::Pending,
            },
        }
    }
}

impl<IO: AsyncWrite + Unpin> AsyncWrite for Guarded<IO> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_shutdown(cx)
    }
}
