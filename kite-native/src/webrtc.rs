//! WebRTC signalling, wire-compatible with Go kite: the relay method `kite.handleWebRTC`
//! (served when [`crate::Config::use_webrtc`] is set, as Go's `Config.UseWebRTC`) and
//! [`Client::send_webrtc_request`]. The routing rules are kite-core's ([`kite_core::webrtc`]).
//!
//! A caller's message gets `src` set to the caller's kite id (Go's `r.Client.ID`: the `kite.id`
//! its requests declare); the caller is reachable under that id until its connection ends (Go
//! waits two more seconds; a closed connection can take nothing, so ours goes at once); the
//! message is forwarded by calling `kite.handleWebRTC` on the connection registered as `dst`,
//! and the caller gets what that call gave (`null`, or its error). Errors as Go's: `invalid
//! query: ...` for an argument that is not a signalling message, `dst not set`, `dst not
//! registered`. Beyond Go: an id belongs to the first connection signalling under it until that
//! connection ends — another connection declaring the same kite id is refused (`another
//! connection signals as ...`) instead of taking its signals, as Go's relay lets it — and a
//! `requestLimitError` comes once [`crate::Config::max_webrtc_peers`] peers are reachable.

use std::sync::{Arc, Mutex};

use kite_core::webrtc::{HANDLER_NAME, Relay, RelayError, SignalMessage};
use kite_core::{ErrorKind, KiteError};

use crate::client::{Client, ClientError};
use crate::kite::Kite;
use crate::request::Request;

/// Serves `kite.handleWebRTC` on `kite` (authenticated unless authentication is disabled, as
/// Go's `Handle` does).
pub(crate) fn serve_relay(kite: &Kite, max_peers: usize) {
    let relay: Arc<Mutex<Relay<Client>>> = Arc::new(Mutex::new(Relay::new(max_peers)));
    kite.handle(HANDLER_NAME, move |req: Request| {
        let relay = relay.clone();
        async move {
            let message: SignalMessage = req.arg().map_err(|e| {
                KiteError::new(e.kind.clone(), format!("invalid query: {}", e.message))
            })?;
            // Go's `r.Client.ID`: the kite id the caller declared.
            let id = req.caller.id.clone();
            let conn = req.client.id().to_owned();
            let routed = {
                let mut table = relay.lock().unwrap_or_else(|p| p.into_inner());
                let known = table.contains(&id);
                let routed = table.route(&id, &conn, req.client.clone(), message);
                if !known && table.contains(&id) {
                    let weak = Arc::downgrade(&relay);
                    req.client.on_disconnect(move |_| {
                        if let Some(relay) = weak.upgrade() {
                            relay
                                .lock()
                                .unwrap_or_else(|p| p.into_inner())
                                .remove(&id, &conn);
                        }
                    });
                }
                routed
            };
            let (dst, forwarded) = routed.map_err(|e| match e {
                RelayError::Full(_) => KiteError::new(ErrorKind::RequestLimit, e.to_string()),
                other => KiteError::generic(other.to_string()),
            })?;
            dst.send_webrtc_request(&forwarded)
                .await
                .map_err(|e| e.kite_error())?;
            Ok::<_, KiteError>(())
        }
    });
}

impl Client {
    /// Sends a signalling message to this connection's kite (Go's `SendWebRTCRequest`): calls
    /// `kite.handleWebRTC` with it, within the kite's configured timeout.
    pub async fn send_webrtc_request(&self, message: &SignalMessage) -> Result<(), ClientError> {
        let timeout = self.config_timeout();
        self.tell_with_timeout(HANDLER_NAME, (message,), timeout)
            .await
            .map(drop)
    }
}

#[cfg(feature = "client")]
impl Kite {
    /// Sends a signalling message through this kite's Kontrol (Go's `Kite.SendWebRTCRequest`):
    /// Kontrol relays it when it runs with `use_webrtc`, as Go's Kontrol does with `UseWebRTC`.
    pub async fn send_webrtc_request(&self, message: &SignalMessage) -> Result<(), KiteError> {
        let kontrol = self.kontrol().await?;
        kontrol
            .tell_with_timeout(HANDLER_NAME, (message,), self.config().timeout)
            .await
            .map(drop)
            .map_err(|e| e.kite_error())
    }
}
