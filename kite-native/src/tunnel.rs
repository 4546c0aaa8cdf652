//! The private side of a tunnel proxy (Go's `tunnelproxy`): a kite that cannot be dialed keeps a
//! connection to the proxy, and opens a tunnel back to it for each public client.
//!
//! [`Kite::register_to_tunnel`] dials the proxy (authenticated with the kite key, reconnecting
//! by itself), calls its `register`, which answers the public URL clients reach the kite at,
//! and registers that URL with Kontrol; it does so again every time the connection to the proxy
//! comes back (after a proxy restart, say).
//!
//! For each public client session the proxy calls `kite.tunnel` with
//! `{"url":"ws://<proxy>/tunnel/<server>/<session>/websocket?token=<jwt>"}` on that connection.
//! The kite dials that SockJS websocket and serves it exactly like a connection it accepted:
//! every request is authenticated as usual (the public caller's token or kite key), unlike Go,
//! which runs tunnelled requests unauthenticated. `kite.tunnel` itself is obeyed only when it
//! comes on a connection this kite dialed to a tunnel proxy it registers with; anyone else
//! (a public caller through the tunnel included) gets an `authenticationError`, or they could
//! make the kite dial any URL they like.

use std::sync::atomic::Ordering;

use kite_core::{ErrorKind, KiteError};
use serde::Deserialize;
use serde_json::Value;
use tracing::debug;

use crate::config::Config;
use crate::kite::Kite;
use crate::proxy::Via;
use crate::request::Request;
use crate::transport::{self, DialOptions};

/// `kite.tunnel`'s argument (Go decodes it into a struct with a `URL` field, case-insensitively).
#[derive(Debug, Deserialize)]
struct TunnelArgs {
    #[serde(alias = "URL", alias = "Url")]
    url: String,
}

/// The URL without its query (which holds the tunnel token), for logs and errors.
fn without_query(url: &str) -> &str {
    url.split_once('?').map_or(url, |(u, _)| u)
}

/// How the kite dials tunnels: its configured handshake limit and message size.
fn dial_options(config: &Config) -> DialOptions {
    DialOptions {
        transport: transport::Transport::WebSocket,
        handshake_timeout: config.handshake_timeout,
        timeout: config.timeout,
        max_message_size: config.max_message_size,
        ..DialOptions::default()
    }
}

/// Registers the `kite.tunnel` built-in.
pub(crate) fn register_builtin(kite: &Kite) {
    kite.handle("kite.tunnel", |req: Request| async move {
        let client = &req.client;
        if client.0.accepted || !client.0.tunnel_proxy.load(Ordering::SeqCst) {
            return Err(KiteError::new(
                ErrorKind::Authentication,
                "kite.tunnel is accepted only from a tunnel proxy this kite registered with",
            ));
        }
        let args: TunnelArgs = req.arg()?;
        let shown = without_query(&args.url).to_owned();
        let inner = client.0.kite.clone();
        let session = transport::dial_websocket_at(&args.url, &dial_options(&inner.config))
            .await
            .map_err(|e| KiteError::generic(format!("cannot open the tunnel {shown}: {e}")))?;
        debug!(url = %shown, "tunnel open");
        Kite(inner).accept(session);
        Ok::<_, KiteError>(Value::Null)
    })
    // The check above is the authentication: the proxy calls it on a connection we dialed.
    .disable_authentication();
}

impl Kite {
    /// Serves this kite through the tunnel proxy at `tunnel_url` (its kite URL, such as
    /// `http://proxy.example.com:3999/kite`), for a kite that cannot be dialed: dials the proxy
    /// with the kite key, calls its `register` and registers the public URL it answers with
    /// Kontrol (unless the config names no Kontrol), then returns that URL. The connection
    /// reconnects by itself, and registers (with the proxy and Kontrol) again each time it
    /// comes back. The kite need not listen on any port. [`Kite::close`] closes the connection.
    ///
    /// Waits until the proxy can be reached; fails if the proxy or Kontrol refuses the first
    /// registration.
    ///
    /// With `tunnel_url` empty, the proxy is `Config::proxy_url` (`KITE_PROXY_URL`) if set, as
    /// in Go, else one Kontrol finds for Go's `RegisterToTunnel` query: the kite's `Config::kontrol_user`, its `Config::environment` and the name
    /// `tunnelproxy` (one at random if several). That fails if Kontrol finds none, where Go asks
    /// again until it does, and reconnects go to the proxy found, where Go asks Kontrol again.
    pub async fn register_to_tunnel(&self, tunnel_url: &str) -> Result<String, KiteError> {
        let tunnel_url = if !tunnel_url.is_empty() {
            tunnel_url.to_owned()
        } else if !self.0.config.proxy_url.is_empty() {
            self.0.config.proxy_url.clone()
        } else {
            let query = self.proxy_query(crate::proxy::TUNNEL_PROXY_NAME);
            self.find_proxy(&query).await?
        };
        self.register_via(&tunnel_url, Via::Tunnel, |client| {
            // `kite.tunnel` is obeyed on this connection only.
            client.0.tunnel_proxy.store(true, Ordering::SeqCst);
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_stay_out_of_messages() {
        assert_eq!(
            without_query("ws://h/tunnel/1/2/websocket?token=secret"),
            "ws://h/tunnel/1/2/websocket"
        );
        assert_eq!(without_query("ws://h/x"), "ws://h/x");
    }

    #[test]
    fn go_spells_the_argument_url() {
        let a: TunnelArgs = serde_json::from_str(r#"{"URL":"ws://h/t"}"#).unwrap();
        assert_eq!(a.url, "ws://h/t");
        let a: TunnelArgs = serde_json::from_str(r#"{"url":"ws://h/t"}"#).unwrap();
        assert_eq!(a.url, "ws://h/t");
    }
}
