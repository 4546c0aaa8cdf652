//! The kite side of a reverse proxy (Go's `reverseproxy`, the `kite-proxy` crate's
//! `reverse::ReverseProxy`): a kite that serves on a private address is reached through the
//! proxy's public `/proxy/<kiteID>` URL.
//!
//! [`Kite::register_to_proxy`] dials the proxy (authenticated with the kite key, reconnecting
//! by itself), calls its `register` with the kite's own URL, which answers the public URL, and
//! registers that URL with Kontrol. The proxy forgets the kite when that connection ends, so
//! the kite registers (with the proxy and Kontrol) again each time the connection comes back,
//! after a proxy restart say.
//!
//! As in Go, `KITE_PROXY_URL` ([`crate::Config::proxy_url`]) names a proxy to go through: with
//! it set, [`Kite::register_forever`] registers the kite's URL with that proxy, and the public
//! URL with Kontrol, instead of registering the URL with Kontrol directly. (Go reads the
//! variable in `RegisterToProxy` only, and otherwise asks Kontrol for a kite named `proxy`.)
//! [`Kite::register_to_proxy`] with no proxy URL does the same: `KITE_PROXY_URL` if set, else
//! the proxy Kontrol finds.

use std::sync::Arc;

use kite_core::{Auth, ErrorKind, KiteError, KontrolQuery};
use tokio::sync::watch;
use tracing::{info, warn};

use crate::client::{Backoff, Client};
use crate::kite::{Kite, lock};

/// The name Go's reverse proxy kite has, which a kite asks Kontrol for.
pub(crate) const REVERSE_PROXY_NAME: &str = "proxy";
/// The name Go's tunnel proxy kite has, which a kite asks Kontrol for.
pub(crate) const TUNNEL_PROXY_NAME: &str = "tunnelproxy";

/// What the first registration over a proxy connection came to.
type FirstResult = Option<Result<String, KiteError>>;

/// The kind of proxy a kite registers with, and what its `register` takes.
#[derive(Debug, Clone)]
pub(crate) enum Via {
    /// A reverse proxy: `register [local_url]`.
    Reverse {
        /// The kite's own URL, which the proxy forwards to.
        local_url: String,
    },
    /// A tunnel proxy: `register` without arguments; the connection also carries `kite.tunnel`.
    Tunnel,
}

impl Via {
    fn name(&self) -> &'static str {
        match self {
            Via::Reverse { .. } => "reverse proxy",
            Via::Tunnel => "tunnel proxy",
        }
    }
}

impl Kite {
    /// Serves this kite (listening at `local_url`, its kite URL such as
    /// `http://10.0.0.7:6000/kite`) through the reverse proxy at `proxy_url` (the proxy kite's
    /// URL, such as `https://proxy.example.com:3999/kite`): dials the proxy with the kite key,
    /// calls `register [local_url]`, registers the public URL the proxy answers
    /// (`…/proxy/<kiteID>`) with Kontrol (unless the config names no Kontrol), and returns it.
    ///
    /// The connection to the proxy is kept (the proxy drops the route when it ends), reconnects
    /// by itself, and registers with the proxy and Kontrol again each time it comes back.
    /// [`Kite::close`] closes it.
    ///
    /// Waits until the proxy can be reached; fails if the proxy or Kontrol refuses the first
    /// registration.
    ///
    /// With `proxy_url` empty, the proxy is `Config::proxy_url` (`KITE_PROXY_URL`) if set,
    /// else a kite Kontrol finds for Go's query of the proxy: the kite's `Config::kontrol_user`
    /// (the user its kite key's Kontrol runs as), its `Config::environment` and the name
    /// `proxy` ([`Kite::register_to_proxy_by_query`] with [`Kite::proxy_query`]).
    pub async fn register_to_proxy(
        &self,
        proxy_url: &str,
        local_url: &str,
    ) -> Result<String, KiteError> {
        let proxy_url = if !proxy_url.is_empty() {
            proxy_url.to_owned()
        } else if !self.0.config.proxy_url.is_empty() {
            self.0.config.proxy_url.clone()
        } else {
            let query = self.proxy_query(REVERSE_PROXY_NAME);
            return self.register_to_proxy_by_query(&query, local_url).await;
        };
        let via = Via::Reverse {
            local_url: local_url.to_owned(),
        };
        self.register_via(&proxy_url, via, |_| {}).await
    }

    /// [`Kite::register_to_proxy`] through a reverse proxy Kontrol finds for `query` (one at
    /// random if it finds several), as Go's `RegisterToProxy` with its query. Fails if Kontrol
    /// finds none, where Go asks again every few seconds until it does; once found, the proxy
    /// kept is that one, reconnected to by its URL, where Go asks Kontrol again after every
    /// disconnect.
    pub async fn register_to_proxy_by_query(
        &self,
        query: &KontrolQuery,
        local_url: &str,
    ) -> Result<String, KiteError> {
        let proxy_url = self.find_proxy(query).await?;
        let via = Via::Reverse {
            local_url: local_url.to_owned(),
        };
        self.register_via(&proxy_url, via, |_| {}).await
    }

    /// Go's query for this kite's proxy kite `name` (`proxy` for the reverse proxy,
    /// `tunnelproxy` for the tunnel proxy): `Config::kontrol_user` as the username and
    /// `Config::environment`.
    pub fn proxy_query(&self, name: &str) -> KontrolQuery {
        KontrolQuery {
            username: self.0.config.kontrol_user.clone(),
            environment: self.0.config.environment.clone(),
            name: name.to_owned(),
            ..KontrolQuery::default()
        }
    }

    /// The URL of a kite Kontrol finds for `query`, one at random if several.
    pub(crate) async fn find_proxy(&self, query: &KontrolQuery) -> Result<String, KiteError> {
        let found = self.get_kites(query).await?;
        if found.is_empty() {
            return Err(KiteError::generic(format!(
                "Kontrol knows no proxy kite for {}/{}/{}",
                query.username, query.environment, query.name
            )));
        }
        let pick = rand::random_range(0..found.len());
        Ok(found[pick].url().to_owned())
    }

    /// Dials the proxy at `proxy_url` (`prepare` marks the client first), registers over that
    /// connection each time it opens, and returns the public URL of the first registration.
    /// The connection is kept until the first registration fails or the kite closes.
    pub(crate) async fn register_via(
        &self,
        proxy_url: &str,
        via: Via,
        prepare: impl FnOnce(&Client),
    ) -> Result<String, KiteError> {
        let client = self.new_client(proxy_url);
        prepare(&client);
        let (first_tx, mut first_rx) = watch::channel::<FirstResult>(None);
        let first_tx = Arc::new(first_tx);
        let weak = Arc::downgrade(&self.0);
        client.on_connect(move |c| {
            let Some(inner) = weak.upgrade() else { return };
            let (kite, c, first, via) = (Kite(inner), c.clone(), first_tx.clone(), via.clone());
            tokio::spawn(async move { kite.proxy_connected(c, &via, first).await });
        });
        // Closed by Kite::close.
        lock(&self.0.live).proxies.push(client.clone());
        client.dial_forever().await;
        let first = first_rx
            .wait_for(Option::is_some)
            .await
            .map(|r| r.clone())
            .ok()
            .flatten()
            .unwrap_or_else(|| Err(KiteError::disconnect()));
        if first.is_err() {
            client.close();
            lock(&self.0.live).proxies.retain(|c| !c.ptr_eq(&client));
        }
        first
    }

    /// Registers over a proxy connection that has just opened: the first time reporting the
    /// outcome to `first`, later (reconnects) retrying until it works or the connection goes.
    async fn proxy_connected(
        &self,
        client: Client,
        via: &Via,
        first: Arc<watch::Sender<FirstResult>>,
    ) {
        let is_first = first.borrow().is_none();
        let mut backoff = Backoff::default();
        loop {
            // A rotated kite key is the one to present.
            let key = self.kite_key();
            if !key.is_empty() {
                client.set_auth(Some(Auth::new("kiteKey", key)));
            }
            match self.register_with_proxy(&client, via, is_first).await {
                Ok(url) => {
                    info!(%url, proxy = %client.url(), "registered with the {}", via.name());
                    first.send_if_modified(|f| f.is_none().then(|| *f = Some(Ok(url))).is_some());
                    return;
                }
                // The connection dropped under the first registration: the next one retries it.
                Err(_) if is_first && !client.is_connected() => return,
                Err(e) if is_first => {
                    first.send_if_modified(|f| f.is_none().then(|| *f = Some(Err(e))).is_some());
                    return;
                }
                Err(e) => {
                    if !client.is_connected() || self.0.shutdown.is_cancelled() {
                        return;
                    }
                    let wait = backoff.next();
                    warn!(proxy = %client.url(), error = %e, ?wait, "registering with the {} failed, retrying", via.name());
                    tokio::time::sleep(wait).await;
                }
            }
        }
    }

    /// Calls the proxy's `register` and registers the public URL with Kontrol (if
    /// configured): once when `once`, else until Kontrol accepts it.
    async fn register_with_proxy(
        &self,
        client: &Client,
        via: &Via,
        once: bool,
    ) -> Result<String, KiteError> {
        let answer = match via {
            Via::Reverse { local_url } => {
                client
                    .tell_with_timeout("register", (local_url,), self.0.config.timeout)
                    .await
            }
            Via::Tunnel => {
                client
                    .tell_with_timeout("register", (), self.0.config.timeout)
                    .await
            }
        };
        let public: String = answer
            .map_err(KiteError::from)
            .and_then(|result| result.decode())
            .map_err(|e| {
                KiteError::new(e.kind, format!("{} register: {}", via.name(), e.message))
            })?;
        if !self.0.config.kontrol_url.is_empty() {
            if once {
                self.register(&public).await?;
            } else {
                self.register_directly_forever(&public).await?;
            }
        }
        Ok(public)
    }

    /// `register_forever` through `Config::proxy_url`: [`Kite::register_to_proxy`] retried
    /// like a registration with Kontrol until it works.
    pub(crate) async fn register_through_proxy_forever(
        &self,
        proxy_url: &str,
        url: &str,
    ) -> Result<kite_core::kontrol::RegisterResult, KiteError> {
        let mut wait = std::time::Duration::from_secs(2);
        loop {
            let outcome = tokio::select! {
                () = self.0.shutdown.cancelled() => {
                    return Err(KiteError::new(ErrorKind::Disconnect, "the kite is closed"));
                }
                r = self.register_to_proxy(proxy_url, url) => r,
            };
            match outcome {
                Ok(public) => {
                    return Ok(kite_core::kontrol::RegisterResult {
                        url: public,
                        ..Default::default()
                    });
                }
                Err(e) => {
                    warn!(proxy = %proxy_url, error = %e, ?wait, "registering through the reverse proxy failed, retrying");
                    tokio::select! {
                        () = self.0.shutdown.cancelled() => return Err(e),
                        () = tokio::time::sleep(wait) => {}
                    }
                    wait = (wait * 3 / 2).min(std::time::Duration::from_secs(60));
                }
            }
        }
    }
}
