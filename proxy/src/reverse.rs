//! The reverse proxy: one public address in front of many kites (Go's `reverseproxy`).
//!
//! A kite that cannot be reached directly (or should be reached over TLS without holding a
//! certificate itself) dials the proxy, calls its `register` method with the URL it serves on
//! (`["http://10.0.0.7:6000/kite"]`, Go's shape), and gets back its public URL,
//! `<scheme>://<publicHost>:<publicPort>/proxy/<kiteID>`, which it then registers with Kontrol
//! (see `Kite::register_to_proxy` in kite-native, which does all of it). The route lives as
//! long as the kite's connection to the proxy: it is removed when that connection ends.
//!
//! Requests under `/proxy/<kiteID>/<rest>` go to `<kite URL>/<rest>` (query kept):
//!
//! * websocket upgrades (SockJS `…/websocket` and raw `/websocket`) are answered only once the
//!   backend accepted its own websocket, then piped message by message both ways (text, binary
//!   and close frames with their codes; pings and pongs stay on their own hop), up to
//!   [`ReverseProxyOptions::max_message_size`];
//! * everything else (SockJS `info`, `xhr`, `xhr_send`, `xhr_streaming`, `eventsource`, …) is
//!   forwarded over pooled HTTP/1.1 connections with both bodies streamed, never buffered, so
//!   that `xhr_streaming` and `eventsource` flow.
//!
//! TLS ends at the proxy ([`kite_native::Config::tls`] serves the public side exactly as a kite
//! does); the backend is reached with the scheme it registered (`http`/`ws` or `https`/`wss`;
//! Go forces plain `http`).
//!
//! Answers of the proxy itself: `404` for a kite id nobody registered, `502` when the
//! registered kite does not answer, `403` for a refused origin, each with a one-line
//! `text/plain` body saying so.
//!
//! Budgets: the public side is served by [`kite_native::server`] with the connection budgets
//! and timeouts of the kite's `Config::limits` (a plain connection past them gets `503`). Nothing is
//! buffered per connection beyond one message: a websocket is piped a message at a time, each
//! written (and flushed) before the next is read, and plain bodies are streamed with hyper's
//! back-pressure, so a client that does not read stops the backend's side instead of growing the
//! proxy. Every backend kite sees all proxied peers coming from the proxy's address: raise its
//! per-address budgets (`Config::limits`) accordingly.
//!
//! # Origins
//!
//! Go's proxy accepts every `Origin`. Here a proxied request (websocket or not: a page refused
//! a websocket would just fall back to xhr-streaming) that carries an `Origin` header is served
//! only when that origin is
//! * the proxy itself: the same host and port as the request's `Host` header, or as the public
//!   host and port, whatever the scheme;
//! * or listed in [`ReverseProxyOptions::allowed_origins`]: a full origin
//!   (`https://app.example.com`, default ports implied), a bare host (`app.example.com`, any
//!   scheme and port) or `host:port`, or `*` for every origin (Go's behaviour).
//!
//! Requests without `Origin` (kites, command-line tools: not browsers) are always served; the
//! kites behind the proxy still authenticate every call themselves.
//!
//! # Authentication
//!
//! `register` needs credentials like any kite method (a kite key or a token, unless
//! `Config::disable_authentication` is set). The route is stored under the caller's kite id;
//! while it exists, another user cannot take the id over (the same user can: a kite that
//! reconnects registers again before its old connection is noticed gone).

mod forward;
mod origin;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU16, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::routing::any;
use kite_native::{Config, Error, ErrorKind, Kite, KiteError, Request};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tracing::info;

pub use origin::OriginPolicy;

/// The proxy kite's name, as Go's (`proxy`).
pub const NAME: &str = "proxy";

/// Go's reverse proxy version (`0.0.1`), the default of the `reverseproxy` binary.
pub const VERSION: &str = "0.0.1";

/// How the proxy presents itself and forwards.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct ReverseProxyOptions {
    /// The host in public URLs (Go's `PublicHost`; default `127.0.0.1`). Behind TLS it must
    /// match the certificate.
    pub public_host: String,
    /// The port in public URLs (Go's `PublicPort`); `None` (the default) means the port the
    /// proxy listens on.
    pub public_port: Option<u16>,
    /// Origins served besides the proxy's own (see the [module docs](self#origins)); `*` allows
    /// every origin.
    pub allowed_origins: Vec<String>,
    /// Largest websocket message (and frame) piped through, either way (default 16 MiB).
    pub max_message_size: usize,
    /// Limit for connecting to a backend kite and for its websocket handshake (default 10 s).
    pub backend_timeout: Duration,
}

impl Default for ReverseProxyOptions {
    fn default() -> Self {
        ReverseProxyOptions {
            public_host: "127.0.0.1".into(),
            public_port: None,
            allowed_origins: Vec::new(),
            max_message_size: 16 << 20,
            backend_timeout: Duration::from_secs(10),
        }
    }
}

/// A kite registered with the proxy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RegisteredKite {
    /// Its kite id (the path segment after `/proxy/`).
    pub id: String,
    /// The URL it registered, requests are forwarded to.
    pub url: String,
    /// The authenticated user that registered it.
    pub username: String,
}

/// The reverse proxy: a kite named [`NAME`] with a `register` method, serving `/proxy/…` beside
/// its own `/kite`.
///
/// ```no_run
/// # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
/// use kite_proxy::reverse::{ReverseProxy, ReverseProxyOptions, VERSION};
///
/// let mut config = kite_native::Config::get()?;
/// config.port = 3999;
/// let proxy = ReverseProxy::new(config, VERSION, ReverseProxyOptions::default())?;
/// let kite = proxy.kite().clone();
/// let url = proxy.kite_url().unwrap(); // the public port is known: 3999
/// tokio::spawn(async move { kite.register_forever(&url).await });
/// proxy.run().await?;
/// # Ok(()) }
/// ```
#[derive(Debug, Clone)]
pub struct ReverseProxy {
    kite: Kite,
    shared: Arc<Shared>,
}

/// What the `register` method and the forwarding routes share.
pub(crate) struct Shared {
    /// `https` when the public side is TLS.
    scheme: &'static str,
    public_host: String,
    public_port: Option<u16>,
    /// The port the proxy listens on, once it does (0 before).
    listen_port: AtomicU16,
    kites: Mutex<HashMap<String, Entry>>,
    /// Bumped on every registration and removal.
    changes: watch::Sender<u64>,
    generation: AtomicU64,
    origins: OriginPolicy,
    max_message_size: usize,
    backend_timeout: Duration,
    http: forward::HttpClient,
    /// Cancelled by [`ReverseProxy::close`]: ends every piped websocket and streamed response.
    shutdown: CancellationToken,
}

impl std::fmt::Debug for Shared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Shared")
            .field("scheme", &self.scheme)
            .field("public_host", &self.public_host)
            .field("public_port", &self.public_port)
            .finish_non_exhaustive()
    }
}

struct Entry {
    backend: forward::Backend,
    username: String,
    generation: u64,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl ReverseProxy {
    /// A proxy kite of `version` with `config` (its `tls` makes the public side `https`) and
    /// `options`. Nothing listens until [`ReverseProxy::run`] or [`ReverseProxy::serve`].
    pub fn new(
        config: Config,
        version: &str,
        options: ReverseProxyOptions,
    ) -> Result<ReverseProxy, Error> {
        let scheme = if config.tls.is_some() {
            "https"
        } else {
            "http"
        };
        let kite = Kite::with_config(NAME, version, config)?;
        let shared = Arc::new(Shared {
            scheme,
            public_host: options.public_host,
            public_port: options.public_port,
            listen_port: AtomicU16::new(0),
            kites: Mutex::default(),
            changes: watch::channel(0).0,
            generation: AtomicU64::new(0),
            origins: OriginPolicy::new(&options.allowed_origins),
            max_message_size: options.max_message_size,
            backend_timeout: options.backend_timeout,
            http: forward::http_client(options.backend_timeout)?,
            shutdown: CancellationToken::new(),
        });

        let s = shared.clone();
        kite.handle("register", move |req: Request| {
            let s = s.clone();
            async move { s.register(&req) }
        });

        let s = shared.clone();
        let route = any(move |req: axum::extract::Request| {
            let s = s.clone();
            async move { forward::handle(s, req).await }
        });
        for path in [
            "/proxy",
            "/proxy/",
            "/proxy/{id}",
            "/proxy/{id}/",
            "/proxy/{id}/{*rest}",
        ] {
            kite.route(path, route.clone());
        }
        Ok(ReverseProxy { kite, shared })
    }

    /// The proxy's kite (for `register_forever`, hooks, its identity).
    pub fn kite(&self) -> &Kite {
        &self.kite
    }

    /// `https` when the public side is TLS, else `http`.
    pub fn scheme(&self) -> &'static str {
        self.shared.scheme
    }

    /// The public port: the configured one, else the listening port (`None` before listening).
    pub fn public_port(&self) -> Option<u16> {
        self.shared.port()
    }

    /// `<scheme>://<publicHost>:<publicPort>/kite`: where the proxy kite itself is reached, the
    /// URL to register with Kontrol (`None` until the public port is known).
    pub fn kite_url(&self) -> Option<String> {
        Some(format!("{}/kite", self.shared.base_url()?))
    }

    /// `<scheme>://<publicHost>:<publicPort>/proxy/<kite_id>`: the public URL `register`
    /// answers for `kite_id`.
    pub fn public_url(&self, kite_id: &str) -> Option<String> {
        Some(format!("{}/proxy/{kite_id}", self.shared.base_url()?))
    }

    /// Binds `Config::ip:Config::port` and serves until [`ReverseProxy::close`].
    pub async fn run(&self) -> Result<(), Error> {
        let config = self.kite.config();
        let listener = kite_native::listen(SocketAddr::new(config.ip, config.port))?;
        self.serve(listener).await
    }

    /// Serves on an already bound listener until [`ReverseProxy::close`].
    pub async fn serve(&self, listener: TcpListener) -> Result<(), Error> {
        let port = listener.local_addr()?.port();
        self.shared.listen_port.store(port, Ordering::SeqCst);
        self.kite.serve(listener).await
    }

    /// Resolves when the proxy listens, with its address.
    pub async fn ready(&self) -> SocketAddr {
        self.kite.ready().await
    }

    /// Stops serving: closes the proxy kite's sessions (so every backend kite loses its route
    /// and registers again with the next proxy), every piped websocket (`1001`) and every
    /// streamed response.
    pub fn close(&self) {
        self.shared.shutdown.cancel();
        self.kite.close();
    }

    /// The kites registered now, sorted by id.
    pub fn kites(&self) -> Vec<RegisteredKite> {
        let mut all: Vec<RegisteredKite> = lock(&self.shared.kites)
            .iter()
            .map(|(id, e)| RegisteredKite {
                id: id.clone(),
                url: e.backend.url().to_owned(),
                username: e.username.clone(),
            })
            .collect();
        all.sort_by(|a, b| a.id.cmp(&b.id));
        all
    }

    /// The URL registered under `kite_id`, if any.
    pub fn backend_url(&self, kite_id: &str) -> Option<String> {
        lock(&self.shared.kites)
            .get(kite_id)
            .map(|e| e.backend.url().to_owned())
    }

    /// Resolves once `kite_id` is registered (at once if it is), with its URL.
    pub async fn registered(&self, kite_id: &str) -> String {
        self.wait_for(|| self.backend_url(kite_id)).await
    }

    /// Resolves once `kite_id` is not registered (at once if it is not).
    pub async fn unregistered(&self, kite_id: &str) {
        self.wait_for(|| self.backend_url(kite_id).is_none().then_some(()))
            .await;
    }

    async fn wait_for<T>(&self, mut check: impl FnMut() -> Option<T>) -> T {
        let mut changes = self.shared.changes.subscribe();
        loop {
            changes.mark_unchanged();
            if let Some(v) = check() {
                return v;
            }
            // The sender lives as long as `self`.
            let _ = changes.changed().await;
        }
    }
}

impl Shared {
    fn port(&self) -> Option<u16> {
        self.public_port
            .or(match self.listen_port.load(Ordering::SeqCst) {
                0 => None,
                p => Some(p),
            })
    }

    /// `<publicHost>:<publicPort>` (an IPv6 host in brackets).
    fn public_authority(&self) -> Option<String> {
        let port = self.port()?;
        let host = &self.public_host;
        Some(if host.contains(':') && !host.starts_with('[') {
            format!("[{host}]:{port}")
        } else {
            format!("{host}:{port}")
        })
    }

    /// `<scheme>://<publicHost>:<publicPort>`.
    fn base_url(&self) -> Option<String> {
        Some(format!("{}://{}", self.scheme, self.public_authority()?))
    }

    /// The `register` method: `[<kite URL>]` → the caller's public URL.
    fn register(self: &Arc<Self>, req: &Request) -> Result<String, KiteError> {
        let raw: String = req.arg()?;
        let backend = forward::Backend::parse(&raw).map_err(KiteError::argument)?;
        let id = req.caller.id.clone();
        if id.is_empty()
            || !id
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
        {
            return Err(KiteError::argument(format!(
                "kite id {id:?} cannot be a path segment"
            )));
        }
        let public = self
            .base_url()
            .map(|base| format!("{base}/proxy/{id}"))
            .ok_or_else(|| KiteError::generic("the proxy is not listening yet"))?;
        let generation = self.generation.fetch_add(1, Ordering::SeqCst) + 1;
        {
            let mut kites = lock(&self.kites);
            if let Some(old) = kites.get(&id)
                && old.username != req.username
            {
                return Err(KiteError::new(
                    ErrorKind::Authentication,
                    format!("kite id {id} is registered by another user"),
                ));
            }
            kites.insert(
                id.clone(),
                Entry {
                    backend,
                    username: req.username.clone(),
                    generation,
                },
            );
        }
        self.changes.send_modify(|v| *v += 1);
        info!(kite = %req.caller, url = %raw, %public, "kite registered");

        // Removed when this connection ends, unless registered again since.
        let shared = Arc::downgrade(self);
        let gone = req.context.clone();
        tokio::spawn(async move {
            gone.cancelled().await;
            let Some(shared) = shared.upgrade() else {
                return;
            };
            let removed = {
                let mut kites = lock(&shared.kites);
                let current = kites.get(&id).is_some_and(|e| e.generation == generation);
                current && kites.remove(&id).is_some()
            };
            if removed {
                shared.changes.send_modify(|v| *v += 1);
                info!(%id, "kite disconnected, route removed");
            }
        });
        Ok(public)
    }

    fn lookup(&self, id: &str) -> Option<forward::Backend> {
        lock(&self.kites).get(id).map(|e| e.backend.clone())
    }
}
