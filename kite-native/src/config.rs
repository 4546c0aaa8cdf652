//! Kite configuration: Go's `config.Config` defaults and its `KITE_*` environment overrides.

use std::net::IpAddr;
use std::time::Duration;

use crate::transport::Transport;

/// Configuration of a kite, with the same defaults as Go kite.
///
/// `Config::default()` never reads the environment; [`Config::from_env`] starts from the
/// defaults and applies `KITE_*` variables the way Go's `ReadEnvironmentVariables` does.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct Config {
    /// Owner of the kite (`KITE_USERNAME`; default `unknown`).
    pub username: String,
    /// Environment (`KITE_ENVIRONMENT`; default `unknown`).
    pub environment: String,
    /// Region (`KITE_REGION`; default `unknown`).
    pub region: String,
    /// The kite's id. Empty (the default) means a fresh UUIDv4 per kite, as Go does.
    pub id: String,
    /// Address to listen on (`KITE_IP`; default `0.0.0.0`).
    pub ip: IpAddr,
    /// Port to listen on (`KITE_PORT`; default 0, a free port).
    pub port: u16,
    /// Transport for outgoing connections (`KITE_TRANSPORT`: `WebSocket`, `XHRPolling`, `auto`).
    pub transport: Transport,
    /// Timeout for XHR polls, Kontrol calls and HTTP requests (`KITE_TIMEOUT`; default 15 s).
    pub timeout: Duration,
    /// Websocket handshake timeout (`KITE_HANDSHAKE_TIMEOUT`; default 15 s).
    pub handshake_timeout: Duration,
    /// A bound on each whole dial of this kite's clients, fallbacks between transports
    /// included (default none: only `handshake_timeout` and `timeout` per step); see
    /// [`crate::transport::DialOptions::dial_timeout`] and [`crate::Client::dial_timeout`].
    pub dial_timeout: Option<Duration>,
    /// The Kontrol URL (`KITE_KONTROL_URL`).
    pub kontrol_url: String,
    /// The raw kite.key, if loaded.
    pub kite_key: String,
    /// The Kontrol's username: the issuer (`iss`) trusted in tokens (Go's `KontrolUser`).
    pub kontrol_user: String,
    /// The Kontrol's public key (PEM) that signs trusted tokens (Go's `KontrolKey`). With it
    /// set, the kite accepts `token` credentials (see [`crate::auth::TokenVerifier`]).
    pub kontrol_key: String,
    /// Disables authentication of every method of this kite (read when a method is
    /// registered; per-method `disable_authentication` also exists), except `kite.prompt` and
    /// `kite.getPass`, which always authenticate their callers.
    pub disable_authentication: bool,
    /// Serves the requests of each connection one at a time, in the order they arrive (Go's
    /// `Config.DisableConcurrency`, which sets `Client.Concurrent = false`; default false: each
    /// request that waits runs in a task of its own). Unlike Go, the connection keeps reading
    /// meanwhile, so answers and callbacks still arrive and a handler that calls its peer back
    /// does not deadlock; the requests waiting their turn count towards
    /// [`Limits::max_calls_in_flight`].
    pub disable_concurrency: bool,
    /// Whether this kite serves `kite.prompt` and `kite.getPass`, which ask a question on the
    /// terminal of this process (default true, as Go kite). Off, they are not registered and
    /// callers get `methodNotFound`; Kontrol turns them off. How they behave (credentials
    /// always, one question at a time, no terminal, type-ahead) is described in
    /// [`crate::builtins`].
    pub serve_prompts: bool,
    /// How long one `kite.prompt` or `kite.getPass` call may take, its wait for the terminal
    /// included (default 60 s). Past it the caller gets a `timeout` error (`no answer within
    /// 60s`, or `the terminal stayed busy for 60s` if another prompt held it all along).
    pub prompt_timeout: Duration,
    /// `kite.prompt` and `kite.getPass` calls that may wait for the terminal of this process
    /// behind the one it shows (default 16); a call past it gets a `requestLimitError` at once.
    pub max_waiting_prompts: usize,
    /// Largest incoming message in bytes; larger ones end the session (default 1 MiB).
    pub max_message_size: usize,
    /// Serve `kite.handleWebRTC`, relaying WebRTC signalling messages between the connections
    /// that call it (Go's `Config.UseWebRTC`; `KITE_USE_WEBRTC`, default false). See
    /// [`crate::webrtc`].
    pub use_webrtc: bool,
    /// How many connections the signalling relay keeps reachable (default 16,384); a new caller
    /// past it gets a `requestLimitError`.
    pub max_webrtc_peers: usize,
    /// SockJS heartbeat interval of the server (default 10 s, as Go kite).
    pub heartbeat_delay: Duration,
    /// How long an XHR session without a receiver lives (default 10 s, as Go kite).
    pub disconnect_delay: Duration,
    /// Whether the SockJS websocket transport is offered (default true).
    pub websocket: bool,
    /// The SockJS server's other settings (Go's `Config.SockJS`): which of the other transports
    /// are offered, the streaming response limit, `JSESSIONID` cookies, the iframe page's script.
    /// Its heartbeat, disconnect delay, websocket switch and message limit are taken from the
    /// fields above, its budgets (sessions, websockets, queued bytes) from [`Config::limits`].
    /// Only with the cargo feature `server`.
    #[cfg(feature = "server")]
    pub sockjs: crate::sockjs::SockJsOptions,
    /// How long a kite remembers that a Kontrol key is trusted (or not) and that a kite key
    /// was accepted (default 5 minutes, Go's `VerifyTTL`; `KITE_VERIFY_TTL`).
    pub verify_ttl: Duration,
    /// Serve over TLS with this certificate and key (PEM files). Needs the cargo feature `tls`:
    /// without it [`crate::Kite::serve`] refuses a configuration that sets this.
    pub tls: Option<TlsConfig>,
    /// A reverse proxy to be reached through (`KITE_PROXY_URL`, Go's variable of the same
    /// name: the proxy kite's URL, e.g. `http://proxy.example.com:3999/kite`). When set,
    /// [`crate::Kite::register_forever`] registers the kite with that proxy and its public
    /// `/proxy/<id>` URL with Kontrol (see [`crate::Kite::register_to_proxy`]).
    pub proxy_url: String,
    /// Budgets for what peers can make this kite hold (connections, sessions, queued bytes,
    /// calls in flight, callbacks), each with its outcome when exceeded: see [`Limits`].
    pub limits: Limits,
}

/// What peers can make a kite hold, and the outcome past each budget.
///
/// Every resource a peer can make a kite keep (a connection, a session, bytes waiting for the
/// peer to read them, calls being served, functions registered for the peer to call) has a
/// budget here. The defaults suit a kite on a public network serving up to thousands of peers;
/// raise the per-address ones for a kite behind a reverse proxy on the same host (every peer
/// then comes from one address). `docs/SECURITY.md` lists each limit with its outcome.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    /// Bytes of messages queued for one session that the peer has not taken yet (16 MiB). A
    /// peer that stops reading while asking for answers is closed past this budget (SockJS
    /// `c[1008,...]`, websocket close code 1008: [`crate::session::QUEUE_OVERFLOW`]), what was
    /// queued for it is dropped, and later sends on the session fail with
    /// [`crate::session::SessionClosed`]. One message larger than the budget still goes when
    /// nothing else is queued.
    pub max_queued_bytes: usize,
    /// Sessions of the SockJS HTTP transports (xhr-polling, xhr-streaming, eventsource,
    /// htmlfile, JSONP) alive at once (16,384); a new one past it is refused with 503. A
    /// session counts until it expires (`disconnect_delay` after its last receiver).
    pub max_sessions: usize,
    /// The same, from one remote address (2,048).
    pub max_sessions_per_ip: usize,
    /// Websocket connections (SockJS and raw) open at once (16,384); an upgrade past it is
    /// refused with 503.
    pub max_websockets: usize,
    /// The same, from one remote address (4,096).
    pub max_websockets_per_ip: usize,
    /// TCP connections the HTTP server holds at once (16,384), websockets included;
    /// connections past it are closed as soon as they are accepted (a plain-HTTP one after a
    /// `503` response). See [`crate::server`].
    pub max_connections: usize,
    /// The same, from one remote address (4,096).
    pub max_connections_per_ip: usize,
    /// Time a client has to send a request's whole header once it starts one (15 s): from its
    /// first byte, or from the accept (or the TLS handshake, which has as long) for a new
    /// connection; the connection is closed after it (slowloris).
    pub header_read_timeout: std::time::Duration,
    /// Time an HTTP keep-alive connection may wait for its next request, and a request body
    /// may stall (60 s); the connection is closed after it. Neither timeout applies while a
    /// request is served once its body is in, nor to a websocket.
    pub idle_timeout: std::time::Duration,
    /// Requests of one connection being served at once (1,024); more are answered at once with
    /// a `requestLimitError`.
    pub max_calls_in_flight: usize,
    /// Functions this kite has sent on one connection and keeps for the peer to call (10,000);
    /// a call or answer that would send more fails with a `requestLimitError`.
    pub max_callbacks: usize,
}

impl Limits {
    /// The budgets one connection's protocol state enforces ([`Limits::max_calls_in_flight`]
    /// and [`Limits::max_callbacks`]).
    pub fn connection(&self) -> kite_core::connection::Limits {
        kite_core::connection::Limits {
            max_calls_in_flight: self.max_calls_in_flight,
            max_functions: self.max_callbacks,
        }
    }
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_queued_bytes: 16 << 20,
            max_sessions: 16_384,
            max_sessions_per_ip: 2_048,
            max_websockets: 16_384,
            max_websockets_per_ip: 4_096,
            max_connections: 16_384,
            max_connections_per_ip: 4_096,
            header_read_timeout: std::time::Duration::from_secs(15),
            idle_timeout: std::time::Duration::from_secs(60),
            max_calls_in_flight: 1_024,
            max_callbacks: 10_000,
        }
    }
}

/// PEM certificate chain and private key files for serving over TLS.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsConfig {
    /// Certificate chain (PEM).
    pub cert_path: std::path::PathBuf,
    /// Private key (PEM).
    pub key_path: std::path::PathBuf,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            username: "unknown".into(),
            environment: "unknown".into(),
            region: "unknown".into(),
            id: String::new(),
            ip: IpAddr::from([0, 0, 0, 0]),
            port: 0,
            transport: Transport::Auto,
            timeout: Duration::from_secs(15),
            handshake_timeout: Duration::from_secs(15),
            dial_timeout: None,
            kontrol_url: String::new(),
            kite_key: String::new(),
            kontrol_user: String::new(),
            kontrol_key: String::new(),
            disable_authentication: false,
            disable_concurrency: false,
            serve_prompts: true,
            prompt_timeout: Duration::from_secs(60),
            max_waiting_prompts: 16,
            max_message_size: 1 << 20,
            use_webrtc: false,
            max_webrtc_peers: kite_core::webrtc::DEFAULT_MAX_PEERS,
            heartbeat_delay: Duration::from_secs(10),
            disconnect_delay: Duration::from_secs(10),
            websocket: true,
            #[cfg(feature = "server")]
            sockjs: crate::sockjs::SockJsOptions::default(),
            verify_ttl: Duration::from_secs(300),
            tls: None,
            proxy_url: String::new(),
            limits: Limits::default(),
        }
    }
}

/// A `KITE_*` variable that could not be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid {name}={value:?}: {reason}")]
pub struct ConfigError {
    /// The variable.
    pub name: &'static str,
    /// Its value.
    pub value: String,
    /// What is wrong with it.
    pub reason: String,
}

/// Why [`Config::get`] failed.
#[derive(Debug, thiserror::Error)]
pub enum GetError {
    /// The kite key could not be read or is invalid.
    #[error("cannot read kite.key: {0}")]
    KiteKey(#[from] crate::kitekey::KiteKeyError),
    /// A `KITE_*` variable is invalid.
    #[error(transparent)]
    Env(#[from] ConfigError),
}

impl Config {
    /// What a Go kite's `config.Get()` gives: the defaults, then the kite key (`KITE_KEY` if
    /// set, else the `kite.key` file, see [`crate::kitekey`]), then the `KITE_*` variables.
    pub fn get() -> Result<Self, GetError> {
        let mut c = Config::default();
        let key = match std::env::var("KITE_KEY")
            .ok()
            .filter(|k| !k.trim().is_empty())
        {
            Some(token) => crate::kitekey::parse(&token)?,
            None => crate::kitekey::read()?,
        };
        c.apply_kite_key(&key);
        c.apply_env(|name| std::env::var(name).ok())?;
        Ok(c)
    }

    /// Takes identity and Kontrol settings from a kite key: `username` from `sub`,
    /// `kontrol_user` from `iss`, `id` from `jti`, `kontrol_url`, `kontrol_key`, and the key
    /// itself as `kite_key` (the credentials this kite sends).
    pub fn apply_kite_key(&mut self, key: &crate::kitekey::KiteKey) {
        let c = &key.claims;
        let set = |field: &mut String, value: &str| {
            if !value.is_empty() {
                value.clone_into(field);
            }
        };
        set(&mut self.username, &c.sub);
        set(&mut self.kontrol_user, &c.iss);
        set(&mut self.id, &c.jti);
        set(&mut self.kontrol_url, &c.kontrol_url);
        set(&mut self.kontrol_key, c.kontrol_key.trim());
        self.kite_key.clone_from(&key.token);
    }

    /// The defaults with `KITE_*` environment variables applied.
    pub fn from_env() -> Result<Self, ConfigError> {
        let mut c = Config::default();
        c.apply_env(|name| std::env::var(name).ok())?;
        Ok(c)
    }

    /// Applies variables looked up through `get` (testable without touching the process
    /// environment). Unset or empty variables are skipped.
    pub fn apply_env(
        &mut self,
        get: impl Fn(&'static str) -> Option<String>,
    ) -> Result<(), ConfigError> {
        let var = |name: &'static str| get(name).filter(|v| !v.is_empty());
        let err = |name: &'static str, value: &str, reason: String| ConfigError {
            name,
            value: value.to_owned(),
            reason,
        };
        if let Some(v) = var("KITE_USERNAME") {
            self.username = v;
        }
        if let Some(v) = var("KITE_ENVIRONMENT") {
            self.environment = v;
        }
        if let Some(v) = var("KITE_REGION") {
            self.region = v;
        }
        if let Some(v) = var("KITE_IP") {
            self.ip = v.parse().map_err(|e| err("KITE_IP", &v, format!("{e}")))?;
        }
        if let Some(v) = var("KITE_PORT") {
            self.port = v
                .parse()
                .map_err(|e| err("KITE_PORT", &v, format!("{e}")))?;
        }
        if let Some(v) = var("KITE_KONTROL_URL") {
            self.kontrol_url = v;
        }
        if let Some(v) = var("KITE_KONTROL_USER") {
            self.kontrol_user = v;
        }
        if let Some(v) = var("KITE_KONTROL_KEY") {
            self.kontrol_key = v.trim().to_owned();
        }
        if let Some(v) = var("KITE_VERIFY_TTL") {
            self.verify_ttl = parse_go_duration(&v).map_err(|e| err("KITE_VERIFY_TTL", &v, e))?;
        }
        if let Some(v) = var("KITE_TRANSPORT") {
            self.transport = v
                .parse()
                .map_err(|e| err("KITE_TRANSPORT", &v, format!("{e}")))?;
        }
        if let Some(v) = var("KITE_TIMEOUT") {
            self.timeout = parse_go_duration(&v).map_err(|e| err("KITE_TIMEOUT", &v, e))?;
        }
        if let Some(v) = var("KITE_PROXY_URL") {
            self.proxy_url = v;
        }
        if let Some(v) = var("KITE_HANDSHAKE_TIMEOUT") {
            self.handshake_timeout =
                parse_go_duration(&v).map_err(|e| err("KITE_HANDSHAKE_TIMEOUT", &v, e))?;
        }
        if let Some(v) = var("KITE_USE_WEBRTC") {
            // Go's strconv.ParseBool spellings.
            self.use_webrtc = match v.as_str() {
                "1" | "t" | "T" | "true" | "TRUE" | "True" => true,
                "0" | "f" | "F" | "false" | "FALSE" | "False" => false,
                _ => return Err(err("KITE_USE_WEBRTC", &v, "not a boolean".into())),
            };
        }
        Ok(())
    }
}

/// Parses a Go duration string such as `15s`, `1m30s`, `250ms`, `1.5h`. Like Go, durations
/// past `i64::MAX` nanoseconds (about 292 years) are refused.
pub fn parse_go_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    if s == "0" {
        return Ok(Duration::ZERO);
    }
    let mut total = 0f64;
    let mut rest = s;
    if rest.is_empty() {
        return Err("empty duration".into());
    }
    while !rest.is_empty() {
        let num_end = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .ok_or_else(|| format!("missing unit in duration {s:?}"))?;
        let (num, tail) = rest.split_at(num_end);
        let value: f64 = num
            .parse()
            .map_err(|_| format!("invalid number in duration {s:?}"))?;
        let unit_end = tail
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(tail.len());
        let (unit, next) = tail.split_at(unit_end);
        let scale = match unit {
            "ns" => 1e-9,
            "us" | "µs" | "μs" => 1e-6,
            "ms" => 1e-3,
            "s" => 1.0,
            "m" => 60.0,
            "h" => 3600.0,
            _ => return Err(format!("unknown unit {unit:?} in duration {s:?}")),
        };
        total += value * scale;
        rest = next;
    }
    // Go's limit; also keeps `Instant + duration` from overflowing anywhere we add one.
    if total * 1e9 > i64::MAX as f64 {
        return Err(format!("duration {s:?} out of range"));
    }
    Duration::try_from_secs_f64(total).map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    #[test]
    fn defaults_follow_go() {
        let c = Config::default();
        assert_eq!(c.username, "unknown");
        assert_eq!(c.environment, "unknown");
        assert_eq!(c.region, "unknown");
        assert_eq!(c.port, 0);
        assert_eq!(c.timeout, Duration::from_secs(15));
        assert_eq!(c.heartbeat_delay, Duration::from_secs(10));
        assert_eq!(c.transport, Transport::Auto);
        assert_eq!(c.max_message_size, 1 << 20);
        assert!(c.serve_prompts);
        assert_eq!(c.prompt_timeout, Duration::from_secs(60));
        assert_eq!(c.max_waiting_prompts, 16);
    }

    #[test]
    fn environment_overrides() {
        let env: HashMap<&str, &str> = [
            ("KITE_USERNAME", "bob"),
            ("KITE_ENVIRONMENT", "prod"),
            ("KITE_REGION", "eu"),
            ("KITE_PORT", "6000"),
            ("KITE_IP", "127.0.0.1"),
            ("KITE_TRANSPORT", "XHRPolling"),
            ("KITE_TIMEOUT", "1m30s"),
            ("KITE_KONTROL_URL", "http://k:4000/kite"),
            ("KITE_KONTROL_USER", "koding"),
            ("KITE_KONTROL_KEY", " PEM \n"),
            ("KITE_VERIFY_TTL", "1m"),
            ("KITE_PROXY_URL", "http://proxy:3999/kite"),
        ]
        .into();
        let mut c = Config::default();
        c.apply_env(|n| env.get(n).map(|v| v.to_string())).unwrap();
        assert_eq!(c.username, "bob");
        assert_eq!(c.port, 6000);
        assert_eq!(c.transport, Transport::XhrPolling);
        assert_eq!(c.timeout, Duration::from_secs(90));
        assert_eq!(c.kontrol_url, "http://k:4000/kite");
        assert_eq!(c.kontrol_user, "koding");
        assert_eq!(c.kontrol_key, "PEM");
        assert_eq!(c.verify_ttl, Duration::from_secs(60));
        assert_eq!(c.proxy_url, "http://proxy:3999/kite");

        let mut c = Config::default();
        let e = c
            .apply_env(|n| (n == "KITE_PORT").then(|| "x".to_string()))
            .unwrap_err();
        assert_eq!(e.name, "KITE_PORT");
        let e = c
            .apply_env(|n| (n == "KITE_TRANSPORT").then(|| "carrier-pigeon".to_string()))
            .unwrap_err();
        assert_eq!(e.name, "KITE_TRANSPORT");
    }

    #[test]
    fn go_durations() {
        assert_eq!(
            parse_go_duration("250ms").unwrap(),
            Duration::from_millis(250)
        );
        assert_eq!(
            parse_go_duration("1.5h").unwrap(),
            Duration::from_secs(5400)
        );
        assert!(parse_go_duration("5").is_err());
        assert!(parse_go_duration("5y").is_err());
        // Found by the go_duration fuzz target: Go refuses durations past i64::MAX ns.
        assert!(parse_go_duration("9999999999999h").is_err());
        assert!(parse_go_duration("2562048h").is_err());
        assert_eq!(
            parse_go_duration("2562047h").unwrap(),
            Duration::from_secs(2_562_047 * 3600)
        );
    }
}
