//! [`PostgresStorage`]: registrations in a PostgreSQL database, which several Kontrols can share.
//!
//! Kontrol owns its schema. On every new connection it takes a transaction-scoped advisory lock
//! and applies, in order and inside that one transaction, the migrations the database has not
//! seen, recording each in `kite.kontrol_schema_version`; two Kontrols starting at once migrate
//! once, and opening an up-to-date database changes nothing. The tables follow Go Kontrol's
//! (schema `kite`):
//!
//! - `kite.kite`, one row per registration: `username, environment, kitename, version, region,
//!   hostname, id` (TEXT: our ids need not be UUIDs), `url`, `key_id`, `created_at`,
//!   `updated_at`, and `expires_at`, the registration's expiry (`infinity` for expiries from the
//!   year 10000 on), where Go deletes rows 90 s after `updated_at`. The table is logged (Go's is
//!   `UNLOGGED`), so a server crash loses no registration.
//! - `kite.key`, Kontrol's key pairs as Go keeps them (`id, public, private, created_at,
//!   deleted_at`: a deleted pair keeps its row, with `deleted_at` set), and `signing` (added by
//!   migration 4: whether the pair was added to sign, see [`crate::storage::KeyRecord`]).
//!
//! Ownership is decided by the database in the statement that writes: the upsert's
//! `ON CONFLICT (id) DO UPDATE ... WHERE` the stored `username` is the new one's or the row has
//! expired (no row written means another user's live registration is there), and the refresh and
//! delete statements' `WHERE` on the same condition (PostgreSQL re-checks it on the newest
//! version of a row another transaction changed meanwhile), so there is no check-then-write race.
//!
//! Queries select candidates in SQL (by `id`, or by every exact field of [`Matcher::exact`],
//! served by indexes on `(username, environment, kitename)`, `(username, kitename, version)`
//! and `(username, hostname)`) and then apply [`Matcher::matches`] and expiry in Rust, so this backend
//! answers exactly as the others do.
//!
//! The connection is made again when it drops. While the server is unreachable every operation
//! fails with [`StorageError::Unavailable`] (at once when the connection is refused, after
//! [`PostgresConfig::connect_timeout`] when nothing answers); the first operation after the
//! server is back reconnects. PostgreSQL text cannot hold NUL characters: registering a kite with
//! one in a field fails, and looking one up finds nothing.

use std::collections::HashMap;
use std::error::Error as _;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use futures_util::StreamExt;
use kite_native::core::Kite;
use tokio_postgres::types::ToSql;
use tokio_postgres::{AsyncMessage, Client, NoTls, Row, Statement};
use tracing::debug;

use super::events::{Bus, Change, MAX_CHANGE_BYTES};
use super::{KeyRecord, Registration, Storage, StorageError, now_ms};
use crate::query::Matcher;

/// The schema migrations, applied in order; a migration's version is its place in the list,
/// from 1. Never edit one that has shipped: append a new one.
const MIGRATIONS: &[(&str, &str)] = &[
    (
        "kite.kite: registrations",
        "CREATE TABLE kite.kite (
            username    TEXT NOT NULL,
            environment TEXT NOT NULL,
            kitename    TEXT NOT NULL,
            version     TEXT NOT NULL,
            region      TEXT NOT NULL,
            hostname    TEXT NOT NULL,
            id          TEXT PRIMARY KEY,
            url         TEXT NOT NULL,
            key_id      TEXT NOT NULL,
            created_at  TIMESTAMPTZ NOT NULL DEFAULT now(),
            updated_at  TIMESTAMPTZ NOT NULL DEFAULT now(),
            expires_at  TIMESTAMPTZ NOT NULL
        );
        CREATE INDEX kite_kite_name_idx ON kite.kite (username, environment, kitename);
        CREATE INDEX kite_kite_expires_at_idx ON kite.kite (expires_at);",
    ),
    (
        "kite.key: Kontrol key pairs",
        "CREATE TABLE kite.key (
            id         TEXT PRIMARY KEY,
            public     TEXT NOT NULL UNIQUE,
            private    TEXT NOT NULL,
            created_at TIMESTAMPTZ NOT NULL DEFAULT now(),
            deleted_at TIMESTAMPTZ,
            CHECK (created_at <= deleted_at)
        );
        CREATE INDEX kite_key_deleted_at_public_idx
            ON kite.key (deleted_at DESC NULLS FIRST, public);",
    ),
    (
        "kite.kite: indexes for queries with gaps (username and name, username and hostname)",
        "CREATE INDEX kite_kite_username_kitename_idx ON kite.kite (username, kitename, version);
        CREATE INDEX kite_kite_username_hostname_idx ON kite.kite (username, hostname);",
    ),
    (
        "kite.key: which pairs were added to sign",
        "ALTER TABLE kite.key ADD COLUMN signing BOOLEAN NOT NULL DEFAULT false;",
    ),
];

/// The advisory lock migrations hold (`"kontrol\0"`).
const MIGRATION_LOCK: i64 = 0x6b6f_6e74_726f_6c00;

/// Expiries from here on (the year 10000, in ms since the Unix epoch) are stored as `infinity`
/// and read back as `u64::MAX`.
const INFINITE_FROM_MS: u64 = 253_402_300_800_000;

/// After a failed connection attempt, operations fail at once with its error for this long
/// instead of each trying again (a Kontrol under load does not storm a server that is down).
const RETRY_PAUSE: Duration = Duration::from_millis(500);

/// The query fields in the order of [`Matcher::prefix`], as `kite.kite` columns.
const PATH_COLUMNS: [&str; 7] = [
    "username",
    "environment",
    "kitename",
    "version",
    "region",
    "hostname",
    "id",
];

const SELECT: &str = "SELECT username, environment, kitename, version, region, hostname, id, \
                      url, key_id, NULLIF(expires_at, 'infinity') FROM kite.kite";

/// The select of the live rows meeting `clause`, whose parameter `$now` is the time.
fn select_live(clause: &str, now: usize) -> String {
    format!("{SELECT} WHERE {clause} AND expires_at > ${now}::timestamptz")
}

/// Where and how to reach the database. `Debug` does not show the password.
#[derive(Clone, PartialEq, Eq)]
pub struct PostgresConfig {
    /// The server's host name or address, or a directory holding its Unix socket (a path
    /// starting with `/`). Default `localhost`.
    pub host: String,
    /// The server's port. Default 5432.
    pub port: u16,
    /// The user to connect as; it needs to create the `kite` schema the first time.
    pub user: String,
    /// The user's password; empty for none.
    pub password: String,
    /// The database.
    pub dbname: String,
    /// How long a connection attempt (including the schema check) may take before it fails as
    /// unavailable; zero waits indefinitely. Default 20 s, as Go.
    pub connect_timeout: Duration,
    /// How long one operation may wait for the server's answer on an established connection
    /// before it fails as unavailable (and the connection is dropped); zero waits indefinitely.
    /// Default 10 s.
    pub query_timeout: Duration,
}

impl Default for PostgresConfig {
    fn default() -> PostgresConfig {
        PostgresConfig {
            host: "localhost".into(),
            port: 5432,
            user: String::new(),
            password: String::new(),
            dbname: String::new(),
            connect_timeout: Duration::from_secs(20),
            query_timeout: Duration::from_secs(10),
        }
    }
}

impl std::fmt::Debug for PostgresConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PostgresConfig")
            .field("host", &self.host)
            .field("port", &self.port)
            .field("user", &self.user)
            .field(
                "password",
                &if self.password.is_empty() { "" } else { "***" },
            )
            .field("dbname", &self.dbname)
            .field("connect_timeout", &self.connect_timeout)
            .field("query_timeout", &self.query_timeout)
            .finish()
    }
}

/// Why [`PostgresConfig::from_env`] cannot build a configuration.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PostgresConfigError {
    /// A required variable is unset or empty.
    #[error("{0} is not set")]
    Missing(&'static str),
    /// A variable's value cannot be read.
    #[error("{var}={value:?}: {reason}")]
    Invalid {
        /// The variable.
        var: &'static str,
        /// Its value.
        value: String,
        /// What is wrong with it.
        reason: String,
    },
}

impl PostgresConfig {
    /// The configuration from Go Kontrol's variables: `KONTROL_POSTGRES_HOST` (default
    /// `localhost`), `KONTROL_POSTGRES_PORT` (5432), `KONTROL_POSTGRES_USERNAME` (required),
    /// `KONTROL_POSTGRES_PASSWORD`, `KONTROL_POSTGRES_DBNAME` (required) and
    /// `KONTROL_POSTGRES_CONNECTTIMEOUT` (seconds, or a Go duration such as `1500ms`; default
    /// 20), plus our `KONTROL_POSTGRES_QUERYTIMEOUT` (the same form; default 10). An empty
    /// variable counts as unset.
    pub fn from_env() -> Result<PostgresConfig, PostgresConfigError> {
        PostgresConfig::from_lookup(|name| std::env::var(name).ok())
    }

    /// [`PostgresConfig::from_env`] reading the variables through `var` (a map in tests).
    pub fn from_lookup(
        var: impl Fn(&str) -> Option<String>,
    ) -> Result<PostgresConfig, PostgresConfigError> {
        let get = |name: &str| var(name).filter(|v| !v.is_empty());
        let invalid =
            |var: &'static str, value: &str, reason: String| PostgresConfigError::Invalid {
                var,
                value: value.to_owned(),
                reason,
            };
        let timeout = |name: &'static str| -> Result<Option<Duration>, PostgresConfigError> {
            let Some(v) = get(name) else { return Ok(None) };
            let t = v.trim();
            match t.parse::<u64>() {
                Ok(secs) => Ok(Some(Duration::from_secs(secs))),
                Err(_) => kite_native::config::parse_go_duration(t)
                    .map(Some)
                    .map_err(|e| invalid(name, &v, e)),
            }
        };
        let mut config = PostgresConfig::default();
        if let Some(host) = get("KONTROL_POSTGRES_HOST") {
            config.host = host;
        }
        if let Some(port) = get("KONTROL_POSTGRES_PORT") {
            config.port = match port.trim().parse::<u16>() {
                Ok(p) if p > 0 => p,
                _ => {
                    return Err(invalid(
                        "KONTROL_POSTGRES_PORT",
                        &port,
                        "not a port number (1-65535)".into(),
                    ));
                }
            };
        }
        config.user = get("KONTROL_POSTGRES_USERNAME")
            .ok_or(PostgresConfigError::Missing("KONTROL_POSTGRES_USERNAME"))?;
        config.password = var("KONTROL_POSTGRES_PASSWORD").unwrap_or_default();
        config.dbname = get("KONTROL_POSTGRES_DBNAME")
            .ok_or(PostgresConfigError::Missing("KONTROL_POSTGRES_DBNAME"))?;
        if let Some(t) = timeout("KONTROL_POSTGRES_CONNECTTIMEOUT")? {
            config.connect_timeout = t;
        }
        if let Some(t) = timeout("KONTROL_POSTGRES_QUERYTIMEOUT")? {
            config.query_timeout = t;
        }
        Ok(config)
    }

    /// `postgres user@host:port/dbname`, for messages.
    fn address(&self) -> String {
        format!(
            "postgres {}@{}:{}/{}",
            self.user, self.host, self.port, self.dbname
        )
    }

    fn client_config(&self) -> tokio_postgres::Config {
        let mut c = tokio_postgres::Config::new();
        c.host(&self.host)
            .port(self.port)
            .user(&self.user)
            .dbname(&self.dbname)
            .application_name("kontrol")
            .keepalives(true)
            .keepalives_idle(Duration::from_secs(30));
        if !self.password.is_empty() {
            c.password(&self.password);
        }
        if !self.connect_timeout.is_zero() {
            c.connect_timeout(self.connect_timeout);
        }
        c
    }
}

/// Registrations in PostgreSQL (see the module docs for the schema). Cloning shares the
/// connection; several Kontrols (processes) may use one database at once.
#[derive(Clone)]
pub struct PostgresStorage {
    inner: Arc<Inner>,
}

struct Inner {
    config: PostgresConfig,
    /// The connection in use, if any.
    current: Mutex<Option<Arc<Conn>>>,
    /// Held while connecting; holds the last failed attempt.
    connecting: tokio::sync::Mutex<Option<Failure>>,
    /// Watch events heard on [`CHANGES_CHANNEL`], for the subscribers.
    changes: Bus,
    /// The task listening on its own connection, once there is a subscriber; ended with the
    /// storage.
    listener: Mutex<Option<tokio::task::JoinHandle<()>>>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        if let Some(task) = self.listener.get_mut().ok().and_then(Option::take) {
            task.abort();
        }
    }
}

/// The `NOTIFY` channel carrying watch events between Kontrols on one database.
const CHANGES_CHANNEL: &str = "kontrol_watch";

/// Aborts the task when dropped (the listener's connection driver ends with the listener).
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Listens for watch events on a connection of its own, reconnecting (every second) when it
/// drops, and hands each well-formed one to `bus`.
async fn listen(config: tokio_postgres::Config, bus: Bus) {
    loop {
        match config.connect(NoTls).await {
            Ok((client, mut connection)) => {
                let heard = bus.clone();
                let mut driver = AbortOnDrop(tokio::spawn(async move {
                    let mut messages =
                        futures_util::stream::poll_fn(move |cx| connection.poll_message(cx));
                    while let Some(Ok(message)) = messages.next().await {
                        if let AsyncMessage::Notification(n) = message
                            && let Some(change) = Change::decode(n.payload())
                        {
                            heard.publish(change);
                        }
                    }
                }));
                match client
                    .batch_execute(&format!("LISTEN {CHANGES_CHANNEL}"))
                    .await
                {
                    // Until the connection ends.
                    Ok(()) => {
                        let _ = (&mut driver.0).await;
                    }
                    Err(e) => debug!(error = %e, "LISTEN for watch events failed"),
                }
            }
            Err(e) => debug!(error = %e, "connecting to listen for watch events failed"),
        }
        // Events sent while no connection listens are missed: come back soon.
        tokio::time::sleep(RETRY_PAUSE.max(Duration::from_secs(1))).await;
    }
}

struct Failure {
    at: Instant,
    message: String,
}

/// One connection and its prepared statements.
struct Conn {
    client: Client,
    upsert: Statement,
    refresh: Statement,
    delete: Statement,
    delete_written: Statement,
    purge: Statement,
    by_id: Statement,
    /// By the set of exact query fields (bit `i` for [`PATH_COLUMNS`]`[i]`), prepared the first
    /// time a query of that shape comes (at most 64 with the username required, plus id-only).
    by_fields: Mutex<HashMap<u8, Statement>>,
}

impl Conn {
    /// The statement selecting live rows by the fields of `mask`, in [`PATH_COLUMNS`] order,
    /// then the time; prepared once per connection.
    async fn by_fields(&self, mask: u8) -> Result<Statement, tokio_postgres::Error> {
        if let Some(st) = self.by_fields.lock().expect("statements").get(&mask) {
            return Ok(st.clone());
        }
        let mut clause = Vec::new();
        for (i, column) in PATH_COLUMNS.iter().enumerate() {
            if mask & (1 << i) != 0 {
                clause.push(format!("{column} = ${}", clause.len() + 1));
            }
        }
        let sql = select_live(&clause.join(" AND "), clause.len() + 1);
        let st = self.client.prepare(&sql).await?;
        self.by_fields
            .lock()
            .expect("statements")
            .insert(mask, st.clone());
        Ok(st)
    }
}

impl std::fmt::Debug for PostgresStorage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PostgresStorage")
            .field("config", &self.inner.config)
            .field("connected", &self.live().is_some())
            .finish()
    }
}

impl PostgresStorage {
    /// The schema version this code migrates databases to.
    pub const SCHEMA_VERSION: i32 = MIGRATIONS.len() as i32;

    /// Connects now, creating or migrating the schema: an unreachable server or a failed
    /// migration is an error here. Later drops of the connection are repaired by reconnecting.
    pub async fn connect(config: PostgresConfig) -> Result<PostgresStorage, StorageError> {
        let storage = PostgresStorage::new(config);
        storage.connection().await?;
        Ok(storage)
    }

    /// A storage that connects (and migrates) on its first operation: a Kontrol can start while
    /// its database is down, answering [`StorageError::Unavailable`] until it is up.
    pub fn new(config: PostgresConfig) -> PostgresStorage {
        PostgresStorage {
            inner: Arc::new(Inner {
                config,
                current: Mutex::new(None),
                connecting: tokio::sync::Mutex::new(None),
                changes: Bus::default(),
                listener: Mutex::new(None),
            }),
        }
    }

    /// The configuration it connects with.
    pub fn config(&self) -> &PostgresConfig {
        &self.inner.config
    }

    fn live(&self) -> Option<Arc<Conn>> {
        let current = self.inner.current.lock().unwrap_or_else(|e| e.into_inner());
        current.clone().filter(|c| !c.client.is_closed())
    }

    /// Forgets `conn` if it is still the current connection.
    fn forget(&self, conn: &Arc<Conn>) {
        let mut current = self.inner.current.lock().unwrap_or_else(|e| e.into_inner());
        if current.as_ref().is_some_and(|c| Arc::ptr_eq(c, conn)) {
            *current = None;
        }
    }

    /// The live connection, connecting if there is none; `true` with one made by this call.
    async fn connection(&self) -> Result<(Arc<Conn>, bool), StorageError> {
        if let Some(c) = self.live() {
            return Ok((c, false));
        }
        let mut last_failure = self.inner.connecting.lock().await;
        if let Some(c) = self.live() {
            return Ok((c, false));
        }
        if let Some(f) = last_failure.as_ref()
            && f.at.elapsed() < RETRY_PAUSE
        {
            return Err(StorageError::Unavailable(f.message.clone()));
        }
        let config = &self.inner.config;
        let attempt = within(config.connect_timeout, Conn::open(config)).await;
        let result = attempt.unwrap_or_else(|| {
            Err(format!(
                "{}: cannot connect: no answer within {:?}",
                config.address(),
                config.connect_timeout
            ))
        });
        match result {
            Ok(conn) => {
                let conn = Arc::new(conn);
                *self.inner.current.lock().unwrap_or_else(|e| e.into_inner()) = Some(conn.clone());
                *last_failure = None;
                tracing::debug!("connected to {}", config.address());
                Ok((conn, true))
            }
            Err(message) => {
                tracing::warn!("{message}");
                *last_failure = Some(Failure {
                    at: Instant::now(),
                    message: message.clone(),
                });
                Err(StorageError::Unavailable(message))
            }
        }
    }

    /// Runs `op` on the connection. A connection that turns out dead is dropped, and the
    /// operation tried once more on a new one if it had not just been made.
    async fn run<T, F, Fut>(&self, what: &str, op: F) -> Result<T, StorageError>
    where
        F: Fn(Arc<Conn>) -> Fut,
        Fut: Future<Output = Result<T, tokio_postgres::Error>>,
    {
        let config = &self.inner.config;
        let mut retried = false;
        loop {
            let (conn, fresh) = self.connection().await?;
            match within(config.query_timeout, op(conn.clone())).await {
                Some(Ok(v)) => return Ok(v),
                Some(Err(e)) => {
                    let broken = connection_error(&e);
                    if broken {
                        self.forget(&conn);
                    }
                    if !broken || fresh || retried {
                        return Err(StorageError::Unavailable(format!(
                            "{}: {what}: {}",
                            config.address(),
                            describe(&e)
                        )));
                    }
                    tracing::debug!("{}: connection lost ({}), retrying", config.address(), e);
                    retried = true;
                }
                None => {
                    self.forget(&conn);
                    return Err(StorageError::Unavailable(format!(
                        "{}: {what}: no answer within {:?}",
                        config.address(),
                        config.query_timeout
                    )));
                }
            }
        }
    }
}

impl Conn {
    /// Connects, migrates the schema and prepares the statements.
    async fn open(config: &PostgresConfig) -> Result<Conn, String> {
        let address = config.address();
        let fail =
            |what: &str, e: tokio_postgres::Error| format!("{address}: {what}: {}", describe(&e));
        let (mut client, connection) = config
            .client_config()
            .connect(NoTls)
            .await
            .map_err(|e| fail("cannot connect", e))?;
        let log_address = address.clone();
        tokio::spawn(async move {
            if let Err(e) = connection.await {
                tracing::warn!("{log_address}: connection lost: {}", describe(&e));
            }
        });
        migrate(&mut client).await.map_err(|e| {
            let in_the_way = e.code() == Some(&tokio_postgres::error::SqlState::DUPLICATE_TABLE);
            let mut message = fail("schema migration failed", e);
            if in_the_way {
                message.push_str(
                    " (the database holds a table Kontrol did not create, such as Go Kontrol's \
                     kite.kite: use a database of its own)",
                );
            }
            message
        })?;
        let prepare = async {
            Ok::<_, tokio_postgres::Error>(Conn {
                upsert: client
                    .prepare(
                        "INSERT INTO kite.kite (username, environment, kitename, version, \
                         region, hostname, id, url, key_id, expires_at) \
                         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, \
                                 COALESCE($10::timestamptz, 'infinity')) \
                         ON CONFLICT (id) DO UPDATE SET username = EXCLUDED.username, \
                         environment = EXCLUDED.environment, kitename = EXCLUDED.kitename, \
                         version = EXCLUDED.version, region = EXCLUDED.region, \
                         hostname = EXCLUDED.hostname, url = EXCLUDED.url, \
                         key_id = EXCLUDED.key_id, expires_at = EXCLUDED.expires_at, \
                         updated_at = now() \
                         WHERE kite.kite.username = EXCLUDED.username \
                            OR kite.kite.expires_at <= $11::timestamptz",
                    )
                    .await?,
                refresh: client
                    .prepare(
                        "WITH done AS (UPDATE kite.kite \
                            SET expires_at = COALESCE($2::timestamptz, 'infinity'), \
                                updated_at = now() \
                            WHERE id = $1 AND username = $4 AND expires_at > $3::timestamptz \
                            RETURNING 1) \
                         SELECT EXISTS (SELECT 1 FROM done), \
                                EXISTS (SELECT 1 FROM kite.kite WHERE id = $1 \
                                    AND username <> $4 AND expires_at > $3::timestamptz)",
                    )
                    .await?,
                delete: client
                    .prepare(
                        "WITH gone AS (DELETE FROM kite.kite \
                            WHERE id = $1 AND (username = $2 OR expires_at <= $3::timestamptz) \
                            RETURNING 1) \
                         SELECT EXISTS (SELECT 1 FROM gone), \
                                EXISTS (SELECT 1 FROM kite.kite WHERE id = $1 \
                                    AND username <> $2 AND expires_at > $3::timestamptz)",
                    )
                    .await?,
                delete_written: client
                    .prepare(
                        "DELETE FROM kite.kite WHERE id = $1 AND username = $2 \
                            AND expires_at = COALESCE($3::timestamptz, 'infinity')",
                    )
                    .await?,
                purge: client
                    .prepare("DELETE FROM kite.kite WHERE expires_at <= $1::timestamptz")
                    .await?,
                by_id: client.prepare(&select_live("id = $1", 2)).await?,
                by_fields: Mutex::default(),
                client,
            })
        };
        prepare
            .await
            .map_err(|e| fail("cannot prepare statements", e))
    }
}

/// Creates or migrates the schema in one transaction under [`MIGRATION_LOCK`].
async fn migrate(client: &mut Client) -> Result<(), tokio_postgres::Error> {
    let tx = client.transaction().await?;
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK])
        .await?;
    let has_versions: bool = tx
        .query_one(
            "SELECT to_regclass('kite.kontrol_schema_version') IS NOT NULL",
            &[],
        )
        .await?
        .get(0);
    if !has_versions {
        let has_schema: bool = tx
            .query_one("SELECT to_regnamespace('kite') IS NOT NULL", &[])
            .await?
            .get(0);
        if !has_schema {
            tx.batch_execute("CREATE SCHEMA kite").await?;
        }
        tx.batch_execute(
            "CREATE TABLE kite.kontrol_schema_version (
                version     INTEGER PRIMARY KEY,
                description TEXT NOT NULL,
                applied_at  TIMESTAMPTZ NOT NULL DEFAULT now()
            )",
        )
        .await?;
    }
    let current: i32 = tx
        .query_one(
            "SELECT COALESCE(max(version), 0) FROM kite.kontrol_schema_version",
            &[],
        )
        .await?
        .get(0);
    if current > PostgresStorage::SCHEMA_VERSION {
        tracing::warn!(
            "the database's schema version {current} is newer than this Kontrol's ({})",
            PostgresStorage::SCHEMA_VERSION
        );
    }
    for (version, (description, sql)) in (1..).zip(MIGRATIONS) {
        if version <= current {
            continue;
        }
        tx.batch_execute(sql).await?;
        tx.execute(
            "INSERT INTO kite.kontrol_schema_version (version, description) VALUES ($1, $2)",
            &[&version, description],
        )
        .await?;
        tracing::info!("applied schema migration {version}: {description}");
    }
    tx.commit().await
}

/// `fut`'s output, or `None` if it takes longer than `limit` (zero: no limit).
async fn within<T>(limit: Duration, fut: impl Future<Output = T>) -> Option<T> {
    if limit.is_zero() {
        Some(fut.await)
    } else {
        tokio::time::timeout(limit, fut).await.ok()
    }
}

/// Whether `e` means the connection is unusable (rather than one statement failing).
fn connection_error(e: &tokio_postgres::Error) -> bool {
    if e.is_closed() {
        return true;
    }
    match e.code() {
        // Connection exceptions, and the server shutting down or ending the session (57P*;
        // not 57014, a cancelled statement).
        Some(code) => code.code().starts_with("08") || code.code().starts_with("57P"),
        // I/O and protocol errors.
        None => e.as_db_error().is_none(),
    }
}

/// `e` and its causes, on one line.
fn describe(e: &tokio_postgres::Error) -> String {
    if let Some(db) = e.as_db_error() {
        return format!("{}: {} ({})", db.severity(), db.message(), db.code().code());
    }
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        out.push_str(": ");
        out.push_str(&s.to_string());
        source = s.source();
    }
    out
}

/// `ms` since the Unix epoch as a timestamp; `None` (stored as `infinity`) from the year 10000.
fn timestamp(ms: u64) -> Option<SystemTime> {
    (ms < INFINITE_FROM_MS).then(|| UNIX_EPOCH + Duration::from_millis(ms))
}

/// The inverse of [`timestamp`].
fn millis(t: Option<SystemTime>) -> u64 {
    t.map_or(u64::MAX, |t| {
        t.duration_since(UNIX_EPOCH)
            .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
    })
}

/// The current time as both backends compare it: whole milliseconds.
fn now() -> (u64, SystemTime) {
    let ms = now_ms();
    (ms, UNIX_EPOCH + Duration::from_millis(ms))
}

fn warn_corrupt(e: &tokio_postgres::Error) {
    debug!(error = %e, "kite.kite: an unreadable row in a refresh");
}

fn has_nul(s: &str) -> bool {
    s.contains('\0')
}

/// The answer of the refresh and delete statements: `(done, owned by another)`.
fn owned_outcome(row: &Row, id: &str) -> Result<bool, StorageError> {
    owned_outcome_at(row, 0, id)
}

/// [`owned_outcome`] of the two columns from `at` on.
fn owned_outcome_at(row: &Row, at: usize, id: &str) -> Result<bool, StorageError> {
    let corrupt = |e: tokio_postgres::Error| StorageError::Corrupt(format!("kite.kite: {e}"));
    let done: bool = row.try_get(at).map_err(corrupt)?;
    let other: bool = row.try_get(at + 1).map_err(corrupt)?;
    if !done && other {
        return Err(StorageError::owned_by_another(id));
    }
    Ok(done)
}

/// `ms` since the Unix epoch as a timestamp.
fn at_ms(ms: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_millis(ms)
}

/// A `kite.key` row: `id, public, private, created_at, deleted_at, signing`.
fn decode_key(row: &Row) -> Result<KeyRecord, StorageError> {
    let corrupt = |e: tokio_postgres::Error| StorageError::Corrupt(format!("kite.key: {e}"));
    let created: SystemTime = row.try_get(3).map_err(corrupt)?;
    let deleted: Option<SystemTime> = row.try_get(4).map_err(corrupt)?;
    Ok(KeyRecord {
        id: row.try_get(0).map_err(corrupt)?,
        public_pem: row.try_get(1).map_err(corrupt)?,
        private_pem: row.try_get(2).map_err(corrupt)?,
        created_ms: millis(Some(created)),
        deleted_ms: deleted.map(|d| millis(Some(d))),
        signing: row.try_get(5).map_err(corrupt)?,
    })
}

fn decode(row: &Row) -> Result<Registration, StorageError> {
    let corrupt = |e: tokio_postgres::Error| StorageError::Corrupt(format!("kite.kite: {e}"));
    let text = |i: usize| row.try_get::<_, String>(i).map_err(corrupt);
    Ok(Registration {
        kite: Kite {
            username: text(0)?,
            environment: text(1)?,
            name: text(2)?,
            version: text(3)?,
            region: text(4)?,
            hostname: text(5)?,
            id: text(6)?,
        },
        url: text(7)?,
        key_id: text(8)?,
        expires_at_ms: millis(row.try_get(9).map_err(corrupt)?),
    })
}

#[async_trait::async_trait]
impl Storage for PostgresStorage {
    /// `NOTIFY kontrol_watch` with the encoded change, heard by every Kontrol on the database.
    async fn publish(&self, change: &Change) -> Result<(), StorageError> {
        let payload = change.encode();
        if payload.len() > MAX_CHANGE_BYTES {
            return Err(StorageError::Corrupt(format!(
                "a watch event of {} bytes is more than NOTIFY carries",
                payload.len()
            )));
        }
        self.run("publish", |c| {
            let payload = payload.clone();
            async move {
                c.client
                    .execute("SELECT pg_notify($1, $2)", &[&CHANGES_CHANNEL, &payload])
                    .await
            }
        })
        .await?;
        Ok(())
    }

    /// Starts listening (a connection of its own) with the first subscriber.
    fn subscribe(&self) -> Option<tokio::sync::broadcast::Receiver<Change>> {
        let receiver = self.inner.changes.subscribe();
        let mut listener = self
            .inner
            .listener
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        if listener.is_none() {
            let (config, bus) = (
                self.inner.config.client_config(),
                self.inner.changes.clone(),
            );
            *listener = Some(tokio::spawn(listen(config, bus)));
        }
        Some(receiver)
    }

    async fn upsert(&self, registration: &Registration) -> Result<(), StorageError> {
        let r = registration;
        let k = &r.kite;
        let texts = [
            k.username.as_str(),
            &k.environment,
            &k.name,
            &k.version,
            &k.region,
            &k.hostname,
            &k.id,
            &r.url,
            &r.key_id,
        ];
        if texts.iter().any(|t| has_nul(t)) {
            return Err(StorageError::Unavailable(format!(
                "{}: upsert: PostgreSQL text cannot hold NUL characters (kite {:?})",
                self.inner.config.address(),
                k.id
            )));
        }
        let texts = &texts;
        let expires = timestamp(r.expires_at_ms);
        let (_, now) = now();
        let n = self
            .run("upsert", |c| async move {
                let mut params: Vec<&(dyn ToSql + Sync)> =
                    texts.iter().map(|t| t as &(dyn ToSql + Sync)).collect();
                params.push(&expires);
                params.push(&now);
                c.client.execute(&c.upsert, &params).await
            })
            .await?;
        // No row inserted or updated: the `WHERE` of the conflict update refused it.
        if n == 0 {
            return Err(StorageError::owned_by_another(&k.id));
        }
        Ok(())
    }

    async fn refresh(
        &self,
        id: &str,
        owner: &str,
        expires_at_ms: u64,
    ) -> Result<bool, StorageError> {
        if has_nul(id) || has_nul(owner) {
            return Ok(false);
        }
        let expires = timestamp(expires_at_ms);
        let (_, now) = now();
        let row = self
            .run("refresh", |c| async move {
                c.client
                    .query_one(&c.refresh, &[&id, &expires, &now, &owner])
                    .await
            })
            .await?;
        owned_outcome(&row, id)
    }

    async fn delete(&self, id: &str, owner: &str) -> Result<bool, StorageError> {
        if has_nul(id) || has_nul(owner) {
            return Ok(false);
        }
        let (_, now) = now();
        let row = self
            .run("delete", |c| async move {
                c.client.query_one(&c.delete, &[&id, &owner, &now]).await
            })
            .await?;
        owned_outcome(&row, id)
    }

    /// One statement for the whole batch (the ids and owners as arrays).
    async fn refresh_many(
        &self,
        items: &[(String, String)],
        expires_at_ms: u64,
    ) -> Vec<Result<bool, StorageError>> {
        let asked: Vec<&(String, String)> = items
            .iter()
            .filter(|(id, owner)| !has_nul(id) && !has_nul(owner))
            .collect();
        let ids: Vec<&str> = asked.iter().map(|(id, _)| id.as_str()).collect();
        let owners: Vec<&str> = asked.iter().map(|(_, owner)| owner.as_str()).collect();
        let expires = timestamp(expires_at_ms);
        let (_, now) = now();
        let rows = if ids.is_empty() {
            Ok(Vec::new())
        } else {
            self.run("refresh", |c| {
                let (ids, owners) = (&ids, &owners);
                async move {
                    c.client
                        .query(
                            "WITH items AS (SELECT * FROM unnest($1::text[], $2::text[]) \
                                 AS u(id, owner)), \
                             done AS (UPDATE kite.kite k \
                                 SET expires_at = COALESCE($3::timestamptz, 'infinity'), \
                                     updated_at = now() \
                                 FROM items WHERE k.id = items.id \
                                     AND k.username = items.owner \
                                     AND k.expires_at > $4::timestamptz \
                                 RETURNING k.id) \
                             SELECT items.id, \
                                 EXISTS (SELECT 1 FROM done WHERE done.id = items.id), \
                                 EXISTS (SELECT 1 FROM kite.kite k WHERE k.id = items.id \
                                     AND k.username <> items.owner \
                                     AND k.expires_at > $4::timestamptz) \
                             FROM items",
                            &[ids, owners, &expires, &now],
                        )
                        .await
                }
            })
            .await
        };
        let rows = match rows {
            Ok(rows) => rows,
            Err(e) => {
                let message = e.to_string();
                return items
                    .iter()
                    .map(|_| Err(StorageError::Unavailable(message.clone())))
                    .collect();
            }
        };
        let mut outcome: HashMap<String, Result<bool, StorageError>> = HashMap::new();
        for row in &rows {
            match row.try_get::<_, String>(0) {
                Ok(id) => {
                    let result = owned_outcome_at(row, 1, &id);
                    outcome.insert(id, result);
                }
                Err(e) => warn_corrupt(&e),
            }
        }
        // An id asked twice is answered once (the second time as not refreshed).
        items
            .iter()
            .map(|(id, _)| outcome.remove(id).unwrap_or(Ok(false)))
            .collect()
    }

    async fn delete_written(
        &self,
        id: &str,
        owner: &str,
        expires_at_ms: u64,
    ) -> Result<bool, StorageError> {
        if has_nul(id) || has_nul(owner) {
            return Ok(false);
        }
        let expires = timestamp(expires_at_ms);
        let n = self
            .run("delete", |c| async move {
                c.client
                    .execute(&c.delete_written, &[&id, &owner, &expires])
                    .await
            })
            .await?;
        Ok(n > 0)
    }

    async fn get(&self, matcher: &Matcher) -> Result<Vec<Registration>, StorageError> {
        let (now_ms, now) = now();
        let rows = if let Some(id) = matcher.id() {
            if has_nul(id) {
                return Ok(Vec::new());
            }
            self.run("get", |c| async move {
                c.client.query(&c.by_id, &[&id, &now]).await
            })
            .await?
        } else {
            // Every exact field is in the WHERE (the indexes of migration 3 serve the common
            // shapes), not only the leading ones: `{username, name}` reads that kite's rows.
            let exact = matcher.exact();
            let mut mask = 0u8;
            let mut values = Vec::with_capacity(7);
            for (i, v) in exact.iter().enumerate() {
                if let Some(v) = v {
                    mask |= 1 << i;
                    values.push(*v);
                }
            }
            if exact[0].is_none() {
                // Not a query Matcher::new lets through; nothing to select by.
                return Ok(Vec::new());
            }
            if values.iter().any(|v| has_nul(v)) {
                return Ok(Vec::new());
            }
            let values = &values;
            self.run("get", |c| async move {
                let st = c.by_fields(mask).await?;
                let mut params: Vec<&(dyn ToSql + Sync)> =
                    values.iter().map(|v| v as &(dyn ToSql + Sync)).collect();
                params.push(&now);
                c.client.query(&st, &params).await
            })
            .await?
        };
        let mut out = Vec::with_capacity(rows.len());
        for row in &rows {
            let r = decode(row)?;
            if !r.expired(now_ms) && matcher.matches(&r.kite) {
                out.push(r);
            }
        }
        Ok(out)
    }

    async fn purge_expired(&self) -> Result<usize, StorageError> {
        let (_, now) = now();
        let n = self
            .run("purge", |c| async move {
                c.client.execute(&c.purge, &[&now]).await
            })
            .await?;
        Ok(usize::try_from(n).unwrap_or(usize::MAX))
    }

    /// One `INSERT ... ON CONFLICT DO NOTHING`: the primary key and the unique public key
    /// decide atomically.
    async fn add_key(&self, key: &KeyRecord) -> Result<bool, StorageError> {
        let created = at_ms(key.created_ms);
        let deleted = key.deleted_ms.map(at_ms);
        let n = self
            .run("add key", |c| async move {
                c.client
                    .execute(
                        "INSERT INTO kite.key (id, public, private, created_at, deleted_at, \
                         signing) VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT DO NOTHING",
                        &[
                            &key.id,
                            &key.public_pem,
                            &key.private_pem,
                            &created,
                            &deleted,
                            &key.signing,
                        ],
                    )
                    .await
            })
            .await?;
        Ok(n == 1)
    }

    async fn delete_key(&self, id: &str) -> Result<bool, StorageError> {
        let (_, now) = now();
        let n = self
            .run("delete key", |c| async move {
                c.client
                    .execute(
                        "UPDATE kite.key SET deleted_at = GREATEST($2::timestamptz, created_at) \
                         WHERE id = $1 AND deleted_at IS NULL",
                        &[&id, &now],
                    )
                    .await
            })
            .await?;
        Ok(n == 1)
    }

    async fn keys(&self) -> Result<Vec<KeyRecord>, StorageError> {
        let rows = self
            .run("keys", |c| async move {
                c.client
                    .query(
                        "SELECT id, public, private, created_at, deleted_at, signing \
                         FROM kite.key",
                        &[],
                    )
                    .await
            })
            .await?;
        rows.iter().map(decode_key).collect()
    }
}

#[cfg(test)]
mod tests {
    use kite_native::core::KontrolQuery;
    use kite_test_kit::servers::Postgres;

    use super::*;
    use crate::storage::tests::{behaves, ids, kite, matcher};

    /// A new database `name` on `pg` and the configuration to reach it.
    fn database(pg: &Postgres, name: &str) -> PostgresConfig {
        pg.create_database(name);
        PostgresConfig {
            host: "127.0.0.1".into(),
            port: pg.port(),
            user: "postgres".into(),
            dbname: name.into(),
            connect_timeout: Duration::from_secs(5),
            query_timeout: Duration::from_secs(5),
            ..PostgresConfig::default()
        }
    }

    /// A plain client of `config`'s database, to look at what the storage wrote.
    async fn raw_client(config: &PostgresConfig) -> Client {
        let (client, connection) = config.client_config().connect(NoTls).await.unwrap();
        tokio::spawn(connection);
        client
    }

    fn reg(path: &str, ttl: Duration) -> Registration {
        Registration::new(kite(path), &format!("http://{path}"), "key1", ttl)
    }

    const HOUR: Duration = Duration::from_secs(3600);

    #[tokio::test]
    async fn postgres_storage_behaves_and_a_restart_loses_nothing() {
        let Some(pg) = Postgres::start() else { return };
        let config = database(&pg, "kontrol");
        {
            let s = PostgresStorage::connect(config.clone()).await.unwrap();
            behaves(&s).await;
        }
        // A restarted Kontrol finds every live registration.
        let s = PostgresStorage::connect(config).await.unwrap();
        assert_eq!(
            ids(s.get(&matcher("/alice")).await.unwrap()),
            ["k2", "k3", "k4"]
        );
        assert_eq!(ids(s.get(&matcher("/bob")).await.unwrap()), ["k5"]);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn two_kontrols_on_one_database_see_each_other() {
        let Some(pg) = Postgres::start() else { return };
        let config = database(&pg, "shared");
        // One over TCP, one over the server's Unix socket (a host that is a directory).
        let over_socket = PostgresConfig {
            host: pg.dir().display().to_string(),
            ..config.clone()
        };
        let (a, b) = tokio::join!(
            PostgresStorage::connect(config),
            PostgresStorage::connect(over_socket)
        );
        let (a, b) = (a.unwrap(), b.unwrap());
        a.upsert(&reg("/alice/prod/math/1.0.0/eu/h1/a1", HOUR))
            .await
            .unwrap();
        b.upsert(&reg("/alice/prod/math/1.1.0/us/h2/b1", HOUR))
            .await
            .unwrap();
        for s in [&a, &b] {
            assert_eq!(
                ids(s.get(&matcher("/alice/prod/math")).await.unwrap()),
                ["a1", "b1"]
            );
        }
        // One refreshes and deletes what the other registered.
        let later = now_ms() + 7_200_000;
        assert!(b.refresh("a1", "alice", later).await.unwrap());
        let by_id = Matcher::new(&KontrolQuery {
            id: "a1".into(),
            ..Default::default()
        })
        .unwrap();
        assert_eq!(a.get(&by_id).await.unwrap()[0].expires_at_ms, later);
        assert!(a.delete("b1", "alice").await.unwrap());
        assert!(!b.delete("b1", "alice").await.unwrap());
        assert_eq!(ids(b.get(&matcher("/alice")).await.unwrap()), ["a1"]);
        // Many registrations from both at once.
        let mut writes = tokio::task::JoinSet::new();
        for i in 0..50 {
            let s = if i % 2 == 0 { a.clone() } else { b.clone() };
            writes.spawn(async move {
                s.upsert(&reg(&format!("/carol/prod/db/1.0.{i}/eu/h/c{i:02}"), HOUR))
                    .await
            });
        }
        for r in writes.join_all().await {
            r.unwrap();
        }
        assert_eq!(a.get(&matcher("/carol/prod/db")).await.unwrap().len(), 50);

        // Two users race for one free id through both: one owner wins, every write of the
        // other is refused, and one row (the winner's) holds the id.
        let mut writes = tokio::task::JoinSet::new();
        for i in 0..12 {
            let s = if i % 2 == 0 { a.clone() } else { b.clone() };
            let user = if i % 3 == 0 { "mallory" } else { "alice" };
            writes.spawn(async move {
                let r = reg(&format!("/{user}/prod/math/1.0.0/r{i}/h/race"), HOUR);
                (user, s.upsert(&r).await)
            });
        }
        let results = writes.join_all().await;
        let race = Matcher::new(&KontrolQuery {
            id: "race".into(),
            ..Default::default()
        })
        .unwrap();
        let found = a.get(&race).await.unwrap();
        assert_eq!(found.len(), 1, "{found:?}");
        let winner = found[0].owner().to_owned();
        for (user, result) in results {
            match result {
                Ok(()) => assert_eq!(user, winner),
                Err(StorageError::OwnedByAnother { id }) => {
                    assert_ne!(user, winner);
                    assert_eq!(id, "race");
                }
                Err(e) => panic!("{user}: {e}"),
            }
        }
        let loser = if winner == "alice" {
            "mallory"
        } else {
            "alice"
        };
        for s in [&a, &b] {
            assert!(matches!(
                s.refresh("race", loser, now_ms() + 60_000).await,
                Err(StorageError::OwnedByAnother { .. })
            ));
            assert!(matches!(
                s.delete("race", loser).await,
                Err(StorageError::OwnedByAnother { .. })
            ));
        }
        assert_eq!(b.get(&race).await.unwrap(), found);
        // Once it has expired, the loser takes it, in one statement.
        let mut expired = found[0].clone();
        expired.expires_at_ms = now_ms().saturating_sub(1);
        a.upsert(&expired).await.unwrap();
        b.upsert(&reg(&format!("/{loser}/prod/math/1.0.0/x/h/race"), HOUR))
            .await
            .unwrap();
        assert_eq!(a.get(&race).await.unwrap()[0].owner(), loser);
        assert!(a.delete("race", loser).await.unwrap());
        assert_eq!(
            ids(b.get(&matcher("/carol/prod/db/~> 1.0.48")).await.unwrap()),
            ["c48", "c49"]
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn schema_migration_is_idempotent_and_safe_when_kontrols_start_together() {
        let Some(pg) = Postgres::start() else { return };
        let config = database(&pg, "migrations");
        // Four Kontrols start at once on an empty database.
        let mut starts = tokio::task::JoinSet::new();
        for _ in 0..4 {
            starts.spawn(PostgresStorage::connect(config.clone()));
        }
        for s in starts.join_all().await {
            assert!(s.is_ok(), "{s:?}");
        }
        // And again, on the migrated one.
        let again = PostgresStorage::connect(config.clone()).await.unwrap();
        again
            .upsert(&reg("/alice/prod/math/1.0.0/eu/h1/k1", HOUR))
            .await
            .unwrap();
        let raw = raw_client(&config).await;
        let versions: Vec<(i32, String)> = raw
            .query(
                "SELECT version, description FROM kite.kontrol_schema_version ORDER BY version",
                &[],
            )
            .await
            .unwrap()
            .iter()
            .map(|r| (r.get(0), r.get(1)))
            .collect();
        assert_eq!(
            versions,
            MIGRATIONS
                .iter()
                .zip(1..)
                .map(|((d, _), v)| (v, d.to_string()))
                .collect::<Vec<_>>()
        );
        assert_eq!(PostgresStorage::SCHEMA_VERSION, 4);
        // Go's shape: the columns of kite.kite and kite.key (with `signing` after Go's).
        let columns = |table: &'static str| {
            let raw = &raw;
            async move {
                raw.query(
                    "SELECT column_name::text FROM information_schema.columns \
                     WHERE table_schema = 'kite' AND table_name = $1 ORDER BY ordinal_position",
                    &[&table],
                )
                .await
                .unwrap()
                .iter()
                .map(|r| r.get::<_, String>(0))
                .collect::<Vec<_>>()
            }
        };
        assert_eq!(
            columns("kite").await,
            [
                "username",
                "environment",
                "kitename",
                "version",
                "region",
                "hostname",
                "id",
                "url",
                "key_id",
                "created_at",
                "updated_at",
                "expires_at"
            ]
        );
        assert_eq!(
            columns("key").await,
            [
                "id",
                "public",
                "private",
                "created_at",
                "deleted_at",
                "signing"
            ]
        );
        // A database holding Go Kontrol's tables is refused with a clear error, untouched.
        let go = database(&pg, "go");
        let go_raw = raw_client(&go).await;
        go_raw
            .batch_execute(
                "CREATE SCHEMA kite; CREATE TABLE kite.kite (id UUID PRIMARY KEY, url TEXT)",
            )
            .await
            .unwrap();
        let err = PostgresStorage::connect(go).await.unwrap_err();
        assert!(err.to_string().contains("Go Kontrol's"), "{err}");
        let untouched: bool = go_raw
            .query_one(
                "SELECT to_regclass('kite.kontrol_schema_version') IS NULL",
                &[],
            )
            .await
            .unwrap()
            .get(0);
        assert!(untouched);

        // Reopening keeps the data.
        drop(again);
        let reopened = PostgresStorage::connect(config).await.unwrap();
        assert_eq!(ids(reopened.get(&matcher("/alice")).await.unwrap()), ["k1"]);
    }

    /// Polls `op` until it succeeds, for at most `limit`.
    async fn eventually<T, Fut>(limit: Duration, op: impl Fn() -> Fut) -> T
    where
        Fut: Future<Output = Result<T, StorageError>>,
    {
        let start = Instant::now();
        loop {
            match op().await {
                Ok(v) => return v,
                // No event announces the server being back: poll, bounded.
                Err(_) if start.elapsed() < limit => {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                Err(e) => panic!("still failing after {limit:?}: {e}"),
            }
        }
    }

    #[tokio::test]
    async fn storage_down_and_back() {
        let Some(pg) = Postgres::start() else { return };
        let config = database(&pg, "flaky");
        let s = PostgresStorage::connect(config.clone()).await.unwrap();
        s.upsert(&reg("/alice/prod/math/1.0.0/eu/h1/k1", HOUR))
            .await
            .unwrap();

        pg.stop();
        let lazy = PostgresStorage::new(config.clone());
        let quick = Duration::from_secs(2);
        let unavailable = |what: &str, r: Result<(), StorageError>, took: Duration| match r {
            Err(StorageError::Unavailable(m)) => {
                assert!(took < quick, "{what} took {took:?}");
                assert!(m.contains(&format!("127.0.0.1:{}", pg.port())), "{m}");
            }
            other => panic!("{what} while the server is down: {other:?}"),
        };
        for storage in [&s, &lazy] {
            let t = Instant::now();
            let r = storage.get(&matcher("/alice")).await.map(drop);
            unavailable("get", r, t.elapsed());
            let t = Instant::now();
            let r = storage
                .upsert(&reg("/alice/prod/math/1.0.0/eu/h1/k2", HOUR))
                .await;
            unavailable("upsert", r, t.elapsed());
            let t = Instant::now();
            let r = storage
                .refresh("k1", "alice", now_ms() + 1000)
                .await
                .map(drop);
            unavailable("refresh", r, t.elapsed());
            let t = Instant::now();
            let r = storage.delete("k1", "alice").await.map(drop);
            unavailable("delete", r, t.elapsed());
            let t = Instant::now();
            let r = storage.purge_expired().await.map(drop);
            unavailable("purge_expired", r, t.elapsed());
        }
        let t = Instant::now();
        let err = PostgresStorage::connect(config.clone()).await.unwrap_err();
        assert!(t.elapsed() < quick, "{err}");
        assert!(err.to_string().contains("cannot connect"), "{err}");

        // Back on the same port and data: the same storages work again, nothing was lost.
        pg.restart();
        let limit = Duration::from_secs(10);
        let alice = matcher("/alice");
        let found = eventually(limit, || s.get(&alice)).await;
        assert_eq!(ids(found), ["k1"]);
        let found = eventually(limit, || lazy.get(&alice)).await;
        assert_eq!(ids(found), ["k1"]);
        s.upsert(&reg("/alice/prod/math/1.0.0/eu/h1/k2", HOUR))
            .await
            .unwrap();
        assert!(
            lazy.refresh("k2", "alice", now_ms() + 60_000)
                .await
                .unwrap()
        );
        assert_eq!(
            ids(lazy.get(&matcher("/alice")).await.unwrap()),
            ["k1", "k2"]
        );

        // A connection the server ends (a restart between two operations) is replaced by the
        // operation that finds it dead, which then succeeds.
        let raw = raw_client(&config).await;
        raw.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
             WHERE application_name = 'kontrol' AND pid <> pg_backend_pid()",
            &[],
        )
        .await
        .unwrap();
        assert_eq!(ids(s.get(&matcher("/alice")).await.unwrap()), ["k1", "k2"]);
        assert!(s.delete("k2", "alice").await.unwrap());
    }

    #[tokio::test]
    async fn bad_input_never_panics() {
        let Some(pg) = Postgres::start() else { return };
        let config = database(&pg, "bad");
        let s = PostgresStorage::connect(config).await.unwrap();
        let by_id = |id: &str| {
            Matcher::new(&KontrolQuery {
                id: id.into(),
                ..Default::default()
            })
            .unwrap()
        };

        // NUL characters: PostgreSQL text cannot hold them.
        let mut nul = reg("/alice/prod/math/1.0.0/eu/h1/n1", HOUR);
        nul.kite.hostname = "h\0st".into();
        let err = s.upsert(&nul).await.unwrap_err();
        assert!(err.to_string().contains("NUL"), "{err}");
        nul.kite.hostname = "host".into();
        nul.url = "http://\0".into();
        assert!(s.upsert(&nul).await.is_err());
        assert!(s.get(&by_id("n\0")).await.unwrap().is_empty());
        assert!(s.get(&matcher("/al\0ice")).await.unwrap().is_empty());
        assert!(!s.refresh("n\0", "alice", now_ms()).await.unwrap());
        assert!(!s.delete("n\0", "alice").await.unwrap());

        // Quotes, SQL, Unicode, empty fields and odd URLs are stored exactly.
        let odd = Kite {
            username: "o'brien; DROP TABLE kite.kite; --".into(),
            environment: "prod\"\\%_*".into(),
            name: "m\u{e4}th \u{1f680} \u{202e}rtl".into(),
            version: "1.0.0".into(),
            region: String::new(),
            hostname: "\u{feff}\t\n".into(),
            id: "' OR '1'='1".into(),
        };
        let mut r = Registration::new(odd.clone(), "", "", HOUR);
        r.url = "x".repeat(100_000);
        s.upsert(&r).await.unwrap();
        let q = KontrolQuery {
            username: odd.username.clone(),
            environment: odd.environment.clone(),
            name: odd.name.clone(),
            ..Default::default()
        };
        let found = s.get(&Matcher::new(&q).unwrap()).await.unwrap();
        assert_eq!(found, [r.clone()]);
        assert_eq!(s.get(&by_id(&odd.id)).await.unwrap(), [r.clone()]);
        // LIKE patterns are not patterns.
        let q = KontrolQuery {
            username: "%".into(),
            ..Default::default()
        };
        assert!(s.get(&Matcher::new(&q).unwrap()).await.unwrap().is_empty());

        // Expiries at the edges: never, the year 9999, already.
        let mut forever = reg("/alice/prod/math/1.0.0/eu/h1/f1", HOUR);
        forever.expires_at_ms = u64::MAX;
        s.upsert(&forever).await.unwrap();
        assert_eq!(s.get(&by_id("f1")).await.unwrap(), [forever.clone()]);
        let far = INFINITE_FROM_MS - 1;
        assert!(s.refresh("f1", "alice", far).await.unwrap());
        assert_eq!(s.get(&by_id("f1")).await.unwrap()[0].expires_at_ms, far);
        assert!(
            s.refresh("f1", "alice", INFINITE_FROM_MS + 5)
                .await
                .unwrap()
        );
        assert_eq!(
            s.get(&by_id("f1")).await.unwrap()[0].expires_at_ms,
            u64::MAX
        );
        let mut past = reg("/alice/prod/math/1.0.0/eu/h1/p1", HOUR);
        past.expires_at_ms = 0;
        s.upsert(&past).await.unwrap();
        assert!(s.get(&by_id("p1")).await.unwrap().is_empty());
        assert!(!s.refresh("p1", "alice", u64::MAX).await.unwrap());
        assert_eq!(s.purge_expired().await.unwrap(), 1);

        // Values too large for an index entry fail the one operation, not the storage.
        let huge: String = (0..200_000u32)
            .map(|i| {
                char::from_u32(0x4e00 + (i.wrapping_mul(2_654_435_761) >> 16) % 0x5000).unwrap()
            })
            .collect();
        let mut big = reg("/alice/prod/math/1.0.0/eu/h1/b1", HOUR);
        big.kite.id = huge.clone();
        match s.upsert(&big).await {
            Ok(()) => assert_eq!(s.get(&by_id(&huge)).await.unwrap(), [big.clone()]),
            Err(e) => assert!(matches!(e, StorageError::Unavailable(_)), "{e}"),
        }
        assert!(s.get(&by_id(&huge)).await.is_ok());
        assert!(s.refresh(&huge, "alice", now_ms()).await.is_ok());
        assert!(s.delete(&huge, "alice").await.is_ok());
        let q = KontrolQuery {
            username: huge.clone(),
            environment: huge.clone(),
            name: huge.clone(),
            version: "1.0.0".into(),
            region: huge.clone(),
            hostname: huge.clone(),
            id: huge.clone(),
        };
        assert!(s.get(&Matcher::new(&q).unwrap()).await.unwrap().is_empty());

        // Still in working order.
        assert_eq!(s.get(&by_id(&odd.id)).await.unwrap(), [r]);
        assert!(s.delete(&odd.id, &odd.username).await.unwrap());
    }

    #[tokio::test]
    async fn unreachable_servers_fail_fast() {
        // Nothing listening: refused at once.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let config = PostgresConfig {
            host: "127.0.0.1".into(),
            port,
            user: "kontrol".into(),
            dbname: "kontrol".into(),
            connect_timeout: Duration::from_millis(300),
            ..PostgresConfig::default()
        };
        let t = Instant::now();
        let err = PostgresStorage::connect(config.clone()).await.unwrap_err();
        assert!(t.elapsed() < Duration::from_secs(2), "{:?}", t.elapsed());
        assert!(
            err.to_string()
                .contains(&format!("kontrol@127.0.0.1:{port}/kontrol: cannot connect")),
            "{err}"
        );

        // A server that accepts and never answers: given up after connect_timeout.
        let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = silent.local_addr().unwrap().port();
        let held = tokio::spawn(async move {
            let mut sockets = Vec::new();
            while let Ok((socket, _)) = silent.accept().await {
                sockets.push(socket);
            }
        });
        let lazy = PostgresStorage::new(PostgresConfig { port, ..config });
        let t = Instant::now();
        let err = lazy.get(&matcher("/alice")).await.unwrap_err();
        let took = t.elapsed();
        assert!(
            took >= Duration::from_millis(250) && took < Duration::from_secs(2),
            "{took:?}"
        );
        assert!(matches!(err, StorageError::Unavailable(_)), "{err}");
        // Within the retry pause the next operation fails at once with the same reason.
        let t = Instant::now();
        let again = lazy.purge_expired().await.unwrap_err();
        assert!(t.elapsed() < Duration::from_millis(200));
        assert_eq!(again.to_string(), err.to_string());
        held.abort();
    }

    #[test]
    fn configuration_from_the_environment() {
        let vars = |pairs: &[(&str, &str)]| {
            let map: std::collections::HashMap<String, String> = pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect();
            move |name: &str| map.get(name).cloned()
        };
        let required = [
            ("KONTROL_POSTGRES_USERNAME", "kontrolapplication"),
            ("KONTROL_POSTGRES_DBNAME", "kontrol"),
        ];
        let c = PostgresConfig::from_lookup(vars(&required)).unwrap();
        assert_eq!(
            c,
            PostgresConfig {
                user: "kontrolapplication".into(),
                dbname: "kontrol".into(),
                ..PostgresConfig::default()
            }
        );
        assert_eq!((c.host.as_str(), c.port), ("localhost", 5432));
        assert_eq!(c.connect_timeout, Duration::from_secs(20));

        let mut all = required.to_vec();
        all.extend([
            ("KONTROL_POSTGRES_HOST", "db.example"),
            ("KONTROL_POSTGRES_PORT", "6543"),
            ("KONTROL_POSTGRES_PASSWORD", "s3cret"),
            ("KONTROL_POSTGRES_CONNECTTIMEOUT", "5"),
            ("KONTROL_POSTGRES_QUERYTIMEOUT", "1500ms"),
        ]);
        let c = PostgresConfig::from_lookup(vars(&all)).unwrap();
        assert_eq!((c.host.as_str(), c.port), ("db.example", 6543));
        assert_eq!(c.password, "s3cret");
        assert_eq!(c.connect_timeout, Duration::from_secs(5));
        assert_eq!(c.query_timeout, Duration::from_millis(1500));
        let debug = format!("{c:?}");
        assert!(
            !debug.contains("s3cret") && debug.contains("***"),
            "{debug}"
        );

        assert_eq!(
            PostgresConfig::from_lookup(vars(&required[..1])).unwrap_err(),
            PostgresConfigError::Missing("KONTROL_POSTGRES_DBNAME")
        );
        assert_eq!(
            PostgresConfig::from_lookup(vars(&[
                ("KONTROL_POSTGRES_USERNAME", ""),
                ("KONTROL_POSTGRES_DBNAME", "kontrol"),
            ]))
            .unwrap_err(),
            PostgresConfigError::Missing("KONTROL_POSTGRES_USERNAME")
        );
        for (var, value) in [
            ("KONTROL_POSTGRES_PORT", "0"),
            ("KONTROL_POSTGRES_PORT", "70000"),
            ("KONTROL_POSTGRES_PORT", "five"),
            ("KONTROL_POSTGRES_CONNECTTIMEOUT", "soon"),
            ("KONTROL_POSTGRES_QUERYTIMEOUT", "-1"),
        ] {
            let mut bad = required.to_vec();
            bad.push((var, value));
            let err = PostgresConfig::from_lookup(vars(&bad)).unwrap_err();
            assert!(
                matches!(&err, PostgresConfigError::Invalid { var: v, .. } if *v == var),
                "{var}={value}: {err}"
            );
        }
    }
}
