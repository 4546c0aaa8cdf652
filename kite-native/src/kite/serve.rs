//! Serving a kite over HTTP: its router (SockJS at `/kite` plus extra routes), binding and
//! serving it, and the address it listens on.

use std::net::SocketAddr;
use std::sync::Arc;

use tokio::net::TcpListener;
use tracing::info;

use super::{Error, Kite, read, write};
use crate::server::{ServeOptions, Server};
use crate::session::Session;
use crate::sockjs::{SockJsOptions, SockJsServer};

impl Kite {
    #[cfg(feature = "server")]
    /// Mounts extra HTTP routes beside `/kite` (merged into the server's router). Call before
    /// [`Kite::run`].
    pub fn route(&self, path: &str, route: axum::routing::MethodRouter) {
        let mut registry = write(&self.0.registry);
        registry.routes = std::mem::take(&mut registry.routes).route(path, route);
    }

    #[cfg(feature = "server")]
    /// The HTTP router of this kite: SockJS at `/kite` plus extra routes. Mount it in another
    /// server to serve the kite there (serve it with [`crate::server`], or with connect info
    /// [`crate::sockjs::PeerAddr`], for peer addresses and the per-address budgets).
    ///
    /// Its SockJS server takes the session, websocket and queue budgets of `Config::limits`,
    /// counted in [`Kite::occupancy`] (shared by every router of this kite).
    pub fn router(&self) -> axum::Router {
        let inner = Arc::downgrade(&self.0);
        let limits = &self.0.config.limits;
        let options = SockJsOptions {
            heartbeat_delay: self.0.config.heartbeat_delay,
            disconnect_delay: self.0.config.disconnect_delay,
            max_message_size: self.0.config.max_message_size,
            websocket: self.0.config.websocket,
            max_queued_bytes: limits.max_queued_bytes,
            max_sessions: limits.max_sessions,
            max_sessions_per_ip: limits.max_sessions_per_ip,
            max_websockets: limits.max_websockets,
            max_websockets_per_ip: limits.max_websockets_per_ip,
            ..self.0.config.sockjs.clone()
        };
        let on_session = move |session: Session| {
            if let Some(inner) = inner.upgrade() {
                Kite(inner).accept(session);
            }
        };
        // Go serves the SockJS welcome at both `/kite` and `/kite/`.
        let server = SockJsServer::with_occupancy(options, self.0.occupancy.clone(), on_session);
        read(&self.0.registry)
            .routes
            .clone()
            .merge(server.router_at("/kite"))
    }

    #[cfg(feature = "server")]
    /// What the peers of this kite hold now: HTTP sessions, websockets, and bytes queued for
    /// peers that have fallen behind (see [`crate::sockjs::Occupancy`]). Servers of other
    /// SockJS endpoints (a tunnel proxy's) may share it
    /// ([`SockJsServer::with_occupancy`]), to count their peers against the same budgets.
    pub fn occupancy(&self) -> &crate::sockjs::Occupancy {
        &self.0.occupancy
    }

    #[cfg(feature = "server")]
    /// Binds `Config::ip:Config::port` and serves until [`Kite::close`].
    pub async fn run(&self) -> Result<(), Error> {
        let listener = listen(SocketAddr::new(self.0.config.ip, self.0.config.port))?;
        self.serve(listener).await
    }

    #[cfg(feature = "server")]
    /// Serves on an already bound listener until [`Kite::close`], with [`crate::server`]: the
    /// connection budgets and timeouts of `Config::limits`, TLS when `Config::tls` is set.
    /// Long-lived connections get about 2 s after [`Kite::close`] before this returns.
    pub async fn serve(&self, listener: TcpListener) -> Result<(), Error> {
        let addr = listener.local_addr()?;
        let router = self.router();
        let options = ServeOptions::from_limits(&self.0.config.limits);
        let (options, scheme) = match &self.0.config.tls {
            #[cfg(feature = "tls")]
            Some(tls) => (options.with_tls(crate::tls::server_config(tls)?), "https"),
            #[cfg(not(feature = "tls"))]
            Some(_) => {
                return Err(Error::Io(std::io::Error::new(
                    std::io::ErrorKind::Unsupported,
                    "Config::tls needs kite-native's feature tls",
                )));
            }
            None => (options, "http"),
        };
        let server = Server::new(router, options);
        let _ = self.0.local_addr.send_replace(Some(addr));
        info!(kite = %self.0.identity, %addr, "serving at {scheme}://{addr}/kite");
        let served = server
            .serve(listener, self.0.shutdown.clone().cancelled_owned())
            .await;
        let _ = self.0.local_addr.send_replace(None);
        served?;
        Ok(())
    }

    #[cfg(feature = "server")]
    /// Resolves when the server is listening, with its address.
    pub async fn ready(&self) -> SocketAddr {
        let mut rx = self.0.local_addr.subscribe();
        loop {
            if let Some(addr) = *rx.borrow_and_update() {
                return addr;
            }
            if rx.changed().await.is_err() {
                std::future::pending::<()>().await;
            }
        }
    }

    #[cfg(feature = "server")]
    /// The port the server listens on, once it does.
    pub fn port(&self) -> Option<u16> {
        self.0.local_addr.borrow().map(|a| a.port())
    }

    #[cfg(feature = "server")]
    /// The base URL of this kite's server (`http(s)://127.0.0.1:<port>/kite` for loopback or
    /// wildcard binds), once it listens.
    pub fn url(&self) -> Option<String> {
        let addr = (*self.0.local_addr.borrow())?;
        let ip = if addr.ip().is_unspecified() {
            std::net::IpAddr::from([127, 0, 0, 1])
        } else {
            addr.ip()
        };
        let scheme = if self.0.config.tls.is_some() {
            "https"
        } else {
            "http"
        };
        Some(format!(
            "{scheme}://{}/kite",
            SocketAddr::new(ip, addr.port())
        ))
    }
}

#[cfg(feature = "server")]
/// Connections waiting to be accepted, at most: a burst of clients (a thousand XHR sessions
/// opening their second connection at once) must not overflow it, or their SYNs are dropped and
/// retried a second later. The kernel caps it at `net.core.somaxconn`, as for Go's listeners.
pub const LISTEN_BACKLOG: u32 = 4096;

#[cfg(feature = "server")]
/// Binds `addr` for serving, with address reuse (a restarted kite gets its port back at once)
/// and a [`LISTEN_BACKLOG`]-deep accept queue.
pub fn listen(addr: SocketAddr) -> std::io::Result<TcpListener> {
    let socket = if addr.is_ipv4() {
        tokio::net::TcpSocket::new_v4()?
    } else {
        tokio::net::TcpSocket::new_v6()?
    };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(LISTEN_BACKLOG)
}
