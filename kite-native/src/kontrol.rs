//! The client side of Kontrol every kite has: register with it, find kites through it, get
//! tokens from it.
//!
//! The Kontrol URL and the credentials come from the kite's config (normally filled from its
//! `kite.key`, see [`crate::Config::get`]). The connection to Kontrol authenticates with the kite
//! key and is trusted (Kontrol calls `kite.heartbeat` back on it); it reconnects by itself, and
//! a kite registered with [`Kite::register`] registers again on every reconnect.
//!
//! ```no_run
//! # async fn demo(kite: kite_native::Kite) -> Result<(), kite_native::KiteError> {
//! use kite_native::core::KontrolQuery;
//!
//! kite.register("http://127.0.0.1:6000/kite").await?;
//! let query = KontrolQuery { username: "alice".into(), environment: "prod".into(),
//!     name: "math".into(), ..Default::default() };
//! let math = kite.get_kites(&query).await?.remove(0);
//! math.dial().await?;
//! let n: f64 = math.call("square", (4,)).await?;
//! # Ok(()) }
//! ```

use kite_core::kontrol::{
    GetKitesArgs, GetKitesResult, GetTokenArgs, RegisterArgs, RegisterResult, WATCH_CALLBACK,
    WatchEvent,
};
use kite_core::{Args, Auth, Callback, KiteError, KontrolQuery};
use tracing::{info, warn};

use crate::{Client, Kite};

impl Kite {
    /// The connection to this kite's Kontrol (`Config::kontrol_url`), dialed (and kept:
    /// reconnecting by itself) on first use, authenticated with the kite key.
    pub async fn kontrol(&self) -> Result<Client, KiteError> {
        let existing = crate::kite::lock(&self.0.live).kontrol.clone();
        if let Some(c) = existing {
            c.dial_forever().await;
            return Ok(c);
        }
        let url = self.0.config.kontrol_url.clone();
        if url.is_empty() {
            return Err(KiteError::generic("no Kontrol URL in the config"));
        }
        let client = {
            let mut live = crate::kite::lock(&self.0.live);
            live.kontrol
                .get_or_insert_with(|| {
                    let c = self.new_client(&url);
                    let key = self.kite_key();
                    if !key.is_empty() {
                        c.set_auth(Some(Auth::new("kiteKey", key)));
                    }
                    // Kontrol calls `kite.heartbeat` back on this connection.
                    c.set_trusted(true);
                    c
                })
                .clone()
        };
        client.dial_forever().await;
        Ok(client)
    }

    /// Registers this kite with Kontrol under `url` (where it can be reached), and again after
    /// every reconnect to Kontrol. A new kite key or public key in the answer is applied (and
    /// the kite key written back to `kite.key` when the kite has one there).
    pub async fn register(&self, url: &str) -> Result<RegisterResult, KiteError> {
        let kontrol = self.kontrol().await?;
        let result = self.register_once(&kontrol, url).await?;
        let first = {
            let mut live = crate::kite::lock(&self.0.live);
            let first = live.registered_url.is_none();
            live.registered_url = Some(url.to_owned());
            first
        };
        if first {
            // Weak: the Kontrol client is held by the kite, and must not hold it back.
            let weak = std::sync::Arc::downgrade(&self.0);
            kontrol.on_connect(move |c| {
                let Some(inner) = weak.upgrade() else { return };
                let (kite, c) = (Kite(inner), c.clone());
                let url = crate::kite::lock(&kite.0.live).registered_url.clone();
                if let Some(url) = url {
                    tokio::spawn(async move {
                        match kite.register_once(&c, &url).await {
                            Ok(_) => info!(%url, "registered again with Kontrol"),
                            Err(e) => warn!(%url, error = %e, "registering again failed"),
                        }
                    });
                }
            });
        }
        Ok(result)
    }

    /// [`Kite::register`], retried (after 2 s, then half as long again each time, at most a
    /// minute apart) until Kontrol accepts it, as Go's `RegisterForever`; later reconnects
    /// register again by themselves. Gives up only when the kite closes.
    ///
    /// With `Config::proxy_url` (`KITE_PROXY_URL`) set, `url` is registered with that reverse
    /// proxy instead, and the public URL it answers with Kontrol
    /// ([`Kite::register_to_proxy`], retried the same way); the result then holds that URL.
    pub async fn register_forever(&self, url: &str) -> Result<RegisterResult, KiteError> {
        let proxy = self.0.config.proxy_url.clone();
        if !proxy.is_empty() {
            return self.register_through_proxy_forever(&proxy, url).await;
        }
        self.register_directly_forever(url).await
    }

    /// [`Kite::register_forever`] with Kontrol itself, whatever `Config::proxy_url` says.
    pub(crate) async fn register_directly_forever(
        &self,
        url: &str,
    ) -> Result<RegisterResult, KiteError> {
        self.retry_until_closed(url, || self.register(url)).await
    }

    /// Runs `attempt` until it succeeds, waiting 2 s after the first failure, then half as long
    /// again each time, at most a minute; gives up (with the last error) when the kite closes.
    async fn retry_until_closed<T, F, Fut>(&self, url: &str, mut attempt: F) -> Result<T, KiteError>
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = Result<T, KiteError>>,
    {
        let mut wait = std::time::Duration::from_secs(2);
        loop {
            match attempt().await {
                Ok(r) => return Ok(r),
                Err(e) => {
                    warn!(%url, error = %e, ?wait, "registering with Kontrol failed, retrying");
                    tokio::select! {
                        () = self.0.shutdown.cancelled() => return Err(e),
                        () = tokio::time::sleep(wait) => {}
                    }
                    wait = (wait * 3 / 2).min(std::time::Duration::from_secs(60));
                }
            }
        }
    }

    async fn register_once(
        &self,
        kontrol: &Client,
        url: &str,
    ) -> Result<RegisterResult, KiteError> {
        let result: RegisterResult = kontrol
            .call(
                "register",
                (RegisterArgs {
                    url: url.to_owned(),
                },),
            )
            .await?;
        if !result.kite_key.is_empty() || !result.public_key.is_empty() {
            // Written back only to the kite.key this kite's key came from.
            let current = self.kite_key();
            let path = crate::kitekey::kite_key_path().ok().filter(|p| {
                !current.is_empty()
                    && crate::kitekey::read_from(p).is_ok_and(|k| k.token == current)
            });
            let new_key = (!result.kite_key.is_empty()).then_some(result.kite_key.as_str());
            let new_public = (!result.public_key.is_empty()).then_some(result.public_key.as_str());
            self.rotate_keys(new_key, new_public, path.as_deref())
                .map_err(|e| KiteError::generic(format!("applying the new keys: {e}")))?;
            if let Some(key) = new_key {
                kontrol.set_auth(Some(Auth::new("kiteKey", key)));
            }
        }
        info!(%url, "registered with Kontrol");
        self.registered(&result);
        Ok(result)
    }

    /// The kites Kontrol knows that match `query`, as clients ready to dial, each carrying a
    /// token for it that renews itself through Kontrol.
    pub async fn get_kites(&self, query: &KontrolQuery) -> Result<Vec<Client>, KiteError> {
        self.get_kites_with(query, None).await
    }

    /// [`Kite::get_kites`], and then `on_event` with each kite matching `query` that registers
    /// or goes away, for as long as the connection to Kontrol lasts.
    pub async fn watch_kites(
        &self,
        query: &KontrolQuery,
        on_event: impl Fn(WatchEvent) + Send + Sync + 'static,
    ) -> Result<Vec<Client>, KiteError> {
        let callback = Callback::new(move |args: Args| {
            #[derive(serde::Deserialize)]
            struct Wrapped {
                result: Option<WatchEvent>,
            }
            match args.one::<Wrapped>() {
                Ok(Wrapped {
                    result: Some(event),
                }) => on_event(event),
                Ok(Wrapped { result: None }) => {}
                Err(e) => warn!(error = %e, "a watch event that is not one"),
            }
        });
        self.get_kites_with(query, Some(callback)).await
    }

    async fn get_kites_with(
        &self,
        query: &KontrolQuery,
        watch_callback: Option<Callback>,
    ) -> Result<Vec<Client>, KiteError> {
        let kontrol = self.kontrol().await?;
        let found: GetKitesResult = match watch_callback {
            // The function goes beside the query, under Go's `watchCallback` key.
            Some(cb) => {
                let args = kite_core::value!([{"query": query, (WATCH_CALLBACK): cb}]);
                kontrol.call("getKites", args).await?
            }
            None => {
                let args = GetKitesArgs {
                    query: Some(query.clone()),
                };
                kontrol.call("getKites", (args,)).await?
            }
        };
        Ok(found
            .kites
            .into_iter()
            .map(|k| {
                let client = self.new_client(&k.url);
                client.set_remote(k.kite.clone());
                if !k.token.is_empty() {
                    client.set_auth(Some(Auth::new("token", k.token)));
                }
                let kite = self.clone();
                let id = k.kite.id.clone();
                client.set_token_renewer(move || {
                    let kite = kite.clone();
                    let id = id.clone();
                    async move {
                        let query = KontrolQuery {
                            id,
                            ..KontrolQuery::default()
                        };
                        kite.get_token_forced(&query).await
                    }
                });
                client
            })
            .collect())
    }

    /// A token for calling the one kite `query` matches. Kontrol may answer one it gave
    /// before (for the same kite and user) while that one is still good for a while.
    pub async fn get_token(&self, query: &KontrolQuery) -> Result<String, KiteError> {
        self.get_token_with(query, false).await
    }

    /// [`Kite::get_token`], but always a new token (`getToken` with `force`), as Go's
    /// `GetTokenForce`: Kontrol signs a fresh one and hands that out from then on instead of
    /// the one it kept. For a token that was refused or is about to expire; the clients
    /// [`Kite::get_kites`] returns renew theirs this way. Go's takes the kite (`protocol.Kite`)
    /// and asks for its query; this takes the query, which may also name the kite by `id` alone.
    pub async fn get_token_forced(&self, query: &KontrolQuery) -> Result<String, KiteError> {
        self.get_token_with(query, true).await
    }

    async fn get_token_with(&self, query: &KontrolQuery, force: bool) -> Result<String, KiteError> {
        let kontrol = self.kontrol().await?;
        kontrol
            .call(
                "getToken",
                (GetTokenArgs {
                    query: query.clone(),
                    force,
                },),
            )
            .await
            .map_err(KiteError::from)
    }

    /// The public key Kontrol signs with now (for this kite's key pair). Unlike Go's `GetKey`
    /// it installs nothing: [`Kite::renew_kontrol_key`] does.
    pub async fn get_key(&self) -> Result<String, KiteError> {
        let kontrol = self.kontrol().await?;
        kontrol.call("getKey", ()).await.map_err(KiteError::from)
    }

    /// Asks Kontrol for the key it signs with now ([`Kite::get_key`]) and, when it is not the
    /// one this kite trusts ([`Kite::kontrol_key`]), installs it as [`Kite::rotate_keys`] does:
    /// `token` and `kiteKey` credentials are checked against it from then on, and those signed
    /// by the old key are refused (as in Go, whose `GetKey` replaces `Config.KontrolKey`).
    /// Returns the key.
    pub async fn renew_kontrol_key(&self) -> Result<String, KiteError> {
        let key = self.get_key().await?;
        let key = key.trim();
        if key.is_empty() {
            return Err(KiteError::generic("Kontrol answered an empty key"));
        }
        if key != self.kontrol_key() {
            self.rotate_keys(None, Some(key), None)
                .map_err(|e| KiteError::generic(format!("installing Kontrol's key: {e}")))?;
            info!("installed a new Kontrol key");
        }
        Ok(key.to_owned())
    }

    /// Runs [`Kite::renew_kontrol_key`] every `interval` (the first time one `interval` from
    /// now), so the kite follows a key rotation of its Kontrol, as Go's `NewKeyRenewer`. A
    /// failure is logged and tried again at the next tick. Unlike Go's, which blocks forever,
    /// this returns at once: the renewal stops when the returned handle is dropped or the kite
    /// closes. An `interval` under a millisecond counts as a millisecond. Needs a Tokio runtime.
    pub fn renew_kontrol_key_every(&self, interval: std::time::Duration) -> KeyRenewer {
        let interval = interval.max(std::time::Duration::from_millis(1));
        // Weak: the renewer must not keep the kite alive.
        let weak = std::sync::Arc::downgrade(&self.0);
        let stop = self.0.shutdown.clone();
        let task = tokio::spawn(async move {
            let mut tick =
                tokio::time::interval_at(tokio::time::Instant::now() + interval, interval);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    () = stop.cancelled() => return,
                    _ = tick.tick() => {}
                }
                let Some(inner) = weak.upgrade() else { return };
                let kite = Kite(inner);
                tokio::select! {
                    () = stop.cancelled() => return,
                    r = kite.renew_kontrol_key() => {
                        if let Err(e) = r {
                            warn!(error = %e, "renewing the Kontrol key failed");
                        }
                    }
                }
            }
        });
        KeyRenewer { task }
    }
}

/// The renewal [`Kite::renew_kontrol_key_every`] started: it stops when this is dropped.
#[derive(Debug)]
#[must_use = "the renewal stops when its handle is dropped"]
pub struct KeyRenewer {
    task: tokio::task::JoinHandle<()>,
}

impl KeyRenewer {
    /// Whether the renewal has stopped (the kite closed).
    pub fn is_finished(&self) -> bool {
        self.task.is_finished()
    }
}

impl Drop for KeyRenewer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Kite {
    /// Registers this kite under `url` with Kontrol's plain HTTP endpoint (`POST /register`
    /// next to its `/kite`), for kites that do not keep a connection to Kontrol, then sends
    /// `GET /heartbeat?id=` at the interval Kontrol asks for, registering again when told
    /// `registeragain`, until the kite closes.
    pub async fn register_http(&self, url: &str) -> Result<RegisterResult, KiteError> {
        let base = self.0.config.kontrol_url.trim_end_matches('/').to_owned();
        if base.is_empty() {
            return Err(KiteError::generic("no Kontrol URL in the config"));
        }
        let base = base.strip_suffix("/kite").unwrap_or(&base).to_owned();
        let http = reqwest::Client::new();
        let result = self.post_register(&http, &base, url).await?;
        let kite = self.clone();
        let url = url.to_owned();
        let interval = std::time::Duration::from_secs(result.heartbeat_interval.max(1));
        let stop = self.0.shutdown.clone();
        tokio::spawn(async move {
            let id = kite.identity().id.clone();
            loop {
                tokio::select! {
                    () = stop.cancelled() => return,
                    () = tokio::time::sleep(interval) => {}
                }
                let answer = match http
                    .get(format!("{base}/heartbeat"))
                    .query(&[("id", id.as_str())])
                    .send()
                    .await
                {
                    Ok(r) => r.text().await.unwrap_or_default(),
                    Err(e) => {
                        warn!(error = %e, "HTTP heartbeat failed");
                        continue;
                    }
                };
                if answer.trim() == "registeragain" {
                    match kite.post_register(&http, &base, &url).await {
                        Ok(_) => info!(%url, "registered again with Kontrol over HTTP"),
                        Err(e) => warn!(error = %e, "registering again over HTTP failed"),
                    }
                }
            }
        });
        Ok(result)
    }

    async fn post_register(
        &self,
        http: &reqwest::Client,
        base: &str,
        url: &str,
    ) -> Result<RegisterResult, KiteError> {
        let body = serde_json::json!({
            "url": url,
            "kite": self.identity(),
            "auth": {"type": "kiteKey", "key": self.kite_key()},
        });
        let resp = http
            .post(format!("{base}/register"))
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .body(body.to_string())
            .send()
            .await
            .map_err(|e| KiteError::generic(format!("register over HTTP: {e}")))?;
        let status = resp.status();
        let text = resp
            .text()
            .await
            .map_err(|e| KiteError::generic(format!("register over HTTP: {e}")))?;
        if !status.is_success() {
            let message = serde_json::from_str::<serde_json::Value>(&text)
                .ok()
                .and_then(|v| v["err"].as_str().map(str::to_owned))
                .unwrap_or(text);
            return Err(KiteError::generic(format!(
                "register over HTTP: {status}: {message}"
            )));
        }
        let result: RegisterResult = serde_json::from_str(&text)
            .map_err(|e| KiteError::generic(format!("register over HTTP: {e}: {text}")))?;
        self.registered(&result);
        Ok(result)
    }

    /// [`Kite::register_http`], retried until Kontrol answers, as Go's `RegisterHTTPForever`
    /// (for a kite that starts before its Kontrol): after 2 s, then half as long again each
    /// time, at most a minute apart (Go waits 30 s, then 1.7 times as long, at most 5 minutes).
    /// Once registered, the heartbeats register again whenever Kontrol answers
    /// `registeragain`. Gives up only when the kite closes (with the last error).
    pub async fn register_http_forever(&self, url: &str) -> Result<RegisterResult, KiteError> {
        if self.0.config.kontrol_url.is_empty() {
            return Err(KiteError::generic("no Kontrol URL in the config"));
        }
        self.retry_until_closed(url, || self.register_http(url))
            .await
    }
}
