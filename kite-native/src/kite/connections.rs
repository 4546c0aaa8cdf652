//! The connections a kite accepts: accepting a session, the connect, first-request and
//! disconnect hooks, and closing them all.

use std::collections::HashMap;
use std::sync::Arc;

use tracing::{debug, warn};

use super::{Kite, KiteInner, lock, read, write};
use crate::client::Client;
use crate::session::Session;

pub(crate) type Hook = Arc<dyn Fn(&Client) + Send + Sync>;

/// A function run after each registration with Kontrol ([`Kite::on_register`]).
#[cfg(feature = "client")]
pub(crate) type RegisterHook = Arc<dyn Fn(&kite_core::kontrol::RegisterResult) + Send + Sync>;

/// The connections and tasks a kite holds open, which [`Kite::close`] ends.
#[derive(Default)]
pub(crate) struct Live {
    /// The connections this kite accepted, by the address of their `ClientInner`.
    accepted: HashMap<usize, Client>,
    /// The connection to Kontrol, once used.
    pub(crate) kontrol: Option<Client>,
    /// The URL this kite registered with Kontrol, registered again on reconnects.
    #[cfg(feature = "client")]
    pub(crate) registered_url: Option<String>,
    /// The task pinging Kontrol back for `kite.heartbeat` (one per kite, as in Go).
    pub(crate) heartbeat: Option<tokio::task::JoinHandle<()>>,
    /// Connections to the reverse and tunnel proxies this kite registered with.
    pub(crate) proxies: Vec<Client>,
}

/// The functions run when accepted connections open, make their first request and close.
#[derive(Default)]
pub(super) struct KiteHooks {
    pub(super) connect: Vec<Hook>,
    pub(super) first_request: Vec<Hook>,
    pub(super) disconnect: Vec<Hook>,
    /// Run after every registration with Kontrol.
    #[cfg(feature = "client")]
    pub(super) register: Vec<RegisterHook>,
}

impl Kite {
    /// Runs `f` for every accepted connection, when it opens.
    pub fn on_connect(&self, f: impl Fn(&Client) + Send + Sync + 'static) {
        write(&self.0.registry).hooks.connect.push(Arc::new(f));
    }

    /// Runs `f` once per accepted connection, before its first request is handled (the
    /// client's remote identity is set by then).
    pub fn on_first_request(&self, f: impl Fn(&Client) + Send + Sync + 'static) {
        write(&self.0.registry)
            .hooks
            .first_request
            .push(Arc::new(f));
    }

    /// Runs `f` when an accepted connection ends.
    pub fn on_disconnect(&self, f: impl Fn(&Client) + Send + Sync + 'static) {
        write(&self.0.registry).hooks.disconnect.push(Arc::new(f));
    }

    /// Runs `f` with Kontrol's answer after every successful registration of this kite, as Go's
    /// `OnRegister`: the first one and each again after a reconnect, through
    /// [`Kite::register`], [`Kite::register_forever`], [`Kite::register_http`] (and its
    /// re-registrations when a heartbeat is answered `registeragain`),
    /// [`Kite::register_http_forever`] and the Kontrol registrations of
    /// [`Kite::register_to_proxy`] and [`Kite::register_to_tunnel`]. Runs after the keys the
    /// answer rotates are installed; a panic in `f` is caught and logged.
    #[cfg(feature = "client")]
    pub fn on_register(
        &self,
        f: impl Fn(&kite_core::kontrol::RegisterResult) + Send + Sync + 'static,
    ) {
        write(&self.0.registry).hooks.register.push(Arc::new(f));
    }

    /// Runs the [`Kite::on_register`] hooks with `result`.
    #[cfg(feature = "client")]
    pub(crate) fn registered(&self, result: &kite_core::kontrol::RegisterResult) {
        let hooks = read(&self.0.registry).hooks.register.clone();
        for h in hooks {
            if std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| h(result))).is_err() {
                warn!("an on_register hook panicked");
            }
        }
    }

    pub(crate) fn accept(&self, session: Session) {
        if self.0.shutdown.is_cancelled() {
            let (code, reason) = kite_core::sockjs::GO_AWAY;
            session.tx.close(code, reason);
            return;
        }
        let client = Client::new(self.0.clone(), String::new(), true);
        debug!(session = %session.info.id, transport = %session.info.transport, "new session");
        lock(&self.0.live)
            .accepted
            .insert(Arc::as_ptr(&client.0) as usize, client.clone());
        let hooks = read(&self.0.registry).hooks.connect.clone();
        for h in hooks {
            run_hook(&h, &client);
        }
        client.attach(session);
    }

    /// Stops the server: closes every accepted session with `c[3000,"Go away!"]` and makes
    /// [`Kite::run`] return.
    pub fn close(&self) {
        self.0.shutdown.cancel();
        // Taken out first: closing a client reaches `disconnected`, which locks `live` again.
        let (clients, kontrol, proxies, heartbeat) = {
            let mut live = lock(&self.0.live);
            let clients: Vec<Client> = live.accepted.drain().map(|(_, c)| c).collect();
            (
                clients,
                live.kontrol.take(),
                std::mem::take(&mut live.proxies),
                live.heartbeat.take(),
            )
        };
        for c in clients {
            c.close();
        }
        if let Some(k) = kontrol {
            k.close();
        }
        for p in proxies {
            p.close();
        }
        if let Some(h) = heartbeat {
            h.abort();
        }
    }

    /// Number of accepted connections currently open.
    pub fn connections(&self) -> usize {
        lock(&self.0.live).accepted.len()
    }
}

impl KiteInner {
    pub(crate) fn disconnected(&self, client: &Client) {
        lock(&self.live)
            .accepted
            .remove(&(Arc::as_ptr(&client.0) as usize));
        let hooks = read(&self.registry).hooks.disconnect.clone();
        for h in hooks {
            run_hook(&h, client);
        }
    }
}

/// Runs a connection hook; a panicking hook is logged and ignored.
pub(crate) fn run_hook(h: &Hook, client: &Client) {
    if std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| h(client))).is_err() {
        warn!("a connection hook panicked");
    }
}
