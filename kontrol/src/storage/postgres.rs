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
//! # Go Kontrol's schema
//!
//! With [`PostgresConfig::schema`] set to [`PostgresSchema::Go`] (`KONTROL_POSTGRES_SCHEMA=go`),
//! the storage uses Go Kontrol's own tables as Go's SQL files make them, so that a Go Kontrol and
//! ours can serve one registry from one database during a migration, each seeing the other's
//! kites. No migration runs and nothing is added to the database: on connecting, the storage
//! checks that `kite.kite` and `kite.key` are there with Go's columns and types, and refuses the
//! database (saying what is missing or different) otherwise. A database without either table gets
//! Go's schema created ([`PostgresStorage::GO_SCHEMA_SQL`]) only when
//! [`PostgresConfig::create_go_schema`] asks for it. What differs from our schema, and how it is
//! mapped:
//!
//! - **Ids are UUIDs** (`kite.kite.id`, `kite.kite.key_id`, `kite.key.id` are `UUID`). Kites'
//!   ids are (ours and Go's are random UUIDs), and must be in PostgreSQL's own text form
//!   (lowercase, with hyphens), the one it gives back: registering any other id, or a key pair id
//!   that is not one, fails with [`StorageError::Rejected`], saying so. Lookups, refreshes and
//!   deletes of an id that is not one find nothing. Kontrol's configured key pair id (`default`)
//!   is not a UUID: the pair is stored under a new UUID instead (see [`crate::keys`]), as Go's
//!   `AddKeyPair("", ...)` does.
//! - **`key_id` must name a `kite.key` row** (a foreign key): a registration naming a pair not
//!   stored fails with [`StorageError::Rejected`]. Kontrol registers kites with the pairs it
//!   reads from `kite.key`, so this only happens when the pairs cannot be read or stored.
//! - **Expiry is `updated_at`.** Go deletes rows whose `updated_at` is more than 90 s old (its
//!   `KeyTTL`, every 120 s), and its readers take every row they find. We store a registration's
//!   expiry `E` as `updated_at = E - 90 s` and read `updated_at + 90 s` back as its expiry, so
//!   both sides agree on liveness: a kite Go registers or refreshes (`updated_at = now()`) is live
//!   for us for 90 s, and Go's cleaner removes ours exactly when they expire (our registrations
//!   live longer than 90 s after a heartbeat, so their `updated_at` is ahead of the clock). An
//!   expiry from the year 10000 on is stored as `updated_at` 90 s before it (Go's driver cannot
//!   read `infinity`) and read back as never. Our sessions use the `UTC` time zone, so that the
//!   columns' defaults, Go's `now() AT TIME ZONE 'UTC'`, mean now; Go's own writes are right
//!   when its sessions' time zone is UTC too (as in Go's Docker setup).
//! - **No `signing` column.** Every pair of `kite.key` reads as added to sign, so the newest
//!   live pair (by `created_at`) signs, as Go signs with the last pair it added; adding a pair
//!   only to be trusted (not current) is refused with [`StorageError::Rejected`]. Deleting a pair
//!   sets `deleted_at`, as Go does.
//! - **Ownership** is decided as in our schema, by `username`, expiry being `updated_at + 90 s`
//!   (Go Kontrol itself lets anyone overwrite any id).
//! - **Watch events** travel by `NOTIFY kontrol_watch` as with our schema (Go has no watchers).
//! - `kite.kite` is Go's `UNLOGGED` table: a server crash empties it (kites register again).
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

/// The select of a registration, in the order [`decode`] reads (the tokens as
/// [`PostgresSchema::sql`] renders them).
const SELECT: &str = "SELECT username, environment, kitename, version, region, hostname, id@text, \
                      url, key_id@text, NULLIF(@exp, 'infinity') FROM kite.kite";

/// The select of the live rows meeting `clause`, whose parameter `$now` is the time (the cut,
/// see [`PostgresSchema::cut`]).
fn select_live(clause: &str, now: usize) -> String {
    format!("{SELECT} WHERE {clause} AND @exp > ${now}::timestamptz")
}

/// Go Kontrol's `KeyTTL` in ms: how long after its `updated_at` Go's cleaner deletes a row.
const GO_KEY_TTL_MS: u64 = 90_000;

/// Which tables the storage keeps the registry in.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum PostgresSchema {
    /// Ours, created and migrated by Kontrol (`kite.kite` with TEXT ids and an `expires_at`,
    /// `kite.key` with `signing`, `kite.kontrol_schema_version`). The default.
    #[default]
    Ours,
    /// Go Kontrol's `kite.kite` and `kite.key`, as Go's SQL files make them: never migrated,
    /// shared with Go Kontrols (see the module docs for what differs).
    Go,
}

impl std::str::FromStr for PostgresSchema {
    type Err = String;

    /// `ours` or `go` (any case).
    fn from_str(s: &str) -> Result<PostgresSchema, String> {
        match s.trim().to_ascii_lowercase().as_str() {
            "ours" => Ok(PostgresSchema::Ours),
            "go" => Ok(PostgresSchema::Go),
            _ => Err("neither `ours` nor `go`".into()),
        }
    }
}

impl PostgresSchema {
    /// `template` for this schema: `@exp` is the column liveness is stored in, `@uuid` the cast
    /// of a text parameter to an id column's type, `@text` the cast of an id column to text,
    /// `@touch` what else a write of `@exp` sets, `@signing` the `signing` column's value.
    fn sql(self, template: &str) -> String {
        let (exp, uuid, text, touch, signing) = match self {
            PostgresSchema::Ours => ("expires_at", "", "", ", updated_at = now()", "signing"),
            PostgresSchema::Go => ("updated_at", "::text::uuid", "::text", "", "true"),
        };
        template
            .replace("@exp", exp)
            .replace("@uuid", uuid)
            .replace("@text", text)
            .replace("@touch", touch)
            .replace("@signing", signing)
    }

    /// What is stored in `@exp` for the expiry `expires_at_ms` (`None`: `infinity`).
    fn stamp(self, expires_at_ms: u64) -> Option<SystemTime> {
        match self {
            PostgresSchema::Ours => timestamp(expires_at_ms),
            PostgresSchema::Go => Some(at_ms(
                expires_at_ms
                    .min(INFINITE_FROM_MS)
                    .saturating_sub(GO_KEY_TTL_MS),
            )),
        }
    }

    /// The `@exp` a row must be later than to be live at `now_ms`.
    fn cut(self, now_ms: u64) -> SystemTime {
        match self {
            PostgresSchema::Ours => at_ms(now_ms),
            PostgresSchema::Go => at_ms(now_ms.saturating_sub(GO_KEY_TTL_MS)),
        }
    }

    /// The expiry of a row whose `@exp` is `stored` (`None`: `infinity`), the inverse of
    /// [`PostgresSchema::stamp`].
    fn expiry(self, stored: Option<SystemTime>) -> u64 {
        match self {
            PostgresSchema::Ours => millis(stored),
            PostgresSchema::Go => match stored {
                None => u64::MAX,
                Some(t) => {
                    let ms = millis(Some(t)).saturating_add(GO_KEY_TTL_MS);
                    if ms >= INFINITE_FROM_MS { u64::MAX } else { ms }
                }
            },
        }
    }

    /// Whether `id` can be an id of this schema (Go's: a UUID as PostgreSQL writes it).
    fn takes_id(self, id: &str) -> bool {
        match self {
            PostgresSchema::Ours => true,
            PostgresSchema::Go => canonical_uuid(id),
        }
    }
}

/// Whether `s` is a UUID in PostgreSQL's text form (lowercase, hyphenated), so that it reads
/// back as written.
fn canonical_uuid(s: &str) -> bool {
    uuid::Uuid::try_parse(s).is_ok_and(|u| u.hyphenated().to_string() == s)
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
    /// Whose tables: ours (the default) or Go Kontrol's (see the module docs).
    pub schema: PostgresSchema,
    /// With [`PostgresSchema::Go`]: create Go's tables ([`PostgresStorage::GO_SCHEMA_SQL`]) in a
    /// database that has neither `kite.kite` nor `kite.key`, instead of refusing it. Default
    /// off: a Go registry is normally made by Go's own SQL files.
    pub create_go_schema: bool,
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
            schema: PostgresSchema::Ours,
            create_go_schema: false,
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
            .field("schema", &self.schema)
            .field("create_go_schema", &self.create_go_schema)
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
    /// 20), plus our `KONTROL_POSTGRES_QUERYTIMEOUT` (the same form; default 10),
    /// `KONTROL_POSTGRES_SCHEMA` (`ours`, the default, or `go`: [`PostgresConfig::schema`]) and
    /// `KONTROL_POSTGRES_CREATEGOSCHEMA` (`true` or `false`, default false:
    /// [`PostgresConfig::create_go_schema`]). An empty variable counts as unset.
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
        if let Some(v) = get("KONTROL_POSTGRES_SCHEMA") {
            config.schema = v
                .parse()
                .map_err(|e| invalid("KONTROL_POSTGRES_SCHEMA", &v, e))?;
        }
        if let Some(v) = get("KONTROL_POSTGRES_CREATEGOSCHEMA") {
            config.create_go_schema = match v.trim().to_ascii_lowercase().as_str() {
                "true" | "1" => true,
                "false" | "0" => false,
                _ => {
                    return Err(invalid(
                        "KONTROL_POSTGRES_CREATEGOSCHEMA",
                        &v,
                        "neither true nor false".into(),
                    ));
                }
            };
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
        if self.schema == PostgresSchema::Go {
            // Go's column defaults are `now() AT TIME ZONE 'UTC'`: now only in UTC sessions.
            c.options("-c TimeZone=UTC");
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
    /// Whose tables the statements are written for.
    schema: PostgresSchema,
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
                let cast = if *column == "id" { "@uuid" } else { "" };
                clause.push(format!("{column} = ${}{cast}", clause.len() + 1));
            }
        }
        let sql = self
            .schema
            .sql(&select_live(&clause.join(" AND "), clause.len() + 1));
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

    /// Go Kontrol's tables as its SQL files (`kontrol/002-table.sql` and the two
    /// `003-migration-*.sql`) leave them: the same tables, columns, types, defaults, constraints
    /// and indexes, so that Go Kontrol reads what we write and we read what it writes; the
    /// grants Go gives its role `kontrol`, if that role exists. (Go's `001-schema.sql` makes the
    /// role and its login user; roles belong to the server, not to a database, and are left to
    /// the operator.) [`PostgresConfig::create_go_schema`] runs it in a database without them.
    pub const GO_SCHEMA_SQL: &str = r#"
CREATE SCHEMA IF NOT EXISTS kite;
CREATE EXTENSION IF NOT EXISTS "uuid-ossp";

CREATE TABLE kite.key (
    id         UUID NOT NULL DEFAULT uuid_generate_v4(),
    public     TEXT NOT NULL,
    private    TEXT NOT NULL,
    created_at TIMESTAMP(6) WITH TIME ZONE NOT NULL DEFAULT (now() AT TIME ZONE 'UTC'),
    deleted_at TIMESTAMP(6) WITH TIME ZONE,
    PRIMARY KEY (id),
    CONSTRAINT key_public_unique UNIQUE (public),
    CONSTRAINT key_private_unique UNIQUE (private),
    CONSTRAINT key_created_at_lte_deleted_at_check CHECK (created_at <= deleted_at)
);
CREATE INDEX kite_key_public_idx ON kite.key USING btree (public);
CREATE INDEX kite_key_deleted_at_public_idx
    ON kite.key USING btree (deleted_at DESC NULLS FIRST, public);

CREATE UNLOGGED TABLE kite.kite (
    username    TEXT NOT NULL,
    environment TEXT NOT NULL,
    kitename    TEXT NOT NULL,
    version     TEXT NOT NULL,
    region      TEXT NOT NULL,
    hostname    TEXT NOT NULL,
    id          UUID PRIMARY KEY,
    url         TEXT NOT NULL,
    created_at  TIMESTAMPTZ NOT NULL DEFAULT (now() AT TIME ZONE 'UTC'),
    updated_at  TIMESTAMPTZ NOT NULL DEFAULT (now() AT TIME ZONE 'UTC'),
    key_id      UUID NOT NULL,
    CONSTRAINT kite_key_id_fkey FOREIGN KEY (key_id) REFERENCES kite.key (id)
);
CREATE INDEX kite_updated_at_btree_idx ON kite.kite USING btree (updated_at DESC);

DO $$
BEGIN
    IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'kontrol') THEN
        GRANT USAGE ON SCHEMA kite TO kontrol;
        GRANT SELECT, INSERT, UPDATE ON kite.key TO kontrol;
        GRANT SELECT, INSERT, UPDATE, DELETE ON kite.kite TO kontrol;
    END IF;
END
$$;
"#;

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

    /// Whose tables it uses.
    fn schema(&self) -> PostgresSchema {
        self.inner.config.schema
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
        let schema = config.schema;
        match schema {
            PostgresSchema::Ours => migrate(&mut client).await.map_err(|e| {
                let in_the_way =
                    e.code() == Some(&tokio_postgres::error::SqlState::DUPLICATE_TABLE);
                let mut message = fail("schema migration failed", e);
                if in_the_way {
                    message.push_str(
                        " (the database holds a table Kontrol did not create, such as Go \
                         Kontrol's kite.kite: use a database of its own, or Go's schema with \
                         KONTROL_POSTGRES_SCHEMA=go)",
                    );
                }
                message
            })?,
            PostgresSchema::Go => check_go_schema(&mut client, config.create_go_schema)
                .await
                .map_err(|e| match e {
                    GoSchemaError::Db(e) => fail("checking Go's schema failed", e),
                    GoSchemaError::Unfit(why) => format!("{address}: {why}"),
                })?,
        }
        let sql = |template: &str| schema.sql(template);
        let prepare = async {
            Ok::<_, tokio_postgres::Error>(Conn {
                upsert: client
                    .prepare(&sql(
                        "INSERT INTO kite.kite (username, environment, kitename, version, \
                         region, hostname, id, url, key_id, @exp) \
                         VALUES ($1, $2, $3, $4, $5, $6, $7@uuid, $8, $9@uuid, \
                                 COALESCE($10::timestamptz, 'infinity')) \
                         ON CONFLICT (id) DO UPDATE SET username = EXCLUDED.username, \
                         environment = EXCLUDED.environment, kitename = EXCLUDED.kitename, \
                         version = EXCLUDED.version, region = EXCLUDED.region, \
                         hostname = EXCLUDED.hostname, url = EXCLUDED.url, \
                         key_id = EXCLUDED.key_id, @exp = EXCLUDED.@exp@touch \
                         WHERE kite.kite.username = EXCLUDED.username \
                            OR kite.kite.@exp <= $11::timestamptz",
                    ))
                    .await?,
                refresh: client
                    .prepare(&sql("WITH done AS (UPDATE kite.kite \
                            SET @exp = COALESCE($2::timestamptz, 'infinity')@touch \
                            WHERE id = $1@uuid AND username = $4 AND @exp > $3::timestamptz \
                            RETURNING 1) \
                         SELECT EXISTS (SELECT 1 FROM done), \
                                EXISTS (SELECT 1 FROM kite.kite WHERE id = $1@uuid \
                                    AND username <> $4 AND @exp > $3::timestamptz)"))
                    .await?,
                delete: client
                    .prepare(&sql("WITH gone AS (DELETE FROM kite.kite \
                            WHERE id = $1@uuid AND (username = $2 OR @exp <= $3::timestamptz) \
                            RETURNING 1) \
                         SELECT EXISTS (SELECT 1 FROM gone), \
                                EXISTS (SELECT 1 FROM kite.kite WHERE id = $1@uuid \
                                    AND username <> $2 AND @exp > $3::timestamptz)"))
                    .await?,
                delete_written: client
                    .prepare(&sql(
                        "DELETE FROM kite.kite WHERE id = $1@uuid AND username = $2 \
                            AND @exp = COALESCE($3::timestamptz, 'infinity')",
                    ))
                    .await?,
                purge: client
                    .prepare(&sql("DELETE FROM kite.kite WHERE @exp <= $1::timestamptz"))
                    .await?,
                by_id: client
                    .prepare(&sql(&select_live("id = $1@uuid", 2)))
                    .await?,
                by_fields: Mutex::default(),
                schema,
                client,
            })
        };
        prepare
            .await
            .map_err(|e| fail("cannot prepare statements", e))
    }
}

/// Why a database cannot be used with Go's schema.
enum GoSchemaError {
    /// A statement failed.
    Db(tokio_postgres::Error),
    /// The database does not hold Go's tables as Go makes them: why, for the operator.
    Unfit(String),
}

impl From<tokio_postgres::Error> for GoSchemaError {
    fn from(e: tokio_postgres::Error) -> GoSchemaError {
        GoSchemaError::Db(e)
    }
}

/// The columns of Go's tables the storage reads and writes, with their types as
/// `information_schema.columns` names them.
const GO_COLUMNS: &[(&str, &str, &str)] = &[
    ("kite", "username", "text"),
    ("kite", "environment", "text"),
    ("kite", "kitename", "text"),
    ("kite", "version", "text"),
    ("kite", "region", "text"),
    ("kite", "hostname", "text"),
    ("kite", "id", "uuid"),
    ("kite", "url", "text"),
    ("kite", "created_at", "timestamp with time zone"),
    ("kite", "updated_at", "timestamp with time zone"),
    ("kite", "key_id", "uuid"),
    ("key", "id", "uuid"),
    ("key", "public", "text"),
    ("key", "private", "text"),
    ("key", "created_at", "timestamp with time zone"),
    ("key", "deleted_at", "timestamp with time zone"),
];

/// Checks that the database holds Go's `kite.kite` and `kite.key` with [`GO_COLUMNS`], creating
/// them first (under [`MIGRATION_LOCK`]) if `create` and neither table exists.
async fn check_go_schema(client: &mut Client, create: bool) -> Result<(), GoSchemaError> {
    let mut found = go_columns(client).await?;
    let has_table =
        |found: &[(String, String, String)], table: &str| found.iter().any(|(t, _, _)| t == table);
    if has_table(&found, "kontrol_schema_version") {
        return Err(GoSchemaError::Unfit(
            "the database holds this Kontrol's own schema (kite.kontrol_schema_version), not \
             Go Kontrol's: use KONTROL_POSTGRES_SCHEMA=ours with it, or another database"
                .into(),
        ));
    }
    if !has_table(&found, "kite") && !has_table(&found, "key") {
        if !create {
            return Err(GoSchemaError::Unfit(
                "Go Kontrol's tables kite.kite and kite.key are not in the database: make them \
                 with Go's kontrol/*.sql files, or let Kontrol make them \
                 (KONTROL_POSTGRES_CREATEGOSCHEMA=true, --postgres-create-go-schema)"
                    .into(),
            ));
        }
        let tx = client.transaction().await?;
        tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK])
            .await?;
        let empty: bool = tx
            .query_one(
                "SELECT to_regclass('kite.kite') IS NULL AND to_regclass('kite.key') IS NULL",
                &[],
            )
            .await?
            .get(0);
        if empty {
            tx.batch_execute(PostgresStorage::GO_SCHEMA_SQL).await?;
            tracing::info!("created Go Kontrol's schema (kite.kite, kite.key)");
        }
        tx.commit().await?;
        found = go_columns(client).await?;
    }
    let mut wrong = Vec::new();
    for (table, column, kind) in GO_COLUMNS {
        match found.iter().find(|(t, c, _)| t == table && c == column) {
            None => wrong.push(format!("kite.{table}.{column} is missing")),
            Some((_, _, k)) if k != kind => {
                wrong.push(format!("kite.{table}.{column} is {k}, Go's is {kind}"));
            }
            Some(_) => {}
        }
    }
    if !wrong.is_empty() {
        return Err(GoSchemaError::Unfit(format!(
            "the database's kite.kite and kite.key are not Go Kontrol's: {}",
            wrong.join("; ")
        )));
    }
    Ok(())
}

/// `(table, column, type)` of the tables of schema `kite` Go's schema check looks at.
async fn go_columns(
    client: &Client,
) -> Result<Vec<(String, String, String)>, tokio_postgres::Error> {
    let rows = client
        .query(
            "SELECT table_name::text, column_name::text, data_type::text \
             FROM information_schema.columns WHERE table_schema = 'kite' \
             AND table_name IN ('kite', 'key', 'kontrol_schema_version')",
            &[],
        )
        .await?;
    Ok(rows
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2)))
        .collect())
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

fn decode(row: &Row, schema: PostgresSchema) -> Result<Registration, StorageError> {
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
        expires_at_ms: schema.expiry(row.try_get(9).map_err(corrupt)?),
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
        let schema = self.schema();
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
        if !schema.takes_id(&k.id) {
            return Err(StorageError::Rejected(format!(
                "kite id {:?} is not a UUID (lowercase, with hyphens), which Go Kontrol's \
                 PostgreSQL schema takes only (kite.kite.id)",
                k.id
            )));
        }
        if !schema.takes_id(&r.key_id) {
            return Err(StorageError::Rejected(format!(
                "key pair id {:?} is not a UUID, which Go Kontrol's PostgreSQL schema takes \
                 only (kite.kite.key_id)",
                r.key_id
            )));
        }
        let texts = &texts;
        let expires = schema.stamp(r.expires_at_ms);
        let now = schema.cut(now_ms());
        let n = self
            .run("upsert", |c| async move {
                let mut params: Vec<&(dyn ToSql + Sync)> =
                    texts.iter().map(|t| t as &(dyn ToSql + Sync)).collect();
                params.push(&expires);
                params.push(&now);
                match c.client.execute(&c.upsert, &params).await {
                    // Go's schema: key_id names no kite.key row.
                    Err(e)
                        if e.code()
                            == Some(&tokio_postgres::error::SqlState::FOREIGN_KEY_VIOLATION) =>
                    {
                        Ok(None)
                    }
                    other => other.map(Some),
                }
            })
            .await?;
        match n {
            None => Err(StorageError::Rejected(format!(
                "key pair {:?} is not in kite.key, and Go Kontrol's PostgreSQL schema takes \
                 registrations of stored pairs only (kite.kite.key_id)",
                r.key_id
            ))),
            // No row inserted or updated: the `WHERE` of the conflict update refused it.
            Some(0) => Err(StorageError::owned_by_another(&k.id)),
            Some(_) => Ok(()),
        }
    }

    async fn refresh(
        &self,
        id: &str,
        owner: &str,
        expires_at_ms: u64,
    ) -> Result<bool, StorageError> {
        let schema = self.schema();
        if has_nul(id) || has_nul(owner) || !schema.takes_id(id) {
            return Ok(false);
        }
        let expires = schema.stamp(expires_at_ms);
        let now = schema.cut(now_ms());
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
        let schema = self.schema();
        if has_nul(id) || has_nul(owner) || !schema.takes_id(id) {
            return Ok(false);
        }
        let now = schema.cut(now_ms());
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
        let schema = self.schema();
        let asked: Vec<&(String, String)> = items
            .iter()
            .filter(|(id, owner)| !has_nul(id) && !has_nul(owner) && schema.takes_id(id))
            .collect();
        let ids: Vec<&str> = asked.iter().map(|(id, _)| id.as_str()).collect();
        let owners: Vec<&str> = asked.iter().map(|(_, owner)| owner.as_str()).collect();
        let expires = schema.stamp(expires_at_ms);
        let now = schema.cut(now_ms());
        let sql = schema.sql(
            "WITH items AS (SELECT * FROM unnest($1::text[], $2::text[]) AS u(id, owner)), \
             done AS (UPDATE kite.kite k \
                 SET @exp = COALESCE($3::timestamptz, 'infinity')@touch \
                 FROM items WHERE k.id = items.id@uuid \
                     AND k.username = items.owner \
                     AND k.@exp > $4::timestamptz \
                 RETURNING k.id@text AS id) \
             SELECT items.id, \
                 EXISTS (SELECT 1 FROM done WHERE done.id = items.id), \
                 EXISTS (SELECT 1 FROM kite.kite k WHERE k.id = items.id@uuid \
                     AND k.username <> items.owner \
                     AND k.@exp > $4::timestamptz) \
             FROM items",
        );
        let rows = if ids.is_empty() {
            Ok(Vec::new())
        } else {
            self.run("refresh", |c| {
                let (ids, owners, sql) = (&ids, &owners, &sql);
                async move {
                    c.client
                        .query(sql.as_str(), &[ids, owners, &expires, &now])
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
        let schema = self.schema();
        if has_nul(id) || has_nul(owner) || !schema.takes_id(id) {
            return Ok(false);
        }
        let expires = schema.stamp(expires_at_ms);
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
        let schema = self.schema();
        let now_ms = now_ms();
        let now = schema.cut(now_ms);
        let rows = if let Some(id) = matcher.id() {
            if has_nul(id) || !schema.takes_id(id) {
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
            if values.iter().any(|v| has_nul(v)) || exact[6].is_some_and(|id| !schema.takes_id(id))
            {
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
            let r = decode(row, schema)?;
            if !r.expired(now_ms) && matcher.matches(&r.kite) {
                out.push(r);
            }
        }
        Ok(out)
    }

    async fn purge_expired(&self) -> Result<usize, StorageError> {
        let now = self.schema().cut(now_ms());
        let n = self
            .run("purge", |c| async move {
                c.client.execute(&c.purge, &[&now]).await
            })
            .await?;
        Ok(usize::try_from(n).unwrap_or(usize::MAX))
    }

    /// One `INSERT ... ON CONFLICT DO NOTHING`: the primary key and the unique public key
    /// decide atomically (in Go's schema the private key is unique too).
    async fn add_key(&self, key: &KeyRecord) -> Result<bool, StorageError> {
        let created = at_ms(key.created_ms);
        let deleted = key.deleted_ms.map(at_ms);
        let go = self.schema() == PostgresSchema::Go;
        if go && !canonical_uuid(&key.id) {
            return Err(StorageError::Rejected(format!(
                "key pair id {:?} is not a UUID (lowercase, with hyphens), which Go Kontrol's \
                 PostgreSQL schema takes only (kite.key.id)",
                key.id
            )));
        }
        if go && !key.signing {
            return Err(StorageError::Rejected(
                "Go Kontrol's PostgreSQL schema keeps no signing flag (kite.key): every pair \
                 stored there signs once it is the newest live one, so a pair cannot be added \
                 only to be trusted; add it as the current one"
                    .into(),
            ));
        }
        let n = self
            .run("add key", |c| async move {
                if go {
                    c.client
                        .execute(
                            "INSERT INTO kite.key (id, public, private, created_at, deleted_at) \
                             VALUES ($1::text::uuid, $2, $3, $4, $5) ON CONFLICT DO NOTHING",
                            &[
                                &key.id,
                                &key.public_pem,
                                &key.private_pem,
                                &created,
                                &deleted,
                            ],
                        )
                        .await
                } else {
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
                }
            })
            .await?;
        Ok(n == 1)
    }

    async fn delete_key(&self, id: &str) -> Result<bool, StorageError> {
        let schema = self.schema();
        if !schema.takes_id(id) {
            return Ok(false);
        }
        let now = at_ms(now_ms());
        let sql = schema.sql(
            "UPDATE kite.key SET deleted_at = GREATEST($2::timestamptz, created_at) \
             WHERE id = $1@uuid AND deleted_at IS NULL",
        );
        let n = self
            .run("delete key", |c| {
                let sql = &sql;
                async move { c.client.execute(sql.as_str(), &[&id, &now]).await }
            })
            .await?;
        Ok(n == 1)
    }

    async fn keys(&self) -> Result<Vec<KeyRecord>, StorageError> {
        let sql = self
            .schema()
            .sql("SELECT id@text, public, private, created_at, deleted_at, @signing FROM kite.key");
        let rows = self
            .run("keys", |c| {
                let sql = &sql;
                async move { c.client.query(sql.as_str(), &[]).await }
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

    /// A new database `name` holding Go's schema (made by [`PostgresStorage::GO_SCHEMA_SQL`]
    /// through a plain client), and the Go-schema configuration to reach it.
    async fn go_database(pg: &Postgres, name: &str) -> PostgresConfig {
        let config = PostgresConfig {
            schema: PostgresSchema::Go,
            ..database(pg, name)
        };
        raw_client(&config)
            .await
            .batch_execute(PostgresStorage::GO_SCHEMA_SQL)
            .await
            .unwrap();
        config
    }

    /// Runs `sql` as Go's lib/pq sends it: `$n` are text parameters PostgreSQL types from
    /// their place (here written in as quoted literals, the same to the server's parser).
    async fn go_exec(raw: &Client, sql: &str, params: &[&str]) -> u64 {
        let mut text = sql.to_owned();
        for (i, p) in params.iter().enumerate().rev() {
            text = text.replace(
                &format!("${}", i + 1),
                &format!("'{}'", p.replace('\'', "''")),
            );
        }
        let mut affected = 0;
        for m in raw.simple_query(&text).await.unwrap() {
            if let tokio_postgres::SimpleQueryMessage::CommandComplete(n) = m {
                affected += n;
            }
        }
        affected
    }

    /// The rows of `sql` (Go's shape, see [`go_exec`]) in PostgreSQL's text form, as Go's
    /// driver reads them.
    async fn go_rows(raw: &Client, sql: &str, params: &[&str]) -> Vec<Vec<Option<String>>> {
        let mut text = sql.to_owned();
        for (i, p) in params.iter().enumerate().rev() {
            text = text.replace(
                &format!("${}", i + 1),
                &format!("'{}'", p.replace('\'', "''")),
            );
        }
        raw.simple_query(&text)
            .await
            .unwrap()
            .into_iter()
            .filter_map(|m| match m {
                tokio_postgres::SimpleQueryMessage::Row(r) => {
                    Some((0..r.len()).map(|i| r.get(i).map(str::to_owned)).collect())
                }
                _ => None,
            })
            .collect()
    }

    /// Go's `insertKiteQuery` (postgres.go `Add`, and `Upsert` when its UPDATE found no row).
    const GO_INSERT: &str = "INSERT INTO kite.kite (username,environment,kitename,version,\
        region,hostname,id,url,key_id) VALUES ($1,$2,$3,$4,$5,$6,$7,$8,$9)";
    /// Go's `Upsert` UPDATE.
    const GO_UPSERT_UPDATE: &str = "UPDATE kite.kite SET url = $1, key_id = $3, \
        updated_at = (now() at time zone 'utc') WHERE id = $2";
    /// Go's `Update` (a heartbeat).
    const GO_UPDATE: &str =
        "UPDATE kite.kite SET url = $1, updated_at = (now() at time zone 'utc') WHERE id = $2";
    /// Go's `Get` for a query of username, environment and name (squirrel's `sq.And`).
    const GO_GET: &str = "SELECT * FROM kite.kite WHERE (username = $1 AND environment = $2 \
        AND kitename = $3)";
    /// Go's cleaner with its `KeyTTL` (90 s).
    const GO_CLEAN: &str = "DELETE FROM kite.kite WHERE updated_at < (now() at time zone 'utc') \
        - ((INTERVAL '1 second') * 90)";
    /// Go's `AddKey`.
    const GO_ADD_KEY: &str = "INSERT INTO kite.key (id,public,private) VALUES ($1,$2,$3)";
    /// Go's `DeleteKey`.
    const GO_DELETE_KEY: &str =
        "UPDATE kite.key SET deleted_at = (now() at time zone 'utc') WHERE id = $1";
    /// Go's `getKey` by id.
    const GO_GET_KEY: &str = "SELECT id, public, private, deleted_at FROM kite.key WHERE id = $1";

    fn uuid() -> String {
        uuid::Uuid::new_v4().to_string()
    }

    fn go_reg(path: &str, id: &str, key_id: &str) -> Registration {
        let mut k = kite(path);
        k.id = id.to_owned();
        Registration::new(k, &format!("http://{path}"), key_id, HOUR)
    }

    #[tokio::test]
    async fn a_registry_go_kontrol_wrote_is_read_by_ours() {
        let Some(pg) = Postgres::start() else { return };
        let config = go_database(&pg, "go_written").await;
        let raw = raw_client(&config).await;
        // Go Kontrol's pair (`AddKeyPair("", pub, priv)`: a random UUID), and an older one
        // Go deleted.
        let (go_key, old_key) = (uuid(), uuid());
        go_exec(&raw, GO_ADD_KEY, &[&old_key, "old public", "old private"]).await;
        go_exec(&raw, GO_DELETE_KEY, &[&old_key]).await;
        go_exec(&raw, GO_ADD_KEY, &[&go_key, "go public", "go private"]).await;
        // Three kites Go registered (Upsert: an UPDATE finding nothing, then the INSERT), one
        // heartbeat (Update), and one Go has not heard of for 100 s.
        let (a, b, c, stale) = (uuid(), uuid(), uuid(), uuid());
        let before = now_ms();
        for (fields, id) in [
            (["alice", "prod", "math", "1.0.0", "eu", "h1"], &a),
            (["alice", "prod", "math", "1.2.0", "us", "h2"], &b),
            (["bob", "prod", "math", "1.0.0", "eu", "h1"], &c),
            (["alice", "prod", "math", "1.0.0", "eu", "h3"], &stale),
        ] {
            let url = format!("http://{}/kite", fields[5]);
            assert_eq!(
                go_exec(&raw, GO_UPSERT_UPDATE, &[&url, id, &go_key]).await,
                0
            );
            let mut params: Vec<&str> = fields.to_vec();
            params.extend([id.as_str(), &url, &go_key]);
            assert_eq!(go_exec(&raw, GO_INSERT, &params).await, 1);
        }
        go_exec(&raw, GO_UPDATE, &["http://h2:2/kite", &b]).await;
        raw.execute(
            "UPDATE kite.kite SET updated_at = now() - interval '100 seconds' WHERE id = $1::text::uuid",
            &[&stale],
        )
        .await
        .unwrap();
        let after = now_ms();

        let s = PostgresStorage::connect(config.clone()).await.unwrap();
        let found = s.get(&matcher("/alice/prod/math")).await.unwrap();
        let mut got: Vec<(String, String, String)> = found
            .iter()
            .map(|r| (r.kite.id.clone(), r.url.clone(), r.key_id.clone()))
            .collect();
        got.sort();
        let mut want = vec![
            (a.clone(), "http://h1/kite".to_owned(), go_key.clone()),
            (b.clone(), "http://h2:2/kite".to_owned(), go_key.clone()),
        ];
        want.sort();
        assert_eq!(got, want, "the stale row is not live");
        for r in &found {
            // Live for Go's KeyTTL after Go's last write.
            assert!(
                (before + 90_000..=after + 90_000).contains(&r.expires_at_ms),
                "{before} + 90 s <= {} <= {after} + 90 s",
                r.expires_at_ms
            );
        }
        let by_id = Matcher::by_id(&c);
        let bob = s.get(&by_id).await.unwrap();
        assert_eq!(bob.len(), 1);
        assert_eq!(
            bob[0].kite.to_string(),
            format!("/bob/prod/math/1.0.0/eu/h1/{c}")
        );
        assert_eq!(
            ids(s.get(&matcher("/alice/prod/math/~> 1.1")).await.unwrap()),
            std::slice::from_ref(&b)
        );
        assert_eq!(
            ids(s.get(&matcher("/alice/////h1")).await.unwrap()),
            std::slice::from_ref(&a)
        );
        assert!(
            s.get(&Matcher::by_id("not-a-uuid"))
                .await
                .unwrap()
                .is_empty()
        );
        // Go's pairs, the deleted one marked, every one as a signing pair.
        let mut keys = s.keys().await.unwrap();
        keys.sort_by_key(|k| k.id != old_key);
        assert_eq!(keys.len(), 2);
        assert_eq!(
            (
                keys[0].id.as_str(),
                keys[0].public_pem.as_str(),
                keys[0].live()
            ),
            (old_key.as_str(), "old public", false)
        );
        assert_eq!(
            (
                keys[1].id.as_str(),
                keys[1].public_pem.as_str(),
                keys[1].private_pem.as_str()
            ),
            (go_key.as_str(), "go public", "go private")
        );
        assert!(keys[1].live() && keys[1].signing && keys[0].signing);
        // Ours refreshes and deletes Go's rows, and the stale one is purged.
        let later = now_ms() + 600_000;
        assert!(s.refresh(&a, "alice", later).await.unwrap());
        assert_eq!(
            s.get(&Matcher::by_id(&a)).await.unwrap()[0].expires_at_ms,
            later
        );
        assert!(!s.refresh(&stale, "alice", later).await.unwrap());
        assert_eq!(s.purge_expired().await.unwrap(), 1);
        assert!(s.delete(&b, "alice").await.unwrap());
        assert_eq!(ids(s.get(&matcher("/alice")).await.unwrap()), [a]);
    }

    #[tokio::test]
    async fn what_ours_writes_in_go_schema_go_kontrol_reads() {
        let Some(pg) = Postgres::start() else { return };
        let config = go_database(&pg, "ours_written").await;
        let raw = raw_client(&config).await;
        let s = PostgresStorage::connect(config.clone()).await.unwrap();
        let pair = KeyRecord {
            id: uuid(),
            public_pem: "our public".into(),
            private_pem: "our private".into(),
            created_ms: now_ms(),
            deleted_ms: None,
            signing: true,
        };
        assert!(s.add_key(&pair).await.unwrap());
        let rows = go_rows(&raw, GO_GET_KEY, &[&pair.id]).await;
        assert_eq!(
            rows,
            [vec![
                Some(pair.id.clone()),
                Some("our public".into()),
                Some("our private".into()),
                None
            ]]
        );

        let (k1, k2, gone) = (uuid(), uuid(), uuid());
        let r1 = go_reg("/alice/prod/math/1.0.0/eu/h1/x", &k1, &pair.id);
        s.upsert(&r1).await.unwrap();
        s.upsert(&go_reg("/alice/prod/math/2.0.0/us/h2/x", &k2, &pair.id))
            .await
            .unwrap();
        let mut expired = go_reg("/alice/prod/math/1.0.0/eu/h3/x", &gone, &pair.id);
        expired.expires_at_ms = now_ms() - 1;
        s.upsert(&expired).await.unwrap();
        // Go's Get finds every row (it does not look at updated_at), columns in table order.
        let mut rows = go_rows(&raw, GO_GET, &["alice", "prod", "math"]).await;
        rows.sort_by(|a, b| a[6].cmp(&b[6]));
        assert_eq!(rows.len(), 3);
        let row = rows
            .iter()
            .find(|r| r[6].as_deref() == Some(k1.as_str()))
            .unwrap();
        // username, environment, kitename, version, region, hostname, id, url, created_at,
        // updated_at, key_id.
        let text: Vec<&str> = row.iter().map(|c| c.as_deref().unwrap_or("NULL")).collect();
        assert_eq!(
            text[..8],
            [
                "alice",
                "prod",
                "math",
                "1.0.0",
                "eu",
                "h1",
                k1.as_str(),
                r1.url.as_str()
            ]
        );
        assert_eq!(row[10].as_deref(), Some(pair.id.as_str()), "key_id");
        // updated_at is the expiry less Go's KeyTTL.
        let updated: SystemTime = raw
            .query_one(
                "SELECT updated_at FROM kite.kite WHERE id = $1::text::uuid",
                &[&k1],
            )
            .await
            .unwrap()
            .get(0);
        assert_eq!(millis(Some(updated)) + 90_000, r1.expires_at_ms);
        // Go's cleaner removes exactly what has expired for us.
        assert_eq!(go_exec(&raw, GO_CLEAN, &[]).await, 1);
        assert!(
            go_rows(&raw, "SELECT id FROM kite.kite WHERE id = $1", &[&gone])
                .await
                .is_empty()
        );
        // A refresh and a batch of them move updated_at; Go sees the new URL we wrote too.
        let later = now_ms() + 600_000;
        let out = s
            .refresh_many(
                &[
                    (k1.clone(), "alice".into()),
                    ("not-a-uuid".into(), "alice".into()),
                    (k2.clone(), "mallory".into()),
                ],
                later,
            )
            .await;
        assert!(matches!(out[0], Ok(true)), "{:?}", out[0]);
        assert!(matches!(out[1], Ok(false)), "{:?}", out[1]);
        assert!(
            matches!(out[2], Err(StorageError::OwnedByAnother { .. })),
            "{:?}",
            out[2]
        );
        let updated: SystemTime = raw
            .query_one(
                "SELECT updated_at FROM kite.kite WHERE id = $1::text::uuid",
                &[&k1],
            )
            .await
            .unwrap()
            .get(0);
        assert_eq!(millis(Some(updated)) + 90_000, later);
        // Deleted only as last written: a Go heartbeat since (updated_at = now) keeps it.
        go_exec(&raw, GO_UPDATE, &["http://moved/kite", &k1]).await;
        assert!(!s.delete_written(&k1, "alice", later).await.unwrap());
        let r = &s.get(&Matcher::by_id(&k1)).await.unwrap()[0];
        assert_eq!(r.url, "http://moved/kite");
        // Refreshed by ours again: ours may delete what it last wrote.
        let last = now_ms() + 300_000;
        assert!(s.refresh(&k1, "alice", last).await.unwrap());
        assert!(s.delete_written(&k1, "alice", last).await.unwrap());
        assert!(
            go_rows(&raw, "SELECT id FROM kite.kite WHERE id = $1", &[&k1])
                .await
                .is_empty()
        );
        // Go deletes ours.
        assert_eq!(
            go_exec(&raw, "DELETE FROM kite.kite WHERE id = $1", &[&k2]).await,
            1
        );
        assert!(s.get(&matcher("/alice")).await.unwrap().is_empty());
        // Our soft delete of a pair is Go's: deleted_at set, the row kept.
        assert!(s.delete_key(&pair.id).await.unwrap());
        let rows = go_rows(&raw, GO_GET_KEY, &[&pair.id]).await;
        assert!(rows[0][3].is_some(), "{rows:?}");
    }

    /// Kite and key pair ids made UUIDs on the way into a Go-schema storage and given back on
    /// the way out, so that the shared suite, written with ids such as `k1` and `key1`, runs on
    /// it; each key pair id a registration names is stored first (Go's `key_id` is a foreign
    /// key).
    #[derive(Debug)]
    struct UuidIds {
        inner: PostgresStorage,
        names: Mutex<HashMap<String, String>>,
    }

    impl UuidIds {
        fn to_uuid(&self, name: &str) -> String {
            let mut names = self.names.lock().unwrap();
            if let Some(u) = names.get(name) {
                return u.clone();
            }
            let u = uuid();
            names.insert(name.to_owned(), u.clone());
            names.insert(u.clone(), name.to_owned());
            u
        }
        fn to_name(&self, u: String) -> String {
            self.names.lock().unwrap().get(&u).cloned().unwrap_or(u)
        }
        fn back(&self, mut r: Registration) -> Registration {
            r.kite.id = self.to_name(std::mem::take(&mut r.kite.id));
            r.key_id = self.to_name(std::mem::take(&mut r.key_id));
            r
        }
        /// `r` with the id of an ownership error given back.
        fn named<T>(&self, r: Result<T, StorageError>) -> Result<T, StorageError> {
            r.map_err(|e| match e {
                StorageError::OwnedByAnother { id } => StorageError::OwnedByAnother {
                    id: self.to_name(id),
                },
                e => e,
            })
        }
        fn mapped(&self, matcher: &Matcher) -> Matcher {
            let mut q = matcher.query().clone();
            if !q.id.is_empty() {
                q.id = self.to_uuid(&q.id);
            }
            Matcher::new(&q).unwrap()
        }
    }

    #[async_trait::async_trait]
    impl Storage for UuidIds {
        async fn upsert(&self, r: &Registration) -> Result<(), StorageError> {
            let mut r = r.clone();
            r.kite.id = self.to_uuid(&r.kite.id);
            let key_id = self.to_uuid(&r.key_id);
            let pem = |what: &str| format!("{what} of {key_id}");
            let pair = KeyRecord {
                id: key_id.clone(),
                public_pem: pem("public"),
                private_pem: pem("private"),
                created_ms: now_ms(),
                deleted_ms: None,
                signing: true,
            };
            self.inner.add_key(&pair).await?;
            r.key_id = key_id;
            self.named(self.inner.upsert(&r).await)
        }
        async fn refresh(&self, id: &str, owner: &str, e: u64) -> Result<bool, StorageError> {
            self.named(self.inner.refresh(&self.to_uuid(id), owner, e).await)
        }
        async fn delete(&self, id: &str, owner: &str) -> Result<bool, StorageError> {
            self.named(self.inner.delete(&self.to_uuid(id), owner).await)
        }
        async fn delete_written(
            &self,
            id: &str,
            owner: &str,
            e: u64,
        ) -> Result<bool, StorageError> {
            self.inner.delete_written(&self.to_uuid(id), owner, e).await
        }
        async fn refresh_many(
            &self,
            items: &[(String, String)],
            e: u64,
        ) -> Vec<Result<bool, StorageError>> {
            let items: Vec<(String, String)> = items
                .iter()
                .map(|(id, o)| (self.to_uuid(id), o.clone()))
                .collect();
            self.inner
                .refresh_many(&items, e)
                .await
                .into_iter()
                .map(|r| self.named(r))
                .collect()
        }
        async fn get(&self, matcher: &Matcher) -> Result<Vec<Registration>, StorageError> {
            let found = self.inner.get(&self.mapped(matcher)).await?;
            Ok(found.into_iter().map(|r| self.back(r)).collect())
        }
        async fn purge_expired(&self) -> Result<usize, StorageError> {
            self.inner.purge_expired().await
        }
        async fn add_key(&self, key: &KeyRecord) -> Result<bool, StorageError> {
            self.inner.add_key(key).await
        }
        async fn delete_key(&self, id: &str) -> Result<bool, StorageError> {
            self.inner.delete_key(id).await
        }
        async fn keys(&self) -> Result<Vec<KeyRecord>, StorageError> {
            self.inner.keys().await
        }
    }

    #[tokio::test]
    async fn the_go_schema_behaves_as_every_storage() {
        let Some(pg) = Postgres::start() else { return };
        let config = go_database(&pg, "go_behaves").await;
        let s = UuidIds {
            inner: PostgresStorage::connect(config).await.unwrap(),
            names: Mutex::default(),
        };
        // The registrations of the shared suite; its key pairs differ (below).
        crate::storage::tests::registrations(&s).await;
        let s = s.inner;
        let mine = go_reg("/alice/prod/math/1.0.0/eu/h1/x", &uuid(), &uuid());

        // Key pairs in Go's kite.key: added once per id, public and private key, listed,
        // soft-deleted once; ids are UUIDs and every pair signs.
        let record = |signing: bool| KeyRecord {
            id: uuid(),
            public_pem: format!("public {}", uuid()),
            private_pem: format!("private {}", uuid()),
            created_ms: now_ms() - 1000,
            deleted_ms: None,
            signing,
        };
        let before = s.keys().await.unwrap().len();
        let first = record(true);
        assert!(s.add_key(&first).await.unwrap());
        assert!(s.keys().await.unwrap().contains(&first));
        for clash in [
            KeyRecord {
                public_pem: "other".into(),
                private_pem: "other".into(),
                ..first.clone()
            },
            KeyRecord {
                id: uuid(),
                private_pem: "other".into(),
                ..first.clone()
            },
            KeyRecord {
                id: uuid(),
                public_pem: "other".into(),
                ..first.clone()
            },
        ] {
            assert!(!s.add_key(&clash).await.unwrap(), "{clash:?}");
        }
        let err = s.add_key(&record(false)).await.unwrap_err();
        assert!(
            matches!(&err, StorageError::Rejected(m) if m.contains("signing")),
            "{err}"
        );
        let err = s
            .add_key(&KeyRecord {
                id: "default".into(),
                ..record(true)
            })
            .await
            .unwrap_err();
        assert!(
            matches!(&err, StorageError::Rejected(m) if m.contains("UUID")),
            "{err}"
        );
        assert!(s.delete_key(&first.id).await.unwrap());
        assert!(!s.delete_key(&first.id).await.unwrap());
        assert!(!s.delete_key("not-a-uuid").await.unwrap());
        let keys = s.keys().await.unwrap();
        assert_eq!(keys.len(), before + 1);
        let deleted = keys.iter().find(|k| k.id == first.id).unwrap();
        assert!(!deleted.live());

        // A key pair id naming no stored pair is refused, saying so, and nothing is written.
        let err = s.upsert(&mine).await.unwrap_err();
        assert!(
            matches!(&err, StorageError::Rejected(m) if m.contains("kite.key")),
            "{err}"
        );
        assert!(
            s.get(&Matcher::by_id(&mine.kite.id))
                .await
                .unwrap()
                .is_empty()
        );
    }

    #[tokio::test]
    async fn ids_go_schema_cannot_hold_are_refused_clearly() {
        let Some(pg) = Postgres::start() else { return };
        let config = go_database(&pg, "go_ids").await;
        let s = PostgresStorage::connect(config).await.unwrap();
        let pair = KeyRecord {
            id: uuid(),
            public_pem: "p".into(),
            private_pem: "q".into(),
            created_ms: now_ms(),
            deleted_ms: None,
            signing: true,
        };
        s.add_key(&pair).await.unwrap();
        let upper = uuid().to_uppercase();
        for id in [
            "k1",
            "",
            "' OR '1'='1",
            upper.as_str(),
            "{00000000-0000-0000-0000-000000000000}",
        ] {
            let err = s
                .upsert(&go_reg("/alice/prod/math/1.0.0/eu/h1/x", id, &pair.id))
                .await
                .unwrap_err();
            match &err {
                StorageError::Rejected(m) => {
                    assert!(
                        m.contains("is not a UUID") && m.contains("kite.kite.id"),
                        "{m}"
                    )
                }
                other => panic!("{id:?}: {other:?}"),
            }
            assert!(!s.refresh(id, "alice", now_ms() + 1000).await.unwrap());
            assert!(!s.delete(id, "alice").await.unwrap());
            assert!(!s.delete_written(id, "alice", 0).await.unwrap());
        }
        let err = s
            .upsert(&go_reg(
                "/alice/prod/math/1.0.0/eu/h1/x",
                &uuid(),
                "default",
            ))
            .await
            .unwrap_err();
        assert!(
            matches!(&err, StorageError::Rejected(m) if m.contains("kite.kite.key_id")),
            "{err}"
        );
        // Still in working order.
        let ok = go_reg("/alice/prod/math/1.0.0/eu/h1/x", &uuid(), &pair.id);
        s.upsert(&ok).await.unwrap();
        assert_eq!(s.get(&matcher("/alice")).await.unwrap(), [ok]);
    }

    #[tokio::test]
    async fn go_schema_mode_checks_the_tables_and_creates_them_only_when_asked() {
        let Some(pg) = Postgres::start() else { return };
        let go = |name: &str| PostgresConfig {
            schema: PostgresSchema::Go,
            ..database(&pg, name)
        };
        // An empty database: refused, untouched, unless asked to create Go's schema.
        let empty = go("empty");
        let err = PostgresStorage::connect(empty.clone()).await.unwrap_err();
        assert!(
            err.to_string()
                .contains("kite.kite and kite.key are not in the database"),
            "{err}"
        );
        let raw = raw_client(&empty).await;
        let nothing: bool = raw
            .query_one("SELECT to_regnamespace('kite') IS NULL", &[])
            .await
            .unwrap()
            .get(0);
        assert!(nothing);
        let create = PostgresConfig {
            create_go_schema: true,
            ..empty.clone()
        };
        // Two at once create it once.
        let (a, b) = tokio::join!(
            PostgresStorage::connect(create.clone()),
            PostgresStorage::connect(create)
        );
        a.unwrap();
        b.unwrap();
        PostgresStorage::connect(empty).await.unwrap();
        let unlogged: String = raw
            .query_one(
                "SELECT relpersistence::text FROM pg_class WHERE oid = 'kite.kite'::regclass",
                &[],
            )
            .await
            .unwrap()
            .get(0);
        assert_eq!(unlogged, "u", "Go's kite.kite is UNLOGGED");
        assert!(
            raw.query_opt("SELECT 1 FROM pg_tables WHERE schemaname = 'kite' AND tablename = 'kontrol_schema_version'", &[])
                .await
                .unwrap()
                .is_none(),
            "no table of ours"
        );

        // Our own schema is not Go's.
        let ours = database(&pg, "ours");
        PostgresStorage::connect(ours.clone()).await.unwrap();
        let err = PostgresStorage::connect(PostgresConfig {
            schema: PostgresSchema::Go,
            ..ours
        })
        .await
        .unwrap_err();
        assert!(err.to_string().contains("own schema"), "{err}");
        // Tables of another shape: what differs is said.
        let odd = go("odd");
        raw_client(&odd)
            .await
            .batch_execute(
                "CREATE SCHEMA kite; CREATE TABLE kite.kite (id TEXT PRIMARY KEY, url TEXT); \
                 CREATE TABLE kite.key (id UUID)",
            )
            .await
            .unwrap();
        let err = PostgresStorage::connect(odd).await.unwrap_err().to_string();
        assert!(err.contains("kite.kite.id is text, Go's is uuid"), "{err}");
        assert!(err.contains("kite.kite.updated_at is missing"), "{err}");
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

        let mut go = required.to_vec();
        go.extend([
            ("KONTROL_POSTGRES_SCHEMA", "Go"),
            ("KONTROL_POSTGRES_CREATEGOSCHEMA", "true"),
        ]);
        let c = PostgresConfig::from_lookup(vars(&go)).unwrap();
        assert_eq!((c.schema, c.create_go_schema), (PostgresSchema::Go, true));
        assert_eq!(
            PostgresConfig::from_lookup(vars(&required)).unwrap().schema,
            PostgresSchema::Ours
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
            ("KONTROL_POSTGRES_SCHEMA", "etcd"),
            ("KONTROL_POSTGRES_CREATEGOSCHEMA", "yes"),
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
