//! TLS for the server (PEM certificate and key) and for clients (`https`/`wss`, with extra
//! trusted roots for private CAs and self-signed certificates).

use std::io;
#[cfg(feature = "server")]
use std::net::SocketAddr;
use std::sync::Arc;
#[cfg(feature = "server")]
use std::time::Duration;

use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
#[cfg(feature = "server")]
use tokio::net::{TcpListener, TcpStream};
#[cfg(feature = "server")]
use tokio::sync::mpsc;
#[cfg(feature = "server")]
use tokio_rustls::TlsAcceptor;
use tokio_rustls::rustls::{self, ClientConfig, RootCertStore, ServerConfig};
#[cfg(feature = "server")]
use tokio_rustls::server::TlsStream;
#[cfg(feature = "server")]
use tracing::debug;

use crate::config::TlsConfig;

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn invalid(what: impl std::fmt::Display) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidInput, what.to_string())
}

/// Builds a server configuration from PEM files.
pub fn server_config(tls: &TlsConfig) -> io::Result<ServerConfig> {
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&tls.cert_path)
        .map_err(|e| invalid(format!("{}: {e}", tls.cert_path.display())))?
        .collect::<Result<_, _>>()
        .map_err(|e| invalid(format!("{}: {e}", tls.cert_path.display())))?;
    if certs.is_empty() {
        return Err(invalid(format!(
            "{}: no certificate",
            tls.cert_path.display()
        )));
    }
    let key = PrivateKeyDer::from_pem_file(&tls.key_path)
        .map_err(|e| invalid(format!("{}: {e}", tls.key_path.display())))?;
    ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(invalid)?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(invalid)
}

/// Client configuration trusting the web PKI roots plus `extra_roots` (PEM certificates).
pub fn client_config(extra_roots: &[String]) -> io::Result<ClientConfig> {
    let mut roots = RootCertStore::empty();
    roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    for pem in extra_roots {
        for cert in CertificateDer::pem_slice_iter(pem.as_bytes()) {
            roots.add(cert.map_err(invalid)?).map_err(invalid)?;
        }
    }
    Ok(ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(invalid)?
        .with_root_certificates(roots)
        .with_no_client_auth())
}

/// A TLS listener for `axum::serve` (see [`TlsListener::new`]). Handshakes run in their own
/// tasks (at most 10 s each), so a slow or hostile client never holds up accepting others.
///
/// It has no connection budget and `axum::serve` no header timeout: kites serve TLS with
/// [`crate::server`] ([`crate::server::ServeOptions::with_tls`]), which has both.
#[cfg(feature = "server")]
pub struct TlsListener {
    addr: SocketAddr,
    ready: mpsc::Receiver<(TlsStream<TcpStream>, SocketAddr)>,
    _accept: tokio::task::JoinHandle<()>,
}

#[cfg(feature = "server")]
impl std::fmt::Debug for TlsListener {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsListener")
            .field("addr", &self.addr)
            .finish()
    }
}

#[cfg(feature = "server")]
impl TlsListener {
    /// Accepts TLS connections on `tcp` with `config`.
    pub fn new(tcp: TcpListener, config: ServerConfig) -> io::Result<Self> {
        let addr = tcp.local_addr()?;
        let acceptor = TlsAcceptor::from(Arc::new(config));
        let (tx, ready) = mpsc::channel(64);
        let accept = tokio::spawn(async move {
            loop {
                let (stream, peer) = match tcp.accept().await {
                    Ok(x) => x,
                    Err(e) => {
                        // Out of file descriptors and the like: back off a little.
                        debug!(error = %e, "accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                };
                // Calls are small messages that must leave at once.
                let _ = stream.set_nodelay(true);
                let acceptor = acceptor.clone();
                let tx = tx.clone();
                tokio::spawn(async move {
                    match tokio::time::timeout(Duration::from_secs(10), acceptor.accept(stream))
                        .await
                    {
                        Ok(Ok(tls)) => {
                            let _ = tx.send((tls, peer)).await;
                        }
                        Ok(Err(e)) => debug!(%peer, error = %e, "TLS handshake failed"),
                        Err(_) => debug!(%peer, "TLS handshake timed out"),
                    }
                });
            }
        });
        Ok(TlsListener {
            addr,
            ready,
            _accept: accept,
        })
    }
}

#[cfg(feature = "server")]
impl Drop for TlsListener {
    fn drop(&mut self) {
        self._accept.abort();
    }
}

#[cfg(feature = "server")]
impl axum::serve::Listener for TlsListener {
    type Io = TlsStream<TcpStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        match self.ready.recv().await {
            Some(x) => x,
            // The accept task never ends on its own.
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> io::Result<Self::Addr> {
        Ok(self.addr)
    }
}
